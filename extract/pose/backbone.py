"""The pose backbones (``pose``, ``pose_lite``, ``pose_heavy``): stage one's Embedder over BlazePose.

Frames come letterboxed to :data:`POSE_FRAME_SIZE` (the whole picture: a
person at its edge stays in it). Unlike a CNN, the pose model follows a person
from frame to frame, so :meth:`PoseBackbone.embed` is told which stream (a
video's view) each run of frames belongs to and where in it they start; a
stream's tracking state is kept between calls.

Weights: ``--weights PATH`` (a folder of ``.tflite`` files or a MediaPipe
``.task`` bundle, see :mod:`framecache.extract.pose.models`), or ``mediapipe``
(also spelt ``imagenet``, the option's default): the bundle in
``$FRAMECACHE_CACHE/pose`` (default ``~/.cache/framecache/pose``), downloaded
there from MediaPipe once where a network exists.
"""

from __future__ import annotations

import os
import urllib.request
from collections import OrderedDict
from pathlib import Path

import numpy as np

from framecache.common import config
from framecache.common.config import cache_folder
from framecache.common.errors import FramecacheError
from framecache.common.options import option_name
from framecache.common.provenance import BackboneDescription
from framecache.extract.backbones import checked_frames
from framecache.extract.interfaces import Finished
from framecache.extract.pose.features import FEATURE_DIM, FEATURE_NAMES, pose_features
from framecache.extract.pose.models import read_model_files
from framecache.extract.pose.tracker import MIN_PRESENCE, PoseEstimator

POSE_BACKBONES = dict(zip(config.POSE_BACKBONES, ("full", "lite", "heavy")))  # name -> landmark model size
POSE_FRAME_SIZE = 384
# "in f32" came with pinning OpenVINO's precision: caches made before (bfloat16 where the CPU has it) are not resumed.
PREPROCESSING = (f"frames letterboxed to {POSE_FRAME_SIZE} px; BlazePose detector (224 px letterbox, RGB -1..1) and "
                 "landmark model (256 px rotated crop, RGB 0..1), tracked from frame to frame; OpenVINO in f32")  # fmt: skip
DEFAULT_WEIGHTS = ("mediapipe", "imagenet")
BUNDLE_URL = "https://storage.googleapis.com/mediapipe-models/pose_landmarker/pose_landmarker_{size}/float16/latest/pose_landmarker_{size}.task"
SCORE = FEATURE_NAMES.index("score")
MAX_STREAMS = 256  # tracking states kept: far more than the videos in flight; the oldest (finished) go first


def pose_models_dir() -> Path:
    """Where the default pose models are kept: ``$FRAMECACHE_CACHE/pose``, default ``~/.cache/framecache/pose``."""
    return cache_folder("pose")


def resolve_pose_weights(name: str, weights: str) -> tuple[BackboneDescription, Path]:
    """The description of pose backbone ``name`` with ``weights``, and the models' path (folder or bundle)."""
    size = POSE_BACKBONES[name]
    if str(weights).lower() in ("none", "random"):
        raise FramecacheError(f"{option_name('backbone', name)} has no random weights: pass {option_name('weights', 'mediapipe')} "
                              "or the path of MediaPipe's pose models")  # fmt: skip
    if str(weights).lower() in DEFAULT_WEIGHTS:
        label, path = "mediapipe", _default_models(size)
    else:
        label, path = str(weights), Path(weights).expanduser()
    files = read_model_files(path, size)
    description = BackboneDescription(backbone=name, weights=label, weights_sha256=files.sha256, input_size=POSE_FRAME_SIZE,
                                      feature_dim=FEATURE_DIM, preprocessing=PREPROCESSING)  # fmt: skip
    return description, path


