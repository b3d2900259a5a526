"""The two inference engines behind :class:`~framecache.extract.backbones.Backbone`.

Each turns a backbone's Keras model into a ``run(frames) -> features``
callable: uint8 ``(batch_size, size, size, 3)`` RGB in, float32
``(batch_size, feature_dim)`` out, with the conversion to float and the
backbone's normalisation (its spec's ``input_mean`` and ``input_scale``) run
inside the engine.

- ``openvino``: :func:`openvino_model` converts the Keras model to OpenVINO's
  CPU runtime once, caches the conversion on disk (:func:`openvino_cache_dir`)
  and compiles it; :func:`openvino_runner` runs each batch on
  :func:`openvino_streams` streams at once. The fastest on CPU.
- ``tensorflow``: :func:`tensorflow_runner`, the Keras model
  (:func:`keras_model`) in a ``tf.function``.

Precision: ``f32`` by default; ``bf16`` where the hardware runs it natively:
OpenVINO with its inference precision hint on a CPU whose OpenVINO
capabilities include BF16 (AVX512-BF16 or AMX, :func:`openvino_has_bf16`),
TensorFlow's ``mixed_bfloat16`` policy on a GPU that has bfloat16 (compute
capability 8+, :func:`tensorflow_gpu_has_bf16`). Which engine runs, and
refusing ``bf16`` where it is missing, is :mod:`framecache.extract.backbones`'
job.

TensorFlow and OpenVINO are imported by the functions that need them, never
when this module is.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from framecache.common.config import cache_folder
from framecache.common.errors import FramecacheError
from framecache.extract import lite0
from framecache.extract.interfaces import PENDING_BATCHES

if TYPE_CHECKING:
    from framecache.common.provenance import BackboneDescription
    from framecache.extract.backbones import BackboneSpec

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_SEED = 0  # random weights are reproducible, so predict can rebuild them


def keras_model(spec: BackboneSpec, weights_file: Path | None, dtype_policy: str = "float32"):
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
    else:
        model = _scaled_to_order_one(model, spec)
    model.trainable = False
    return model


def _scaled_to_order_one(model, spec: BackboneSpec):
    """The random-weights ``model`` with its features multiplied by a power of two that brings them to order 1.

    A deep network with random weights and untrained batch norms shrinks its signal layer by layer: EfficientNetB0's
    random features are near 3e-6, MobileNetV2's and Lite0's near 1e-11, below what the cache's float16 holds, so
    every frame of every video was stored as the same value. The factor comes from a fixed probe batch; a power of
    two changes no digit of a feature, and small differences between engines or precisions cannot change it.
    """
    import keras

    probe = np.random.default_rng(RANDOM_WEIGHTS_SEED).integers(0, 256, (2, spec.input_size, spec.input_size, 3))
    probe = (probe.astype(np.float32) - np.float32(spec.input_mean)) / np.float32(spec.input_scale)
    rms = np.sqrt(np.mean(np.asarray(model(probe, training=False), dtype=np.float64) ** 2))
    scale = 2.0 ** -round(np.log2(rms)) if np.isfinite(rms) and rms > 0 else 1.0  # nothing to scale: as built
    inputs = keras.Input((spec.input_size, spec.input_size, 3))
    return keras.Model(inputs, keras.layers.Rescaling(scale, name="random_weights_scale")(model(inputs)), name=model.name)


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


def tensorflow_runner(model, spec: BackboneSpec, batch_size: int) -> Callable:
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


def tensorflow_sees_gpu() -> bool:
    """True when TensorFlow has a GPU; imports TensorFlow only where an NVIDIA device node exists."""
    if not any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/dxg")):
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def tensorflow_gpu_details() -> dict:
    """What TensorFlow knows of the GPU it runs on (``device_name``, ``compute_capability``); {} where it has none."""
    if not tensorflow_sees_gpu():
        return {}
    import tensorflow as tf

    return tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])


def tensorflow_gpu_has_bf16() -> bool:
    """True where TensorFlow runs on a GPU with native bfloat16 (NVIDIA compute capability 8.0 or newer)."""
    return tuple(tensorflow_gpu_details().get("compute_capability") or (0, 0)) >= (8, 0)


def configure_tensorflow(threads: int | None) -> None:
    """Before TensorFlow's first op: its CPU threads (``threads``; default: TensorFlow's own), and GPU memory on demand.

    TensorFlow takes all of a GPU's memory at its first op by default, which
    starves any other process on that GPU (ray #13680); with memory growth it
    takes what it needs. Both settings only apply before TensorFlow starts:
    later calls cannot change them and are logged.
    """
    if threads is None and not tensorflow_sees_gpu():
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


# OpenVINO runs each batch as two half-batches on two single-thread streams at once
# (``openvino_streams``). Measured on 2 CPU cores, EfficientNetB0, frames/s: alone, 215
# with two streams of 8 frames vs 201 for one LATENCY stream of 16; while another process
# keeps a core half busy, as decoders do during extraction, 112 vs 83: one multi-thread
# stream stalls at every layer whenever one of its threads is preempted, independent
# streams do not. ONNX Runtime 1.32 (tf2onnx 1.17) ran 141 against OpenVINO's 160 (LATENCY,
# batch 32) in one side-by-side run, so it is not offered. OpenVINO would default to
# bfloat16 on CPUs with AMX/AVX512-BF16 (Lite0 ImageNet on the demo's frames: cosine to f32
# median 0.997, min 0.980), so f32 is asked for explicitly unless the user chose ``precision="bf16"``.


def import_openvino():
    """``import openvino`` and its model converter, with usage telemetry declined (see :func:`_telemetry_declined`);
    a function, so that the import waits until an engine is needed."""
    with _telemetry_declined():
        import openvino
        import openvino.tools.ovc  # noqa: F401  (its import checks consent too)

    return openvino


@contextlib.contextmanager
def _telemetry_declined():
    """OpenVINO's model conversion with its usage telemetry declined, for this block only.

    By default ``import openvino`` and ``openvino.convert_model`` send a usage
    event to Google Analytics (and write a client id under ``~/intel``) unless
    the user ran ``opt_in_out --opt_out``. framecache runs on clinical data, often offline:
    it sends nothing. The consent check answers "declined" while the block
    runs and is restored after it; the user's global choice is left as it is.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # openvino-telemetry is an optional dependency of openvino: nothing would be sent
        yield
        return
    saved = OptInChecker.__dict__["check"]
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
    try:
        yield
    finally:
        OptInChecker.check = saved


def openvino_cache_dir() -> Path:
    """Where converted OpenVINO models are kept: ``$FRAMECACHE_CACHE/openvino``, default ``~/.cache/framecache``."""
    return cache_folder("openvino")


def _openvino_model_path(spec: BackboneSpec, description: BackboneDescription) -> Path:
    """The cached conversion's path: keyed by weights, versions and the code that builds the model (any batch size)."""
    openvino = import_openvino()

    # The code that makes the model: backbones.py (the specs), this module (random weights' seed, conversion), lite0.py.
    sources = (Path(__file__).with_name("backbones.py"), Path(__file__), Path(lite0.__file__))
    code = hashlib.sha256(b"".join(source.read_bytes() for source in sources)).hexdigest()
    key = {
        "weights": description.weights_sha256 or f"random-seed{RANDOM_WEIGHTS_SEED}",
        "keras": version("keras"),
        "openvino": openvino.__version__,
        "code": code,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return openvino_cache_dir() / f"{spec.name}-{digest}.xml"


def openvino_model(spec: BackboneSpec, description: BackboneDescription, weights_file: Path | None, batch_size: int, streams: int,
                   precision: str = "f32", threads: int | None = None):
    """The backbone compiled for OpenVINO's CPU runtime, converted from Keras once and cached on disk.

    ``batch_size`` frames per infer request, ``streams`` requests run at once
    on ``threads`` CPU threads (default: OpenVINO's, every core);
    ``precision`` is OpenVINO's inference precision hint (the cached conversion is f32 either way).

    The conversion is kept with its batch size open, and set to ``batch_size``
    before compiling: the compiled shapes are fixed, and a run with another
    batch size or another number of streams reads the same file. Converting
    takes ~10 s (it imports TensorFlow); loading the cached conversion ~0.5 s
    without TensorFlow.
    """
    openvino = import_openvino()
    core = openvino.Core()
    config = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(streams), "INFERENCE_PRECISION_HINT": precision}
    if threads:  # a share of the machine (a Ray actor): other processes run OpenVINO beside this one
        config["INFERENCE_NUM_THREADS"] = str(threads)
        # OpenVINO pins its threads to cores, the same first cores in every process: two single-thread actors on
        # 2 cores then share one (measured: 47 frames/s each pinned, 77 each unpinned).
        config["ENABLE_CPU_PINNING"] = "NO"
    path = _openvino_model_path(spec, description)
    converted = _cached_conversion(core, path)
    if converted is None:
        with _one_converter_at_a_time(path):
            converted = _cached_conversion(core, path)  # made by the process this one waited for
            if converted is None:
                converted = _converted(openvino, keras_model(spec, weights_file), spec)
                with contextlib.suppress(OSError):  # a read-only cache only costs the conversion next time
                    path.parent.mkdir(parents=True, exist_ok=True)
                    partial = path.with_name(f".{os.getpid()}.{path.name}")
                    openvino.save_model(converted, partial, compress_to_fp16=False)
                    partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
                    partial.replace(path)  # the .xml last: its presence means the pair is complete
    converted.reshape([batch_size, spec.input_size, spec.input_size, 3])
    return core.compile_model(converted, "CPU", config)


def _cached_conversion(core, path: Path):
    """The conversion cached at ``path``, or None where there is none (or it cannot be read: it is converted again)."""
    if path.is_file():
        with contextlib.suppress(RuntimeError):
            return core.read_model(path)
    return None


CONVERSION_WAIT_S = 600  # the longest a process waits for another's conversion before converting itself


@contextlib.contextmanager
def _one_converter_at_a_time(path: Path, wait_s: float = CONVERSION_WAIT_S):
    """Hold the lock of ``path``'s conversion: processes sharing the cache folder (the Ray actors of a node, one per core
    by default) convert one at a time, and those that waited read the first one's file, instead of each importing
    TensorFlow and converting at once (~0.8 GB and ~10 s each). The lock goes with its process, however it ends; where
    the folder cannot hold one (read-only, a network file system without locks, or no ``fcntl``), or after ``wait_s``,
    each converts."""
    try:
        import fcntl  # POSIX only

        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(f".{path.stem}.lock"), "a")  # closed below, releasing the lock
    except (ImportError, OSError):  # Windows, or a read-only folder: each process converts
        yield
        return
    with lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # another process is converting
                if time.monotonic() > deadline:
                    log.warning("waited %.0f s for another process converting %s; converting here too", wait_s, path.name)
                    break
                time.sleep(0.2)
            except OSError:  # no locks on this file system
                break
        yield


