"""Metrics, the files of a run folder, and the console summary.

A run folder holds ``config.json``, ``metrics.json``, ``report.txt``,
``history.csv``, ``predictions.csv``, ``confusion.png``, ``curves.png``,
``model.keras`` and ``baseline.json`` (a ``--cv`` run: one ``foldK/`` per fold
with its model and baseline, and the pooled figures on top). Every test figure
comes with its bootstrap interval and the baseline's figure on the same
videos.
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
from framecache.train.baseline import DESCRIPTION as BASELINE_DESCRIPTION

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")
BASELINE_FILE = "baseline.json"  # the fitted baseline beside each model.keras (see train.baseline.Baseline)
RUN_FILES = ("model.keras", BASELINE_FILE, "metrics.json", "report.txt", "confusion.png", "curves.png", "history.csv", "predictions.csv", "config.json")


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


BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
MIN_BOOTSTRAP_SUBJECTS = 5  # fewer test subjects than this: resample videos instead (and say so)


def bootstrap_intervals(
    true_labels: np.ndarray,
    probabilities: np.ndarray,
    num_classes: int,
    groups: np.ndarray | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap intervals of accuracy, balanced accuracy and macro F1.

    Resamples the test videos with replacement, or, with ``groups`` (the
    subject of each video), whole subjects: a subject's videos are not
    independent, so resampling them one by one would claim too much certainty.
    With fewer than :data:`MIN_BOOTSTRAP_SUBJECTS` test subjects there is too
    little to resample; videos are resampled instead and ``method`` says so.
    Each figure is computed as :func:`classification_metrics` does (balanced
    accuracy over the classes present, macro F1 over the classes present or
    predicted). Returns ``{"accuracy": [low, high], ..., "method": "..."}``.
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
        return {name: [float("nan"), float("nan")] for name in HEADLINE} | {"method": method}
    # Confusion counts per unit: (units, classes * classes); a resample's matrix is a weighted sum of them.
    cells = np.zeros((count, num_classes * num_classes))
    np.add.at(cells, (units, true_labels * num_classes + predicted), 1.0)
    weights = np.random.default_rng(seed).multinomial(count, np.full(count, 1.0 / count), size=resamples).astype(np.float64)
    figures = figures_from_confusion((weights @ cells).reshape(resamples, num_classes, num_classes))
    tail = 100 * (1 - confidence) / 2
    intervals = {name: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] for name, values in figures.items()}
    return {**intervals, "method": method}


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


def headline(metrics: dict) -> dict:
    return {name: metrics[name] for name in HEADLINE}


def baseline_metrics(
    test_labels: np.ndarray, test_probabilities: np.ndarray, val_labels: np.ndarray, val_probabilities: np.ndarray,
    classes: list[str], test_groups: np.ndarray | None = None,
) -> dict:
    """The baseline's block of metrics.json for one split: test figures, their bootstrap intervals, validation figures."""
    test = classification_metrics(test_labels, test_probabilities, classes)
    return {
        "model": BASELINE_DESCRIPTION,
        **headline(test),
        "ci": bootstrap_intervals(test_labels, test_probabilities, len(classes), test_groups),
        "val": headline(classification_metrics(val_labels, val_probabilities, classes)),
        "videos": test["videos"],
        "confusion_matrix": test["confusion_matrix"],
    }


def baseline_cv_metrics(
    folds: list[dict], test_labels: np.ndarray, test_probabilities: np.ndarray, classes: list[str], test_groups: np.ndarray | None = None
) -> dict:
    """The baseline's block for a cross-validated run: fold means and std, and every fold's test videos pooled (with intervals)."""
    spread, val = aggregate_folds(folds), aggregate_folds([fold["val"] for fold in folds])
    pooled = classification_metrics(test_labels, test_probabilities, classes)
    return {
        "model": BASELINE_DESCRIPTION,
        **spread["mean"],
        **{f"{name}_std": spread["std"][name] for name in HEADLINE},
        "mean": spread["mean"],
        "std": spread["std"],
        "pooled": headline(pooled),
        "ci": bootstrap_intervals(test_labels, test_probabilities, len(classes), test_groups),
        "val": val["mean"],
        "val_std": val["std"],
        "videos": pooled["videos"],
        "confusion_matrix": pooled["confusion_matrix"],
    }


def mixed_model_description(weight: float | None) -> str:
    """What the run's model is when the appearance model is mixed in (``weight``: on the GRU; None: chosen per fold)."""
    share = "chosen per fold on its validation videos" if weight is None else f"{weight:.1f} on the GRU, chosen on the validation videos"
    return f"the GRU's class probabilities mixed with the baseline's ({share})"


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


