"""Real footage as it comes (built by framecache.data.footage): frame counts that are estimates, phones' rotation,
non-square pixels and folders of frames, through both decoders and a whole extraction."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import read_features
from test_decode import moving_gradient

from framecache.bench.footage import median_cosine
from framecache.common.cache import FeatureCache
from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.data import footage
from framecache.data.figure import render_frames
from framecache.data.synthetic import SyntheticSettings, sample_video_spec, write_video
from framecache.extract.decode import BACKENDS, iter_frames
from framecache.extract.embed import embed_videos
from framecache.extract.frame_folders import frame_files
from framecache.extract.pipeline import run_extraction

FRAMES = moving_gradient(60, 120, 160)


def decode(path, backend="pyav", **options) -> tuple[np.ndarray, object]:
    """Every sampled frame of ``path`` (one array) and the opened video (its info and source_frames)."""
    video = iter_frames(str(path), size=64, chunk_frames=16, backend=backend, **options)
    return np.concatenate(list(video)), video


@pytest.fixture(scope="module")
def quirks(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quirks")
    return {
        "avi_index_3_over": footage.cut_avi_frames(FRAMES, folder / "index-3-over.avi", missing=3),
        "mp4_count_one_high": footage.mp4_count_one_high(FRAMES, folder / "count-one-high.mp4"),
        "mp4_last_packet_corrupt": footage.corrupt_last_packet(FRAMES, folder / "last-packet.mp4"),
        "avi_last_packet_corrupt": footage.corrupt_last_packet(FRAMES, folder / "last-packet.avi"),
        "avi_cut_in_half": footage.cut_avi_frames(FRAMES, folder / "cut-in-half.avi", missing=30),
        "variable_frame_rate": footage.variable_frame_rate_mp4(FRAMES, folder / "vfr.mp4"),
    }


# ------------------------------------------------------------------ frame counts


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name, decoded",
    [("avi_index_3_over", 57), ("mp4_count_one_high", 59), ("mp4_last_packet_corrupt", 59), ("avi_last_packet_corrupt", 59)],
)
def test_a_few_frames_short_of_the_header_are_accepted_and_counted(quirks, name, decoded, backend):
    frames, video = decode(quirks[name], backend)
    assert video.info.header_frames == 60
    assert len(frames) == video.source_frames == decoded


@pytest.mark.parametrize("name", ["avi_index_3_over", "mp4_count_one_high", "mp4_last_packet_corrupt", "avi_last_packet_corrupt"])
def test_both_decoders_take_the_same_frames_of_a_short_file(quirks, name):
    pyav, _ = decode(quirks[name], "pyav")
    decord, _ = decode(quirks[name], "decord")
    assert pyav.shape == decord.shape
    assert np.abs(pyav.astype(int) - decord.astype(int)).mean() < 3  # the same frames, a few grey levels apart


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_cut_in_half_is_refused_with_the_numbers(quirks, backend):
    # PyAV decodes 30 frames; decord counts the index entries whose data lies in the file (a few more)
    with pytest.raises(FramecacheError, match=r"header says 60 frames but only 3\d could be decoded \(.*\d\d% missing"):
        decode(quirks["avi_cut_in_half"], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_shortfall_zero_refuses_any_shortfall_and_names_the_option(quirks, backend):
    with pytest.raises(FramecacheError, match=r"frame_shortfall=0"):
        decode(quirks["avi_index_3_over"], backend, frame_shortfall=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_a_short_file_keeps_the_samples_that_decode(quirks, backend):
    frames, video = decode(quirks["avi_index_3_over"], backend, frame_step=4)
    assert len(frames) == len(range(0, 57, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_variable_frame_rate_file_gives_every_frame(quirks, backend):
    frames, video = decode(quirks["variable_frame_rate"], backend)
    assert len(frames) == video.source_frames == video.info.header_frames == 60


# ------------------------------------------------------------------ rotation and pixel aspect


def portrait_clip(frames: int = 12) -> np.ndarray:
    """A synthetic person filmed upright: the middle 180x288 of a rendered demo clip (portrait)."""
    rendered = render_frames(sample_video_spec("squat", 0, SyntheticSettings()), frames)
    return np.ascontiguousarray(rendered[:, :, 86:266])


@pytest.fixture(scope="module")
def phone_videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("phone")
    upright = portrait_clip()
    made = {"upright": folder / "upright.mp4"}
    write_video(made["upright"], upright, 25)
    for degrees in (90, 180, 270):
        made[f"rotated_{degrees}"] = footage.rotated_mp4(upright, folder / f"rotated-{degrees}.mp4", degrees)
    made["sideways"] = folder / "sideways.mp4"  # stored turned, no display rotation: what the old decoder produced
    write_video(made["sideways"], np.rot90(upright, k=-1, axes=(1, 2)), 25)
    landscape = render_frames(sample_video_spec("squat", 1, SyntheticSettings()), 12)
    made["square_pixels"] = folder / "square-pixels.mp4"
    write_video(made["square_pixels"], landscape, 25)
    made["anamorphic_mp4"] = footage.anamorphic_video(landscape, folder / "anamorphic.mp4", Fraction(4, 3))
    made["anamorphic_avi"] = footage.anamorphic_video(landscape, folder / "anamorphic.avi", Fraction(16, 11))
    return made


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_display_rotation_is_applied(phone_videos, degrees, backend):
    upright, _ = decode(phone_videos["upright"], backend)
    rotated, video = decode(phone_videos[f"rotated_{degrees}"], backend)
    assert video.info.rotation == degrees
    assert (video.info.width, video.info.height) == (180, 288)  # as displayed: portrait
    assert np.abs(rotated.astype(int) - upright.astype(int)).mean() < 4
    sideways, _ = decode(phone_videos["sideways"], backend)
    assert np.abs(sideways.astype(int) - upright.astype(int)).mean() > 10  # what ignoring it gives: far off


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, aspect", [("anamorphic_mp4", Fraction(4, 3)), ("anamorphic_avi", Fraction(16, 11))])
def test_non_square_pixels_are_stretched_to_the_picture(phone_videos, name, aspect, backend):
    square, square_video = decode(phone_videos["square_pixels"], backend)
    stretched, video = decode(phone_videos[name], backend)
    assert video.info.pixel_aspect == aspect
    assert abs(video.info.width - square_video.info.width) <= 2 and video.info.height == square_video.info.height
    assert np.abs(stretched.astype(int) - square.astype(int)).mean() < 6


# ------------------------------------------------------------------ frame folders


def numbered_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames whose brightness is their number times 10: their order can be read back."""
    return np.stack([np.full((height, width, 3), 10 * number, np.uint8) for number in range(count)])