def _converted(openvino, model, spec: BackboneSpec):
    """The Keras ``model`` in OpenVINO, taking uint8 frames, its batch size left open (``-1``)."""
    import warnings

    with warnings.catch_warnings(), _telemetry_declined():  # Keras warns that the tracer passes its input as a tuple
        warnings.simplefilter("ignore", UserWarning)
        converted = openvino.convert_model(model, input=[(-1, spec.input_size, spec.input_size, 3)])
    return _with_uint8_input(openvino, converted, spec)


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


def openvino_streams(batch_size: int, threads: int | None = None) -> int:
    """How many inference streams split each batch: 2 where there are 2+ threads and the batch splits evenly.

    OpenVINO shares the ``threads`` (default: every core) between the streams.
    """
    return 2 if (threads or available_cores()) >= 2 and batch_size % 2 == 0 else 1


def openvino_runner(compiled, streams: int) -> Callable[[np.ndarray], _RequestGroup]:
    """``start(batch)``: run a batch as ``streams`` equal parts on as many infer requests at once, without waiting.

    Up to :data:`~framecache.extract.interfaces.PENDING_BATCHES` batches run
    at once (a stream that ends its part early starts on the next batch), each
    on its own group of requests, taken in turn; a batch's features must be taken
    (:meth:`_RequestGroup.result`) before its group is used again.
    """
    groups = [_RequestGroup([compiled.create_infer_request() for _ in range(streams)]) for _ in range(PENDING_BATCHES)]
    turns = itertools.cycle(groups)
    return lambda inputs: next(turns).start(inputs)