def format_headline(figures: dict, spread: dict | None = None, ci: dict | None = None) -> str:
    """``accuracy 0.917, balanced accuracy ...``; with ``spread`` ``0.917 ± 0.118``; with ``ci`` ``0.917 [0.750, 1.000]``."""
    names = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"}
    parts = []
    for name in HEADLINE:
        text = f"{names[name]} {figures[name]:.3f}"
        if spread is not None:
            text += f" ± {spread[name]:.3f}"
        if ci is not None and name in ci:
            text += f" [{ci[name][0]:.3f}, {ci[name][1]:.3f}]"
        parts.append(text)
    return ", ".join(parts)


def _ci_note(metrics: dict) -> str:
    return f"[ ]: {metrics['ci']['method']}" if "ci" in metrics else ""


def _baseline_note(metrics: dict) -> str:
    return f"baseline: {metrics['baseline']['model']}, same training videos" if "baseline" in metrics else ""


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


def plot_curves(path: Path, histories: list[pd.DataFrame], title: str, best_epochs: list[int] | None = None):
    """Loss and accuracy per epoch, training (dashed) and validation (solid); one colour per fold.

    ``best_epochs`` (1-based, one per history): the epoch whose weights early
    stopping restored, marked on both panels (a dotted line, and a dot on the
    validation curve). Both panels have a legend. Returns the figure.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for fold, history in enumerate(histories):
        colour = f"C{fold % 10}"
        label = f"fold {fold + 1} " if len(histories) > 1 else ""
        epochs = history["epoch"] + 1
        best = best_epochs[fold] if best_epochs is not None else None
        for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            axes.plot(epochs, history[name], linestyle="--", color=colour, label=f"{label}train")
            axes.plot(epochs, history[f"val_{name}"], color=colour, label=f"{label}val")
            if best is not None:
                axes.axvline(best, color=colour, linestyle=":", linewidth=1.2, label=f"{label}best epoch {best} (weights kept)")
                at_best = history.loc[epochs == best, f"val_{name}"]
                if len(at_best):
                    axes.plot([best], [float(at_best.iloc[0])], "o", color=colour, markersize=5)
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7 if len(histories) < 4 else 5, ncol=1 if len(histories) < 4 else 2)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure


def _names(metrics: dict) -> tuple[str, str]:
    """What to call the run's model, and its one-line description."""
    if "mix" in metrics:
        return "model", f"model: {metrics.get('model', mixed_model_description(None))}"
    return "GRU", ""


def _rows(metrics: dict, part: str, intervals: bool = True) -> list[tuple[str, dict, dict | None, dict | None]]:
    """(name, figures, spread, interval) per model for one ``part`` of a run's metrics.

    ``part``: ``test`` (one split), ``mean`` / ``pooled`` / ``val`` (a cross-validated run; ``val`` also one split).
    Rows: the run's model, its GRU alone when the appearance model is mixed in, the baseline.
    ``intervals=False`` leaves the bootstrap intervals out (a fold's, whose method the notes do not describe).
    """
    name, _ = _names(metrics)
    baseline, mix = metrics.get("baseline"), metrics.get("mix")
    cv = "cv" in metrics
    rows = []
    if part == "test":
        rows.append((name, metrics, None, metrics.get("ci") if intervals else None))
        if mix:
            rows.append(("GRU alone", mix["gru_alone"], None, None))
        if baseline:
            rows.append(("baseline", baseline, None, baseline.get("ci") if intervals else None))
    elif part == "mean":
        rows.append((name, metrics["mean"], metrics["std"], None))
        if mix:
            alone = mix["gru_alone"]
            rows.append(("GRU alone", alone, {key: alone[f"{key}_std"] for key in HEADLINE}, None))
        if baseline:
            rows.append(("baseline", baseline["mean"], baseline["std"], None))
    elif part == "pooled":
        rows.append((name, metrics["pooled"], None, metrics.get("ci")))
        if baseline:
            rows.append(("baseline", baseline["pooled"], None, baseline.get("ci")))
    elif part == "val":
        rows.append((name, metrics["val"], metrics.get("val_std") if cv else None, None))
        if mix and not cv:
            rows.append(("GRU alone", mix["gru_alone"]["val"], None, None))
        if baseline:
            rows.append(("baseline", baseline["val"], baseline.get("val_std") if cv else None, None))
    return rows


def _format_rows(rows: list, indent: str) -> list[str]:
    width = max(len(name) for name, *_ in rows)
    return [f"{indent}{name:<{width}}  {format_headline(figures, spread, ci)}" for name, figures, spread, ci in rows]


def _notes(metrics: dict) -> list[str]:
    return [note for note in (_names(metrics)[1], _ci_note(metrics), _baseline_note(metrics)) if note]


