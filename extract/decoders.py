"""The decoder processes that feed the backbone: the driver's pool (:class:`DecoderPool`) and what each runs.

Decoding runs in separate processes so that a video that crashes the native
decoder ends one worker, not the run: the pool restarts the worker and the
video is recorded as failed. Each worker talks to the driver over its own pipe
(messages in :mod:`framecache.extract.messages`), so a worker dying
mid-message cannot corrupt anyone else's channel. What a worker does with a
file is its :class:`~framecache.extract.interfaces.Decoder`
(:class:`~framecache.extract.views.ViewDecoder` unless a test passes another).
The frames themselves go through shared memory, each worker's
:class:`~framecache.extract.frame_ring.FrameRing`; the pipe carries only
which rows hold them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import numpy as np

from framecache.extract.frame_ring import FrameRing, FrameRows, ring_rows
from framecache.extract.messages import DecodeTask, End, Failed, Frames, Release, Retire
from framecache.extract.processes import exit_detail, start_ignoring_sigint
from framecache.extract.views import DecodeSettings, ViewDecoder, failure_reason

log = logging.getLogger(__name__)

TASKS_PER_WORKER = 2  # queued per decoder, so it never waits for the next path
DECODE_TIMEOUT_S = 600.0  # a worker silent this long on one video is stuck: restart it

# decord 0.6 keeps ~75 KB per decoded frame (640x480 source) until its process
# ends, even after its VideoReader is gone: a decord worker retires after this
# many frames (about 0.4 GB) and the pool starts a fresh one.
DECORD_RECYCLE_FRAMES = 5000


def decode_worker(connection: Connection, settings: DecodeSettings, ring: FrameRing | None, decoder_class: type = ViewDecoder) -> None:
    """Worker process: receive DecodeTasks, write their view frames into ``ring`` chunk by chunk and say where
    (``None``: no ring could be made; the frames go through the pipe).

    Messages sent: :class:`Frames` naming the ring rows of each view's frames,
    then :class:`End`, or :class:`Failed` with the reason; :class:`Retire`
    before exiting to be replaced (decord leaks memory per decoded frame, even
    across readers). Exits when the pipe closes or on ``None``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    import cv2

    cv2.setNumThreads(1)  # the augmentation: OpenCV's threads cost 1.5x the CPU on a busy machine; the processes are the parallelism
    decoder = decoder_class(settings)
    inbox = _Inbox(connection, ring, settings.views)
    decoded = 0
    try:
        while True:
            if settings.decoder == "decord" and decoded >= DECORD_RECYCLE_FRAMES:
                connection.send(Retire())
                return
            task = inbox.next_task()
            try:
                video = decoder.open(task.path, task.key, task.fps, inbox.place if ring is not None else None)
                offset = 0
                for views in video:
                    count = views.shape[1]
                    if ring is None:
                        connection.send(Frames(task.index, offset, views=views))
                    else:
                        connection.send(Frames(task.index, offset, inbox.rows_of(views)))
                    offset += count
                    decoded += count * max(1, settings.frame_step)
                connection.send(End(task.index, offset, video.frames.source_frames, video.info.fps, video.info.header_frames))
            except (_Stop, EOFError, BrokenPipeError, ConnectionResetError):
                raise
            except Exception as error:  # a bad video; keep the run going
                inbox.unplace()
                connection.send(Failed(task.index, failure_reason(error)))
    except (_Stop, EOFError, OSError):
        return  # told to stop, or the driver is gone


class _Stop(Exception):
    """The driver said stop (``None``)."""


class _Inbox:
    """A worker's side of its pipe and ring: tasks queue up; a chunk's views get free rows of the ring, in one run
    where the ring has one (written in place), and rows the driver released become free again."""

    def __init__(self, connection: Connection, ring: FrameRing | None, views: int):
        self.connection = connection
        self.ring = ring
        self.views = views
        self.tasks: deque[DecodeTask] = deque()
        self.free = np.ones(len(ring.frames) if ring is not None else 0, bool)
        self.next_row = 0  # where the next run of rows starts, if free
        self.placed: tuple[np.ndarray, np.ndarray, bool] | None = None  # rows given to the decoder, the array, in the ring?

    def next_task(self) -> DecodeTask:
        while not self.tasks:
            self._receive()
        return self.tasks.popleft()

    def place(self, count: int) -> np.ndarray:
        """Where the decoder writes the views of a chunk of ``count`` frames: ``(views, count, size, size, 3)`` rows of
        the ring (a new array where no run of free rows is left; :meth:`rows_of` copies it in)."""
        self.unplace()
        rows = self._take(self.views * count)
        shape = (self.views, count, *self.ring.frame_shape)
        in_ring = bool(rows[-1] - rows[0] + 1 == len(rows))
        views = self.ring.frames[rows[0] : rows[-1] + 1].reshape(shape) if in_ring else np.empty(shape, np.uint8)
        self.placed = rows, views, in_ring
        return views

    def rows_of(self, views: np.ndarray) -> np.ndarray:
        """The ring rows ``(views, n)`` now holding ``views``, the decoder's chunk (copied in unless written in place)."""
        count = views.shape[0] * views.shape[1]
        rows, placed, in_ring = self.placed if self.placed is not None else (None, None, False)
        self.placed = None
        if placed is not views or not in_ring:
            if rows is None or len(rows) != count:  # a decoder that did not ask for a place
                self._give(rows)
                rows = self._take(count)
            self.ring.frames[rows] = views.reshape(-1, *views.shape[2:])
        return rows.reshape(views.shape[0], views.shape[1])

    def unplace(self) -> None:
        """Free the rows of a place the decoder did not fill (it failed on the video)."""
        if self.placed is not None:
            self._give(self.placed[0])
            self.placed = None

    def _take(self, count: int) -> np.ndarray:
        """``count`` free rows, waiting for the driver to release some if need be: the run from the last one taken,
        or from the ring's start, or any free rows."""
        while self.free.sum() < count:
            self._receive()
        total = len(self.free)
        for start in (self.next_row, 0):
            if start + count <= total and self.free[start : start + count].all():
                rows = np.arange(start, start + count)
                break
        else:
            rows = np.flatnonzero(self.free)[:count]
        self.free[rows] = False
        self.next_row = (int(rows[-1]) + 1) % total
        return rows

    def _give(self, rows: np.ndarray | None) -> None:
        if rows is not None:
            self.free[rows] = True

    def _receive(self) -> None:
        message = self.connection.recv()
        if message is None:
            raise _Stop
        if isinstance(message, Release):
            self._give(message.rows)
        else:
            self.tasks.append(message)