def installed_pose_models(size: str, folder: str | Path | None = None) -> Path | None:
    """Where ``size``'s models already are in ``folder`` (default :func:`pose_models_dir`): its ``.task`` bundle, else the
    folder itself where it holds ``pose_landmark_<size>.tflite``; None where neither is. Downloads nothing."""
    folder = pose_models_dir() if folder is None else Path(folder).expanduser()
    bundle = folder / f"pose_landmarker_{size}.task"
    if bundle.is_file() or (folder / f"pose_landmark_{size}.tflite").is_file():
        return bundle if bundle.is_file() else folder
    return None


def _default_models(size: str) -> Path:
    """MediaPipe's models in the cache folder (a folder of ``.tflite`` files or the bundle), fetched once if absent."""
    installed = installed_pose_models(size)
    if installed is not None:
        return installed
    folder = pose_models_dir()
    bundle = folder / f"pose_landmarker_{size}.task"
    url = BUNDLE_URL.format(size=size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = bundle.with_suffix(f".part-{os.getpid()}")
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as file:
            file.write(response.read(256 << 20))
        os.replace(partial, bundle)
        return bundle
    except OSError as error:
        raise FramecacheError(
            f"cannot get MediaPipe's pose models: {bundle.name} is not in {folder} and downloading it from {url} failed "
            f"({error}). Without internet: put that file, or pose_detection.tflite and pose_landmark_{size}.tflite, into "
            f"{folder}/ (the folder follows FRAMECACHE_CACHE), or pass {option_name('weights', 'PATH')} to them"
        ) from None


class PoseBackbone:
    """BlazePose as stage one's Embedder: letterboxed uint8 frames in, :data:`FEATURE_DIM` features per frame out."""

    def __init__(self, description: BackboneDescription, models: Path, batch_size: int = 32, threads: int | None = None):
        files = read_model_files(models, POSE_BACKBONES[description.backbone])
        if files.sha256 != description.weights_sha256:
            raise FramecacheError(f"the pose models found here ({files.source}) differ from the planned ones (SHA-256 "
                                  f"{description.weights_sha256}); make the same files available on every node")  # fmt: skip
        self.estimator = PoseEstimator(files, threads)
        self.name = description.backbone
        self.input_size = POSE_FRAME_SIZE
        self.feature_dim = FEATURE_DIM
        self.weights, self.weights_sha256 = description.weights, description.weights_sha256
        self.engine, self.precision, self.batch_size = "openvino", "f32", batch_size
        self.description = description
        self._crops: OrderedDict = OrderedDict()  # stream -> the crop its next frame is read in

    def embed(self, frames: np.ndarray, streams: list[tuple[object, int, int]] | None = None) -> np.ndarray:
        """uint8 ``(N, size, size, 3)`` → float32 ``(N, feature_dim)``; ``streams``: ``(stream, offset, count)`` per run
        of frames in order (default: all the start of one stream). A stream's frames must come in order."""
        frames = checked_frames(frames, self.input_size)
        features, start = [], 0
        for stream, offset, count in streams or [(None, 0, len(frames))]:
            crop = self._crops.pop(stream, None) if offset > 0 else None
            poses, self._crops[stream] = self.estimator.track(frames[start : start + count], crop)
            while len(self._crops) > MAX_STREAMS:
                self._crops.popitem(last=False)
            features.append(pose_features(poses, self.input_size))
            start += count
        return np.concatenate(features) if features else np.empty((0, self.feature_dim), np.float32)

    def start(self, frames: np.ndarray, streams: list[tuple[object, int, int]] | None = None) -> Finished:
        """:meth:`embed` at once: the tracker runs one frame after another, on this thread."""
        return Finished(self.embed(frames, streams))

    def piece_passes(self, features: np.ndarray) -> bool:
        """Whether a person is found in any of these frames."""
        return bool(np.any(features[:, SCORE] > 0))

    def video_failure(self, frames: int, passed: bool) -> str | None:
        """A video in which no frame has a person (no piece ``passed``) fails: its features would be all zeros."""
        if not passed:
            return f"no person found in any of its {frames} frames (pose presence below {MIN_PRESENCE})"
        return None
