"""``framecache predict --run RUN VIDEO...``: label new videos end to end.

Each video is decoded and embedded by stage one with exactly the backbone,
weights and frame sampling recorded in the run, rounded to float16 like the
cache, sampled in time as at evaluation, and classified by the run's GRU. One
JSON line per video::

    {"path": "a.mp4", "label": "squat", "top": [{"label": "squat", "p": 0.91}, ...]}
    {"path": "b.mp4", "error": "cannot decode: ..."}

A cross-validation run (``--cv``) holds one model per fold: its folds'
ensemble predicts, each video's probabilities the mean of the fold models',
and every line says so (``"ensemble": "mean of 6 fold models"``).

The exit status is 1 only when every video failed.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from framecache.common.errors import FramecacheError
from framecache.common.notices import random_weights_warning
from framecache.train.data import InMemoryFeatures, SequenceBatches
from framecache.train.model import load_model, predict_probabilities, read_metadata
from framecache.train.run_folder import RunFolder

log = logging.getLogger(__name__)


def classify_features(model, metadata: dict, sequences: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Class probabilities for clean-view ``(T, D)`` sequences, sampled and padded exactly as the run's evaluation."""
    batches = SequenceBatches(
        InMemoryFeatures.clean_views(sequences),
        None,
        np.arange(len(sequences)),
        max_len=int(metadata["max_len"]),
        frame_step=int(metadata["frame_step"]),
        batch_size=batch_size,
    )
    return predict_probabilities(model, batches)


def predict_videos(run: str, paths: list[str], engine: str = "auto", top: int = 3, folder_fps: float | None = None) -> list[dict]:
    """One result per path (a video file, or a folder of frames at ``folder_fps``), in order: the top classes with
    probabilities, or the error."""
    model_paths = RunFolder.models(run)
    entries = [read_metadata(path) for path in model_paths]  # one per model: a cross-validation run has one per fold
    _check_same_features(model_paths, entries)
    metadata = entries[0]
    ensemble = f"mean of {len(model_paths)} fold models" if len(model_paths) > 1 else None
    if ensemble:
        log.info("%s is a cross-validation run: predicting with its folds' ensemble (the %s' probabilities)", run, ensemble)
    warning = random_weights_warning(metadata["weights"])
    if warning:
        log.warning(warning)
    embedded = embed_parts(list(paths), metadata, engine, folder_fps)
    for result in embedded:
        if result.features is not None and (result.features.ndim != 2 or result.features.shape[1] != metadata["feature_dim"]):
            raise FramecacheError(
                f"stage one returned features of shape {result.features.shape} for {result.path}; the model "
                f"reads {metadata['feature_dim']}-d features of backbone {metadata['backbone']}: check the run's provenance"
            )
    done = [result for result in embedded if result.error is None]
    probabilities = np.zeros((0, len(metadata["labels"])))
    if done:
        sequences = [result.features for result in done]
        probabilities = np.mean([classify_features(load_model(path)[0], entry, sequences) for path, entry in zip(model_paths, entries)], axis=0)
    by_path = {id(result): row for result, row in zip(done, probabilities)}
    labels = metadata["labels"]
    lines = []
    for result in embedded:
        if result.error is not None:
            lines.append({"path": result.path, "error": result.error})
            continue
        row = by_path[id(result)]
        best = np.argsort(row)[::-1][:top]
        line = {
            "path": result.path,
            "label": labels[best[0]],
            "top": [{"label": labels[code], "p": round(float(row[code]), 6)} for code in best],
        }
        if ensemble:
            line["ensemble"] = ensemble
        lines.append(line)
    return lines


def embed_parts(paths: list[str], metadata: dict, engine: str, folder_fps: float | None) -> list:
    """Stage one on ``paths`` with every backbone the run was trained on: one :class:`~framecache.extract.embed.EmbedResult` per video,
    the parts' features side by side as the run joined its caches; a video that fails for one backbone fails."""
    from framecache.extract import embed
    from framecache.train.parts import FeaturePart

    if "parts" not in metadata:
        return embed.embed_videos(paths, metadata["provenance"], engine=engine, folder_fps=folder_fps)
    parts = [FeaturePart.from_json(values) for values in metadata["parts"]]
    each = [embed.embed_videos(paths, part.provenance, engine=engine, folder_fps=folder_fps) for part in parts]
    joined = []
    for results in zip(*each):
        error = next((f"{part.name}: {result.error}" for part, result in zip(parts, results) if result.error is not None), None)
        lengths = {len(result.features) for result in results if result.features is not None}
        if error is None and len(lengths) > 1:
            error = f"its backbones embedded {' and '.join(str(len(result.features)) for result in results)} frames; they must agree"
        features = None if error is not None else np.concatenate([result.features for result in results], axis=1)
        joined.append(dataclasses.replace(results[0], features=features, error=error))
    return joined


def _check_same_features(model_paths: list, entries: list[dict]) -> None:
    """The folds of one run share labels and features; refuse a folder whose models disagree (mixed by hand)."""
    first = entries[0]
    for path, other in zip(model_paths[1:], entries[1:]):
        if other["labels"] != first["labels"] or other.get("provenance_hash") != first.get("provenance_hash"):
            raise FramecacheError(f"{path} has other labels or features than {model_paths[0]}; the folds of one run must agree: train the run again")
