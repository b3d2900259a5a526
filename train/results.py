"""A run's results from its fitted splits: the metrics records of a split and of a cross-validated run, and the predictions table.

:func:`split_metrics` and :func:`cv_metrics` turn what :func:`framecache.train.fit.fit_split`
returned into the records of :mod:`framecache.train.metrics` (computed by
:mod:`framecache.train.figures`), which the run folder writes to metrics.json.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from framecache.train import report
from framecache.train.data import CachedVideos
from framecache.train.figures import (
    aggregate_folds,
    baseline_cv_metrics,
    baseline_metrics,
    bootstrap_intervals,
    classification_metrics,
    combined_model_description,
    headline,
    with_std,
)
from framecache.train.metrics import (
    CacheInfo,
    CVMetrics,
    CVMix,
    FoldSummary,
    PartSize,
    SplitMetrics,
    SplitMix,
    SpreadFigures,
    ValFigures,
)

if TYPE_CHECKING:
    from framecache.train.fit import FoldResult

CV_NOTE = ("accuracy, balanced_accuracy, macro_f1: mean over folds (std: np.std); per_class, confusion_matrix, pooled, ci: "
           "every fold's test videos together")


def split_metrics(
    data: CachedVideos, result: FoldResult, sizes: dict[str, PartSize], warning: str | None, groups: np.ndarray | None = None
) -> SplitMetrics:
    """The record of one split (or fold): the run's model on its test videos, validation figures, the mix, the baseline."""
    split, labels, classes = result.split, data.labels, data.classes
    test_groups = None if groups is None else groups[split.test]
    mix = None
    if result.combiner is not None:
        mix = SplitMix(
            method=result.combiner.method,
            part_weights={part.name: round(weight, 4) for part, weight in zip(result.parts, result.combiner.part_weights())},
            fit=result.combine_fit,
            parts={part.name: ValFigures(**headline(labels[split.test], part.test_probabilities, classes),
                                         val=headline(labels[split.val], part.val_probabilities, classes)) for part in result.parts},
        )
    baseline = None
    if result.baseline is not None:
        baseline = baseline_metrics(labels[split.test], result.baseline.test_probabilities, labels[split.val], result.baseline.val_probabilities,
                                    classes, test_groups)
    return SplitMetrics(
        **classification_metrics(labels[split.test], result.test_probabilities, classes),
        ci=bootstrap_intervals(labels[split.test], result.test_probabilities, len(classes), test_groups),
        val=headline(labels[split.val], result.val_probabilities, classes),
        split_method=split.method,
        split_sizes=sizes,
        weights=data.weights,
        epochs=result.epochs,
        best_epoch=result.best_epoch,
        seconds=result.seconds,
        epoch_seconds=[round(value, 4) for value in result.epoch_seconds],
        epoch_cpu_seconds=[round(value, 4) for value in result.epoch_cpu_seconds],
        cache=CacheInfo(path=data.cache_path, provenance_hash=data.provenance_hash, backbone=data.backbone),
        model=None if mix is None else combined_model_description(result.combiner.method, list(mix.parts)),
        mix=mix,
        baseline=baseline,
        warning=warning or None,
    )


def cv_metrics(
    data: CachedVideos, results: list[FoldResult], folds: list[SplitMetrics], warning: str | None, groups: np.ndarray | None = None
) -> CVMetrics:
    """Fold means on top (with std), per-class figures and confusion matrix pooled over every fold's test videos."""
    mean, std = aggregate_folds(folds)
    test = np.concatenate([result.split.test for result in results])
    test_probabilities = np.concatenate([result.test_probabilities for result in results])
    pooled = classification_metrics(data.labels[test], test_probabilities, data.classes)
    test_groups = None if groups is None else groups[test]
    val_mean, val_std = aggregate_folds([fold.val for fold in folds])
    mix = None
    if all(fold.mix is not None for fold in folds):
        names = list(folds[0].mix.parts)
        spreads = {name: SpreadFigures(**with_std(*aggregate_folds([fold.mix.parts[name] for fold in folds]))) for name in names}
        mix = CVMix(method=folds[0].mix.method, part_weights=[fold.mix.part_weights for fold in folds], parts=spreads)
    baseline = None
    if all(fold.baseline is not None for fold in folds):
        baseline = baseline_cv_metrics([fold.baseline for fold in folds], data.labels[test],
                                       np.concatenate([result.baseline.test_probabilities for result in results]), data.classes, test_groups)
    return CVMetrics(
        **with_std(mean, std),
        cv=len(results),
        mean=mean,
        std=std,
        pooled=pooled.headline(),
        ci=bootstrap_intervals(data.labels[test], test_probabilities, len(data.classes), test_groups),
        val=val_mean,
        val_std=val_std,
        per_class=pooled.per_class,
        confusion_matrix=pooled.confusion_matrix,
        labels=data.classes,
        videos=pooled.videos,
        split_method=results[0].split.method,
        split_sizes=[fold.split_sizes for fold in folds],
        folds=[FoldSummary.of(fold) for fold in folds],
        weights=data.weights,
        epochs=int(round(np.mean([result.epochs for result in results]))),
        cache=folds[0].cache,
        note=CV_NOTE,
        model=None if mix is None else combined_model_description(mix.method, list(mix.parts)),
        mix=mix,
        baseline=baseline,
        warning=warning or None,
        seconds=sum(result.seconds for result in results),
    )


def predictions(data: CachedVideos, result: FoldResult) -> pd.DataFrame:
    """The validation and test videos of one split with their predicted probabilities (and the baseline's prediction)."""
    split = result.split
    indices = np.concatenate([split.val, split.test])
    probabilities = np.concatenate([result.val_probabilities, result.test_probabilities])
    columns = {"split": ["val"] * len(split.val) + ["test"] * len(split.test)}
    if result.baseline is not None:
        baseline = np.concatenate([result.baseline.val_probabilities, result.baseline.test_probabilities])
        columns["baseline_predicted"] = [data.classes[code] for code in baseline.argmax(axis=1)]
    return report.predictions_table([data.paths[index] for index in indices], data.labels[indices], probabilities, data.classes, **columns)
