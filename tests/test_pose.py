"""The pose estimator (BlazePose through OpenVINO): model files, detection, tracking, upside-down people, no person,
and the per-frame features. Needs the team's copy of MediaPipe's models (../shared/weights/pose); skips without it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from framecache.common.errors import FramecacheError
from framecache.data.footage import person_photo
from framecache.extract.pose.detector import Crop
from framecache.extract.pose.features import ANGLES, FEATURE_DIM, FEATURE_NAMES, pose_features
from framecache.extract.pose.models import CompiledModel, read_model_files
from framecache.extract.pose.tracker import FramePose, PoseEstimator

POSE_MODELS = Path(__file__).resolve().parents[2] / "shared/weights/pose"
needs_models = pytest.mark.skipif(not (POSE_MODELS / "pose_detection.tflite").is_file(),
                                  reason=f"MediaPipe's BlazePose models are not in {POSE_MODELS}")  # fmt: skip
NOSE = 0


@pytest.fixture(scope="module")
def estimator() -> PoseEstimator:
    if not (POSE_MODELS / "pose_detection.tflite").is_file():
        pytest.skip(f"MediaPipe's BlazePose models are not in {POSE_MODELS}")
    return PoseEstimator(read_model_files(POSE_MODELS, "full"), threads=1)


def test_a_crop_maps_its_corners_and_turns_with_the_body():
    crop = Crop.from_points(np.array([100.0, 200.0]), np.array([100.0, 120.0]))  # upright: "up" is -y
    assert crop.side == pytest.approx(200.0)  # 2 x 80 x 1.25
    to_frame = crop.to_frame(256)
    assert to_frame @ np.array([0, 0, 1.0]) == pytest.approx([0.0, 100.0])  # top-left corner
    assert to_frame @ np.array([256, 256, 1.0]) == pytest.approx([200.0, 300.0])
    upside_down = Crop.from_points(np.array([100.0, 200.0]), np.array([100.0, 280.0])).to_frame(256)
    assert upside_down @ np.array([0, 0, 1.0]) == pytest.approx([200.0, 300.0])  # turned half a turn
    assert Crop.from_points(np.array([5.0, 5.0]), np.array([5.0, 5.0])) is None  # no scale: no crop


def test_features_of_a_known_pose():
    points = np.zeros((33, 3), np.float32)
    points[[11, 12], :2] = [[90, 100], [110, 100]]  # shoulders, 100 px above the hips
    points[[23, 24], :2] = [[90, 200], [110, 200]]
    points[[25, 26], :2] = [[90, 300], [110, 300]]  # knees straight below
    points[[27, 28], :2] = [[90, 400], [110, 400]]
    pose = FramePose(points, np.ones(33, np.float32), np.ones(33, np.float32), 0.9)
    rows = pose_features([pose, FramePose.absent()], frame_side=500)
    assert rows.shape == (2, FEATURE_DIM) == (2, len(FEATURE_NAMES))
    named = dict(zip(FEATURE_NAMES, rows[0]))
    assert named["angle_left_knee"] == pytest.approx(1.0) and named["angle_left_hip"] == pytest.approx(1.0)  # straight
    assert (named["trunk_x"], named["trunk_y"]) == pytest.approx((0.0, -1.0))  # hips to shoulders: up
    assert named["torso_length"] == pytest.approx(0.2) and named["hips_x"] == pytest.approx(0.2)
    assert named["body_y11"] == pytest.approx(-1.0) and named["frame_y27"] == pytest.approx(0.8)
    assert len(ANGLES) == 8 and not rows[1].any()  # no person: zeros


def test_model_files_from_a_folder_or_a_tasks_bundle(tmp_path):
    if not (POSE_MODELS / "pose_detection.tflite").is_file():
        pytest.skip(f"MediaPipe's BlazePose models are not in {POSE_MODELS}")
    from_folder = read_model_files(POSE_MODELS, "full")
    bundle = tmp_path / "pose_landmarker_full.task"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.write(POSE_MODELS / "pose_detection.tflite", "pose_detector.tflite")
        archive.write(POSE_MODELS / "pose_landmark_full.tflite", "pose_landmarks_detector.tflite")
    assert read_model_files(bundle).sha256 == from_folder.sha256
    assert read_model_files(POSE_MODELS, "lite").sha256 != from_folder.sha256
    with pytest.raises(FramecacheError, match="lacks pose_landmark_heavy.tflite or pose_landmarks_detector.tflite"):
        read_model_files(POSE_MODELS, "heavy")
    (tmp_path / "other.task").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    with pytest.raises(FramecacheError, match="not a MediaPipe pose bundle"):
        read_model_files(tmp_path / "other.task")


@needs_models
def test_a_person_is_found_and_tracked(estimator):
    photo = person_photo()
    poses, crop = estimator.track([photo] * 3)
    assert crop is not None and all(pose.score > 0.9 for pose in poses)
    nose = poses[-1].landmarks[NOSE, :2]
    assert 240 < nose[0] < 300 and 220 < nose[1] < 270  # the nose of the 512x600 photo
    shoulders = poses[-1].landmarks[[11, 12], 1]
    assert (shoulders > nose[1]).all()  # below the nose: read upright


@needs_models
def test_an_upside_down_person_gives_the_same_landmarks_turned(estimator):
    photo = person_photo()
    height, width = photo.shape[:2]
    upright, _ = estimator.track([photo] * 2)
    turned, _ = estimator.track([np.ascontiguousarray(photo[::-1, ::-1])] * 2)
    assert turned[-1].score > 0.9
    back = np.array([width, height]) - turned[-1].landmarks[:, :2]  # turned back half a turn
    visible = upright[-1].visibility > 0.5
    assert np.median(np.hypot(*(back - upright[-1].landmarks[:, :2])[visible].T)) < 25  # pixels, in a 512x600 photo


@needs_models
def test_a_mirrored_person_gives_the_mirrored_body_with_left_and_right_traded(estimator):
    """What the pose preset's flip does to a view: the landmarks mirror back onto the clean ones once left and right
    trade places (BlazePose labels a body's sides as it sees them)."""
    photo = person_photo()
    width = photo.shape[1]
    clean, _ = estimator.track([photo] * 2)
    mirrored, _ = estimator.track([np.ascontiguousarray(photo[:, ::-1])] * 2)
    back = mirrored[-1].landmarks[:, :2] * [-1, 1] + [width, 0]
    traded = [0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9] + [side for left in range(11, 33, 2) for side in (left + 1, left)]
    visible = clean[-1].visibility > 0.5
    distance = np.median(np.hypot(*(back[traded] - clean[-1].landmarks[:, :2])[visible].T))
    untraded = np.median(np.hypot(*(back - clean[-1].landmarks[:, :2])[visible].T))
    assert distance < 60 < untraded, (distance, untraded)  # pixels, in a 512x600 photo


@needs_models
def test_no_person_gives_absent_frames(estimator):
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    poses, crop = estimator.track([noise, np.zeros((240, 320, 3), np.uint8)])
    assert crop is None and [pose.score for pose in poses] == [0.0, 0.0]
    assert np.isnan(poses[0].landmarks).all()


# ------------------------------------------------------------------ the pose backbone in stage one


@pytest.fixture
def people_csv(tmp_path) -> Path:
    from framecache.data.footage import moving_person
    from framecache.data.synthetic import write_video

    write_video(tmp_path / "person.mp4", moving_person(16), 10)
    write_video(tmp_path / "person-turned.mp4", moving_person(16, turned=True), 10)
    for name in ("empty-room.mp4", "empty-corridor.mp4"):
        write_video(tmp_path / name, np.full((10, 360, 480, 3), 90, np.uint8), 10)
    (tmp_path / "labels.csv").write_text("path,label\nperson.mp4,a\nperson-turned.mp4,a\nempty-room.mp4,b\nempty-corridor.mp4,b\n")
    return tmp_path / "labels.csv"


def pose_config(csv: Path, **overrides):
    from framecache.common.config import ExtractConfig

    values = dict(csv=str(csv), out=str(csv.parent / "pose.h5"), backbone="pose", weights=str(POSE_MODELS), views=2,
                  augment="light", batch_size=8, chunk_frames=4, quiet=True)  # fmt: skip
    return ExtractConfig(**{**values, **overrides})


@needs_models
def test_pose_extraction_tracks_people_fails_empty_videos_and_resumes(people_csv):
    from conftest import read_features

    from framecache.extract.pipeline import run_extraction
    from framecache.extract.pose.backbone import POSE_FRAME_SIZE

    summary = run_extraction(pose_config(people_csv))
    assert (summary.ok, summary.failed) == (2, 2)
    features, info = read_features(people_csv.parent / "pose.h5")
    assert {failure["path"]: failure["reason"][:26] for failure in info["failures"]} == {
        "empty-room.mp4": "no person found in any of ", "empty-corridor.mp4": "no person found in any of "}  # fmt: skip
    assert info["provenance"]["input_size"] == POSE_FRAME_SIZE and "black bars" in info["provenance"]["resize"]
    score, nose = FEATURE_NAMES.index("score"), [FEATURE_NAMES.index("frame_x0"), FEATURE_NAMES.index("frame_y0")]
    upright, turned = features["person.mp4"].astype(np.float32), features["person-turned.mp4"].astype(np.float32)
    assert (upright[:, :, score] > 0.5).all() and (turned[:, :, score] > 0.5).all()  # every frame, both views
    assert np.abs((1 - turned[0][:, nose]) - upright[0][:, nose]).mean() < 0.03  # the same nose, turned back
    again = run_extraction(pose_config(people_csv))  # resumes: only the failures are tried again
    assert (again.ok, again.failed, again.skipped) == (0, 2, 2)


@needs_models
def test_predict_embeds_a_video_as_the_pose_cache_holds_it(people_csv):
    from framecache.common.cache import FeatureCache
    from framecache.extract.embed import embed_videos
    from framecache.extract.pipeline import run_extraction

    run_extraction(pose_config(people_csv, views=1, augment="none"))
    with FeatureCache(people_csv.parent / "pose.h5") as cache:
        video = next(video for video in cache.videos if video.path == "person.mp4")
        cached, provenance = cache.features(video.key, view=0).astype(np.float32), cache.provenance
    person, empty = embed_videos([str(people_csv.parent / "person.mp4"), str(people_csv.parent / "empty-room.mp4")], provenance)
    np.testing.assert_allclose(person.features, cached, atol=2e-2)
    assert person.error is None and empty.features is None and empty.error.startswith("no person found")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(weights="none"), "has no random weights"),
        (dict(engine="tensorflow"), "runs on OpenVINO"),
        (dict(precision="bf16"), "runs in f32"),
        (dict(weights="/nowhere/pose"), "pose models not found at /nowhere/pose"),
    ],
)
def test_pose_settings_it_cannot_run_are_refused(people_csv, overrides, message):
    from framecache.extract.pipeline import run_extraction

    with pytest.raises(FramecacheError, match=message):
        run_extraction(pose_config(people_csv, **overrides))


