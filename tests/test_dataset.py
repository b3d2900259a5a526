"""The CSV contract: loading, validation with clear errors, label encoding, oversampling."""

import logging
import os

import numpy as np
import pytest

from framecache.common.dataset import encode_labels, load_dataset, oversample_indices
from framecache.common.errors import FramecacheError


def write_csv(tmp_path, text, name="labels.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_loads_and_resolves_relative_paths(tmp_path):
    path = write_csv(tmp_path, "path,label,group\nvideos/a.mp4,squat,s1\n/abs/b.mp4,squat,s2\nc.mp4,jump,s1\nd.mp4,jump,\n")
    table = load_dataset(path)
    assert list(table["path"]) == ["videos/a.mp4", "/abs/b.mp4", "c.mp4", "d.mp4"]
    assert table["abs_path"][0] == str(tmp_path.resolve() / "videos/a.mp4")
    assert table["abs_path"][1] == "/abs/b.mp4"
    assert table["group"].tolist() == ["s1", "s2", "s1", None]
    assert table["split"].isna().all()


def test_optional_split_column_and_case(tmp_path):
    path = write_csv(tmp_path, "Path,Label,Split\na.mp4,x,Train\nb.mp4,x,test\nc.mp4,y,val\nd.mp4,y,\n")
    assert load_dataset(path)["split"].tolist() == ["train", "test", "val", None]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("path,label\n", "no rows"),
        ("path,group\na.mp4,s1\n", "lacks the column(s) label"),
        ("file,label\na.mp4,x\n", "lacks the column(s) path"),
        ("path,label\na.mp4,x\nb.mp4,\nc.mp4,x\n", "blank label on line(s) 3"),
        ("path,label\na.mp4,x\nb.mp4,NaN\nc.mp4,x\n", "blank label"),
        ("path,label\n,x\nb.mp4,x\n", "blank path on line(s) 2"),
        ("path,label,split\na.mp4,x,train\nb.mp4,x,holdout\n", "unknown split value(s) 'holdout'"),
        ("path,label\na.mp4,x\na.mp4,y\nb.mp4,x\nc.mp4,y\n", "different labels"),
        ("path,label\na.mp4,x\nb.mp4,x\nc.mp4,lonely\n", "'lonely' (1)"),
    ],
)
def test_bad_csvs_raise_one_clear_error(tmp_path, text, message):
    path = write_csv(tmp_path, text)
    with pytest.raises(FramecacheError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(path)


def test_missing_and_non_utf8_csv(tmp_path):
    with pytest.raises(FramecacheError, match="not found"):
        load_dataset(tmp_path / "nope.csv")
    path = write_csv(tmp_path, "path,label\nvidéo.mp4,x\nb.mp4,x\n", encoding="latin-1")
    with pytest.raises(FramecacheError, match="not UTF-8"):
        load_dataset(path)


def test_duplicate_paths_with_same_label_warn_and_keep_one(tmp_path, caplog):
    path = write_csv(tmp_path, "path,label\na.mp4,x\na.mp4,x\nb.mp4,x\n")
    with caplog.at_level(logging.WARNING):
        table = load_dataset(path)
    assert table["path"].tolist() == ["a.mp4", "b.mp4"]
    assert "repeats 1 path" in caplog.text


def test_labels_differing_only_in_case_are_refused_naming_every_spelling(tmp_path):
    rows = ["a.mp4,Jack", "b.mp4,jack ", "c.mp4, jack", "d.mp4,Jack", "e.mp4,JACK", "f.mp4,squat", "g.mp4,squat"]
    path = write_csv(tmp_path, "path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(FramecacheError) as error:
        load_dataset(path)
    message = str(error.value)
    # surrounding spaces are stripped: 'jack ' and ' jack' are one spelling, 'jack', of two videos
    assert "'JACK' (1 video, e.g. line 6) vs 'Jack' (2 videos, e.g. line 2) vs 'jack' (2 videos, e.g. line 3)" in message
    assert "fix the CSV" in message and "squat" not in message


def test_labels_differing_only_in_inner_spaces_are_refused_and_surrounding_ones_merged(tmp_path):
    path = write_csv(tmp_path, "path,label\na.mp4,side lunge\nb.mp4,side  lunge\nc.mp4,Side Lunge\nd.mp4,x\n")
    with pytest.raises(FramecacheError, match=r"'Side Lunge' \(1 video, e.g. line 4\) vs 'side  lunge' \(1 video"):
        load_dataset(path)
    path = write_csv(tmp_path, "path,label\na.mp4,jack \nb.mp4, jack\nc.mp4,squat\nd.mp4,squat\n")
    assert load_dataset(path)["label"].tolist() == ["jack", "jack", "squat", "squat"]


def test_encode_labels_round_trip_and_fixed_classes():
    codes, classes = encode_labels(["squat", "jump", "squat"])
    assert classes == ["jump", "squat"]
    assert codes.tolist() == [1, 0, 1]
    codes, _ = encode_labels(["jump"], classes=["squat", "jump"])
    assert codes.tolist() == [1]
    with pytest.raises(FramecacheError, match="not among the known classes"):
        encode_labels(["wave"], classes=["squat", "jump"])


def test_oversampling_balances_classes_deterministically():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 1)
    indices = oversample_indices(labels, seed=3)
    counts = np.bincount(labels[indices])
    assert counts.tolist() == [6, 6, 6]
    assert set(np.flatnonzero(labels == 0)) <= set(indices.tolist())  # nothing dropped
    assert np.array_equal(indices, oversample_indices(labels, seed=3))
    assert not np.array_equal(indices, oversample_indices(labels, seed=4))


@pytest.mark.parametrize("cell, shown", [("a\x00b.mp4", r"'a\\x00b.mp4'"), ("squat\x07", r"'squat\\x07'")])
def test_a_control_character_in_a_cell_is_refused_naming_the_line(tmp_path, cell, shown):
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\nv0.mp4,squat\nv1.mp4,squat\n{cell},squat\n", encoding="utf-8")
    with pytest.raises(FramecacheError, match=rf"control character in its (path|label) column on line 4 \({shown}"):
        load_dataset(csv)


def test_stage_one_takes_a_class_of_one_video(tmp_path):
    from framecache.common.config import ExtractConfig
    from framecache.extract.pipeline import plan_run

    (tmp_path / "labels.csv").write_text("path,label\nnew-recording.mp4,fall\n")
    plan = plan_run(ExtractConfig(csv=str(tmp_path / "labels.csv"), out=str(tmp_path / "f.h5"), weights="none").validate())
    assert list(plan.dataset["label"]) == ["fall"]
    with pytest.raises(FramecacheError, match="fewer than 2 videos"):  # training's own reading keeps its check
        load_dataset(tmp_path / "labels.csv")


def test_a_csv_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "labels.csv")
    with pytest.raises(FramecacheError, match="labels.csv is not a regular file"):
        load_dataset(tmp_path / "labels.csv")
