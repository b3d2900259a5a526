"""Decode a video (a file, or a folder of frames) into fixed-size RGB frames, as a person sees it, in chunks.

Resize policy (the same for every video and both backends): scale the
*shorter* side to ``size`` keeping the aspect ratio, then centre-crop
``size x size``, the standard ImageNet evaluation transform. Small videos
(e.g. 33x47) are upscaled the same way. The scaling happens inside the decoder
(decord's ``width``/``height`` arguments; PyAV's swscale with bilinear
interpolation), which measured 2-3x faster than decoding at full size and
resizing with ``cv2.resize(INTER_AREA)``; the crop is a numpy slice.

Frames are taken as displayed: a display rotation stored in the container
(phones store a portrait video as landscape frames plus a rotation) turns
them upright, and non-square pixels (a sample aspect ratio) are stretched to
the picture's shape, both before the resize. A video with neither decodes as
it always did.

Frame sampling: :func:`sample_indices` picks the frame indices to keep (every
frame, every k-th frame, or the frames nearest to a target fps) and both
backends decode exactly those.

Frame counts: a container's frame count is an estimate (an AVI index, an MP4
``nb_frames``, a last frame without a timestamp), so a video is judged by what
decodes. Decoding that ends early (the stream ends, or a packet does not
decode) keeps the frames before that point when at most ``frame_shortfall`` of
the header's count is missing (:func:`check_shortfall`); the caller learns how
many from :attr:`VideoFrames.source_frames`. A file that stops far short of its
header (a copy cut in half) raises, with the numbers. Where a container stores
no count (MKV, WebM) it is estimated from the duration and what decodes is the
video.

Backends (:mod:`framecache.extract.video_files`): ``"pyav"`` decodes
sequentially and keeps the sampled frames; ``"decord"`` reads chunks with
``VideoReader.get_batch``, and hands a damaged end to PyAV (decord cannot tell
where it begins). Frame folders (:mod:`framecache.extract.frame_folders`) are
read image by image whatever the backend.

Error policy: every problem a user can cause raises
:class:`~framecache.common.errors.FramecacheError` with a short reason and the
path. Errors found while decoding can come after some chunks were yielded, so
the caller must discard what it received for that video.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from framecache.common.config import AT_LEAST_ONE, DECODERS, FRAME_SHORTFALL
from framecache.common.errors import FramecacheError
from framecache.common.options import Interval, check, option_name

BACKENDS = DECODERS  # the decoders, one list: common.config.DECODERS

# The resize policies in words, recorded in the cache provenance. ``crop`` (the CNNs'): the ImageNet transform.
# ``letterbox`` (pose): the whole picture, so that a person at its edge is still in it.
RESIZE_POLICY = "shorter side to size keeping aspect ratio (bilinear, in the decoder), then centre crop size x size"
LETTERBOX_POLICY = "longer side to size keeping aspect ratio (bilinear, in the decoder), then black bars to size x size"
RESIZE_POLICIES = {"crop": RESIZE_POLICY, "letterbox": LETTERBOX_POLICY}
FITS = tuple(RESIZE_POLICIES)


def fit_of(resize_policy: str | None) -> str:
    """The fit (``crop`` or ``letterbox``) a provenance's resize policy names; ``crop`` for caches that name none."""
    return next((fit for fit, policy in RESIZE_POLICIES.items() if policy == resize_policy), "crop")


MAX_ASPECT = 8  # wider (or taller) than 8:1 is no camera's picture (a 1024x2 file): its resized frames would be huge


def check_aspect(width: int, height: int, path: str) -> None:
    """Refuse a picture whose aspect ratio no camera records: memory is sized by the frames, not by a header's word."""
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise FramecacheError(f"video is {width}x{height} pixels, an aspect ratio beyond {MAX_ASPECT}:1 that no camera "
                              f"records (each frame would be {max(width, height) * 224 // min(width, height)} pixels long "
                              f"once resized): {path}")  # fmt: skip


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, from its header, before decoding."""

    num_frames: int  # frames the decoder expects: the header's count (decord: its own), or estimated from the duration
    fps: float  # 0.0: unknown (a frame folder without a rate)
    width: int  # as displayed: pixel aspect and rotation applied
    height: int
    header_frames: int | None = None  # the count the container stores; None where it stores none (estimated)
    rotation: int = 0  # degrees the stored picture turns counter-clockwise to be shown upright: 0, 90, 180 or 270
    pixel_aspect: Fraction = Fraction(1)  # a stored pixel's width over its height

    @property
    def decoded_shape(self) -> tuple[int, int]:
        """(height, width) of the picture as stored, before rotation."""
        return (self.width, self.height) if self.rotation in (90, 270) else (self.height, self.width)


class VideoFrames:
    """One opened video's sampled frames, chunk by chunk; ``info`` (what the file says it holds) is known first.

    Iterating it yields uint8 RGB chunks ``(n, size, size, 3)``, ``n <= chunk_frames``.
    ``source_frames`` is ``info.num_frames`` until decoding ends earlier: then
    the number of the file's frames that decoded.
    """

    def __init__(self, info: VideoInfo):
        self.info = info
        self.source_frames = info.num_frames
        self.chunks: Iterator[np.ndarray] = iter(())

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.chunks


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
    return np.fromiter(iter_sample_indices(num_frames, native_fps, frame_step, fps), dtype=np.int64)


def iter_sample_indices(num_frames: int, native_fps: float, frame_step: int = 1, fps: float | None = None) -> Iterator[int]:
    """The indices of :func:`sample_indices`, one at a time: decoding takes them so, and its memory stays flat
    whatever number of frames a file's header claims."""
    check("num_frames", num_frames, int, Interval(0, None))
    check("frame_step", frame_step, int, AT_LEAST_ONE)
    if fps is None:
        return iter(range(0, num_frames, frame_step))
    check("fps", fps, float, Interval(0, None, "neither"))
    if frame_step != 1:
        raise FramecacheError(f"give either {option_name('frame_step')} or {option_name('fps')}, not both "
                              f"(got frame_step={frame_step!r}, fps={fps!r})")
    if not (isinstance(native_fps, (int, float, np.number)) and math.isfinite(native_fps) and native_fps > 0):
        raise FramecacheError(f"cannot sample at fps={fps!r}: the video's native fps is unknown ({native_fps!r})")
    if fps >= native_fps:
        return iter(range(num_frames))
    return _nearest_frames(num_frames, native_fps / fps)