class _RequestGroup:
    """Infer requests that run one batch together, a part each (a :class:`~framecache.extract.interfaces.PendingFeatures`)."""

    def __init__(self, requests: list):
        self.requests = requests
        self.inputs: np.ndarray | None = None  # the batch, shared with OpenVINO (not copied): kept until the group's next batch
        self.taken = True
        self.ended = [0.0] * len(requests)
        for number, request in enumerate(requests):
            request.set_callback(self._ended, number)

    def _ended(self, number: int) -> None:  # on one of OpenVINO's threads
        self.ended[number] = time.monotonic()

    def start(self, inputs: np.ndarray) -> _RequestGroup:
        if not self.taken:
            raise RuntimeError(f"more than {PENDING_BATCHES} batches started before the first one's features were taken")
        self.inputs, self.taken = inputs, False
        for request, part in zip(self.requests, np.split(inputs, len(self.requests))):
            request.start_async([part], share_inputs=True)
        return self

    def result(self) -> np.ndarray:
        for request in self.requests:
            request.wait()
        self.taken = True
        return np.concatenate([np.array(request.get_output_tensor(0).data, dtype=np.float32) for request in self.requests])

    @property
    def finished_at(self) -> float:
        return max(self.ended)


def openvino_has_bf16() -> bool:
    """True where OpenVINO's CPU plugin runs bfloat16 natively (AVX512-BF16 or AMX): its capabilities say BF16."""
    openvino = import_openvino()
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
