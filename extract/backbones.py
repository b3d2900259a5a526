"""Every frozen backbone behind one factory, each with its own preprocessing.

>>> backbone = build_backbone("efficientnetb0", weights="imagenet")
>>> features = backbone.embed(frames)          # uint8 (N, 224, 224, 3) -> float32 (N, 1280)

``weights`` is ``imagenet`` (Keras' cache, downloaded where a network
exists), ``none`` (random: no class signal, recorded as ``random``) or a
path to a weights file. Random weights are never a silent fallback.

Engines: ``openvino`` (OpenVINO's CPU runtime on the converted Keras model,
the fastest here), ``tensorflow`` (the Keras model in a ``tf.function``), and
``auto`` = OpenVINO when it is installed. Both give the same features
(cosine >= 0.999 per frame, tested); the engine is not part of the provenance.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# oneDNN is off by default on some CPUs; it makes TensorFlow ~1.6x faster here
# with equal outputs. It must be set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from common.errors import FramecacheError

INPUT_SIZE = 224
RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and feed it."""

    name: str
    build: Callable[[str | None], object]  # weights ("imagenet" or None) -> keras.Model, pooled features
    preprocess: Callable[[np.ndarray], np.ndarray]  # float32 0..255 -> model input, in place allowed
    preprocessing: str  # recorded in the provenance
    imagenet_file: str  # the file Keras caches under ~/.keras/models
    feature_dim: int = 1280
    input_size: int = INPUT_SIZE
    fetch_imagenet: Callable[[], Path] | None = None  # default: Keras' own download into its cache


def _efficientnetb0(weights: str | None):
    import keras

    return keras.applications.EfficientNetB0(
        include_top=False, weights=weights, pooling="avg", input_shape=(INPUT_SIZE, INPUT_SIZE, 3)
    )


def _mobilenet_v2(weights: str | None):
    import keras

    return keras.applications.MobileNetV2(
        include_top=False, weights=weights, pooling="avg", alpha=1.0, input_shape=(INPUT_SIZE, INPUT_SIZE, 3)
    )


def _identity(frames: np.ndarray) -> np.ndarray:
    return frames


def _minus_one_to_one(frames: np.ndarray) -> np.ndarray:
    frames /= 127.5
    frames -= 1.0
    return frames


def _registry() -> dict[str, BackboneSpec]:
    specs = [
        BackboneSpec(
            "efficientnetb0",
            _efficientnetb0,
            _identity,
            "RGB 0..255 (the model rescales and normalises inside)",
            "efficientnetb0_notop.h5",
        ),
        BackboneSpec(
            "mobilenet_v2",
            _mobilenet_v2,
            _minus_one_to_one,
            "RGB x/127.5 - 1",
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
    ]
    from extract import lite0

    specs.append(lite0.spec())
    return {spec.name: spec for spec in specs}


def available_backbones() -> list[str]:
    """Names accepted by ``build_backbone``."""
    return sorted(_registry())


def _spec(name: str) -> BackboneSpec:
    registry = _registry()
    if name not in registry:
        raise FramecacheError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(registry))}")
    return registry[name]


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights (``$KERAS_HOME/models``, default ``~/.keras/models``)."""
    return Path(os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))) / "models"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_message(spec: BackboneSpec, cause: BaseException | None) -> str:
    target = keras_models_dir() / spec.imagenet_file
    reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200]})" if cause else ""
    return (
        f"cannot get ImageNet weights for {spec.name}: {target} is not in Keras' cache and downloading it failed{reason}. "
        f"On a machine without internet either copy {spec.imagenet_file} (from a machine where Keras downloaded it) "
        f"to {target.parent}/, or pass WEIGHTS=/path/to/weights-file (--weights), "
        "or use BACKBONE=efficientnet_lite0, whose ImageNet weights ship in a Python package. "
        "(Keras deletes a cached file whose hash does not match and downloads it again.)"
    )


def resolve_weights(name: str, weights: str) -> tuple[str, str | None, Path | None]:
    """Check the weights are available; return ``(weights name, sha256, file)``.

    ``weights`` name is ``imagenet``, ``random`` or the file's name. May
    download (through Keras) where a network exists.
    """
    spec = _spec(name)
    if weights in ("none", "random", "None"):
        return "random", None, None
    if weights == "imagenet":
        path = spec_imagenet_path(spec)
        return "imagenet", sha256_of(path), path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FramecacheError(
            f"weights file not found: {weights}; pass --weights imagenet, none, or the path of a Keras weights file for {name}"
        )
    return path.name, sha256_of(path), path.resolve()


def spec_imagenet_path(spec: BackboneSpec) -> Path:
    """The ImageNet weights file in Keras' cache, fetched or converted on first use."""
    if spec.fetch_imagenet is not None:
        try:
            return spec.fetch_imagenet()
        except FramecacheError:
            raise
        except Exception as error:
            raise FramecacheError(f"cannot prepare ImageNet weights for {spec.name}: {error}") from None
    path = keras_models_dir() / spec.imagenet_file
    if path.is_file():
        return path
    try:
        spec.build("imagenet")  # Keras downloads into its cache where a network exists
    except Exception as error:
        raise FramecacheError(_offline_message(spec, error)) from None
    if not path.is_file():
        raise FramecacheError(_offline_message(spec, None))
    return path