def test_frame_files_sort_naturally_and_skip_what_is_not_a_frame(tmp_path):
    footage.frame_folder(numbered_frames(12), tmp_path, ".png")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".frame_99.png").write_bytes(b"hidden")
    assert [Path(file).name for file in frame_files(str(tmp_path))][:3] == ["frame_1.png", "frame_2.png", "frame_3.png"]
    assert len(frame_files(str(tmp_path))) == 12


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_frame_folder_decodes_in_frame_order(tmp_path, backend):
    footage.frame_folder(numbered_frames(12), tmp_path, ".png")
    frames, video = decode(tmp_path, backend)
    assert video.info.header_frames == video.source_frames == 12
    assert [round(frame.mean() / 10) for frame in frames] == list(range(12))  # frame_10 after frame_9


def test_a_frame_folder_is_sampled_at_its_own_rate(tmp_path):
    footage.frame_folder(numbered_frames(12), tmp_path, ".png")
    frames, _ = decode(tmp_path, fps=5.0, folder_fps=10.0)
    assert [round(frame.mean() / 10) for frame in frames] == [0, 2, 4, 6, 8, 10]
    with pytest.raises(FramecacheError, match="a folder has no frame rate of its own; give it in an fps column"):
        decode(tmp_path, fps=5.0)


