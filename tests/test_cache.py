"""The feature cache: round trip, shards, resume, several writers, merge, schema 1, damaged files, the README's snippet."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_provenance
from v1_cache import write_v1_cache

from framecache import __version__
from framecache.cli import FlagSpelling
from framecache.common import options
from framecache.common.cache import (
    OPEN_PREFIX,
    SCHEMA_VERSION,
    CacheWriter,
    FeatureCache,
    FeatureReader,
    merge_caches,
    shards_folder,
    video_id,
)
from framecache.common.cache import layout as cache_module
from framecache.common.errors import FramecacheError

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = make_provenance(backbone="tiny", weights="random", feature_dim=4, views=2)
STORED = PROVENANCE.replace(schema_version=SCHEMA_VERSION, framecache_version=__version__)  # as a cache stores it


def features(num_frames, value=1.0):
    return np.full((2, num_frames, 4), value, dtype=np.float32)


def closed(path):
    return sorted(name.name for name in shards_folder(path).iterdir() if not name.name.startswith("."))


def open_ones(path):
    return sorted(name.name for name in shards_folder(path).glob(OPEN_PREFIX + "*"))


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


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
        assert Path(first.file).parent == shards_folder(path)
        stored = cache.features(second.key)
        assert stored.dtype == np.float16 and stored.shape == (2, 3, 4)
        assert np.all(cache.features(second.key, view=1) == np.float16(0.5))
        assert [(f.path, f.reason) for f in cache.failures] == [("c.mp4", "not a video file")]
        assert cache.nbytes == (5 + 3) * 2 * 4 * 2
        summary = cache.summary()
    assert summary["videos_ok"] == 2 and summary["videos_failed"] == 1
    assert summary["labels"] == {"jump": 1, "squat": 1}
    assert summary["views"] == 2 and summary["feature_dim"] == 4 and summary["weights"] == "random"
    assert (summary["schema_version"], summary["shards"], summary["duplicates"], summary["open_shards"]) == (2, 1, 0, 0)


def readme_snippet() -> str:
    """The first ```python block of the README's feature-cache section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The feature cache") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_features_are_stored_with_the_bits_numpys_float16_cast_gives():
    """stored_features makes tiny values' float16 bits itself (NumPy's cast is slow there): the same bits as
    ``astype(float16)`` at every float16 subnormal, halfway between two (ties go to even), next to those, at the
    smallest normal, and for zeros, float32 subnormals, overflow, infinities and NaN."""
    steps = np.arange(0, 1026, dtype=np.float64)
    points = np.concatenate([steps, steps + 0.5]) * 2.0**-24  # float16 subnormals and the halfway points between them
    tiny = points.astype(np.float32)
    edges = np.concatenate([tiny, np.nextafter(tiny, np.float32(1)), np.nextafter(tiny, np.float32(0))])
    special = np.array([0.0, 1e-45, 1e-40, 2.0**-14, 65504.0, 65520.0, 1e6, np.inf, np.nan], np.float32)
    spread = np.random.default_rng(0).standard_normal(20_000).astype(np.float32) * np.float32(10.0) ** np.random.default_rng(1).integers(-9, 3, 20_000)
    values = np.concatenate([edges, special, spread.astype(np.float32)])
    values = np.concatenate([values, -values]).reshape(2, -1)
    with np.errstate(over="ignore"):  # NumPy warns of the values beyond float16's largest, both ways
        stored, expected = cache_module.stored_features(values), values.astype(np.float16)
    assert stored.dtype == np.float16 and stored.shape == values.shape
    np.testing.assert_array_equal(stored.view(np.uint16), expected.view(np.uint16))
    assert (np.abs(stored[np.isfinite(stored)]) < 2.0**-14).mean() > 0.1  # the tiny values' own way was taken
    doubles = values.astype(np.float64)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(cache_module.stored_features(doubles).view(np.uint16), doubles.astype(np.float16).view(np.uint16))


def test_the_readme_snippet_reads_a_cache_as_documented(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE, shard_videos=2) as writer:
        for index in range(3):
            writer.add_video(f"v{index}.mp4", "squat", features(index + 1))
        writer.add_failure("bad.mp4", "jump", "not a video file")
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("v0.mp4", "squat", features(1))  # a duplicate: printed once
    snippet = readme_snippet()
    assert 'cache = "study.h5"' in snippet
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(snippet.replace('cache = "study.h5"', f"cache = {str(path)!r}"), {})
    lines = output.getvalue().splitlines()
    assert lines[0] == f"{SCHEMA_VERSION} tiny 2"
    assert sorted(line for line in lines if line.startswith("v")) == [f"v{index}.mp4 squat ({index + 1}, 4)" for index in range(3)]
    assert "failed: bad.mp4 not a video file" in lines
    with h5py.File(path, "r") as handle:  # the layout the README's table documents
        assert handle.attrs["schema_version"] == SCHEMA_VERSION and "videos" not in handle
    shard = shards_folder(path) / closed(path)[0]
    with h5py.File(shard, "r") as handle:
        video = handle[f"videos/{video_id('v0.mp4')}"]
        assert video["features"].shape == (2, 1, 4) and video.attrs["label"] == "squat" and video.attrs["num_frames"] == 1
        assert handle.attrs["provenance_hash"] == STORED.hash


def test_shards_close_after_a_number_of_videos_bytes_or_seconds(tmp_path, monkeypatch):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE, shard_videos=3) as writer:
        for index in range(7):
            writer.add_video(f"v{index}.mp4", "x", features(2))
        assert len(closed(path)) == 2 and len(open_ones(path)) == 1  # 3 + 3 closed, 1 open
        assert writer.done_paths() == {f"v{index}.mp4" for index in range(6)}
        with FeatureCache(path) as cache:  # an open shard is invisible
            assert len(cache.videos) == 6 and cache.summary()["open_shards"] == 1
    assert len(closed(path)) == 3 and open_ones(path) == []
    assert all(re.fullmatch(r"[A-Za-z0-9._]+-\d+-\d{5}-[0-9a-f]{8}\.h5", name) for name in closed(path))

    by_bytes = tmp_path / "bytes.h5"
    with CacheWriter(by_bytes, PROVENANCE, shard_bytes=2 * 10 * 4 * 2 * 2) as writer:  # two videos of 10 frames
        for index in range(4):
            writer.add_video(f"v{index}.mp4", "x", features(10))
        assert len(closed(by_bytes)) == 2

    clock = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: clock[0])
    by_time = tmp_path / "time.h5"
    with CacheWriter(by_time, PROVENANCE, shard_seconds=60) as writer:
        writer.add_video("a.mp4", "x", features(2))
        writer.tick()
        assert closed(by_time) == []
        clock[0] += 61
        writer.tick()  # the writer process calls this while idle
        assert len(closed(by_time)) == 1


def test_resume_keeps_done_videos_and_retries_failures(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
        writer.add_failure("b.mp4", "x", "broken")
    with CacheWriter(path, make_provenance(backbone="tiny", weights="random", feature_dim=4, views=2)) as writer:
        assert writer.done_paths() == {"a.mp4"}
        writer.add_video("b.mp4", "x", features(2))  # fixed since: its success wins over the failure
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["a.mp4", "b.mp4"]
        assert cache.failures == []
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_failure("c.mp4", "x", "first reason")
    time.sleep(0.01)
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_failure("c.mp4", "x", "second reason")
    with FeatureCache(path) as cache:
        assert [(failure.path, failure.reason) for failure in cache.failures] == [("c.mp4", "second reason")]  # the latest


def test_other_provenance_is_refused_naming_the_difference(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
    with options.spelled(FlagSpelling()), pytest.raises(FramecacheError, match=r"views: cache has 2, this run 3.*--overwrite"):
        CacheWriter(path, PROVENANCE.replace(views=3))  # as the command words it
    with pytest.raises(FramecacheError, match=r"views: cache has 2, this run 3.*overwrite=True"):
        CacheWriter(path, PROVENANCE.replace(views=3))  # as the library does
    with CacheWriter(path, PROVENANCE.replace(views=3), overwrite=True) as writer:  # the root and its shards go
        assert writer.done_paths() == set()
    assert closed(path) == []


def test_overwrite_is_refused_while_another_process_writes(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
        with pytest.raises(FramecacheError, match="another process is writing into it"):
            CacheWriter(path, PROVENANCE, overwrite=True)


def test_provenance_is_stored_as_json_and_read_back(tmp_path):
    path = tmp_path / "features.h5"
    CacheWriter(path, PROVENANCE).close()
    with h5py.File(path, "r") as handle:
        stored = json.loads(handle.attrs["provenance"])
        assert handle.attrs["provenance_hash"] == STORED.hash
        assert (handle.attrs["backbone"], handle.attrs["feature_dim"], handle.attrs["views"]) == ("tiny", 4, 2)
    assert stored["backbone"] == "tiny" and stored["framecache_version"] == __version__
    assert stored["schema_version"] == SCHEMA_VERSION  # whatever the provenance given said
    with FeatureCache(path) as cache:
        assert cache.provenance == STORED
        assert cache.summary()["provenance"] == stored
        read_back = cache.provenance
    with CacheWriter(path, read_back) as writer:  # what was read back resumes
        assert writer.done_paths() == set()
    with pytest.raises(TypeError, match="must be a framecache.common.provenance.Provenance"):
        CacheWriter(path, PROVENANCE.to_dict())


def test_root_is_written_once_and_never_rewritten(tmp_path):
    path = tmp_path / "features.h5"
    CacheWriter(path, PROVENANCE).close()
    before = (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
    with CacheWriter(path, PROVENANCE, shard_videos=1) as writer:
        for index in range(3):
            writer.add_video(f"v{index}.mp4", "x", features(2))
    assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == before
    assert not list(tmp_path.glob("features.h5.tmp-*"))


def test_leftover_open_shards_are_ignored_and_removed_only_when_stale(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
    folder = shards_folder(path)
    host = cache_module.host()
    dead = folder / f"{OPEN_PREFIX}{host}-{dead_pid()}-0badc0de-0.h5"  # a killed writer's half-written shard
    dead.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    live_here = folder / f"{OPEN_PREFIX}{host}-{os.getppid()}-0badc0de-0.h5"  # a live process's
    live_here.write_bytes(b"partial")
    elsewhere = folder / f"{OPEN_PREFIX}otherhost-1234-0badc0de-0.h5"  # another machine's, recent
    elsewhere.write_bytes(b"partial")
    old_elsewhere = folder / f"{OPEN_PREFIX}otherhost-5678-0badc0de-0.h5"  # another machine's, untouched for a day
    old_elsewhere.write_bytes(b"partial")
    day_ago = time.time() - cache_module.STALE_OPEN_S - 60
    os.utime(old_elsewhere, (day_ago, day_ago))

    with FeatureCache(path) as cache:  # readers never look at open shards
        assert [video.path for video in cache.videos] == ["a.mp4"] and cache.summary()["open_shards"] == 4
    with CacheWriter(path, PROVENANCE) as writer:
        assert writer.done_paths() == {"a.mp4"}
    assert not dead.exists() and not old_elsewhere.exists()
    assert live_here.exists() and elsewhere.exists()


def test_the_same_video_in_two_shards_is_counted_once(tmp_path):
    path = tmp_path / "features.h5"
    first = CacheWriter(path, PROVENANCE)
    second = CacheWriter(path, PROVENANCE)  # two writers at once, as two machines would be
    first.add_video("a.mp4", "x", features(2, 1.0))
    second.add_video("a.mp4", "x", features(2, 2.0))
    second.add_video("b.mp4", "x", features(2, 3.0))
    first.add_failure("b.mp4", "x", "could not read it here")
    first.close()
    time.sleep(0.01)
    second.close()
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["a.mp4", "b.mp4"]
        assert cache.duplicates == 1 and cache.summary()["duplicates"] == 1
        assert np.all(cache.features(video_id("a.mp4")) == 2.0)  # the copy in the shard closed last (a relabel is one)
        assert cache.failures == []  # a success anywhere wins
        assert len(cache.shards) == 2


TWO_WRITERS = """
import sys, numpy as np
from framecache.common.cache import CacheWriter
from framecache.common.provenance import Provenance
provenance = Provenance.from_json(sys.argv[2])
with CacheWriter(sys.argv[1], provenance, shard_videos=3) as writer:
    print("open", flush=True)
    sys.stdin.readline()
    for index in range(int(sys.argv[3]), int(sys.argv[4])):
        writer.add_video(f"v{index}.mp4", "x", np.full((2, 3, 4), index, np.float32))
"""


def test_two_writers_in_other_processes_write_into_one_cache_at_once(tmp_path):
    path = tmp_path / "features.h5"
    writers = [
        subprocess.Popen([sys.executable, "-c", TWO_WRITERS, str(path), PROVENANCE.to_json(), str(start), str(stop)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        for start, stop in [(0, 12), (8, 20)]
    ]
    for writer in writers:
        assert writer.stdout.readline().strip() == "open"  # both have the cache open before either writes
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        writer.communicate(timeout=60)
        assert writer.returncode == 0
    with FeatureCache(path) as cache:
        assert sorted(video.path for video in cache.videos) == sorted(f"v{index}.mp4" for index in range(20))
        assert cache.duplicates == 4
        for video in cache.videos:
            assert np.all(cache.features(video.key) == int(video.path[1:-4]))
    assert len(closed(path)) == 8 and open_ones(path) == []


def test_a_write_error_discards_the_open_shard_and_keeps_the_closed_ones(tmp_path, monkeypatch):
    path = tmp_path / "features.h5"
    writer = CacheWriter(path, PROVENANCE, shard_videos=2)
    for index in range(3):
        writer.add_video(f"v{index}.mp4", "x", features(2))
    real = h5py.Group.create_dataset

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", disk_full)
    with pytest.raises(FramecacheError, match=r"No space left.*discarded.*videos cached so far are kept: free some space"):
        writer.add_video("v3.mp4", "x", features(2))
    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    writer.close()
    assert open_ones(path) == []
    with FeatureCache(path) as cache:
        assert [video.path for video in cache.videos] == ["v0.mp4", "v1.mp4"]  # v2 was in the discarded shard
    with CacheWriter(path, PROVENANCE) as writer:
        assert writer.done_paths() == {"v0.mp4", "v1.mp4"}


def test_the_cache_changes_no_hook_of_sys(tmp_path, monkeypatch):
    hooks = (sys.excepthook, sys.unraisablehook)
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE, shard_videos=2) as writer:
        for index in range(3):
            writer.add_video(f"v{index}.mp4", "x", features(2))
        writer.add_failure("bad.mp4", "x", "broken")
        assert (sys.excepthook, sys.unraisablehook) == hooks

        def disk_full(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(h5py.Group, "create_dataset", disk_full)
        with pytest.raises(FramecacheError, match="the disk may be full"):
            writer.add_video("v3.mp4", "x", features(2))
        monkeypatch.undo()
    with FeatureCache(path) as cache:
        cache.features(cache.videos[0].key)
    merge_caches(tmp_path / "merged.h5", [path])
    assert sys.excepthook is hooks[0] and sys.unraisablehook is hooks[1]


FILE_SIZE_LIMIT = """
import resource, sys, numpy as np
from framecache.common.cache import CacheWriter, FeatureCache
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
hooks = (sys.excepthook, sys.unraisablehook)
provenance = Provenance.from_json(sys.argv[2])
writer = CacheWriter(sys.argv[1], provenance, shard_videos=2)
resource.setrlimit(resource.RLIMIT_FSIZE, (80_000, resource.RLIM_INFINITY))  # writes past 80 kB fail with EFBIG
for index in range(5):  # each video: 51 kB, under HDF5's 64 kB sieve buffer
    try:
        writer.add_video(f"v{index}.mp4", "x", np.ones((2, 10, 1280), np.float32))
        print("ok", flush=True)
    except FramecacheError as error:
        print("failed" if "the disk may be full" in str(error) else error, flush=True)
writer.close()
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
with FeatureCache(sys.argv[1]) as cache:
    print(len(cache.videos), cache.summary()["open_shards"], (sys.excepthook, sys.unraisablehook) == hooks)
"""


def test_a_full_disk_raises_once_and_prints_nothing_else(tmp_path):
    """HDF5 would keep these small arrays in a buffer and fail as h5py frees them (printing tracebacks, or crashing)."""
    provenance = PROVENANCE.replace(feature_dim=1280)
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path / "features.h5"), provenance.to_json()],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.split("\n") == ["ok", "failed", "ok", "failed", "ok", "1 0 True", ""]


def test_wrong_feature_shape_is_rejected(tmp_path):
    with CacheWriter(tmp_path / "features.h5", PROVENANCE) as writer:
        with pytest.raises(ValueError, match="expected"):
            writer.add_video("a.mp4", "x", np.zeros((1, 3, 4)))


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all" * 10])
def test_non_hdf5_or_truncated_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "features.h5"
    path.write_bytes(content)
    with pytest.raises(FramecacheError, match="not a readable framecache feature cache"):
        FeatureCache(path)
    with pytest.raises(FramecacheError, match="not a readable framecache feature cache"):
        CacheWriter(path, PROVENANCE)


def test_a_damaged_closed_shard_is_named(tmp_path):
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE, shard_videos=5) as writer:
        for index in range(10):
            writer.add_video(f"{index}.mp4", "x", features(50))
    shard = shards_folder(path) / closed(path)[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    with pytest.raises(FramecacheError, match=re.escape(str(shard))):
        with FeatureCache(path) as cache:
            for video in cache.videos:
                cache.features(video.key)


def test_newer_schema_and_foreign_hdf5_are_refused(tmp_path):
    path = tmp_path / "features.h5"
    CacheWriter(path, PROVENANCE).close()
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION + 1
    for open_it in (FeatureCache, lambda path: CacheWriter(path, PROVENANCE), lambda path: merge_caches(path.with_name("x.h5"), [path])):
        with pytest.raises(FramecacheError, match="schema version 3: it was made by a newer framecache; upgrade"):
            open_it(path)
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(FramecacheError, match="not a framecache feature cache"):
        FeatureCache(foreign)


def test_a_shard_of_other_settings_in_the_folder_is_refused(tmp_path):
    path, other = tmp_path / "features.h5", tmp_path / "other.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
    with CacheWriter(other, PROVENANCE.replace(seed=7)) as writer:
        writer.add_video("b.mp4", "x", features(2))
    stray = shards_folder(other) / closed(other)[0]
    stray.rename(shards_folder(path) / stray.name)
    with pytest.raises(FramecacheError, match=r"other settings.*seed: the shard has 7, the cache 0.*move it out"):
        FeatureCache(path)


def test_missing_cache_and_missing_output_folder(tmp_path):
    with pytest.raises(FramecacheError, match="not found"):
        FeatureCache(tmp_path / "nope.h5")
    with pytest.raises(FramecacheError, match="output folder does not exist"):
        CacheWriter(tmp_path / "no" / "such" / "features.h5", PROVENANCE)


def test_feature_reader_reads_what_the_cache_holds_and_pickles_without_handles(tmp_path):
    import pickle

    from framecache.train.synthetic import write_synthetic_cache

    path = tmp_path / "features.h5"
    write_synthetic_cache(path, videos=6, feature_dim=8, views=2, seed=0)
    with FeatureCache(path) as cache:
        videos = cache.videos
        expected = {video.key: cache.features(video.key) for video in videos}
        assert cache.schema_version == 2 and cache.shards  # the synthetic caches are of schema 2
    with FeatureReader(max_open=1) as reader:
        for video in videos:
            np.testing.assert_array_equal(reader.read(video), expected[video.key])
            np.testing.assert_array_equal(reader.read(video, view=1), expected[video.key][1])
        copy = pickle.loads(pickle.dumps(reader))
        assert copy._handles == {} and len(reader._handles) == 1
        np.testing.assert_array_equal(copy.read(videos[0]), expected[videos[0].key])
        copy.close()


# ---- schema 1 and merge


V1_VIDEOS = [
    dict(path=f"videos/v{index}.mp4", label="ab"[index % 2], features=np.random.default_rng(index).random((2, 3 + index, 4)),
         group=f"s{index % 3}", split="test" if index == 4 else None, source_frames=2 * (3 + index), source_fps=25.0)
    for index in range(6)
]  # fmt: skip
V1_FAILURES = [dict(path="videos/broken.mp4", label="a", reason="not a video file", group="s1")]


def v1_cache(path: Path) -> Path:
    return write_v1_cache(path, PROVENANCE, V1_VIDEOS, V1_FAILURES)


def test_a_schema_1_cache_still_reads(tmp_path):
    path = v1_cache(tmp_path / "old.h5")
    with FeatureCache(path) as cache:
        assert cache.schema_version == 1 and cache.shards == []
        assert [video.path for video in cache.videos] == [video["path"] for video in V1_VIDEOS]
        assert all(video.file == str(path) for video in cache.videos)
        for video, written in zip(cache.videos, V1_VIDEOS):
            assert (video.label, video.group, video.split) == (written["label"], written["group"], written["split"])
            np.testing.assert_array_equal(cache.features(video.key), written["features"].astype(np.float16))
        assert [(failure.path, failure.reason) for failure in cache.failures] == [("videos/broken.mp4", "not a video file")]
        summary = cache.summary()
        videos = cache.videos
    assert (summary["schema_version"], summary["videos_ok"], summary["shards"]) == (1, 6, 0)
    with FeatureReader() as reader:  # the other layout, /videos/<xx>/<id>
        np.testing.assert_array_equal(reader.read(videos[2], view=1), V1_VIDEOS[2]["features"][1].astype(np.float16))


def test_writing_into_a_schema_1_cache_is_refused_saying_how_to_convert(tmp_path):
    path = v1_cache(tmp_path / "old.h5")
    with options.spelled(FlagSpelling()), pytest.raises(
        FramecacheError, match=r"schema version 1.*framecache merge --out new.h5 .*old.h5.*another --out"
    ):
        CacheWriter(path, PROVENANCE)  # as the command words it


def test_merge_converts_a_schema_1_cache(tmp_path):
    old, new = v1_cache(tmp_path / "old.h5"), tmp_path / "new.h5"
    summary = merge_caches(new, [old])
    assert (summary.videos_converted, summary.videos, summary.duplicates) == (6, 6, 0)
    with FeatureCache(old) as before, FeatureCache(new) as after:
        assert after.schema_version == 2 and after.provenance.schema_version == SCHEMA_VERSION
        assert after.provenance.differences(before.provenance) == [("schema_version", 2, 1)]
        assert [(v.path, v.label, v.group, v.split, v.num_frames) for v in after.videos] == [
            (v.path, v.label, v.group, v.split, v.num_frames) for v in before.videos
        ]
        for video in before.videos:
            np.testing.assert_array_equal(after.features(video.key), before.features(video.key))
        assert after.failures == before.failures
    with h5py.File(shards_folder(new) / closed(new)[0], "r") as shard:
        attrs = shard[f"videos/{video_id('videos/v1.mp4')}"].attrs
        assert (attrs["source_frames"], attrs["source_fps"]) == (8, 25.0)
    # stage one resumes the converted cache with the same settings, now of schema 2
    with CacheWriter(new, PROVENANCE) as writer:
        assert writer.done_paths() == {video["path"] for video in V1_VIDEOS}
    assert merge_caches(new, [old]).videos_converted == 0  # nothing twice


def test_merge_brings_caches_of_the_same_settings_together(tmp_path):
    first, second, target = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "study.h5"
    with CacheWriter(first, PROVENANCE, shard_videos=2) as writer:
        for index in range(5):
            writer.add_video(f"v{index}.mp4", "x", features(2, index))
    with CacheWriter(second, PROVENANCE, shard_videos=2) as writer:
        for index in range(4, 8):
            writer.add_video(f"v{index}.mp4", "x", features(2, index))
    summary = merge_caches(target, [first, second])
    assert (summary.shards_copied, summary.videos, summary.duplicates) == (5, 8, 1)
    again = merge_caches(target, [first, second])
    assert (again.shards_copied, again.shards_present, again.videos) == (0, 5, 8)
    with FeatureCache(target) as cache:
        assert cache.duplicates == 1 and len(cache.shards) == 5
        for video in cache.videos:
            assert np.all(cache.features(video.key) == int(video.path[1:-4]))
    assert set(closed(target)) == set(closed(first)) | set(closed(second))

    other = tmp_path / "other.h5"
    with CacheWriter(other, PROVENANCE.replace(views=3, seed=5)) as writer:
        writer.add_video("z.mp4", "x", np.zeros((3, 2, 4)))
    with pytest.raises(FramecacheError, match=r"other.h5 was extracted with other settings.*seed: .*other.h5 has 5, .*study.h5 0; views"):
        merge_caches(target, [other])
    with pytest.raises(FramecacheError, match="the target of the merge itself"):
        merge_caches(target, [target])
    with pytest.raises(FramecacheError, match="schema version 1: merge into a new file"):
        merge_caches(v1_cache(tmp_path / "old.h5"), [first])


def test_merge_from_the_command_line(tmp_path):
    first, target = tmp_path / "a.h5", tmp_path / "study.h5"
    with CacheWriter(first, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
    result = subprocess.run([sys.executable, "-m", "framecache", "merge", "--out", str(target), str(first), str(v1_cache(tmp_path / "old.h5"))],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "7 videos; 1 shard(s) copied, 0 already there, 6 video(s) converted from schema 1" in result.stdout
    info = subprocess.run([sys.executable, "-m", "framecache", "info", str(target)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "in 2 closed shard(s)" in info.stdout, info.stderr


def test_merge_under_make(tmp_path):
    first, target = tmp_path / "a.h5", tmp_path / "study.h5"
    with CacheWriter(first, PROVENANCE) as writer:
        writer.add_video("a.mp4", "x", features(2))
    environ = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "-s", "--no-print-directory", "merge", f"OUT={target}", f"CACHES={first}", "STAMP=",
                             f"FRAMECACHE_CMD={sys.executable} -m framecache"], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 videos; 1 shard(s) copied" in result.stdout


def test_kill_the_writer_a_few_times(tmp_path):
    """A few rounds of ``python -m framecache.bench.kill_writer`` (its full run, 50 kills, is in the slow tests)."""
    from framecache.bench.kill_writer import kill_rounds

    report = kill_rounds(tmp_path, kills=4, videos=24, shard_videos=3, seed=1)
    assert report["kills"] == 4 and report["unreadable"] == 0 and report["wrong_features"] == 0
    assert report["reruns_identical"] == report["episodes"]


@pytest.mark.slow
def test_kill_the_writer_fifty_times(tmp_path):
    from framecache.bench.kill_writer import kill_rounds

    report = kill_rounds(tmp_path, kills=50, videos=40, shard_videos=3, seed=2)
    print(f"kill_writer: {json.dumps(report)}")
    assert report["kills"] == 50 and report["writer_kills"] >= 25
    assert report["unreadable"] == 0 and report["wrong_features"] == 0 and report["lost_more_than_open_shard"] == 0
    assert report["reruns_identical"] == report["episodes"]



def test_a_fifo_or_folder_given_as_a_cache_is_refused_at_once(tmp_path):
    """A named pipe would block the read forever."""
    fifo = tmp_path / "features.h5"
    os.mkfifo(fifo)
    code = f"from framecache.common.cache import FeatureCache; FeatureCache({str(fifo)!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "is not a regular file, so not a feature cache" in result.stderr
    with pytest.raises(FramecacheError, match="is a folder, not a feature cache file"):
        FeatureCache(tmp_path)


def test_merge_refuses_caches_that_disagree_about_a_video_and_leaves_the_target_alone(tmp_path):
    first, second, target = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "study.h5"
    with CacheWriter(first, PROVENANCE) as writer:
        writer.add_video("v0.mp4", "bend", features(2), group="s1")
        writer.add_video("v1.mp4", "jack", features(3), group="s1")
    with CacheWriter(second, PROVENANCE) as writer:
        writer.add_video("v0.mp4", "jack", features(2), group="s1")  # relabelled since
        writer.add_video("v1.mp4", "jack", features(5), group="s2")  # another length, another subject
        writer.add_video("v2.mp4", "jack", features(2))
    with pytest.raises(FramecacheError, match=r"disagree about 2 video\(s\), e.g. v0.mp4: label 'bend' in .*a.h5, 'jack' in "
                                              r".*b.h5; v1.mp4: group 's1' in .*, 's2' in .*, num_frames 3 in .*, 5 in .*nothing was merged"):
        merge_caches(target, [first, second])
    assert not target.exists()
    merge_caches(target, [first])
    shards = closed(target)
    with pytest.raises(FramecacheError, match="disagree about 2 video"):  # the target's own videos count too
        merge_caches(target, [second])
    assert closed(target) == shards


def test_features_a_shard_declares_but_does_not_hold_are_damage_not_a_memory_bomb(tmp_path):
    """A shard edited to declare 3,000,000 frames (a few KB on disk): refused before reading, in one line."""
    path = tmp_path / "features.h5"
    with CacheWriter(path, PROVENANCE) as writer:
        writer.add_video("v0.mp4", "x", features(3))
        writer.add_video("v1.mp4", "x", features(3))
    (shard,) = [shard for shard in shards_folder(path).iterdir() if not shard.name.startswith(".")]
    with h5py.File(shard, "r+", locking=False) as handle:
        entry = handle["videos"][video_id("v0.mp4")]
        del entry["features"]
        entry.create_dataset("features", shape=(2, 3_000_000, 4), dtype=np.float16)  # declared, never written
        index = json.loads(handle["index"][()])
        for row in index["videos"]:
            row[5] = 3_000_000 if row[1] == "v0.mp4" else row[5]  # num_frames, after the key and four fields
        del handle["index"]
        handle["index"] = json.dumps(index)
    assert shard.stat().st_size < 1_000_000
    with FeatureCache(path) as cache:
        with pytest.raises(FramecacheError, match=r"is damaged: .*v0.mp4's features declare \(2, 3000000, 4\) but the file stores only 0 bytes"):
            cache.features(video_id("v0.mp4"))
        assert cache.features(video_id("v1.mp4")).shape == (2, 3, 4)  # the others read as before


def test_a_write_error_that_is_not_a_full_disk_does_not_say_so(tmp_path, monkeypatch):
    writer = CacheWriter(tmp_path / "features.h5", PROVENANCE)

    def hdf5_error(self, *args, **kwargs):
        raise RuntimeError("Unable to synchronously create dataset (bad value)")

    monkeypatch.setattr(h5py.Group, "create_dataset", hdf5_error)
    with pytest.raises(FramecacheError, match=r"\(bad value\)\): not for want of space \([\d.]+ GB free\)\. .*to resume; if it fails the same way, report it") as raised:
        writer.add_video("v0.mp4", "x", features(2))
    assert "disk may be full" not in str(raised.value)
    monkeypatch.undo()
    writer.close()
