"""A run on several caches of the same videos (``--features pose.h5 cnn.h5``): joined by path, a GRU and a baseline
per cache, combined; reports per part; evaluate and the CLI take the caches in the run's order."""

import json

import numpy as np
import pytest

from framecache.cli import main as framecache_main
from framecache.common.errors import FramecacheError
from framecache.train.config import TrainConfig
from framecache.train.data import load_cache
from framecache.train.evaluate import evaluate_run
from framecache.train.fit import run_training
from framecache.train.synthetic import write_synthetic_cache

FAST = dict(units=8, head_units=8, max_len=16, epochs=8, patience=3, batch_size=16, learning_rate=0.01, dropout=0.1, quiet=True)
VIDEOS = dict(videos=36, classes=3, feature_dim=8, subjects=6, frames=(8, 24))


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two caches of the same videos: in one the classes differ in motion, in the other in appearance."""
    folder = tmp_path_factory.mktemp("caches")
    motion = write_synthetic_cache(folder / "motion.h5", regime="motion", backbone="motion_net", **VIDEOS)
    look = write_synthetic_cache(folder / "look.h5", regime="appearance", backbone="look_net", **VIDEOS)
    return motion, look


def test_the_caches_are_joined_frame_by_frame_by_path(caches):
    motion, look = caches
    joined = load_cache([str(motion), str(look)], in_memory="yes")
    alone = [load_cache(str(path), in_memory="yes") for path in caches]
    assert [part.name for part in joined.parts] == ["motion_net", "look_net"]
    assert joined.feature_dim == 16 and joined.backbone == "motion_net + look_net"
    assert joined.paths == alone[0].paths and list(joined.labels) == list(alone[0].labels)
    assert set(joined.features.views) == {2}
    np.testing.assert_array_equal(joined.features.read(3, 0), np.concatenate([alone[0].features.read(3, 0), alone[1].features.read(3, 0)], axis=1))
    streamed = load_cache([str(motion), str(look)], in_memory="no")
    np.testing.assert_array_equal(streamed.features.read(3, 0), joined.features.read(3, 0))
    assert streamed.provenance_hash == joined.provenance_hash != alone[0].provenance_hash


def test_a_run_on_two_caches_reports_each_part_and_evaluates_with_both(caches, tmp_path, capsys):
    motion, look = caches
    folder = tmp_path / "joined"
    metrics = run_training(TrainConfig(features=[str(motion), str(look)], run=str(folder), combine="classwise", **FAST))
    assert list(metrics.mix.parts) == ["GRU (motion_net)", "baseline (motion_net)", "GRU (look_net)", "baseline (look_net)"]
    assert metrics.mix.method == "classwise" and metrics.cache.backbone == "motion_net + look_net"
    report = (folder / "report.txt").read_text()
    assert "GRU (look_net)" in report and "baseline (motion_net)" in report and "stacked class by class" in report
    history = json.loads((folder / "config.json").read_text())
    assert history["features"] == [str(motion), str(look)]
    evaluated = evaluate_run(str(folder), [str(motion), str(look)])
    assert evaluated["videos"] == metrics.videos
    assert evaluated["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy), "the saved model is the run's model"
    with pytest.raises(FramecacheError, match="trained on 2 cache"):
        evaluate_run(str(folder), str(motion))
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["evaluate", "--run", str(folder), "--features", str(motion), str(look)])
    assert exit_info.value.code == 0 and "videos of" in capsys.readouterr().out


def test_caches_that_disagree_are_refused_in_one_line(caches, tmp_path):
    motion, _ = caches
    longer = write_synthetic_cache(tmp_path / "longer.h5", regime="appearance", backbone="look_net", **{**VIDEOS, "frames": (30, 40)})
    with pytest.raises(FramecacheError, match="frames in .* cannot be joined frame by frame"):
        load_cache([str(motion), str(longer)])
    elsewhere = write_synthetic_cache(tmp_path / "elsewhere.h5", folder="other", backbone="look_net", **VIDEOS)
    with pytest.raises(FramecacheError, match="no video in common"):
        load_cache([str(motion), str(elsewhere)])
    with pytest.raises(FramecacheError, match="names a cache twice"):
        TrainConfig(features=[str(motion), str(motion)]).validate()


def test_make_features_with_two_caches_reaches_the_run(caches, tmp_path, monkeypatch, capsys):
    """make train FEATURES="a.h5 b.h5": the Makefile passes both words to --features (a two-cache run trains above)."""
    motion, look = caches
    monkeypatch.setenv("FRAMECACHE_MAKE", "1")
    monkeypatch.setenv("FEATURES", f"{motion} {look}")
    monkeypatch.setenv("RUN", str(tmp_path / "cli"))
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["train", "--epochs", "2", "--print-config"])
    assert exit_info.value.code == 0
    config = json.loads(capsys.readouterr().out)
    assert config["features"] == [str(motion), str(look)] and config["run"] == str(tmp_path / "cli")
    TrainConfig(**config).validate()  # the run would start: both caches exist and differ


@pytest.mark.slow  # the fast suite predicts in tests/test_predict.py and evaluates a two-cache run above
def test_predict_runs_every_backbone_of_the_run_and_agrees_with_its_predictions(caches, tmp_path, monkeypatch):
    """Stage one is replaced by each cache's clean view, chosen by the provenance it is asked for; a video one backbone
    cannot embed fails as a whole."""
    import pandas as pd

    from framecache.common.cache import FeatureCache
    from framecache.extract.embed import EmbedResult
    from framecache.train.predict import predict_videos

    clean, asked = {}, []
    for path in caches:
        with FeatureCache(path) as cache:
            clean[cache.provenance.backbone] = {video.path: cache.features(video.key, view=0).astype(np.float32) for video in cache.videos}

    def embed_videos(paths, provenance, engine="auto", folder_fps=None):
        asked.append(provenance.backbone)
        own = clean[provenance.backbone]
        if provenance.backbone == "look_net":  # this backbone cannot read the first video
            return [EmbedResult(paths[0], None, "cannot decode: broken")] + [EmbedResult(path, own[path]) for path in paths[1:]]
        return [EmbedResult(path, own[path]) for path in paths]

    monkeypatch.setattr("framecache.extract.embed.embed_videos", embed_videos)
    folder = tmp_path / "run"
    run_training(TrainConfig(features=[str(path) for path in caches], run=str(folder), **FAST))
    evaluated = pd.read_csv(folder / "predictions.csv")
    paths = evaluated["path"].tolist()
    lines = predict_videos(str(folder), paths, top=3)
    assert asked == ["motion_net", "look_net"]
    assert lines[0] == {"path": paths[0], "error": "look_net: cannot decode: broken"}
    for line, (_, row) in zip(lines[1:], list(evaluated.iterrows())[1:]):
        assert line["label"] == row["predicted"]
        for entry in line["top"]:
            assert entry["p"] == pytest.approx(row[f"p_{entry['label']}"], abs=1e-5)


def test_a_cache_with_fewer_views_gives_its_clean_view_for_the_others(caches, tmp_path):
    """pose.h5 extracted with one view beside a CNN cache of two: training still draws the CNN's augmented view."""
    from framecache.train.data import InMemoryFeatures
    from framecache.train.join import JoinedFeatures

    rng = np.random.default_rng(0)
    two = InMemoryFeatures([rng.normal(size=(2, 5, 3)).astype(np.float16)])
    one = InMemoryFeatures([rng.normal(size=(1, 5, 2)).astype(np.float16)])
    joined = JoinedFeatures([one, two])
    assert joined.views.tolist() == [2]
    np.testing.assert_array_equal(joined.read(0, 1), np.concatenate([one.arrays[0][0], two.arrays[0][1]], axis=1))
    np.testing.assert_array_equal(joined.read(0, 1, np.array([1, 3])), joined.read(0, 1)[[1, 3]])
