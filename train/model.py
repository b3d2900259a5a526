"""The GRU classifier, and saving it together with what ``predict`` needs to use it.

Inputs are a padded feature sequence ``(batch, time, D)`` and its bool mask
``(batch, time)``. The mask goes to the per-video input transforms (centring,
differences), to every recurrent layer and to the average over time, so padded
steps never change the output: a video padded to any length gets the same
prediction. The transforms are layers of the model, so ``predict`` and
``evaluate`` apply them as training did.

A saved ``model.keras`` carries one extra member, ``framecache.json``: the
labels, the cache's provenance (how stage one made the features) and the
train-time sampling on top of it (``max_len``, ``frame_step``). Keras ignores
the member; :func:`read_metadata` reads it back, the provenance as a
:class:`~framecache.common.provenance.Provenance` (a model saved by any
earlier version included).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np

from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint
from framecache.common.provenance import Provenance
from framecache.train.combine import FLOOR, Combiner
from framecache.train.config import INPUT_CHOICES
from framecache.train.parts import part_inputs, pooled_features
from framecache.train.temporal import temporal_transform

METADATA_NAME = "framecache.json"
# framecache.json holds the run's video paths: ~60 MB for a million videos. A member declaring more is not ours
# (a zip bomb inflates a few MB to gigabytes): refused before it is read.
MAX_METADATA_BYTES = 256 << 20


@keras.saving.register_keras_serializable(package="framecache")
class TemporalInputs(keras.layers.Layer):
    """:func:`framecache.train.temporal.temporal_transform` as a layer of the model, on ``[features, mask]``.

    ``centre``, ``differences`` and ``keep_raw`` as there; padding never enters
    the transforms, and padded steps come out as zeros.
    """

    def __init__(self, centre: bool = False, differences: bool = False, keep_raw: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.centre = centre
        self.differences = differences
        self.keep_raw = keep_raw

    def call(self, inputs):
        features, mask = inputs
        return temporal_transform(features, mask, keras.ops, self.centre, self.differences, self.keep_raw)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape[0])
        if shape[-1] is not None:
            shape[-1] *= (1 + (self.centre and self.keep_raw)) + self.differences
        return tuple(shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "centre": self.centre, "differences": self.differences, "keep_raw": self.keep_raw}


@keras.saving.register_keras_serializable(package="framecache")
class MixProbabilities(keras.layers.Layer):
    """``weight * p_gru + (1 - weight) * p_appearance``: how models saved by framecache 0.3 and earlier mix (loads them)."""

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs):
        temporal, appearance = inputs
        return self.weight * temporal + (1.0 - self.weight) * appearance

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="framecache")
class PartInputs(keras.layers.Layer):
    """:func:`framecache.train.parts.part_inputs` as a layer: ``[features, mask]`` -> ``[part's features, part's mask]``."""

    def __init__(self, start: int = 0, stop: int = 0, presence: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop, self.presence = int(start), int(stop), presence

    def call(self, inputs):
        features, mask = inputs
        return list(part_inputs(features, mask, self.start, self.stop, self.presence, keras.ops))

    def compute_output_shape(self, input_shape):
        features, mask = input_shape
        return [(*features[:-1], self.stop - self.start), tuple(mask)]

    def get_config(self) -> dict:
        return {**super().get_config(), "start": self.start, "stop": self.stop, "presence": self.presence}


@keras.saving.register_keras_serializable(package="framecache")
class PooledInputs(keras.layers.Layer):
    """:func:`framecache.train.parts.pooled_features` as a layer: ``[features, mask]`` -> ``(batch, 2 * D)`` (``mean_only``: ``D``)."""

    def __init__(self, mean_only: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mean_only = bool(mean_only)

    def call(self, inputs):
        features, mask = inputs
        pooled = pooled_features(features, mask, keras.ops)
        return pooled[:, : features.shape[-1]] if self.mean_only else pooled

    def compute_output_shape(self, input_shape):
        features = input_shape[0]
        return (features[0], features[-1] * (1 if self.mean_only else 2))

    def get_config(self) -> dict:
        return {**super().get_config(), "mean_only": self.mean_only}


@keras.saving.register_keras_serializable(package="framecache")
class CombineParts(keras.layers.Layer):
    """:func:`framecache.train.combine.combine` as a layer: the parts' class probabilities in, the run's out."""

    def __init__(self, method: str = "classwise", weights: list | None = None, bias: list | None = None, **kwargs):
        super().__init__(**kwargs)
        self.method = method
        self.part_weights = np.asarray(weights, dtype=np.float32)  # (parts, classes)
        self.bias = np.asarray(bias, dtype=np.float32)

    def call(self, inputs):
        ops = keras.ops
        if self.method == "weight":
            return sum(ops.convert_to_tensor(self.part_weights[index]) * part for index, part in enumerate(inputs))
        scores = sum(ops.convert_to_tensor(self.part_weights[index]) * ops.log(ops.clip(part, FLOOR, 1.0)) for index, part in enumerate(inputs))
        return ops.softmax(scores + ops.convert_to_tensor(self.bias), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "method": self.method, "weights": self.part_weights.tolist(), "bias": self.bias.tolist()}


def baseline_layers(features, mask, baseline, name: str):
    """``baseline`` (:class:`framecache.train.baseline.Baseline`) as layers reading ``(features, mask)``: its parts pooled,
    standardised, then the logistic regression's linear layer and softmax. Padding never enters it."""
    spans = baseline.spans or [(0, features.shape[-1], None)]
    pieces = []
    for number, (start, stop, presence) in enumerate(spans):
        x, m = features, mask
        if (start, stop, presence) != (0, features.shape[-1], None):
            x, m = PartInputs(start, stop, presence, name=f"{name}_part{number}")([features, mask])
        pieces.append(PooledInputs(baseline.pooling == "mean", name=f"{name}_pooled{number}")([x, m]))
    pooled = pieces[0] if len(pieces) == 1 else keras.layers.Concatenate(name=f"{name}_pooled")(pieces)
    kernel, bias = baseline.dense_weights()
    scaled = keras.layers.Normalization(mean=baseline.centre, variance=baseline.scale**2, name=f"{name}_scale")(pooled)
    linear = keras.layers.Dense(len(bias), activation="softmax", name=name)
    outputs = linear(scaled)
    linear.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return outputs


