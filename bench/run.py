"""``framecache bench`` (``make bench``): stage one and stage two measured side by side, in interleaved rounds.

These machines are shared, so absolute speed drifts from minute to minute. The
bench therefore measures in rounds (A B A B ...): each round runs every phase
once — the backbone alone per engine and precision, decoding, augmentation,
extraction end to end per precision, the Keras baseline, a training run — and
every ratio is computed within its round, from phases measured minutes apart
at most. The backbone alone is measured in slots, one before each phase and
one at the end of the round, so that its figure samples the machine over the
same minutes as the extraction it is compared with. The report gives each figure's median and min–max over the rounds and
each ratio's median and spread (:mod:`framecache.bench.stats`). Figures that
do not depend on speed (cache size, memory, cosine) are measured once.

Prints a table and writes everything as one JSON object (``--out``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from framecache.bench import machine, phases, stats
from framecache.bench.phases import BACKBONE, BATCH, SIZE, VIEWS
from framecache.common.config import PRECISIONS
from framecache.common.errors import FramecacheError

# Ratios, each computed within a round: name -> (numerator, denominator).
RATIOS = {
    "extract_over_backbone": ("extract_fps", "backbone_fps"),
    # The same in CPU time (backbone alone / whole extraction, per embedded frame): unlike frames/s it does not
    # depend on the share of a busy machine each phase gets (4 processes get more of it than 2 threads).
    "extract_over_backbone_cpu": ("profile_backbone_ms", "profile_whole_ms"),
    "extract_over_baseline": ("extract_fps", "baseline_fps"),
    "end_to_end_epoch_over_train_run": ("end_to_end_epoch_s", "train_run_s"),
    "profile_whole_over_parts": ("profile_whole_ms", "profile_parts_ms"),
    "backbone_bf16_over_f32": ("backbone_fps_bf16", "backbone_fps"),
    "extract_bf16_over_f32": ("extract_fps_bf16", "extract_fps"),
    "extract_over_backbone_bf16": ("extract_fps_bf16", "backbone_fps_bf16"),
    "profile_whole_over_parts_bf16": ("profile_whole_ms_bf16", "profile_parts_ms_bf16"),
}
HEADLINE_RATIOS = ("extract_over_backbone", "extract_over_backbone_cpu", "extract_over_baseline", "end_to_end_epoch_over_train_run",
                   "profile_whole_over_parts")
TARGETS = {"extract_over_backbone": ">= 0.90", "extract_over_backbone_cpu": ">= 0.90", "extract_over_baseline": ">= 2",
           "end_to_end_epoch_over_train_run": ">= 50", "profile_whole_over_parts": "<= 1.05"}
STUDY_FRAMES = 250  # a synthetic study's videos: 10 s at 25 fps
TRAIN_MEMORY_ROUNDS = 2  # of stage two's streamed-vs-in-memory timing (framecache.bench.train_memory)


@dataclass(frozen=True)
class Plan:
    """How much the bench measures: ``full`` (``make bench``, 9-14 minutes on 2 cores) or ``quick`` (development, ~1 minute)."""

    rounds: int = 3
    clips: int = 8  # generated clips of ``seconds`` each, all extracted every round
    seconds: float = 10.0
    decode_clips: int = 4  # of those, decoded alone (decoding and augmentation figures, backbone frames)
    # Of those, through the Keras baseline: half just before the f32 extraction, half just after. One model.predict
    # swings by +-15 % from call to call (measured: 44-62 frames/s over ten calls on one clip), so several per round.
    baseline_clips: int = 4
    backbone_batches: int = 2  # batches of the default engine alone per slot (a slot before each phase, one at the end)
    batch_sweep: tuple[int, ...] = (16, 64)  # other batch sizes of the default engine, for the record
    study_videos: int = 200  # videos of the synthetic study cache that training runs on
    long_minutes: tuple[float, ...] = (1.0, 10.0)  # the memory check's video lengths; () skips it
    train_memory: bool = True  # stage two's memory bar: make train streamed on 2,000 and 10,000 synthetic videos

    @classmethod
    def make(cls, quick: bool = False, rounds: int | None = None, clips: int | None = None, seconds: float | None = None,
             long_minutes: str | None = None, train_memory: bool | None = None) -> Plan:
        base = cls(rounds=2, clips=4, seconds=4.0, decode_clips=2, baseline_clips=2, backbone_batches=1, batch_sweep=(),
                   study_videos=40, long_minutes=(), train_memory=False) if quick else cls()
        changes = {}
        if train_memory is not None:
            changes["train_memory"] = train_memory
        if rounds is not None:
            changes["rounds"] = rounds
        if clips is not None:
            changes["clips"] = clips
        if seconds is not None:
            changes["seconds"] = seconds
        if long_minutes is not None and not quick:
            changes["long_minutes"] = tuple(float(value) for value in long_minutes.split(",") if value.strip())
        plan = cls(**{**asdict(base), **changes})
        if plan.rounds < 1 or plan.clips < 1 or plan.seconds <= 0:
            raise FramecacheError(f"--rounds and --clips must be >= 1 and --seconds > 0, got {plan.rounds}, {plan.clips}, {plan.seconds}")
        return plan


def parse_precisions(text: str) -> list[str]:
    """``f32,bf16`` -> ['f32', 'bf16']: f32 first (every other precision is compared with it), no duplicates."""
    asked = [value.strip() for value in text.split(",") if value.strip()]
    unknown = [value for value in asked if value not in PRECISIONS]
    if unknown:
        raise FramecacheError(f"--precisions takes a comma-separated list of {', '.join(PRECISIONS)}, got {', '.join(unknown)}")
    return list(dict.fromkeys(["f32", *asked]))


class Bench:
    """One bench run: the built backbones and models live across rounds; each round appends its figures."""

    def __init__(self, plan: Plan, folder: Path, csv: Path, precisions: list[str], log=print):
        self.plan, self.folder, self.csv, self.log = plan, folder, csv, log
        self.rounds: list[dict] = []
        self.skipped: dict[str, str] = {}  # precision -> why it is not measured here
        self.precisions = self._supported(precisions)
        paths = phases.video_paths(csv)
        self.decode_paths = paths[: plan.decode_clips]
        baseline = paths[: plan.baseline_clips]
        self.baseline_halves = [baseline[: (len(baseline) + 1) // 2], baseline[(len(baseline) + 1) // 2 :]]
        videos = phases.decoded_frames(self.decode_paths, "pyav")[0]
        count = max((plan.backbone_batches * BATCH, *plan.batch_sweep))
        self.frames = np.resize(np.concatenate(videos), (count, SIZE, SIZE, 3))  # repeated where the videos are short
        self.backbones = self._build_backbones()
        self.baseline = phases.baseline_model(warm_up=baseline[:1])
        self.study = folder / "study.h5"
        phases.synthetic_study_cache(self.study, videos=plan.study_videos, frames=STUDY_FRAMES)

    def _supported(self, precisions: list[str]) -> list[str]:
        from framecache.extract.backbones import check_precision

        kept = []
        for precision in precisions:
            try:
                check_precision(precision, "auto")
                kept.append(precision)
            except FramecacheError as error:
                self.skipped[precision] = str(error)
                self.log(f"bench: {precision} not measured: {error}")
        return kept

    def _build_backbones(self) -> dict[str, object]:
        """Name -> backbone, warmed up: the default engine per precision (batch ``BATCH``), TensorFlow, other batches."""
        from framecache.extract.backbones import build_backbone

        built = {}
        for precision in self.precisions:
            built[_suffix("backbone_fps", precision)] = build_backbone(BACKBONE, "none", engine="auto", batch_size=BATCH,
                                                                       precision=precision)
        self.engine = built["backbone_fps"].engine
        if self.engine != "tensorflow":
            built["backbone_fps_tensorflow"] = build_backbone(BACKBONE, "none", engine="tensorflow", batch_size=BATCH)
        self.ratio_backbones = set(built)  # those in a ratio: per precision, and TensorFlow (end_to_end_epoch_s)
        for batch_size in self.plan.batch_sweep:
            built[f"backbone_fps_b{batch_size}"] = build_backbone(BACKBONE, "none", engine=self.engine, batch_size=batch_size)
        for backbone in built.values():
            backbone.embed(self.frames[: backbone.batch_size])  # compilation, memory
        return built

    def run(self) -> None:
        for number in range(self.plan.rounds):
            started = time.perf_counter()
            self.rounds.append(self.measure_round())
            self.log(f"bench: round {number + 1}/{self.plan.rounds} in {time.perf_counter() - started:.0f} s: "
                     + ", ".join(f"{name} {value:.3g}" for name, value in stats_line(self.rounds[-1])))

    def measure_round(self) -> dict:
        """Every phase once, with a slot of every backbone alone before each phase and one at the end.

        The backbone figures are their slots' frames over their slots' time, so
        they sample the machine over the whole round, as the extraction does;
        the baseline runs half just before and half just after the f32 extraction.
        """
        measured: dict = {"load_average_start": os.getloadavg()[0]}
        timings = {name: [0.0, 0.0, 0] for name in self.backbones}  # seconds, CPU seconds, frames
        baseline = [0, 0.0]  # frames, seconds

        def backbones_alone() -> None:
            for name, backbone in self.backbones.items():
                batches = self.plan.backbone_batches if name in self.ratio_backbones else 1  # the ratios' figures get more
                frames = self.frames[: batches * backbone.batch_size]
                timings[name] = [total + part for total, part in zip(timings[name], phases.time_backbone(backbone, frames))]

        def baseline_half(paths: list[str]) -> None:
            if paths:
                baseline[:] = [total + part for total, part in zip(baseline, phases.baseline_run(paths, self.baseline))]

        backbones_alone()
        videos, measured["decode_fps_pyav"], measured["decode_cpu_ms_pyav"] = phases.decoded_frames(self.decode_paths, "pyav")
        try:
            measured["decode_fps_decord"] = phases.decoded_frames(self.decode_paths, "decord")[1]
        except Exception as error:  # decord is optional
            self.skipped.setdefault("decord", f"{type(error).__name__}: {error}")
        measured["augment_cpu_ms_per_frame"] = phases.augment_cpu_ms_per_frame(videos)
        for precision in self.precisions:
            backbones_alone()
            if precision == "f32":
                baseline_half(self.baseline_halves[0])
            fps, run = phases.extract_fps(self.csv, self.folder / f"features_{precision}.h5", precision)
            if precision == "f32":
                baseline_half(self.baseline_halves[1])
            measured[_suffix("extract_fps", precision)] = fps
            for key in ("cpu_ms_per_frame", "cpu_ms_per_frame_pipeline", "cpu_ms_per_frame_children", "seconds"):
                measured[_suffix(f"extract_{key}", precision)] = run[key]
            measured["extract_frames"] = run["frames"]
        measured["baseline_fps"] = baseline[0] / baseline[1]
        backbones_alone()
        seconds, metrics, config = phases.train_run(self.study, self.folder / "run")
        measured["train_run_s"] = seconds
        measured["train_epochs"] = int(metrics["epochs"])
        measured["gru_epoch_s"] = float(metrics["seconds"]) / max(1, int(metrics["epochs"]))
        frames_per_video = min(STUDY_FRAMES, int(config["max_len"]))  # what the GRU sees of each video per epoch
        measured["end_to_end_frames_per_epoch"] = self.plan.study_videos * frames_per_video
        backbones_alone()

        for name, (seconds, cpu, count) in timings.items():
            measured[name] = count / seconds
            measured[name.replace("backbone_fps", "backbone_cpu_ms")] = 1000 * cpu / count
        tf_fps = measured.get("backbone_fps_tensorflow", measured["backbone_fps"])
        measured["end_to_end_epoch_s"] = phases.end_to_end_epoch_seconds(
            tf_fps, frames_per_video, self.plan.study_videos, measured["gru_epoch_s"])
        measured.update(profile(measured, self.precisions))
        measured["load_average"] = max(measured.pop("load_average_start"), os.getloadavg()[0])  # runnable processes
        return measured

    def once(self) -> dict:
        """What does not depend on the machine's speed: cache size, memory on long videos, bf16's cosine to f32."""
        results: dict = {}
        (self.folder / "tiny").mkdir()
        backbone_ms = stats.summarise(measured["backbone_cpu_ms"] for measured in self.rounds)["median"]
        startup = phases.startup_cpu_seconds(self.folder / "tiny", backbone_ms)
        results["startup_cpu_s_pipeline"], results["startup_cpu_s_children"] = startup["pipeline"], startup["children"]
        results["transfer_cpu_ms_per_embedded_frame"] = phases.transfer_cpu_ms_per_frame(self.frames[:BATCH]) / VIEWS
        results["cache_mb_per_video_minute"] = cache_mb(self.study) / (self.plan.study_videos * STUDY_FRAMES / 25 / 60)
        reference = self.backbones["backbone_fps"].embed(self.frames)
        for precision in self.precisions[1:]:
            similarity = phases.cosine(self.backbones[_suffix("backbone_fps", precision)].embed(self.frames), reference)
            results[f"cosine_{precision}_to_f32_min"] = float(similarity.min())
            results[f"cosine_{precision}_to_f32_median"] = float(np.median(similarity))
        for minutes in self.plan.long_minutes:
            long_csv = phases.long_video(self.folder, minutes)
            results[f"long_video_peak_rss_mb_{minutes:g}min"] = phases.peak_rss_mb(long_csv, self.folder / "long.h5", frame_step=25)
        return results


def _suffix(name: str, precision: str) -> str:
    """A figure's name at a precision: f32 keeps the plain name (``extract_fps``), others get ``_bf16``."""
    return name if precision == "f32" else f"{name}_{precision}"


