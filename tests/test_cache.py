"""The feature cache: round trip, resume, provenance checks, locking, damaged files."""

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from conftest import make_provenance

from framecache import __version__
from framecache.common.cache import SCHEMA_VERSION, CacheWriter, FeatureCache, video_id
from framecache.common.errors import FramecacheError

PROVENANCE = make_provenance(backbone="tiny", weights="random", feature_dim=4, views=2)


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
    with CacheWriter(path, make_provenance(backbone="tiny", weights="random", feature_dim=4, views=2)) as writer:
        assert writer.done_paths() == {"a.mp4"}
        writer.add_video("b.mp4", "x", features(2))  # fixed since: its failure record goes
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["a.mp4", "b.mp4"]
        assert cache.failures == []


def test_other_provenance_is_refused_naming_the_difference(tmp_path):
    path = tmp_path / "features.h5"
    CacheWriter(path, PROVENANCE).close()
    with pytest.raises(FramecacheError, match=r"views: cache has 2, this run 3.*--overwrite"):
        CacheWriter(path, PROVENANCE.replace(views=3))
    with CacheWriter(path, PROVENANCE.replace(views=3), overwrite=True) as writer:
        assert writer.done_paths() == set()


def test_provenance_is_stored_as_json_and_read_back(tmp_path):
    path = tmp_path / "features.h5"
    CacheWriter(path, PROVENANCE).close()
    with h5py.File(path, "r") as handle:
        stored = json.loads(handle.attrs["provenance"])
        assert handle.attrs["provenance_hash"] == PROVENANCE.hash
        assert (handle.attrs["backbone"], handle.attrs["feature_dim"], handle.attrs["views"]) == ("tiny", 4, 2)
    assert stored["backbone"] == "tiny" and stored["framecache_version"] == __version__
    with FeatureCache(path) as cache:
        assert cache.provenance == PROVENANCE.replace(framecache_version=__version__)
        assert cache.summary()["provenance"] == stored
        read_back = cache.provenance
    with CacheWriter(path, read_back) as writer:  # what was read back resumes
        assert writer.done_paths() == set()
    with pytest.raises(TypeError, match="must be a framecache.common.provenance.Provenance"):
        CacheWriter(path, PROVENANCE.to_dict())


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
            from framecache.common.provenance import Provenance
            writer = CacheWriter({str(path)!r}, Provenance.from_json({PROVENANCE.to_json()!r}))
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


def test_feature_reader_reads_what_the_cache_holds_and_pickles_without_handles(tmp_path):
    import pickle

    from framecache.common.cache import FeatureReader
    from framecache.train.synthetic import write_synthetic_cache

    path = tmp_path / "features.h5"
    write_synthetic_cache(path, videos=6, feature_dim=8, views=2, seed=0)
    with FeatureCache(path) as cache:
        videos = cache.videos
        expected = {video.key: cache.features(video.key) for video in videos}
    with FeatureReader(max_open=1) as reader:
        for video in videos:
            np.testing.assert_array_equal(reader.read(video), expected[video.key])
            np.testing.assert_array_equal(reader.read(video, view=1), expected[video.key][1])
        copy = pickle.loads(pickle.dumps(reader))
        assert copy._handles == {} and len(reader._handles) == 1
        np.testing.assert_array_equal(copy.read(videos[0]), expected[videos[0].key])
        copy.close()
