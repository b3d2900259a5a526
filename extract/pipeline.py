"""Stage one's entry point: a CSV in, a feature cache out, on one machine or (``ray``) on a cluster.

::

    run_extraction(config)     validate once; plan once: the CSV's videos, the backbone
      ├─ one machine:          a WriterProcess, a DecoderPool, the Driver over every video not cached
      └─ config.ray:           the same Driver in each Ray actor, a block of videos at a time
                               (:mod:`framecache.extract.cluster`, :mod:`framecache.extract.blocks`)

The scheduling loop is :class:`~framecache.extract.driver.Driver`; its parts
are described in :mod:`framecache.extract.interfaces`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from framecache.common.cache import FeatureReader, VideoMeta
from framecache.common.config import ExtractConfig
from framecache.common.dataset import load_dataset
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint
from framecache.common.provenance import Provenance
from framecache.extract.backbones import BackbonePlan
from framecache.extract.decoders import DecoderPool
from framecache.extract.driver import Driver, ExtractSummary
from framecache.extract.engines import available_cores
from framecache.extract.messages import FeaturePiece, VideoRecord
from framecache.extract.progress import Progress
from framecache.extract.views import DecodeSettings, ViewDecoder
from framecache.extract.writer_process import WriterProcess

log = logging.getLogger(__name__)

COPY_FRAMES = 1024  # frames of one view per piece when a relabelled video's cached features are copied


@dataclass(frozen=True)
class RunPlan:
    """What a run works from, found once before any file is written."""

    dataset: pd.DataFrame  # load_dataset's frame: path, abs_path, label, group, split
    provenance: Provenance  # what makes its features: the cache's identity
    backbone: BackbonePlan  # weights found and hashed, engine picked, precision checked
    decode: DecodeSettings  # what each decoder process needs


def run_extraction(config: ExtractConfig, decoder_class: type = ViewDecoder) -> ExtractSummary:
    """Extract features for every video of ``config.csv`` into ``config.out``; resume if it exists.

    With ``config.ray`` set, on a Ray cluster (:mod:`framecache.extract.cluster`);
    the cache is the same. Raises :class:`FramecacheError` when the run had
    videos to extract and not one of them could be read (after recording them as failed).
    ``decoder_class``: what opens the files (tests pass a double that crashes).
    """
    config.validate()  # the one check of the settings: everything below takes them as valid
    if config.ray:
        from framecache.extract.cluster import run_on_ray

        return run_on_ray(config, decoder_class)
    started = time.monotonic()
    plan = plan_run(config)
    # The decoder processes start first: they import and open their first files while the writer opens the cache,
    # and the backbone compiles (in Driver.run) while they decode. A rerun with nothing left to do stops them unused.
    start, most = decoder_counts(config.workers, len(plan.dataset))
    with (DecoderPool(plan.decode, start, decoder_class, config.batch_size, most) as decoders,
          WriterProcess(config.out, plan.provenance, config.overwrite, config.shard_videos) as writer):  # fmt: skip
        todo = not_cached(plan.dataset, writer.done_paths)
        summary = ExtractSummary(videos_total=len(plan.dataset), skipped=len(plan.dataset) - len(todo))
        summary.relabeled = refresh_metadata(plan.dataset, writer.cached, plan.provenance.views, writer.send)
        if len(todo):
            progress = Progress(summary.videos_total, summary.skipped, config.quiet, started)
            try:
                Driver(decoders, lambda: build_embedder(plan, config.batch_size), writer, progress,
                       config.views, config.batch_size).run(todo, summary)
            finally:
                progress.close()
            summary.decoders = decoders.count
    summary.seconds = time.monotonic() - started
    check_something_extracted(summary, plan.dataset, config)
    return summary


def decoder_counts(workers: int | None, videos: int) -> tuple[int, int]:
    """Decoding processes to start with, and the most there may be: ``workers`` of them, or (None) one, and up to one
    per core while the backbone waits for frames; never more than ``videos``."""
    start, most = (workers, workers) if workers is not None else (1, available_cores())
    return max(1, min(start, videos)), max(1, min(most, videos))


def plan_run(config: ExtractConfig) -> RunPlan:
    """A run's videos, backbone and provenance, found and checked once, before any file is written."""
    from framecache.extract.augment import ViewAugmenter
    from framecache.extract.backbones import plan_backbone
    from framecache.extract.decode import RESIZE_POLICIES

    backbone = plan_backbone(config.backbone, config.weights, config.engine, config.precision)
    dataset = load_dataset(config.csv, min_videos_per_class=1)  # one new recording is fine here; training checks its own
    augmenter = ViewAugmenter(config.augment_preset(), config.seed)
    provenance = Provenance.build(config, backbone.description, augmenter.describe(), RESIZE_POLICIES[backbone.fit])
    decode = DecodeSettings.from_provenance(provenance, chunk_frames=config.chunk_frames, frame_shortfall=config.frame_shortfall,
                                            folder_fps=config.folder_fps)
    return RunPlan(dataset, provenance, backbone, decode)


def build_embedder(plan: RunPlan, batch_size: int, threads: int | None = None):
    """The run's backbone, built from its plan (``threads``: its CPU threads, default every core)."""
    from framecache.extract.backbones import build_planned

    return build_planned(plan.backbone, batch_size, threads)


def refresh_metadata(rows: pd.DataFrame, cached: dict[str, VideoMeta], views: int,
                     add: Callable[[FeaturePiece | VideoRecord], None]) -> int:  # fmt: skip
    """Bring the label, group and split of every ``cached`` video (the writer's, by CSV path) of ``rows`` up to date
    with the CSV; how many changed.

    The CSV is the source of truth: a changed video is written again, its
    cached features copied (nothing is embedded) as pieces of
    :data:`COPY_FRAMES` frames of one view, as extraction sends them, and the
    new copy wins when the cache is read
    (:func:`~framecache.common.cache.reader.combine`). Only the changed videos'
    features are read.
    """
    changed = 0
    with FeatureReader(max_open=4) as reader:
        for row in rows.itertuples():
            video = cached.get(row.path)
            if video is not None and video.differs_from(row):
                for view in range(views):
                    for start in range(0, video.num_frames, COPY_FRAMES):
                        add(FeaturePiece(row.path, view, start, reader.read(video, view, slice(start, start + COPY_FRAMES))))
                add(VideoRecord(row.path, row.label, row.group, row.split, video.num_frames, video.source_frames,
                                video.source_fps, video.header_frames))  # fmt: skip
                changed += 1
    if changed:
        log.info("%d cached video(s) relabelled from the CSV (their features kept)", changed)
    return changed


def not_cached(rows: pd.DataFrame, done_paths: set[str]) -> pd.DataFrame:
    """The rows whose video is not in the cache yet, in CSV order."""
    return rows[~rows["path"].isin(done_paths)].reset_index(drop=True)


def check_something_extracted(summary: ExtractSummary, dataset: pd.DataFrame, config: ExtractConfig) -> None:
    """Raise when the run had videos to extract and every one of them failed."""
    if summary.failed and not summary.ok and not summary.skipped and not summary.interrupted:
        raise _nothing_extracted(summary, dataset, config)


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
        f"{message}. `{command_hint('info', features=config.out)}` lists every failure; fix those videos (or the CSV) "
        "and run the same command again"
    )
