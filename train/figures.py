"""Figures from predictions: headline figures, per class, the confusion matrix, bootstrap intervals, fold aggregates.

Each function takes true labels and predicted probabilities and returns a
record of :mod:`framecache.train.metrics`; training (:mod:`framecache.train.results`)
and ``evaluate`` build their metrics from these, so a figure is computed the
same way wherever it appears. Every test figure comes with its bootstrap
interval, and the baseline's figures are computed by the same functions.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from framecache.train.baseline import DESCRIPTION as BASELINE_DESCRIPTION
from framecache.train.metrics import HEADLINE, BaselineMetrics, ClassFigures, Classification, Figures, Intervals

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_BOOTSTRAP_SUBJECTS = 5  # fewer test subjects than this: resample videos instead (and say so)


def classification_metrics(true_labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> Classification:
    """Headline figures, per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted)."""
    predicted = probabilities.argmax(axis=1)
    codes = np.arange(len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from a small split
        precision, recall, f1, support = precision_recall_fscore_support(true_labels, predicted, labels=codes, zero_division=0)
        balanced = balanced_accuracy_score(true_labels, predicted)
        macro_f1 = f1_score(true_labels, predicted, average="macro", zero_division=0)  # over the classes present
    return Classification(
        accuracy=float(accuracy_score(true_labels, predicted)),
        balanced_accuracy=float(balanced),
        macro_f1=float(macro_f1),
        videos=int(len(true_labels)),
        labels=list(classes),
        per_class={
            name: ClassFigures(precision=float(precision[code]), recall=float(recall[code]), f1=float(f1[code]), support=int(support[code]))
            for code, name in enumerate(classes)
        },
        confusion_matrix=confusion_matrix(true_labels, predicted, labels=codes).tolist(),
    )


def headline(true_labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> Figures:
    """The headline figures alone (as :func:`classification_metrics` computes them)."""
    return classification_metrics(true_labels, probabilities, classes).headline()


def bootstrap_intervals(
    true_labels: np.ndarray,
    probabilities: np.ndarray,
    num_classes: int,
    groups: np.ndarray | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Intervals:
    """Percentile bootstrap intervals of accuracy, balanced accuracy and macro F1.

    Resamples the test videos with replacement, or, with ``groups`` (the
    subject of each video), whole subjects: a subject's videos are not
    independent, so resampling them one by one would claim too much certainty.
    With fewer than :data:`MIN_BOOTSTRAP_SUBJECTS` test subjects there is too
    little to resample; videos are resampled instead and ``method`` says so.
    Each figure is computed as :func:`classification_metrics` does (balanced
    accuracy over the classes present, macro F1 over the classes present or
    predicted).
    """
    true_labels = np.asarray(true_labels, dtype=np.int64)
    predicted = np.asarray(probabilities).argmax(axis=1) if len(true_labels) else np.zeros(0, np.int64)
    subjects = len(set(groups)) if groups is not None else 0
    by_subject = groups is not None and subjects >= MIN_BOOTSTRAP_SUBJECTS
    units = np.unique(groups, return_inverse=True)[1] if by_subject else np.arange(len(true_labels))
    count = int(units.max()) + 1 if len(units) else 0
    method = f"{confidence:.0%} percentile bootstrap over the {count} test {'subjects' if by_subject else 'videos'}, {resamples} resamples"
    if groups is not None and not by_subject:
        method += (f" (only {subjects} test subject{'s' if subjects != 1 else ''}, too few to resample: by video, which treats "
                   "a subject's videos as independent, so the interval is too narrow)")
    if count == 0:
        return Intervals(**{name: [float("nan"), float("nan")] for name in HEADLINE}, method=method)
    # Confusion counts per unit: (units, classes * classes); a resample's matrix is a weighted sum of them.
    cells = np.zeros((count, num_classes * num_classes))
    np.add.at(cells, (units, true_labels * num_classes + predicted), 1.0)
    weights = np.random.default_rng(seed).multinomial(count, np.full(count, 1.0 / count), size=resamples).astype(np.float64)
    figures = figures_from_confusion((weights @ cells).reshape(resamples, num_classes, num_classes))
    tail = 100 * (1 - confidence) / 2
    return Intervals(**{name: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] for name, values in figures.items()},
                     method=method)


def figures_from_confusion(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro F1 of a stack of confusion matrices ``(n, classes, classes)``, as scikit-learn computes them."""
    matrices = np.asarray(matrices, dtype=np.float64)
    diagonal = np.diagonal(matrices, axis1=1, axis2=2)
    true_counts, predicted_counts = matrices.sum(axis=2), matrices.sum(axis=1)
    present = true_counts > 0
    recall = np.divide(diagonal, true_counts, out=np.zeros_like(diagonal), where=present)
    either = present | (predicted_counts > 0)
    f1 = np.divide(2 * diagonal, true_counts + predicted_counts, out=np.zeros_like(diagonal), where=either)
    return {
        "accuracy": diagonal.sum(axis=1) / np.maximum(true_counts.sum(axis=1), 1e-12),
        "balanced_accuracy": recall.sum(axis=1) / np.maximum(present.sum(axis=1), 1),
        "macro_f1": f1.sum(axis=1) / np.maximum(either.sum(axis=1), 1),
    }


