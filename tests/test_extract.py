"""Stage one end to end on tiny generated videos, with bad files mixed in."""

import io
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import read_features, write_broken_videos

from framecache.cli import MakeSpelling
from framecache.common.cache import FeatureCache
from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.common.options import spelled
from framecache.extract import progress
from framecache.extract.embed import embed_videos
from framecache.extract.pipeline import run_extraction

BACKBONE = "efficientnetb0"  # random weights: tests never download


@pytest.fixture
def dataset(make_video, tmp_path):
    """Four good videos of odd sizes and formats, plus a corrupt, an empty and a missing file."""
    make_video("videos/a.mp4", num_frames=9, height=47, width=33, seed=1)
    make_video("videos/b.avi", num_frames=5, height=64, width=48, seed=2)
    make_video("videos/c.mp4", num_frames=1, height=40, width=40, seed=3)
    make_video("videos/d.mp4", num_frames=12, height=36, width=64, seed=4)
    write_broken_videos(tmp_path / "videos")
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


def test_extracts_good_videos_and_records_bad_ones(dataset):
    config = config_for(dataset)
    summary = run_extraction(config)
    assert (summary.ok, summary.failed, summary.skipped) == (4, 3, 0)
    assert summary.frames == 2 * (9 + 5 + 1 + 12)
    features, info = read_features(config.out)
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
    assert read_features(config.out)[0].keys() == features.keys()

    with pytest.raises(FramecacheError, match="views: cache has 2, this run 3"):
        run_extraction(config_for(dataset, views=3))


def test_features_do_not_depend_on_batching_or_workers(dataset, tmp_path):
    first = config_for(dataset, out=str(tmp_path / "one.h5"))
    second = config_for(dataset, out=str(tmp_path / "two.h5"), batch_size=5, chunk_frames=3, workers=2)
    run_extraction(first)
    run_extraction(second)
    one, _ = read_features(first.out)
    two, _ = read_features(second.out)
    assert one.keys() == two.keys()
    for path in one:
        np.testing.assert_allclose(one[path], two[path], rtol=2e-2, atol=1e-7)


def test_workers_unset_starts_one_decoding_process_and_allows_one_per_core(monkeypatch):
    from framecache.extract import pipeline

    monkeypatch.setattr(pipeline, "available_cores", lambda: 8)
    assert pipeline.decoder_counts(None, videos=100) == (1, 8)
    assert pipeline.decoder_counts(None, videos=3) == (1, 3)  # a process decodes one video at a time
    assert pipeline.decoder_counts(4, videos=100) == (4, 4)  # as many as asked, fixed
    assert pipeline.decoder_counts(4, videos=2) == (2, 2)


def test_embed_videos_matches_the_clean_cached_view(dataset):
    config = config_for(dataset)
    run_extraction(config)
    cached, _ = read_features(config.out)
    with FeatureCache(config.out) as cache:
        provenance = cache.provenance
    results = embed_videos([str(dataset.parent / "videos/d.mp4"), str(dataset.parent / "videos/corrupt.mp4")], provenance)
    assert results[0].error is None and results[1].features is None and results[1].error
    np.testing.assert_allclose(results[0].features, cached["videos/d.mp4"][0], rtol=2e-2, atol=1e-7)


