"""``framecache bench`` (``make bench``): stage one and stage two measured side by side.

Everything runs in one process tree on the same generated clips, so the ratios
compare like with like. Prints a table and writes the figures as one JSON
object (``--out``, default ``bench/results.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from framecache.common.cache import CacheWriter
from framecache.common.config import ExtractConfig
from framecache.common.dataset import load_dataset
from framecache.common.provenance import Provenance

BACKBONE = "efficientnetb0"  # the project's default backbone; random weights (speed does not depend on them)
SIZE = 224
VIEWS = 2  # stage one as the issue measures it: the clean view and one augmented (default preset)


def make_clips(folder: Path, count: int, seconds: float, fps: int = 25, width: int = 320, height: int = 240) -> Path:
    """Write ``count`` synthetic clips and a labels.csv; return the CSV path."""
    from framecache.data.synthetic import write_video

    rng = np.random.default_rng(0)
    rows = ["path,label,group"]
    num_frames = int(seconds * fps)
    for index in range(count):
        base = rng.integers(0, 255, size=(1, height, width, 3), dtype=np.uint8)
        shift = np.arange(num_frames)[:, None, None, None]
        frames = ((base.astype(np.int16) + shift * (index + 1)) % 256).astype(np.uint8)  # brightness cycles
        path = folder / f"clip{index:02d}.mp4"
        write_video(path, frames, fps)
        rows.append(f"{path.name},class{index % 2},s{index}")
    csv = folder / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def decoded_frames(csv: Path, decoder: str) -> tuple[list[np.ndarray], float]:
    """Decode every clip whole at the backbone's input size; return the frames and frames/s."""
    from framecache.extract.decode import iter_frames

    started = time.perf_counter()
    videos = [np.concatenate(list(iter_frames(path, size=SIZE, backend=decoder))) for path in load_dataset(csv)["abs_path"]]
    seconds = time.perf_counter() - started
    return videos, sum(len(video) for video in videos) / seconds


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have exited."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def backbone_fps(frames: np.ndarray, engine: str, batch_sizes: list[int]) -> tuple[dict[int, float], dict[int, float]]:
    """The frozen backbone alone on frames already in memory, per batch size: frames/s and CPU ms per frame."""
    from framecache.extract.backbones import build_backbone

    rates, cpu_ms = {}, {}
    for batch_size in batch_sizes:
        backbone = build_backbone(BACKBONE, "none", engine=engine, batch_size=batch_size)
        backbone.embed(frames[:batch_size])  # warm-up: compilation, memory
        started, cpu_started = time.perf_counter(), cpu_seconds()
        backbone.embed(frames)
        rates[batch_size] = len(frames) / (time.perf_counter() - started)
        cpu_ms[batch_size] = 1000 * (cpu_seconds() - cpu_started) / len(frames)
    return rates, cpu_ms


def augment_ms_per_frame(videos: list[np.ndarray], preset: str = "default") -> float:
    """The augmentation preset alone: milliseconds per augmented frame."""
    from framecache.extract.augment import ViewAugmenter

    augmenter = ViewAugmenter(preset, seed=0)
    started = time.perf_counter()
    for index, video in enumerate(videos):
        augmenter(video, f"clip{index}", view=1)
    return 1000 * (time.perf_counter() - started) / sum(len(video) for video in videos)


def baseline_fps(csv: Path) -> float:
    """The obvious approach: decode each video whole, then one Keras ``model.predict`` per video."""
    import keras

    from framecache.extract.decode import iter_frames

    model = keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg", input_shape=(SIZE, SIZE, 3))
    paths = list(load_dataset(csv)["abs_path"])
    model.predict(np.zeros((1, SIZE, SIZE, 3), np.float32), verbose=0)
    started, frames = time.perf_counter(), 0
    for path in paths:
        video = np.concatenate(list(iter_frames(path, size=SIZE)))
        model.predict(video.astype(np.float32), verbose=0)
        frames += len(video)
    return frames / (time.perf_counter() - started)


