"""BlazePose's two models: where their files come from, and running them with OpenVINO (it reads ``.tflite`` directly).

A user names the models with ``--weights``: a folder holding a detector and a
landmark model (``pose_detection.tflite`` or ``pose_detector.tflite``, and
``pose_landmark_<size>.tflite`` or ``pose_landmarks_detector.tflite``), or a
MediaPipe Tasks bundle (``pose_landmarker_<size>.task``, a zip of
``pose_detector.tflite`` and ``pose_landmarks_detector.tflite``). The
provenance records the SHA-256 of both files together.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framecache.common.errors import FramecacheError

MODEL_SIZES = ("lite", "full", "heavy")
DETECTOR_NAMES = ("pose_detection.tflite", "pose_detector.tflite")
LANDMARK_NAMES = {size: (f"pose_landmark_{size}.tflite", "pose_landmarks_detector.tflite") for size in MODEL_SIZES}
BUNDLE_DETECTOR, BUNDLE_LANDMARKS = "pose_detector.tflite", "pose_landmarks_detector.tflite"
MAX_MODEL_BYTES = 64 << 20  # a BlazePose model is 3-30 MB: a bundle member declaring more is refused unread


@dataclass(frozen=True)
class PoseModelFiles:
    """The two models' bytes, and the SHA-256 over both (detector first) that the provenance records."""

    detector: bytes
    landmarks: bytes
    source: str  # where they were read from, for messages

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for part in (self.detector, self.landmarks):
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()


def read_model_files(weights: str | Path, size: str = "full") -> PoseModelFiles:
    """The detector and ``size`` landmark model from a folder or a ``.task`` bundle; a FramecacheError names what is missing."""
    path = Path(weights)
    if path.is_dir():
        detector = _first_existing(path, DETECTOR_NAMES)
        landmarks = _first_existing(path, LANDMARK_NAMES[size])
        if detector is None or landmarks is None:
            wanted = [" or ".join(names) for names, found in ((DETECTOR_NAMES, detector), (LANDMARK_NAMES[size], landmarks)) if found is None]
            raise FramecacheError(f"the pose model folder {path} lacks {' and '.join(wanted)}; put MediaPipe's BlazePose "
                                  "models there, or pass a pose_landmarker_<size>.task bundle")  # fmt: skip
        return PoseModelFiles(detector.read_bytes(), landmarks.read_bytes(), str(path))
    if path.is_file() and zipfile.is_zipfile(path):
        return _read_bundle(path)
    raise FramecacheError(f"pose models not found at {path}: pass a folder holding pose_detection.tflite and "
                          f"pose_landmark_{size}.tflite, or MediaPipe's pose_landmarker_{size}.task")  # fmt: skip


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


def _read_bundle(path: Path) -> PoseModelFiles:
    """The two members of a MediaPipe Tasks bundle, each size-checked before it is read."""
    try:
        with zipfile.ZipFile(path) as bundle:
            members = {info.filename.rsplit("/", 1)[-1]: info for info in bundle.infolist()}
            missing = [name for name in (BUNDLE_DETECTOR, BUNDLE_LANDMARKS) if name not in members]
            if missing:
                raise FramecacheError(f"{path} is not a MediaPipe pose bundle: it lacks {', '.join(missing)}")
            too_big = [name for name in (BUNDLE_DETECTOR, BUNDLE_LANDMARKS) if members[name].file_size > MAX_MODEL_BYTES]
            if too_big:
                raise FramecacheError(f"{path}: {', '.join(too_big)} declares more than {MAX_MODEL_BYTES >> 20} MB; not a pose model")
            return PoseModelFiles(bundle.read(members[BUNDLE_DETECTOR]), bundle.read(members[BUNDLE_LANDMARKS]), str(path))
    except (zipfile.BadZipFile, OSError) as error:
        raise FramecacheError(f"cannot read the pose bundle {path} ({error}); download it again") from None


class CompiledModel:
    """One ``.tflite`` model compiled by OpenVINO for the CPU: ``model(input) -> list of outputs`` (batch 1, float32)."""

    def __init__(self, model_bytes: bytes, threads: int | None = None):
        import openvino as ov

        core = ov.Core()
        model = _read_tflite(core, model_bytes)
        # f32, as the provenance records: left to itself, OpenVINO runs these models in bfloat16 on a CPU that has it
        # (AVX512-BF16, AMX), and pose features would differ from machine to machine (docs/benchmarks.md).
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return [np.array(results[output]) for output in self.outputs]


def _read_tflite(core, model_bytes: bytes):
    """OpenVINO reads a TFLite model from a file: write the bytes to a private temporary file first."""
    with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
        file.write(model_bytes)
        file.flush()
        return core.read_model(file.name)
