"""Training: one split or K folds, from a feature cache (in memory or streamed) to a complete run folder.

::

    metrics = run_training(TrainConfig(features="features.h5", run="runs/first"))

``run_training`` takes an already loaded cache (``data=``) so a sweep reads the
file once for all its runs.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from framecache import __version__
from framecache.common.errors import FramecacheError
from framecache.common.options import option_name
from framecache.train import report
from framecache.train.baseline import BaselineResult, baseline_split
from framecache.train.config import TrainConfig
from framecache.train.data import CachedVideos, SequenceBatches, load_cache, padded_length
from framecache.train.model import (
    build_model,
    choose_mix_weight,
    input_statistics,
    predict_probabilities,
    save_model,
    with_appearance,
)
from framecache.train.splits import Split, group_ids, make_folds, make_split

log = logging.getLogger(__name__)


class _ExpectedRetracing(logging.Filter):
    """Drop TensorFlow's 'triggered tf.function retracing' warning: every fold and sweep run builds a new model, so new traces are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_ExpectedRetracing())


class EpochTimes(keras.callbacks.Callback):
    """Each epoch's seconds (training and validation): ``wall`` (clock) and ``cpu`` (this process's CPU time, every
    thread: what a busy shared machine disturbs least). Kept out of history.csv, which the same seed repeats exactly."""

    def __init__(self):
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.wall_start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self.wall_start)
        self.cpu.append(time.process_time() - self.cpu_start)


@dataclass
class FoldResult:
    """One trained model and its predictions on the validation and test parts."""

    split: Split
    model: keras.Model
    history: pd.DataFrame
    val_probabilities: np.ndarray
    test_probabilities: np.ndarray
    best_epoch: int  # 1-based: the epoch whose weights the model keeps
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)  # each epoch's wall-clock seconds (EpochTimes)
    epoch_cpu_seconds: list[float] = field(default_factory=list)  # and its CPU seconds
    baseline: BaselineResult | None = None  # the logistic-regression baseline on the same split
    gru_val_probabilities: np.ndarray | None = None  # the GRU alone (``model`` may mix in the appearance model)
    gru_test_probabilities: np.ndarray | None = None
    mix_weight: float | None = None  # the weight on the GRU's probabilities, chosen on validation; None: the GRU alone
    mix_losses: list[float] | None = None  # validation cross-entropy of each weight 0, 0.1, ..., 1

    @property
    def epochs(self) -> int:
        return len(self.history)


def new_run_folder() -> Path:
    """``runs/<timestamp>``, with a suffix if that exists (``runs/20250101-120000-2``)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, suffix = Path("runs") / stamp, 2
    while folder.exists():
        folder, suffix = Path("runs") / f"{stamp}-{suffix}", suffix + 1
    return folder


PREVIOUS_RUN = ".previous-run"  # where --overwrite keeps the old results until the new run has succeeded


def prepare_run_folder(run: str | None, overwrite: bool) -> Path:
    """Create the run folder; refuse to mix results into a finished run unless ``overwrite``.

    With ``overwrite`` the old results move to ``<run>/.previous-run``: :func:`run_training`
    deletes them once the new run has succeeded and puts them back if it fails.
    """
    folder = new_run_folder() if run is None else Path(run)
    if folder.exists() and not folder.is_dir():
        raise FramecacheError(f"run folder {folder} is a file; pass another {option_name('run')}")
    finished = folder.is_dir() and any((folder / name).exists() for name in ("metrics.json", "model.keras"))
    if finished and not overwrite:
        raise FramecacheError(
            f"run folder {folder} already holds a run; pass another {option_name('run')}, "
            f"or {option_name('overwrite', True)} to replace it"
        )
    if finished:
        previous = folder / PREVIOUS_RUN
        shutil.rmtree(previous, ignore_errors=True)  # left by a run killed before it could clean up
        previous.mkdir()
        old = [folder / name for name in report.RUN_FILES]
        old += [path for path in folder.glob("fold*") if (path / "model.keras").exists() or (path / "metrics.json").exists()]
        for path in old:
            if path.exists():
                path.rename(previous / path.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _restore_previous_run(folder: Path) -> None:
    """After a failed overwrite: the new run's partial files go, the previous results come back."""
    previous = folder / PREVIOUS_RUN
    if not previous.is_dir():
        return
    for path in previous.iterdir():
        target = folder / path.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        path.rename(target)
    previous.rmdir()


def seed_everything(seed: int, deterministic: bool) -> None:
    """Python, NumPy and TensorFlow seeds; deterministic TensorFlow ops when asked."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def class_weights(train_labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Loss weight per class, inversely proportional to its training videos (scikit-learn's "balanced")."""
    codes = np.arange(num_classes)
    weights = compute_class_weight("balanced", classes=codes, y=train_labels)
    return {int(code): float(weight) for code, weight in zip(codes, weights)}