def extract_fps(csv: Path, out: Path, batch_size: int) -> tuple[float, dict]:
    """``make features`` end to end (default preset, ``VIEWS`` views): frames embedded per second.

    Also the CPU time of the whole process tree per embedded frame (decoders and
    writer included: they have exited when ``run_extraction`` returns).
    """
    from framecache.extract.pipeline import run_extraction

    config = ExtractConfig(csv=str(csv), out=str(out), backbone=BACKBONE, weights="none", views=VIEWS, augment="default",
                           batch_size=batch_size, quiet=True, overwrite=True)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    summary = run_extraction(config)
    seconds, cpu_ms = time.perf_counter() - started, 1000 * (cpu_seconds() - cpu_started) / summary.frames
    run = {"videos": summary.ok, "frames": summary.frames, "seconds": round(seconds, 1), "cpu_ms_per_frame": cpu_ms}
    return summary.frames / seconds, run


def synthetic_study_cache(path: Path, videos: int = 200, frames: int = 250, classes: int = 4, views: int = 2) -> None:
    """A cache the size of a real study (200 videos of 10 s at 25 fps), synthetic features of the true shape."""
    rng = np.random.default_rng(0)
    provenance = Provenance(backbone=BACKBONE, weights="random", weights_sha256=None, input_size=SIZE,
                            feature_dim=1280, views=views, augment="default", seed=0, frame_step=1, fps=None)
    with CacheWriter(path, provenance, overwrite=True) as writer:
        for index in range(videos):
            label = index % classes
            time_axis = np.linspace(0, 2 * np.pi * (label + 1), frames)[None, :, None]
            signal = np.sin(time_axis + rng.uniform(0, 2 * np.pi)) * rng.normal(size=(1, 1, 1280))
            features = signal + 0.5 * rng.normal(size=(views, frames, 1280))
            writer.add_video(f"v{index:03d}.mp4", f"class{label}", features.astype(np.float32), group=f"s{index % 20}")


