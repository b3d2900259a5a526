"""A folder of frames read as a video: JPEG or PNG images, one per frame, in natural order (2 before 10).

Datasets such as UCF101's frame releases, Weizmann and many clinical sets
come as folders of images. A folder holds no frame rate: it comes from the
CSV's ``fps`` column or ``--folder-fps``, and is needed only to sample at a
target ``--fps`` (and for frame times). Frames are resized as video frames
are (:mod:`framecache.extract.decode`), with OpenCV: area averaging to shrink,
bilinear to enlarge; a JPEG's EXIF orientation is applied.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import cv2
import numpy as np

from framecache.common.errors import FramecacheError
from framecache.common.options import option_name
from framecache.extract.decode import (
    VideoFrames,
    VideoInfo,
    check_aspect,
    iter_sample_indices,
    resized_shape,
    upright_square,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def frame_files(folder: str) -> list[str]:
    """The image files of ``folder`` in natural order (``frame_2`` before ``frame_10``); hidden files skipped."""
    names = [name for name in os.listdir(folder) if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")]
    return [os.path.join(folder, name) for name in sorted(names, key=_natural_key)]


def _natural_key(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name)]


def open_folder(path: str, size: int, frame_step: int, fps: float | None, chunk_frames: int,
                folder_fps: float | None, fit: str = "crop") -> VideoFrames:  # fmt: skip
    """A frame folder's sampled frames; arguments are checked by :func:`~framecache.extract.decode.iter_frames`."""
    try:
        files = frame_files(path)
    except OSError as error:
        raise FramecacheError(f"cannot list the frame folder ({error.strerror}): {path}") from None
    if not files:
        raise FramecacheError(f"folder holds no frames (JPEG or PNG images, named in frame order): {path}")
    if fps is not None and not folder_fps:
        raise FramecacheError(
            f"cannot sample the frame folder {path} at {option_name('fps', fps)}: a folder has no frame rate of its own; "
            f"give it in an fps column of the CSV or with {option_name('folder_fps')}"
        )
    height, width = _read(files[0], path).shape[:2]
    check_aspect(width, height, path)
    frames = VideoFrames(VideoInfo(len(files), float(folder_fps or 0.0), width, height, header_frames=len(files)))
    wanted = iter_sample_indices(len(files), frames.info.fps, frame_step, fps)
    frames.chunks = _iter_folder([files[index] for index in wanted], frames.info, size, chunk_frames, path, fit)
    return frames


def _iter_folder(files: list[str], info: VideoInfo, size: int, chunk_frames: int, path: str, fit: str) -> Iterator[np.ndarray]:
    height, width = resized_shape(info.height, info.width, size, fit)
    interpolation = cv2.INTER_AREA if height < info.height else cv2.INTER_LINEAR
    for start in range(0, len(files), chunk_frames):
        chunk = []
        for file in files[start : start + chunk_frames]:
            image = _read(file, path)
            if image.shape[:2] != (info.height, info.width):
                raise FramecacheError(
                    f"frame folder mixes image sizes: {os.path.basename(file)} is {image.shape[1]}x{image.shape[0]}, "
                    f"the first frame {info.width}x{info.height}; resize them alike: {path}"
                )
            chunk.append(cv2.resize(image, (width, height), interpolation=interpolation))
        yield upright_square(chunk, 0, size, fit)


def _read(file: str, folder: str) -> np.ndarray:
    """One frame as uint8 RGB (H, W, 3)."""
    image = cv2.imread(file, cv2.IMREAD_COLOR)
    if image is None:
        raise FramecacheError(f"cannot read the image {os.path.basename(file)} (damaged, or not a JPEG/PNG): {folder}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
