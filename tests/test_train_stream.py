"""Stage two streamed from the cache: the same batches, statistics and results as in memory, read in the cache's order."""

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framecache.common.errors import FramecacheError
from framecache.train import data as train_data
from framecache.train.config import TrainConfig
from framecache.train.data import (
    InMemoryFeatures,
    SequenceBatches,
    StreamedFeatures,
    choose_in_memory,
    load_cache,
)
from framecache.train.evaluate import evaluate_run
from framecache.train.fit import run_training
from framecache.train.sampling import epoch_order, time_steps
from framecache.train.synthetic import write_synthetic_cache
from framecache.train.temporal import feature_statistics, temporal_inputs

FAST = dict(units=16, head_units=16, max_len=16, epochs=4, patience=2, batch_size=8, learning_rate=0.01, dropout=0.1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "features.h5", videos=42, feature_dim=8, views=3, subjects=10, frames=(5, 50))


@pytest.fixture(scope="module")
def both(cache):
    memory, streamed = load_cache(cache, in_memory="yes"), load_cache(cache, in_memory="no")
    yield memory, streamed
    streamed.close()


def all_batches(batches: SequenceBatches) -> list:
    return [batches[number] for number in range(len(batches))]


def assert_same_batches(first: list, second: list) -> None:
    assert len(first) == len(second)
    for ((inputs, mask), labels), ((other_inputs, other_mask), other_labels) in zip(first, second):
        assert inputs.dtype == other_inputs.dtype == np.float32
        assert np.array_equal(inputs, other_inputs) and np.array_equal(mask, other_mask) and np.array_equal(labels, other_labels)


def test_load_cache_holds_or_streams_as_told(both):
    memory, streamed = both
    assert isinstance(memory.features, InMemoryFeatures) and memory.in_memory
    assert isinstance(streamed.features, StreamedFeatures) and not streamed.in_memory
    assert not hasattr(streamed.features, "arrays"), "a streamed source holds no features"
    assert np.array_equal(memory.labels, streamed.labels) and memory.paths == streamed.paths and memory.groups == streamed.groups
    assert np.array_equal(memory.features.num_frames, streamed.features.num_frames)
    assert np.array_equal(memory.features.locality, streamed.features.locality)
    for index in (0, 17, 41):
        assert streamed.features[index].dtype == np.float16
        assert np.array_equal(memory.features[index], streamed.features[index])
        assert np.array_equal(memory.features.read(index, 2), streamed.features.read(index, 2))


@pytest.mark.parametrize("oversample", [False, True])
def test_training_batches_are_bit_identical_over_epochs(both, oversample):
    labels = both[0].labels.copy()
    indices = np.flatnonzero(labels != 2)[::2]  # an imbalanced subset: oversampling repeats class 1
    indices = np.concatenate([indices, np.flatnonzero(labels == 2)])
    made = [
        SequenceBatches(data.features, labels, indices, max_len=12, frame_step=2, batch_size=6, train=True, oversample=oversample, seed=3)
        for data in both
    ]
    orders = []
    for _ in range(3):
        assert_same_batches(all_batches(made[0]), all_batches(made[1]))
        assert made[0].views == made[1].views and len(set(made[0].views)) == 3, "random views, the same ones"
        orders.append(made[0].order.copy())
        for batches in made:
            batches.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1]), "each epoch draws a new order"
    if oversample:
        assert all(np.bincount(labels[order]).min() == np.bincount(labels[order]).max() for order in orders)


def test_evaluation_batches_are_bit_identical_and_use_view_0(both):
    made = [SequenceBatches(data.features, data.labels, np.arange(5, 30), max_len=16, frame_step=1, batch_size=7) for data in both]
    first, second = all_batches(made[0]), all_batches(made[1])
    assert_same_batches(first, second)
    memory = both[0].features
    expected = memory.read(5, 0)[time_steps(int(memory.num_frames[5]), 16, 1)].astype(np.float32)
    assert np.array_equal(first[0][0][0][0, : len(expected)], expected)
    assert made[0].order.tolist() == list(range(5, 30)), "evaluation keeps the given order"


class CountingReader:
    """A FeatureReader that records every read."""

    def __init__(self, reader):
        self.reader, self.reads = reader, []

    def read(self, video, view=None, frames=None):
        self.reads.append((video.key, view))
        self.frames_read = getattr(self, "frames_read", 0) + (video.num_frames if frames is None else len(frames))
        return self.reader.read(video, view, frames)

    def close(self):
        self.reader.close()


