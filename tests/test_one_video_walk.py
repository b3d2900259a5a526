"""One video's trip through ``framecache extract``: every check, hash and header read happens once, every frame's
features are cast once.

The real classes run (the CLI's ``main``, the driver, decoder and writer
processes, the backbone); spies count, in this process and, through
:class:`doubles.CountingDecoder`, in each decoder process.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
from doubles import COUNT_DIR_ENV, CountingDecoder, counted_opens

from framecache import cli
from framecache.common import cache
from framecache.common.config import ExtractConfig
from framecache.extract import backbones, driver, pipeline

VIDEOS = ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]


def spy(monkeypatch, owner, name: str, calls: Counter, record=lambda *args, **kwargs: None):
    """Replace ``owner.name`` by a wrapper that counts its calls in ``calls[name]`` (and ``record``s its arguments)."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        calls[name] += 1
        record(*args, **kwargs)
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A weights file, so that hashing it is counted; one for every test here, so its conversion is made once."""
    path = tmp_path_factory.mktemp("weights") / "weights.weights.h5"
    model = backbones._spec("mobilenet_v2").build()
    model.set_weights([weight * 1.01 for weight in model.get_weights()])  # not the seeded random weights
    model.save_weights(path)
    return path


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_each_check_hash_header_and_cast_happens_once(make_video, tmp_path, monkeypatch, weights, decoder):
    for index, name in enumerate(VIDEOS):
        make_video(name, num_frames=6 + index, seed=index)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{name},{'ab'[index % 2]}\n" for index, name in enumerate(VIDEOS)))

    calls: Counter = Counter()
    cast_from: list = []
    spy(monkeypatch, ExtractConfig, "validate", calls)
    spy(monkeypatch, backbones, "sha256_of", calls)
    spy(monkeypatch, backbones, "check_precision", calls)
    spy(monkeypatch, backbones, "_pick_engine", calls)
    spy(monkeypatch, backbones, "_resolve_weights", calls)
    spy(monkeypatch, pipeline, "load_dataset", calls)
    spy(monkeypatch, driver, "stored_features", calls, record=lambda features: cast_from.append((features.dtype, len(features))))
    monkeypatch.setenv(COUNT_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(pipeline, "run_extraction", functools.partial(pipeline.run_extraction, decoder_class=CountingDecoder))

    out = tmp_path / "features.h5"
    with pytest.raises(SystemExit) as exit:
        cli.main(["extract", "--csv", str(csv), "--out", str(out), "--backbone", "mobilenet_v2", "--weights", str(weights),
                  "--views", "2", "--augment", "light", "--decoder", decoder, "--batch-size", "4", "--chunk-frames", "4",
                  "--workers", "2", "--quiet"])
    assert exit.value.code == 0
    assert len(cache.FeatureCache(out).videos) == len(VIDEOS)

    # In this process: the settings, the CSV, the weights and the engine, each checked once for the whole run.
    casts = calls.pop("stored_features")
    assert calls == Counter(validate=1, sha256_of=1, check_precision=1, _pick_engine=1, _resolve_weights=1, load_dataset=1)
    # Features are cast to what the cache stores as each batch returns, once per piece (a run of one view's frames in
    # a batch of 4), from the backbone's float32: every frame of every view once. The writer keeps them as they come.
    assert casts == len(cast_from) >= 2 * len(VIDEOS)  # at least one piece per view of each video
    assert {dtype for dtype, _ in cast_from} == {np.dtype(np.float32)} and max(count for _, count in cast_from) <= 4
    assert sum(count for _, count in cast_from) == 2 * sum(6 + index for index in range(len(VIDEOS)))  # frames, both views
    stored = np.zeros((2, 3, 4), np.float16)
    assert cache.stored_features(stored) is stored
    # In the decoder processes: each file opened once, its header read once (and decord opens it once more to decode).
    opens = counted_opens(tmp_path)
    for name in VIDEOS:
        path = str(tmp_path / name)
        assert opens[("av.open", path)] == 1 and opens[("header", path)] == 1, (name, opens)
        assert opens[("decord.open", path)] == (1 if decoder == "decord" else 0), (name, opens)
