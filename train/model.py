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
import zipfile
from pathlib import Path

import keras
import numpy as np

from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name
from framecache.common.provenance import Provenance

METADATA_NAME = "framecache.json"


@keras.saving.register_keras_serializable(package="framecache")
class TemporalInputs(keras.layers.Layer):
    """Per-video input transforms over the valid (unmasked) steps only; padding never enters them.

    ``centre``: subtract each video's mean feature over its valid steps (what
    stays the same through a video, the subject's and the scene's appearance,
    goes; motion stays). ``differences``: append the step-to-step change
    ``x[t] - x[t-1]`` (zero at the first step). Padded steps come out as zeros.
    """

    def __init__(self, centre: bool = False, differences: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.centre = centre
        self.differences = differences

    def call(self, inputs):
        features, mask = inputs
        valid = keras.ops.cast(keras.ops.expand_dims(mask, -1), features.dtype)
        features = features * valid  # whatever sits in the padding is dropped here
        parts = []
        if self.centre:
            count = keras.ops.maximum(keras.ops.sum(valid, axis=1, keepdims=True), 1.0)
            mean = keras.ops.sum(features, axis=1, keepdims=True) / count
            parts.append((features - mean) * valid)
        else:
            parts.append(features)
        if self.differences:
            previous = keras.ops.concatenate([features[:, :1], features[:, :-1]], axis=1)
            previous_valid = keras.ops.concatenate([keras.ops.zeros_like(valid[:, :1]), valid[:, :-1]], axis=1)
            parts.append((features - previous) * valid * previous_valid)
        return parts[0] if len(parts) == 1 else keras.ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape[0])
        if self.differences and shape[-1] is not None:
            shape[-1] *= 2
        return tuple(shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "centre": self.centre, "differences": self.differences}


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
    centre: bool = True,
    differences: bool = False,
    noise: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    l2: float = 0.0,
    pooling: str = "mean",
) -> keras.Model:
    """A compiled GRU classifier: per-video transforms → scaled inputs → GRU layer(s) over the masked sequence → dense head → softmax.

    ``centre`` and ``differences``: see :class:`TemporalInputs`. ``mean`` and
    ``variance`` (per input dimension after those transforms, from the training
    videos: :func:`train.data.feature_statistics`) scale the inputs; without
    them the inputs pass unscaled. ``noise``: Gaussian noise (std, on scaled
    inputs) while training. ``input_dropout`` / ``recurrent_dropout``: the GRU's
    dropout on its inputs / its state. ``l2``: weight decay on every kernel.
    ``pooling``: the head reads the GRU's outputs averaged over the valid steps
    (``"mean"``) or its last state (``"last"``).
    """
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    features = keras.Input(shape=(None, feature_dim), name="features")
    mask = keras.Input(shape=(None,), dtype="bool", name="mask")
    x = features
    if centre or differences:
        x = TemporalInputs(centre=centre, differences=differences, name="temporal")([x, mask])
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
        x = recurrent(x, mask=mask)
    if pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_over_time")(x, mask=mask)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(head_units, activation="relu", kernel_regularizer=regularizer(), name="head")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer(), name="classes")(x)
    model = keras.Model([features, mask], outputs, name="framecache_gru")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
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
        model = keras.saving.load_model(path, compile=False, safe_mode=True)  # inference only
    except (ValueError, OSError, KeyError) as error:
        raise FramecacheError(f"cannot load the model {path} ({type(error).__name__}: {error}); train the run again") from None
    return model, metadata


def predict_probabilities(model: keras.Model, batches: keras.utils.PyDataset) -> np.ndarray:
    """Class probabilities ``(videos, classes)`` for evaluation batches, in their order."""
    return np.asarray(model.predict(batches, verbose=0))


def resolve_model(run: str | Path) -> Path:
    """The ``model.keras`` of a run folder (or the file itself)."""
    run = Path(run)
    if run.suffix == ".keras":
        return run
    if not (run / "model.keras").exists() and (run / "fold1" / "model.keras").exists():
        raise FramecacheError(
            f"{run} is a cross-validation run: it holds one model per fold; pass {option_name('run', run / 'fold1')} "
            f"(or another fold), or train without {option_name('cv')} for one model"
        )
    if not run.is_dir():
        raise FramecacheError(f"run folder not found: {run}; train one with `{command_hint('train', run=run)}`")
    return run / "model.keras"
