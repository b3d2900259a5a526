"""Stage one on a local Ray cluster against the single-machine pipeline, side by side (``make bench-ray``).

    python -m framecache.bench.ray_overhead [--workers 2] [--clips 8] [--seconds 10] [--rounds 3]

Each round extracts the same generated clips twice, in alternating order: with
``make features`` as on one machine (one process, its decoder and writer) and
with ``RAY=local``: ``workers`` single-CPU actors of a cluster started once,
before the rounds (its start-up is reported on its own). Both build their
backbone in the timed run. Reported: each run's frames/s, the ratio Ray /
single machine per round (target >= 0.85), the same for Ray once its actors
run (from the first block's start to the last block's end: what a run of
hours sees), Ray's start-up seconds (the cluster's, and each run's), and for
the extrapolation to a large cluster, each block's wall time in its actor and
the driver's CPU time per block.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from framecache import process_setup
from framecache.bench import machine, phases, stats
from framecache.bench.phases import BATCH, VIEWS, cpu_seconds
from framecache.common.config import ExtractConfig

TARGET = 0.85
# The extrapolation's cluster, and its assumptions.
CLUSTER_VIDEOS = 100_000
CLUSTER_NODES = 50
CLUSTER_FRAMES_PER_VIDEO = 250  # 10 s at 25 fps
CLUSTER_BLOCK_VIDEOS = ExtractConfig().shard_videos  # the default block: one shard


def _timed(config: ExtractConfig) -> dict:
    """One extraction: frames/s over its whole run, and the driver's (this process's) CPU seconds."""
    from framecache.extract.pipeline import run_extraction

    started, cpu = time.perf_counter(), cpu_seconds()
    summary = run_extraction(config)
    seconds = time.perf_counter() - started
    run = {"fps": summary.frames / seconds, "seconds": seconds, "frames": summary.frames, "videos": summary.ok,
           "driver_cpu_s": cpu_seconds() - cpu, "blocks": [block.seconds for block in summary.blocks]}
    if summary.blocks:  # once running: from the first block's start to the last one's end, in the actors
        span = max(block.ended_at for block in summary.blocks) - min(block.started_at for block in summary.blocks)
        run["fps_running"] = summary.frames / span
        run["startup_s"] = seconds - span
    return run


def measure_ray_overhead(folder: Path, workers: int = 2, clips: int = 8, seconds: float = 10.0, rounds: int = 3) -> dict:
    """The figures of the module docstring, as one dict."""
    import ray

    csv = phases.make_clips(folder, clips, seconds)
    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
    startup_s = time.perf_counter() - started
    runs: dict[str, list[dict]] = {"pipeline": [], "ray": []}
    try:
        for number in range(rounds):
            order = ("pipeline", "ray") if number % 2 == 0 else ("ray", "pipeline")  # drift hits both alike
            for name in order:
                extra = {"ray": "local", "workers": workers} if name == "ray" else {}
                runs[name].append(_timed(phases.extract_config(csv, folder / f"{name}.h5", **extra)))
            print(f"bench-ray: round {number + 1}/{rounds}: pipeline {runs['pipeline'][-1]['fps']:.1f} frames/s, "
                  f"Ray {runs['ray'][-1]['fps']:.1f} frames/s", flush=True)
    finally:
        ray.shutdown()
    ratios = [ray_run["fps"] / pipeline["fps"] for ray_run, pipeline in zip(runs["ray"], runs["pipeline"])]
    running = [ray_run["fps_running"] / pipeline["fps"] for ray_run, pipeline in zip(runs["ray"], runs["pipeline"])]
    blocks = [block for run in runs["ray"] for block in run["blocks"]]
    block_count = statistics.median(len(run["blocks"]) for run in runs["ray"])
    results = {
        "workers": workers, "clips": clips, "clip_seconds": seconds, "rounds": rounds, "views": VIEWS, "batch_size": BATCH,
        "pipeline_fps": stats.summarise(run["fps"] for run in runs["pipeline"]),
        "ray_fps": stats.summarise(run["fps"] for run in runs["ray"]),
        "ray_over_pipeline": stats.summarise(ratios),
        "ray_fps_running": stats.summarise(run["fps_running"] for run in runs["ray"]),
        "ray_running_over_pipeline": stats.summarise(running),
        "ray_run_startup_s": stats.summarise(run["startup_s"] for run in runs["ray"]),
        "ray_startup_s": startup_s,
        "blocks_per_run": block_count,
        "block_wall_s": stats.summarise(blocks),
        "driver_cpu_s_per_block": statistics.median(run["driver_cpu_s"] / max(1, len(run["blocks"])) for run in runs["ray"]),
        "runs": runs,
        "target": TARGET,
    }
    results["extrapolation"] = extrapolate(results)
    return results


def extrapolate(results: dict) -> dict:
    """100,000 videos on 50 nodes like this machine, from the measured rates (the assumptions are the inputs)."""
    fps_per_node = results["ray_fps"]["median"]
    frames = CLUSTER_VIDEOS * CLUSTER_FRAMES_PER_VIDEO * VIEWS
    blocks = -(-CLUSTER_VIDEOS // CLUSTER_BLOCK_VIDEOS)
    hours = frames / (fps_per_node * CLUSTER_NODES) / 3600
    feature_bytes = frames * 1280 * 2  # float16
    return {
        "videos": CLUSTER_VIDEOS, "nodes": CLUSTER_NODES, "frames_per_video": CLUSTER_FRAMES_PER_VIDEO,
        "block_videos": CLUSTER_BLOCK_VIDEOS, "blocks": blocks,
        "node_fps": fps_per_node,
        "hours": hours,
        "block_wall_s": CLUSTER_BLOCK_VIDEOS * CLUSTER_FRAMES_PER_VIDEO * VIEWS / (fps_per_node / results["workers"]),
        "driver_cpu_s_total": blocks * results["driver_cpu_s_per_block"],
        "feature_gb": feature_bytes / 1e9,
        "write_mb_per_s": feature_bytes / 1e6 / (hours * 3600),
    }


def format_report(results: dict) -> str:
    ratio, plan = results["ray_over_pipeline"], results["extrapolation"]
    lines = [
        f"framecache bench-ray: {results['clips']} clips of {results['clip_seconds']:g} s, {results['views']} views, batch "
        f"{results['batch_size']}, {results['rounds']} rounds alternating; median (min-max, ±largest distance from the median)",
        "",
        f"single machine (make features)      {stats.format_summary(results['pipeline_fps'])} frames/s",
        f"Ray, {results['workers']} single-CPU actors           {stats.format_summary(results['ray_fps'])} frames/s",
        f"Ray / single machine, per round     {stats.format_summary(ratio)}   target >= {results['target']}",
        f"Ray once its actors run             {stats.format_summary(results['ray_fps_running'])} frames/s "
        "(first block's start to last block's end)",
        f"  / single machine, per round       {stats.format_summary(results['ray_running_over_pipeline'])}",
        f"Ray start-up (ray.init, local)      {results['ray_startup_s']:.1f} s, once per cluster",
        f"  and per run (actors up, backbones built, the driver's listing and its wait for the end)  "
        f"{stats.format_summary(results['ray_run_startup_s'])} s",
        f"block wall time in its actor        {stats.format_summary(results['block_wall_s'])} s "
        f"({results['blocks_per_run']:g} blocks per run)",
        f"driver CPU per block                {1000 * results['driver_cpu_s_per_block']:.0f} ms (preparing, scheduling, progress)",
        "",
        f"on paper: {plan['videos']:,} videos x {plan['frames_per_video']} frames x {VIEWS} views on {plan['nodes']} nodes "
        f"like this one ({plan['node_fps']:.0f} frames/s each):",
        f"  {plan['hours']:.1f} h; {plan['blocks']:,} blocks of {plan['block_videos']} videos, each ~{plan['block_wall_s'] / 60:.0f} min "
        f"in one actor; driver ~{plan['driver_cpu_s_total'] / 60:.0f} CPU min in all;",
        f"  {plan['feature_gb']:.0f} GB of float16 features written at {plan['write_mb_per_s']:.1f} MB/s to shared storage",
        "",
        "machine: " + machine.format_cpu(machine.cpu_description()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecache.bench.ray_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="single-CPU actors of the local cluster (default %(default)s)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/ray.json", help="the figures as JSON (default %(default)s)")
    args = parser.parse_args(argv)
    process_setup.for_command()  # as `framecache extract` sets up its process (quiet TensorFlow, before Ray starts its workers)
    with tempfile.TemporaryDirectory(prefix="framecache-bench-ray-") as folder:
        results = measure_ray_overhead(Path(folder), args.workers, args.clips, args.seconds, args.rounds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(format_report(results))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
