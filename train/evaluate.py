"""``python -m train.evaluate --run RUN --features F``: a trained model on another feature cache.

The cache must hold the same kind of features (backbone, weights, input size,
feature size) and only classes the model knows; every video is evaluated on
its clean view, sampled as at training-time evaluation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from framecache.common.cache import FeatureCache
from framecache.common.errors import FramecacheError
from framecache.train import report
from framecache.train.data import SequenceBatches, load_cache
from framecache.train.model import load_model, predict_probabilities, read_metadata, resolve_model

log = logging.getLogger(__name__)


def evaluate_run(run: str, features: str, split: str = "all", out: str | None = None) -> dict:
    """Metrics of the run's model on ``features`` (all videos, or one part of the CSV's split column)."""
    model_path = resolve_model(run)
    metadata = read_metadata(model_path)
    with FeatureCache(features) as cache:
        for warning in metadata["provenance"].check_features(cache.provenance, f"cache {features}"):
            log.warning(warning)
    data = load_cache(features, classes=metadata["labels"])
    indices = np.arange(data.num_videos)
    if split != "all":
        indices = np.flatnonzero(np.asarray(data.splits, dtype=object) == split)
        if len(indices) == 0:
            raise FramecacheError(f"cache {features} has no videos with split {split!r}; pass --split all")
    model, _ = load_model(model_path)
    batches = SequenceBatches(data.features, data.labels, indices, int(metadata["max_len"]), int(metadata["frame_step"]), batch_size=64)
    probabilities = predict_probabilities(model, batches)
    metrics = report.classification_metrics(data.labels[indices], probabilities, data.classes)
    metrics.update(model=str(model_path), features=str(features), split=split, weights=data.weights)
    warning = report.random_weights_warning(data.weights)
    if warning:
        metrics["warning"] = warning
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        report.write_json(folder / "metrics.json", metrics)
        text = report.text_report(data.labels[indices], probabilities, data.classes)
        (folder / "report.txt").write_text("\n".join(filter(None, [warning, f"model {model_path} on {features} ({split})", text])))
        report.plot_confusion(folder / "confusion.png", metrics["confusion_matrix"], data.classes, f"{model_path} on {Path(features).name}")
        paths = [data.paths[index] for index in indices]
        report.predictions_table(paths, data.labels[indices], probabilities, data.classes).to_csv(folder / "predictions.csv", index=False)
    return metrics
