"""What every command-line entry point shares: logging and the error contract."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable

from common.errors import FramecacheError

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
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one Ctrl-C is enough; a second must not break the exit
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a late Ctrl-C must not break the teardown
    sys.exit(code or 0)
