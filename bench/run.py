"""``framecache bench`` (``make bench``): runs the bench (:mod:`framecache.bench.rounds`) and assembles its results.

The rounds' figures become medians with min–max and spread, each ratio is
taken within its round (:mod:`framecache.bench.stats`); everything is written
as one JSON object (``--out``) and printed as a table. Then the pose backbone,
where its models are at hand (:mod:`framecache.bench.pose`), under ``"pose"``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from framecache.bench import gpu, machine, phases, pose, stats, workers
from framecache.bench.phases import BACKBONE, BATCH, VIEWS
from framecache.bench.rounds import HEADLINE_RATIOS, RATIOS, Bench, Plan, parse_precisions
from framecache.common.config import ENGINES, PRECISIONS
from framecache.common.errors import FramecacheError
from framecache.common.options import check
from framecache.extract.engines import available_cores

TARGETS = {"extract_over_backbone": ">= 0.90", "extract_over_backbone_cpu": ">= 0.92", "extract_over_backbone_bf16": ">= 0.85",
           "extract_over_baseline": ">= 2", "end_to_end_epoch_over_train_run": ">= 50", "profile_whole_over_parts": "<= 1.05"}
TRAIN_MEMORY_ROUNDS = 2  # of stage two's streamed-vs-in-memory timing (framecache.bench.train_memory)


def explain_profile(figures: dict, once: dict) -> dict:
    """The whole extraction's CPU per embedded frame (f32, medians) taken apart as far as measured.

    Beyond the parts measured alone: the fixed start-up (decoder and writer
    processes, the backbone), spread over the run's frames, and the frames'
    way from the decoders to the pipeline; what is left is the CNN and the
    decoders slowing each other on shared cores and caches, batching, the writer.
    """
    if "profile_whole_ms" not in figures or "startup_cpu_s_pipeline" not in once:
        return {}
    frames = figures["extract_frames"]["median"]
    startup = 1000 * (once["startup_cpu_s_pipeline"] + once["startup_cpu_s_children"]) / frames
    explained = figures["profile_parts_ms"]["median"] + startup + once["transfer_cpu_ms_per_embedded_frame"]
    whole = figures["profile_whole_ms"]["median"]
    return {
        "startup_ms": startup,
        "transfer_ms": once["transfer_cpu_ms_per_embedded_frame"],
        "explained_ms": explained,
        "left_ms": whole - explained,
        "pipeline_over_backbone": figures["extract_cpu_ms_per_frame_pipeline"]["median"] / figures["profile_backbone_ms"]["median"],
    }


def run_bench(out: str = "bench/results.json", csv: str | None = None, clips: int | None = None, seconds: float | None = None,
              long_minutes: str | None = None, rounds: int | None = None, quick: bool = False, precisions: str = "f32,bf16",
              accuracy: bool = False, train_memory: bool | None = None, pose_models: str | None = None, engine: str = "auto",
              workers_sweep: str = "auto") -> int:
    """Measure stage one and two in interleaved rounds with the backbone on ``engine``, then extraction with each count of
    decoding processes in ``workers_sweep`` (:func:`framecache.bench.workers.worker_counts`), then the pose backbone where
    its models are found (``pose_models``, else its default folder); write the figures to ``out`` (JSON) and print a table."""
    started = time.perf_counter()
    plan = Plan.make(quick, rounds, clips, seconds, long_minutes, train_memory)
    asked = parse_precisions(precisions)
    check("engine", engine, choices=ENGINES)
    device = gpu.describe()
    counts = workers.worker_counts(workers_sweep, available_cores(), gpu=bool(device))
    pose_folder, pose_found, _ = pose.find_pose_models(pose_models)
    print(f"bench: engine {engine}, GPU: {device.get('gpu', 'none that TensorFlow sees')}; decoding processes compared: "
          f"{', '.join(map(str, counts)) or 'none'}")
    print(f"bench: pose models in {pose_folder}: {', '.join(pose_found) or 'none, the pose section is skipped'}")
    with tempfile.TemporaryDirectory(prefix="framecache-bench-") as folder:
        folder = Path(folder)
        clips_csv = Path(csv) if csv else phases.make_clips(folder, plan.clips, plan.seconds)
        bench = Bench(plan, folder, clips_csv, asked, engine)
        bench.run()
        once = bench.once()
        processes = workers.measure_workers(clips_csv, folder, bench.precisions, engine, counts, plan.rounds) if counts else None
        demo = None
        if accuracy:
            from framecache.bench.accuracy import demo_accuracy

            demo = demo_accuracy(folder, bench.precisions)
        streamed = None
        if plan.train_memory:
            from framecache.bench.train_memory import measure_train_memory

            streamed = measure_train_memory(folder / "train-memory", frames=None, rounds=TRAIN_MEMORY_ROUNDS)
        try:
            poses = pose.measure_pose(pose_models, csv, pose.QUICK_VIDEOS if quick else pose.VIDEOS, plan.rounds)
        except FramecacheError as error:  # the figures measured so far are still written
            poses = {"skipped": f"the pose measurement failed: {error}"}
    results = {
        "plan": {**asdict(plan), "quick": quick, "csv": csv, "precisions": bench.precisions, "skipped": bench.skipped,
                 "backbone": BACKBONE, "weights": "random", "views": VIEWS, "batch_size": BATCH, "engine": bench.engine},
        "machine": {**machine.cpu_description(), **device, **machine.versions()},
        "figures": stats.figures(bench.rounds),
        "ratios": stats.ratios(bench.rounds, RATIOS),
        "once": once,
        "accuracy": demo,
        "train_memory": streamed,
        "decoding_processes": processes,
        "pose": poses,
        "profile_explained": explain_profile(stats.figures(bench.rounds), once),
        "rounds": bench.rounds,
        "seconds": time.perf_counter() - started,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    print(format_report(results))
    print(f"\nwritten: {out} ({results['seconds']:.0f} s)")
    return 0


# -- the report

FIGURES = [  # (figure, what it is)
    ("backbone_fps", "the default engine alone, f32, batch {batch}, frames in memory"),
    ("backbone_fps_tensorflow", "TensorFlow alone (tf.function), batch {batch}"),
    ("backbone_fps_b16", "the default engine, f32, batch 16"),
    ("backbone_fps_b64", "the default engine, f32, batch 64"),
    ("extract_fps", "`make features` end to end: {clips} videos, {views} views, f32"),
    ("extract_idle_share", "of its embedding time, the share the backbone waited for frames, f32"),
    ("extract_idle_share_bf16", "the same at bf16"),
    ("extract_decoders", "decoding processes at the extraction's end (one to start, one more each time the backbone waited), f32"),
    ("extract_decoders_bf16", "the same at bf16"),
    ("extract_gpu_peak_mb", "on a GPU: TensorFlow's memory in use at its peak during the extraction, MB, f32"),
    ("extract_gpu_peak_mb_bf16", "the same at bf16"),
    ("baseline_fps", "decode each video whole, one Keras model.predict per video"),
    ("decode_fps_pyav", "decode + resize + crop only"),
    ("decode_fps_decord", "the same with decord"),
    ("train_run_s", "one `make train` on {study} synthetic videos x 250 frames x 2 views (mean of a round's two)"),
    ("gru_epoch_s", "one GRU epoch of those runs"),
    ("end_to_end_epoch_s", "one epoch through TensorFlow's CNN (measured fps) + one GRU epoch"),
]
PROFILE = [  # (figure, what it is)
    ("profile_backbone_ms", "backbone alone"),
    ("profile_decode_ms", "decoding (one decode per {views} embedded frames)"),
    ("profile_augment_ms", "augmentation (views 1..)"),
    ("profile_parts_ms", "sum of the parts"),
    ("profile_whole_ms", "whole extraction (process tree)"),
    ("extract_cpu_ms_per_frame_pipeline", "  of which the pipeline process (backbone, batching)"),
    ("extract_cpu_ms_per_frame_children", "  of which decoders and writer"),
]


def format_report(results: dict) -> str:
    """The table ``make bench`` prints: medians with min–max and spread, the ratios, precisions, profile, machine."""
    plan, figures, ratios, once = results["plan"], results["figures"], results["ratios"], results["once"]
    context = {"batch": plan["batch_size"], "clips": plan["clips"], "views": plan["views"], "study": plan["study_videos"]}
    rounds = plan["rounds"]
    lines = [f"framecache bench: {rounds} interleaved rounds{' (quick)' if plan['quick'] else ''}; "
             f"median (min–max, ±largest distance from the median) over the rounds", ""]
    rows = [(name, stats.format_summary(figures[name]), note.format(**context)) for name, note in FIGURES if name in figures]
    rows += [(name, f"{value:.4g}", "once") for name, value in once.items() if not name.startswith("cosine")]
    lines += _table(("figure", "value", "note"), rows)
    lines += [""]
    rows = [(name, stats.format_summary(ratios[name]), f"target {TARGETS[name]}", _rounds(ratios[name]))
            for name in HEADLINE_RATIOS if name in ratios]
    lines += _table(("ratio (per round)", "median (min–max, spread)", "goal", "rounds"), rows)
    load = figures.get("load_average", {})
    cores = results["machine"].get("cores") or 1
    # The bench's own extraction keeps about cores + 1 processes runnable (measured on an idle 2-core machine:
    # load 2.2-2.4); more than that is other work.
    if load and load["max"] > cores + 1:
        lines += [f"warning: the machine was busy (1-minute load average up to {load['max']:.1f} on {cores} cores, per round: "
                  f"{_rounds(load)}): frames/s and their ratios are unreliable, the CPU-time figures hold"]
    lines += format_pose(results.get("pose"), cores)
    lines += ["", "precision (engine " + plan["engine"] + ", batch " + str(plan["batch_size"]) + ", random weights; "
              "speed-ups per round)"]
    accuracy = (results.get("accuracy") or {}).get("by_precision", {})
    rows = []
    for precision in plan["precisions"]:
        suffix = "" if precision == "f32" else f"_{precision}"
        demo = accuracy.get(precision, {})
        rows.append((
            precision,
            stats.format_summary(figures.get(f"backbone_fps{suffix}", {})),
            "1" if precision == "f32" else stats.format_summary(ratios.get(f"backbone_{precision}_over_f32", {})),
            stats.format_summary(figures.get(f"extract_fps{suffix}", {})),
            "1" if precision == "f32" else stats.format_summary(ratios.get(f"extract_{precision}_over_f32", {})),
            "1" if precision == "f32" else f"{once.get(f'cosine_{precision}_to_f32_min', float('nan')):.5f}",
            f"{demo['cosine_to_f32_min']:.5f}" if demo else "-",
            f"{demo['test_accuracy']:.3f}" if demo else "-",
        ))
    for precision, reason in plan["skipped"].items():
        if precision in PRECISIONS:
            rows.append((precision, "not here", "", "", "", "", "", reason[:60]))
    lines += _table(("precision", "backbone fps", "x f32", "extract fps", "x f32", "cos. bench min",
                     "cos. demo min", "demo test acc." if accuracy else "demo acc. (--accuracy)"), rows)
    if accuracy:
        demo = results["accuracy"]
        tests = {values.get("test_videos") for values in accuracy.values()}
        lines += [f"demo: {demo['videos']} videos, {demo['backbone']} {demo['weights']} features, a GRU with the default "
                  f"settings and seed {demo['seed']}, test split of {', '.join(map(str, tests))} videos"]
    lines += format_workers(results.get("decoding_processes"))
    lines += _train_memory_lines(results.get("train_memory"))
    lines += ["", "where stage one's CPU goes, ms per embedded frame (f32)"]
    rows = [(note.format(**context), stats.format_summary(figures[name])) for name, note in PROFILE if name in figures]
    explained = results.get("profile_explained") or {}
    if explained:
        frames = figures["extract_frames"]["median"]
        rows += [
            (f"start-up of 2 processes and the backbone, over {frames:.0f} frames", f"{explained['startup_ms']:.3g}"),
            ("frames crossing processes (shared memory, rows named in messages)", f"{explained['transfer_ms']:.3g}"),
            ("parts + start-up + crossing", f"{explained['explained_ms']:.3g}"),
            ("left: CNN and decoders sharing 2 cores and caches, batching, writer", f"{explained['left_ms']:.3g}"),
        ]
    rows += [(f"decoding / whole extraction, a share ({precision})", stats.format_summary(ratios[name]))
             for precision, name in (("f32", "decode_share"), ("bf16", "decode_share_bf16")) if name in ratios]
    lines += _table(("part", "ms"), rows)
    device = results["machine"]
    lines += ["", "machine: " + machine.format_cpu(device),
              *([f"GPU: {device['gpu']}, compute capability {device['gpu_compute_capability']}"] if "gpu" in device else []),
              "versions: " + ", ".join(f"{key} {results['machine'][key]}" for key in ("python", "tensorflow-cpu", "tensorflow", "keras",
                                                                                    "openvino") if key in results["machine"])]
    return "\n".join(lines)


def format_workers(measured: dict | None) -> list[str]:
    """The decoding-process sweep's rows (frames/s, idle share, GPU memory per count and precision) and, per precision, the
    count that kept the backbone busy; nothing where the sweep did not run."""
    if not measured:
        return []
    lines = ["", f"decoding processes (--workers), {measured['rounds']} interleaved rounds; the backbone counts as busy where it "
             f"waited for frames at most {100 * measured['busy_idle_share']:.0f} % of its embedding time"]
    rows = [(precision, count, *(stats.format_summary(figures[name]) for name in workers.FIGURES))
            for precision, by_count in measured["by_precision"].items() for count, figures in by_count.items()]
    lines += _table(("precision", "workers", "extract fps", "idle share", "GPU peak MB"), rows)
    for precision, count in measured["keeps_backbone_busy"].items():
        counts = ", ".join(map(str, measured["counts"]))
        found = f"{count} decoding process{'es' if count > 1 else ''}" if count else f"none of {counts} decoding processes"
        lines.append(f"kept busy at {precision} by: {found}")
    return lines


def _train_memory_lines(streamed: dict | None) -> list[str]:
    """Stage two streamed from the cache: its two ratios against their targets (``--no-train-memory`` skips it)."""
    if not streamed:
        return []
    small, large = streamed["videos_small"], streamed["videos_large"]
    rows = [
        (f"peak RSS of make train, streamed: {large:,} / {small:,} videos",
         f"{streamed['peak_rss_mb_large']:.0f} / {streamed['peak_rss_mb_small']:.0f} MB",
         f"{streamed['peak_rss_large_over_small']:.3g}", f"<= {streamed['targets']['peak_rss_large_over_small']}"),
        (f"CPU s per video-epoch, streamed / in memory ({small:,} videos)",
         f"{1000 * streamed['s_per_video_epoch_streamed']:.3g} / {1000 * streamed['s_per_video_epoch_in_memory']:.3g} ms",
         f"{streamed['streamed_over_in_memory']:.3g}", f"<= {streamed['targets']['streamed_over_in_memory']}"),
        ("  the same in wall-clock seconds, per round", "",
         " ".join(f"{value:.3g}" for value in streamed["streamed_over_in_memory_wall_rounds"]), ""),
    ]
    caches = f"{streamed['cache_mb_small']:.0f} MB and {streamed['cache_mb_large']:.0f} MB"
    return ["", f"stage two streamed from the cache (synthetic caches of {caches}, {streamed['frames_per_video']} frames "
            "per video, 1280-d; framecache.bench.train_memory)", *_table(("figure", "values", "ratio", "target"), rows)]


def format_pose(measured: dict | None, cores: int | None = None) -> list[str]:
    """The pose backbone's rows, one per model size and runtime, or the line saying why it was skipped; with ``cores``,
    a warning where the machine was busier than the bench's own processes make it (as for the CNN's rounds)."""
    if not measured:
        return []
    if "skipped" in measured:
        return ["", f"pose backbone: skipped: {measured['skipped']}"]
    source = f"videos of {measured['csv']}" if measured.get("csv") else "demo videos"
    lines = ["", f"pose backbone (BlazePose, models in {measured['models']}): {measured['videos']} {source}, "
             f"{measured['frames']} frames letterboxed to {measured['frame_size']} px, {measured['rounds']} interleaved rounds; "
             f"runtime {', '.join(measured['runtimes'])} ({measured['runtime_note']})"]  # fmt: skip
    rows = [(size, found["backbone"], runtime, *(stats.format_summary(figures[name]) for name in pose.FIGURES))
            for size, found in measured["by_size"].items() for runtime, figures in found["runtimes"].items()]
    rows += [(size, pose.SIZES[size], "-", "not found", "", "") for size in measured.get("not_measured", {})]
    lines += _table(("size", "backbone", "runtime", "tracker alone fps", "extract --views 1 fps", "extract / alone"), rows)
    load = measured.get("load_average") or {}
    if cores and load and load["max"] > cores + 1:
        lines += [f"warning: the machine was busy during the pose rounds (1-minute load average up to {load['max']:.1f} on "
                  f"{cores} cores): their frames/s and ratios are unreliable"]
    return lines


def _rounds(summary: dict) -> str:
    return " ".join(f"{value:.3g}" for value in summary.get("rounds", []))


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    return [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
