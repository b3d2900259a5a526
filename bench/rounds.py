"""What one ``framecache bench`` run measures: its plan, every phase in interleaved rounds, the figures measured once.

These machines are shared, so absolute speed drifts from minute to minute. The
bench therefore measures in rounds (A B A B ...): each round runs every phase
once — the backbone alone per engine and precision, decoding, augmentation,
extraction end to end per precision, the Keras baseline, a training run — and
every ratio is computed within its round, from phases measured minutes apart
at most. The backbone alone is measured in slots, one before each phase and
one at the end of the round, so that its figure samples the machine over the
same minutes as the extraction it is compared with. Figures that do not depend
on speed (cache size, memory, cosine) are measured once. :mod:`framecache.bench.run`
turns the rounds into the report.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from framecache.bench import phases, stats
from framecache.bench.phases import BACKBONE, BATCH, SIZE, VIEWS
from framecache.common.config import AT_LEAST_ONE, PRECISIONS
from framecache.common.errors import FramecacheError
from framecache.common.options import Interval, check, option_name

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
    # Decoding's share of the whole extraction's CPU: on a GPU, where the backbone costs the CPU little, the most of it.
    "decode_share": ("profile_decode_ms", "profile_whole_ms"),
    "decode_share_bf16": ("profile_decode_ms", "profile_whole_ms_bf16"),
}
HEADLINE_RATIOS = ("extract_over_backbone", "extract_over_backbone_cpu", "extract_over_backbone_bf16", "extract_over_baseline",
                   "end_to_end_epoch_over_train_run", "profile_whole_over_parts")
MIN_CLIPS = 4  # phases.make_clips labels its clips with 2 classes in turn; the dataset needs 2 videos per class
STUDY_FRAMES = 250  # a synthetic study's videos: 10 s at 25 fps


@dataclass(frozen=True)
class Plan:
    """How much the bench measures: ``full`` (``make bench``, about 20 minutes on 2 cores) or ``quick`` (development, ~1 minute)."""

    rounds: int = 3
    clips: int = 8  # generated clips of ``seconds`` each, all extracted every round
    seconds: float = 10.0
    decode_clips: int = 4  # of those, decoded alone (decoding and augmentation figures, backbone frames)
    # Of those, through the Keras baseline: half just before the f32 extraction, half just after. Each model.predict
    # runs at one of two speeds, at random (measured: 46 or 63-70 frames/s on one clip, the slower in 60-85 % of
    # calls; docs/benchmarks.md), so a round times eight calls for its mean to hold still.
    baseline_clips: int = 8
    # Batches of each backbone in a ratio alone per slot (a slot before each phase, one at the end): TensorFlow's
    # frames/s moved 62-70 between runs' medians with 2 (end-to-end / train run: 10.1-12.6), so 4.
    backbone_batches: int = 4
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
        check("rounds", plan.rounds, int, AT_LEAST_ONE)
        check("seconds", plan.seconds, float, Interval(0, None, "neither"))
        if plan.clips < MIN_CLIPS:
            raise FramecacheError(f"{option_name('clips', plan.clips)}: the generated clips are {MIN_CLIPS // 2} classes, and a "
                                  f"class needs 2 videos; give {MIN_CLIPS} or more")
        return plan


def parse_precisions(text: str) -> list[str]:
    """``f32,bf16`` -> ['f32', 'bf16']: f32 first (every other precision is compared with it), no duplicates."""
    asked = [value.strip() for value in text.split(",") if value.strip()]
    unknown = [value for value in asked if value not in PRECISIONS]
    if unknown:
        raise FramecacheError(f"{option_name('precisions', text)}: give a comma-separated list of {', '.join(PRECISIONS)}; "
                              f"{', '.join(unknown)} is not one")
    return list(dict.fromkeys(["f32", *asked]))


class Bench:
    """One bench run: the built backbones and models live across rounds; each round appends its figures."""

    def __init__(self, plan: Plan, folder: Path, csv: Path, precisions: list[str], engine: str = "auto", log=print):
        self.plan, self.folder, self.csv, self.log = plan, folder, csv, log
        self.engine_option = engine  # as asked (auto, openvino, tensorflow); self.engine: the one that runs
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
                check_precision(precision, self.engine_option)
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
            built[_suffix("backbone_fps", precision)] = build_backbone(BACKBONE, "none", engine=self.engine_option,
                                                                       batch_size=BATCH, precision=precision)
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
        the baseline runs half just before and half just after the f32 extraction,
        and ``make train`` once before the extractions and once after them (its
        figures are their mean), so that the training run too samples the round
        that TensorFlow's frames/s in ``end_to_end_epoch_s`` come from.
        """
        measured: dict = {"load_average_start": os.getloadavg()[0]}
        timings = {name: [0.0, 0.0, 0] for name in self.backbones}  # seconds, CPU seconds, frames
        baseline = [0, 0.0]  # frames, seconds
        train_runs: list[tuple[float, dict, dict]] = []  # seconds, metrics, config

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
        backbones_alone()
        train_runs.append(phases.train_run(self.study, self.folder / "run"))
        for precision in self.precisions:
            backbones_alone()
            if precision == "f32":
                baseline_half(self.baseline_halves[0])
            fps, run = phases.extract_fps(self.csv, self.folder / f"features_{precision}.h5", precision, engine=self.engine_option)
            if precision == "f32":
                baseline_half(self.baseline_halves[1])
            measured[_suffix("extract_fps", precision)] = fps
            for key in ("cpu_ms_per_frame", "cpu_ms_per_frame_pipeline", "cpu_ms_per_frame_children", "seconds"):
                measured[_suffix(f"extract_{key}", precision)] = run[key]
            measured[_suffix("extract_idle_share", precision)] = run["embed_idle_share"]
            measured[_suffix("extract_decoders", precision)] = run["decoders"]
            if run["gpu_peak_mb"] is not None:
                measured[_suffix("extract_gpu_peak_mb", precision)] = run["gpu_peak_mb"]
            measured["extract_frames"] = run["frames"]
        measured["baseline_fps"] = baseline[0] / baseline[1]
        backbones_alone()
        train_runs.append(phases.train_run(self.study, self.folder / "run"))
        measured["train_run_s"] = float(np.mean([seconds for seconds, _, _ in train_runs]))
        measured["train_epochs"] = int(train_runs[-1][1]["epochs"])  # the same in every run: the seed is fixed
        measured["gru_epoch_s"] = float(np.mean([float(metrics["seconds"]) / max(1, int(metrics["epochs"]))
                                                 for _, metrics, _ in train_runs]))
        frames_per_video = min(STUDY_FRAMES, int(train_runs[-1][2]["max_len"]))  # what the GRU sees of each video per epoch
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
        startup = phases.startup_cpu_seconds(self.folder / "tiny", backbone_ms, engine=self.engine_option)
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
