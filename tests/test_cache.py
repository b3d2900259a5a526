"""The feature cache: round trip, resume, provenance checks, locking, damaged files."""

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from framecache.common.cache import SCHEMA_VERSION, CacheWriter, FeatureCache, provenance_hash, video_id
from framecache.common.errors import FramecacheError

PROVENANCE = {"backbone": "tiny", "weights": "random", "feature_dim": 4, "views": 2, "seed": 0, "frame_step": 1}


def features(num_frames, value=1.0):
    return np.full((2, num_frames, 4), value, dtype=np.float32)


def test_round_trip(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("b.mp4", "jump", features(3, 0.5), group="s2", split="test", source_frames=6, source_fps=30)
        writer.add_video("a.mp4", "squat", features(5), group="s1")
        writer.add_failure("c.mp4", "squat", "not a video file")
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["a.mp4", "b.mp4"]
        first, second = cache.videos
        assert (first.label, first.group, first.split, first.num_frames) == ("squat", "s1", None, 5)
        assert (second.group, second.split, second.num_frames) == ("s2", "test", 3)
        stored = cache.features(second.key)
        assert stored.dtype == np.float16 and stored.shape == (2, 3, 4)
        assert np.all(cache.features(second.key, view=1) == np.float16(0.5))
        assert [(f.path, f.reason) for f in cache.failures] == [("c.mp4", "not a video file")]
        summary = cache.summary()
    assert summary["videos_ok"] == 2 and summary["videos_failed"] == 1
    assert summary["labels"] == {"jump": 1, "squat": 1}
    assert summary["views"] == 2 and summary["feature_dim"] == 4 and summary["weights"] == "random"


def test_readme_snippet_reads_the_raw_layout(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "squat", features(5))
    key = video_id("a.mp4")
    with h5py.File(path, "r") as handle:
        assert handle.attrs["schema_version"] == SCHEMA_VERSION
        video = handle[f"videos/{key[:2]}/{key}"]
        assert video["features"].shape == (2, 5, 4)
        assert video.attrs["label"] == "squat" and video.attrs["num_frames"] == 5


def test_resume_keeps_done_videos_and_replaces_failures(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
        writer.add_failure("b.mp4", "x", "broken")
    with CacheWriter(path, dict(PROVENANCE)) as writer:
        assert writer.done_paths() == {"a.mp4"}
        writer.add_video("b.mp4", "x", features(2))  # fixed since: its failure record goes
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["a.mp4", "b.mp4"]
        assert cache.failures == []


def test_other_provenance_is_refused_naming_the_difference(tmp_path):
    path = tmp_path / "features.h5"
    CacheWriter(path, PROVENANCE).close()
    with pytest.raises(FramecacheError, match=r"views: cache has 2, this run 3.*--overwrite"):
        CacheWriter(path, dict(PROVENANCE, views=3))
    with CacheWriter(path, dict(PROVENANCE, views=3), overwrite=True) as writer:
        assert writer.done_paths() == set()


def test_package_version_does_not_change_the_hash():
    assert provenance_hash(dict(PROVENANCE, framecache_version="9")) == provenance_hash(PROVENANCE)
    assert provenance_hash(dict(PROVENANCE, seed=1)) != provenance_hash(PROVENANCE)


def test_interrupted_write_is_dropped_on_resume(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
    key = video_id("half.mp4")
    with h5py.File(path, "a") as handle:  # what a kill between features and attributes leaves
        handle["videos"].require_group(key[:2]).create_group(key).create_dataset("features", data=features(2))
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["a.mp4"]
    with CacheWriter(path, PROVENANCE) as writer:
        assert writer.done_paths() == {"a.mp4"}
    with h5py.File(path, "r") as handle:
        assert key not in handle["videos"].get(key[:2], {})


def test_wrong_feature_shape_is_rejected(tmp_path):
    with CacheWriter(tmp_path / "features.h5", PROVENANCE) as writer:
        with pytest.raises(ValueError, match="expected"):
            writer.add_video("a.mp4", "x", np.zeros((1, 3, 4)))


def test_second_writer_in_another_process_is_refused(tmp_path):
    path = tmp_path / "features.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from framecache.common.cache import CacheWriter
            writer = CacheWriter({str(path)!r}, {PROVENANCE!r})
            print("open", flush=True)
            sys.stdin.readline()
            writer.close()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FramecacheError, match="being written by another process"):
            CacheWriter(path, PROVENANCE, lock_timeout=0.5)
    finally:
        holder.communicate("done\n", timeout=30)
    CacheWriter(path, PROVENANCE).close()  # free again once the other writer closed


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all" * 10])
def test_non_hdf5_or_truncated_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "features.h5"
    path.write_bytes(content)
    with pytest.raises(FramecacheError, match="not a readable framecache feature cache"):
        FeatureCache(path)
    with pytest.raises(FramecacheError, match="not a readable framecache feature cache"):
        CacheWriter(path, PROVENANCE)


def test_truncated_cache_gives_a_clear_error(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        for index in range(5):
            writer.add_video(f"{index}.mp4", "x", features(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(FramecacheError):
        with FeatureCache(path) as cache:
            for video in cache.videos:
                cache.features(video.key)


def test_other_schema_and_foreign_hdf5_are_refused(tmp_path):
    path = tmp_path / "features.h5"
    CacheWriter(path, PROVENANCE).close()
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(FramecacheError, match="schema version"):
        FeatureCache(path)
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(FramecacheError, match="not a framecache feature cache"):
        FeatureCache(foreign)


def test_missing_cache_and_missing_output_folder(tmp_path):
    with pytest.raises(FramecacheError, match="not found"):
        FeatureCache(tmp_path / "nope.h5")
    with pytest.raises(FramecacheError, match="output folder does not exist"):
        CacheWriter(tmp_path / "no" / "such" / "features.h5", PROVENANCE)
