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
from functools import partial
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
from framecache.train.combine import Combiner, combine, fit_combiner
from framecache.train.config import TrainConfig
from framecache.train.data import CachedVideos, SequenceBatches, load_cache
from framecache.train.metrics import CVMetrics, PartSize, SplitMetrics
from framecache.train.model import assemble, build_model, predict_probabilities, save_model
from framecache.train.parts import FeaturePart
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
class PartResult:
    """One part of a run's model (a GRU or a baseline, on one cache's features) and its predictions."""

    name: str  # "GRU", "baseline"; with several caches "GRU (pose)", "baseline (pose)", ...
    val_probabilities: np.ndarray
    test_probabilities: np.ndarray
    best_epoch: int | None = None  # a GRU's: the epoch whose weights it keeps (1-based)


@dataclass
class FoldResult:
    """One trained model and its predictions on the validation and test parts."""

    split: Split
    model: keras.Model
    history: pd.DataFrame  # every GRU's epochs (with a "part" column when the run has several)
    val_probabilities: np.ndarray
    test_probabilities: np.ndarray
    best_epoch: int  # 1-based: the epoch whose weights the (first) GRU keeps
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)  # each epoch's wall-clock seconds (EpochTimes), every GRU
    epoch_cpu_seconds: list[float] = field(default_factory=list)  # and its CPU seconds
    baseline: BaselineResult | None = None  # the run's baseline (logistic regression on every cache's pooled features)
    parts: list[PartResult] = field(default_factory=list)  # what the model combines, in order
    combiner: Combiner | None = None  # None: the model is one GRU
    combine_fit: dict | None = None  # what fitting the combiner recorded (fit_combiner)

    @property
    def epochs(self) -> int:
        """Epochs the (first) GRU trained."""
        histories = self.history[self.history["part"] == self.parts[0].name] if "part" in self.history else self.history
        return len(histories)


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