@dataclass
class DecoderSlot:
    """One decoder process, its pipe and the tasks sent to it that it has not finished."""

    process: multiprocessing.process.BaseProcess
    connection: Connection
    ring: FrameRing | None  # the frames it writes (None: they come through the pipe); a replacement process gets a new one
    tasks: deque[DecodeTask] = field(default_factory=deque)
    last_seen: float = field(default_factory=time.monotonic)
    delivered: bool = False  # whether it has sent frames yet (before that, it is starting or opening its first file)

    def releaser(self) -> Callable[[np.ndarray], None]:
        """What hands read rows back to this process, and only to it: a replacement has its own ring and pipe."""
        connection = self.connection

        def release(rows: np.ndarray) -> None:
            with contextlib.suppress(OSError):  # the process has ended: its rows are no one's
                connection.send(Release(rows))

        return release


@dataclass(frozen=True, eq=False)
class Chunk:
    """A decoded chunk as the driver receives it: each view's frames, still in the decoder's ring."""

    index: int
    offset: int  # of the chunk's first frame in the video's sampled frames
    views: list[FrameRows]

    @property
    def frames(self) -> int:
        """Frames per view."""
        return len(self.views[0])


DecoderMessage = Chunk | End | Failed


class DecoderPool:
    """``count`` decoder processes, each on its own pipe, restarted when one dies; up to ``most`` once the driver
    adds some (:meth:`add`; default: ``count``, a fixed pool).

    ``decoder_class``: what each worker builds from ``settings`` to open files
    (a :class:`~framecache.extract.interfaces.Decoder`; tests pass one that crashes).
    """

    def __init__(self, settings: DecodeSettings, count: int, decoder_class: type = ViewDecoder, batch_size: int = 32,
                 most: int | None = None):  # fmt: skip
        self.context = multiprocessing.get_context("spawn")
        self.settings = settings
        self.decoder_class = decoder_class
        self.ring_rows = ring_rows(batch_size, settings.views, settings.chunk_frames)  # never fewer than a batch and a chunk
        self.ring_failed = False
        self.most = max(count, most or count)
        self.slots: list[DecoderSlot] = [self._start() for _ in range(count)]

    @property
    def count(self) -> int:
        """Decoder processes now."""
        return len(self.slots)

    def can_add(self) -> bool:
        """Whether :meth:`add` may start another process: fewer than ``most``, and every one has sent frames (one still
        starting explains a wait by itself)."""
        return len(self.slots) < self.most and all(slot.delivered for slot in self.slots)

    def add(self) -> None:
        """Start one more decoder process; the next :meth:`assign` gives it videos."""
        self.slots.append(self._start())

    def _start(self) -> DecoderSlot:
        ours, theirs = self.context.Pipe(duplex=True)
        ring = self._make_ring()
        process = self.context.Process(target=decode_worker, args=(theirs, self.settings, ring, self.decoder_class), daemon=True)
        start_ignoring_sigint(process)
        theirs.close()
        return DecoderSlot(process, ours, ring)

    def _make_ring(self) -> FrameRing | None:
        """A new process's ring; None where memory cannot be shared as a file here (a file size limit, ``ulimit -f``,
        below its size): then frames go through the pipe, about 0.3 ms of CPU per frame more, said once."""
        try:
            return FrameRing(self.ring_rows, self.settings.size)
        except OSError as error:
            if not self.ring_failed:
                log.warning("decoded frames go through pipes, more slowly: no shared memory of %.0f MB (%s)",
                            self.ring_rows * self.settings.size**2 * 3 / 2**20, error.strerror or error)  # fmt: skip
            self.ring_failed = True
            return None

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
        slot.delivered = True
        if isinstance(message, Retire):
            self._replace(slot)
            return []
        if isinstance(message, Frames):
            if message.rows is None:
                return [Chunk(message.index, message.offset, [FrameRows.of(frames) for frames in message.views])]
            release = slot.releaser()
            return [Chunk(message.index, message.offset, [FrameRows(slot.ring.frames, rows, release) for rows in message.rows])]
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
        slot.process, slot.connection, slot.ring, slot.tasks, slot.last_seen = fresh.process, fresh.connection, fresh.ring, fresh.tasks, fresh.last_seen
        slot.delivered = False
        self.assign(requeue)

    def restart_all(self) -> None:
        """Drop every task and start fresh workers (after an interrupted run: they may still be on its videos)."""
        self.close()
        self.slots = [self._start() for _ in self.slots]

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

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
