"""Starting stage one's child processes: a Ctrl-C during a start waits for the start to end."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from framecache.extract.processes import exit_detail, start_ignoring_sigint


class _SlowStart:
    """Stands in for a process whose start is Python code (as spawn's is): a Ctrl-C arrives halfway through."""

    def __init__(self):
        self.started = False

    def start(self) -> None:
        # From another thread, as when the backbone compiles beside the start: that thread takes the signal and
        # the main thread runs the handler at its next bytecode, here, unless the start defers it.
        sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
        sender.start()
        sender.join()
        total = sum(range(200_000))  # bytecodes at which a pending handler would run
        self.started = total > 0


def test_ctrl_c_during_a_child_start_is_raised_after_the_start():
    handled = []

    def handler(signum, frame):
        handled.append(signum)
        raise KeyboardInterrupt

    process = _SlowStart()
    previous = signal.signal(signal.SIGINT, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            start_ignoring_sigint(process)
            sum(range(200_000))  # the deferred Ctrl-C arrives here, once the start is done
    finally:
        signal.signal(signal.SIGINT, previous)
    assert process.started, "the Ctrl-C broke into the start"
    assert handled == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_start_without_ctrl_c_leaves_the_handler_as_it_was():
    class _Start:
        started = False

        def start(self):
            self.started = True

    process, before = _Start(), signal.getsignal(signal.SIGINT)
    start_ignoring_sigint(process)
    assert process.started and signal.getsignal(signal.SIGINT) is before
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


@pytest.mark.parametrize(("code", "detail"), [(0, ""), (None, ""), (-signal.SIGKILL, " (killed by SIGKILL)"), (3, " (exit code 3)")])
def test_exit_detail(code, detail):
    assert exit_detail(code) == detail