def test_the_default_pose_models_come_from_the_cache_folder_or_say_where_to_put_them(tmp_path, monkeypatch):
    from framecache.extract.pose import backbone

    monkeypatch.setenv("FRAMECACHE_CACHE", str(tmp_path))
    monkeypatch.setattr(backbone.urllib.request, "urlopen", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(FramecacheError, match=rf"pose_landmarker_full.task is not in {tmp_path}/pose and downloading it .* failed \(offline\)"):
        backbone.resolve_pose_weights("pose", "mediapipe")
    if not (POSE_MODELS / "pose_detection.tflite").is_file():
        pytest.skip(f"MediaPipe's BlazePose models are not in {POSE_MODELS}")
    (tmp_path / "pose").mkdir(exist_ok=True)
    for name in ("pose_detection.tflite", "pose_landmark_full.tflite"):
        (tmp_path / "pose" / name).write_bytes((POSE_MODELS / name).read_bytes())
    description, models = backbone.resolve_pose_weights("pose", "imagenet")  # the option's default means MediaPipe's
    assert description.weights == "mediapipe" and models == tmp_path / "pose"
    assert description.weights_sha256 == read_model_files(POSE_MODELS).sha256


@needs_models
def test_ray_blocks_make_the_pose_cache_the_pipeline_makes(people_csv):
    """The Ray actor's code, run here (a pose tracker per stream, blocks reusing row numbers): bit for bit."""
    from conftest import read_features

    from framecache.common.cache import CacheWriter
    from framecache.extract.blocks import BlockExtractor, cut_blocks
    from framecache.extract.pipeline import plan_run, run_extraction

    run_extraction(pose_config(people_csv))
    config = pose_config(people_csv, out=str(people_csv.parent / "blocks.h5"))
    plan = plan_run(config.validate())
    CacheWriter(config.out, plan.provenance).close()
    extractor = BlockExtractor(config, plan, threads=1)
    try:
        results = [extractor(block) for block in cut_blocks(plan.dataset, actors=2, block_videos=1)]
    finally:
        extractor.close()
    assert sum(result.ok for result in results) == 2 and sum(result.failed for result in results) == 2
    blocks, _ = read_features(config.out)
    reference, _ = read_features(people_csv.parent / "pose.h5")
    assert sorted(blocks) == sorted(reference) == ["person-turned.mp4", "person.mp4"]
    for path in reference:
        np.testing.assert_array_equal(blocks[path], reference[path])


def test_fetching_the_models_says_why_it_cannot_and_keeps_what_is_there(tmp_path, monkeypatch):
    import subprocess as subprocesses

    from framecache.extract.pose import fetch

    failed = subprocesses.CompletedProcess([], 1, "", "ERROR: No matching distribution found for mediapipe==0.10.21")
    monkeypatch.setattr(fetch.subprocess, "run", lambda *args, **kwargs: failed)
    with pytest.raises(FramecacheError, match=r"cannot download mediapipe==0.10.21 .*No matching distribution.*put "
                                              rf"pose_detection.tflite and pose_landmark_full.tflite into {tmp_path}/"):
        fetch.fetch_pose_models(tmp_path)
    for name, _ in fetch.MEMBERS.values():
        (tmp_path / name).write_bytes(b"model")
    assert fetch.fetch_pose_models(tmp_path) == tmp_path  # already there: pip is not run


@needs_models
def test_the_pose_models_run_in_f32_as_the_provenance_says():
    """OpenVINO would pick bfloat16 by itself on a CPU that has it; the features must not depend on the machine."""
    files = read_model_files(POSE_MODELS, "lite")
    compiled = CompiledModel(files.landmarks, threads=1)
    assert str(compiled.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