def assemble(feature_dim: int, grus: list[keras.Model], baselines: list, combiner: Combiner) -> keras.Model:
    """The run's model: every part (the GRUs, then the baselines' layers, in ``combiner``'s order: GRU and baseline of
    each feature set in turn) reading the same ``(features, mask)``, their probabilities combined by ``combiner``.

    ``predict`` and ``evaluate`` need nothing but the saved model.
    """
    features = keras.Input(shape=(None, feature_dim), name="features")
    mask = keras.Input(shape=(None,), dtype="bool", name="mask")
    outputs = []
    for number, (gru, baseline) in enumerate(zip(grus, baselines)):
        outputs.append(gru([features, mask]))
        if baseline is not None:
            outputs.append(baseline_layers(features, mask, baseline, f"appearance{number if number else ''}"))
    combined = CombineParts(combiner.method, combiner.weights.tolist(), combiner.bias.tolist(), name="combine")(outputs)
    return keras.Model([features, mask], combined, name="framecache_parts")


def build_model(
    feature_dim: int,
    num_classes: int,
    units: int = 64,
    layers: int = 1,
    dropout: float = 0.3,
    bidirectional: bool = False,
    head_units: int = 64,
    learning_rate: float = 3e-3,
    mean: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    inputs: str = "centred",
    differences: bool = False,
    noise: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    l2: float = 0.0,
    pooling: str = "mean",
    part: tuple[int, int, int | None] | None = None,
    name: str = "framecache_gru",
) -> keras.Model:
    """A compiled GRU classifier: per-video transforms → scaled inputs → GRU layer(s) over the masked sequence → dense head → softmax.

    ``inputs``: what the GRU reads at each step: the features with the video's
    mean subtracted (``"centred"``: motion only), the features as they are
    (``"raw"``), or both side by side (``"both"``: appearance and motion).
    ``differences``: see :class:`TemporalInputs`. ``mean`` and ``variance``
    (per input dimension after those transforms, from the training videos:
    :func:`framecache.train.temporal.input_statistics`) scale the inputs; without them the inputs pass
    unscaled. ``noise``: Gaussian noise (std, on scaled inputs) while training.
    ``input_dropout`` / ``recurrent_dropout``: the GRU's dropout on its inputs /
    its state. ``l2``: weight decay on every kernel. ``pooling``: the head reads
    the GRU's outputs averaged over the valid steps (``"mean"``) or its last
    state (``"last"``). ``part``: ``(start, stop, presence)``, the columns it
    reads of ``feature_dim`` and their presence column (see
    :func:`framecache.train.parts.part_inputs`); default every column.
    """
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    if inputs not in INPUT_CHOICES:
        raise ValueError(f"inputs must be one of {INPUT_CHOICES}, got {inputs!r}")
    features = keras.Input(shape=(None, feature_dim), name="features")
    mask = keras.Input(shape=(None,), dtype="bool", name="mask")
    x, steps = features, mask
    if part is not None and tuple(part) != (0, feature_dim, None):
        x, steps = PartInputs(*part, name="part")([features, mask])
    if inputs != "raw" or differences:
        x = TemporalInputs(centre=inputs != "raw", differences=differences, keep_raw=inputs == "both", name="temporal")([x, steps])
    if mean is not None:
        x = keras.layers.Normalization(mean=mean, variance=variance, name="scale")(x)
    if noise > 0:
        x = keras.layers.GaussianNoise(noise, name="noise")(x)
    regularizer = (lambda: keras.regularizers.L2(l2)) if l2 > 0 else (lambda: None)
    for layer in range(layers):
        recurrent = keras.layers.GRU(
            units,
            return_sequences=layer < layers - 1 or pooling == "mean",
            dropout=input_dropout,
            recurrent_dropout=recurrent_dropout,
            kernel_regularizer=regularizer(),
            recurrent_regularizer=regularizer(),
            name=f"gru{layer + 1}",
        )
        if bidirectional:
            recurrent = keras.layers.Bidirectional(recurrent, name=f"bigru{layer + 1}")
        x = recurrent(x, mask=steps)
    if pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_over_time")(x, mask=steps)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(head_units, activation="relu", kernel_regularizer=regularizer(), name="head")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer(), name="classes")(x)
    model = keras.Model([features, mask], outputs, name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        # A metric object (its variables made now) and Adam's slots built now, not inside fit's first trace: a variable
        # made while tracing makes TensorFlow trace the whole training step again (docs/benchmarks.md, "Training's fixed cost").
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)
    return model