def describe_backbone(name: str, weights: str) -> dict:
    """The provenance of a backbone, without building it (cheap: hashes the weights file)."""
    spec = _spec(name)
    weights_name, sha256, path = resolve_weights(name, weights)
    return {
        "backbone": spec.name,
        "weights": weights_name,
        "weights_sha256": sha256,
        "weights_file": str(path) if path else None,
        "input_size": spec.input_size,
        "feature_dim": spec.feature_dim,
        "preprocessing": spec.preprocessing,
    }


class Backbone:
    """A frozen backbone in inference mode: uint8 frames in, float32 features out."""

    def __init__(self, spec: BackboneSpec, model, provenance: dict, engine: str, batch_size: int):
        self.name = spec.name
        self.input_size = spec.input_size
        self.feature_dim = spec.feature_dim
        self.weights = provenance["weights"]
        self.weights_sha256 = provenance["weights_sha256"]
        self.engine = engine
        self.batch_size = batch_size
        self._spec = spec
        self._provenance = provenance
        self._run = _openvino_runner(model, spec, batch_size) if engine == "openvino" else _tensorflow_runner(model, spec, batch_size)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``(N, size, size, 3)`` RGB → float32 ``(N, feature_dim)``, in fixed-size batches."""
        frames = np.asarray(frames)
        expected = (self.input_size, self.input_size, 3)
        if frames.ndim != 4 or frames.shape[1:] != expected:
            raise ValueError(f"frames must be (N, {self.input_size}, {self.input_size}, 3), got {frames.shape}")
        features = np.empty((len(frames), self.feature_dim), np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            count = len(batch)
            if count < self.batch_size:  # pad: compiled shapes stay fixed
                batch = np.concatenate([batch, np.zeros((self.batch_size - count, *expected), batch.dtype)])
            inputs = self._spec.preprocess(batch.astype(np.float32))
            features[start : start + count] = self._run(inputs)[:count]
        return features

    def provenance(self) -> dict:
        return dict(self._provenance)


def _tensorflow_runner(model, spec: BackboneSpec, batch_size: int):
    import tensorflow as tf

    signature = [tf.TensorSpec((batch_size, spec.input_size, spec.input_size, 3), tf.float32)]
    forward = tf.function(lambda inputs: model(inputs, training=False), input_signature=signature)
    return lambda inputs: forward(tf.constant(inputs)).numpy()


def _openvino_runner(model, spec: BackboneSpec, batch_size: int):
    import warnings

    import openvino

    with warnings.catch_warnings():  # Keras warns that the tracer passes its input as a tuple
        warnings.simplefilter("ignore", UserWarning)
        converted = openvino.convert_model(model, input=[(batch_size, spec.input_size, spec.input_size, 3)])
    compiled = openvino.Core().compile_model(converted, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda inputs: np.array(request.infer([inputs])[0], dtype=np.float32, copy=True)


def _pick_engine(engine: str) -> str:
    if engine not in ("auto", "openvino", "tensorflow"):
        raise FramecacheError(f"engine must be auto, openvino or tensorflow, got {engine!r}")
    if engine == "tensorflow":
        return engine
    try:
        import openvino  # noqa: F401
    except ImportError:
        if engine == "openvino":
            raise FramecacheError("engine openvino asked for, but the openvino package is not installed") from None
        return "tensorflow"
    return "openvino"


def build_backbone(name: str = "efficientnetb0", weights: str = "imagenet", engine: str = "auto", batch_size: int = 32) -> Backbone:
    """Build a frozen backbone ready to ``embed`` frames."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise FramecacheError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    import keras

    spec = _spec(name)
    provenance = describe_backbone(name, weights)
    keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)  # random weights are reproducible, so predict can rebuild them
    model = spec.build(None)
    if provenance["weights_file"]:
        try:
            model.load_weights(provenance["weights_file"])
        except Exception as error:
            raise FramecacheError(
                f"cannot load weights {provenance['weights_file']} into {name}: {str(error).splitlines()[0][:300]}; "
                f"the file must hold Keras weights for {name} without its classifier (include_top=False)"
            ) from None
    model.trainable = False
    return Backbone(spec, model, provenance, _pick_engine(engine), batch_size)


def backbone_from_provenance(provenance: dict, engine: str = "auto", batch_size: int = 32) -> Backbone:
    """Rebuild the backbone a cache or trained run was made with; refuse other weights."""
    weights = provenance["weights"]
    if weights not in ("imagenet", "random"):
        weights = provenance.get("weights_file") or weights
    backbone = build_backbone(provenance["backbone"], weights, engine=engine, batch_size=batch_size)
    if weights != "random" and backbone.weights_sha256 != provenance.get("weights_sha256"):
        raise FramecacheError(
            f"the weights found for {provenance['backbone']} ({weights}) differ from those the model was trained with "
            f"(sha256 {str(provenance.get('weights_sha256'))[:12]}…); put the original file back at {weights}"
        )
    return backbone
