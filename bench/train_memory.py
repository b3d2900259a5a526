"""Stage two streamed from the cache: peak memory against cache size, and the cost of streaming per epoch.

    python -m framecache.bench.train_memory [--small 2000] [--large 10000] [--views 1] [--frames 250]

Two synthetic caches (:func:`framecache.train.synthetic.write_synthetic_cache`:
1280-d features, 3 classes, 12 subjects, ``views`` views; ``frames`` frames per
video, 250 by default as in the issue: 10 s at 25 fps; train.synthetic's own
default is 12-80) of ``small`` and ``large`` videos. Each figure comes from a
fresh ``framecache train`` process (default model settings, ``--quiet``):

- ``peak_rss_mb_small`` / ``_large``: the peak resident memory of ``framecache
  train --in-memory no --epochs 2 --patience 1`` on each cache (the process's
  own high-water mark, ``VmHWM``, reported by the child as it exits);
- ``s_per_video_epoch_in_memory`` / ``_streamed``: on the small cache, CPU
  seconds per training video per epoch (each epoch also validates): the
  median over epochs 2-4 of one ``--epochs 4`` run (``--patience`` large: no
  early stop) of the process's CPU time per epoch (user + system, all threads;
  ``epoch_cpu_seconds`` in the run's metrics.json). Start-up, loading and the
  final predictions are outside the epochs; epoch 1 traces the model. CPU
  time, not wall time, because machines shared with other work disturb wall
  time most (``wall_s_per_video_epoch_*`` and the ``_wall_rounds`` ratios,
  from ``epoch_seconds``, are reported beside them).

The caches lie in the operating system's page cache (this machine has the
memory), so streaming is measured as the cost of reading through HDF5, not
of a disk. Ratios: peak RSS large / small (target <= 1.3) and streamed /
in-memory seconds (target <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURE_DIM = 1280
TARGETS = {"peak_rss_large_over_small": 1.3, "streamed_over_in_memory": 1.5}
EPOCHS = 4  # per timing run: epochs 2-4 are timed


# The child runs framecache train and, as it exits, writes its own peak RSS: VmHWM, the high-water mark of
# the program it runs. (ru_maxrss from wait4 would do on its own, but it also counts the parent's memory
# that the child had between fork and exec: inside make bench, that is the bench's 3.4 GB.)
PEAK_WRAPPER = """
import atexit, os, sys

def report():
    with open("/proc/self/status") as status:
        peak = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "")
    with open(os.environ["FRAMECACHE_PEAK_FILE"], "w") as out:
        out.write(peak)

if os.path.exists("/proc/self/status"):
    atexit.register(report)
