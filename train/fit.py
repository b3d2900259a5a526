"""Training: one split or K folds, from a feature cache (in memory or streamed) to a complete run folder.

::

    metrics = run_training(TrainConfig(features="features.h5", run="runs/first"))

:func:`fit_split` fits one split: the GRU with early stopping, the baseline on
the same training videos, and their mix. :func:`run_training` runs it on one
split or on every fold inside a :class:`~framecache.train.run_folder.RunFolder`
(which creates, replaces and cleans up the folder) and writes what
:mod:`framecache.train.results` makes of the fitted splits. It takes an already
loaded cache (``data=``) so a sweep reads the file once for all its runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from framecache import __version__
from framecache.common.errors import FramecacheError
from framecache.common.notices import random_weights_warning
from framecache.common.options import option_name
from framecache.train import report
from framecache.train.baseline import BaselineResult, baseline_split
from framecache.train.config import TrainConfig
from framecache.train.data import CachedVideos, SequenceBatches, load_cache
from framecache.train.metrics import CVMetrics, PartSize, SplitMetrics
from framecache.train.model import build_model, choose_mix_weight, predict_probabilities, save_model, with_appearance
from framecache.train.results import cv_metrics, predictions, split_metrics
from framecache.train.run_folder import RunFolder
from framecache.train.sampling import sampled_length
from framecache.train.splits import Split, group_ids, make_folds, make_split
from framecache.train.temporal import input_statistics

log = logging.getLogger(__name__)


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


class EpochLines(keras.callbacks.Callback):
    """One log line per epoch, instead of Keras' progress lines: the epoch, training and validation loss and
    accuracy, and whether validation loss is the best so far (the weights early stopping will keep)."""

    def __init__(self, epochs: int, prefix: str = ""):
        super().__init__()
        self.epochs, self.prefix = epochs, prefix
        self.best = float("inf")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        best = logs.get("val_loss", float("inf")) < self.best
        self.best = min(self.best, logs.get("val_loss", float("inf")))
        log.info("%sepoch %d/%d: loss %.3f, accuracy %.3f; validation loss %.3f, accuracy %.3f%s", self.prefix, epoch + 1,
                 self.epochs, logs.get("loss", float("nan")), logs.get("accuracy", float("nan")), logs.get("val_loss", float("nan")),
                 logs.get("val_accuracy", float("nan")), " (best so far)" if best else "")  # fmt: skip


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


def fit_split(data: CachedVideos, split: Split, config: TrainConfig, history_file: Path, log_prefix: str = "") -> FoldResult:
    """Train one GRU on ``split.train`` with early stopping on ``split.val``, fit the baseline on the same videos; predict val and test.

    Keras logs each epoch's losses and accuracies to ``history_file`` (CSV).

    With ``config.appearance`` the run's model mixes the GRU's probabilities
    with the baseline's (see :func:`framecache.train.model.with_appearance`),
    the weight chosen on ``split.val`` (:func:`framecache.train.model.choose_mix_weight`).
    """
    seed_everything(config.seed, config.deterministic)
    started = time.perf_counter()
    length = sampled_length(data.features.num_frames, config.max_len, config.frame_step)

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
            keras.callbacks.CSVLogger(str(history_file)),
            EpochLines(config.epochs, log_prefix),
        ],
        verbose=0,  # one line per epoch, from EpochLines, through logging (--quiet hides it)
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
        history=pd.read_csv(history_file),
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


def run_training(config: TrainConfig, data: CachedVideos | None = None) -> SplitMetrics | CVMetrics:
    """Train (one split, or ``config.cv`` folds), write the run folder, and return its metrics.

    A run that fails (a missing cache, a class too small to split, Ctrl-C)
    leaves things as they were (see :class:`~framecache.train.run_folder.RunFolder`).
    """
    config.validate()
    with RunFolder.create(config.run, config.overwrite) as run:
        config.run = str(run.path)
        if data is not None:
            return _train(config, data, run)
        data = load_cache(config.features, in_memory=config.in_memory)
        try:
            return _train(config, data, run)
        finally:
            data.close()


def _train(config: TrainConfig, data: CachedVideos, run: RunFolder) -> SplitMetrics | CVMetrics:
    warning = random_weights_warning(data.weights)
    if warning:
        log.warning(warning)
    class_names = np.asarray(data.classes, dtype=object)[data.labels]
    groups = group_ids(data.groups)
    if config.cv:
        if not config.ignore_split and any(split is not None for split in data.splits):
            raise FramecacheError(
                f"the cache has a CSV split column, and {option_name('cv')} makes its own folds; drop {option_name('cv')} "
                f"to use the CSV's split, or pass {option_name('ignore_split', True)} to cross-validate over every video"
            )
        splits = make_folds(class_names, groups, config.cv, config.val_fraction, config.seed)
    else:
        splits = [make_split(class_names, groups, data.splits, config.val_fraction, config.test_fraction, config.seed, config.ignore_split)]
    run.write_config(config.to_dict())

    results, folds, folders = [], [], []
    for number, split in enumerate(splits, start=1):
        folder = run.fold(number) if config.cv else run
        folders.append(folder)
        sizes = {part: PartSize.from_json(size) for part, size in split.sizes(groups).items()}
        log.info("%ssplit (%s): %s", f"fold {number}/{len(splits)} " if config.cv else "", split.method, report.format_split_sizes(sizes))
        result = fit_split(data, split, config, folder.history_file, f"fold {number}/{len(splits)} " if config.cv else "")
        save_model(result.model, folder.model_file, model_metadata(data, config, split))
        folder.write_baseline(result.baseline.model)
        metrics = split_metrics(data, result, sizes, warning, groups)
        folder.write_predictions(predictions(data, result))
        if config.cv:
            folder.write_metrics(metrics)
            log.info("fold %d/%d: %s; baseline %s", number, len(splits), report.format_headline(metrics), report.format_headline(metrics.baseline))
        results.append(result)
        folds.append(metrics)

    metrics = cv_metrics(data, results, folds, warning, groups) if config.cv else folds[0]
    if config.cv:  # the folds' tables together, one column saying which fold
        pd.concat([result.history.assign(fold=number) for number, result in enumerate(results, start=1)]).to_csv(run.history_file, index=False)
        tables = [pd.read_csv(folder.predictions_file).assign(fold=number) for number, folder in enumerate(folders, start=1)]
        run.write_predictions(pd.concat(tables))
    test = np.concatenate([result.split.test for result in results])
    run.write_metrics(metrics)
    report.write_reports(
        run.path,
        metrics,
        cache_line=f"{data.cache_path} (backbone {data.provenance.backbone}, weights {data.weights})",
        test_labels=data.labels[test],
        test_probabilities=np.concatenate([result.test_probabilities for result in results]),
        histories=[result.history for result in results],
        best_epochs=[result.best_epoch for result in results],
    )
    return metrics
