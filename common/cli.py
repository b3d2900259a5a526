"""What every command-line entry point shares: logging and the error contract."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

from framecache.common.errors import FramecacheError

_interrupted = False


def raise_interrupt(signum: int, frame) -> None:
    """Signal handler: remember the interrupt, then raise KeyboardInterrupt where the program is."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """True once Ctrl-C (or a signal handled by ``raise_interrupt``) has arrived in a CLI run.

    Long loops check it: a library that catches every exception (some guard
    their imports with a bare ``except:``) may have swallowed the
    KeyboardInterrupt, and the user's Ctrl-C must still stop the run.
    """
    return _interrupted


def run_cli(main: Callable[[], int], quiet: bool = False) -> None:
    """Run ``main``; print a FramecacheError as one line without a traceback and exit 2."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGINT, raise_interrupt)
    try:
        code = main()
    except FramecacheError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except PermissionError as error:  # a folder or file the user cannot write (or read): theirs to fix, in one line
        print(f"error: permission denied: {error.filename or error}; fix its permissions or choose another path", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one Ctrl-C is enough; a second must not break the exit
        print("interrupted", file=sys.stderr)
        _exit_after_interrupt()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a late Ctrl-C must not break the teardown
    if _interrupted:  # a Ctrl-C arrived, and some library swallowed it: say so
        print("interrupted", file=sys.stderr)
        _exit_after_interrupt()
    sys.exit(code or 0)


def _exit_after_interrupt() -> None:
    """Exit at once with code 130, streams flushed.

    Not ``sys.exit(130)``: CPython 3.11 remembers a KeyboardInterrupt that
    escaped code run by ``exec`` (dataclasses build their methods that way, so a
    Ctrl-C during an import can land there) and, at exit, may kill the process
    with SIGINT even though the interrupt was caught: exit status -2, seen in
    ~3 % of Ctrl-Cs in the first 0.4 s of ``python -m extract``. And no atexit
    handlers: multiprocessing's would wait for child processes that a Ctrl-C
    caught mid-start never told to stop. Children need no clean-up from here:
    they see their pipes close and exit on their own, as after ``kill -9``
    (the writer closes the cache first).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