def _nearest_frames(num_frames: int, frames_per_sample: float) -> Iterator[int]:
    """The frame nearest to each sample time k / fps inside the video, each frame once."""
    # Sample k at t = k / fps lies inside the video while t < num_frames / native_fps.
    last = -1
    for sample in range(math.ceil(num_frames / frames_per_sample - 1e-9)):
        index = min(math.floor(sample * frames_per_sample + 0.5), num_frames - 1)
        if index != last:
            yield index
            last = index


def iter_frames(
    path: str,
    size: int = 224,
    frame_step: int = 1,
    fps: float | None = None,
    chunk_frames: int = 32,
    backend: str = "pyav",
    frame_shortfall: float = FRAME_SHORTFALL,
    folder_fps: float | None = None,
    fit: str = "crop",
) -> VideoFrames:
    """The sampled frames of a video file or frame folder, as uint8 RGB chunks ``(n, size, size, 3)``, and its info.

    ``n <= chunk_frames``; concatenating the chunks gives every sampled frame
    in order, so memory stays flat however long the video. ``frame_shortfall``:
    the share of the header's frame count that may fail to decode at the end.
    ``folder_fps``: the frame rate of a folder of frames (it has none of its
    own). ``fit``: ``crop`` (the centre square) or ``letterbox`` (the whole
    picture in a square, with black bars). Arguments and the file are checked
    when this is called (the file is opened once, its header read once);
    decode errors are raised while iterating (see the module docstring).
    """
    from framecache.extract import frame_folders, video_files

    check("size", size, int, AT_LEAST_ONE)
    check("chunk_frames", chunk_frames, int, AT_LEAST_ONE)
    check("decoder", backend, choices=DECODERS)
    check("frame_shortfall", frame_shortfall, float, Interval(0, 1))
    check("fit", fit, choices=FITS)
    iter_sample_indices(0, 1.0, frame_step, fps)  # validate the sampling arguments before opening
    if not isinstance(path, (str, os.PathLike)):
        raise FramecacheError(f"video path must be a string, got {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        return frame_folders.open_folder(path, size, frame_step, fps, chunk_frames, folder_fps, fit)
    return video_files.open_video(path, size, frame_step, fps, chunk_frames, backend, frame_shortfall, fit)


def check_shortfall(decoded: int, info: VideoInfo, frame_shortfall: float, path: str, error: str | None = None) -> None:
    """Accept a video whose decoding ended after ``decoded`` of ``info.num_frames`` frames, or raise why not.

    ``error``: why decoding ended (None: the stream ended). An estimated count
    (no ``header_frames``) is never held against a video whose stream ended.
    """
    expected = info.header_frames or info.num_frames
    if error is None and info.header_frames is None and decoded > 0:
        return
    missing = expected - decoded
    if decoded > 0 and missing <= frame_shortfall * expected + 1e-9:
        return
    stopped = f"frame {decoded + 1} does not decode: {error}; " if error else ""
    raise FramecacheError(
        f"video is truncated or damaged: the header says {expected} frames but only {decoded} could be decoded "
        f"({stopped}{missing / expected:.0%} missing; {option_name('frame_shortfall', frame_shortfall)} accepts up to "
        f"{frame_shortfall:.0%} missing at the end): {path}"
    )


def resized_shape(height: int, width: int, size: int, fit: str = "crop") -> tuple[int, int]:
    """(height, width) scaled, keeping the aspect ratio, so that the shorter side (``crop``) or the longer side
    (``letterbox``) is ``size``."""
    if fit == "crop":
        if height <= width:
            return size, max(size, round(width * size / height))
        return max(size, round(height * size / width)), size
    if height >= width:
        return size, max(1, round(width * size / height))
    return max(1, round(height * size / width)), size


def decoder_output_shape(info: VideoInfo, size: int, fit: str = "crop") -> tuple[int, int]:
    """(height, width) to scale the stored picture to, so that once turned upright it is :func:`resized_shape`."""
    height, width = resized_shape(info.height, info.width, size, fit)
    return (width, height) if info.rotation in (90, 270) else (height, width)


def upright_square(frames: Sequence[np.ndarray], rotation: int, size: int, fit: str = "crop") -> np.ndarray:
    """Turn frames ``(H, W, 3)`` (a list, or an array of them) counter-clockwise by ``rotation`` degrees, then crop
    their central ``size x size`` (``crop``) or centre them on black ``size x size`` frames (``letterbox``): one new
    array ``(n, size, size, 3)``, each frame copied once."""
    square = (np.zeros if fit == "letterbox" else np.empty)((len(frames), size, size, 3), np.uint8)
    for index, frame in enumerate(frames):
        if rotation:
            frame = np.rot90(frame, k=rotation // 90)
        height, width = frame.shape[:2]
        if fit == "letterbox":
            top, left = (size - height) // 2, (size - width) // 2
            square[index, top : top + height, left : left + width] = frame
        else:
            top, left = (height - size) // 2, (width - size) // 2
            square[index] = frame[top : top + size, left : left + size]
    return square
