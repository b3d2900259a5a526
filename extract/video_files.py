"""Video files through PyAV and decord: the header once, then the sampled frames (policy: :mod:`framecache.extract.decode`).

PyAV reads every file's header (a truncated AVI opens in decord with fewer
frames and no error, so its count is checked against PyAV's) and its first
frame, which carries the display rotation. PyAV then decodes on (its frames
are turned upright here); or decord decodes, one reader per call (a reader
must never be shared between threads) and one decoder thread, leaving the
other core to the CNN. decord 0.6 turns frames upright itself, and scales
them to the size asked for in their displayed orientation. PyAV's frames
match decord's to within a few grey levels on average.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction

import av
import decord
import numpy as np
from decord import VideoReader, cpu

from framecache.common.errors import FramecacheError
from framecache.extract.decode import (
    VideoFrames,
    VideoInfo,
    check_aspect,
    check_shortfall,
    decoder_output_shape,
    iter_sample_indices,
    resized_shape,
    upright_square,
)

# One decoding thread per decoder process, for both backends: the processes are the parallelism
# (``--workers``), and the backbone has the other cores. decord: ~25% slower than num_threads=0 on an
# idle 2-core machine. PyAV: FFmpeg's slice threads cost CPU for nothing on a busy machine (H.264
# 320x240, ms of CPU per frame: 1.16 on one thread, 1.20-1.35 with FFmpeg's default).
DECORD_THREADS = 1
PYAV_THREADS = 1

# Sample aspect ratios outside this range are taken for a broken header and ignored (square pixels).
PIXEL_ASPECTS_APPLIED = (Fraction(1, 4), Fraction(4))

# Errors decord raises for unreadable or damaged input. DECORDError is not a
# RuntimeError subclass; the VideoReader constructor asserts frame count > 0.
_DECORD_ERRORS = (
    RuntimeError,
    AssertionError,
    IndexError,
    decord.DECORDError,
    decord._ffi.base.DECORDLimitReachedError,
)


class _PyAVVideo:
    """An open file's first video stream: its header, and its frames as they decode.

    Decoding stops at the first packet that does not decode, after flushing the
    frames before it out of the decoder; ``error`` then says why.
    """

    def __init__(self, path: str):
        _check_file(path)
        try:
            self.container = av.open(path)
        except av.FFmpegError as error:
            with open(path, "rb") as file:
                if file.read(12)[4:8] == b"ftyp":  # an MP4/MOV whose index (moov atom) is missing
                    raise FramecacheError(
                        "not a readable video file: an MP4 without its index (moov atom), probably truncated by an "
                        f"interrupted copy or recording ({short_reason(error)}): {path}"
                    ) from None
            raise FramecacheError(f"not a readable video file ({short_reason(error)}): {path}") from None
        self.error: str | None = None
        try:
            self.stream = _video_stream(self.container, path)
            self.stream.codec_context.thread_count = PYAV_THREADS
            self.frames = self._decode()
            first = next(self.frames, None)
            if first is None:
                reason = f"cannot decode frame 1 ({self.error})" if self.error else "video has 0 frames"
                raise FramecacheError(f"{reason}: {path}")
            self.frames = itertools.chain([first], self.frames)
            self.info = _header(self.container, self.stream, first, path)
        except BaseException:
            self.container.close()
            raise

    def _decode(self) -> Iterator[av.VideoFrame]:
        packets = self.container.demux(self.stream)
        while True:
            try:
                decoded = next(packets).decode()  # the last packet, empty, flushes the decoder
            except StopIteration:
                return
            except av.FFmpegError as error:
                self.error = short_reason(error)
                break
            yield from decoded
        with contextlib.suppress(av.FFmpegError):
            yield from self.stream.codec_context.decode(None)

    def close(self) -> None:
        self.container.close()


def open_video(path: str, size: int, frame_step: int, fps: float | None, chunk_frames: int, backend: str,
               frame_shortfall: float, fit: str = "crop") -> VideoFrames:  # fmt: skip
    """A video file's sampled frames with ``backend``; arguments are checked by :func:`~framecache.extract.decode.iter_frames`."""
    video = _PyAVVideo(path)
    header = video.info
    if backend == "pyav":
        frames = VideoFrames(header)
        wanted = iter_sample_indices(header.num_frames, header.fps, frame_step, fps)
        frames.chunks = _iter_pyav(video, frames, wanted, size, chunk_frames, frame_shortfall, path, fit)
        return frames
    video.close()  # decord decodes; PyAV read the header, which decord's own count is checked against
    reader = _open_decord(path, resized_shape(header.height, header.width, size, fit))  # decord turns frames upright itself
    count = len(reader)
    if count == 0:
        raise FramecacheError(f"video has 0 frames: {path}")
    if count < header.num_frames:
        check_shortfall(count, header, frame_shortfall, path)
    frames = VideoFrames(replace(header, num_frames=count, fps=float(reader.get_avg_fps()) or header.fps))
    wanted = iter_sample_indices(count, frames.info.fps, frame_step, fps)
    frames.chunks = _iter_decord(reader, frames, wanted, size, chunk_frames, frame_shortfall, path, fit)
    return frames


