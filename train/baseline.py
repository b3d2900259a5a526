"""The baseline beside every result: logistic regression on each video's features pooled over time.

A GRU run also fits, on exactly the same training videos, a regularised
logistic regression (scikit-learn; the features standardised on the training
videos, classes weighted as the GRU's loss is) on one vector per video: its
clean view's features pooled over its frames, the mean of each dimension and,
where cross-validation on the training videos prefers it
(:func:`choose_pooling`), their standard deviation too
(:func:`framecache.train.parts.pooled_features`; a pose part's frames without
a person left out). It sees what a video looks like and how much it varies,
nothing of the order of its frames, so the two side by side say whether
temporal modelling helps on the data at hand. A run on several caches fits one
per cache (a part of its model) and one on all of them together (the baseline
of its reports).

The pooled features are read through the run's feature source (in memory or
streamed from the cache, as the GRU's batches are), one video at a time.
Models saved by earlier versions pooled the mean alone (``pooling="mean"``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

BASELINE_C = 1.0  # inverse L2 strength on standardised features (scikit-learn's default)
POOLINGS = ("mean_std", "mean")  # what a baseline reads of a video (models saved before the standard deviation: "mean")
INNER_FOLDS = 5  # at most: folds of the training videos that choose the pooling (choose_pooling); fewer subjects, one each
DESCRIPTION = ("logistic regression (L2, C=1, standardised) on each video's mean over its frames (clean view), and their std "
               "where cross-validation on the training videos prefers it")
DESCRIPTIONS = {"mean_std": "logistic regression (L2, C=1, standardised) on each video's mean and std over its frames (clean view)",
                "mean": "logistic regression (L2, C=1, standardised) on each video's mean clean-view feature"}
Span = tuple[int, int, "int | None"]  # a part's columns and presence column (see framecache.train.parts.FeaturePart)


def pooled_inputs(features, indices: np.ndarray, spans: list[Span] | None = None, pooling: str = "mean_std",
                  max_len: int | None = None, frame_step: int = 1) -> np.ndarray:
    """float64 ``(len(indices), P)``: each video's clean view (view 0) pooled over its frames, part after part.

    ``spans``: the parts to read (default: every column as one part);
    ``pooling``: ``mean_std`` (mean and standard deviation) or ``mean``;
    ``max_len``, ``frame_step``: the frames the GRU sees at evaluation (what
    the saved model pools; None: every frame). ``features`` is a feature
    source of :mod:`framecache.train.data` (or a list of ``(views, T, D)``
    arrays); videos are read in the cache's order, only the frames pooled.
    """
    from framecache.train.data import as_source
    from framecache.train.parts import NUMPY_OPS, part_inputs, pooled_features
    from framecache.train.sampling import time_steps

    source = as_source(features)
    indices = np.asarray(indices, dtype=np.int64)
    pooled_rows: np.ndarray | None = None  # filled in place: one array of the result's size, no list of rows beside it
    for row in np.argsort(source.locality[indices], kind="stable"):
        index = int(indices[row])
        steps = None if max_len is None and frame_step == 1 else time_steps(int(source.num_frames[index]), max_len, frame_step)
        frames = source.read(index, 0, steps).astype(np.float64)[None]
        pieces = []
        for start, stop, presence in spans or [(0, frames.shape[2], None)]:
            part, mask = part_inputs(frames, np.ones(frames.shape[:2], dtype=bool), start, stop, presence, NUMPY_OPS)
            pieces.append(pooled_features(part, mask, NUMPY_OPS)[0])
        pooled_row = np.concatenate(pieces)  # mean_std
        if pooled_rows is None:
            kept = slice(None) if pooling == "mean_std" else mean_columns(spans, len(pooled_row))
            pooled_rows = np.empty((len(indices), len(pooled_row[kept])), dtype=np.float64)
        pooled_rows[row] = pooled_row[kept]
    return pooled_rows if pooled_rows is not None else np.empty((0, 0), dtype=np.float64)


def mean_columns(spans: list[Span] | None, width: int) -> np.ndarray:
    """The columns of a ``mean_std`` :func:`pooled_inputs` (``width`` of them) that its ``mean`` pooling holds, in order.

    Each part's ``mean_std`` pooling is its mean then its standard deviation,
    so the ``mean`` pooling of the same spans is a selection of its columns:
    take them with ``np.take(..., axis=1)``, which keeps rows contiguous (the
    layout ``pooled_inputs`` returns; scikit-learn's sums, and so the
    baseline's last bits, depend on it), unlike ``array[:, columns]``.
    """
    columns, offset = [], 0
    for start, stop, _ in spans or [(0, width // 2, None)]:
        columns.append(np.arange(offset, offset + stop - start))
        offset += 2 * (stop - start)
    return np.concatenate(columns)


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
    pooling: str = "mean_std"  # see POOLINGS
    spans: list | None = None  # the parts it reads, (start, stop, presence) each; None: every column as one part
    max_len: int | None = None  # the frames it pools (see pooled_inputs); None: every frame
    frame_step: int = 1

    def inputs(self, features, indices: np.ndarray) -> np.ndarray:
        """What this baseline reads of the videos ``indices`` of a feature source."""
        return pooled_inputs(features, indices, self.spans, self.pooling, self.max_len, self.frame_step)

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
            "model": DESCRIPTIONS[self.pooling],
            "C": self.C,
            "pooling": self.pooling,
            **({"spans": [list(span) for span in self.spans]} if self.spans is not None else {}),
            "max_len": self.max_len,
            "frame_step": self.frame_step,
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
            pooling=values.get("pooling", "mean"),
            spans=[tuple(span) for span in values["spans"]] if "spans" in values else None,
            max_len=values.get("max_len"),
            frame_step=int(values.get("frame_step", 1)),
        )


def fit_baseline(means: np.ndarray, labels: np.ndarray, num_classes: int, balanced: bool = True, seed: int = 0, C: float = BASELINE_C,
                 spans: list[Span] | None = None, pooling: str = "mean_std", max_len: int | None = None, frame_step: int = 1,
                 overwrite_means: bool = False) -> Baseline:  # fmt: skip
    """Standardise, then L2-regularised multinomial logistic regression (``balanced``: classes weighted inversely to their size).

    ``means``: the videos' :func:`pooled_inputs` made with ``spans``, ``pooling``, ``max_len`` and ``frame_step``
    (recorded in the baseline). ``overwrite_means``: standardise ``means`` in place instead of in a copy of them (the
    same values; for a caller that no longer needs them: on 10,000 videos the copy is 100-200 MB)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(
        StandardScaler(copy=not overwrite_means),
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
        pooling=pooling,
        spans=None if spans is None else [tuple(span) for span in spans],
        max_len=max_len,
        frame_step=frame_step,
    )


@dataclass
class BaselineResult:
    """The fitted baseline and its probabilities on one split's validation and test videos."""

    model: Baseline
    val_probabilities: np.ndarray
    test_probabilities: np.ndarray


def choose_pooling(pooled: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, num_classes: int, balanced: bool,
                   seed: int, spans: list[Span] | None = None) -> tuple[str, dict[str, float]]:
    """The pooling (of :data:`POOLINGS`) whose baseline predicts the training videos best by cross-validation on them.

    ``pooled``: the training videos' ``mean_std`` :func:`pooled_inputs` of
    ``spans`` (each fold takes its ``mean`` pooling's columns, :func:`mean_columns`,
    with its rows), their ``labels`` and ``groups`` (subjects: folds never
    split one; None: by video). :data:`INNER_FOLDS` folds; the mean
    cross-entropy on the held-out videos decides, ties going to the mean and
    std. Returns the pooling and every pooling's loss.
    """
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    from framecache.train.combine import cross_entropy

    labels = np.asarray(labels)
    distinct = len(set(groups.tolist())) if groups is not None else 0
    if distinct >= 2:
        folds = list(GroupKFold(min(INNER_FOLDS, distinct)).split(labels, groups=groups))
    else:
        smallest = int(np.min(np.bincount(labels)[np.unique(labels)]))
        if smallest < 2:
            return POOLINGS[0], {}
        folds = list(StratifiedKFold(min(INNER_FOLDS, smallest), shuffle=True, random_state=seed).split(labels, labels))
    columns = {"mean_std": None, "mean": mean_columns(spans, pooled.shape[1])}
    losses = {}
    for pooling in POOLINGS:
        held_out = []
        for train, test in folds:  # each fold's rows copied once, and standardised in that copy
            model = fit_baseline(_rows(pooled, train, columns[pooling]), labels[train], num_classes, balanced, seed, overwrite_means=True)
            held_out.append(cross_entropy(labels[test], model.probabilities(_rows(pooled, test, columns[pooling]))))
        losses[pooling] = round(float(np.mean(held_out)), 6)
    return min(POOLINGS, key=lambda pooling: losses[pooling]), losses


def _rows(pooled: np.ndarray, rows: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    """A copy of ``pooled``'s ``rows`` (of its ``columns``; None: all), rows contiguous as in ``pooled``."""
    return pooled[rows] if columns is None else pooled[np.ix_(rows, columns)]


def baseline_split(features, labels: np.ndarray, split, num_classes: int, balanced: bool = True, seed: int = 0,
                   spans: list[Span] | None = None, pooling: str = "auto", max_len: int | None = None, frame_step: int = 1,
                   groups: np.ndarray | None = None) -> BaselineResult:
    """Fit on ``split.train``, predict ``split.val`` and ``split.test`` (a :class:`framecache.train.splits.Split`),
    reading the parts ``spans`` (default: every column as one) pooled by ``pooling`` over the frames ``max_len`` and
    ``frame_step`` keep (see :func:`pooled_inputs`). ``pooling="auto"``: the one :func:`choose_pooling` prefers on
    the training videos (``groups``: every video's subject, or None)."""
    # The training videos are pooled first and alone: what the fit holds is theirs only. "mean" is a selection of
    # "mean_std"'s columns (the same values), so they are read once for both.
    read = "mean" if pooling == "mean" else "mean_std"
    means = pooled_inputs(features, split.train, spans, read, max_len, frame_step)
    train_labels = np.asarray(labels)[split.train]
    if pooling == "auto":
        train_groups = None if groups is None else np.asarray(groups)[split.train]
        pooling, _ = choose_pooling(means, train_labels, train_groups, num_classes, balanced, seed, spans)
    if pooling != read:
        means = np.take(means, mean_columns(spans, means.shape[1]), axis=1)
    model = fit_baseline(means, train_labels, num_classes, balanced, seed, spans=spans, pooling=pooling, max_len=max_len,
                         frame_step=frame_step, overwrite_means=True)  # fmt: skip
    del means
    return BaselineResult(model, model.probabilities(model.inputs(features, split.val)), model.probabilities(model.inputs(features, split.test)))
