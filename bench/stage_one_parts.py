"""What each of stage one's speed-ups earns, measured side by side: ``python -m framecache.bench.stage_one_parts``.

Each pair (the way it was done before, the way it is done now) runs on the
same decoded frames in this process, interleaved over ``--repeats`` rounds;
the figures are CPU milliseconds per frame, medians with their range. Where
both ways should give the same pixels (or feature bits), the script checks
that they do and says so. The clips are the bench's own (``make bench``):
320x240 at 25 fps, embedded by its backbone (random weights).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from framecache.bench import phases
from framecache.bench.phases import SIZE, VIEWS


def _cpu_ms_per_frame(work: Callable[[], int]) -> float:
    started = time.process_time()
    frames = work()
    return 1000 * (time.process_time() - started) / frames


def _compare(name: str, before: Callable[[], int], after: Callable[[], int], repeats: int, same: bool | None) -> dict:
    """Interleave ``before`` and ``after`` (each returns the frames it handled): their medians, ranges and ratio."""
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(repeats):
        times["before"].append(_cpu_ms_per_frame(before))
        times["after"].append(_cpu_ms_per_frame(after))
    result = {name: {way: {"median": statistics.median(values), "min": min(values), "max": max(values)} for way, values in times.items()}}
    result[name]["same_output"] = same
    return result


def decode_threads(paths: list[str]) -> tuple[Callable[[], int], Callable[[], int]]:
    """H.264 decoding alone: FFmpeg's default threads against one thread (``PYAV_THREADS``)."""
    import av

    def decode(threads: int) -> int:
        frames = 0
        for path in paths:
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_count = threads
                frames += sum(1 for _ in container.decode(stream))
        return frames

    return (lambda: decode(0)), (lambda: decode(1))


