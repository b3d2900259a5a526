"""Combining the parts of a run: several models' class probabilities into one, fitted on videos they did not train on.

A run's *parts* are its models, each fitted on the training videos: the GRU
and the baseline of every feature cache the run reads (one cache: the GRU and
the appearance baseline; ``pose.h5 cnn.h5``: four). Their probabilities on the
validation videos fit the combination; the test videos are never seen.

Two combiners, chosen with ``--combine``:

- ``weight`` (default): one weight per part for every class, the point of a
  grid on the simplex (steps of 1/10) with the lowest validation
  cross-entropy, the parts' probabilities mixed linearly (two parts: the
  GRU/appearance mix of earlier versions, number for number).
- ``classwise``: stacking, a regularised logistic regression on the
  parts' log-probabilities in which class ``c``'s score reads only the parts'
  probabilities of class ``c``::

      score[c] = sum_p weight[p, c] * log p_p[c] + bias[c]

  so each class follows the parts that are right about it (equipment classes
  the appearance baseline, exercises the GRU). The weights start from, and are
  pulled towards (L2, :data:`STACK_L2`), an even product of the parts; they
  stay non-negative. It learns class-dependent choices where validation
  has the videos to show them; on the demo's 16 validation videos per fold
  it lost to ``weight`` (docs/accuracy.md), hence not the default.

Both are plain arrays: saved as a layer of the run's Keras model
(:class:`framecache.train.model.CombineParts`) and applied with :func:`combine`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

COMBINE_CHOICES = ("classwise", "weight")
STACK_L2 = 0.1  # pull of the class-wise weights towards an even product, per validation video (see docs/accuracy.md)
FLOOR = 1e-7  # smallest probability a log is taken of
GRID = 10  # the weight combiner's steps per unit


@dataclass
class Combiner:
    """How the parts' probabilities make the run's: ``method`` with its ``weights`` ``(parts, classes)`` and ``bias``."""

    method: str  # "classwise" (a product, per class) or "weight" (a linear mix, the same for every class)
    weights: np.ndarray  # (parts, classes); for "weight" every column is the same
    bias: np.ndarray  # (classes,); zeros for "weight"

    def part_weights(self) -> list[float]:
        """Each part's weight averaged over the classes (for a report)."""
        return [float(value) for value in self.weights.mean(axis=1)]


def combine(combiner: Combiner, probabilities: list[np.ndarray]) -> np.ndarray:
    """The combined probabilities ``(videos, classes)`` of the parts' ``probabilities`` (one array per part, in order)."""
    stacked = np.stack([np.asarray(part, dtype=np.float64) for part in probabilities])  # (parts, videos, classes)
    if combiner.method == "weight":
        return np.einsum("pc,pvc->vc", combiner.weights, stacked)
    scores = np.einsum("pc,pvc->vc", combiner.weights, np.log(np.clip(stacked, FLOOR, 1.0))) + combiner.bias
    scores -= scores.max(axis=1, keepdims=True)
    found = np.exp(scores)
    return found / found.sum(axis=1, keepdims=True)


def cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true classes (0 for no videos)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], FLOOR, 1.0))))


def fit_combiner(method: str, labels: np.ndarray, probabilities: list[np.ndarray]) -> tuple[Combiner, dict[str, float]]:
    """Fit ``method`` on validation ``labels`` and the parts' ``probabilities`` on those videos.

    Returns the combiner and a record of the fit (the ``weight`` grid: each
    point's validation cross-entropy; ``classwise``: the loss before and after).
    """
    if method not in COMBINE_CHOICES:
        raise ValueError(f"method must be one of {COMBINE_CHOICES}, got {method!r}")
    if method == "weight":
        return _fit_weight(labels, probabilities)
    return _fit_classwise(labels, probabilities)


def _simplex(parts: int) -> list[tuple[float, ...]]:
    """The grid points of the simplex with ``parts`` coordinates, in steps of 1/GRID."""
    points = [split for split in itertools.product(range(GRID + 1), repeat=parts - 1) if sum(split) <= GRID]
    return [tuple(value / GRID for value in (*split, GRID - sum(split))) for split in points]


def _fit_weight(labels: np.ndarray, probabilities: list[np.ndarray]) -> tuple[Combiner, dict[str, float]]:
    parts, classes = len(probabilities), probabilities[0].shape[1]
    points = _simplex(parts)
    losses = [cross_entropy(labels, sum(w * p for w, p in zip(point, probabilities))) for point in points]
    even = 1.0 / parts
    # Ties: the point nearest an even mix, then the one giving more to the earlier parts (the GRU comes first).
    best = min(range(len(points)), key=lambda i: (round(losses[i], 6), round(sum(abs(w - even) for w in points[i]), 6), [-w for w in points[i]]))
    weights = np.repeat(np.asarray(points[best], dtype=np.float64)[:, None], classes, axis=1)
    grid = {",".join(f"{w:.1f}" for w in point): round(loss, 4) for point, loss in zip(points, losses)}
    return Combiner("weight", weights, np.zeros(classes)), grid


def _fit_classwise(labels: np.ndarray, probabilities: list[np.ndarray]) -> tuple[Combiner, dict[str, float]]:
    from scipy.optimize import minimize

    labels = np.asarray(labels, dtype=np.int64)
    logs = np.log(np.clip(np.stack([np.asarray(p, dtype=np.float64) for p in probabilities]), FLOOR, 1.0))  # (P, V, C)
    parts, videos, classes = logs.shape
    start = np.full((parts, classes), 1.0 / parts)
    if videos == 0:
        return Combiner("classwise", start, np.zeros(classes)), {"val_cross_entropy_even": 0.0, "val_cross_entropy": 0.0}
    onehot = np.eye(classes)[labels]
    strength = STACK_L2

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = theta[: parts * classes].reshape(parts, classes), theta[parts * classes :]
        scores = np.einsum("pc,pvc->vc", weights, logs) + bias
        scores -= scores.max(axis=1, keepdims=True)
        found = np.exp(scores)
        found /= found.sum(axis=1, keepdims=True)
        loss = -np.mean(np.sum(onehot * np.log(np.clip(found, 1e-300, 1.0)), axis=1))
        loss += 0.5 * strength * (np.sum((weights - start) ** 2) + np.sum(bias**2))
        residual = (found - onehot) / videos  # (V, C)
        weight_gradient = np.einsum("vc,pvc->pc", residual, logs) + strength * (weights - start)
        bias_gradient = residual.sum(axis=0) + strength * bias
        return float(loss), np.concatenate([weight_gradient.ravel(), bias_gradient])

    theta0 = np.concatenate([start.ravel(), np.zeros(classes)])
    bounds = [(0.0, None)] * (parts * classes) + [(None, None)] * classes
    fitted = minimize(loss_and_gradient, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    combiner = Combiner("classwise", fitted.x[: parts * classes].reshape(parts, classes), fitted.x[parts * classes :])
    even = Combiner("classwise", start, np.zeros(classes))
    return combiner, {
        "val_cross_entropy_even": round(cross_entropy(labels, combine(even, probabilities)), 4),
        "val_cross_entropy": round(cross_entropy(labels, combine(combiner, probabilities)), 4),
    }
