"""What the bench reads from a GPU, where TensorFlow has one: the device, and its memory's peak during a phase.

Nothing here imports TensorFlow on a machine without an NVIDIA device node
(:func:`framecache.extract.engines.tensorflow_sees_gpu`), so the CPU bench
pays nothing for it.
"""

from __future__ import annotations

from framecache.extract.engines import tensorflow_gpu_details, tensorflow_sees_gpu

DEVICE = "GPU:0"  # stage one runs one backbone per process, on the first GPU TensorFlow sees


def describe() -> dict:
    """The GPU TensorFlow runs on: its name and compute capability; {} where TensorFlow has no GPU."""
    details = tensorflow_gpu_details()
    if not details:
        return {}
    capability = details.get("compute_capability")
    return {"gpu": details.get("device_name", "unknown"),
            "gpu_compute_capability": ".".join(map(str, capability)) if capability else "unknown"}


class PeakMemory:
    """TensorFlow's GPU memory during a ``with`` block: what was in use before it and the peak within it, in MB.

    Both stay ``None`` where TensorFlow has no GPU. TensorFlow's allocator
    counts what its tensors hold (the models' weights, the batches, the
    activations), not what it has reserved from the device.
    """

    def __init__(self):
        self.before_mb: float | None = None
        self.peak_mb: float | None = None
        self._gpu = tensorflow_sees_gpu()

    def __enter__(self) -> PeakMemory:
        if self._gpu:
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats(DEVICE)
            self.before_mb = tf.config.experimental.get_memory_info(DEVICE)["current"] / 2**20
        return self

    def __exit__(self, *exc) -> None:
        if self._gpu:
            import tensorflow as tf

            self.peak_mb = tf.config.experimental.get_memory_info(DEVICE)["peak"] / 2**20