def fit_split(data: CachedVideos, split: Split, config: TrainConfig, folder: Path) -> FoldResult:
    """Train one GRU on ``split.train`` with early stopping on ``split.val``, fit the baseline on the same videos; predict val and test.

    With ``config.appearance`` the run's model mixes the GRU's probabilities
    with the baseline's (see :func:`framecache.train.model.with_appearance`),
    the weight chosen on ``split.val`` (:func:`framecache.train.model.choose_mix_weight`).
    """
    seed_everything(config.seed, config.deterministic)
    started = time.perf_counter()
    length = padded_length(data.features, config.max_len, config.frame_step)

    def batches(indices: np.ndarray, train: bool = False) -> SequenceBatches:
        return SequenceBatches(
            data.features,
            data.labels,
            indices,
            max_len=config.max_len,
            frame_step=config.frame_step,
            batch_size=config.batch_size,
            train=train,
            oversample=train and config.balance == "oversample",
            seed=config.seed,
            length=length,
        )

    statistics = input_statistics(data.features, split.train, config.inputs, config.differences, config.max_len, config.frame_step)
    model = build_model(
        data.feature_dim,
        len(data.classes),
        units=config.units,
        layers=config.layers,
        dropout=config.dropout,
        bidirectional=config.bidirectional,
        head_units=config.head_units,
        learning_rate=config.learning_rate,
        **statistics,
        inputs=config.inputs,
        differences=config.differences,
        noise=config.noise,
        input_dropout=config.input_dropout,
        recurrent_dropout=config.recurrent_dropout,
        l2=config.l2,
        pooling=config.pooling,
    )
    class_weight = class_weights(data.labels[split.train], len(data.classes)) if config.balance == "class-weight" else None
    history_path = folder / "history.csv"
    epoch_times = EpochTimes()
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-3, patience=config.patience, restore_best_weights=True)
    model.fit(
        batches(split.train, train=True),
        validation_data=batches(split.val),
        epochs=config.epochs,
        shuffle=False,  # the batches' epoch plan shuffles, in an order the cache reads well; Keras must not reorder them
        class_weight=class_weight,
        callbacks=[
            early_stopping,
            epoch_times,
            keras.callbacks.CSVLogger(str(history_path)),
        ],
        verbose=0 if config.quiet else 2,
    )
    gru_val, gru_test = predict_probabilities(model, batches(split.val)), predict_probabilities(model, batches(split.test))
    baseline = baseline_split(data.features, data.labels, split, len(data.classes), balanced=config.balance != "none", seed=config.seed)
    weight = losses = None
    val_probabilities, test_probabilities = gru_val, gru_test
    if config.appearance:
        weight, losses = choose_mix_weight(data.labels[split.val], gru_val, baseline.val_probabilities)
        model = with_appearance(model, baseline.model, weight)
        val_probabilities, test_probabilities = predict_probabilities(model, batches(split.val)), predict_probabilities(model, batches(split.test))
    return FoldResult(
        split=split,
        model=model,
        history=pd.read_csv(history_path),
        val_probabilities=val_probabilities,
        test_probabilities=test_probabilities,
        best_epoch=early_stopping.best_epoch + 1,
        seconds=time.perf_counter() - started,
        epoch_seconds=epoch_times.wall,
        epoch_cpu_seconds=epoch_times.cpu,
        baseline=baseline,
        gru_val_probabilities=gru_val,
        gru_test_probabilities=gru_test,
        mix_weight=weight,
        mix_losses=losses,
    )


def model_metadata(data: CachedVideos, config: TrainConfig, split: Split | None = None) -> dict:
    """What ``predict`` and ``evaluate`` need besides the weights: labels, provenance, temporal sampling, and the split.

    ``split``: the CSV paths of the videos the model trained on, validated on and
    was tested on, so ``evaluate`` can keep to its test videos and refuse its training ones.
    """
    return {
        "framecache_version": __version__,
        "labels": data.classes,
        "feature_dim": data.feature_dim,
        "backbone": data.provenance.backbone,
        "weights": data.weights,
        "provenance": data.provenance.to_dict(),
        "provenance_hash": data.provenance_hash,
        "cache_path": data.cache_path,
        "max_len": config.max_len,
        "frame_step": config.frame_step,
        "train_config": config.to_dict(),
        **({"split": {part: [data.paths[index] for index in indices] for part, indices in split.parts().items()}} if split is not None else {}),
    }


