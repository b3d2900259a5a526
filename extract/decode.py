"""Decode a video into fixed-size RGB frames, streamed in chunks.

Resize policy (the same for every video and both backends): scale the
*shorter* side to ``size`` keeping the aspect ratio, then centre-crop
``size x size``, the standard ImageNet evaluation transform. Small videos
(e.g. 33x47) are upscaled the same way. The scaling happens inside the decoder
(decord's ``width``/``height`` arguments; PyAV's swscale with bilinear
interpolation), which measured 2-3x faster than decoding at full size and
resizing with ``cv2.resize(INTER_AREA)``; the crop is a numpy slice. Display
rotation metadata (phone videos) and non-square pixels are ignored by both
backends.

Frame sampling: :func:`sample_indices` picks the frame indices to keep (every
frame, every k-th frame, or the frames nearest to a target fps) and both
backends decode exactly those.

Backends: ``"decord"`` (default) reads chunks with ``VideoReader.get_batch``
on slices of the sampled indices, one reader per call (a reader must never be
shared between threads) and one decoder thread, leaving the other core to the
CNN. ``"pyav"`` decodes sequentially and keeps the sampled frames; its output
matches decord's to within a few grey levels on average.

Error policy: every problem a user can cause raises
:class:`~common.errors.FramecacheError` with a short reason and the path:
missing file, directory, unreadable, empty, not a media file, no video stream,
a still image, 0 frames, a frame that cannot be decoded, and a file that holds
fewer frames than its header claims (truncated or damaged). A damaged video
is never silently shortened: the caller records it as failed. Errors found
while decoding can come after some chunks were yielded, so the caller must
discard what it received for that video. The header frame count is read with
PyAV for both backends (a truncated AVI opens in decord with fewer frames and
no error); it is trusted only when the container stores one (MP4, AVI), and
estimated from the duration otherwise (MKV, WebM), in which case a shortfall
is not an error.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import av
import decord
import numpy as np
from decord import VideoReader, cpu

from framecache.common.config import AT_LEAST_ONE, DECODERS
from framecache.common.errors import FramecacheError
from framecache.common.options import Interval, check, option_name

BACKENDS = DECODERS  # the decoders, one list: common.config.DECODERS

# The resize policy in words, recorded in the cache provenance.
RESIZE_POLICY = "shorter side to size keeping aspect ratio (bilinear, in the decoder), then centre crop size x size"

# One decoder thread: measured ~25% slower than num_threads=0 on an idle
# 2-core machine, but the CNN runs on the other core during extraction.
DECORD_THREADS = 1

# Errors decord raises for unreadable or damaged input. DECORDError is not a
# RuntimeError subclass; the VideoReader constructor asserts frame count > 0.
_DECORD_ERRORS = (
    RuntimeError,
    AssertionError,
    IndexError,
    decord.DECORDError,
    decord._ffi.base.DECORDLimitReachedError,
)


@dataclass(frozen=True)
class VideoInfo:
    """What a backend will deliver for a video: frame count, rate and source size."""

    num_frames: int
    fps: float
    width: int
    height: int


def sample_indices(
    num_frames: int,
    native_fps: float,
    frame_step: int = 1,
    fps: float | None = None,
) -> np.ndarray:
    """Return the sorted frame indices to keep, as an int64 array.

    By default every frame; with ``frame_step=k`` every k-th frame starting at
    0; with ``fps`` the frames nearest to t = 0, 1/fps, 2/fps, ... within the
    video. A target fps at or above the native rate keeps every frame (never
    upsample). ``frame_step`` and ``fps`` cannot be combined.
    """
    check("num_frames", num_frames, int, Interval(0, None))
    check("frame_step", frame_step, int, AT_LEAST_ONE)
    if fps is None:
        return np.arange(0, num_frames, frame_step, dtype=np.int64)

    check("fps", fps, float, Interval(0, None, "neither"))
    if frame_step != 1:
        raise FramecacheError(f"give either {option_name('frame_step')} or {option_name('fps')}, not both "
                              f"(got frame_step={frame_step!r}, fps={fps!r})")
    if not (isinstance(native_fps, (int, float, np.number)) and math.isfinite(native_fps) and native_fps > 0):
        raise FramecacheError(f"cannot sample at fps={fps!r}: the video's native fps is unknown ({native_fps!r})")
    if fps >= native_fps:
        return np.arange(num_frames, dtype=np.int64)

    frames_per_sample = native_fps / fps
    # Sample k at t = k / fps lies inside the video while t < num_frames / native_fps.
    num_samples = math.ceil(num_frames / frames_per_sample - 1e-9)
    nearest = np.floor(np.arange(num_samples) * frames_per_sample + 0.5).astype(np.int64)
    return np.unique(np.minimum(nearest, num_frames - 1))


class VideoFrames:
    """One opened video's sampled frames, chunk by chunk; ``info`` (what the file holds) is known before the first chunk.

    Iterating it yields uint8 RGB chunks ``(n, size, size, 3)``, ``n <= chunk_frames``.
    """

    def __init__(self, info: VideoInfo, chunks: Iterator[np.ndarray]):
        self.info = info
        self._chunks = chunks

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._chunks


def iter_frames(
    path: str,
    size: int = 224,
    frame_step: int = 1,
    fps: float | None = None,
    chunk_frames: int = 32,
    backend: str = "decord",
) -> VideoFrames:
    """The sampled frames of a video, as uint8 RGB chunks of shape (n, size, size, 3), and its :class:`VideoInfo`.

    ``n <= chunk_frames``; concatenating the chunks gives every sampled frame
    in order, so memory stays flat however long the video. Arguments and the
    file are checked when this is called (the file is opened once, its header
    read once); decode errors are raised while iterating (see the module
    docstring for the error policy).
    """
    check("size", size, int, AT_LEAST_ONE)
    check("chunk_frames", chunk_frames, int, AT_LEAST_ONE)
    check("decoder", backend, choices=DECODERS)
    sample_indices(0, 1.0, frame_step, fps)  # validate the sampling arguments before opening

    container, header, count_is_exact = _open_pyav(path)
    resized_height, resized_width = _resized_shape(header.height, header.width, size)
    if backend == "pyav":
        wanted = sample_indices(header.num_frames, header.fps, frame_step, fps)
        chunks = _iter_pyav(container, path, wanted, header.num_frames, count_is_exact, size, resized_height,
                            resized_width, chunk_frames)
        return VideoFrames(header, chunks)
    container.close()  # decord decodes; PyAV read the header, which decord's own count is checked against
    reader = _open_decord(path, width=resized_width, height=resized_height)
    info = _decord_info(reader, header, path)
    wanted = sample_indices(info.num_frames, info.fps, frame_step, fps)
    return VideoFrames(info, _iter_decord(reader, path, wanted, info.num_frames, size, chunk_frames))


def _iter_decord(
    reader: VideoReader,
    path: str,
    wanted: np.ndarray,
    num_frames: int,
    size: int,
    chunk_frames: int,
) -> Iterator[np.ndarray]:
    """Yield cropped chunks read with ``get_batch`` on slices of ``wanted``."""
    for start in range(0, len(wanted), chunk_frames):
        chunk_indices = wanted[start : start + chunk_frames]
        try:
            batch = reader.get_batch(chunk_indices.tolist())
        except _DECORD_ERRORS as error:
            first, last = int(chunk_indices[0]), int(chunk_indices[-1])
            frames = f"frame {first}" if first == last else f"frames {first}-{last}"
            raise FramecacheError(f"cannot decode {frames} of {num_frames} ({_short_reason(error)}): {path}") from None
        frames = batch.asnumpy() if isinstance(batch, decord.nd.NDArray) else np.asarray(batch)
        yield _center_crop(frames, size)


def _iter_pyav(
    container: av.container.InputContainer,
    path: str,
    wanted: np.ndarray,
    num_frames: int,
    count_is_exact: bool,
    size: int,
    resized_height: int,
    resized_width: int,
    chunk_frames: int,
) -> Iterator[np.ndarray]:
    """Decode the open ``container`` sequentially, keep the frames in ``wanted``, yield cropped chunks; close it."""
    next_wanted = 0  # position in `wanted` of the next frame to keep
    frame_index = -1
    buffer: list[np.ndarray] = []
    with container:
        if len(wanted) == 0:
            return
        try:
            stream = container.streams.video[0]
            for frame_index, frame in enumerate(container.decode(stream)):
                if frame_index != wanted[next_wanted]:
                    continue
                buffer.append(
                    frame.to_ndarray(
                        format="rgb24",
                        width=resized_width,
                        height=resized_height,
                        interpolation="BILINEAR",
                    )
                )
                next_wanted += 1
                if len(buffer) == chunk_frames or next_wanted == len(wanted):
                    yield _center_crop(np.stack(buffer), size)
                    buffer = []
                if next_wanted == len(wanted):
                    return
        except av.FFmpegError as error:
            raise FramecacheError(
                f"cannot decode frame {frame_index + 1} of {num_frames} ({_short_reason(error)}): {path}"
            ) from None
    if count_is_exact:
        raise FramecacheError(
            f"video is truncated or damaged: the header says {num_frames} frames "
            f"but only {frame_index + 1} could be decoded: {path}"
        )
    if buffer:  # the duration-based frame count was an overestimate
        yield _center_crop(np.stack(buffer), size)


def _check_file(path: str) -> None:
    """Raise FramecacheError unless ``path`` is an existing, readable, non-empty file."""
    if not isinstance(path, (str, os.PathLike)):
        raise FramecacheError(f"video path must be a string, got {path!r}")
    if not os.path.exists(path):
        raise FramecacheError(f"file not found: {path}")
    if os.path.isdir(path):
        raise FramecacheError(f"path is a directory, not a video file: {path}")
    if not os.access(path, os.R_OK):
        raise FramecacheError(f"no permission to read the file: {path}")
    if os.path.getsize(path) == 0:
        raise FramecacheError(f"file is empty (0 bytes): {path}")


def _open_pyav(path: str) -> tuple[av.container.InputContainer, VideoInfo, bool]:
    """Open a video with PyAV and read its header: the open container, the header's VideoInfo, and whether
    its frame count is stored in the file (True) or estimated from the duration (False)."""
    _check_file(path)
    path = os.fspath(path)
    try:
        container = av.open(path)
    except av.FFmpegError as error:
        with open(path, "rb") as file:
            if file.read(12)[4:8] == b"ftyp":  # an MP4/MOV whose index (moov atom) is missing
                raise FramecacheError(
                    "not a readable video file: an MP4 without its index (moov atom), probably truncated by an "
                    f"interrupted copy or recording ({_short_reason(error)}): {path}"
                ) from None
        raise FramecacheError(f"not a readable video file ({_short_reason(error)}): {path}") from None
    try:
        header, count_is_exact = _header(container, path)
    except BaseException:
        container.close()
        raise
    return container, header, count_is_exact


def _header(container: av.container.InputContainer, path: str) -> tuple[VideoInfo, bool]:
    """The first video stream's frame count, rate and size, and whether the count is stored in the file."""
    format_name = container.format.name
    if format_name == "image2" or format_name.endswith("_pipe"):
        raise FramecacheError(f"not a video file (a still image, format {format_name!r}): {path}")
    video_streams = [
        stream for stream in container.streams.video if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if not video_streams:
        raise FramecacheError(f"not a video file (no video stream): {path}")
    stream = video_streams[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    num_frames = int(stream.frames)
    count_is_exact = num_frames > 0
    if not count_is_exact:
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = 0.0
        num_frames = round(seconds * fps)
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise FramecacheError(f"video has no valid frame size ({width}x{height}): {path}")
    if num_frames == 0:
        raise FramecacheError(f"video has 0 frames: {path}")
    return VideoInfo(num_frames=num_frames, fps=fps, width=width, height=height), count_is_exact


def _open_decord(path: str, width: int = -1, height: int = -1) -> VideoReader:
    """Open a decord reader (optionally resizing at decode time)."""
    try:
        return VideoReader(os.fspath(path), ctx=cpu(0), width=width, height=height, num_threads=DECORD_THREADS)
    except _DECORD_ERRORS as error:
        raise FramecacheError(f"cannot open video ({_short_reason(error)}): {path}") from None


def _decord_info(reader: VideoReader, header: VideoInfo, path: str) -> VideoInfo:
    """VideoInfo for what decord will deliver, checked against the container header."""
    num_frames = len(reader)
    if num_frames == 0:
        raise FramecacheError(f"video has 0 frames: {path}")
    if num_frames < header.num_frames:
        raise FramecacheError(
            f"video is truncated or damaged: the header says {header.num_frames} frames "
            f"but only {num_frames} can be read: {path}"
        )
    fps = float(reader.get_avg_fps()) or header.fps
    return VideoInfo(num_frames=num_frames, fps=fps, width=header.width, height=header.height)


def _resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side scaled to ``size``, keeping the aspect ratio."""
    if height <= width:
        return size, max(size, round(width * size / height))
    return max(size, round(height * size / width)), size


def _center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Crop the central ``size x size`` region of (n, H, W, 3) frames (H, W >= size)."""
    height, width = frames.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])


_DECORD_LOG_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")
_DECORD_CHECK_FAILED = re.compile(r"Check failed: .*? \(-?\d+ vs\. -?\d+\) ")
_AVERROR_INVALIDDATA = "1094995529"  # FFmpeg's AVERROR_INVALIDDATA, as decord prints it


def _short_reason(error: BaseException) -> str:
    """A one-line reason from a decoder exception, without decord's source locations."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return error.strerror
    message = _DECORD_LOG_PREFIX.sub("", str(error))
    message = _DECORD_CHECK_FAILED.sub("", message).strip()
    message = message.replace(f"failed with {_AVERROR_INVALIDDATA}", "failed: invalid data")
    message = message.splitlines()[0] if message else type(error).__name__
    return message if len(message) <= 200 else message[:197] + "..."
