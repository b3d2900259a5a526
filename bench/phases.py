"""What the bench measures, one function per phase; :mod:`framecache.bench.rounds` schedules them in rounds."""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from framecache.common.cache import CacheWriter
from framecache.common.config import ExtractConfig
from framecache.common.provenance import Provenance

BACKBONE = "efficientnetb0"  # the project's default backbone; random weights (speed does not depend on them)
SIZE = 224
VIEWS = 2  # stage one as the issue measures it: the clean view and one augmented (default preset)
BATCH = ExtractConfig().batch_size  # extraction's default: the backbone alone is measured at the same batch


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


def subset_csv(csv: Path, count: int, out: Path) -> Path:
    """A CSV of the first ``count`` videos of ``csv`` (absolute paths), for the slower phases."""
    from framecache.common.dataset import load_dataset

    dataset = load_dataset(csv)
    rows = ["path,label"] + [f"{path},{label}" for path, label in zip(dataset["abs_path"][:count], dataset["label"][:count])]
    out.write_text("\n".join(rows) + "\n")
    return out


def video_paths(csv: Path) -> list[str]:
    from framecache.common.dataset import load_dataset

    return list(load_dataset(csv)["abs_path"])


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """CPU time (user + system) of this process, or (RUSAGE_CHILDREN) of its children that have exited."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def decoded_frames(paths: list[str], decoder: str) -> tuple[list[np.ndarray], float, float]:
    """Decode every video whole at the backbone's input size: the frames, frames/s and CPU ms per frame."""
    from framecache.extract.decode import iter_frames

    started, cpu_started = time.perf_counter(), cpu_seconds()
    videos = [np.concatenate(list(iter_frames(path, size=SIZE, backend=decoder))) for path in paths]
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    frames = sum(len(video) for video in videos)
    return videos, frames / seconds, 1000 * cpu / frames


def time_backbone(backbone, frames: np.ndarray) -> tuple[float, float, float]:
    """Run a built (and warmed-up) backbone on frames in memory: seconds, CPU seconds, and the features' count."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    backbone.embed(frames)
    return time.perf_counter() - started, cpu_seconds() - cpu_started, len(frames)


def augment_cpu_ms_per_frame(videos: list[np.ndarray], preset: str = "default") -> float:
    """The augmentation preset alone, on one OpenCV thread as in the decoder processes: CPU milliseconds per augmented
    frame."""
    import cv2

    from framecache.extract.augment import ViewAugmenter

    augmenter = ViewAugmenter(preset, seed=0)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in the decoder processes
    try:
        started = cpu_seconds()
        for index, video in enumerate(videos):
            augmenter(video, f"clip{index}", view=1)
        return 1000 * (cpu_seconds() - started) / sum(len(video) for video in videos)
    finally:
        cv2.setNumThreads(threads)


def baseline_model(warm_up: list[str]):
    """The obvious approach's model: Keras EfficientNetB0, built once and warmed up on the videos ``warm_up``.

    The first ``predict`` on a video traces the model for its batch shapes (about
    half the speed of later calls), so warm up on a clip as long as those measured.
    """
    import keras

    model = keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg", input_shape=(SIZE, SIZE, 3))
    baseline_run(warm_up, model)
    return model


def baseline_run(paths: list[str], model) -> tuple[int, float]:
    """The obvious approach: decode each video whole, then one Keras ``model.predict`` per video: frames, seconds."""
    from framecache.extract.decode import iter_frames

    started, frames = time.perf_counter(), 0
    for path in paths:
        video = np.concatenate(list(iter_frames(path, size=SIZE)))
        model.predict(video.astype(np.float32), verbose=0)
        frames += len(video)
    return frames, time.perf_counter() - started


def extract_config(csv: Path, out: Path, **settings) -> ExtractConfig:
    """``make features`` as the bench runs it: default preset, ``VIEWS`` views, batch ``BATCH``, random weights, quiet,
    replacing ``out``; ``settings`` change fields (``precision``, ``ray``...)."""
    values = dict(csv=str(csv), out=str(out), backbone=BACKBONE, weights="none", views=VIEWS, augment="default",
                  batch_size=BATCH, quiet=True, overwrite=True)
    return ExtractConfig(**{**values, **settings})


def extract_fps(csv: Path, out: Path, precision: str = "f32", **settings) -> tuple[float, dict]:
    """``make features`` end to end (default preset, ``VIEWS`` views, batch ``BATCH``): frames embedded per second.

    Also the CPU time per embedded frame of the whole process tree, and of its
    parts: this process (the scheduling loop and the backbone) and its
    children (decoders and writer: they have exited when ``run_extraction`` returns);
    the share of the embedding time in which the backbone waited for frames;
    the decoding processes at the end (more than one where the run added some);
    and on a GPU, TensorFlow's memory in use before the run and at its peak.
    ``settings`` change other fields of the extraction (``engine``, ``workers``).
    """
    from framecache.bench.gpu import PeakMemory
    from framecache.extract.pipeline import run_extraction

    config = extract_config(csv, out, precision=precision, **settings)
    started = time.perf_counter()
    own, children = cpu_seconds(), cpu_seconds(resource.RUSAGE_CHILDREN)
    with PeakMemory() as gpu_memory:
        summary = run_extraction(config)
    seconds = time.perf_counter() - started
    own, children = cpu_seconds() - own, cpu_seconds(resource.RUSAGE_CHILDREN) - children
    per_frame = 1000 / summary.frames
    run = {"videos": summary.ok, "frames": summary.frames, "seconds": seconds, "cpu_ms_per_frame": (own + children) * per_frame,
           "cpu_ms_per_frame_pipeline": own * per_frame, "cpu_ms_per_frame_children": children * per_frame,
           "embed_idle_share": summary.embed_idle_share, "decoders": summary.decoders, "gpu_before_mb": gpu_memory.before_mb,
           "gpu_peak_mb": gpu_memory.peak_mb}
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


def train_run(cache: Path, run: Path, extra: tuple[str, ...] = ()) -> tuple[float, dict, dict]:
    """One ``make train`` run (default settings, to early stop), as a user runs it: seconds, metrics, config."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "framecache", "train", "--features", str(cache), "--run", str(run), "--quiet", "--overwrite", *extra]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # its warnings: expected here
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads((run / "metrics.json").read_text()), json.loads((run / "config.json").read_text())


