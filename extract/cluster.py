"""Stage one on a Ray cluster: blocks of videos, one actor pool, shards on storage every node sees.

::

    Ray driver (this process)                     actors (one per actor_cpus CPUs, or per GPU)
    CSV - cached videos -> blocks of videos ───►  BlockExtractor: backbone, decoders, writer process built once;
    one progress bar, the summary          ◄───   each block run by the single-machine Driver into its own shards

Why Ray Core actors, not Ray Data: the work is already cut into files (a block
of videos in, a shard of features out, written by the actor itself), so there
is no dataset to stream between operators; an actor keeps what is expensive to
build (the backbone, compiled once; its decoder processes; its writer's scan of
the cache) across blocks, and Ray restarts an actor that dies and retries its
block (``max_restarts``, ``max_task_retries``). Ray Data's ``map_batches``
would move every decoded frame through Ray's object store and Arrow, and
writing shards from inside a UDF would bypass its own fault tolerance anyway.

Faults: a killed actor is restarted and its block retried; the retry skips the
videos of the shards the block had closed, so nothing is written twice. A
block that fails :data:`BLOCK_ATTEMPTS` times ends the run with its reason once
the blocks in flight are done (their shards kept). A killed driver takes its
actors with it; the same command resumes from the closed shards. A bad video is
a recorded failure, as on one machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass

from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name
from framecache.extract.blocks import Block, BlockExtractor, BlockResult, cut_blocks
from framecache.extract.driver import ExtractSummary
from framecache.extract.pipeline import RunPlan, check_something_extracted, not_cached, plan_run, refresh_metadata
from framecache.extract.progress import Progress
from framecache.extract.views import ViewDecoder
from framecache.extract.writer_process import write_record

log = logging.getLogger(__name__)

BLOCK_ATTEMPTS = 3  # a block is tried this often (Ray retries it when its actor dies) before the run gives up
ACTOR_RESTARTS = 8  # an actor is restarted this often; then a fresh one replaces it
# Blocks sent to each actor at a time: one. When an actor dies, Ray counts an attempt against every block
# queued on it, so a block waiting behind one that kills its actor would fail with it; the driver sends
# the next block as soon as one returns (milliseconds, against minutes per block).
QUEUED_PER_ACTOR = 1
POLL_S = 0.5  # how often the driver updates the progress bar
FORWARDED = ("KERAS_HOME", "TF_CPP_MIN_LOG_LEVEL")  # besides FRAMECACHE_*: environment the actors get from the driver


@dataclass(frozen=True)
class ClusterPlan:
    """Where the run goes: how many actors, each with how many CPUs and GPUs."""

    actors: int
    cpus: int  # per actor: the backbone's threads and decoder processes
    gpus: int  # per actor: 1 on a cluster with GPUs
    started_here: bool  # a local cluster this run started (and stops)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise FramecacheError(
            f"{option_name('ray')} needs Ray, which is not installed: pip install -e '.[ray]'"
        ) from None
    return ray


def connect(config: ExtractConfig) -> ClusterPlan:
    """Start (``local``) or join (``auto``, an address) a Ray cluster, and size the actor pool to it."""
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
        try:
            if config.ray == "local":
                # A cluster of this machine alone, even where RAY_ADDRESS names another: local is asked for.
                address = os.environ.pop("RAY_ADDRESS", None)
                try:
                    ray.init(num_cpus=config.workers or 1, **options)  # unset: one CPU; more actors, each with a backbone, are asked for
                finally:
                    if address is not None:
                        os.environ["RAY_ADDRESS"] = address
            else:
                ray.init(address=config.ray, **options)
        except ConnectionError as error:
            raise FramecacheError(
                f"cannot reach the Ray cluster at {option_name('ray', config.ray)}: {error}. Start it first "
                f"(ray start --head on the head node), or use {option_name('ray', 'local')} for a cluster on this machine"
            ) from None
        started_here = config.ray == "local"
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return ClusterPlan(actors=gpus, cpus=config.actor_cpus, gpus=1, started_here=started_here)
    cpus = int(resources.get("CPU", 0))
    if cpus < config.actor_cpus:
        raise FramecacheError(
            f"the Ray cluster has {cpus} CPU(s), fewer than {option_name('actor_cpus', config.actor_cpus)} per actor; "
            f"lower {option_name('actor_cpus')} or add nodes"
        )
    return ClusterPlan(actors=cpus // config.actor_cpus, cpus=config.actor_cpus, gpus=0, started_here=started_here)


def run_on_ray(config: ExtractConfig, decoder_class: type = ViewDecoder) -> ExtractSummary:
    """:func:`~framecache.extract.pipeline.run_extraction` on a Ray cluster: the same cache, provenance and features.

    ``config`` is taken as validated (by ``run_extraction``); ``decoder_class``: what opens the files in every actor.
    """
    from framecache.common.cache import CacheWriter

    _import_ray()  # before any file is touched
    started = time.monotonic()
    plan = plan_run(config)
    with CacheWriter(config.out, plan.provenance, overwrite=config.overwrite, shard_videos=config.shard_videos) as writer:
        done = writer.done_paths()  # the root exists from here: the actors only add shards
        todo = not_cached(plan.dataset, done)
        summary = ExtractSummary(videos_total=len(plan.dataset), skipped=len(plan.dataset) - len(todo))
        summary.relabeled = refresh_metadata(plan.dataset, writer.cached, plan.provenance.views,
                                             lambda record: write_record(writer, record))
    if todo.empty:
        summary.seconds = time.monotonic() - started
        return summary
    cluster = connect(config)
    try:
        blocks = cut_blocks(todo, cluster.actors, config.block_videos, most=config.shard_videos)
        progress = Progress(summary.videos_total, summary.skipped, config.quiet, started)
        try:
            run = _Run(config, plan, cluster, blocks, summary, progress, decoder_class)
            try:
                run.run()
            finally:
                run.close()
        except KeyboardInterrupt:
            summary.interrupted = True
        except _import_ray().exceptions.RayError as error:  # the cluster itself failed (a node, one of Ray's own actors)
            raise _cluster_failed(error, summary) from None
        finally:
            progress.close()
    finally:
        if cluster.started_here:
            _import_ray().shutdown()
    summary.seconds = time.monotonic() - started
    if not summary.interrupted and run.gave_up:
        raise run.give_up_error()
    check_something_extracted(summary, plan.dataset, config)
    return summary


class Tally:
    """Each block's videos and frames done so far, reported by the actors as they go (a Ray actor of its own)."""

    def __init__(self):
        self.blocks: dict[int, tuple[int, int]] = {}

    def report(self, number: int, videos: int, frames: int) -> None:
        self.blocks[number] = (videos, frames)

    def totals(self) -> dict[int, tuple[int, int]]:
        return self.blocks