def _iter_pyav(video: _PyAVVideo, frames: VideoFrames, wanted: Iterator[int], size: int, chunk_frames: int,
               frame_shortfall: float, path: str, fit: str) -> Iterator[np.ndarray]:  # fmt: skip
    """Decode sequentially, keep the frames ``wanted`` (increasing indices), yield upright cropped chunks; close the file."""
    info = video.info
    height, width = decoder_output_shape(info, size, fit)
    next_wanted = next(wanted, None)  # the index of the next frame to keep
    decoded = 0
    # One scaler for the whole video: ``frame.to_ndarray(width=...)`` builds a new one for every frame (the same
    # pixels; 0.3-0.5 ms of CPU more per frame at 320x240).
    scaler = av.video.reformatter.VideoReformatter()
    buffer: list[np.ndarray] = []
    with video.container:
        if next_wanted is None:
            return
        for frame in video.frames:
            decoded += 1
            if decoded - 1 != next_wanted:
                continue
            buffer.append(scaler.reformat(frame, format="rgb24", width=width, height=height, interpolation="BILINEAR").to_ndarray())
            next_wanted = next(wanted, None)
            if len(buffer) == chunk_frames or next_wanted is None:
                yield upright_square(buffer, info.rotation, size, fit)
                buffer = []
            if next_wanted is None:
                return
    frames.source_frames = decoded  # the stream ended (or broke) before the last wanted frame
    check_shortfall(decoded, info, frame_shortfall, path, video.error)
    if buffer:
        yield upright_square(buffer, info.rotation, size, fit)


def _iter_decord(reader: VideoReader, frames: VideoFrames, wanted: Iterator[int], size: int, chunk_frames: int,
                 frame_shortfall: float, path: str, fit: str) -> Iterator[np.ndarray]:  # fmt: skip
    """Yield upright cropped chunks read with ``get_batch``, ``chunk_frames`` of the ``wanted`` indices at a time.

    A chunk decord cannot decode is the start of a damaged part whose exact
    frame decord cannot tell: PyAV decodes the rest of the video from there.
    """
    while chunk_indices := list(itertools.islice(wanted, chunk_frames)):
        try:
            batch = reader.get_batch(chunk_indices)
        except _DECORD_ERRORS:
            del reader
            video = _PyAVVideo(path)
            rest = itertools.chain(chunk_indices, wanted)
            yield from _iter_pyav(video, frames, rest, size, chunk_frames, frame_shortfall, path, fit)
            return
        chunk = batch.asnumpy() if isinstance(batch, decord.nd.NDArray) else np.asarray(batch)
        yield upright_square(chunk, 0, size, fit)  # decord applied the display rotation


def _check_file(path: str) -> None:
    """Raise FramecacheError unless ``path`` is an existing, readable, non-empty file."""
    if not os.path.exists(path):
        raise FramecacheError(f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise FramecacheError(f"no permission to read the file: {path}")
    if os.path.getsize(path) == 0:
        raise FramecacheError(f"file is empty (0 bytes): {path}")


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover picture."""
    format_name = container.format.name
    if format_name == "image2" or format_name.endswith("_pipe"):
        raise FramecacheError(f"not a video file (a still image, format {format_name!r}): {path}")
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
                raise FramecacheError(f"video has no valid frame size ({stream.codec_context.width}x{stream.codec_context.height}): {path}")
            return stream
    raise FramecacheError(f"not a video file (no video stream): {path}")


def _header(container: av.container.InputContainer, stream: av.video.stream.VideoStream, first: av.VideoFrame,
            path: str) -> VideoInfo:  # fmt: skip
    """The stream's frame count (stored, or estimated from the duration), rate and displayed size."""
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    header_frames = int(stream.frames) or None
    num_frames = header_frames
    if num_frames is None:
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = 0.0
        num_frames = max(1, round(seconds * fps))  # a frame decoded: at least one
    pixel_aspect = Fraction(stream.sample_aspect_ratio or 1)
    if not PIXEL_ASPECTS_APPLIED[0] <= pixel_aspect <= PIXEL_ASPECTS_APPLIED[1]:
        pixel_aspect = Fraction(1)
    rotation = round((first.rotation or 0) / 90) % 4 * 90
    width, height = max(1, round(stream.codec_context.width * pixel_aspect)), stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    check_aspect(width, height, path)
    return VideoInfo(num_frames, fps, width, height, header_frames, rotation, pixel_aspect)


def _open_decord(path: str, shape: tuple[int, int]) -> VideoReader:
    """Open a decord reader that scales frames to ``shape`` (height, width) as it decodes."""
    try:
        return VideoReader(path, ctx=cpu(0), width=shape[1], height=shape[0], num_threads=DECORD_THREADS)
    except _DECORD_ERRORS as error:
        raise FramecacheError(f"cannot open video ({short_reason(error)}): {path}") from None


_DECORD_LOG_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")
_DECORD_CHECK_FAILED = re.compile(r"Check failed: .*? \(-?\d+ vs\. -?\d+\) ")
_AVERROR_INVALIDDATA = "1094995529"  # FFmpeg's AVERROR_INVALIDDATA, as decord prints it


def short_reason(error: BaseException) -> str:
    """A one-line reason from a decoder exception, without decord's source locations."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return error.strerror
    message = _DECORD_LOG_PREFIX.sub("", str(error))
    message = _DECORD_CHECK_FAILED.sub("", message).strip()
    message = message.replace(f"failed with {_AVERROR_INVALIDDATA}", "failed: invalid data")
    message = message.splitlines()[0] if message else type(error).__name__
    return message if len(message) <= 200 else message[:197] + "..."
