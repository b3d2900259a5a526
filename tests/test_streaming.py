"""Features go to the shard as they are made: stage one's memory is flat in video length, and a closed shard never
holds part of a video.

The writer's streaming (:meth:`CacheWriter.add_piece`, :meth:`CacheWriter.finish_video`) is tested on its own, then
the real :class:`~framecache.extract.driver.Driver` runs in this process on made-up videos of any length
(:mod:`doubles`: no files, no backbone), its peak allocations measured with tracemalloc.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import make_provenance
from doubles import FakeEmbedder, InProcessSink, SyntheticDecoders, features_of

from framecache.common.cache import OPEN_PREFIX, CacheWriter, FeatureCache, shards_folder, video_id
from framecache.common.errors import FramecacheError
from framecache.extract.driver import Driver, ExtractSummary

PROVENANCE = make_provenance(feature_dim=4, views=2)


def closed(path: Path) -> list[Path]:
    return sorted(shard for shard in shards_folder(path).iterdir() if not shard.name.startswith("."))


def open_ones(path: Path) -> list[Path]:
    return sorted(shards_folder(path).glob(OPEN_PREFIX + "*"))


def stream(writer: CacheWriter, path: str, features: np.ndarray, sizes=(5, 16, 3), finish: bool = True) -> None:
    """Send ``features`` ``(views, T, D)`` in pieces of the given sizes (cycled), views interleaved, as the driver does."""
    start, turn = 0, 0
    while start < features.shape[1]:
        count = sizes[turn % len(sizes)]
        for view in range(features.shape[0]):
            writer.add_piece(path, view, start, features[view, start : start + count])
        start, turn = start + count, turn + 1
    if finish:
        writer.finish_video(path, "x", features.shape[1], group="s1", split="test", source_frames=99, source_fps=25.0,
                            header_frames=100)  # fmt: skip


def random_features(frames: int, seed: int = 0, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, frames, dim)).astype(np.float16)


def test_a_streamed_video_reads_exactly_as_a_whole_one(tmp_path):
    features = random_features(45)
    whole, streamed = tmp_path / "whole.h5", tmp_path / "streamed.h5"
    with CacheWriter(whole, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features, group="s1", split="test", source_frames=99, source_fps=25.0, header_frames=100)
    with CacheWriter(streamed, PROVENANCE) as writer:
        stream(writer, "a.mp4", features)
    rows, groups = [], []
    for path in (whole, streamed):
        with FeatureCache(path) as cache:
            (video,) = cache.videos
            stored = cache.features(video.key)
            assert stored.dtype == np.float16 and stored.shape == (2, 45, 4) and np.array_equal(stored, features)
            assert np.array_equal(cache.features(video.key, view=1), features[1])
        with h5py.File(closed(path)[0], "r", locking=False) as shard:
            rows.append(json.loads(shard["index"][()]))
            entry = shard["videos"][video_id("a.mp4")]
            groups.append((dict(entry.attrs), entry["features"].shape, entry["features"].dtype, entry["features"].maxshape))
    assert rows[0] == rows[1]
    assert groups[0][:3] == groups[1][:3] and groups[1][3] == (2, None, 4)  # streamed: chunked, grown along its frames


def test_a_full_shard_waits_for_the_video_begun_in_it_and_new_videos_go_to_another(tmp_path):
    path = tmp_path / "features.h5"
    long = random_features(40, seed=1)
    with CacheWriter(path, PROVENANCE, shard_videos=2) as writer:
        stream(writer, "long.mp4", long[:, :10], finish=False)
        writer.add_video("b.mp4", "x", random_features(3, seed=2))  # the shard is full, but long.mp4 is not finished
        writer.add_video("c.mp4", "x", random_features(3, seed=3))  # so it goes to a second shard
        assert closed(path) == [] and len(open_ones(path)) == 2
        for view in range(2):
            writer.add_piece("long.mp4", view, 10, long[view, 10:])
        writer.finish_video("long.mp4", "x", 40)
        assert len(closed(path)) == 1 and writer.done_paths() == {"long.mp4", "b.mp4"}
    with FeatureCache(path) as cache:
        assert np.array_equal(cache.features(video_id("long.mp4")), long) and len(cache.videos) == 3


def test_closing_deletes_a_video_still_streaming_and_a_failure_leaves_only_its_record(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        stream(writer, "cut.mp4", random_features(20), finish=False)  # the run stops here (Ctrl-C, the driver killed)
        stream(writer, "bad.mp4", random_features(20), finish=False)
        writer.add_failure("bad.mp4", "x", "its decoder crashed")  # after some of its pieces were written
        writer.add_video("b.mp4", "x", random_features(3))
    (shard,) = closed(path)
    with h5py.File(shard, "r", locking=False) as handle:
        assert list(handle["videos"]) == [video_id("b.mp4")] and list(handle["failed"]) == [video_id("bad.mp4")]
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["b.mp4"]
        assert [(failure.path, failure.reason) for failure in cache.failures] == [("bad.mp4", "its decoder crashed")]
    assert open_ones(path) == []


def test_pieces_that_do_not_follow_are_refused_and_change_nothing(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_piece("a.mp4", 0, 0, np.ones((3, 4)))
        for view, offset, piece in [(0, 4, np.ones((2, 4))), (2, 0, np.ones((2, 4))), (1, 0, np.ones((2, 5))),
                                    (1, 0, np.ones((0, 4))), (1, 3, np.ones((2, 4)))]:  # fmt: skip
            with pytest.raises(ValueError, match="does not follow"):
                writer.add_piece("a.mp4", view, offset, piece)
        with pytest.raises(ValueError, match=r"frames \[3, 0\] were added"):
            writer.finish_video("a.mp4", "x", 3)
        writer.add_piece("a.mp4", 1, 0, np.full((3, 4), 2.0))
        writer.finish_video("a.mp4", "x", 3)
    with FeatureCache(path) as cache:
        assert np.array_equal(cache.features(video_id("a.mp4")), np.stack([np.ones((3, 4)), np.full((3, 4), 2.0)]))


def test_a_write_error_while_streaming_discards_the_open_shards_and_keeps_the_closed_ones(tmp_path, monkeypatch):
    path = tmp_path / "features.h5"
    writer = CacheWriter(path, PROVENANCE, shard_videos=2)
    for index in range(2):
        writer.add_video(f"v{index}.mp4", "x", random_features(2))
    stream(writer, "long.mp4", random_features(10), finish=False)
    writer.add_video("v2.mp4", "x", random_features(2))  # a full shard waiting for long.mp4
    writer.add_video("v3.mp4", "x", random_features(2))  # in the next shard

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", disk_full)
    with pytest.raises(FramecacheError, match=r"No space left.*1 other open one\(s\) were discarded \(3 video\(s\) not yet "
                                              r"closed\).*videos cached so far are kept: free some space"):  # fmt: skip
        writer.add_piece("long.mp4", 0, 10, np.ones((2, 4)))
    monkeypatch.undo()
    writer.close()
    assert open_ones(path) == []
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["v0.mp4", "v1.mp4"]


FILE_SIZE_LIMIT = """
import resource, sys, numpy as np
from framecache.common.cache import CacheWriter, FeatureCache
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
writer = CacheWriter(sys.argv[1], Provenance.from_json(sys.argv[2]))
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))  # writes past 200 kB fail with EFBIG
try:
    for start in range(0, 1000, 3):  # pieces of 3 frames (15 kB): each under HDF5's 1 MB chunk cache
        for view in range(2):
            writer.add_piece("long.mp4", view, start, np.ones((3, 1280), np.float16))
    print("no error")