def save_model(model: keras.Model, path: str | Path, metadata: dict) -> None:
    """Save the model as ``.keras`` with ``metadata`` (labels, provenance, sampling) inside."""
    path = Path(path)
    model.save(path)
    stored = dict(metadata)
    if isinstance(stored.get("provenance"), Provenance):
        stored["provenance"] = stored["provenance"].to_dict()
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA_NAME, json.dumps(stored, indent=2))


def read_metadata(path: str | Path) -> dict:
    """The framecache metadata of a saved model, without loading the model; its ``"provenance"`` as a Provenance."""
    path = Path(path)
    if not path.is_file():
        raise FramecacheError(f"no model at {path}; train one with `{command_hint('train', run=path.parent)}`")
    try:
        with zipfile.ZipFile(path) as archive:
            declared = archive.getinfo(METADATA_NAME).file_size
            if declared > MAX_METADATA_BYTES:
                raise FramecacheError(f"{path}: its {METADATA_NAME} declares {declared / 1e9:.1f} GB, not a framecache "
                                      "model's metadata; train the run again")  # fmt: skip
            metadata = json.loads(archive.read(METADATA_NAME))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise FramecacheError(f"{path} is not a model saved by framecache (no {METADATA_NAME} inside); train it again") from None
    if "provenance" in metadata:
        try:
            metadata["provenance"] = Provenance.from_dict(metadata["provenance"])
        except FramecacheError as error:
            raise FramecacheError(f"{path} holds no usable provenance ({error}); train it again") from None
    return metadata


def load_model(path: str | Path) -> tuple[keras.Model, dict]:
    """Load a saved model (Keras safe mode) and its framecache metadata."""
    metadata = read_metadata(path)
    try:
        with warnings.catch_warnings():  # a combined model's GRUs were compiled for training; inference needs no optimizer
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.saving.load_model(path, compile=False, safe_mode=True)  # inference only
    except (ValueError, OSError, KeyError) as error:
        raise FramecacheError(f"cannot load the model {path} ({type(error).__name__}: {error}); train the run again") from None
    return model, metadata


def predict_probabilities(model: keras.Model, batches: keras.utils.PyDataset) -> np.ndarray:
    """Class probabilities ``(videos, classes)`` for evaluation batches, in their order."""
    return np.asarray(model.predict(batches, verbose=0))
