"""``framecache evaluate --run RUN --features F``: a trained run's model(s) on a feature cache, honestly.

The cache must hold the same kind of features (backbone, weights, input size,
feature size) and only classes the model knows; every video is evaluated on
its clean view, sampled as at training-time evaluation (features in memory or
streamed, as :func:`train.data.load_cache` chooses).

Which videos (``--split``): a model records the CSV paths of the videos it
trained on, validated on and was tested on, so

- ``test`` (the default) evaluates the run's own test videos found in the
  cache (a cross-validation run: each video by the fold model that did not
  train on it);
- ``all`` evaluates every video of a cache of new videos, and is refused when
  any of them trained or validated the run (their figures would be
  optimistic); a cross-validation run then predicts with its folds' ensemble
  (mean probabilities);
- ``train`` / ``val`` evaluate the run's own parts, with a warning that the
  figures are optimistic.

The baseline (``baseline.json`` beside each model) is evaluated on the same
videos, and every figure has its bootstrap interval.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from framecache.common.cache import FeatureCache
from framecache.common.errors import FramecacheError
from framecache.common.notices import random_weights_warning
from framecache.common.options import option_name
from framecache.train import report
from framecache.train.data import SequenceBatches, load_cache
from framecache.train.figures import bootstrap_intervals, classification_metrics, evaluation_baseline
from framecache.train.metrics import EvaluationMetrics
from framecache.train.model import load_model, predict_probabilities, read_metadata
from framecache.train.parts import FeaturePart
from framecache.train.run_folder import (
    CONFUSION_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    RunFolder,
    write_json,
)
from framecache.train.splits import group_ids

log = logging.getLogger(__name__)

SPLIT_CHOICES = ("test", "all", "val", "train")


def plan_evaluation(paths: list[str], recorded: list[dict | None], split: str, features: str, run: str) -> tuple[list[np.ndarray], str, list[str]]:
    """Which cache videos each model predicts, a description, and warnings.

    ``paths``: the cache's CSV paths; ``recorded``: each model's recorded split
    (``{"train": [...], "val": [...], "test": [...]}``, None for a model saved
    before framecache recorded it). Returns one index array per model: a video
    predicted by several models gets their mean probabilities.
    """
    if split not in SPLIT_CHOICES:
        raise FramecacheError(f"{option_name('split')} must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    everything = np.arange(len(paths))
    ensemble = len(recorded) > 1
    if split == "all":
        if any(parts is None for parts in recorded):
            return [everything] * len(recorded), "every video", [
                "the run's model records no split (trained by an older framecache): whether these videos trained it cannot be "
                "checked; if any did, their figures are optimistic"
            ]
        seen = set().union(*(set(parts["train"]) | set(parts["val"]) for parts in recorded))
        overlap = [path for path in paths if path in seen]
        if overlap:
            raise FramecacheError(
                f"{len(overlap)} of the {len(paths)} videos of {features} trained or validated the run {run} (e.g. {overlap[0]!r}): "
                f"their figures would be optimistic. Evaluate the run's own test videos ({option_name('split', 'test')}, the default), "
                f"or a cache of new videos"
            )
        description = f"every video, with the mean probabilities of the {len(recorded)} fold models" if ensemble else "every video"
        return [everything] * len(recorded), description, []
    if any(parts is None for parts in recorded):
        raise FramecacheError(
            f"the model of {run} records no split (trained by an older framecache), so its {split} videos are unknown: "
            f"pass {option_name('split', 'all')} for a cache of videos it never saw, or train the run again"
        )
    if ensemble and split != "test":
        raise FramecacheError(
            f"{run} is a cross-validation run: every video trained some fold; {option_name('split', split)} needs one fold "
            f"({option_name('run', Path(run) / 'fold1')}), or evaluate {option_name('split', 'test')} (each video by the fold that did not train on it)"
        )
    position = {path: index for index, path in enumerate(paths)}
    plans = [np.asarray(sorted(position[path] for path in parts[split] if path in position), dtype=np.int64) for parts in recorded]
    wanted = sum(len(parts[split]) for parts in recorded)
    found = sum(len(plan) for plan in plans)
    if found == 0:
        raise FramecacheError(
            f"{features} holds none of the run's {wanted} {split} videos; for a cache of new videos pass {option_name('split', 'all')}"
        )
    warnings = []
    if found < wanted:
        warnings.append(f"{features} holds {found} of the run's {wanted} {split} videos; the others are left out")
    if split in ("train", "val"):
        role = "trained the model" if split == "train" else "chose the model's best epoch (early stopping)"
        warnings.append(f"these are the run's {split} videos: they {role}, so these figures are optimistic, not a result")
    description = "the run's test videos, each by the fold model that did not train on it" if ensemble else f"the run's {split} videos"
    return plans, description, warnings


def evaluate_run(run: str, features: str | list[str], split: str = "test", out: str | None = None) -> EvaluationMetrics:
    """Metrics of the run's model(s) on ``features``: its test videos (default), every video of a new cache (``all``), or its train/val part.

    ``features``: a cache, or (a run trained on several) the same number of caches, one per backbone, in the run's order."""
    model_paths = RunFolder.models(run)
    metadata = [read_metadata(path) for path in model_paths]
    paths = [features] if isinstance(features, str) else list(features)
    recorded = [FeaturePart.from_json(values).provenance for values in metadata[0]["parts"]] if "parts" in metadata[0] else [metadata[0]["provenance"]]
    if len(paths) != len(recorded):
        raise FramecacheError(
            f"the run {run} was trained on {len(recorded)} cache(s) ({', '.join(str(p.backbone) for p in recorded)}); "
            f"pass as many to {option_name('features')}, in that order, got {len(paths)}"
        )
    for provenance, path in zip(recorded, paths):
        with FeatureCache(path) as cache:
            for warning in provenance.check_features(cache.provenance, f"cache {path}"):
                log.warning(warning)
    features = paths[0] if len(paths) == 1 else " ".join(paths)
    data = load_cache(paths, classes=metadata[0]["labels"])
    try:
        plans, description, notes = plan_evaluation(data.paths, [entry.get("split") for entry in metadata], split, features, run)
        for note in notes:
            log.warning(note)
        indices = np.unique(np.concatenate(plans))
        row_of = np.full(data.num_videos, -1)
        row_of[indices] = np.arange(len(indices))
        probabilities, counts = np.zeros((len(indices), len(data.classes))), np.zeros(len(indices))
        baselines = [RunFolder.baseline_beside(path) for path in model_paths]
        baseline_probabilities = np.zeros_like(probabilities) if all(baselines) else None
        for path, entry, plan, baseline in zip(model_paths, metadata, plans, baselines):
            if len(plan) == 0:
                continue
            model, _ = load_model(path)
            batches = SequenceBatches(data.features, None, plan, int(entry["max_len"]), int(entry["frame_step"]), batch_size=64)
            probabilities[row_of[plan]] += predict_probabilities(model, batches)
            counts[row_of[plan]] += 1
            if baseline_probabilities is not None:
                baseline_probabilities[row_of[plan]] += baseline.probabilities(baseline.inputs(data.features, plan))
    finally:
        data.close()
    probabilities /= counts[:, None]
    labels = data.labels[indices]
    groups = group_ids(data.groups)
    test_groups = None if groups is None else groups[indices]
    baseline = None
    if baseline_probabilities is not None:
        baseline_probabilities /= counts[:, None]
        baseline = evaluation_baseline(labels, baseline_probabilities, data.classes, test_groups)
    warnings = [text for text in (random_weights_warning(data.weights), *notes) if text]
    metrics = EvaluationMetrics(
        **classification_metrics(labels, probabilities, data.classes),
        ci=bootstrap_intervals(labels, probabilities, len(data.classes), test_groups),
        baseline=baseline,
        model=[str(path) for path in model_paths] if len(model_paths) > 1 else str(model_paths[0]),
        features=str(features),
        split=split,
        evaluated=description,
        weights=data.weights,
        warning="\n".join(warnings) if warnings else None,
    )
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / METRICS_FILE, metrics.to_json())
        lines = [*warnings, f"model {metrics.model} on {features}: {description}",
                 f"GRU      {report.format_headline(metrics, ci=metrics.ci)}"]
        if baseline is not None:
            lines.append(f"baseline {report.format_headline(baseline, ci=baseline.ci)}")
        lines.append(f"[ ]: {metrics.ci.method}\n")
        lines.append(report.text_report(labels, probabilities, data.classes))
        (folder / REPORT_FILE).write_text("\n".join(lines))
        report.plot_confusion(folder / CONFUSION_FILE, metrics.confusion_matrix, data.classes, f"{Path(run).name} on {Path(features).name}")
        paths = [data.paths[index] for index in indices]
        columns = {}
        if baseline_probabilities is not None:
            columns["baseline_predicted"] = [data.classes[code] for code in baseline_probabilities.argmax(axis=1)]
        table = report.predictions_table(paths, labels, probabilities, data.classes, **columns)
        table.to_csv(folder / PREDICTIONS_FILE, index=False)
    return metrics