def profile(measured: dict, precisions: list[str]) -> dict:
    """Where stage one's CPU goes, per embedded frame, and the whole extraction's CPU per embedded frame.

    CPU time, not wall time, throughout: what the other processes on a shared
    machine take does not count, only what each part costs.

    Each decoded frame is embedded once per view; the augmentation runs on
    views 1.. only. ``parts`` = backbone + decoding + augmentation; ``whole``
    = the extraction's process tree (pipeline, decoders and writer).
    """
    decode_ms = measured["decode_cpu_ms_pyav"] / VIEWS
    augment_ms = measured["augment_cpu_ms_per_frame"] * (VIEWS - 1) / VIEWS
    result = {"profile_decode_ms": decode_ms, "profile_augment_ms": augment_ms}
    for precision in precisions:
        backbone_ms = measured[_suffix("backbone_cpu_ms", precision)]
        result[_suffix("profile_backbone_ms", precision)] = backbone_ms
        result[_suffix("profile_parts_ms", precision)] = backbone_ms + decode_ms + augment_ms
        result[_suffix("profile_whole_ms", precision)] = measured[_suffix("extract_cpu_ms_per_frame", precision)]
    return result


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


def stats_line(measured: dict) -> list[tuple[str, float]]:
    """The round's headline figures and ratios, for its progress line."""
    line = [(name, measured[name]) for name in ("backbone_fps", "backbone_fps_bf16", "extract_fps", "baseline_fps") if name in measured]
    for name in HEADLINE_RATIOS:
        numerator, denominator = RATIOS[name]
        if numerator in measured and denominator in measured:
            line.append((name, measured[numerator] / measured[denominator]))
    return line