def test_a_jpeg_folder_gives_the_frames_of_the_same_clip_as_a_video(tmp_path):
    clip = render_frames(sample_video_spec("squat", 2, SyntheticSettings()), 8)
    write_video(tmp_path / "clip.mp4", clip, 25)
    footage.frame_folder(clip, tmp_path / "clip", ".jpg")
    video, _ = decode(tmp_path / "clip.mp4")
    folder, _ = decode(tmp_path / "clip")
    assert np.abs(video.astype(int) - folder.astype(int)).mean() < 4


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda folder: folder.mkdir(), "folder holds no frames"),
        (lambda folder: (footage.frame_folder(numbered_frames(3), folder),
                         footage.frame_folder(numbered_frames(1, 32, 32), folder, start=4)),
         "frame folder mixes image sizes: frame_4.jpg is 32x32, the first frame 64x48"),
        (lambda folder: (footage.frame_folder(numbered_frames(3), folder), (folder / "frame_4.jpg").write_bytes(b"xx")),
         "cannot read the image frame_4.jpg"),
    ],
    ids=["empty", "mixed-sizes", "unreadable-image"],
)
def test_bad_frame_folders_raise_with_the_reason(tmp_path, make, reason):
    make(tmp_path / "folder")
    with pytest.raises(FramecacheError, match=reason):
        decode(tmp_path / "folder")


# ------------------------------------------------------------------ a whole extraction


