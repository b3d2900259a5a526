"""What the GRU reads at each step: the per-video temporal transform, defined once, and its scaling statistics.

:func:`temporal_transform` is written against a small array API (``cast``,
``expand_dims``, ``sum``, ``maximum``, ``concatenate``, ``zeros_like``) that
both ``keras.ops`` and NumPy (:data:`NUMPY_OPS`) provide. The model's layer
(:class:`framecache.train.model.TemporalInputs`) calls it with ``keras.ops``
on padded batches; :func:`temporal_inputs` calls it with NumPy on one
unpadded sequence, in float64, for the scaling statistics. One definition, so
the statistics always describe what the layer outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from framecache.common.errors import FramecacheError
from framecache.train.data import FeatureSource, as_source
from framecache.train.parts import NUMPY_OPS, FeaturePart, frames_of
from framecache.train.sampling import time_steps


def temporal_transform(features, mask, ops, centre: bool = False, differences: bool = False, keep_raw: bool = False):
    """Per-video input transforms of a padded batch over its valid (unmasked) steps only; padding never enters them.

    ``features`` ``(B, T, D)`` and bool ``mask`` ``(B, T)``, as arrays of
    ``ops`` (``keras.ops`` or :data:`NUMPY_OPS`). ``centre``: subtract each
    video's mean feature over its valid steps (what stays the same through a
    video, the subject's and the scene's appearance, goes; motion stays).
    ``keep_raw`` (with ``centre``): the raw features first, then the centred
    ones (appearance and motion). ``differences``: append the step-to-step
    change ``x[t] - x[t-1]`` (zero at the first step). Padded steps come out as zeros.
    """
    valid = ops.cast(ops.expand_dims(mask, -1), features.dtype)
    features = features * valid  # whatever sits in the padding is dropped here
    parts = []
    if not centre or keep_raw:
        parts.append(features)
    if centre:
        count = ops.maximum(ops.sum(valid, axis=1, keepdims=True), 1.0)
        mean = ops.sum(features, axis=1, keepdims=True) / count
        parts.append((features - mean) * valid)
    if differences:
        previous = ops.concatenate([features[:, :1], features[:, :-1]], axis=1)
        previous_valid = ops.concatenate([ops.zeros_like(valid[:, :1]), valid[:, :-1]], axis=1)
        parts.append((features - previous) * valid * previous_valid)
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)


def temporal_inputs(sequence: np.ndarray, centre: bool = False, differences: bool = False) -> np.ndarray:
    """:func:`temporal_transform` of one unpadded ``(T, D)`` sequence, in NumPy float64."""
    batch = np.asarray(sequence, dtype=np.float64)[None]
    return temporal_transform(batch, np.ones(batch.shape[:2], dtype=bool), NUMPY_OPS, centre, differences)[0]


def feature_statistics(
    features: FeatureSource | Sequence[np.ndarray],
    indices: np.ndarray,
    max_len: int | None = None,
    frame_step: int = 1,
    centre: bool = False,
    differences: bool = False,
    part: FeaturePart | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and variance of the model's inputs (for input scaling).

    Over view 0 of the given videos, sampled as at evaluation (every frame
    without ``max_len``), ``part``'s columns and frames only (see
    :func:`framecache.train.parts.part_inputs`; None: all), after the
    ``centre`` / ``differences`` transforms.
    One pass, one video in memory at a time (read in the cache's order): each
    video's float64 mean and sum of squared deviations are merged into the
    running ones (Chan et al.), which keeps the variance exact where the
    features have a large mean.
    """
    source = as_source(features)
    indices = np.asarray(indices, dtype=np.int64)
    count, mean, squares = 0, None, None
    for index in indices[np.argsort(source.locality[indices], kind="stable")]:
        steps = None if max_len is None else time_steps(int(source.num_frames[index]), max_len, frame_step)
        frames = source.read(int(index), 0, steps)
        if part is not None:
            frames = frames_of(frames, part)
        inputs = temporal_inputs(frames, centre, differences)
        video_mean = inputs.mean(axis=0)
        video_squares = ((inputs - video_mean) ** 2).sum(axis=0)
        if mean is None:
            count, mean, squares = len(inputs), video_mean, video_squares
            continue
        total = count + len(inputs)
        delta = video_mean - mean
        mean = mean + delta * (len(inputs) / total)
        squares = squares + video_squares + delta**2 * (count * len(inputs) / total)
        count = total
    if mean is None:
        raise FramecacheError("no training videos to compute the input statistics from")
    variance = np.maximum(squares / count, 1e-4)  # floor: a constant dimension must not explode
    return mean.astype(np.float32), variance.astype(np.float32)


def input_statistics(
    features: FeatureSource | Sequence[np.ndarray], indices: np.ndarray, inputs: str, differences: bool, max_len: int, frame_step: int,
    part: FeaturePart | None = None,
) -> dict[str, np.ndarray]:
    """The scaling statistics :func:`framecache.train.model.build_model` takes, over view 0 of the training videos ``indices``.

    ``mean``/``variance`` of the GRU's inputs, in :func:`temporal_transform`'s
    order (raw, centred, differences). In memory or streamed alike: one pass
    over the videos, two for ``inputs="both"``.
    """

    def statistics(centre: bool, with_differences: bool) -> tuple[np.ndarray, np.ndarray]:
        return feature_statistics(features, indices, max_len, frame_step, centre=centre, differences=with_differences, part=part)

    first = statistics(inputs != "raw", differences)  # raw (+ differences), or centred (+ differences)
    if inputs != "both":
        return {"mean": first[0], "variance": first[1]}
    raw = statistics(False, False)
    return {"mean": np.concatenate([raw[0], first[0]]), "variance": np.concatenate([raw[1], first[1]])}
