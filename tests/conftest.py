"""Shared fixtures: tiny videos made at run time, never downloaded."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from framecache.common.provenance import Provenance

# Converted OpenVINO models go to a fresh folder per test session, not the user's cache, removed when the
# session ends. pytest-xdist's workers inherit the folder from the process that started them (a conversion
# is written under a temporary name, then renamed, so they share it safely); only that process removes it.
_STARTED_THE_SESSION = "PYTEST_XDIST_WORKER" not in os.environ
if _STARTED_THE_SESSION:
    os.environ["FRAMECACHE_CACHE"] = tempfile.mkdtemp(prefix="framecache-test-cache-")


def pytest_sessionfinish(session, exitstatus):
    """The session's converted models go with it."""
    if _STARTED_THE_SESSION:
        shutil.rmtree(os.environ["FRAMECACHE_CACHE"], ignore_errors=True)


def make_provenance(**overrides) -> Provenance:
    """A provenance as stage one records it, for caches and models made by hand in tests; ``overrides`` set fields."""
    values = dict(
        backbone="tiny",
        weights="random",
        weights_sha256=None,
        input_size=224,
        feature_dim=4,
        views=2,
        preprocessing="none",
        resize="test",
        decoder="pyav",
        frame_step=1,
        fps=None,
        augment="none",
        seed=0,
        schema_version=1,
    )
    values.update(overrides)
    return Provenance(**values)


def moving_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames of a textured square moving across a noisy background (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    colour = rng.integers(120, 255, size=3, dtype=np.uint8)
    frames = np.repeat(background[None], num_frames, axis=0)
    side = max(2, min(height, width) // 3)
    for index in range(num_frames):
        top = (index * 3) % max(1, height - side)
        left = (index * 5) % max(1, width - side)
        frames[index, top : top + side, left : left + side] = colour
    return frames


@pytest.fixture
def make_video(tmp_path):
    """``make_video(name, num_frames=8, height=48, width=64, fps=10, seed=0) -> Path``."""
    from framecache.data.synthetic import write_video

    def make(name: str, num_frames: int = 8, height: int = 48, width: int = 64, fps: float = 10, seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, moving_frames(num_frames, height, width, seed), fps)
        return path

    return make


def write_broken_videos(folder: Path) -> list[str]:
    """A corrupt (random bytes) and an empty ``.mp4`` in ``folder``; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "empty.mp4").write_bytes(b"")
    return ["corrupt.mp4", "empty.mp4"]


def read_features(path) -> tuple[dict[str, np.ndarray], dict]:
    """A cache's features by CSV path (float16, as stored) and its ``summary()``."""
    from framecache.common.cache import FeatureCache

    with FeatureCache(path) as cache:
        return {video.path: cache.features(video.key) for video in cache.videos}, cache.summary()