def aggregate_folds(folds: list[Figures]) -> tuple[Figures, Figures]:
    """Mean and standard deviation (``np.std``, as scikit-learn reports) of each headline figure over folds."""
    mean = Figures(**{name: float(np.mean([getattr(fold, name) for fold in folds])) for name in HEADLINE})
    std = Figures(**{name: float(np.std([getattr(fold, name) for fold in folds])) for name in HEADLINE})
    return mean, std


def with_std(mean: Figures, std: Figures) -> dict[str, float]:
    """The fold means and their standard deviations as one record's fields (``accuracy``, ..., ``accuracy_std``, ...)."""
    return {**{name: getattr(mean, name) for name in HEADLINE}, **{f"{name}_std": getattr(std, name) for name in HEADLINE}}


def baseline_metrics(
    test_labels: np.ndarray, test_probabilities: np.ndarray, val_labels: np.ndarray, val_probabilities: np.ndarray,
    classes: list[str], test_groups: np.ndarray | None = None,
) -> BaselineMetrics:
    """The baseline's block for one split: test figures, their bootstrap intervals, validation figures."""
    test = classification_metrics(test_labels, test_probabilities, classes)
    return BaselineMetrics(
        model=BASELINE_DESCRIPTION,
        **test.headline().to_json(),
        ci=bootstrap_intervals(test_labels, test_probabilities, len(classes), test_groups),
        val=headline(val_labels, val_probabilities, classes),
        videos=test.videos,
        confusion_matrix=test.confusion_matrix,
    )


def baseline_cv_metrics(
    folds: list[BaselineMetrics], test_labels: np.ndarray, test_probabilities: np.ndarray, classes: list[str], test_groups: np.ndarray | None = None
) -> BaselineMetrics:
    """The baseline's block for a cross-validated run: fold means and std, and every fold's test videos pooled (with intervals)."""
    mean, std = aggregate_folds(folds)
    val_mean, val_std = aggregate_folds([fold.val for fold in folds])
    pooled = classification_metrics(test_labels, test_probabilities, classes)
    return BaselineMetrics(
        model=BASELINE_DESCRIPTION,
        **with_std(mean, std),
        mean=mean,
        std=std,
        pooled=pooled.headline(),
        ci=bootstrap_intervals(test_labels, test_probabilities, len(classes), test_groups),
        val=val_mean,
        val_std=val_std,
        videos=pooled.videos,
        confusion_matrix=pooled.confusion_matrix,
    )


def evaluation_baseline(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], groups: np.ndarray | None = None) -> BaselineMetrics:
    """The baseline's block of an evaluation: figures on the evaluated videos and their intervals."""
    figures = classification_metrics(labels, probabilities, classes)
    return BaselineMetrics(
        model=BASELINE_DESCRIPTION,
        **figures.headline().to_json(),
        ci=bootstrap_intervals(labels, probabilities, len(classes), groups),
        confusion_matrix=figures.confusion_matrix,
    )


def combined_model_description(method: str, parts: list[str]) -> str:
    """What the run's model is when it combines parts (``method``: the combiner; ``parts``: their names)."""
    how = ("stacked class by class (a weight per part and class, fitted on the validation videos)" if method == "classwise"
           else "mixed with one weight per part, chosen on the validation videos")  # fmt: skip
    return f"{', '.join(parts)}: their class probabilities {how}"
