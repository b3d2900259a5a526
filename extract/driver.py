"""The one driver of stage one: schedule the frames of many videos through the backbone in fixed-size batches.

::

    DecoderPool ──view chunks──►  Driver (this process)  ──embedded pieces──►  ShardSink (the writer process)
    (decoder processes)           batches mixing videos,       then each video's
                                  through the Embedder         end or failure

A batch's frames are copied once, from the decoders' shared memory into the
batch; the embedder runs it on its own threads while the driver takes the
next chunks and starts the next batch (two at most), so that the backbone
never waits for the driver. Each embedded piece (a run of one view's frames
in a batch) goes to the writer as soon as its batch's features are taken,
cast once to what the cache stores; the driver keeps of a video only
counts, so its memory does not grow with video length.

The same class runs a whole CSV on one machine (:mod:`framecache.extract.pipeline`)
and each block of videos inside a Ray actor (:mod:`framecache.extract.blocks`).
Its parts are the interfaces of :mod:`framecache.extract.interfaces`; the
caller builds them, and closes them after :meth:`Driver.run`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from framecache.common.cache import stored_features
from framecache.common.cli import interrupted, raise_interrupt
from framecache.common.options import option_name
from framecache.extract.decoders import Chunk, DecoderPool
from framecache.extract.frame_ring import FrameRows
from framecache.extract.interfaces import PENDING_BATCHES, Embedder, PendingFeatures, ProgressReport, ShardSink
from framecache.extract.messages import DecodeTask, End, Failed, FailureRecord, FeaturePiece, VideoRecord

log = logging.getLogger(__name__)

WAIT_S = 0.5  # longest wait for decoded frames before checking the writer and the progress again
# A run whose backbone waited for frames this share of its embedding time, over at least this many seconds, was held
# back by decoding: ExtractSummary.decoding_notice says so where cores were left for more decoding processes.
STARVED_SHARE = 0.25
STARVED_MIN_SECONDS = 10.0
# Where the pool may grow (--workers unset), one more decoding process starts each time the backbone waited for
# frames ADD_SHARE of ADD_AFTER_S seconds of embedding, counted once every process has sent frames, while videos wait
# for a decoder. Phone-like 1080p clips at bf16 on 2 cores: the backbone waited a fifth of its time for one process;
# adding a second as it waited gave 120 frames/s instead of 108.5; where one process keeps up, the backbone waits under
# 1 % and none is added (docs/benchmarks.md, "Phone footage").
ADD_SHARE = 0.10
ADD_AFTER_S = 3.0


@dataclass
class ExtractSummary:
    """What one run did; printed as the last line of ``make features``."""

    videos_total: int
    skipped: int = 0  # already in the cache
    ok: int = 0
    failed: int = 0
    frames: int = 0  # frames embedded this run, all views
    seconds: float = 0.0
    interrupted: bool = False
    relabeled: int = 0  # cached videos whose label, group or split the CSV changed: brought up to date
    failures: list[tuple[str, str]] = field(default_factory=list)
    blocks: list = field(default_factory=list)  # on Ray: each block's BlockResult, in the order they finished
    embed_seconds: float = 0.0  # from the first batch's start to the last batch's end
    embed_idle_seconds: float = 0.0  # of those, when the embedder had no batch: it waited for frames
    decoders: int = 0  # decoding processes at the end of the run (more than at its start where some were added)

    @property
    def embed_idle_share(self) -> float:
        """The share of the embedding time in which the backbone waited for frames (0: never)."""
        return self.embed_idle_seconds / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def decoding_notice(self, workers: int | None, cores: int) -> str | None:
        """Where a fixed number of decoding processes (``workers``; None: the pool grew by itself) held the backbone
        back (it waited for frames ``STARVED_SHARE`` of a long enough run), the machine has more cores than processes,
        and the run had more videos than processes (each decodes one video at a time): what to change; else None.

        On a GPU the backbone needs little CPU, so one decoding process cannot feed it. A run on Ray measures no
        embedding time here (its actors embed), so it gets no notice.
        """
        if workers is None or self.embed_seconds < STARVED_MIN_SECONDS or self.embed_idle_share < STARVED_SHARE:
            return None
        if workers >= cores or self.ok + self.failed <= workers:
            return None
        more = min(2 * workers, cores)
        return (f"the backbone waited for decoded frames {100 * self.embed_idle_share:.0f} % of its time: decoding held this run "
                f"back, and this machine has {cores} cores for {workers} decoding process{'es' if workers > 1 else ''}; "
                f"{option_name('workers', more)} or more may be faster, or leave {option_name('workers')} unset to add "
                "them as the backbone waits")

    @property
    def done(self) -> int:
        """Videos done: cached before, extracted or failed."""
        return self.skipped + self.ok + self.failed

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        state = "interrupted: " if self.interrupted else ""
        relabeled = f" ({self.relabeled} of them relabelled from the CSV)" if self.relabeled else ""
        decoders = f", {self.decoders} decoding processes" if self.decoders > 1 else ""
        return (
            f"{state}{self.ok} ok, {self.failed} failed, {self.skipped} already cached{relabeled} "
            f"({self.frames} frames embedded in {self.seconds:.1f} s, {rate:.1f} frames/s{decoders})"
        )


@dataclass
class _Video:
    """A video in flight: its view frames arrive in chunks, its features go to the writer per batch."""

    num_frames: int | None = None  # known once the decoder sends End
    source_frames: int = 0
    source_fps: float = 0.0
    header_frames: int | None = None
    pending: int = 0  # frames (all views) handed to the backbone queue, not yet embedded
    clean_frames: int = 0  # of view 0, embedded (and sent)
    passed: bool = False  # whether a piece of view 0 passed the embedder's check (Embedder.piece_passes)


@dataclass
class _Queued:
    """Frames of one view of one video waiting for the backbone."""

    index: int
    view: int
    offset: int
    frames: FrameRows  # in a decoder's shared memory until copied into a batch


@dataclass
class _Batch:
    """A batch handed to the embedder: which frames it holds, and its features to come."""

    pieces: list[tuple[int, int, int, int]]  # (video index, view, offset, count), in the batch's order
    features: PendingFeatures
    started_at: float  # time.monotonic()


class Driver:
    """Hand videos to the decoders, batch their frames (of any videos) through the embedder, send each embedded
    piece to the writer as it comes, then each video's end (or failure).

    ``build_embedder`` is called as the run starts, once the decoder processes
    were handed their first videos: the backbone compiles while they start
    and decode; ``views`` and ``batch_size`` are the run's. Where the pool may
    grow, a decoder process is added each time the backbone waited for frames
    (``ADD_SHARE`` of ``ADD_AFTER_S``).
    """

    def __init__(self, decoders: DecoderPool, build_embedder: Callable[[], Embedder], writer: ShardSink,
                 progress: ProgressReport, views: int, batch_size: int):
        self.decoders = decoders
        self.build_embedder = build_embedder
        self.embedder: Embedder | None = None
        self.writer = writer
        self.progress = progress
        self.views, self.batch_size = views, batch_size

    def run(self, rows: pd.DataFrame, summary: ExtractSummary) -> None:
        """Extract ``rows`` (of :func:`~framecache.common.dataset.load_dataset`'s frame), counting into ``summary``.

        Ctrl-C or SIGTERM stops it early with ``summary.interrupted`` set; the
        videos sent to the writer so far are kept once the caller closes it.
        """
        self.rows, self.summary = rows, summary
        self.paths = list(rows["path"])
        self.in_flight: dict[int, _Video] = {}
        self.ready: deque[_Queued] = deque()  # waiting for the backbone
        self.ready_frames = 0
        self.running: deque[_Batch] = deque()  # started, features not yet taken
        self.busy_until: float | None = None  # when the embedder ends the batches taken so far
        self.window: tuple[float, float] | None = None  # embedding and waiting seconds when the wait began to be judged
        self.todo = todo = deque(DecodeTask(index, row.abs_path, row.path, row.fps) for index, row in enumerate(rows.itertuples()))
        decoders = self.decoders
        main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        previous_sigterm = signal.signal(signal.SIGTERM, raise_interrupt) if main_thread else None
        try:
            decoders.assign(todo)
            if self.embedder is None:
                self.embedder = self.build_embedder()
            while todo or decoders.busy() or self.ready or self.running:
                if interrupted():  # raised before, but swallowed by a library
                    raise KeyboardInterrupt
                self.writer.check()  # a writer killed meanwhile (OOM killer) stops the run now
                if self.ready_frames >= self.batch_size or (self.ready and not decoders.busy()):
                    if len(self.running) == PENDING_BATCHES:
                        self._take_features()
                    self._start_batch()  # a short batch only at the very end
                    continue
                if self.running and (len(self.running) == PENDING_BATCHES or not decoders.busy()):
                    self._take_features()
                    continue
                for message in decoders.receive(timeout=WAIT_S):
                    self._handle(message)
                decoders.assign(todo)
                self._report()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            for batch in self.running:  # the backbone reads their frames until it ends them
                batch.features.result()
            if main_thread:
                signal.signal(signal.SIGTERM, previous_sigterm)

    def _report(self) -> None:
        summary = self.summary
        self.progress.update(summary.done, summary.failed, summary.frames)

    def _handle(self, message: Chunk | End | Failed) -> None:
        video = self.in_flight.setdefault(message.index, _Video())
        if isinstance(message, Chunk):
            for view, frames in enumerate(message.views):
                self.ready.append(_Queued(message.index, view, message.offset, frames))
            count = len(message.views) * message.frames
            video.pending += count
            self.ready_frames += count
        elif isinstance(message, End):
            video.num_frames, video.source_frames, video.source_fps = message.num_frames, message.source_frames, message.source_fps
            video.header_frames = message.header_frames
            if video.pending == 0:
                self._finish(message.index, None)
        elif isinstance(message, Failed):
            queued = [item for item in self.ready if item.index == message.index]
            self.ready_frames -= sum(len(item.frames) for item in queued)
            for item in queued:
                self.ready.remove(item)
                item.frames.drop()
            self._finish(message.index, message.reason)

    def _start_batch(self) -> None:
        """Copy the next ``batch_size`` queued frames (of any videos) into a batch and start the embedder on it."""
        pieces, taken = [], 0
        while self.ready and taken < self.batch_size:
            item = self.ready.popleft()
            room = self.batch_size - taken
            if len(item.frames) > room:
                head, rest = item.frames.split(room)
                self.ready.appendleft(_Queued(item.index, item.view, item.offset + room, rest))
                item = _Queued(item.index, item.view, item.offset, head)
            pieces.append(item)
            taken += len(item.frames)
        self.ready_frames -= taken
        batch = np.empty((taken, *pieces[0].frames.source.shape[1:]), np.uint8)
        start = 0
        for item in pieces:  # the decoders may write these frames' rows again from here
            item.frames.copy_to(batch[start : start + len(item.frames)])
            start += len(item.frames)
        streams = [((item.index, item.view), item.offset, len(item.frames)) for item in pieces]  # a view's frames in order
        started_at = time.monotonic()
        features = self.embedder.start(batch, streams)
        self.running.append(_Batch([(item.index, item.view, item.offset, len(item.frames)) for item in pieces], features, started_at))

    def _take_features(self) -> None:
        """Wait for the oldest batch's features, send each of its pieces to the writer, finish the videos it ended."""
        batch = self.running.popleft()
        features = batch.features.result()
        self._count_idle(batch)
        self._add_decoder_if_waiting()
        start = 0
        for index, view, offset, count in batch.pieces:
            video = self.in_flight.get(index)
            if video is not None:  # None: the video failed after these frames were queued
                piece = features[start : start + count]
                if view == 0:
                    video.clean_frames += count
                    video.passed = video.passed or self.embedder.piece_passes(piece)
                self.writer.send(FeaturePiece(self.paths[index], view, offset, stored_features(piece)))
                video.pending -= count
            start += count
        self.summary.frames += start
        for index in [i for i, v in self.in_flight.items() if v.num_frames is not None and v.pending == 0]:
            self._finish(index, None)
        self._report()

    def _count_idle(self, batch: _Batch) -> None:
        """Add to the summary's embedding time the span of ``batch`` (taken in the order started), and the gap before
        it in which the embedder had nothing to do."""
        summary = self.summary
        if self.busy_until is None:
            self.busy_until = batch.started_at
        elif batch.started_at > self.busy_until:
            summary.embed_idle_seconds += batch.started_at - self.busy_until
        ended = max(batch.features.finished_at, batch.started_at)
        summary.embed_seconds += max(0.0, ended - self.busy_until)
        self.busy_until = max(self.busy_until, ended)

    def _add_decoder_if_waiting(self) -> None:
        """Start one more decoder process where the backbone waited for frames ``ADD_SHARE`` of the last ``ADD_AFTER_S``
        seconds of embedding, videos wait for a decoder and the pool may grow; the next ``assign`` hands it videos."""
        summary, decoders = self.summary, self.decoders
        if not self.todo or not decoders.can_add():
            self.window = None
            return
        if self.window is None:
            self.window = (summary.embed_seconds, summary.embed_idle_seconds)
            return
        seconds = summary.embed_seconds - self.window[0]
        if seconds < ADD_AFTER_S:
            return
        waited = (summary.embed_idle_seconds - self.window[1]) / seconds
        self.window = None
        if waited >= ADD_SHARE:
            decoders.add()
            log.info("the backbone waited for decoded frames %.0f %% of %.0f s: decoding process %d started",
                     100 * waited, seconds, decoders.count)  # fmt: skip

    def _finish(self, index: int, reason: str | None) -> None:
        """Tell the writer a video is done: all its pieces were sent, or why it failed (its pieces are then void)."""
        row = self.rows.iloc[index]
        video = self.in_flight.pop(index, None)
        summary = self.summary
        if reason is None:  # e.g. no person in any frame, for a pose backbone
            reason = self.embedder.video_failure(video.clean_frames, video.passed)
        if reason is not None:
            self.writer.send(FailureRecord(row.path, row.label, row.group, row.split, reason))
            summary.failed += 1
            summary.failures.append((row.path, reason))
            log.debug("failed: %s: %s", row.path, reason)
        else:
            self.writer.send(VideoRecord(row.path, row.label, row.group, row.split, video.num_frames, video.source_frames,
                                         video.source_fps, video.header_frames))
            summary.ok += 1
        self._report()