def test_a_training_epoch_reads_each_video_once_one_view_in_the_caches_order(cache, monkeypatch):
    monkeypatch.setattr(train_data, "WINDOW_VIDEOS", 16)
    streamed = load_cache(cache, in_memory="no")
    source = streamed.features
    source.reader = CountingReader(source.reader)
    batches = SequenceBatches(source, streamed.labels, np.arange(42), max_len=8, frame_step=1, batch_size=4, train=True, seed=0)
    assert batches.window_batches == 4
    all_batches(batches)
    reads = source.reader.reads
    keys = [video.key for video in source.videos]
    assert sorted(key for key, _ in reads) == sorted(keys), "one read per video"
    assert all(view is not None for _, view in reads), "only the chosen view is read"
    assert source.reader.frames_read <= 8 * len(keys) < int(source.num_frames.sum()), "only the sampled frames are read"
    for window in range(3):  # each window's 16 videos are read in the cache's order
        places = [source.locality[keys.index(key)] for key, _ in reads[16 * window : 16 * window + 16]]
        assert places == sorted(places)
    streamed.close()


def test_epoch_order_keeps_runs_together_and_mixes_classes():
    indices = np.arange(1000)
    locality = np.arange(1000)  # the cache's order: class by class, as sorted paths often are
    labels = indices // 250
    rng = np.random.default_rng(0)
    order = epoch_order(indices, locality, rng, block=8, window=256)
    assert sorted(order) == list(indices)
    assert np.array_equal(order, epoch_order(indices, locality, np.random.default_rng(0), block=8, window=256)), "seeded"
    for start in range(0, 1000, 256):  # a window holds whole runs of 8 neighbours (but where a run straddles two windows)
        window = order[start : start + 256]
        runs = set(window // 8)
        assert len(runs) <= 256 // 8 + 2
    batches = order[: 992].reshape(-1, 32)
    mixed = [len(set(labels[batch])) for batch in batches]
    assert np.mean(mixed) > 2.5, "batches mix the classes although the cache is sorted by class"


@pytest.mark.parametrize(("max_len", "centre", "differences"), [(None, False, False), (16, True, True), (8, False, True)])
def test_streamed_statistics_equal_the_whole_arrays(both, max_len, centre, differences):
    memory, streamed = both
    train = np.arange(0, 42, 3)
    mean, variance = feature_statistics(streamed.features, train, max_len, 2, centre=centre, differences=differences)
    in_memory = feature_statistics(memory.features, train, max_len, 2, centre=centre, differences=differences)
    assert np.array_equal(mean, in_memory[0]) and np.array_equal(variance, in_memory[1])
    inputs = []
    for index in train:  # today's definition, computed on everything at once
        frames = memory.features[index][0]
        if max_len is not None:
            frames = frames[time_steps(len(frames), max_len, 2)]
        inputs.append(temporal_inputs(frames, centre, differences))
    inputs = np.concatenate(inputs)
    np.testing.assert_allclose(mean, inputs.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, np.maximum(inputs.var(axis=0), 1e-4), rtol=1e-5)


def test_statistics_stay_exact_with_a_large_mean():
    rng = np.random.default_rng(0)
    videos = [(3000 + rng.normal(size=(1, 30, 4))).astype(np.float32) for _ in range(20)]
    _, variance = feature_statistics(videos, np.arange(20))
    expected = np.concatenate([video[0].astype(np.float64) for video in videos]).var(axis=0)
    np.testing.assert_allclose(variance, expected, rtol=1e-6)  # E[x^2] - mean^2 in float64 loses about 1e-6 here


def test_auto_chooses_by_available_memory():
    gigabyte = 10**9
    assert choose_in_memory("auto", gigabyte, available=8 * gigabyte)[0]  # 2 GB as float32 of 8 available
    keep, reason = choose_in_memory("auto", 3 * gigabyte, available=8 * gigabyte)  # 6 GB > half of 8
    assert not keep and "more than 50% of the 8 GB" in reason and "6 GB as float32" in reason
    assert choose_in_memory("yes", 100 * gigabyte, available=1)[0]
    assert not choose_in_memory("no", 1, available=100 * gigabyte)[0]
    with pytest.raises(FramecacheError, match="must be one of auto, yes, no"):
        choose_in_memory("maybe", 1)


def test_the_choice_is_logged_with_its_reason(cache, monkeypatch, caplog):
    monkeypatch.setattr(train_data, "available_memory", lambda: 1000)
    with caplog.at_level(logging.INFO, logger="framecache.train.data"):
        data = load_cache(cache)
    assert not data.in_memory and "streamed from the cache: the features take" in caplog.text and "more than 50%" in caplog.text
    data.close()
    monkeypatch.setattr(train_data, "available_memory", lambda: 10**12)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="framecache.train.data"):
        assert load_cache(cache).in_memory
    assert "in memory: the features take" in caplog.text


def test_a_streamed_source_pickles_without_open_files(both):
    _, streamed = both
    source = streamed.features
    source.read(0, 0)  # opens the file
    copy = pickle.loads(pickle.dumps(source))
    assert np.array_equal(copy.read(3, 1), source.read(3, 1))
    copy.close()


