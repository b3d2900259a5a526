"""Metrics, the files of a run folder, and the console summary.

A run folder holds ``config.json``, ``metrics.json``, ``report.txt``,
``history.csv``, ``predictions.csv``, ``confusion.png``, ``curves.png`` and
``model.keras`` (a ``--cv`` run: one ``foldK/`` per fold with its model, and
the pooled figures on top).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from framecache.common.notices import RANDOM_WEIGHTS_TAG, random_weights_warning  # noqa: F401 (used by fit, evaluate, predict)

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")
RUN_FILES = ("model.keras", "metrics.json", "report.txt", "confusion.png", "curves.png", "history.csv", "predictions.csv", "config.json")


def classification_metrics(true_labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Headline figures, per-class precision/recall/F1 and the confusion matrix (rows: true, columns: predicted)."""
    predicted = probabilities.argmax(axis=1)
    codes = np.arange(len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from a small split
        precision, recall, f1, support = precision_recall_fscore_support(true_labels, predicted, labels=codes, zero_division=0)
        balanced = balanced_accuracy_score(true_labels, predicted)
        macro_f1 = f1_score(true_labels, predicted, average="macro", zero_division=0)  # over the classes present
    return {
        "accuracy": float(accuracy_score(true_labels, predicted)),
        "balanced_accuracy": float(balanced),
        "macro_f1": float(macro_f1),
        "videos": int(len(true_labels)),
        "labels": list(classes),
        "per_class": {
            name: {"precision": float(precision[code]), "recall": float(recall[code]), "f1": float(f1[code]), "support": int(support[code])}
            for code, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(true_labels, predicted, labels=codes).tolist(),
    }


def headline(metrics: dict) -> dict:
    return {name: metrics[name] for name in HEADLINE}


def aggregate_folds(fold_metrics: list[dict]) -> dict:
    """Mean and standard deviation (``np.std``, as scikit-learn reports) of each headline figure over folds."""
    return {
        "mean": {name: float(np.mean([fold[name] for fold in fold_metrics])) for name in HEADLINE},
        "std": {name: float(np.std([fold[name] for fold in fold_metrics])) for name in HEADLINE},
    }


def text_report(true_labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> str:
    """scikit-learn's classification report and the confusion matrix as text."""
    predicted = probabilities.argmax(axis=1)
    codes = np.arange(len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(true_labels, predicted, labels=codes, target_names=classes, digits=3, zero_division=0)
    matrix = pd.DataFrame(confusion_matrix(true_labels, predicted, labels=codes), index=classes, columns=classes)
    return f"{report}\nconfusion matrix (rows: true, columns: predicted)\n{matrix.to_string()}\n"


def format_split_sizes(split_sizes: dict) -> str:
    """``train 28 videos (7 groups), val 8 videos (2 groups), test 12 videos (3 groups)``."""
    parts = []
    for part, size in split_sizes.items():
        groups = f" ({size['groups']} group{'s' if size['groups'] != 1 else ''})" if size["groups"] is not None else ""
        parts.append(f"{part} {size['videos']} video{'s' if size['videos'] != 1 else ''}{groups}")
    return ", ".join(parts)


def format_headline(figures: dict, spread: dict | None = None) -> str:
    names = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"}
    if spread is None:
        return ", ".join(f"{names[name]} {figures[name]:.3f}" for name in HEADLINE)
    return ", ".join(f"{names[name]} {figures[name]:.3f} ± {spread[name]:.3f}" for name in HEADLINE)


def write_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=2) + "\n")


def predictions_table(paths: list[str], true_labels: np.ndarray, probabilities: np.ndarray, classes: list[str], **columns) -> pd.DataFrame:
    """One row per video: path, label, predicted label, then extra ``columns`` and one probability column per class."""
    table = pd.DataFrame(
        {
            "path": paths,
            "label": [classes[code] for code in true_labels],
            "predicted": [classes[code] for code in probabilities.argmax(axis=1)],
            **columns,
        }
    )
    for code, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, code]
    return table


def plot_confusion(path: Path, matrix: list[list[int]], classes: list[str], title: str) -> None:
    """Confusion matrix: counts in the cells, colour by share of the true class."""
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = 2.5 + 0.6 * len(classes)
    figure = Figure(figsize=(side + 1, side))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class")
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            colour = "white" if shares[row, column] > 0.6 else "black"
            axes.text(column, row, str(counts[row, column]), ha="center", va="center", color=colour)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_curves(path: Path, histories: list[pd.DataFrame], title: str) -> None:
    """Loss and accuracy per epoch, training (dashed) and validation (solid); one colour per fold."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for fold, history in enumerate(histories):
        colour = f"C{fold % 10}"
        label = f"fold {fold + 1} " if len(histories) > 1 else ""
        epochs = history["epoch"] + 1
        for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            axes.plot(epochs, history[name], linestyle="--", color=colour, label=f"{label}train")
            axes.plot(epochs, history[f"val_{name}"], color=colour, label=f"{label}val")
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
    accuracy_axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_reports(
    folder: Path,
    metrics: dict,
    cache_line: str,
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
    histories: list[pd.DataFrame],
) -> None:
    """metrics.json, report.txt, confusion.png and curves.png of a run (for --cv: every fold's test videos pooled)."""
    write_json(folder / "metrics.json", metrics)
    warning = metrics.get("warning")
    lines = [f"run      {folder}", f"cache    {cache_line}"]
    if warning:
        lines = ["!" * 80, warning, "!" * 80, *lines]
    if "cv" in metrics:
        lines.append(f"{metrics['cv']}-fold cross-validation ({metrics['split_method']} folds)")
        for fold, fold_metrics in enumerate(metrics["folds"]):
            lines.append(f"fold {fold + 1}   {format_headline(fold_metrics)}   [{format_split_sizes(fold_metrics['split_sizes'])}]")
        lines.append(f"mean     {format_headline(metrics['mean'], metrics['std'])}")
        lines.append("\nevery fold's test videos together:")
    else:
        lines.append(f"split    {metrics['split_method']}: {format_split_sizes(metrics['split_sizes'])}")
        lines.append(f"epochs   {metrics['epochs']} (best {metrics['best_epoch']})")
        lines.append(f"test     {format_headline(metrics)}")
        lines.append(f"val      {format_headline(metrics['val'])}\n")
    lines.append(text_report(test_labels, test_probabilities, metrics["labels"]))
    (folder / "report.txt").write_text("\n".join(lines))
    flag = f" — {RANDOM_WEIGHTS_TAG}" if warning else ""
    title = f"{folder.name}: " + ("every fold's test videos" if "cv" in metrics else "test split") + flag
    plot_confusion(folder / "confusion.png", metrics["confusion_matrix"], metrics["labels"], title)
    plot_curves(folder / "curves.png", histories, folder.name + flag)


def console_summary(metrics: dict, folder: Path) -> str:
    """The last lines ``framecache train`` prints: headline figures, splits, where the files are."""
    lines = []
    if metrics.get("warning"):
        lines += ["!" * 80, metrics["warning"], "!" * 80]
    if "cv" in metrics:
        lines.append(f"{metrics['cv']}-fold cross-validation ({metrics['split_method']} folds), test parts: "
                     f"{format_headline(metrics['mean'], metrics['std'])}")
        for fold, fold_metrics in enumerate(metrics["folds"]):
            lines.append(f"  fold {fold + 1}: {format_headline(fold_metrics)}  [{format_split_sizes(fold_metrics['split_sizes'])}]")
        files = f"{', '.join(name for name in RUN_FILES if name != 'model.keras')}; fold1..fold{metrics['cv']}/model.keras"
    else:
        lines.append(f"test ({metrics['videos']} videos): {format_headline(metrics)}")
        lines.append(f"split ({metrics['split_method']}): {format_split_sizes(metrics['split_sizes'])}")
        lines.append(f"epochs {metrics['epochs']} (best {metrics['best_epoch']}), {metrics['seconds']:.1f} s")
        files = ", ".join(RUN_FILES)
    lines.append(f"run folder {folder}: {files}")
    return "\n".join(lines)