def run_training(config: TrainConfig, data: CachedVideos | None = None) -> dict:
    """Train (one split, or ``config.cv`` folds), write the run folder, and return its metrics.

    A run that fails (a missing cache, a class too small to split, Ctrl-C)
    removes the folders it created, if it left them empty; a folder that
    existed before, and anything in it, is never removed.
    """
    config.validate()
    folder = new_run_folder() if config.run is None else Path(config.run)
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    folder = prepare_run_folder(str(folder), config.overwrite)
    config.run = str(folder)
    try:
        metrics = _train(config, data, folder)
    except BaseException:
        _restore_previous_run(folder)
        _remove_empty_folders(created)
        raise
    shutil.rmtree(folder / PREVIOUS_RUN, ignore_errors=True)
    return metrics


def _remove_empty_folders(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) while it is empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            return


def _train(config: TrainConfig, data: CachedVideos | None, folder: Path) -> dict:
    if data is not None:
        return _train_on(config, data, folder)
    data = load_cache(config.features, in_memory=config.in_memory)
    try:
        return _train_on(config, data, folder)
    finally:
        data.close()


def _train_on(config: TrainConfig, data: CachedVideos, folder: Path) -> dict:
    warning = report.random_weights_warning(data.weights)
    if warning:
        log.warning(warning)
    class_names = np.asarray(data.classes, dtype=object)[data.labels]
    groups = group_ids(data.groups)
    if config.cv:
        if not config.ignore_split and any(split is not None for split in data.splits):
            raise FramecacheError(
                "the cache has a CSV split column, and --cv makes its own folds; "
                "drop --cv to use the CSV's split, or pass --ignore-split to cross-validate over every video"
            )
        splits = make_folds(class_names, groups, config.cv, config.val_fraction, config.seed)
    else:
        splits = [make_split(class_names, groups, data.splits, config.val_fraction, config.test_fraction, config.seed, config.ignore_split)]
    report.write_json(folder / "config.json", config.to_dict())

    results, fold_metrics = [], []
    for fold, split in enumerate(splits):
        fold_folder = folder / f"fold{fold + 1}" if config.cv else folder
        fold_folder.mkdir(exist_ok=True)
        sizes = split.sizes(groups)
        log.info("%ssplit (%s): %s", f"fold {fold + 1}/{len(splits)} " if config.cv else "", split.method, report.format_split_sizes(sizes))
        result = fit_split(data, split, config, fold_folder)
        save_model(result.model, fold_folder / "model.keras", model_metadata(data, config, split))
        report.write_json(fold_folder / report.BASELINE_FILE, result.baseline.model.to_dict())
        metrics = _split_metrics(data, result, sizes, warning, groups)
        _predictions(data, result).to_csv(fold_folder / "predictions.csv", index=False)
        if config.cv:
            report.write_json(fold_folder / "metrics.json", metrics)
            log.info("fold %d/%d: %s; baseline %s", fold + 1, len(splits), report.format_headline(metrics), report.format_headline(metrics["baseline"]))
        results.append(result)
        fold_metrics.append(metrics)

    metrics = _cv_metrics(data, results, fold_metrics, warning, groups) if config.cv else fold_metrics[0]
    metrics["seconds"] = sum(result.seconds for result in results)
    if config.cv:  # the folds' tables together, one column saying which fold
        pd.concat([result.history.assign(fold=fold + 1) for fold, result in enumerate(results)]).to_csv(folder / "history.csv", index=False)
        tables = [pd.read_csv(folder / f"fold{fold + 1}" / "predictions.csv").assign(fold=fold + 1) for fold in range(len(results))]
        pd.concat(tables).to_csv(folder / "predictions.csv", index=False)
    test = np.concatenate([result.split.test for result in results])
    report.write_reports(
        folder,
        metrics,
        cache_line=f"{data.cache_path} (backbone {data.provenance.backbone}, weights {data.weights})",
        test_labels=data.labels[test],
        test_probabilities=np.concatenate([result.test_probabilities for result in results]),
        histories=[result.history for result in results],
        best_epochs=[result.best_epoch for result in results],
    )
    return metrics