def train_run_seconds(cache: Path, run: Path) -> float:
    """One ``make train`` run (default settings, to early stop), as a user runs it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "framecache", "train", "--features", str(cache), "--run", str(run), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def end_to_end_epoch_seconds(tf_fps: float, frames_per_video: int, videos: int, gru_epoch_s: float) -> float:
    """One epoch of the same GRU trained through the frozen CNN: every frame the GRU sees must go through the CNN."""
    return videos * frames_per_video / tf_fps + gru_epoch_s


def peak_rss_mb(csv: Path, out: Path, frame_step: int) -> float:
    """Peak memory of a whole ``python -m extract`` process tree on one video.

    Sums each process's proportional set size (PSS), so pages shared between
    processes (forks, shared libraries) count once, not once per process.
    """
    import psutil

    command = [sys.executable, "-m", "framecache", "extract", "--csv", str(csv), "--out", str(out), "--backbone", BACKBONE,
               "--weights", "none", "--views", "1", "--frame-step", str(frame_step), "--overwrite", "--quiet"]
    process = psutil.Popen(command, stdout=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):  # a child that exited while being read
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(member.memory_full_info().pss for member in tree if member.is_running()))
        time.sleep(0.2)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    return peak / 2**20


def long_video(folder: Path, minutes: float) -> Path:
    """A 640x480, 25 fps video of the given length and a one-row CSV for it, written in pieces."""
    import av

    path = folder / f"long_{minutes:g}min.mp4"
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        base = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
        for index in range(int(minutes * 60 * 25)):
            frame = np.roll(base, index * 3, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    from framecache.data.synthetic import write_video

    write_video(folder / "short.mp4", np.zeros((25, 480, 640, 3), np.uint8), 25)  # a class needs two videos
    csv = folder / f"long_{minutes:g}min.csv"
    csv.write_text(f"path,label\n{path.name},a\nshort.mp4,a\n")
    return csv


def run_bench(out: str = "bench/results.json", csv: str | None = None, clips: int = 16, seconds: float = 10.0,
              long_minutes: str = "1,10") -> int:
    """Measure stage one and two side by side; write the figures to ``out`` (JSON) and print a table."""
    from framecache.extract.backbones import build_backbone

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="framecache-bench-") as folder:
        folder = Path(folder)
        csv = Path(csv) if csv else make_clips(folder, clips, seconds)

        videos, results["decode_fps_decord"] = decoded_frames(csv, "decord")
        _, results["decode_fps_pyav"] = decoded_frames(csv, "pyav")
        frames = np.concatenate(videos)[:256]

        engine = build_backbone(BACKBONE, "none", engine="auto").engine
        per_batch, cpu_per_batch = backbone_fps(frames, engine, [16, 32, 64])
        best_batch = max(per_batch, key=per_batch.get)
        results["backbone_fps"] = per_batch[best_batch]
        results["backbone_fps_by_batch"] = per_batch
        tf_fps = backbone_fps(frames, "tensorflow", [32])[0][32]
        results["backbone_fps_tensorflow"] = tf_fps

        results["extract_fps"], results["extract_run"] = extract_fps(csv, folder / "features.h5", best_batch)
        # Where stage one's CPU goes, per embedded frame: each decoded frame is embedded once per view.
        results["profile_cpu_ms_per_embedded_frame"] = {
            "backbone": cpu_per_batch[best_batch],
            "decode_pyav": 1000 / results["decode_fps_pyav"] / VIEWS,
            "augment_default": augment_ms_per_frame(videos) * (VIEWS - 1) / VIEWS,
            "extraction_total": results["extract_run"]["cpu_ms_per_frame"],
        }
        results["baseline_fps"] = baseline_fps(csv)

        study = folder / "study.h5"
        synthetic_study_cache(study)
        results["cache_mb_per_video_minute"] = study.stat().st_size / 2**20 / (200 * 10 / 60)
        results["train_run_s"] = train_run_seconds(study, folder / "run")
        metrics = json.loads((folder / "run" / "metrics.json").read_text())
        train_config = json.loads((folder / "run" / "config.json").read_text())
        frames_per_video = min(250, int(train_config["max_len"]))  # what the GRU sees of each video per epoch
        gru_epoch_s = float(metrics["seconds"]) / max(1, int(metrics["epochs"]))
        results["train_epochs"] = int(metrics["epochs"])
        results["end_to_end_frames_per_epoch"] = 200 * frames_per_video
        results["end_to_end_epoch_s"] = end_to_end_epoch_seconds(tf_fps, frames_per_video, 200, gru_epoch_s)

        for minutes in [float(value) for value in long_minutes.split(",")]:
            long_csv = long_video(folder, minutes)
            results[f"long_video_peak_rss_mb_{minutes:g}min"] = peak_rss_mb(long_csv, folder / "long.h5", frame_step=25)

    results["ratios"] = {
        "extract_over_backbone": results["extract_fps"] / results["backbone_fps"],
        "extract_over_baseline": results["extract_fps"] / results["baseline_fps"],
        "end_to_end_epoch_over_train_run": results["end_to_end_epoch_s"] / results["train_run_s"],
    }
    results["machine"] = machine(engine, best_batch)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten: {out}")
    return 0


def machine(engine: str, batch_size: int) -> dict:
    import tensorflow as tf

    model = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_threads": [tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()],
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "engine": engine,
        "batch_size": batch_size,
    }


def print_table(results: dict) -> None:
    rows = [(key, value) for key, value in results.items() if isinstance(value, (int, float))]
    rows += [(f"cpu ms/embedded frame: {key}", value) for key, value in results["profile_cpu_ms_per_embedded_frame"].items()]
    rows += [(f"ratio {key}", value) for key, value in results["ratios"].items()]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value:10.2f}")
    print("machine: " + ", ".join(f"{key}={value}" for key, value in results["machine"].items()))

