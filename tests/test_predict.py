"""predict and evaluate: new videos through the run's model agree with the evaluation path; wrong features are refused.

Stage one's ``embed_videos`` is replaced by one that returns the cached clean
view, so a predicted video must get exactly the probabilities the run wrote
to predictions.csv.
"""

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from framecache.cli import main as framecache_main
from framecache.common.cache import CacheWriter, FeatureCache
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
from framecache.extract.embed import EmbedResult
from framecache.train import predict
from framecache.train.config import TrainConfig
from framecache.train.evaluate import evaluate_run
from framecache.train.fit import run_training
from framecache.train.synthetic import synthetic_provenance, write_synthetic_cache

FAST = dict(units=16, head_units=16, max_len=16, epochs=6, patience=3, batch_size=16, learning_rate=0.01, dropout=0.1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # frames up to 40 > max_len 16: the uniform evaluation sampling is exercised
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "features.h5", videos=36, feature_dim=16, subjects=9, frames=(10, 40))


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "run"
    run_training(TrainConfig(features=str(cache), run=str(folder), quiet=True, **FAST))
    return folder


@pytest.fixture
def cached_embedding(cache, monkeypatch):
    """Make stage one 'embed' a video by returning its cached clean view (float32); unknown paths fail."""
    calls = []
    with FeatureCache(cache) as features:
        clean = {video.path: features.features(video.key, view=0).astype(np.float32) for video in features.videos}
        provenance = features.provenance

    def embed_videos(paths, run_provenance, engine="auto"):
        calls.append(run_provenance)
        return [EmbedResult(path, clean[path]) if path in clean else EmbedResult(path, None, "cannot decode: no such file") for path in paths]

    monkeypatch.setattr("framecache.extract.embed.embed_videos", embed_videos)
    return calls, provenance


def cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["predict", *argv])
    captured = capsys.readouterr()
    return exit_info.value.code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_predict_agrees_with_the_evaluation_path(run, cached_embedding, capsys):
    calls, provenance = cached_embedding
    evaluated = pd.read_csv(run / "predictions.csv")
    paths = evaluated["path"].tolist()
    code, lines, _ = cli(["--run", str(run), "--top", "3", *paths, "missing.mp4"], capsys)
    assert code == 0 and len(lines) == len(paths) + 1
    assert calls == [provenance], "stage one gets exactly the cache's provenance"
    for line, (_, row) in zip(lines, evaluated.iterrows()):
        assert line["path"] == row["path"] and line["label"] == row["predicted"]
        probabilities = {entry["label"]: entry["p"] for entry in line["top"]}
        assert len(probabilities) == 3 and line["top"][0]["p"] >= line["top"][-1]["p"]
        for label, p in probabilities.items():
            assert p == pytest.approx(row[f"p_{label}"], abs=1e-5)
    assert lines[-1] == {"path": "missing.mp4", "error": "cannot decode: no such file"}


def test_a_model_saved_before_provenance_was_typed_still_predicts(run, cached_embedding, capsys, tmp_path):
    """Its framecache.json holds the provenance as the plain dict stage one wrote then (fewer keys)."""
    calls, _ = cached_embedding
    old = tmp_path / "old"
    shutil.copytree(run, old)
    with zipfile.ZipFile(run / "model.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["framecache.json"])
    stored = {key: metadata["provenance"][key] for key in (
        "backbone", "weights", "weights_sha256", "input_size", "resize", "frame_step", "fps", "feature_dim", "views", "augment",
        "seed", "framecache_version")}  # fmt: skip
    members["framecache.json"] = json.dumps({**metadata, "provenance": stored}).encode()
    with zipfile.ZipFile(old / "model.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    paths = pd.read_csv(run / "predictions.csv")["path"].tolist()[:3]
    code, lines, _ = cli(["--run", str(old), *paths], capsys)
    assert code == 0 and [line["path"] for line in lines] == paths and all("label" in line for line in lines)
    assert calls == [Provenance.from_dict(stored)] and calls[0].backbone == "synthetic"
    code, again, _ = cli(["--run", str(run), *paths], capsys)
    assert again == lines


def test_predict_fails_only_when_every_video_fails(run, cached_embedding, capsys):
    code, lines, _ = cli(["--run", str(run), "a.mp4", "b.mp4"], capsys)
    assert code == 1 and [line["path"] for line in lines] == ["a.mp4", "b.mp4"] and all("error" in line for line in lines)


def test_predict_refuses_features_of_another_size(run, monkeypatch, capsys):
    monkeypatch.setattr("framecache.extract.embed.embed_videos", lambda paths, provenance, engine="auto": [EmbedResult(paths[0], np.zeros((5, 7), np.float32))])
    code, _, err = cli(["--run", str(run), "a.mp4"], capsys)
    assert code == 2 and "model reads 16-d features" in err


def test_predict_needs_one_model(run, tmp_path):
    (tmp_path / "cv" / "fold1").mkdir(parents=True)
    (tmp_path / "cv" / "fold1" / "model.keras").write_bytes(b"")
    with pytest.raises(FramecacheError, match="cross-validation run"):
        predict.predict_videos(str(tmp_path / "cv"), ["a.mp4"])
    with pytest.raises(FramecacheError, match="run folder not found"):
        predict.predict_videos(str(tmp_path / "nothing"), ["a.mp4"])


def test_evaluate_on_the_training_cache_matches_the_run(run, cache, tmp_path):
    metrics = evaluate_run(str(run), str(cache), out=str(tmp_path / "eval"))
    assert metrics["videos"] == 36
    evaluated = pd.read_csv(run / "predictions.csv").set_index("path")
    again = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("path").loc[evaluated.index]
    assert (again["predicted"] == evaluated["predicted"]).all()
    assert np.allclose(again.filter(like="p_"), evaluated.filter(like="p_"), atol=1e-5)


def test_evaluate_refuses_a_cache_of_other_features(run, tmp_path):
    other_size = write_synthetic_cache(tmp_path / "wide.h5", videos=6, feature_dim=32, subjects=None)
    with pytest.raises(FramecacheError, match="feature_dim: model 16, cache .* 32"):
        evaluate_run(str(run), str(other_size))
    other_backbone = tmp_path / "mobilenet.h5"
    with CacheWriter(other_backbone, synthetic_provenance(16, 1, backbone="mobilenet_v2")) as writer:
        writer.add_video("a.mp4", "class0", np.zeros((1, 4, 16)))
    with pytest.raises(FramecacheError, match="backbone: model 'synthetic', cache .* 'mobilenet_v2'"):
        evaluate_run(str(run), str(other_backbone))