def write_reports(
    folder: Path,
    metrics: dict,
    cache_line: str,
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
    histories: list[pd.DataFrame],
    best_epochs: list[int] | None = None,
) -> None:
    """metrics.json, report.txt, confusion.png and curves.png of a run (for --cv: every fold's test videos pooled)."""
    write_json(folder / "metrics.json", metrics)
    warning = metrics.get("warning")
    lines = [f"run      {folder}", f"cache    {cache_line}"]
    if warning:
        lines = ["!" * 80, warning, "!" * 80, *lines]
    name, _ = _names(metrics)
    if "cv" in metrics:
        lines.append(f"{metrics['cv']}-fold cross-validation ({metrics['split_method']} folds)")
        for fold, fold_metrics in enumerate(metrics["folds"]):
            weight = f", weight {fold_metrics['mix']['gru_weight']:.1f} on the GRU" if "mix" in fold_metrics else ""
            lines.append(f"fold {fold + 1}: {format_split_sizes(fold_metrics['split_sizes'])}{weight}")
            lines += _format_rows(_rows(fold_metrics, "test", intervals=False), "  ")
        lines.append("\ntest parts, mean ± std over the folds:")
        lines += _format_rows(_rows(metrics, "mean"), "  ")
        if "val_std" in metrics:
            lines.append("validation parts, mean ± std over the folds:")
            lines += _format_rows(_rows(metrics, "val"), "  ")
        lines.append(f"every fold's {metrics['videos']} test videos together:")
        lines += _format_rows(_rows(metrics, "pooled"), "  ")
        lines += _notes(metrics)
        lines.append(f"\n{name}, every fold's test videos together:")
    else:
        lines.append(f"split    {metrics['split_method']}: {format_split_sizes(metrics['split_sizes'])}")
        lines.append(f"epochs   {metrics['epochs']} (best {metrics['best_epoch']})")
        lines.append(f"test ({metrics['videos']} videos):")
        lines += _format_rows(_rows(metrics, "test"), "  ")
        lines.append("validation:")
        lines += _format_rows(_rows(metrics, "val"), "  ")
        lines += _notes(metrics)
        lines.append(f"\n{name} on the test videos:")
    lines.append(text_report(test_labels, test_probabilities, metrics["labels"]))
    (folder / "report.txt").write_text("\n".join(lines))
    flag = f" — {RANDOM_WEIGHTS_TAG}" if warning else ""
    title = f"{folder.name}: " + ("every fold's test videos" if "cv" in metrics else "test split") + flag
    plot_confusion(folder / "confusion.png", metrics["confusion_matrix"], metrics["labels"], title)
    plot_curves(folder / "curves.png", histories, f"{folder.name}: GRU training{flag}", best_epochs)


def console_summary(metrics: dict, folder: Path) -> str:
    """The last lines ``framecache train`` prints: the run's figures beside the baseline's, with intervals; splits; where the files are."""
    lines = []
    if metrics.get("warning"):
        lines += ["!" * 80, metrics["warning"], "!" * 80]
    if "cv" in metrics:
        lines.append(f"{metrics['cv']}-fold cross-validation ({metrics['split_method']} folds), test parts, mean ± std over the folds:")
        lines += _format_rows(_rows(metrics, "mean"), "  ")
        lines.append(f"every fold's {metrics['videos']} test videos together:")
        lines += _format_rows(_rows(metrics, "pooled"), "  ")
        val = _rows(metrics, "val")
        lines.append("validation balanced accuracy: " + ", ".join(f"{name} {figures['balanced_accuracy']:.3f}" for name, figures, _, _ in val))
        for fold, fold_metrics in enumerate(metrics["folds"]):
            versus = f"; baseline {fold_metrics['baseline']['balanced_accuracy']:.3f}" if "baseline" in fold_metrics else ""
            lines.append(f"  fold {fold + 1}: balanced accuracy {fold_metrics['balanced_accuracy']:.3f}{versus}  [{format_split_sizes(fold_metrics['split_sizes'])}]")
        files = f"{', '.join(name for name in RUN_FILES if name not in ('model.keras', BASELINE_FILE))}; fold1..fold{metrics['cv']}/model.keras, {BASELINE_FILE}"
    else:
        lines.append(f"test ({metrics['videos']} videos):")
        lines += _format_rows(_rows(metrics, "test"), "  ")
        val = _rows(metrics, "val")
        lines.append("validation balanced accuracy: " + ", ".join(f"{name} {figures['balanced_accuracy']:.3f}" for name, figures, _, _ in val))
        lines.append(f"split ({metrics['split_method']}): {format_split_sizes(metrics['split_sizes'])}")
        lines.append(f"epochs {metrics['epochs']} (best {metrics['best_epoch']}), {metrics['seconds']:.1f} s")
        files = ", ".join(RUN_FILES)
    lines += _notes(metrics)
    lines.append(f"run folder {folder}: {files}")
    return "\n".join(lines)
