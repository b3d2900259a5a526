"""Stage one end to end: CSV → decoders → batched backbone → one cache writer.

::

    decode worker(s) ──frames──►  pipeline (this process)  ──features──► writer process
    (one process each,            fixed-size batches that       (owns the open shard of
     restarted if one dies)       mix frames of many videos      the cache, closes it often)

This module is the scheduling loop (:class:`Extraction`); the processes are
in :mod:`framecache.extract.processes` and :mod:`framecache.extract.workers`,
their messages in :mod:`framecache.extract.messages`, and ``predict``'s
embedding in :mod:`framecache.extract.embed`.

The backbone is built lazily, when the first frames arrive, so a resumed run
with nothing left to do (or only unreadable files) never pays for it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from framecache.common.cli import interrupted, raise_interrupt
from framecache.common.config import ExtractConfig
from framecache.common.dataset import load_dataset
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
from framecache.extract.messages import DecodeTask, End, Failed, FailureRecord, Frames, VideoRecord
from framecache.extract.processes import DecoderPool, WriterHandle
from framecache.extract.progress import Progress
from framecache.extract.views import DecodeSettings

log = logging.getLogger(__name__)


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
    failures: list[tuple[str, str]] = field(default_factory=list)
    blocks: list = field(default_factory=list)  # on Ray: each block's BlockResult, in the order they finished

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        state = "interrupted: " if self.interrupted else ""
        return (
            f"{state}{self.ok} ok, {self.failed} failed, {self.skipped} already cached "
            f"({self.frames} frames embedded in {self.seconds:.1f} s, {rate:.1f} frames/s)"
        )


@dataclass
class _Video:
    """A video in flight: its view frames arrive in chunks, features come back per batch."""

    index: int
    num_frames: int | None = None  # known once the decoder sends End
    source_frames: int = 0
    source_fps: float = 0.0
    pending: int = 0  # frames (all views) handed to the backbone queue, not yet embedded
    features: dict = field(default_factory=dict)  # (view, offset) -> float32 (n, D)


@dataclass
class _Queued:
    """Frames of one view of one video waiting for the backbone."""

    index: int
    view: int
    offset: int
    frames: np.ndarray  # uint8 (n, size, size, 3)


def run_extraction(config: ExtractConfig) -> ExtractSummary:
    """Extract features for every video of ``config.csv`` into ``config.out``; resume if it exists.

    With ``config.ray`` set, on a Ray cluster (:mod:`framecache.extract.cluster`);
    the cache is the same. Raises :class:`FramecacheError` when the run had
    videos to extract and not one of them could be read (after recording them as failed).
    """
    if config.validate().ray:
        from framecache.extract.cluster import run_on_ray

        return run_on_ray(config)
    started = time.monotonic()
    dataset, provenance = prepare(config)
    writer = WriterHandle(config.out, provenance, config.overwrite, config.shard_videos)
    try:
        summary = Extraction(config, dataset, provenance, writer, started).run()
    finally:
        writer.close()
    check_something_extracted(summary, dataset, config)
    return summary


def prepare(config: ExtractConfig) -> tuple[pd.DataFrame, Provenance]:
    """A run's validated videos and the provenance of its features, before any file is written."""
    from framecache.extract.augment import ViewAugmenter
    from framecache.extract.backbones import check_precision, describe_backbone
    from framecache.extract.decode import RESIZE_POLICY

    config.validate()
    check_precision(config.precision, config.engine)  # before any file is touched
    dataset = load_dataset(config.csv)
    augmenter = ViewAugmenter(config.augment, config.seed)
    return dataset, Provenance.build(config, describe_backbone(config.backbone, config.weights), augmenter.describe(), RESIZE_POLICY)


def build_backbone_of(config: ExtractConfig, threads: int | None = None):
    """The backbone a run's settings ask for (``threads``: its CPU threads, default every core)."""
    from framecache.extract.backbones import build_backbone

    return build_backbone(config.backbone, config.weights, engine=config.engine, batch_size=config.batch_size,
                          precision=config.precision, threads=threads)


def check_something_extracted(summary: ExtractSummary, dataset: pd.DataFrame, config: ExtractConfig) -> None:
    """Raise when the run had videos to extract and every one of them failed."""
    if summary.failed and not summary.ok and not summary.skipped and not summary.interrupted:
        raise _nothing_extracted(summary, dataset, config)