class _ReportingExtractor(BlockExtractor):
    """A BlockExtractor whose progress goes to the run's Tally actor, found by its name.

    (By name, not by handle: Ray cannot restart an actor whose constructor was
    given another actor's handle, ray #53727.)
    """

    def __init__(self, config: ExtractConfig, plan: RunPlan, threads: int, tally_name: str, decoder_class: type):
        tally = _import_ray().get_actor(tally_name)
        super().__init__(config, plan, threads, report=lambda *values: tally.report.remote(*values), decoder_class=decoder_class)

    def extract(self, block: Block) -> BlockResult:
        return self(block)


class _Run:
    """The driver's loop: keep QUEUED_PER_ACTOR blocks on every actor, add up results, watch for failures."""

    def __init__(self, config: ExtractConfig, plan: RunPlan, cluster: ClusterPlan, blocks: list[Block], summary: ExtractSummary,
                 progress: Progress, decoder_class: type):
        ray = _import_ray()
        self.ray, self.config, self.summary, self.progress = ray, config, summary, progress
        self.todo = deque(blocks)
        tally_name = f"framecache-tally-{uuid.uuid4().hex}"
        self.tally = ray.remote(num_cpus=0)(Tally).options(name=tally_name).remote()
        remote = ray.remote(_ReportingExtractor).options(
            num_cpus=cluster.cpus, num_gpus=cluster.gpus, max_restarts=ACTOR_RESTARTS, max_task_retries=BLOCK_ATTEMPTS - 1,
            runtime_env={"env_vars": forwarded_environment()},
        )
        self.actors = [remote.remote(config, plan, cluster.cpus, tally_name, decoder_class)
                       for _ in range(min(cluster.actors, len(blocks)))]
        self.in_flight: dict = {}  # ObjectRef -> (actor index, block)
        self.gave_up: list[tuple[Block, str]] = []

    def run(self) -> None:
        ray = self.ray
        self._fill()
        while self.in_flight:
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=POLL_S)
            for reference in ready:
                _, block = self.in_flight.pop(reference)
                try:
                    self._done(ray.get(reference))
                except ray.exceptions.RayError as error:
                    self._failed(block, error)
            self._show()
            if not self.gave_up:
                self._fill()

    def _fill(self) -> None:
        for index, actor in enumerate(self.actors):
            queued = sum(1 for actor_index, _ in self.in_flight.values() if actor_index == index)
            while self.todo and queued < QUEUED_PER_ACTOR:
                block = self.todo.popleft()
                self.in_flight[actor.extract.remote(block)] = (index, block)
                queued += 1

    def _done(self, result: BlockResult) -> None:
        summary = self.summary
        summary.blocks.append(result)
        summary.ok += result.ok
        summary.failed += result.failed
        summary.frames += result.frames
        summary.failures.extend(result.failures)

    def _failed(self, block: Block, error: Exception) -> None:
        """A block Ray gave up on (its actor died BLOCK_ATTEMPTS times, or it raised): no block starts after it,
        and the run ends once the blocks in flight are done."""
        reason = _reason(error)
        log.warning("block %d (%d videos from %s) failed: %s", block.number, len(block.rows), block.first_path, reason)
        self.gave_up.append((block, reason))

    def _show(self) -> None:
        """Move the progress bar to the videos done across the cluster (finished blocks, and blocks in progress)."""
        try:
            totals = self.ray.get(self.tally.totals.remote(), timeout=5)
        except self.ray.exceptions.GetTimeoutError:
            return
        summary = self.summary
        finished = {result.number for result in summary.blocks}
        running = [(videos, frames) for number, (videos, frames) in totals.items() if number not in finished]
        # Videos of blocks still running count as done (their failures show once the block returns).
        done = min(summary.done + sum(videos for videos, _ in running), summary.videos_total)
        self.progress.update(done, summary.failed, summary.frames + sum(frames for _, frames in running))

    def close(self) -> None:
        """Close every actor's writer and decoders (their blocks' shards are closed already); after a failure of the
        cluster, as far as it still answers."""
        with contextlib.suppress(self.ray.exceptions.RayError):
            closing = [actor.close.remote() for actor in self.actors]
            self.ray.wait(closing, num_returns=len(closing), timeout=30)

    def give_up_error(self) -> FramecacheError:
        block, reason = self.gave_up[0]
        return FramecacheError(
            f"{len(self.gave_up)} block(s) of videos failed on the Ray cluster, each after up to {BLOCK_ATTEMPTS} attempts; "
            f"the first, block {block.number} ({len(block.rows)} videos from {block.first_path}): {reason}. "
            f"Every other block's shards are kept ({self.summary.ok} videos extracted this run): fix the cause "
            f"(`{command_hint('info', features=self.config.out)}` lists the cached videos) and run the same command again to resume"
        )


def _cluster_failed(error: Exception, summary: ExtractSummary) -> FramecacheError:
    """The error of a run whose cluster failed under it (not one block's failure: those are retried, then reported)."""
    return FramecacheError(
        f"the Ray cluster failed during the run ({_reason(error)}). Every shard closed so far is kept "
        f"({summary.ok} videos of finished blocks this run): check that the cluster is up (`ray status`) and run the "
        "same command again to resume"
    )


def forwarded_environment() -> dict[str, str]:
    """The driver's settings that must reach the actors on every node: FRAMECACHE_* (e.g. where converted models are
    cached) and KERAS_HOME (where ImageNet weights are)."""
    return {name: value for name, value in os.environ.items() if name.startswith("FRAMECACHE_") or name in FORWARDED}


def _reason(error: Exception) -> str:
    """A Ray error in one line: the exception raised in the actor, or why the actor died."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, FramecacheError):
        return str(cause)
    text = str(error).strip().splitlines()
    first = next((line for line in text if line.strip()), type(error).__name__)
    return f"{type(error).__name__}: {first[:300]}"
