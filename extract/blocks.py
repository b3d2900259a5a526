"""Stage one by blocks of videos: what one Ray actor runs, free of Ray so that it runs and is tested anywhere.

A block is some rows of the CSV. :class:`BlockExtractor` builds the backbone,
its decoder processes and its cache writer once, in ``__init__``, and extracts
each block it is given with the single-machine code
(:class:`~framecache.extract.pipeline.Extraction`: batches across the block's
videos, the same views) into shards of its own, closing the open one before it
returns. So a block's videos are kept once its call returns, and a process
killed during a block loses only that block's open shard: run again, the block
skips the videos of the shards it had closed (nothing is written twice).

The writer lives in the actor's own process (no writer process as on one
machine): if the actor dies, its block is what is retried.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd

from framecache.common.cache import CacheWriter
from framecache.common.config import ExtractConfig
from framecache.common.provenance import Provenance
from framecache.extract.messages import FailureRecord, VideoRecord
from framecache.extract.pipeline import Extraction, build_backbone_of
from framecache.extract.processes import DecoderPool
from framecache.extract.views import DecodeSettings
from framecache.extract.workers import write_record

# Test hook (fault injection): a block extractor given a block with a video whose path contains
# the value of this environment variable kills its own process with SIGKILL before extracting it,
# as the OOM killer or a lost node would. Unset (the default) it does nothing. Used by tests/test_ray.py.
FAULT_KILL_ENV = "FRAMECACHE_FAULT_KILL_ACTOR"


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
    """What a block's extraction did (the driver adds these up into the run's summary)."""

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


class BlockWriter:
    """The pipeline's writer interface (``done_paths``, ``check``, ``send``) over a CacheWriter in this process."""

    def __init__(self, writer):
        self.writer = writer

    @property
    def done_paths(self) -> set[str]:
        return self.writer.done_paths()

    def check(self) -> None:
        """Nothing to check: a failed write raises in :meth:`send` itself."""

    def send(self, record: VideoRecord | FailureRecord) -> None:
        write_record(self.writer, record)


class BlockExtractor:
    """Extract blocks into one cache with one backbone, built once (a Ray actor's class, or used as it is).

    ``threads``: the backbone's CPU threads and the number of decoder
    processes (a Ray actor's ``num_cpus``). ``report(number, done)`` is called
    as the block's videos finish (``done``: videos of the block done so far).
    """

    def __init__(self, config: ExtractConfig, provenance: Provenance, threads: int = 1,
                 report: Callable[[int, int, int], None] | None = None):
        self.config = replace(config, quiet=True, workers=threads, overwrite=False)
        self.provenance = provenance
        self.report = report
        self.backbone = build_backbone_of(self.config, threads=threads)
        self.writer = CacheWriter(config.out, provenance, shard_videos=config.shard_videos)  # the driver made the root
        settings = DecodeSettings.from_provenance(provenance, chunk_frames=config.chunk_frames)
        self.decoders = DecoderPool(settings, threads)

    def __call__(self, block: Block) -> BlockResult:
        started, started_at = time.monotonic(), time.time()
        extraction = Extraction(self.config, block.rows, self.provenance, BlockWriter(self.writer), started,
                                backbone=self.backbone, progress=_BlockProgress(block.number, self.report))
        crash_on = os.environ.get(FAULT_KILL_ENV)
        if crash_on and any(crash_on in path for path in block.rows["path"]):
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            summary = extraction.run(self.decoders)
            if summary.interrupted:
                raise KeyboardInterrupt
        except BaseException:
            self.decoders.close()  # they may still be on this block's videos: the next block gets fresh ones
            self.decoders = DecoderPool(self.decoders.settings, len(self.decoders.slots))
            raise
        finally:
            self.writer.close_shard()  # the block's videos are kept from here
        return BlockResult(block.number, summary.ok, summary.failed, summary.skipped, summary.frames, summary.seconds,
                           summary.failures, started_at, time.time())

    def close(self) -> None:
        self.writer.close()
        self.decoders.close()


class _BlockProgress:
    """The pipeline's progress interface, reporting the block's videos done to ``report`` (at most twice a second)."""

    INTERVAL_S = 0.5

    def __init__(self, number: int, report: Callable[[int, int, int], None] | None):
        self.number, self.report = number, report
        self.sent = 0.0

    def _send(self, summary, force: bool = False) -> None:
        now = time.monotonic()
        if self.report is not None and (force or now - self.sent >= self.INTERVAL_S):
            self.report(self.number, summary.skipped + summary.ok + summary.failed, summary.frames)
            self.sent = now

    def video_done(self, summary) -> None:
        self._send(summary, force=True)

    def frames_embedded(self, summary) -> None:
        self._send(summary)

    def tick(self, summary) -> None:
        self._send(summary)

    def close(self) -> None:
        """Nothing to release: the block's last videos were reported as they finished."""
