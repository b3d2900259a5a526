"""The demo's GRU accuracy per precision: does a faster CNN pass cost accuracy?

The demo videos (``python -m framecache.data.make_demo``) are extracted with
EfficientNet-Lite0's ImageNet weights (offline) once per precision, with
otherwise default settings, and a GRU is trained on each cache with the
default settings and the same seed. Also the cosine of each precision's
features to f32's on the demo's frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from framecache.bench.phases import BATCH, cosine, train_run, video_paths
from framecache.common.config import ExtractConfig

BACKBONE = "efficientnet_lite0"
WEIGHTS = "imagenet"
COSINE_VIDEOS = 8  # frames of this many demo videos for the cosine


def demo_accuracy(folder: Path, precisions: list[str], seed: int = 0, log=print) -> dict:
    """Per precision: demo extraction frames/s, min and median cosine to f32, the GRU's test figures."""
    from framecache.data.make_demo import build_demo
    from framecache.data.synthetic import SyntheticSettings
    from framecache.extract.backbones import build_backbone
    from framecache.extract.decode import iter_frames
    from framecache.extract.pipeline import run_extraction

    demo = build_demo(folder / "demo", SyntheticSettings())
    csv = demo.out / "labels.csv"
    log(f"accuracy: {demo.videos} demo videos, {demo.frames} frames; {BACKBONE} {WEIGHTS} at {', '.join(precisions)}")
    paths = video_paths(csv)
    step = max(1, len(paths) // COSINE_VIDEOS)
    frames = np.concatenate([np.concatenate(list(iter_frames(path, size=224))) for path in paths[::step][:COSINE_VIDEOS]])
    reference = None
    results: dict[str, dict] = {}
    for precision in precisions:
        backbone = build_backbone(BACKBONE, WEIGHTS, engine="auto", batch_size=BATCH, precision=precision)
        features = backbone.embed(frames)
        reference = features if reference is None else reference
        similarity = cosine(features, reference)
        del backbone
        out = folder / f"demo_{precision}.h5"
        config = ExtractConfig(csv=str(csv), out=str(out), backbone=BACKBONE, weights=WEIGHTS, precision=precision,
                               quiet=True, overwrite=True)
        started = time.perf_counter()
        summary = run_extraction(config)
        extract_s = time.perf_counter() - started
        seconds, metrics, _ = train_run(out, folder / f"run_{precision}", ("--seed", str(seed)))
        results[precision] = {
            "extract_fps": summary.frames / extract_s,
            "frames_embedded": summary.frames,
            "cosine_to_f32_min": float(similarity.min()),
            "cosine_to_f32_median": float(np.median(similarity)),
            "cosine_frames": len(frames),
            "test_accuracy": float(metrics["accuracy"]),
            "test_balanced_accuracy": float(metrics.get("balanced_accuracy", float("nan"))),
            "test_videos": _test_videos(metrics),
            "train_run_s": seconds,
        }
        log(f"accuracy: {precision}: test accuracy {metrics['accuracy']:.3f}, cosine to f32 >= {similarity.min():.5f}")
    return {"backbone": BACKBONE, "weights": WEIGHTS, "videos": demo.videos, "seed": seed, "by_precision": results}


def _test_videos(metrics: dict) -> int | None:
    """How many videos the test figures rest on (each one is 1/n of the accuracy)."""
    test = (metrics.get("split_sizes") or {}).get("test")
    return test.get("videos") if isinstance(test, dict) else test
