"""Tests for the demo data generator (data.synthetic, data.figure) and its CLI (data.make_demo)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import cv2
import decord
import numpy as np
import pytest

from framecache.common.errors import FramecacheError
from framecache.data.figure import joint_positions, pose_at, render_frames
from framecache.data.make_demo import build_demo, main
from framecache.data.synthetic import (
    CLASSES,
    DEFAULT_CLASSES,
    EQUIPMENT_CLASSES,
    MOTION_CLASSES,
    PRESETS,
    SyntheticSettings,
    dataset_specs,
    sample_video_spec,
    write_video,
)

# Small and short, so that generating a whole dataset takes about a second.
TINY = SyntheticSettings(
    classes=CLASSES,
    per_class=3,
    subjects=3,
    min_seconds=0.5,
    max_seconds=0.8,
    fps_choices=(10.0, 15.0),
    sizes=((96, 72), (81, 61)),
)


def read_all_frames(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def loo_nearest_centroid_accuracy(features: list[np.ndarray], labels: list[str]) -> float:
    """Leave-one-out accuracy of a nearest-class-mean classifier."""
    features_array, labels_array = np.asarray(features, float), np.asarray(labels)
    correct = 0
    for i in range(len(features_array)):
        others = np.arange(len(features_array)) != i
        centroids = {c: features_array[others & (labels_array == c)].mean(0) for c in set(labels)}
        predicted = min(centroids, key=lambda c: np.linalg.norm(features_array[i] - centroids[c]))
        correct += predicted == labels_array[i]
    return correct / len(features_array)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    build_demo(out, TINY)
    return out


# --- write_video ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "decoded_size"),
    [
        ("clip.mp4", None, (32, 46)),
        ("clip.mkv", None, (32, 46)),
        ("clip.avi", None, (33, 47)),
        ("clip.avi", "mjpeg", (33, 47)),
    ],
)
def test_write_video_odd_size_decodes_with_decord(
    tmp_path: Path, name: str, codec: str | None, decoded_size: tuple[int, int]
) -> None:
    frames = np.zeros((5, 33, 47, 3), np.uint8)
    frames[:, :, :, 1] = np.linspace(0, 200, 47, dtype=np.uint8)  # green gradient
    frames[:, 8:24, 10:30, 0] = 255  # a red block
    path = tmp_path / name
    write_video(path, frames, fps=15, codec=codec)
    decoded = read_all_frames(path)
    assert decoded.shape == (5, *decoded_size, 3)  # H.264 crops odd sizes by one pixel
    error = np.abs(decoded.astype(int) - frames[:, : decoded_size[0], : decoded_size[1]]).mean()
    assert error < 8, f"decoded frames differ from the written ones (mean abs error {error:.1f})"
    block = decoded[:, 12:20, 14:26].reshape(-1, 3).mean(0)
    assert block[0] > 200 and block[2] < 60, f"channels swapped? red block decodes as {block}"


def test_write_video_keeps_frame_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, np.zeros((6, 32, 32, 3), np.uint8), fps=24)
    reader = decord.VideoReader(str(path))
    assert len(reader) == 6 and reader.get_avg_fps() == pytest.approx(24)


def test_write_video_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 16, 16, 3), np.float32), fps=10)
    with pytest.raises(ValueError, match="non-empty"):
        write_video(tmp_path / "a.mp4", np.zeros((0, 16, 16, 3), np.uint8), fps=10)
    with pytest.raises(ValueError, match="codec"):
        write_video(tmp_path / "a.gif", np.zeros((2, 16, 16, 3), np.uint8), fps=10)


# --- determinism and the CSV ----------------------------------------------------------------


def test_same_seed_gives_identical_files(tiny_demo: Path, tmp_path: Path) -> None:
    build_demo(tmp_path, TINY)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tiny_demo) for p in tiny_demo.rglob("*") if p.is_file())
    for relative in written:
        assert (tmp_path / relative).read_bytes() == (tiny_demo / relative).read_bytes(), relative


def test_seed_changes_the_videos() -> None:
    spec = sample_video_spec("squat", 0, TINY)
    other = sample_video_spec("squat", 0, dataclasses.replace(TINY, seed=1))
    assert np.array_equal(render_frames(spec), render_frames(spec))
    assert spec != other


def test_labels_csv_has_every_subject_in_every_class(tiny_demo: Path) -> None:
    with open(tiny_demo / "labels.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["path", "label", "group"]
    assert len(rows) == len(CLASSES) * TINY.per_class
    assert {row["label"] for row in rows} == set(CLASSES)
    for label in CLASSES:
        assert {row["group"] for row in rows if row["label"] == label} == {str(g) for g in range(TINY.subjects)}
    specs = {f"{spec.label}_{spec.index:03d}": spec for spec in dataset_specs(TINY)}
    for row in rows:
        path = tiny_demo / row["path"]  # relative to the CSV's folder
        assert path.is_file() and f"/{row['label']}/" in row["path"]
    for row in rows[:: len(CLASSES)]:
        spec = specs[Path(row["path"]).stem]
        reader = decord.VideoReader(str(tiny_demo / row["path"]))
        assert len(reader) == spec.n_frames
        assert reader[0].shape == (spec.height // 2 * 2, spec.width // 2 * 2, 3)


def test_rerun_skips_and_new_settings_regenerate(tiny_demo: Path, tmp_path: Path) -> None:
    labels_mtime = (tiny_demo / "labels.csv").stat().st_mtime_ns
    result = build_demo(tiny_demo, TINY)
    assert result.skipped and (tiny_demo / "labels.csv").stat().st_mtime_ns == labels_mtime
    assert "up to date" in result.summary()

    out = tmp_path / "demo"
    build_demo(out, TINY)
    (out / "features.h5").write_bytes(b"extracted from the old videos")
    smaller = dataclasses.replace(TINY, classes=("squat", "arm_raise"), per_class=2, subjects=1)
    result = build_demo(out, smaller)
    assert not result.skipped and result.videos == 4
    assert len(list((out / "videos").rglob("*.mp4"))) == 4  # old videos are gone
    assert not (out / "features.h5").exists()  # and so is anything made from them
    (out / "videos" / "squat" / "squat_000.mp4").unlink()
    assert not build_demo(out, smaller).skipped  # a missing video is regenerated


def test_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FramecacheError, match="not made by make_demo"):
        build_demo(tmp_path, TINY)


def test_cli_prints_summary_and_reports_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--out",
        str(tmp_path / "demo"),
        "--per-class",
        "2",
        "--subjects",
        "2",
        "--classes",
        "squat",
        "side_bend",
        "--min-seconds",
        "0.4",
        "--max-seconds",
        "0.5",
        "--fps",
        "10",
    ]
    assert main(argv) == 0
    assert "4 videos" in capsys.readouterr().out
    assert main(["--out", str(tmp_path / "bad"), "--per-class", "2", "--subjects", "3"]) == 2
    assert "every subject must appear in every class" in capsys.readouterr().err


# --- a single frame must not give the class away; the motion must ---------------------------


def test_first_pose_is_the_same_for_every_class() -> None:
    for index in range(6):
        spec = sample_video_spec("squat", index, TINY)
        first = [
            joint_positions(spec.subject, pose_at(dataclasses.replace(spec, label=label), 0.0)) for label in MOTION_CLASSES
        ]
        for joints in first[1:]:
            for name, point in joints.items():
                np.testing.assert_allclose(point, first[0][name], atol=1e-12, err_msg=name)


def test_first_frame_does_not_reveal_the_class() -> None:
    specs = dataset_specs(SyntheticSettings(per_class=24))
    tiny_first_frames = [
        cv2.resize(render_frames(spec, 1)[0], (8, 6), interpolation=cv2.INTER_AREA).ravel() for spec in specs
    ]
    accuracy = loo_nearest_centroid_accuracy(tiny_first_frames, [spec.label for spec in specs])
    assert accuracy < 0.4, f"frame 0 predicts the class with accuracy {accuracy:.2f} (chance is 0.25)"


def test_motion_energy_differs_between_classes() -> None:
    settings = SyntheticSettings(
        per_class=6, sizes=((160, 120),), fps_choices=(15.0,), min_seconds=2.0, max_seconds=2.5
    )
    motion_maps, labels = [], []
    for spec in dataset_specs(settings):
        still_camera = dataclasses.replace(spec, jitter_px=0.0, noise_sigma=0.0, flicker=0.0)
        grey = render_frames(still_camera).astype(np.float32).mean(-1)
        energy = np.abs(np.diff(grey, axis=0)).mean(0)
        assert energy.sum() > 0, f"{spec.label} {spec.index} does not move"
        motion_maps.append(cv2.resize(energy / energy.sum(), (8, 8), interpolation=cv2.INTER_AREA).ravel())
        labels.append(spec.label)
    accuracy = loo_nearest_centroid_accuracy(motion_maps, labels)
    assert accuracy > 0.6, f"where the pixels move predicts the class with accuracy {accuracy:.2f} only"


def test_each_class_moves_its_own_joints() -> None:
    expected = {
        "squat": {"hips_drop"},
        "jumping_jack": {"hands_over_head", "feet_apart"},
        "arm_raise": {"hands_over_head"},
        "side_bend": {"hands_over_head", "head_sideways"},
        "high_knees": {"foot_lifted"},
    }
    for label in MOTION_CLASSES:
        spec = dataclasses.replace(sample_video_spec(label, 0, TINY), amplitude=1.0)
        cycle = [joint_positions(spec.subject, pose_at(spec, t)) for t in np.linspace(0, spec.period_s, 60)]

        def spread(values: list[float]) -> float:
            return max(values) - min(values)

        moves = {
            "hips_drop": spread([j["pelvis"][1] for j in cycle]) > 0.12,
            "hands_over_head": any(min(j["hand0"][1], j["hand1"][1]) < j["head"][1] for j in cycle),
            "feet_apart": spread([j["ankle1"][0] - j["ankle0"][0] for j in cycle]) > 0.08,
            "head_sideways": spread([j["head"][0] - j["pelvis"][0] for j in cycle]) > 0.1,
            "foot_lifted": max(abs(j["foot0"][1] - j["foot1"][1]) for j in cycle) > 0.1,
        }
        assert {name for name, moved in moves.items() if moved} == expected[label], label


def test_defaults_are_a_small_demo() -> None:
    specs = dataset_specs(SyntheticSettings())
    assert {spec.label for spec in specs} == set(DEFAULT_CLASSES)
    assert sum(spec.n_frames for spec in specs) <= 2000
    demo = dataset_specs(SyntheticSettings(classes=PRESETS["both"]))  # make demo's data: motion and equipment classes
    assert {spec.label for spec in demo} == set(DEFAULT_CLASSES) | set(EQUIPMENT_CLASSES)
    assert sum(spec.n_frames for spec in demo) <= 4000


# --- equipment classes: the equipment tells the class, the motion does not -------------------


def test_equipment_classes_do_any_exercise() -> None:
    settings = SyntheticSettings(classes=EQUIPMENT_CLASSES, per_class=12)
    exercises = {label: [spec.exercise for spec in dataset_specs(settings) if spec.label == label] for label in EQUIPMENT_CLASSES}
    for label, done in exercises.items():
        assert set(done) <= set(DEFAULT_CLASSES) and len(set(done)) >= 3, (label, done)
    motion = sample_video_spec("squat", 0, TINY)
    assert motion.exercise is None and motion.motion == "squat"


def test_the_equipment_is_all_that_differs_and_it_stays_put(monkeypatch: pytest.MonkeyPatch) -> None:
    from framecache.data import figure

    spec = dataclasses.replace(sample_video_spec("box", 1, TINY), jitter_px=0.0, noise_sigma=0.0, flicker=0.0)
    with_box = render_frames(spec).astype(int)
    monkeypatch.setattr(figure, "draw_equipment", lambda *arguments: None)
    plain = render_frames(spec).astype(int)
    # the same background, figure and motion: only the box's pixels differ (the figure may pass in front of it)
    changed = np.abs(with_box - plain).sum(-1) > 0
    assert changed.any(axis=(1, 2)).all(), "the box is in every frame"
    assert changed.mean() < 0.1, "nothing but the box differs"
    assert (changed[0] | changed[-1]).sum() <= 1.2 * changed[0].sum(), "the box does not move"


def test_make_demo_presets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--per-class", "1", "--subjects", "1", "--min-seconds", "0.3", "--max-seconds", "0.3", "--fps", "10"]
    assert main(["--out", str(tmp_path / "appearance"), "--preset", "appearance", *common]) == 0
    with open(tmp_path / "appearance" / "labels.csv", newline="") as handle:
        assert sorted(row["label"] for row in csv.DictReader(handle)) == sorted(EQUIPMENT_CLASSES)
    assert main(["--out", str(tmp_path / "both"), *common]) == 0
    assert "8 videos (8 classes" in capsys.readouterr().out, "make demo's default: motion and equipment classes"
