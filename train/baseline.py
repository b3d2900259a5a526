"""The baseline beside every result: logistic regression on each video's mean clean-view feature.

A GRU run also fits, on exactly the same training videos, a regularised
logistic regression (scikit-learn; the features standardised on the training
videos, classes weighted as the GRU's loss is) on one vector per video: its
clean view's feature averaged over all its frames. It sees what a video looks
like and nothing of how it moves, so the two side by side say whether temporal
modelling helps on the data at hand.

The mean features are read through the run's feature source (in memory or
streamed from the cache, as the GRU's batches are), one video at a time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

BASELINE_C = 1.0  # inverse L2 strength on standardised features (scikit-learn's default)
DESCRIPTION = "logistic regression (L2, C=1, standardised) on each video's mean clean-view feature"


def mean_features(features, indices: np.ndarray) -> np.ndarray:
    """float64 ``(len(indices), D)``: each video's clean view (view 0) averaged over all its frames.

    ``features`` is a feature source of :mod:`framecache.train.data` (or a list
    of ``(views, T, D)`` arrays); videos are read in the cache's order.
    """
    from framecache.train.data import as_source

    source = as_source(features)
    indices = np.asarray(indices, dtype=np.int64)
    means = np.zeros((len(indices), 0))
    for row in np.argsort(source.locality[indices], kind="stable"):
        frames = source.read(int(indices[row]), 0)
        if means.shape[1] == 0:
            means = np.zeros((len(indices), frames.shape[1]))
        means[row] = frames.astype(np.float64).mean(axis=0)
    return means


@dataclass
class Baseline:
    """A fitted baseline: class probabilities for mean features, in the run's class order.

    Held as plain arrays (the standardisation and the linear model), so it is
    saved as JSON (``baseline.json`` beside ``model.keras``) and applied
    without scikit-learn or unpickling anything.
    """

    centre: np.ndarray  # (D,) the training videos' mean of each dimension
    scale: np.ndarray  # (D,) their standard deviation (1 where constant)
    coef: np.ndarray  # (classes seen in training, D), or (1, D) for two classes
    intercept: np.ndarray
    classes: np.ndarray  # the codes the rows of coef belong to
    num_classes: int
    C: float = BASELINE_C

    def probabilities(self, means: np.ndarray) -> np.ndarray:
        probabilities = np.zeros((len(means), self.num_classes))
        if len(means) == 0:
            return probabilities
        scores = ((np.asarray(means, dtype=np.float64) - self.centre) / self.scale) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # scikit-learn's binary case: one score for the second class
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        found = np.exp(scores)
        probabilities[:, self.classes] = found / found.sum(axis=1, keepdims=True)  # a class missing from training keeps 0
        return probabilities

    def dense_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Kernel ``(D, num_classes)`` and bias of a dense softmax layer that computes :meth:`probabilities` on standardised features."""
        kernel = np.zeros((len(self.centre), self.num_classes))
        bias = np.full(self.num_classes, -1e9)  # a class missing from training: probability 0
        if self.coef.shape[0] == 1:  # binary: logits (0, score)
            kernel[:, self.classes[1]], bias[self.classes[0]], bias[self.classes[1]] = self.coef[0], 0.0, self.intercept[0]
        else:
            kernel[:, self.classes], bias[self.classes] = self.coef.T, self.intercept
        return kernel, bias

    def to_dict(self) -> dict:
        return {
            "model": DESCRIPTION,
            "C": self.C,
            "num_classes": self.num_classes,
            "classes": self.classes.tolist(),
            "centre": self.centre.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Baseline:
        return cls(
            centre=np.asarray(values["centre"], dtype=np.float64),
            scale=np.asarray(values["scale"], dtype=np.float64),
            coef=np.asarray(values["coef"], dtype=np.float64),
            intercept=np.asarray(values["intercept"], dtype=np.float64),
            classes=np.asarray(values["classes"], dtype=np.int64),
            num_classes=int(values["num_classes"]),
            C=float(values.get("C", BASELINE_C)),
        )


def fit_baseline(means: np.ndarray, labels: np.ndarray, num_classes: int, balanced: bool = True, seed: int = 0, C: float = BASELINE_C) -> Baseline:
    """Standardise, then L2-regularised multinomial logistic regression (``balanced``: classes weighted inversely to their size)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=5000, class_weight="balanced" if balanced else None, random_state=seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes on tiny, separable training sets
        pipeline.fit(means, labels)
    scaler, regression = pipeline.steps[0][1], pipeline.steps[1][1]
    return Baseline(
        centre=scaler.mean_.astype(np.float64),
        scale=scaler.scale_.astype(np.float64),
        coef=regression.coef_.astype(np.float64),
        intercept=regression.intercept_.astype(np.float64),
        classes=np.asarray(regression.classes_, dtype=np.int64),
        num_classes=num_classes,
        C=C,
    )


@dataclass
class BaselineResult:
    """The fitted baseline and its probabilities on one split's validation and test videos."""

    model: Baseline
    val_probabilities: np.ndarray
    test_probabilities: np.ndarray


def baseline_split(features, labels: np.ndarray, split, num_classes: int, balanced: bool = True, seed: int = 0) -> BaselineResult:
    """Fit on ``split.train``, predict ``split.val`` and ``split.test`` (a :class:`framecache.train.splits.Split`)."""
    parts = np.concatenate([split.train, split.val, split.test])
    means = mean_features(features, parts)
    train, val = len(split.train), len(split.train) + len(split.val)
    model = fit_baseline(means[:train], np.asarray(labels)[split.train], num_classes, balanced, seed)
    return BaselineResult(model, model.probabilities(means[train:val]), model.probabilities(means[val:]))