def _split_metrics(data: CachedVideos, result: FoldResult, sizes: dict, warning: str | None, groups: np.ndarray | None = None) -> dict:
    split = result.split
    test_groups = None if groups is None else groups[split.test]
    metrics = report.classification_metrics(data.labels[split.test], result.test_probabilities, data.classes)
    metrics.update(
        ci=report.bootstrap_intervals(data.labels[split.test], result.test_probabilities, len(data.classes), test_groups),
        val=report.headline(report.classification_metrics(data.labels[split.val], result.val_probabilities, data.classes)),
        split_method=split.method,
        split_sizes=sizes,
        weights=data.weights,
        epochs=result.epochs,
        best_epoch=result.best_epoch,
        seconds=result.seconds,
        epoch_seconds=[round(value, 4) for value in result.epoch_seconds],
        epoch_cpu_seconds=[round(value, 4) for value in result.epoch_cpu_seconds],
        cache={"path": data.cache_path, "provenance_hash": data.provenance_hash, "backbone": data.provenance.backbone},
    )
    if result.mix_weight is not None:
        metrics["model"] = report.mixed_model_description(result.mix_weight)
        metrics["mix"] = {
            "gru_weight": result.mix_weight,
            "val_cross_entropy": dict(zip((f"{weight:.1f}" for weight in np.linspace(0, 1, len(result.mix_losses))), np.round(result.mix_losses, 4).tolist())),
            "gru_alone": {**report.headline(report.classification_metrics(data.labels[split.test], result.gru_test_probabilities, data.classes)),
                          "val": report.headline(report.classification_metrics(data.labels[split.val], result.gru_val_probabilities, data.classes))},
        }
    if result.baseline is not None:
        metrics["baseline"] = report.baseline_metrics(
            data.labels[split.test], result.baseline.test_probabilities, data.labels[split.val], result.baseline.val_probabilities, data.classes, test_groups
        )
    if warning:
        metrics["warning"] = warning
    return metrics


def _cv_metrics(data: CachedVideos, results: list[FoldResult], fold_metrics: list[dict], warning: str | None, groups: np.ndarray | None = None) -> dict:
    """Fold means on top (with std), per-class figures and confusion matrix pooled over every fold's test videos."""
    spread = report.aggregate_folds(fold_metrics)
    test = np.concatenate([result.split.test for result in results])
    test_probabilities = np.concatenate([result.test_probabilities for result in results])
    pooled = report.classification_metrics(data.labels[test], test_probabilities, data.classes)
    test_groups = None if groups is None else groups[test]
    val = report.aggregate_folds([fold["val"] for fold in fold_metrics])
    metrics = {
        **{name: spread["mean"][name] for name in report.HEADLINE},
        **{f"{name}_std": spread["std"][name] for name in report.HEADLINE},
        "cv": len(results),
        "mean": spread["mean"],
        "std": spread["std"],
        "pooled": report.headline(pooled),
        "ci": report.bootstrap_intervals(data.labels[test], test_probabilities, len(data.classes), test_groups),
        "val": val["mean"],
        "val_std": val["std"],
        "per_class": pooled["per_class"],
        "confusion_matrix": pooled["confusion_matrix"],
        "labels": data.classes,
        "videos": pooled["videos"],
        "split_method": results[0].split.method,
        "split_sizes": [fold["split_sizes"] for fold in fold_metrics],
        "folds": [
            {key: fold[key] for key in (*report.HEADLINE, "ci", "val", "mix", "baseline", "split_sizes", "epochs", "best_epoch", "seconds") if key in fold}
            for fold in fold_metrics
        ],
        "weights": data.weights,
        "epochs": int(round(np.mean([result.epochs for result in results]))),
        "cache": fold_metrics[0]["cache"],
        "note": "accuracy, balanced_accuracy, macro_f1: mean over folds (std: np.std); per_class, confusion_matrix, pooled, ci: "
        "every fold's test videos together",
    }
    if all("mix" in fold for fold in fold_metrics):
        alone = report.aggregate_folds([fold["mix"]["gru_alone"] for fold in fold_metrics])
        metrics["model"] = report.mixed_model_description(None)
        metrics["mix"] = {
            "gru_weights": [fold["mix"]["gru_weight"] for fold in fold_metrics],
            "gru_alone": {**alone["mean"], **{f"{name}_std": alone["std"][name] for name in report.HEADLINE}},
        }
    if all("baseline" in fold for fold in fold_metrics):
        metrics["baseline"] = report.baseline_cv_metrics(
            [fold["baseline"] for fold in fold_metrics],
            data.labels[test],
            np.concatenate([result.baseline.test_probabilities for result in results]),
            data.classes,
            test_groups,
        )
    if warning:
        metrics["warning"] = warning
    return metrics


def _predictions(data: CachedVideos, result: FoldResult) -> pd.DataFrame:
    """The validation and test videos with their predicted probabilities."""
    split = result.split
    indices = np.concatenate([split.val, split.test])
    probabilities = np.concatenate([result.val_probabilities, result.test_probabilities])
    parts = ["val"] * len(split.val) + ["test"] * len(split.test)
    columns = {"split": parts}
    if result.baseline is not None:
        baseline = np.concatenate([result.baseline.val_probabilities, result.baseline.test_probabilities])
        columns["baseline_predicted"] = [data.classes[code] for code in baseline.argmax(axis=1)]
    return report.predictions_table([data.paths[index] for index in indices], data.labels[indices], probabilities, data.classes, **columns)
