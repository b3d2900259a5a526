"""Tests for extract.decode: sampling, resizing, chunking, backends and bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from framecache.common.errors import FramecacheError
from framecache.extract.decode import BACKENDS, RESIZE_POLICY, VideoInfo, iter_frames, resized_shape, sample_indices


def write_test_video(path: Path, frames: np.ndarray, fps: int = 30, codec: str = "mpeg4") -> Path:
    """Encode uint8 RGB frames (n, H, W, 3) with PyAV; mpeg4 accepts odd sizes."""
    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_gradient(num_frames: int, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients with a bright square moving across: easy to encode, frames differ."""
    rows = np.linspace(0, 200, height)[:, None]
    cols = np.linspace(0, 200, width)[None, :]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for index in range(num_frames):
        frames[index, ..., 0] = cols + 0 * rows
        frames[index, ..., 1] = rows + 0 * cols
        frames[index, ..., 2] = (index * 5) % 200
        side = max(2, min(height, width) // 4)
        left = (index * 3) % max(1, width - side)
        frames[index, height // 3 : height // 3 + side, left : left + side] = 250
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small videos written once for the whole module."""
    folder = tmp_path_factory.mktemp("videos")
    made = {
        "landscape_mp4": write_test_video(folder / "landscape.mp4", moving_gradient(40, 240, 320)),
        "landscape_avi": write_test_video(folder / "landscape.avi", moving_gradient(40, 240, 320)),
        "portrait_mp4": write_test_video(folder / "portrait.mp4", moving_gradient(12, 320, 240)),
        "tiny_mp4": write_test_video(folder / "tiny.mp4", moving_gradient(9, 47, 33)),
        "tiny_avi": write_test_video(folder / "tiny.avi", moving_gradient(9, 33, 47)),
        "one_frame_mp4": write_test_video(folder / "one_frame.mp4", moving_gradient(1, 64, 80)),
        "h264_mp4": write_test_video(folder / "h264.mp4", moving_gradient(20, 120, 160), codec="libx264"),
    }
    return made


# ----------------------------------------------------------------- sample_indices


def test_sample_indices_every_frame_by_default() -> None:
    np.testing.assert_array_equal(sample_indices(5, 30.0), [0, 1, 2, 3, 4])
    assert sample_indices(5, 30.0).dtype == np.int64


def test_sample_indices_frame_step() -> None:
    np.testing.assert_array_equal(sample_indices(10, 30.0, frame_step=3), [0, 3, 6, 9])
    np.testing.assert_array_equal(sample_indices(2, 30.0, frame_step=5), [0])


def test_sample_indices_fps_picks_nearest_frames() -> None:
    np.testing.assert_array_equal(sample_indices(12, 30.0, fps=10), [0, 3, 6, 9])
    # Frames nearest to t = k/20 s at 30 fps: k * 1.5 rounded half up.
    np.testing.assert_array_equal(sample_indices(9, 30.0, fps=20), [0, 2, 3, 5, 6, 8])
    assert len(sample_indices(300, 29.97, fps=5)) == 51  # ceil(10.01 s * 5)


def test_sample_indices_never_upsamples() -> None:
    np.testing.assert_array_equal(sample_indices(4, 25.0, fps=60), [0, 1, 2, 3])
    np.testing.assert_array_equal(sample_indices(4, 25.0, fps=25), [0, 1, 2, 3])


def test_sample_indices_empty_and_single_frame() -> None:
    assert len(sample_indices(0, 30.0)) == 0
    np.testing.assert_array_equal(sample_indices(1, 30.0, fps=1), [0])


@pytest.mark.parametrize(
    "kwargs, bad_value",
    [
        ({"frame_step": 0}, "0"),
        ({"frame_step": -2}, "-2"),
        ({"frame_step": 1.5}, "1.5"),
        ({"fps": 0}, "0"),
        ({"fps": -3.0}, "-3.0"),
        ({"fps": float("nan")}, "nan"),
        ({"fps": 10, "frame_step": 2}, "frame_step=2"),
    ],
)
def test_sample_indices_rejects_bad_arguments(kwargs: dict, bad_value: str) -> None:
    with pytest.raises(FramecacheError, match=bad_value):
        sample_indices(30, 30.0, **kwargs)


def test_sample_indices_needs_native_fps_for_fps_sampling() -> None:
    with pytest.raises(FramecacheError, match="native fps"):
        sample_indices(30, 0.0, fps=10)


# ----------------------------------------------------------------- open and decode


@pytest.mark.parametrize("backend", BACKENDS)
def test_opened_video_knows_its_header_before_decoding(videos: dict[str, Path], backend: str) -> None:
    info = iter_frames(str(videos["landscape_mp4"]), backend=backend).info
    assert info == VideoInfo(num_frames=40, fps=30.0, width=320, height=240, header_frames=40)
    assert iter_frames(str(videos["tiny_mp4"]), backend=backend).info.width == 33


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name, num_frames",
    [
        ("landscape_mp4", 40),
        ("landscape_avi", 40),
        ("portrait_mp4", 12),
        ("tiny_mp4", 9),
        ("tiny_avi", 9),
        ("one_frame_mp4", 1),
        ("h264_mp4", 20),
    ],
)
def test_iter_frames_yields_square_uint8_chunks(
    videos: dict[str, Path], name: str, num_frames: int, backend: str
) -> None:
    chunks = list(iter_frames(str(videos[name]), chunk_frames=16, backend=backend))
    for chunk in chunks:
        assert chunk.dtype == np.uint8
        assert chunk.shape[1:] == (224, 224, 3)
        assert 1 <= len(chunk) <= 16
        assert chunk.flags.c_contiguous
    assert sum(len(chunk) for chunk in chunks) == num_frames


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_frames_size_parameter(videos: dict[str, Path], backend: str) -> None:
    chunks = list(iter_frames(str(videos["landscape_avi"]), size=64, backend=backend))
    assert np.concatenate(chunks).shape == (40, 64, 64, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_concatenate_to_one_big_chunk(videos: dict[str, Path], backend: str) -> None:
    path = str(videos["landscape_mp4"])
    small_chunks = list(iter_frames(path, chunk_frames=7, backend=backend))
    (one_chunk,) = list(iter_frames(path, chunk_frames=1000, backend=backend))
    assert [len(chunk) for chunk in small_chunks] == [7, 7, 7, 7, 7, 5]
    np.testing.assert_array_equal(np.concatenate(small_chunks), one_chunk)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_step_and_fps_keep_the_sampled_frames(videos: dict[str, Path], backend: str) -> None:
    path = str(videos["landscape_mp4"])
    every_frame = np.concatenate(list(iter_frames(path, backend=backend)))
    every_third = np.concatenate(list(iter_frames(path, frame_step=3, chunk_frames=4, backend=backend)))
    np.testing.assert_array_equal(every_third, every_frame[::3])

    at_12_fps = np.concatenate(list(iter_frames(path, fps=12, chunk_frames=5, backend=backend)))
    wanted = sample_indices(40, 30.0, fps=12)
    assert len(at_12_fps) == len(wanted) == 16
    np.testing.assert_array_equal(at_12_fps, every_frame[wanted])


@pytest.mark.parametrize("name", ["landscape_mp4", "portrait_mp4", "tiny_avi", "h264_mp4"])
def test_pyav_matches_decord(videos: dict[str, Path], name: str) -> None:
    decord_frames = np.concatenate(list(iter_frames(str(videos[name]), backend="decord")))
    pyav_frames = np.concatenate(list(iter_frames(str(videos[name]), backend="pyav")))
    assert decord_frames.shape == pyav_frames.shape
    assert np.abs(decord_frames.astype(np.int16) - pyav_frames).mean() < 2.0


@pytest.mark.parametrize("codec, height, width", [("libx264", 240, 320), ("mpeg4", 47, 33), ("mpeg4", 480, 120)])
def test_pyav_frames_are_each_frame_scaled_bilinear_on_its_own_then_centre_cropped(
    tmp_path: Path, codec: str, height: int, width: int
) -> None:
    """The clean view's pixels, as before the decoder was made faster: every frame through its own libswscale pass
    (bilinear, to RGB, the shorter side to 224; ``VideoFrame.to_ndarray``), then its centre 224 x 224."""
    frames = np.random.default_rng(0).integers(0, 255, (12, height, width, 3), dtype=np.uint8)  # noise: every pixel counts
    path = write_test_video(tmp_path / ("noise.mp4" if codec == "libx264" else "noise.avi"), frames, codec=codec)
    scaled_height, scaled_width = resized_shape(height, width, 224)
    top, left = (scaled_height - 224) // 2, (scaled_width - 224) // 2
    with av.open(str(path)) as container:
        expected = np.stack([
            frame.to_ndarray(format="rgb24", width=scaled_width, height=scaled_height, interpolation="BILINEAR")[
                top : top + 224, left : left + 224]
            for frame in container.decode(video=0)
        ])  # fmt: skip
    decoded = np.concatenate(list(iter_frames(str(path), backend="pyav", chunk_frames=5)))
    assert len(expected) == 12
    np.testing.assert_array_equal(decoded, expected)


def test_resize_policy_is_recorded_as_text() -> None:
    assert isinstance(RESIZE_POLICY, str) and "centre crop" in RESIZE_POLICY


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("height, width", [(120, 480), (480, 120)])
def test_shorter_side_resize_then_centre_crop(tmp_path: Path, backend: str, height: int, width: int) -> None:
    # Red everywhere except a green band across the middle third of the long side.
    frames = np.zeros((2, height, width, 3), dtype=np.uint8)
    frames[..., 0] = 255
    long_side = max(height, width)
    band = slice(long_side // 3, 2 * long_side // 3)
    if width > height:
        frames[:, :, band] = (0, 255, 0)
    else:
        frames[:, band, :] = (0, 255, 0)
    path = write_test_video(tmp_path / "band.avi", frames)
    (chunk,) = list(iter_frames(str(path), backend=backend))
    # The 224x224 crop is the middle quarter of the long side: all green.
    assert chunk.shape == (2, 224, 224, 3)
    assert chunk[..., 1].mean() > 220 and chunk[..., 0].mean() < 30


# ----------------------------------------------------------------- bad inputs


def _audio_only_mp4(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _zero_frame_avi(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = 64, 48
        container.start_encoding()
    return path


def _truncated_copy(source: Path, path: Path, keep: float) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _corrupted_copy(source: Path, path: Path) -> Path:
    """Zero out a third of the file in the middle (the index stays intact)."""
    data = bytearray(source.read_bytes())
    start, stop = len(data) // 3, 2 * len(data) // 3
    data[start:stop] = bytes(stop - start)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, videos: dict[str, Path]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "folder.mp4").mkdir()
    (folder / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    ok, png = cv2.imencode(".png", moving_gradient(1, 32, 32)[0])
    (folder / "image.mp4").write_bytes(png.tobytes())
    long_avi = write_test_video(folder / "long.avi", moving_gradient(90, 120, 160))
    long_mp4 = write_test_video(folder / "long.mp4", moving_gradient(90, 120, 160))
    return {
        "missing": folder / "missing.mp4",
        "directory": folder / "folder.mp4",
        "zero_bytes": folder / "empty.mp4",
        "random_bytes": folder / "random.mp4",
        "image": folder / "image.mp4",
        "audio_only": _audio_only_mp4(folder / "audio.mp4"),
        "zero_frames": _zero_frame_avi(folder / "zero_frames.avi"),
        "truncated_avi": _truncated_copy(long_avi, folder / "truncated.avi", keep=0.5),
        "truncated_mp4": _truncated_copy(long_mp4, folder / "truncated.mp4", keep=0.5),
        "corrupted_mp4": _corrupted_copy(long_mp4, folder / "corrupted.mp4"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name, reason",
    [
        ("missing", "file not found"),
        ("directory", "folder holds no frames"),
        ("zero_bytes", r"empty \(0 bytes\)"),
        ("random_bytes", "not a readable video file"),
        ("image", "not a video file .*still image"),
        ("audio_only", r"not a video file \(no video stream\)"),
        ("zero_frames", "video has 0 frames"),
        ("truncated_avi", "truncated or damaged"),
        ("truncated_mp4", "not a readable video file"),  # the MP4 index sits at the end
        ("corrupted_mp4", "cannot decode frame|truncated or damaged"),
    ],
)
def test_bad_inputs_raise_framecache_error(bad_files: dict[str, Path], name: str, reason: str, backend: str) -> None:
    path = str(bad_files[name])
    with pytest.raises(FramecacheError, match=reason) as raised:
        list(iter_frames(path, backend=backend))
    assert path in str(raised.value)
    assert len(str(raised.value)) < 400


@pytest.mark.parametrize("backend", BACKENDS)
def test_opening_reports_bad_inputs(bad_files: dict[str, Path], backend: str) -> None:
    with pytest.raises(FramecacheError, match="no video stream"):
        iter_frames(str(bad_files["audio_only"]), backend=backend)
    with pytest.raises(FramecacheError, match="file not found"):
        iter_frames(str(bad_files["missing"]), backend=backend)


def test_decord_finds_truncation_on_opening(bad_files: dict[str, Path]) -> None:
    # PyAV only reads the header when opening; it finds the truncation while decoding.
    with pytest.raises(FramecacheError, match="header says 90 frames but only"):
        iter_frames(str(bad_files["truncated_avi"]), backend="decord")


def test_unreadable_file(tmp_path: Path, videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.mp4"
    path.write_bytes(videos["tiny_mp4"].read_bytes())
    path.chmod(0)
    if os.access(path, os.R_OK):  # running as root, which reads anything: simulate it
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    try:
        with pytest.raises(FramecacheError, match="no permission to read"):
            iter_frames(str(path))
    finally:
        path.chmod(0o644)


def test_errors_are_raised_at_call_time_not_first_iteration(bad_files: dict[str, Path]) -> None:
    with pytest.raises(FramecacheError, match="file not found"):
        iter_frames(str(bad_files["missing"]))


@pytest.mark.parametrize(
    "kwargs, bad_value",
    [
        ({"size": 0}, "size must be .* got 0"),
        ({"chunk_frames": 0}, "chunk_frames must be .* got 0"),
        ({"backend": "opencv"}, "'opencv'"),
        ({"frame_step": 0}, "frame_step must be .* got 0"),
        ({"fps": -1}, "fps must be .* got -1"),
    ],
)
def test_iter_frames_rejects_bad_arguments(videos: dict[str, Path], kwargs: dict, bad_value: str) -> None:
    with pytest.raises(FramecacheError, match=bad_value):
        iter_frames(str(videos["tiny_mp4"]), **kwargs)
