"""predict and evaluate: new videos through the run's model agree with the evaluation path; wrong features are refused.

Stage one's ``embed_videos`` is replaced by one that returns the cached clean
view, so a predicted video must get exactly the probabilities the run wrote
to predictions.csv.
"""

import json
import re
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from framecache.cli import main as framecache_main
from framecache.common.cache import CacheWriter, FeatureCache
from framecache.common.errors import FramecacheError
from framecache.common.options import option_name
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

    def embed_videos(paths, run_provenance, engine="auto", folder_fps=None):
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
    monkeypatch.setattr("framecache.extract.embed.embed_videos", lambda paths, provenance, engine="auto", folder_fps=None: [EmbedResult(paths[0], np.zeros((5, 7), np.float32))])
    code, _, err = cli(["--run", str(run), "a.mp4"], capsys)
    assert code == 2 and "model reads 16-d features" in err


@pytest.fixture(scope="module")
def cv_run(cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "cv3"
    run_training(TrainConfig(features=str(cache), run=str(folder), cv=3, quiet=True, **{**FAST, "epochs": 3}))
    return folder


@pytest.mark.slow  # trains a 3-fold run; the fast suite trains folds in tests/test_train.py
def test_predict_with_a_cross_validated_run_uses_its_folds_ensemble(cv_run, cached_embedding, capsys):
    paths = pd.read_csv(cv_run / "predictions.csv")["path"].tolist()[:4]
    code, lines, _ = cli(["--run", str(cv_run), *paths], capsys)
    assert code == 0 and all(line["ensemble"] == "mean of 3 fold models" for line in lines)
    folds = [[line["top"] for line in cli(["--run", str(cv_run / f"fold{fold}"), "--top", "3", *paths], capsys)[1]] for fold in (1, 2, 3)]
    for number, line in enumerate(lines):
        for entry in line["top"]:
            fold_ps = [next(item["p"] for item in fold[number] if item["label"] == entry["label"]) for fold in folds]
            assert entry["p"] == pytest.approx(np.mean(fold_ps), abs=1e-5), "the mean of the fold models' probabilities"


def test_predict_needs_a_run(tmp_path):
    with pytest.raises(FramecacheError, match="run folder not found"):
        predict.predict_videos(str(tmp_path / "nothing"), ["a.mp4"])


def test_evaluate_on_the_training_cache_scores_the_runs_test_videos(run, cache, tmp_path):
    metrics = evaluate_run(str(run), str(cache), out=str(tmp_path / "eval"))
    evaluated = pd.read_csv(run / "predictions.csv")
    evaluated = evaluated[evaluated["split"] == "test"].set_index("path")
    assert metrics["videos"] == len(evaluated) < 36 and metrics["split"] == "test" and metrics["evaluated"] == "the run's test videos"
    again = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("path")
    assert sorted(again.index) == sorted(evaluated.index)
    again = again.loc[evaluated.index]
    assert (again["predicted"] == evaluated["predicted"]).all() and (again["baseline_predicted"] == evaluated["baseline_predicted"]).all()
    assert np.allclose(again.filter(like="p_"), evaluated.filter(like="p_"), atol=1e-5)
    stored = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(stored["accuracy"]) and metrics["baseline"]["accuracy"] == pytest.approx(stored["baseline"]["accuracy"])
    assert metrics["ci"]["accuracy"][0] <= metrics["accuracy"] <= metrics["ci"]["accuracy"][1]


def test_evaluate_refuses_videos_the_run_trained_on(run, cache, tmp_path):
    with pytest.raises(FramecacheError, match=r"\d+ of the 36 videos .* trained or validated the run") as error:
        evaluate_run(str(run), str(cache), split="all")
    assert "optimistic" in str(error.value)
    metrics = evaluate_run(str(run), str(cache), split="train")  # asked for by name: evaluated, but flagged
    assert "optimistic" in metrics["warning"] and metrics["evaluated"] == "the run's train videos"
    new = write_synthetic_cache(tmp_path / "new.h5", videos=9, feature_dim=16, subjects=3, frames=(10, 40), seed=7, folder="new")
    with pytest.raises(FramecacheError, match=f"holds none of the run's .* test videos; for a cache of new videos pass {re.escape(option_name('split', 'all'))}"):
        evaluate_run(str(run), str(new))
    fresh = evaluate_run(str(run), str(new), split="all")
    assert fresh["videos"] == 9 and "warning" not in fresh and "baseline" in fresh


@pytest.mark.slow  # trains a 3-fold run; the fast suite trains folds in tests/test_train.py
def test_evaluate_a_cross_validated_run(cv_run, cache, tmp_path):
    metrics = evaluate_run(str(cv_run), str(cache))  # every video, each by the fold model that did not train on it
    stored = json.loads((cv_run / "metrics.json").read_text())
    assert metrics["videos"] == 36 and metrics["accuracy"] == pytest.approx(stored["pooled"]["accuracy"])
    assert "did not train on it" in metrics["evaluated"]
    new = write_synthetic_cache(tmp_path / "new.h5", videos=9, feature_dim=16, subjects=3, frames=(10, 40), seed=8, folder="new")
    ensemble = evaluate_run(str(cv_run), str(new), split="all")
    assert ensemble["videos"] == 9 and "mean probabilities of the 3 fold models" in ensemble["evaluated"]
    with pytest.raises(FramecacheError, match="cross-validation run"):
        evaluate_run(str(cv_run), str(cache), split="val")


def test_evaluate_a_model_that_records_no_split(run, cache, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run, old)
    with zipfile.ZipFile(run / "model.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["framecache.json"])
    del metadata["split"]
    members["framecache.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(old / "model.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(FramecacheError, match="records no split"):
        evaluate_run(str(old), str(cache))
    metrics = evaluate_run(str(old), str(cache), split="all")
    assert metrics["videos"] == 36 and "cannot be checked" in metrics["warning"]


def test_evaluate_refuses_a_cache_of_other_features(run, tmp_path):
    other_size = write_synthetic_cache(tmp_path / "wide.h5", videos=6, feature_dim=32, subjects=None)
    with pytest.raises(FramecacheError, match="feature_dim: model 16, cache .* 32"):
        evaluate_run(str(run), str(other_size))
    other_backbone = tmp_path / "mobilenet.h5"
    with CacheWriter(other_backbone, synthetic_provenance(16, 1, backbone="mobilenet_v2")) as writer:
        writer.add_video("a.mp4", "class0", np.zeros((1, 4, 16)))
    with pytest.raises(FramecacheError, match="backbone: model 'synthetic', cache .* 'mobilenet_v2'"):
        evaluate_run(str(run), str(other_backbone))


def test_a_schema_1_cache_still_trains_evaluates_and_shows_in_info(run, cache, tmp_path, capsys):
    """A cache written before shards (one HDF5 file): stage two reads it as it did."""
    from v1_cache import write_v1_cache

    with FeatureCache(cache) as current:
        videos = [dict(path=video.path, label=video.label, group=video.group, split=video.split,
                       features=current.features(video.key)) for video in current.videos]  # fmt: skip
        provenance = current.provenance
    old = write_v1_cache(tmp_path / "old.h5", provenance, videos)
    with FeatureCache(old) as opened:
        assert opened.schema_version == 1 and len(opened.videos) == 36

    evaluated = evaluate_run(str(run), str(old))  # the model trained on the schema-2 cache, on the same videos
    current = evaluate_run(str(run), str(cache))
    assert evaluated["videos"] == current["videos"] > 0
    assert evaluated["accuracy"] == pytest.approx(current["accuracy"])
    metrics = run_training(TrainConfig(features=str(old), run=str(tmp_path / "v1-run"), quiet=True, **FAST))
    assert metrics and (tmp_path / "v1-run" / "model.keras").exists()

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["info", str(old)])
    assert exit_info.value.code == 0
    assert "(schema 1)" in capsys.readouterr().out