@pytest.fixture
def footage_csv(tmp_path, quirks, phone_videos) -> Path:
    folder = tmp_path / "data"
    footage.frame_folder(numbered_frames(9), folder / "frames-a", ".jpg")
    footage.frame_folder(numbered_frames(7, 64, 48), folder / "frames-b", ".png")
    rows = [f"{quirks['avi_index_3_over']},squat,s1,", f"{quirks['mp4_count_one_high']},squat,s2,",
            f"{quirks['avi_cut_in_half']},squat,s3,", f"{phone_videos['rotated_90']},jump,s1,",
            "frames-a,jump,s2,25", "frames-b,jump,s3,"]  # fmt: skip
    (folder / "labels.csv").write_text("path,label,group,fps\n" + "\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_extraction_keeps_short_files_refuses_a_cut_one_and_reads_frame_folders(footage_csv, capsys):
    out = footage_csv.parent / "features.h5"
    config = ExtractConfig(csv=str(footage_csv), out=str(out), backbone="efficientnetb0", weights="none", views=2,
                           augment="light", batch_size=8, chunk_frames=4, quiet=True, folder_fps=10.0)  # fmt: skip
    summary = run_extraction(config)
    assert (summary.ok, summary.failed) == (5, 1)
    features, info = read_features(out)
    assert features["frames-a"].shape[:2] == (2, 9) and features["frames-b"].shape[:2] == (2, 7)
    with FeatureCache(out) as cache:
        by_path = {Path(video.path).name: video for video in cache.videos}
        assert (by_path["index-3-over.avi"].source_frames, by_path["index-3-over.avi"].header_frames) == (57, 60)
        assert by_path["frames-a"].source_fps == 25.0 and by_path["frames-b"].source_fps == 10.0  # column, else flag
        assert len(cache.short_videos()) == 2
    assert "header says 60 frames but only 30 could be decoded" in info["failures"][0]["reason"]

    resumed = run_extraction(config)  # a rerun retries only the failure
    assert (resumed.ok, resumed.failed, resumed.skipped) == (0, 1, 5)


def test_info_counts_the_videos_decoded_short(footage_csv):
    import subprocess

    out = footage_csv.parent / "features.h5"
    run_extraction(ExtractConfig(csv=str(footage_csv), out=str(out), backbone="efficientnetb0", weights="none", views=1,
                                 batch_size=8, quiet=True))  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "framecache", "info", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "decoding    2 videos decoded a few frames short of their header; largest shortfall 3 frames of 60 (5%)" in result.stdout


def test_predict_embeds_a_frame_folder_as_its_cached_features(footage_csv):
    out = footage_csv.parent / "features.h5"
    run_extraction(ExtractConfig(csv=str(footage_csv), out=str(out), backbone="efficientnetb0", weights="none", views=1,
                                 batch_size=8, quiet=True))  # fmt: skip
    with FeatureCache(out) as cache:
        video = next(video for video in cache.videos if video.path == "frames-b")
        cached, provenance = cache.features(video.key, view=0), cache.provenance
    (result,) = embed_videos([str(footage_csv.parent / "frames-b")], provenance)
    assert result.error is None
    np.testing.assert_allclose(result.features, cached.astype(np.float32), atol=2e-2)


def test_a_rotated_phone_video_embeds_like_its_upright_copy(phone_videos, tmp_path):
    """With ImageNet weights (EfficientNet-Lite0, offline): frame cosine to the upright copy, rotated vs. sideways."""
    rows = [f"{phone_videos[name]},{label}" for name, label in
            [("upright", "a"), ("rotated_90", "a"), ("rotated_270", "b"), ("sideways", "b")]]  # fmt: skip
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "features.h5"
    run_extraction(ExtractConfig(csv=str(tmp_path / "labels.csv"), out=str(out), backbone="efficientnet_lite0",
                                 weights="imagenet", views=1, batch_size=12, quiet=True))  # fmt: skip
    features, _ = read_features(out)
    upright = features[str(phone_videos["upright"])][0]

    def cosine(name: str) -> float:
        return median_cosine(upright, features[str(phone_videos[name])][0])

    assert cosine("rotated_90") >= 0.95 and cosine("rotated_270") >= 0.95
    assert cosine("sideways") < 0.9



def test_load_features_gives_each_step_its_time_in_the_video(footage_csv):
    from framecache import load_features

    out = footage_csv.parent / "features.h5"
    run_extraction(ExtractConfig(csv=str(footage_csv), out=str(out), backbone="efficientnetb0", weights="none", views=1,
                                 batch_size=8, quiet=True, frame_step=2))  # fmt: skip
    padded = load_features(out)
    rows = {Path(path).name: row for row, path in enumerate(padded.paths)}
    np.testing.assert_allclose(padded.times[rows["frames-a"]][:5], np.arange(0, 9, 2) / 25)  # the CSV's fps: 25
    assert np.isnan(padded.times[rows["frames-b"]]).all()  # no fps in its row, none given: unknown
    np.testing.assert_allclose(padded.times[rows["index-3-over.avi"]][:29], np.arange(0, 57, 2) / 25)
    assert np.isnan(padded.times[rows["index-3-over.avi"]][29:]).all() and not padded.mask[rows["index-3-over.avi"]][29:].any()
    short = load_features(out, max_len=4)  # steps sampled over the whole video, as stage two evaluates
    assert short.times.shape == (len(rows), 4) and np.all(np.diff(short.times[rows["index-3-over.avi"]]) > 0.3)


# ------------------------------------------------------------------ files that lie: memory sized by what decodes

PEAK_RSS = """
import resource, sys
from framecache.common.errors import FramecacheError
from framecache.extract.decode import iter_frames
try:
    frames = sum(len(chunk) for chunk in iter_frames(sys.argv[1], backend=sys.argv[2]))
    outcome = f"ok {frames}"
except FramecacheError as error:
    outcome = f"refused {error}"
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, outcome)
"""


def peak_and_outcome(path: Path, backend: str) -> tuple[int, str]:
    """Decode ``path`` in a fresh process: its peak resident memory (MB) and what happened."""
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path), backend], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peak, outcome = result.stdout.strip().split(" ", 1)
    return int(peak), outcome


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_header_claiming_a_billion_frames_costs_no_memory(tmp_path, backend):
    lying = footage.avi_claiming_frames(FRAMES[:50], tmp_path / "lying.avi", claimed=10**9)
    honest = footage.avi_claiming_frames(FRAMES[:50], tmp_path / "honest.avi", claimed=50)
    honest_peak, outcome = peak_and_outcome(honest, backend)
    assert outcome == "ok 50"
    lying_peak, outcome = peak_and_outcome(lying, backend)
    assert outcome.startswith("refused video is truncated or damaged: the header says 1000000000 frames but only 50")
    assert lying_peak < honest_peak + 100, (lying_peak, honest_peak)  # MB: what decodes decides, not the header


def test_a_picture_no_camera_records_is_refused_before_decoding(tmp_path):
    thin = write_video(tmp_path / "thin.avi", np.zeros((3, 4, 512, 3), np.uint8), 25, codec="mpeg4") or tmp_path / "thin.avi"
    with pytest.raises(FramecacheError, match=r"video is 512x4 pixels, an aspect ratio beyond 8:1"):
        iter_frames(str(thin))