def test_cli_prints_one_line_errors_without_traceback(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\na.mp4,x,bogus\n")  # a CSV error, found before anything is written
    result = subprocess.run(
        [sys.executable, "-m", "framecache", "extract", "--csv", str(csv), "--out", str(tmp_path / "f.h5"), "--weights", "none", "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "f.h5").exists()


PROGRESS = re.compile(r"^(\d+)/(\d+) videos \((\d+) %\), (\d+) failed, [\d.]+ frames/s(, ~\d+ (s|min) left)?$", re.M)


def test_progress_lines_when_stderr_is_not_a_terminal(dataset, monkeypatch, capsys):
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 1e9)  # only the lines every tenth of the videos
    run_extraction(config_for(dataset, quiet=False))
    lines = PROGRESS.findall(capsys.readouterr().err)
    # 7 videos: each one is another tenth; the 3 bad ones fail, in some order
    assert [int(done) for done, *_ in lines] == list(range(1, 8))
    assert lines[-1][:4] == ("7", "7", "100", "3") and not lines[-1][4]  # nothing left: no estimate
    assert all(total == "7" and int(percent) == 100 * int(done) // 7 for done, total, percent, *_ in lines)
    assert all(left for done, *_, left, _ in lines[:-1])  # an estimate while videos remain

    run_extraction(config_for(dataset, quiet=True, out=str(dataset.parent / "quiet.h5")))
    assert not PROGRESS.findall(capsys.readouterr().err)


def test_progress_lines_come_every_interval_and_every_tenth():
    now = [0.0]
    out = io.StringIO()  # not a terminal
    reporter = progress.Progress(total=1000, skipped=400, quiet=False, started=0.0, stream=out, clock=lambda: now[0])
    for video in range(1, 12):  # 11 videos at 1 s each: 41 % reached at the 10th
        now[0] += 1.0
        reporter.update(400 + video, 0, 150 * video)
    now[0] = 19.5
    reporter.update(411, 0, 1650)  # 9.5 s since the last line, at 10 s: nothing
    now[0] = 20.5
    reporter.update(411, 0, 1650)  # 10.5 s: a line although no video finished
    assert out.getvalue().splitlines() == [
        "410/1000 videos (41 %), 0 failed, 150 frames/s, ~10 min left",
        "411/1000 videos (41 %), 0 failed, 80 frames/s, ~18 min left",
    ]
    reporter.update(1000, 0, 1650)  # past another tenth, at once
    assert out.getvalue().splitlines()[-1].startswith("1000/1000 videos (100 %), 0 failed")


def test_no_video_read_is_an_error_naming_the_csv_folder(dataset, tmp_path):
    """A CSV moved away from its videos: every relative path misses."""
    moved = tmp_path / "elsewhere" / "labels.csv"
    moved.parent.mkdir()
    shutil.copy(dataset, moved)
    config = config_for(moved)
    with pytest.raises(FramecacheError) as error:
        run_extraction(config)
    message = str(error.value)
    assert "none of the 7 video(s)" in message and "(7 of 7): file not found" in message
    assert f"resolve against the CSV's own folder, {moved.parent.resolve()}" in message
    assert str(moved.parent.resolve() / "videos" / "a.mp4") in message  # where it looked, for one of them
    with FeatureCache(config.out) as cache:  # the failures are still recorded
        assert len(cache.failures) == 7 and cache.videos == []


def test_no_video_read_names_the_most_common_reason(dataset, tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("path,label\nvideos/corrupt.mp4,a\nvideos/empty.mp4,a\nvideos/empty2.mp4,b\nvideos/empty3.mp4,b\n")
    for name in ("empty2.mp4", "empty3.mp4"):
        (tmp_path / "videos" / name).write_bytes(b"")
    with spelled(MakeSpelling()), pytest.raises(  # as `make features` words it
        FramecacheError, match=r"none of the 4 video\(s\).*\(3 of 4\): file is empty \(0 bytes\)\. .*`make info FEATURES=.*bad.h5`"
    ) as error:
        run_extraction(config_for(csv, out=str(tmp_path / "bad.h5")))
    assert "CSV's own folder" not in str(error.value)


def test_a_rerun_brings_labels_groups_and_splits_up_to_date_with_the_csv(dataset):
    """The CSV is the source of truth: a relabelled clip's cache entry follows it, its features kept, nothing embedded."""
    run_extraction(config_for(dataset))
    before, _ = read_features(dataset.parent / "features.h5")
    dataset.write_text(dataset.read_text().replace("videos/a.mp4,squat,s1", "videos/a.mp4,jump,s9")
                       .replace("videos/d.mp4,jump,s2", "videos/d.mp4,jump,s3"))  # fmt: skip
    summary = run_extraction(config_for(dataset))
    assert (summary.ok, summary.skipped, summary.relabeled, summary.frames) == (0, 4, 2, 0)
    assert "4 already cached (2 of them relabelled from the CSV)" in summary.line()
    with FeatureCache(dataset.parent / "features.h5") as cache:
        videos = {video.path: video for video in cache.videos}
        assert (videos["videos/a.mp4"].label, videos["videos/a.mp4"].group) == ("jump", "s9")
        assert videos["videos/d.mp4"].group == "s3" and videos["videos/b.avi"].label == "squat"
        assert len(cache.videos) == 4
        np.testing.assert_array_equal(cache.features(videos["videos/a.mp4"].key), before["videos/a.mp4"])
    again = run_extraction(config_for(dataset))
    assert again.relabeled == 0  # up to date now


def test_info_says_where_the_cache_and_the_csv_disagree(dataset):
    out = dataset.parent / "features.h5"
    run_extraction(config_for(dataset))
    info = [sys.executable, "-m", "framecache", "info", str(out), "--csv", str(dataset)]
    agrees = subprocess.run(info, capture_output=True, text=True)
    assert agrees.returncode == 0 and "agrees on every cached video's label, group and split; 3 row(s) not cached yet" in agrees.stdout
    dataset.write_text(dataset.read_text().replace("videos/a.mp4,squat,s1", "videos/a.mp4,jump,s1") + "videos/new.mp4,jump,s4\n")
    differs = subprocess.run(info, capture_output=True, text=True)
    assert "differs on 1 cached video(s), e.g. videos/a.mp4: label 'squat' here, 'jump' in the CSV" in differs.stdout
    assert "4 row(s) not cached yet, 0 cached video(s) it does not list" in differs.stdout
