"""Starting stage one's child processes (decoders, the cache writer) and saying how one ended."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from multiprocessing import resource_tracker

# A child's environment at start, where the user set none: NumPy's OpenBLAS starts a thread per core at import,
# which the decoders and the writer never use (measured: 0.1-0.2 s of CPU less per child started).
CHILD_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1"}


def start_ignoring_sigint(process: multiprocessing.process.BaseProcess) -> None:
    """Start a child process that Ctrl-C cannot hurt, without losing a Ctrl-C meant for us.

    A terminal sends SIGINT to the whole process group: a child still starting
    up would die with a traceback, and a decoder would be taken for crashed.
    So this thread blocks SIGINT while the child is created: the child inherits
    the blocked signal across fork and exec and keeps it pending until its
    first line ignores it. This process keeps its handler all along, so a
    Ctrl-C meanwhile is taken by another of its threads, or by this one once
    unblocked, and still interrupts the run. (Ignoring SIGINT here instead
    would let another thread swallow it.) Another thread's Ctrl-C is handled
    in the main thread, so while the main thread starts a child its handler
    waits too: a KeyboardInterrupt halfway through the start would close the
    pipe the child reads its start-up from, and the child would die with a
    traceback.
    """
    # Started first, on its own: its start unblocks SIGINT in this thread.
    resource_tracker.ensure_running()
    with _sigint_deferred():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with _child_environment():
                process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _sigint_deferred():
    """In the main thread: a SIGINT that arrives meanwhile is raised again once the block ends, not in it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only: this one is never interrupted
        return
    arrived = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived:
            signal.raise_signal(signal.SIGINT)  # to the handler that was there before, now


@contextlib.contextmanager
def _child_environment():
    """:data:`CHILD_ENVIRONMENT` in ``os.environ`` while a child is spawned (it copies the environment), then as before."""
    added = {name: value for name, value in CHILD_ENVIRONMENT.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def exit_detail(code: int | None) -> str:
    """How a child ended, for a message: ``" (killed by SIGSEGV)"``, ``" (exit code 3)"`` or nothing."""
    if code is None or code == 0:
        return ""
    if code < 0 and -code in signal.valid_signals():
        return f" (killed by {signal.Signals(-code).name})"
    return f" (exit code {code})"
