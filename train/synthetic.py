"""Synthetic feature caches: stage two's tests and timings without videos or a CNN.

What decides the class (``regime``):

- ``motion`` (default): each class is an order of the same three "phase"
  vectors (class 0: A→B→C, class 1: A→C→B, ...), so every class has the same
  mean feature and only a temporal model tells them apart;
- ``appearance``: each class adds its own constant vector to every frame
  (what a held pose, equipment or the setting looks like), and the phase
  order is drawn per video whatever the class: the motion tells nothing;
- ``both``: classes are pairs (order, constant vector) with two of each, so
  telling them all apart takes the motion and the appearance.

Frames get noise and a per-subject offset; augmented views get more noise and
a small time shift.

    python -m framecache.train.synthetic --out /tmp/synthetic.h5 --videos 48 --feature-dim 1280 --regime both
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from framecache.common.cache import CacheWriter
from framecache.common.provenance import Provenance

PHASES = 3
REGIMES = ("motion", "appearance", "both")
APPEARANCE_SCALE = 0.6  # std of each class's constant vector (frames: noise 0.6, subjects 0.3)


def synthetic_provenance(feature_dim: int, views: int, weights: str = "imagenet", backbone: str = "synthetic") -> Provenance:
    """A provenance shaped like stage one's, for a cache no backbone made."""
    return Provenance(
        backbone=backbone,
        weights=weights,
        weights_sha256=None,
        input_size=224,
        resize="synthetic",
        frame_step=1,
        fps=None,
        feature_dim=feature_dim,
        views=views,
        augment="synthetic" if views > 1 else "none",
        seed=0,
    )


def synthetic_video(
    label: int, num_frames: int, phases: np.ndarray, subject_offset: np.ndarray, noise: float, rng: np.random.Generator, order: int | None = None
) -> np.ndarray:
    """One clean view ``(num_frames, D)``: a phase order (``order``, by default the class's), plus the subject's offset and noise."""
    order = list(itertools.permutations(range(PHASES)))[label if order is None else order]
    phase_of_frame = np.minimum((np.arange(num_frames) * PHASES) // num_frames, PHASES - 1)
    frames = phases[np.asarray(order)[phase_of_frame]] + subject_offset
    return frames + noise * rng.standard_normal(frames.shape)


def write_synthetic_cache(
    path: str | Path,
    videos: int = 48,
    classes: int = 3,
    feature_dim: int = 32,
    views: int = 2,
    subjects: int | None = 12,
    frames: tuple[int, int] = (12, 80),
    noise: float = 0.6,
    weights: str = "imagenet",
    class_shares: list[float] | None = None,
    split_column: bool = False,
    seed: int = 0,
    regime: str = "motion",
    folder: str = "videos",
    backbone: str = "synthetic",
) -> Path:
    """Write a cache of ``videos`` synthetic videos; returns its path.

    ``subjects`` (None: no group column) are assigned round-robin per class, so
    each subject has videos of every class. ``class_shares`` makes classes
    imbalanced; ``split_column`` fills the CSV split column (60/20/20 by subject).
    ``regime``: what decides the class, ``motion``, ``appearance`` or ``both``
    (see the module docstring; ``both`` needs an even number of classes).
    ``folder``: the videos' CSV paths are ``<folder>/class<label>_<index>.mp4``
    (another folder: videos no run trained on). ``backbone``: the name the provenance gives.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if not 2 <= classes <= 6:
        raise ValueError("classes must be between 2 and 6 (orders of three phases)")
    if regime == "both" and classes % 2:
        raise ValueError("regime 'both' pairs two orders with classes // 2 looks: give an even number of classes")
    if class_shares is not None and len(class_shares) != classes:
        raise ValueError(f"class_shares needs one share per class ({classes}), got {class_shares}")
    rng = np.random.default_rng(seed)
    phases = rng.standard_normal((PHASES, feature_dim))
    shares = np.asarray(class_shares or [1.0] * classes, dtype=float)
    labels = np.repeat(np.arange(classes), np.round(videos * shares / shares.sum()).astype(int))[:videos]
    subject_offsets = 0.3 * rng.standard_normal((subjects or 1, feature_dim))
    looks_rng = np.random.default_rng([seed, 1])  # its own stream: the motion regime's draws stay as they were
    looks = APPEARANCE_SCALE * looks_rng.standard_normal((classes, feature_dim))
    path = Path(path)
    with CacheWriter(path, synthetic_provenance(feature_dim, views, weights, backbone), overwrite=True) as cache:
        for index, label in enumerate(labels):
            position = int(np.sum(labels[:index] == label))
            subject = position % subjects if subjects else 0
            num_frames = int(rng.integers(frames[0], frames[1] + 1))
            if regime == "motion":
                clean = synthetic_video(int(label), num_frames, phases, subject_offsets[subject], noise, rng)
            elif regime == "appearance":  # any order, whatever the class; the class's look on every frame
                order = int(looks_rng.integers(len(list(itertools.permutations(range(PHASES))))))
                clean = synthetic_video(int(label), num_frames, phases, subject_offsets[subject] + looks[label], noise, rng, order=order)
            else:  # class = (order, look): orders 0 and 1, looks 0 .. classes/2 - 1
                clean = synthetic_video(int(label), num_frames, phases, subject_offsets[subject] + looks[label // 2], noise, rng, order=int(label) % 2)
            augmented = [np.roll(clean, int(rng.integers(-2, 3)), axis=0) + 0.5 * noise * rng.standard_normal(clean.shape) for _ in range(views - 1)]
            split = None
            if split_column:
                split = "test" if subject % 5 == 0 else "val" if subject % 5 == 1 else "train"
            cache.add_video(
                f"{folder}/class{label}_{index:04d}.mp4",
                f"class{label}",
                np.stack([clean, *augmented]),
                group=f"s{subject:02d}" if subjects else None,
                split=split,
            )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecache.train.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="HDF5 cache to write (replaced)")
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--feature-dim", type=int, default=1280)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regime", default="motion", choices=REGIMES, help="what decides the class (default %(default)s)")
    args = parser.parse_args(argv)
    write_synthetic_cache(args.out, args.videos, args.classes, args.feature_dim, args.views, args.subjects or None, seed=args.seed, regime=args.regime)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