except FramecacheError as error:
    print("failed" if "the disk may be full" in str(error) else error, flush=True)
writer.add_video("short.mp4", "x", np.ones((2, 3, 1280), np.float16))
writer.close()
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
with FeatureCache(sys.argv[1]) as cache:
    print([video.path for video in cache.videos], cache.summary()["open_shards"])
"""


def test_a_full_disk_while_streaming_raises_in_the_write_and_prints_nothing_else(tmp_path):
    """With HDF5's chunk cache, pieces would stay in memory and fail as h5py frees the dataset (printing, or crashing)."""
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path / "features.h5"),
                             PROVENANCE.replace(feature_dim=1280).to_json()], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.split("\n") == ["failed", "['short.mp4'] 0", ""]


# -- the driver, in this process

FEATURE_DIM = 512


class Quiet:
    """A ProgressReport that shows nothing."""

    def update(self, done: int, failed: int, frames: int) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to release."""


def run_driver(out: Path, videos: dict[str, int], shard_videos: int = 64) -> tuple[ExtractSummary, int]:
    """Extract made-up ``videos`` (path: frames) with the real Driver into ``out``; its summary and the peak of the
    memory allocated (numpy arrays included) while it ran, driver and writer together."""
    paths = list(videos)
    rows = pd.DataFrame({"path": paths, "abs_path": paths, "label": "a", "group": None, "split": None, "fps": None})
    sink = InProcessSink(CacheWriter(out, make_provenance(feature_dim=FEATURE_DIM, views=2), shard_videos=shard_videos))
    driver = Driver(SyntheticDecoders(videos, views=2), lambda: FakeEmbedder(FEATURE_DIM), sink, Quiet(), views=2, batch_size=32)
    summary = ExtractSummary(videos_total=len(rows))
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        driver.run(rows, summary)
        sink.close()
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return summary, peak


def expected(frames: int) -> np.ndarray:
    """What :class:`FakeEmbedder` makes of a :class:`SyntheticDecoders` video, as the cache stores it."""
    index = np.arange(frames)
    return np.stack([features_of((index + 7 * view) % 251, FEATURE_DIM) for view in range(2)]).astype(np.float16)


def test_the_driver_memory_is_flat_in_video_length(tmp_path):
    """A long video costs the driver and the writer no more memory than a short one: its features go to the shard
    batch by batch, never held whole (before: float32 per view until its end, then all views stacked)."""
    short, long = 600, 20_000
    _, short_peak = run_driver(tmp_path / "short.h5", {"short.mp4": short})
    summary, long_peak = run_driver(tmp_path / "long.h5", {"long.mp4": long})
    long_bytes = 2 * long * FEATURE_DIM * 2  # its features as stored (float16): 41 MB
    print(f"peak allocations: {short} frames {short_peak / 1e6:.2f} MB, {long} frames {long_peak / 1e6:.2f} MB "
          f"(its features: {long_bytes / 1e6:.1f} MB as stored)")  # fmt: skip
    assert summary.ok == 1 and summary.frames == 2 * long
    assert long_peak - short_peak < 1_000_000 < long_bytes / 40, (short_peak, long_peak)
    with FeatureCache(tmp_path / "long.h5") as cache:
        assert np.array_equal(cache.features(video_id("long.mp4")), expected(long))


def test_the_driver_streams_many_videos_into_shards_that_hold_only_whole_ones(tmp_path):
    """Videos interleave in batches; shards fill and close while others stream; failures midway leave only their record."""
    videos = {f"v{index}.mp4": 20 + 37 * index for index in range(9)} | {"FAIL.mp4": 90, "EMPTY.mp4": 50}
    summary, _ = run_driver(tmp_path / "features.h5", videos, shard_videos=3)
    assert (summary.ok, summary.failed) == (9, 2)
    assert dict(summary.failures) == {"FAIL.mp4": "made to fail", "EMPTY.mp4": "nobody in any of its 50 frames"}
    assert len(closed(tmp_path / "features.h5")) >= 4 and open_ones(tmp_path / "features.h5") == []
    with FeatureCache(tmp_path / "features.h5") as cache:
        for video in cache.videos:
            assert np.array_equal(cache.features(video.key), expected(videos[video.path])), video.path
        assert sorted(failure.path for failure in cache.failures) == ["EMPTY.mp4", "FAIL.mp4"]
        keys, shards = {video.key for video in cache.videos}, cache.shards
    for shard in shards:
        with h5py.File(shard, "r", locking=False) as handle:
            assert set(handle["videos"]) <= keys  # nothing of the failed ones
