"""The pipeline's handles on its processes: the pool of decoders and the cache writer.

Both start their children with :func:`start_ignoring_sigint`, so a Ctrl-C is
the pipeline's alone to handle. What the children run is in
:mod:`framecache.extract.workers`; what they send, in :mod:`framecache.extract.messages`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait

from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
from framecache.extract.messages import (
    Close,
    DecodeTask,
    End,
    Failed,
    FailureRecord,
    Frames,
    Ready,
    Retire,
    VideoRecord,
    WriterError,
)
from framecache.extract.views import DecodeSettings
from framecache.extract.workers import decode_worker, writer_process

TASKS_PER_WORKER = 2  # queued per decoder, so it never waits for the next path
DECODE_TIMEOUT_S = 600.0  # a worker silent this long on one video is stuck: restart it


def start_ignoring_sigint(process: multiprocessing.process.BaseProcess) -> None:
    """Start a child process that Ctrl-C cannot hurt, without losing a Ctrl-C meant for us.

    A terminal sends SIGINT to the whole process group: a child still starting
    up would die with a traceback, and a decoder would be taken for crashed.
    So this thread blocks SIGINT while the child is created: the child inherits
    the blocked signal across fork and exec and keeps it pending until its
    first line ignores it. This process keeps its handler all along, so a
    Ctrl-C meanwhile is taken by another of its threads, or by this one once
    unblocked, and still interrupts the run. (Ignoring SIGINT here instead
    would let another thread swallow it.)
    """
    # Started first, on its own: its start unblocks SIGINT in this thread.
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def exit_detail(code: int | None) -> str:
    """How a child ended, for a message: ``" (killed by SIGSEGV)"``, ``" (exit code 3)"`` or nothing."""
    if code is None or code == 0:
        return ""
    if code < 0 and -code in signal.valid_signals():
        return f" (killed by {signal.Signals(-code).name})"
    return f" (exit code {code})"


@dataclass
class DecoderSlot:
    """One decoder process, its pipe and the tasks sent to it that it has not finished."""

    process: multiprocessing.process.BaseProcess
    connection: Connection
    tasks: deque[DecodeTask] = field(default_factory=deque)
    last_seen: float = field(default_factory=time.monotonic)


DecoderMessage = Frames | End | Failed


class DecoderPool:
    """A pool of decoder processes, each on its own pipe, restarted when one dies."""

    def __init__(self, settings: DecodeSettings, count: int):
        self.context = multiprocessing.get_context("spawn")
        self.settings = settings
        self.slots: list[DecoderSlot] = [self._start() for _ in range(count)]

    def _start(self) -> DecoderSlot:
        ours, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(target=decode_worker, args=(theirs, self.settings), daemon=True)
        start_ignoring_sigint(process)
        theirs.close()
        return DecoderSlot(process, ours)

    def assign(self, todo: deque[DecodeTask]) -> None:
        """Give each worker tasks until it has TASKS_PER_WORKER queued."""
        for slot in self.slots:
            while todo and len(slot.tasks) < TASKS_PER_WORKER:
                task = todo.popleft()
                slot.tasks.append(task)
                if len(slot.tasks) == 1:
                    slot.last_seen = time.monotonic()  # the stall clock starts with its first task
                try:
                    slot.connection.send(task)
                except OSError:  # it died: receive() restarts it and hands its unbegun tasks on
                    break

    def busy(self) -> bool:
        return any(slot.tasks for slot in self.slots)

    def receive(self, timeout: float) -> list[DecoderMessage]:
        """Messages ready now (or within ``timeout``); crashed or stuck workers become failures."""
        messages: list[DecoderMessage] = []
        by_connection = {id(slot.connection): slot for slot in self.slots}
        for connection in wait([slot.connection for slot in self.slots], timeout):
            messages.extend(self._read(by_connection[id(connection)]))
        for slot in self.slots:
            if slot.tasks and not slot.process.is_alive():
                # It may have finished a video and begun the next before dying: take
                # everything it sent (up to the end of the pipe) before blaming a video.
                connection = slot.connection
                while slot.connection is connection and connection.poll():
                    messages.extend(self._read(slot))
                if slot.connection is connection and slot.tasks:
                    messages.extend(self._restart(slot, "the decoder crashed on this video"))
            elif slot.tasks and time.monotonic() - slot.last_seen > DECODE_TIMEOUT_S:
                messages.extend(self._restart(slot, f"decoding stalled for {DECODE_TIMEOUT_S:.0f} s"))
        return messages

    def _read(self, slot: DecoderSlot) -> list[DecoderMessage]:
        """One message from a worker; if its pipe ended, the failure of the video it was on."""
        try:
            message = slot.connection.recv()
        except (EOFError, OSError):
            return self._restart(slot, "the decoder crashed on this video")
        slot.last_seen = time.monotonic()
        if isinstance(message, Retire):
            self._replace(slot)
            return []
        if isinstance(message, (End, Failed)):
            slot.tasks.popleft()
        return [message]

    def _restart(self, slot: DecoderSlot, reason: str) -> list[Failed]:
        """Replace a dead worker; its current video fails, its queued ones go to the new worker."""
        process = slot.process
        if process.is_alive():
            process.kill()
        process.join(5)
        crashed = slot.tasks.popleft() if slot.tasks else None
        self._replace(slot)
        return [Failed(crashed.index, reason + exit_detail(process.exitcode))] if crashed else []

    def _replace(self, slot: DecoderSlot) -> None:
        """Start a fresh worker in ``slot`` and hand it the tasks the old one had not begun."""
        slot.process.join(5)
        if slot.process.is_alive():
            slot.process.kill()
        requeue = deque(slot.tasks)
        slot.connection.close()
        fresh = self._start()
        slot.process, slot.connection, slot.tasks, slot.last_seen = fresh.process, fresh.connection, fresh.tasks, fresh.last_seen
        self.assign(requeue)

    def close(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(OSError):  # a worker that already exited
                slot.connection.send(None)
        for slot in self.slots:
            slot.process.join(2)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(2)
            slot.connection.close()


class WriterHandle:
    """The pipeline's handle on the writer process.

    The writer speaks only to answer ``close`` or to report a failed write,
    after which it discards its open shard and exits: every call here first
    checks for such a report, or for the writer's death, and raises it as a
    FramecacheError. :meth:`check` does only that (the pipeline calls it
    between batches, so a writer killed by the OOM killer stops the run).
    """

    def __init__(self, path: str, provenance: Provenance, overwrite: bool, shard_videos: int | None = None):
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe(duplex=True)
        self.process = context.Process(target=writer_process, args=(theirs, path, provenance, overwrite, shard_videos))
        self.failed = False
        try:
            start_ignoring_sigint(self.process)
            theirs.close()
            reply = self.connection.recv()
        except EOFError:
            self.process.join(5)
            raise FramecacheError(
                f"the cache writer stopped unexpectedly{exit_detail(self.process.exitcode)}; run the same command again"
            ) from None
        except BaseException:  # Ctrl-C while it starts: it sees the pipe close, closes the file, exits
            theirs.close()
            self.connection.close()
            raise
        if not isinstance(reply, Ready):
            self.process.join(5)
            raise FramecacheError(reply.message)
        self.done_paths: set[str] = reply.done_paths

    def _error(self) -> FramecacheError:
        """The writer's report of what went wrong, or the fact that it died."""
        self.failed = True
        message = None
        with contextlib.suppress(EOFError, OSError):
            if self.connection.poll(5):
                reply = self.connection.recv()
                message = reply.message if isinstance(reply, WriterError) else None
        if message is None:
            self.process.join(5)
            return FramecacheError(
                f"the cache writer died{exit_detail(self.process.exitcode)}: the videos of its open shard are lost, "
                "every closed shard is kept; run the same command again to resume"
            )
        return FramecacheError(f"writing the cache failed: {message}")

    def check(self) -> None:
        """Raise what the writer reported, or its death, if either happened."""
        if self.failed:
            raise FramecacheError("writing the cache failed earlier")
        try:
            reported = self.connection.poll()
        except OSError:
            reported = True
        if reported or not self.process.is_alive():
            raise self._error()

    def send(self, record: VideoRecord | FailureRecord) -> None:
        if self.failed:
            raise FramecacheError("writing the cache failed earlier")
        try:
            if self.connection.poll():
                raise self._error()
            self.connection.send(record)
        except OSError:  # BrokenPipeError, ConnectionResetError: the writer is gone
            raise self._error() from None

    def close(self) -> None:
        """Ask the writer to close the file; raise what it reports, if anything."""
        try:
            if self.failed:
                return  # already raised
            try:
                self.connection.send(Close())
            except OSError:
                pass  # it exited: its report, if any, is still in the pipe
            try:
                reply = self.connection.recv()
            except (EOFError, OSError):
                raise self._error() from None
            if isinstance(reply, WriterError):
                self.failed = True
                raise FramecacheError(f"writing the cache failed: {reply.message}")
        finally:
            self.process.join(30)
            self.connection.close()