def fit_gru(data: CachedVideos, split: Split, config: TrainConfig, part: FeaturePart | None, history_file: Path, log_prefix: str = "",
            name: str = "framecache_gru"):
    """Train one GRU (on ``part``'s columns and frames; None: every column and frame) on ``split.train`` with early
    stopping on ``split.val``; ``name``: the Keras model's.

    Returns the model, its history (also written to ``history_file``), the
    best epoch (1-based) and the EpochTimes.
    """
    length = sampled_length(data.features.num_frames, config.max_len, config.frame_step)
    statistics = input_statistics(data.features, split.train, config.inputs, config.differences, config.max_len, config.frame_step, part)
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
        part=None if part is None else part.span,
        name=name,
    )
    class_weight = class_weights(data.labels[split.train], len(data.classes)) if config.balance == "class-weight" else None
    epoch_times = EpochTimes()
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-3, patience=config.patience, restore_best_weights=True)
    model.fit(
        sequence_batches(data, split.train, config, length, train=True),
        validation_data=sequence_batches(data, split.val, config, length),
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
    return model, pd.read_csv(history_file), early_stopping.best_epoch + 1, epoch_times


def sequence_batches(data: CachedVideos, indices: np.ndarray, config: TrainConfig, length: int, train: bool = False) -> SequenceBatches:
    """The run's batches over ``indices``: training ones (random views and frames, per ``config``) or evaluation ones."""
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


def fit_split(data: CachedVideos, split: Split, config: TrainConfig, history_file: Path, log_prefix: str = "",
              groups: np.ndarray | None = None) -> FoldResult:
    """Fit every part of the run on ``split.train`` and combine them on ``split.val``; predict val and test.

    The parts: per cache of the run (one, or several joined), a GRU with early
    stopping on ``split.val`` and, with ``config.appearance``, a baseline on
    the same training videos. Their probabilities on ``split.val`` fit the
    combiner (``config.combine``, :mod:`framecache.train.combine`); the run's
    model is all of them in one Keras model
    (:func:`framecache.train.model.assemble`). The run's baseline is fitted
    on every cache's pooled features. Keras logs each GRU's epochs to
    ``history_file`` (CSV). ``groups``: :func:`~framecache.train.splits.group_ids` of the videos, where known.
    """
    seed_everything(config.seed, config.deterministic)
    started = time.perf_counter()
    length = sampled_length(data.features.num_frames, config.max_len, config.frame_step)
    several = len(data.parts) > 1
    subjects = groups if groups is not None else group_ids(data.groups)  # the baselines' inner folds never split a subject
    grus, baselines, parts, histories, times = [], [], [], [], EpochTimes()
    best_epoch = None
    # Every baseline is fitted before the GRUs: its pooled features (about 200 MB on 10,000 videos) are freed before
    # TensorFlow's memory grows, which it keeps. Neither draws from the other's random numbers.
    baseline = partial(baseline_split, data.features, data.labels, split, len(data.classes), config.balance != "none", config.seed,
                       max_len=config.max_len, frame_step=config.frame_step, groups=subjects)  # fmt: skip
    masked = [several or part.presence is not None for part in data.parts]  # a GRU reads a part of the columns, or of the frames
    part_baselines = [baseline([part.span] if reads_part else None) if config.appearance else None
                      for part, reads_part in zip(data.parts, masked)]  # fmt: skip
    # The run's baseline: the one part's own, or one on every part's pooled features.
    run_baseline = part_baselines[0] if config.appearance and not several else baseline(data.spans)
    for number, (part, reads_part, fitted) in enumerate(zip(data.parts, masked, part_baselines), start=1):
        prefix = f"{log_prefix}{part.name} " if several else log_prefix
        gru, history, best, epoch_times = fit_gru(data, split, config, part if reads_part else None, history_file, prefix,
                                                  f"gru_{number}" if several else "framecache_gru")
        best_epoch = best_epoch or best
        name = f"GRU ({part.name})" if several else "GRU alone"
        histories.append(history.assign(part=name) if several else history)
        times.wall += epoch_times.wall
        times.cpu += epoch_times.cpu
        grus.append(gru)
        val_batches, test_batches = sequence_batches(data, split.val, config, length), sequence_batches(data, split.test, config, length)
        parts.append(PartResult(name, predict_probabilities(gru, val_batches), predict_probabilities(gru, test_batches), best))
        baselines.append(fitted.model if fitted is not None else None)
        if fitted is not None:
            parts.append(PartResult(f"baseline ({part.name})" if several else "baseline", fitted.val_probabilities, fitted.test_probabilities))
    history = pd.concat(histories, ignore_index=True)
    history.to_csv(history_file, index=False)
    combiner = combine_fit = None
    if len(parts) > 1:
        combiner, combine_fit = fit_combiner(config.combine, data.labels[split.val], [part.val_probabilities for part in parts])
        model = assemble(data.feature_dim, grus, baselines, combiner)  # computes what combine() does, on the same frames
        val_probabilities = combine(combiner, [part.val_probabilities for part in parts])
        test_probabilities = combine(combiner, [part.test_probabilities for part in parts])
    else:
        model, val_probabilities, test_probabilities = grus[0], parts[0].val_probabilities, parts[0].test_probabilities
    return FoldResult(
        split=split,
        model=model,
        history=history,
        val_probabilities=val_probabilities,
        test_probabilities=test_probabilities,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        epoch_seconds=times.wall,
        epoch_cpu_seconds=times.cpu,
        baseline=run_baseline,
        parts=parts,
        combiner=combiner,
        combine_fit=combine_fit,
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
        "backbone": data.backbone,
        "weights": data.weights,
        "provenance": data.provenance.to_dict(),
        "provenance_hash": data.provenance_hash,
        "cache_path": data.cache_path,
        "max_len": config.max_len,
        "frame_step": config.frame_step,
        "train_config": config.to_dict(),
        **({"parts": [part.to_json() for part in data.parts]} if len(data.parts) > 1 else {}),
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
        result = fit_split(data, split, config, folder.history_file, f"fold {number}/{len(splits)} " if config.cv else "", groups)
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
    curves, best_epochs, names = [], [], []
    for number, result in enumerate(results, start=1):
        for part in [part for part in result.parts if part.best_epoch is not None]:
            curves.append(result.history[result.history["part"] == part.name] if "part" in result.history else result.history)
            best_epochs.append(part.best_epoch)
            names.append(" ".join(filter(None, [f"fold {number}" if config.cv else "", part.name if len(data.parts) > 1 else ""])))
    report.write_reports(
        run.path,
        metrics,
        cache_line=f"{data.cache_path} (backbone {data.backbone}, weights {data.weights})",
        test_labels=data.labels[test],
        test_probabilities=np.concatenate([result.test_probabilities for result in results]),
        histories=curves,
        best_epochs=best_epochs,
        curve_names=names if any(names) else None,
    )
    return metrics