def end_to_end_epoch_seconds(tf_fps: float, frames_per_video: int, videos: int, gru_epoch_s: float) -> float:
    """One epoch of the same GRU trained through the frozen CNN: every frame the GRU sees must go through the CNN."""
    return videos * frames_per_video / tf_fps + gru_epoch_s


def peak_rss_mb(csv: Path, out: Path, frame_step: int) -> float:
    """Peak memory of a whole ``framecache extract`` process tree on one video.

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
        # Smooth texture (8x8-pixel cells) rather than pixel noise: it encodes and decodes like camera footage, not
        # like static, so the check costs seconds per minute of video. Memory depends on the frame size only.
        base = np.repeat(np.repeat(rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8), 8, axis=0), 8, axis=1)
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


def startup_cpu_seconds(folder: Path, backbone_cpu_ms: float, engine: str = "auto") -> dict:
    """CPU seconds an extraction spends whatever its length: start the decoder and writer processes, build the backbone.

    Measured on an extraction of four 5-frame clips; the backbone's share of its
    pipeline time (``backbone_cpu_ms`` per frame, padded batches included) is taken out.
    """
    csv = make_clips(folder, 4, 0.2)
    _, run = extract_fps(csv, folder / "tiny.h5", engine=engine)
    batches = -(-run["frames"] // BATCH)
    pipeline = run["cpu_ms_per_frame_pipeline"] * run["frames"] / 1000 - batches * BATCH * backbone_cpu_ms / 1000
    return {"pipeline": max(0.0, pipeline), "children": run["cpu_ms_per_frame_children"] * run["frames"] / 1000}


def transfer_cpu_ms_per_frame(chunk: np.ndarray, repeats: int = 20) -> float:
    """CPU ms per decoded frame for its view frames to cross from a decoder process into a batch, as extraction does:
    the clean view copied into the decoder's shared-memory ring (augmented views are made there), the message naming
    the rows, each view's rows copied into the batch, the message releasing them (both ends of both pipes)."""
    import multiprocessing
    import threading

    from framecache.extract.frame_ring import FrameRing, FrameRows
    from framecache.extract.messages import Frames, Release

    count = len(chunk)
    ring = FrameRing(VIEWS * count, chunk.shape[1])
    rows = np.arange(VIEWS * count).reshape(VIEWS, count)
    decoder, driver = multiprocessing.Pipe()
    batch = np.empty((count, *chunk.shape[1:]), np.uint8)

    def drive() -> None:
        for _ in range(repeats):
            message = driver.recv()
            for view_rows in message.rows:
                FrameRows(ring.frames, view_rows, lambda done: driver.send(Release(done))).copy_to(batch)

    reader = threading.Thread(target=drive)
    started = cpu_seconds()
    reader.start()
    for index in range(repeats):
        ring.frames[:count] = chunk
        decoder.send(Frames(0, index * count, rows))
        for _ in range(VIEWS):
            decoder.recv()
    reader.join()
    seconds = cpu_seconds() - started
    decoder.close()
    driver.close()
    return 1000 * seconds / (repeats * count)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