@pytest.mark.slow  # two full CV runs (~20 s); the batches themselves are compared bit for bit in the default suite
def test_training_streamed_gives_the_same_run_as_in_memory(cache, tmp_path):
    results = {}
    for setting in ("yes", "no"):
        folder = tmp_path / setting
        metrics = run_training(TrainConfig(features=str(cache), run=str(folder), in_memory=setting, cv=2, quiet=True, **FAST))
        results[setting] = (metrics, json.loads((folder / "metrics.json").read_text()), pd.read_csv(folder / "history.csv"))
    (metrics, stored, history), (other_metrics, other_stored, other_history) = results["yes"], results["no"]
    assert metrics["accuracy"] == other_metrics["accuracy"] and metrics["cv"] == 2
    assert history.equals(other_history), "same losses and accuracies, epoch by epoch"
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "confusion_matrix", "per_class", "split_sizes", "folds", "pooled", "epochs"):
        if key == "folds":
            assert [{k: v for k, v in fold.items() if k != "seconds"} for fold in stored[key]] == [
                {k: v for k, v in fold.items() if k != "seconds"} for fold in other_stored[key]
            ]
        else:
            assert stored[key] == other_stored[key], key
    assert pd.read_csv(tmp_path / "yes" / "predictions.csv").equals(pd.read_csv(tmp_path / "no" / "predictions.csv"))
    assert json.loads((tmp_path / "no" / "config.json").read_text())["in_memory"] == "no"


def test_evaluate_streams_when_memory_is_short(cache, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "run"
    run_training(TrainConfig(features=str(cache), run=str(folder), quiet=True, **{**FAST, "epochs": 2}))
    in_memory = evaluate_run(str(folder), str(cache))
    monkeypatch.setattr(train_data, "available_memory", lambda: 0)
    with caplog.at_level(logging.INFO, logger="framecache.train.data"):
        streamed = evaluate_run(str(folder), str(cache))
    assert "streamed from the cache" in caplog.text
    for key in ("accuracy", "confusion_matrix", "per_class"):
        assert streamed[key] == in_memory[key]


def test_training_reads_each_window_once_per_epoch(cache, tmp_path, monkeypatch):
    """Keras must not reorder the batches (fit(shuffle=False)): a window is read once per epoch, not once per batch."""
    windows = []
    read_window = SequenceBatches._read_window

    def counted(self, window):
        if self.train:
            windows.append(window)
        return read_window(self, window)

    monkeypatch.setattr(SequenceBatches, "_read_window", counted)
    monkeypatch.setattr(train_data, "WINDOW_VIDEOS", 8)  # 8 batches of 1 per window
    folder = tmp_path / "counted"
    metrics = run_training(TrainConfig(features=str(cache), run=str(folder), in_memory="no", quiet=True, **{**FAST, "batch_size": 1, "epochs": 2}))
    per_epoch = -(-metrics["split_sizes"]["train"]["videos"] // 8)
    assert per_epoch >= 3
    # every epoch's windows, plus window 0 twice before the first (Keras reads two batches for their shapes, then re-plans)
    assert metrics["epochs"] * per_epoch <= len(windows) <= (metrics["epochs"] + 2) * per_epoch, windows


# VmHWM, not ru_maxrss: Linux carries a parent's peak into ru_maxrss across fork and exec (here: the test's own arrays).
TRAIN_PEAK = """
import re, sys
from pathlib import Path
from framecache.train.config import TrainConfig
from framecache.train.fit import run_training
run_training(TrainConfig(features=sys.argv[1], run=sys.argv[2], in_memory=sys.argv[3], epochs=1, units=4, head_units=4,
                         max_len=16, quiet=True))
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) // 1024)
"""


def _train_peak(cache: Path, run: Path, in_memory: str) -> int:
    """Train on ``cache`` in a fresh process: its peak resident memory in MB."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", TRAIN_PEAK, str(cache), str(run), in_memory], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two trainings in fresh processes (~40 s)
def test_a_very_long_video_costs_stage_two_what_it_reads_not_what_it_holds(tmp_path):
    """One video of 400,000 frames (100 MB of float16 features, 400 MB as float64) among short ones: streamed,
    training reads only the frames it samples (max_len), so its peak stays near that of a cache of short videos."""
    from framecache.common.cache import CacheWriter
    from framecache.train.synthetic import synthetic_provenance

    def cache(path: Path, long_frames: int | None) -> Path:
        rng = np.random.default_rng(0)
        with CacheWriter(path, synthetic_provenance(64, 2)) as writer:
            for index in range(24):
                frames = long_frames if index == 0 and long_frames else 30
                features = rng.standard_normal((2, frames, 64)).astype(np.float16) + index % 2
                writer.add_video(f"v/{index}.mp4", f"c{index % 2}", features, group=f"s{index % 6}")
        return path

    short = _train_peak(cache(tmp_path / "short.h5", None), tmp_path / "short", "no")
    long = _train_peak(cache(tmp_path / "long.h5", 400_000), tmp_path / "long", "no")
    assert long < short + 60, (short, long)  # MB; reading the long video whole would add 100-500 MB