class Extraction:
    """One run's scheduling loop: hand videos to the decoders, batch their frames through the backbone,
    and send each finished (or failed) video to the writer. The caller opens and closes the writer."""

    def __init__(self, config: ExtractConfig, dataset: pd.DataFrame, provenance: Provenance, writer: WriterHandle, started: float,
                 backbone=None, progress=None):
        self.config = config
        self.dataset = dataset
        self.provenance = provenance
        self.writer = writer  # done_paths, check() and send(record): a WriterHandle, or a block's own writer
        self.started = started
        self.summary = ExtractSummary(videos_total=len(dataset))
        self.backbone = backbone  # None: built when the first frames arrive
        self.progress = progress  # None: a Progress on stderr, made by run()
        self.in_flight: dict[int, _Video] = {}
        self.ready: deque[_Queued] = deque()  # waiting for the backbone
        self.ready_frames = 0

    def run(self, decoders: DecoderPool | None = None) -> ExtractSummary:
        """Decode, embed and hand every video not cached yet to the writer.

        ``decoders``: a pool to use and leave open (a Ray actor keeps one across
        its blocks); by default one is started for this run and closed after it.
        """
        config, summary = self.config, self.summary
        todo = deque(
            DecodeTask(index, row.abs_path, row.path)
            for index, row in enumerate(self.dataset.itertuples())
            if row.path not in self.writer.done_paths
        )
        summary.skipped = len(self.dataset) - len(todo)
        if not todo:
            summary.seconds = time.monotonic() - self.started
            return summary

        if self.progress is None:
            self.progress = Progress(summary, config.quiet, self.started)
        own_decoders = decoders is None
        if own_decoders:
            settings = DecodeSettings.from_provenance(self.provenance, chunk_frames=config.chunk_frames)
            decoders = DecoderPool(settings, min(config.workers, len(todo)))
        main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        previous_sigterm = signal.signal(signal.SIGTERM, raise_interrupt) if main_thread else None
        try:
            decoders.assign(todo)
            while todo or decoders.busy() or self.ready:
                if interrupted():  # raised before, but swallowed by a library
                    raise KeyboardInterrupt
                self.writer.check()  # a writer killed meanwhile (OOM killer) stops the run now
                if self.ready_frames >= config.batch_size or (self.ready and not decoders.busy()):
                    self._embed(config.batch_size)  # a short batch only at the very end
                    continue
                for message in decoders.receive(timeout=0.5):
                    self._handle(message)
                decoders.assign(todo)
                self.progress.tick(summary)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous_sigterm)
            self.progress.close()
            if own_decoders:
                decoders.close()
        summary.seconds = time.monotonic() - self.started
        return summary

    def _handle(self, message: Frames | End | Failed) -> None:
        video = self.in_flight.setdefault(message.index, _Video(message.index))
        if isinstance(message, Frames):
            for view, frames in enumerate(message.views):
                self.ready.append(_Queued(message.index, view, message.offset, frames))
            count = message.views.shape[0] * message.views.shape[1]
            video.pending += count
            self.ready_frames += count
        elif isinstance(message, End):
            video.num_frames, video.source_frames, video.source_fps = message.num_frames, message.source_frames, message.source_fps
            if video.pending == 0:
                self._finish(message.index, None)
        elif isinstance(message, Failed):
            queued = [item for item in self.ready if item.index == message.index]
            self.ready_frames -= sum(len(item.frames) for item in queued)
            for item in queued:
                self.ready.remove(item)
            self._finish(message.index, message.reason)

    def _embed(self, batch_size: int) -> None:
        """Run the next ``batch_size`` queued frames (of any videos) through the backbone."""
        config = self.config
        if self.backbone is None:
            self.backbone = build_backbone_of(config)
        pieces, taken = [], 0
        while self.ready and taken < batch_size:
            item = self.ready.popleft()
            room = batch_size - taken
            if len(item.frames) > room:
                self.ready.appendleft(_Queued(item.index, item.view, item.offset + room, item.frames[room:]))
                item = _Queued(item.index, item.view, item.offset, item.frames[:room])
            pieces.append(item)
            taken += len(item.frames)
        self.ready_frames -= taken
        features = self.backbone.embed(np.concatenate([item.frames for item in pieces]))
        start = 0
        for item in pieces:
            video = self.in_flight.get(item.index)
            if video is not None:  # None: the video failed after these frames were queued
                video.features[(item.view, item.offset)] = features[start : start + len(item.frames)]
                video.pending -= len(item.frames)
            start += len(item.frames)
        self.summary.frames += taken
        self.progress.frames_embedded(self.summary)
        for index in [i for i, v in self.in_flight.items() if v.num_frames is not None and v.pending == 0]:
            self._finish(index, None)

    def _finish(self, index: int, reason: str | None) -> None:
        """Send a video to the writer: its features, or why it failed."""
        row = self.dataset.iloc[index]
        video = self.in_flight.pop(index, None)
        summary = self.summary
        if reason is not None:
            self.writer.send(FailureRecord(row.path, row.label, row.group, row.split, reason))
            summary.failed += 1
            summary.failures.append((row.path, reason))
            log.debug("failed: %s: %s", row.path, reason)
        else:
            views = [
                np.concatenate([video.features[key] for key in sorted(video.features) if key[0] == view])
                for view in range(self.config.views)
            ]
            features = np.stack(views).astype(np.float16)
            self.writer.send(VideoRecord(row.path, row.label, row.group, row.split, features, video.source_frames, video.source_fps))
            summary.ok += 1
        self.progress.video_done(summary)


def _nothing_extracted(summary: ExtractSummary, dataset: pd.DataFrame, config: ExtractConfig) -> FramecacheError:
    """The error of a run in which every video it tried failed: how many, the most common reason, what to do."""
    files = dict(zip(dataset["path"], dataset["abs_path"]))
    # Reasons end with the file's path: without it, the same problem reads the same for every video.
    reasons = Counter(reason.removesuffix(f": {files.get(path, path)}") for path, reason in summary.failures)
    reason, count = reasons.most_common(1)[0]
    total = summary.failed
    message = (
        f"none of the {total} video(s) of {config.csv} could be read ({total} failed, recorded in {config.out}); "
        f"the most common reason ({count} of {total}): {reason}"
    )
    if reason.startswith("file not found"):
        example = next(files.get(path, path) for path, failure in summary.failures if failure.startswith("file not found"))
        folder = Path(config.csv).resolve().parent
        return FramecacheError(
            f"{message} (e.g. {example}). Relative paths in the CSV resolve against the CSV's own folder, {folder}: "
            "keep the CSV next to its videos (move it back), or write its paths relative to that folder or absolute, "
            "then run the same command again"
        )
    return FramecacheError(
        f"{message}. `make info FEATURES={config.out}` lists every failure; fix those videos (or the CSV) "
        "and run the same command again"
    )
