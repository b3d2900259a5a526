"""Stage one end to end on tiny generated videos, with bad files mixed in."""

import subprocess
import sys

import numpy as np
import pytest

from framecache.common.cache import FeatureCache
from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.extract.pipeline import embed_videos, run_extraction

BACKBONE = "efficientnetb0"  # random weights: tests never download


@pytest.fixture
def dataset(make_video, tmp_path):
    """Four good videos of odd sizes and formats, plus a corrupt, an empty and a missing file."""
    make_video("videos/a.mp4", num_frames=9, height=47, width=33, seed=1)
    make_video("videos/b.avi", num_frames=5, height=64, width=48, seed=2)
    make_video("videos/c.mp4", num_frames=1, height=40, width=40, seed=3)
    make_video("videos/d.mp4", num_frames=12, height=36, width=64, seed=4)
    (tmp_path / "videos/corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "videos/empty.mp4").write_bytes(b"")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label,group\n"
        "videos/a.mp4,squat,s1\nvideos/b.avi,squat,s2\nvideos/c.mp4,jump,s1\nvideos/d.mp4,jump,s2\n"
        "videos/corrupt.mp4,jump,s3\nvideos/empty.mp4,squat,s3\nvideos/missing.mp4,jump,s3\n"
    )
    return csv


def config_for(csv, **overrides):
    values = dict(csv=str(csv), out=str(csv.parent / "features.h5"), backbone=BACKBONE, weights="none",
                  views=2, augment="light", batch_size=8, chunk_frames=4, quiet=True)
    values.update(overrides)
    return ExtractConfig(**values)


def read_all(path):
    with FeatureCache(path) as cache:
        return {video.path: cache.features(video.key).astype(np.float32) for video in cache.videos}, cache.summary()


def test_extracts_good_videos_and_records_bad_ones(dataset):
    config = config_for(dataset)
    summary = run_extraction(config)
    assert (summary.ok, summary.failed, summary.skipped) == (4, 3, 0)
    assert summary.frames == 2 * (9 + 5 + 1 + 12)
    features, info = read_all(config.out)
    assert {path: value.shape for path, value in features.items()} == {
        "videos/a.mp4": (2, 9, 1280), "videos/b.avi": (2, 5, 1280), "videos/c.mp4": (2, 1, 1280), "videos/d.mp4": (2, 12, 1280)
    }
    assert not np.allclose(features["videos/d.mp4"][0], features["videos/d.mp4"][1])  # view 1 is augmented
    reasons = {failure["path"]: failure["reason"] for failure in info["failures"]}
    assert set(reasons) == {"videos/corrupt.mp4", "videos/empty.mp4", "videos/missing.mp4"}
    assert "not found" in reasons["videos/missing.mp4"]
    assert info["labels"] == {"jump": 2, "squat": 2}
    provenance = info["provenance"]
    assert provenance["weights"] == "random" and provenance["views"] == 2 and provenance["augment"] == "light"
    assert provenance["backbone"] == BACKBONE and provenance["feature_dim"] == 1280

    again = run_extraction(config)  # resume: nothing left but the bad files
    assert (again.ok, again.skipped, again.frames) == (0, 4, 0)
    assert read_all(config.out)[0].keys() == features.keys()

    with pytest.raises(FramecacheError, match="views: cache has 2, this run 3"):
        run_extraction(config_for(dataset, views=3))


def test_features_do_not_depend_on_batching_or_workers(dataset, tmp_path):
    first = config_for(dataset, out=str(tmp_path / "one.h5"))
    second = config_for(dataset, out=str(tmp_path / "two.h5"), batch_size=5, chunk_frames=3, workers=2)
    run_extraction(first)
    run_extraction(second)
    one, _ = read_all(first.out)
    two, _ = read_all(second.out)
    assert one.keys() == two.keys()
    for path in one:
        np.testing.assert_allclose(one[path], two[path], rtol=2e-2, atol=1e-7)


def test_embed_videos_matches_the_clean_cached_view(dataset):
    config = config_for(dataset)
    run_extraction(config)
    cached, info = read_all(config.out)
    results = embed_videos([str(dataset.parent / "videos/d.mp4"), str(dataset.parent / "videos/corrupt.mp4")], info["provenance"])
    assert results[0].error is None and results[1].features is None and results[1].error
    np.testing.assert_allclose(results[0].features, cached["videos/d.mp4"][0], rtol=2e-2, atol=1e-7)


def test_cli_prints_one_line_errors_without_traceback(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.mp4,x\n")
    result = subprocess.run(
        [sys.executable, "-m", "extract", "--csv", str(csv), "--out", str(tmp_path / "f.h5"), "--weights", "none", "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "f.h5").exists()
