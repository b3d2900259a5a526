"""Stage one by blocks of videos: what one Ray actor runs, free of Ray so that it runs and is tested anywhere.

A block is some rows of the CSV. :class:`BlockExtractor` builds the backbone,
its decoder processes and its cache writer (a
:class:`~framecache.extract.writer_process.WriterProcess`, as on one machine)
once, in ``__init__``, and extracts each block it is given with the same
:class:`~framecache.extract.driver.Driver` (batches across the block's videos,
the same views), closing the open shard before it returns. So a block's videos
are kept once its call returns; what a kill costs is stated once, in
:mod:`framecache.extract.writer_process`. A retried block skips the videos of
the shards already closed (a video written twice is counted once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd

from framecache.common.config import ExtractConfig
from framecache.extract.decoders import DecoderPool
from framecache.extract.driver import Driver, ExtractSummary
from framecache.extract.pipeline import RunPlan, build_embedder, not_cached
from framecache.extract.views import ViewDecoder
from framecache.extract.writer_process import WriterProcess


@dataclass(frozen=True)
class Block:
    """Some videos of the CSV, extracted together by one task."""

    number: int
    rows: pd.DataFrame  # rows of load_dataset's frame (path, abs_path, label, group, split)

    @property
    def first_path(self) -> str:
        return str(self.rows["path"].iloc[0])


@dataclass
class BlockResult:
    """What a block's extraction did (the Ray driver adds these up into the run's summary)."""

    number: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # in the cache already (a retried block's closed shards)
    frames: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    started_at: float = 0.0  # Unix time, in the process that extracted it
    ended_at: float = 0.0


def cut_blocks(rows: pd.DataFrame, actors: int, block_videos: int | None = None, most: int = 64) -> list[Block]:
    """The videos to extract, in CSV order, as blocks of ``block_videos``.

    By default up to ``most`` (the run's ``shard_videos``: a block fills one shard) and at least 2 blocks per actor.
    """
    if block_videos is None:
        block_videos = max(1, min(most, -(-len(rows) // (2 * max(actors, 1)))))
    return [Block(number, rows.iloc[start : start + block_videos].reset_index(drop=True))
            for number, start in enumerate(range(0, len(rows), block_videos))]


class BlockExtractor:
    """Extract blocks into one cache with one backbone, built once (a Ray actor's class, or used as it is).

    ``threads``: the backbone's CPU threads and the number of decoder
    processes (a Ray actor's ``num_cpus``). ``report(number, done, frames)`` is
    called as the block's videos finish (``done``: videos of the block done so far).
    ``decoder_class``: what opens the files (tests pass a double).
    """

    def __init__(self, config: ExtractConfig, plan: RunPlan, threads: int = 1,
                 report: Callable[[int, int, int], None] | None = None, decoder_class: type = ViewDecoder):
        self.config = replace(config, quiet=True, workers=threads, overwrite=False)
        self.plan = plan
        self.report = report
        self.backbone = build_embedder(plan, config.batch_size, threads)
        self.writer = WriterProcess(config.out, plan.provenance, shard_videos=config.shard_videos)  # the driver made the root
        self.decoders = DecoderPool(plan.decode, threads, decoder_class, config.batch_size)

    def __call__(self, block: Block) -> BlockResult:
        started, started_at = time.monotonic(), time.time()
        todo = not_cached(block.rows, self.writer.done_paths)
        summary = ExtractSummary(videos_total=len(block.rows), skipped=len(block.rows) - len(todo))
        driver = Driver(self.decoders, lambda: self.backbone, self.writer, BlockProgress(block.number, self.report),
                        self.config.views, self.config.batch_size)
        try:
            driver.run(todo, summary)
            if summary.interrupted:
                raise KeyboardInterrupt
        except BaseException:
            self.decoders.restart_all()  # they may still be on this block's videos: the next block gets fresh ones
            if self.writer.failed:  # it reported (or died): this block fails, the next ones get a fresh writer
                self.writer = WriterProcess(self.config.out, self.plan.provenance, shard_videos=self.config.shard_videos)
            raise
        finally:
            if not self.writer.failed:
                self.writer.close_shard()  # the block's videos are kept from here
        summary.seconds = time.monotonic() - started
        return BlockResult(block.number, summary.ok, summary.failed, summary.skipped, summary.frames, summary.seconds,
                           summary.failures, started_at, time.time())

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.decoders.close()


class BlockProgress:
    """A block's :class:`~framecache.extract.interfaces.ProgressReport`: its videos done, sent to ``report``
    as each video finishes, and its frames at most twice a second."""

    INTERVAL_S = 0.5

    def __init__(self, number: int, report: Callable[[int, int, int], None] | None):
        self.number, self.report = number, report
        self.sent_at, self.sent_done = 0.0, -1

    def update(self, done: int, failed: int, frames: int) -> None:
        now = time.monotonic()
        if self.report is not None and (done != self.sent_done or now - self.sent_at >= self.INTERVAL_S):
            self.report(self.number, done, frames)
            self.sent_at, self.sent_done = now, done

    def close(self) -> None:
        """Nothing to release: the block's last videos were reported as they finished."""
