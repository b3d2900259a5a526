"""What a run says in words and pictures: report.txt, the plots, predictions.csv's table, and the console summary.

Everything here reads the typed metrics records of :mod:`framecache.train.metrics`
(a run's, or one fold's); the figures themselves are computed in
:mod:`framecache.train.figures`, and the run folder's files are named in
:mod:`framecache.train.run_folder`. Every test figure is shown with its
bootstrap interval and beside the baseline's figure on the same videos.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from framecache.common.notices import RANDOM_WEIGHTS_TAG
from framecache.train.metrics import HEADLINE, CVMetrics, Figures, FoldSummary, Intervals, PartSize, SplitMetrics
from framecache.train.run_folder import BASELINE_FILE, CONFUSION_FILE, CURVES_FILE, MODEL_FILE, REPORT_FILE, RUN_FILES

RunOrFold = SplitMetrics | CVMetrics | FoldSummary


def text_report(true_labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> str:
    """scikit-learn's classification report and the confusion matrix as text."""
    predicted = probabilities.argmax(axis=1)
    codes = np.arange(len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(true_labels, predicted, labels=codes, target_names=classes, digits=3, zero_division=0)
    matrix = pd.DataFrame(confusion_matrix(true_labels, predicted, labels=codes), index=classes, columns=classes)
    return f"{report}\nconfusion matrix (rows: true, columns: predicted)\n{matrix.to_string()}\n"


def format_split_sizes(split_sizes: dict[str, PartSize]) -> str:
    """``train 28 videos (7 groups), val 8 videos (2 groups), test 12 videos (3 groups)``."""
    parts = []
    for part, size in split_sizes.items():
        groups = f" ({size.groups} group{'s' if size.groups != 1 else ''})" if size.groups is not None else ""
        parts.append(f"{part} {size.videos} video{'s' if size.videos != 1 else ''}{groups}")
    return ", ".join(parts)


def format_headline(figures: Figures, spread: Figures | None = None, ci: Intervals | None = None) -> str:
    """``accuracy 0.917, balanced accuracy ...``; with ``spread`` ``0.917 ± 0.118``; with ``ci`` ``0.917 [0.750, 1.000]``."""
    names = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"}
    parts = []
    for name in HEADLINE:
        text = f"{names[name]} {getattr(figures, name):.3f}"
        if spread is not None:
            text += f" ± {getattr(spread, name):.3f}"
        if ci is not None:
            low, high = getattr(ci, name)
            text += f" [{low:.3f}, {high:.3f}]"
        parts.append(text)
    return ", ".join(parts)


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


def plot_curves(path: Path, histories: list[pd.DataFrame], title: str, best_epochs: list[int] | None = None, names: list[str] | None = None):
    """Loss and accuracy per epoch, training (dashed) and validation (solid); one colour per fold.

    ``best_epochs`` (1-based, one per history): the epoch whose weights early
    stopping restored, marked on both panels (a dotted line, and a dot on the
    validation curve). ``names``: each history's name in the legend (default
    ``fold 1``, ``fold 2``... where there are several). Both panels have a legend. Returns the figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for fold, history in enumerate(histories):
        colour = f"C{fold % 10}"
        label = f"{names[fold]} " if names else f"fold {fold + 1} " if len(histories) > 1 else ""
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
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7 if len(histories) < 4 else 5, ncol=1 if len(histories) < 4 else 2)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure


def _model_name(metrics: RunOrFold) -> str:
    """What to call the run's model: ``model`` when it combines parts (the GRU and the baseline...), else ``GRU``."""
    return "model" if metrics.mix is not None else "GRU"


def _rows(metrics: RunOrFold, part: str, intervals: bool = True) -> list[tuple[str, Figures, Figures | None, Intervals | None]]:
    """(name, figures, spread, interval) per model for one ``part`` of a run's metrics.

    ``part``: ``test`` (one split or fold), ``mean`` / ``pooled`` / ``val`` (a cross-validated run; ``val`` also one split).
    Rows: the run's model, each of its parts alone when it combines several, the baseline.
    ``intervals=False`` leaves the bootstrap intervals out (a fold's, whose method the notes do not describe).
    """
    name, baseline, mix = _model_name(metrics), metrics.baseline, metrics.mix
    cv = isinstance(metrics, CVMetrics)
    rows = []
    if part == "test":
        rows.append((name, metrics, None, metrics.ci if intervals else None))
        if mix:
            rows += [(name, figures, None, None) for name, figures in mix.alone().items() if name != "baseline"]
        if baseline:
            rows.append(("baseline", baseline, None, baseline.ci if intervals else None))
    elif part == "mean":
        rows.append((name, metrics.mean, metrics.std, None))
        if mix:
            rows += [(name, figures, figures.spread, None) for name, figures in mix.alone().items() if name != "baseline"]
        if baseline:
            rows.append(("baseline", baseline.mean, baseline.std, None))
    elif part == "pooled":
        rows.append((name, metrics.pooled, None, metrics.ci))
        if baseline:
            rows.append(("baseline", baseline.pooled, None, baseline.ci))
    elif part == "val":
        rows.append((name, metrics.val, metrics.val_std if cv else None, None))
        if mix and not cv:
            rows += [(name, figures.val, None, None) for name, figures in mix.alone().items() if name != "baseline"]
        if baseline:
            rows.append(("baseline", baseline.val, baseline.val_std if cv else None, None))
    return rows


def _weights(mix) -> str:
    """A fold's part weights, in words (an earlier run's: its one weight on the GRU)."""
    if mix.part_weights:
        return ", ".join(f"{name} {weight:.2f}" for name, weight in mix.part_weights.items())
    return f"{mix.gru_weight:.1f} on the GRU"


def _format_rows(rows: list, indent: str) -> list[str]:
    width = max(len(name) for name, *_ in rows)
    return [f"{indent}{name:<{width}}  {format_headline(figures, spread, ci)}" for name, figures, spread, ci in rows]


def _notes(metrics: SplitMetrics | CVMetrics) -> list[str]:
    """The lines under the figures: what the model is, how the intervals were made, what the baseline is."""
    notes = []
    if metrics.mix is not None:
        notes.append(f"model: {metrics.model}")
    if metrics.ci is not None:
        notes.append(f"[ ]: {metrics.ci.method}")
    if metrics.baseline is not None:
        notes.append(f"baseline: {metrics.baseline.model}, same training videos")
    return notes


def write_reports(
    folder: Path,
    metrics: SplitMetrics | CVMetrics,
    cache_line: str,
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
    histories: list[pd.DataFrame],
    best_epochs: list[int] | None = None,
    curve_names: list[str] | None = None,
) -> None:
    """report.txt, confusion.png and curves.png of a run (for --cv: every fold's test videos pooled)."""
    lines = [f"run      {folder}", f"cache    {cache_line}"]
    if metrics.warning:
        lines = ["!" * 80, metrics.warning, "!" * 80, *lines]
    cv = isinstance(metrics, CVMetrics)
    if cv:
        lines.append(f"{metrics.cv}-fold cross-validation ({metrics.split_method} folds)")
        for number, fold in enumerate(metrics.folds, start=1):
            weight = f", weights {_weights(fold.mix)}" if fold.mix is not None else ""
            lines.append(f"fold {number}: {format_split_sizes(fold.split_sizes)}{weight}")
            lines += _format_rows(_rows(fold, "test", intervals=False), "  ")
        lines.append("\ntest parts, mean ± std over the folds:")
        lines += _format_rows(_rows(metrics, "mean"), "  ")
        if metrics.val_std is not None:
            lines.append("validation parts, mean ± std over the folds:")
            lines += _format_rows(_rows(metrics, "val"), "  ")
        lines.append(f"every fold's {metrics.videos} test videos together:")
        lines += _format_rows(_rows(metrics, "pooled"), "  ")
        lines += _notes(metrics)
        lines.append(f"\n{_model_name(metrics)}, every fold's test videos together:")
    else:
        lines.append(f"split    {metrics.split_method}: {format_split_sizes(metrics.split_sizes)}")
        lines.append(f"epochs   {metrics.epochs} (best {metrics.best_epoch})")
        lines.append(f"test ({metrics.videos} videos):")
        lines += _format_rows(_rows(metrics, "test"), "  ")
        lines.append("validation:")
        lines += _format_rows(_rows(metrics, "val"), "  ")
        lines += _notes(metrics)
        lines.append(f"\n{_model_name(metrics)} on the test videos:")
    lines.append(text_report(test_labels, test_probabilities, metrics.labels))
    (folder / REPORT_FILE).write_text("\n".join(lines))
    flag = f" — {RANDOM_WEIGHTS_TAG}" if metrics.warning else ""
    title = f"{folder.name}: " + ("every fold's test videos" if cv else "test split") + flag
    plot_confusion(folder / CONFUSION_FILE, metrics.confusion_matrix, metrics.labels, title)
    plot_curves(folder / CURVES_FILE, histories, f"{folder.name}: GRU training{flag}", best_epochs, curve_names)


def console_summary(metrics: SplitMetrics | CVMetrics, folder: Path) -> str:
    """The last lines ``framecache train`` prints: the run's figures beside the baseline's, with intervals; splits; where the files are."""
    lines = []
    if metrics.warning:
        lines += ["!" * 80, metrics.warning, "!" * 80]
    if isinstance(metrics, CVMetrics):
        lines.append(f"{metrics.cv}-fold cross-validation ({metrics.split_method} folds), test parts, mean ± std over the folds:")
        lines += _format_rows(_rows(metrics, "mean"), "  ")
        lines.append(f"every fold's {metrics.videos} test videos together:")
        lines += _format_rows(_rows(metrics, "pooled"), "  ")
        val = _rows(metrics, "val")
        lines.append("validation balanced accuracy: " + ", ".join(f"{name} {figures.balanced_accuracy:.3f}" for name, figures, _, _ in val))
        for number, fold in enumerate(metrics.folds, start=1):
            versus = f"; baseline {fold.baseline.balanced_accuracy:.3f}" if fold.baseline is not None else ""
            lines.append(f"  fold {number}: balanced accuracy {fold.balanced_accuracy:.3f}{versus}  [{format_split_sizes(fold.split_sizes)}]")
        files = f"{', '.join(name for name in RUN_FILES if name not in (MODEL_FILE, BASELINE_FILE))}; fold1..fold{metrics.cv}/{MODEL_FILE}, {BASELINE_FILE}"
    else:
        lines.append(f"test ({metrics.videos} videos):")
        lines += _format_rows(_rows(metrics, "test"), "  ")
        val = _rows(metrics, "val")
        lines.append("validation balanced accuracy: " + ", ".join(f"{name} {figures.balanced_accuracy:.3f}" for name, figures, _, _ in val))
        lines.append(f"split ({metrics.split_method}): {format_split_sizes(metrics.split_sizes)}")
        lines.append(f"epochs {metrics.epochs} (best {metrics.best_epoch}), {metrics.seconds:.1f} s")
        files = ", ".join(RUN_FILES)
    lines += _notes(metrics)
    lines.append(f"run folder {folder}: {files}")
    return "\n".join(lines)