def scaler(frames: list) -> tuple[Callable[[], int], Callable[[], int], bool]:
    """RGB at the backbone's size: ``to_ndarray(width=...)`` per frame (a new scaler each) against one scaler a video."""
    import av

    from framecache.extract.decode import resized_shape

    height, width = resized_shape(frames[0].height, frames[0].width, SIZE)  # as extraction scales them

    def per_frame() -> list[np.ndarray]:
        return [frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR") for frame in frames]

    def one_scaler() -> list[np.ndarray]:
        reformatter = av.video.reformatter.VideoReformatter()
        return [reformatter.reformat(frame, format="rgb24", width=width, height=height, interpolation="BILINEAR").to_ndarray()
                for frame in frames]  # fmt: skip

    same = all(np.array_equal(a, b) for a, b in zip(per_frame(), one_scaler()))
    return (lambda: len(per_frame())), (lambda: len(one_scaler())), same


def augmentation(videos: list[np.ndarray]) -> tuple[Callable[[], int], Callable[[], int], bool]:
    """The default preset on one OpenCV thread: vidaug's flip and OpenCV's 3-channel warp against the flip as frames of
    their own and the warp through RGBA."""
    import cv2
    import vidaug.augmentors as va

    from framecache.extract import augment

    def rgb_warp(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(frame, matrix, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR)

    augmenter = augment.ViewAugmenter("default", seed=0)

    def run(old: bool) -> list[np.ndarray]:
        saved = augment.warp_affine, augment.HorizontalFlip, cv2.getNumThreads()
        cv2.setNumThreads(1)  # as in the decoder processes
        if old:
            augment.warp_affine, augment.HorizontalFlip = rgb_warp, va.HorizontalFlip
        try:
            return [augmenter(video[start : start + 32], f"clip{index}", view, start=start)
                    for index, video in enumerate(videos) for view in (1, 2, 3) for start in range(0, len(video), 32)]  # fmt: skip
        finally:
            augment.warp_affine, augment.HorizontalFlip, threads = saved
            cv2.setNumThreads(threads)

    def frames(chunks: list[np.ndarray]) -> int:
        return sum(len(chunk) for chunk in chunks)

    same = all(np.array_equal(a, b) for a, b in zip(run(True), run(False)))
    return (lambda: frames(run(True))), (lambda: frames(run(False))), same


def transfer(chunk: np.ndarray) -> tuple[Callable[[], int], Callable[[], int]]:
    """A chunk's views from a decoder process into a batch: pickled over a pipe against the shared-memory ring."""
    import multiprocessing
    import threading

    views = np.ascontiguousarray(np.stack([chunk] * VIEWS))
    repeats = 20

    def pipe() -> int:
        ours, theirs = multiprocessing.Pipe()
        batch = np.empty_like(chunk)

        def read() -> None:
            for _ in range(repeats):
                for frames in theirs.recv():
                    batch[:] = frames

        reader = threading.Thread(target=read)
        reader.start()
        for _ in range(repeats):
            ours.send(views)
        reader.join()
        ours.close()
        theirs.close()
        return repeats * len(chunk)

    def ring() -> int:
        phases.transfer_cpu_ms_per_frame(chunk, repeats)
        return repeats * len(chunk)

    return pipe, ring


def cast(features: np.ndarray) -> tuple[Callable[[], int], Callable[[], int], bool]:
    """Features to what the cache stores (float16): NumPy's cast against :func:`~framecache.common.cache.stored_features`."""
    from framecache.common.cache import stored_features

    repeats = 50

    def run(convert: Callable[[np.ndarray], np.ndarray]) -> int:
        for _ in range(repeats):
            convert(features)
        return repeats * len(features)

    same = bool(np.array_equal(features.astype(np.float16).view(np.uint16), stored_features(features).view(np.uint16)))
    return (lambda: run(lambda values: np.asarray(values, dtype=np.float16))), (lambda: run(stored_features)), same


def measure(clips: int = 4, seconds: float = 10.0, repeats: int = 5) -> dict:
    """Every pair on ``clips`` bench clips of ``seconds``: ``{name: {"before": ..., "after": ..., "same_output": ...}}``."""
    import av

    from framecache.extract.backbones import build_backbone

    with tempfile.TemporaryDirectory(prefix="framecache-parts-") as folder:
        paths = phases.video_paths(phases.make_clips(Path(folder), clips, seconds))
        videos = phases.decoded_frames(paths, "pyav")[0]
        with av.open(paths[0]) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            decoded = list(container.decode(stream))
        results: dict = {}
        before, after = decode_threads(paths)
        results.update(_compare("decode_threads", before, after, repeats, None))
        before, after, same = scaler(decoded)
        results.update(_compare("scaler", before, after, repeats, same))
        before, after, same = augmentation(videos[:2])
        results.update(_compare("augmentation", before, after, repeats, same))
        before, after = transfer(videos[0][:32])
        results.update(_compare("transfer", before, after, repeats, None))
        backbone = build_backbone(phases.BACKBONE, "none", engine="auto", batch_size=phases.BATCH)
        before, after, same = cast(backbone.embed(videos[0][: 2 * phases.BATCH]))
        results.update(_compare("cast", before, after, repeats, same))
    return results


WHAT = {
    "decode_threads": "H.264 decode, per decoded frame: FFmpeg's default threads -> one thread",
    "scaler": "to RGB at 224 px, per decoded frame: a scaler per frame -> one per video",
    "augmentation": "default preset, per augmented frame: vidaug flip + RGB warp -> own flip + RGBA warp",
    "transfer": f"{VIEWS} views into a batch, per decoded frame: pickled over a pipe -> shared-memory ring",
    "cast": "features to float16, per embedded frame: NumPy's cast -> stored_features (tiny values' bits made directly)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecache.bench.stage_one_parts", description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="bench clips to generate (at least 4)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.clips < 4:
        parser.error(f"--clips {args.clips}: at least 4 (the clips are a labelled CSV: 2 classes of 2 videos or more)")
    results = measure(args.clips, args.seconds, args.repeats)
    print(f"CPU ms per frame, median (min-max) of {args.repeats} interleaved repeats")
    for name, figures in results.items():
        before, after = figures["before"], figures["after"]
        same = {True: "same output", False: "OUTPUT DIFFERS", None: ""}[figures["same_output"]]
        print(f"{WHAT[name]}: {before['median']:.3f} ({before['min']:.3f}-{before['max']:.3f}) -> "
              f"{after['median']:.3f} ({after['min']:.3f}-{after['max']:.3f}), x{before['median'] / after['median']:.2f} {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