def cache_mb(path: Path) -> float:
    """A cache's size on disk: its file plus, where the cache keeps them, its shard files."""
    total = path.stat().st_size
    try:
        from framecache.common.cache import shards_folder
    except ImportError:  # a single-file cache
        return total / 2**20
    folder = shards_folder(path)
    if folder.is_dir():
        total += sum(item.stat().st_size for item in folder.rglob("*") if item.is_file())
    return total / 2**20


def run_bench(out: str = "bench/results.json", csv: str | None = None, clips: int | None = None, seconds: float | None = None,
              long_minutes: str | None = None, rounds: int | None = None, quick: bool = False, precisions: str = "f32,bf16",
              accuracy: bool = False, train_memory: bool | None = None) -> int:
    """Measure stage one and two in interleaved rounds; write the figures to ``out`` (JSON) and print a table."""
    started = time.perf_counter()
    plan = Plan.make(quick, rounds, clips, seconds, long_minutes, train_memory)
    asked = parse_precisions(precisions)
    with tempfile.TemporaryDirectory(prefix="framecache-bench-") as folder:
        folder = Path(folder)
        clips_csv = Path(csv) if csv else phases.make_clips(folder, plan.clips, plan.seconds)
        bench = Bench(plan, folder, clips_csv, asked)
        bench.run()
        once = bench.once()
        demo = None
        if accuracy:
            from framecache.bench.accuracy import demo_accuracy

            demo = demo_accuracy(folder, bench.precisions)
        streamed = None
        if plan.train_memory:
            from framecache.bench.train_memory import measure_train_memory

            streamed = measure_train_memory(folder / "train-memory", frames=None, rounds=TRAIN_MEMORY_ROUNDS)
    results = {
        "plan": {**asdict(plan), "quick": quick, "csv": csv, "precisions": bench.precisions, "skipped": bench.skipped,
                 "backbone": BACKBONE, "weights": "random", "views": VIEWS, "batch_size": BATCH, "engine": bench.engine},
        "machine": {**machine.cpu_description(), **machine.versions()},
        "figures": stats.figures(bench.rounds),
        "ratios": stats.ratios(bench.rounds, RATIOS),
        "once": once,
        "accuracy": demo,
        "train_memory": streamed,
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
    ("baseline_fps", "decode each video whole, one Keras model.predict per video"),
    ("decode_fps_pyav", "decode + resize + crop only"),
    ("decode_fps_decord", "the same with decord"),
    ("train_run_s", "one `make train` on {study} synthetic videos x 250 frames x 2 views"),
    ("gru_epoch_s", "one GRU epoch of that run"),
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
    lines += _train_memory_lines(results.get("train_memory"))
    lines += ["", "where stage one's CPU goes, ms per embedded frame (f32)"]
    rows = [(note.format(**context), stats.format_summary(figures[name])) for name, note in PROFILE if name in figures]
    explained = results.get("profile_explained") or {}
    if explained:
        frames = figures["extract_frames"]["median"]
        rows += [
            (f"start-up of 2 processes and the backbone, over {frames:.0f} frames", f"{explained['startup_ms']:.3g}"),
            ("frames crossing processes (pickle, pipe, unpickle)", f"{explained['transfer_ms']:.3g}"),
            ("parts + start-up + crossing", f"{explained['explained_ms']:.3g}"),
            ("left: CNN and decoders sharing 2 cores and caches, batching, writer", f"{explained['left_ms']:.3g}"),
        ]
    lines += _table(("part", "ms"), rows)
    lines += ["", "machine: " + machine.format_cpu(results["machine"]),
              "versions: " + ", ".join(f"{key} {results['machine'][key]}" for key in ("python", "tensorflow-cpu", "tensorflow", "keras",
                                                                                    "openvino") if key in results["machine"])]
    return "\n".join(lines)


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


def _rounds(summary: dict) -> str:
    return " ".join(f"{value:.3g}" for value in summary.get("rounds", []))


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    return [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