from framecache.cli import main
main(sys.argv[1:])
"""


def train_process(cache: Path, run: Path, in_memory: str, epochs: int, patience: int) -> dict:
    """One ``framecache train`` in a fresh child: its peak RSS (MB), wall seconds, CPU seconds and metrics.json."""
    arguments = ["train", "--features", str(cache), "--run", str(run), "--overwrite", "--in-memory", in_memory,
                 "--epochs", str(epochs), "--patience", str(patience), "--quiet"]
    with tempfile.TemporaryFile() as errors, tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", PEAK_WRAPPER, *arguments], stdout=subprocess.DEVNULL, stderr=errors,
                                   env={**os.environ, "FRAMECACHE_PEAK_FILE": peak.name})
        _, status, usage = os.wait4(process.pid, 0)  # this child's own CPU time (and ru_maxrss, KiB, where no /proc)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"framecache {' '.join(arguments)} failed ({process.returncode}): {errors.read().decode()[-2000:]}")
        reported = peak.read().strip()
    metrics = json.loads((run / "metrics.json").read_text())
    peak_kib = int(reported) if reported else usage.ru_maxrss
    return {"peak_rss_mb": peak_kib / 1024, "wall_s": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "metrics": metrics}


def epoch_seconds(cache: Path, work: Path, in_memory: str, epochs: int = EPOCHS) -> dict:
    """Seconds per training video per epoch, the median over epochs 2.. of one ``epochs``-epoch run (no early stop).

    From the run's metrics.json (``epoch_cpu_seconds``: the process's CPU time
    over the epoch, every thread, which other processes sharing the machine
    disturb much less; ``epoch_seconds``: wall clock). Epoch 1 is left out: it
    traces the model. Each epoch also validates.
    """
    run = work / f"{in_memory}-{epochs}"
    result = train_process(cache, run, in_memory, epochs=epochs, patience=epochs + 1)
    metrics = result["metrics"]
    assert metrics["epochs"] == epochs
    videos = metrics["split_sizes"]["train"]["videos"]
    return {
        "wall": statistics.median(metrics["epoch_seconds"][1:]) / videos,
        "cpu": statistics.median(metrics["epoch_cpu_seconds"][1:]) / videos,
        "peak_rss_mb": result["peak_rss_mb"],
    }


def measure_train_memory(work_dir: str | Path, small: int = 2000, large: int = 10000, views: int = 1, frames: int | None = 250,
                         rounds: int = 1) -> dict:
    """The figures of the module docstring, with their ratios; ``rounds`` repeats the timing (median reported).

    ``frames``: per video; None: train.synthetic's default, 12-80 (the caches of the issue: 240 MB and 1.19 GB).
    """
    from framecache.common.cache import FeatureCache
    from framecache.train.synthetic import write_synthetic_cache

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    caches, cache_mb = {}, {}
    for name, videos in (("small", small), ("large", large)):
        caches[name] = write_synthetic_cache(work / f"synthetic-{videos}.h5", videos=videos, classes=3, feature_dim=FEATURE_DIM,
                                             views=views, subjects=12, frames=(frames, frames) if frames else (12, 80), seed=0)
        with FeatureCache(caches[name]) as cache:
            cache_mb[name] = cache.nbytes / 2**20
    peaks = {name: train_process(caches[name], work / f"peak-{name}", "no", epochs=2, patience=1) for name in caches}
    timings: dict[str, list[dict]] = {"yes": [], "no": []}
    for _ in range(rounds):  # in memory and streamed alternate, so drifting machine speed hits both alike
        for setting in ("yes", "no"):
            timings[setting].append(epoch_seconds(caches["small"], work / "timing", setting))
    ratios = {kind: [streamed[kind] / memory[kind] for memory, streamed in zip(timings["yes"], timings["no"])] for kind in ("cpu", "wall")}
    results = {
        "videos_small": small,
        "videos_large": large,
        "frames_per_video": frames or "12-80",
        "feature_dim": FEATURE_DIM,
        "views": views,
        "cache_mb_small": cache_mb["small"],
        "cache_mb_large": cache_mb["large"],
        "peak_rss_mb_small": peaks["small"]["peak_rss_mb"],
        "peak_rss_mb_large": peaks["large"]["peak_rss_mb"],
        "peak_rss_mb_small_in_memory": statistics.median(timing["peak_rss_mb"] for timing in timings["yes"]),
        "train_run_s_small": peaks["small"]["wall_s"],
        "train_run_s_large": peaks["large"]["wall_s"],
        "s_per_video_epoch_in_memory": statistics.median(timing["cpu"] for timing in timings["yes"]),
        "s_per_video_epoch_streamed": statistics.median(timing["cpu"] for timing in timings["no"]),
        "wall_s_per_video_epoch_in_memory": statistics.median(timing["wall"] for timing in timings["yes"]),
        "wall_s_per_video_epoch_streamed": statistics.median(timing["wall"] for timing in timings["no"]),
        "peak_rss_large_over_small": peaks["large"]["peak_rss_mb"] / peaks["small"]["peak_rss_mb"],
        "streamed_over_in_memory": statistics.median(ratios["cpu"]),
        "streamed_over_in_memory_rounds": ratios["cpu"],
        "streamed_over_in_memory_wall_rounds": ratios["wall"],
        "targets": TARGETS,
    }
    results["targets_met"] = {name: results[name] <= target for name, target in TARGETS.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecache.bench.train_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", help="where the caches and runs go (default: a temporary folder, removed)")
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--frames", type=int, default=250, help="per video (0: train.synthetic's default, 12-80)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    options = dict(small=args.small, large=args.large, views=args.views, frames=args.frames, rounds=args.rounds)
    if args.work_dir:
        results = measure_train_memory(args.work_dir, **options)
    else:
        with tempfile.TemporaryDirectory(prefix="framecache-train-memory-") as work:
            results = measure_train_memory(work, **options)
    width = max(map(len, results))
    for name, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{name:<{width}}  {shown}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
