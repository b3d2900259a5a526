"""``framecache compare [runs/]``: one table of every run under a folder.

Columns: the run, the settings that differ between runs, the validation
balanced accuracy (what to choose a configuration by), the headline test
figures (``mean±std`` for ``--cv`` runs) with the balanced accuracy's 95 %
bootstrap interval, the baseline's test figures on the same split (logistic
regression on each video's mean feature), the epochs trained and seconds.
:func:`best_run` names the run with the best validation figures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from framecache.common.errors import FramecacheError
from framecache.common.notices import RANDOM_WEIGHTS, RANDOM_WEIGHTS_TAG, random_weights_warning
from framecache.common.options import command_hint
from framecache.train.metrics import HEADLINE, CVMetrics
from framecache.train.run_folder import RunFolder

log = logging.getLogger(__name__)

IGNORED_SETTINGS = ("run", "in_memory", "overwrite", "quiet")
SHORT_NAMES = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "macro_f1": "macro_f1"}
FIGURES = ("run", "epochs_trained", "seconds", "weights")  # columns of runs_table that are not settings
FIGURE_PREFIXES = (*HEADLINE, "val_", "base_", "ci_")


def runs_table(root: str | Path) -> pd.DataFrame:
    """One row per run: name, every setting, headline figures, and the cache's weights.

    A run whose ``config.json`` or ``metrics.json`` cannot be read is left out with a warning naming it.
    """
    rows, broken = [], []
    root = Path(root)
    for run in RunFolder.find(root):
        try:
            config, metrics = run.read_config(), run.read_metrics()
        except (FramecacheError, OSError, ValueError) as error:
            broken.append(run.path)
            log.warning("left out %s: its config.json or metrics.json cannot be read (%s)", run.path, str(error).splitlines()[0])
            continue
        row = {"run": str(run.path.relative_to(root)) if run.path != root else run.path.name}
        row.update({key: value for key, value in config.items() if key not in IGNORED_SETTINGS})
        spread = metrics.spread if isinstance(metrics, CVMetrics) else None
        baseline = metrics.baseline
        for name in HEADLINE:
            row[name] = getattr(metrics, name)
            row[f"{name}_std"] = None if spread is None else getattr(spread, name)
            row[f"val_{name}"] = getattr(metrics.val, name)
            row[f"base_{name}"] = None if baseline is None else getattr(baseline, name)
            row[f"base_{name}_std"] = None if baseline is None or baseline.spread is None else getattr(baseline.spread, name)
            row[f"ci_{name}"] = None if metrics.ci is None else getattr(metrics.ci, name)
        row.update(epochs_trained=metrics.epochs, seconds=metrics.seconds, weights=metrics.weights)
        rows.append(row)
    if not rows:
        unreadable = f" ({len(broken)} unreadable: {', '.join(map(str, broken[:3]))})" if broken else ""
        raise FramecacheError(f"no readable runs under {root}{unreadable}; train one with `{command_hint('train', run=f'{root}/NAME')}`")
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    """The settings that differ between runs, then the figures; random-weight runs flagged."""
    settings = [column for column in table.columns if column not in FIGURES and not column.startswith(FIGURE_PREFIXES)]
    differing = [column for column in settings if table[column].map(str).nunique() > 1]  # map: astype(str) keeps NaN
    shown = table[["run", *differing]].copy()
    shown["val_bal_acc"] = [_number(value) for value in _column(table, "val_balanced_accuracy")]
    for name in HEADLINE:
        shown[SHORT_NAMES[name]] = [_figure(value, std) for value, std in zip(table[name], table[f"{name}_std"])]
    shown["bal_acc_95ci"] = [f"{ci[0]:.2f}-{ci[1]:.2f}" if isinstance(ci, (list, tuple)) else "" for ci in _column(table, "ci_balanced_accuracy")]
    for name in HEADLINE:
        shown[f"base_{SHORT_NAMES[name]}"] = [_figure(value, std) for value, std in zip(_column(table, f"base_{name}"), _column(table, f"base_{name}_std"))]
    shown["epochs_trained"] = table["epochs_trained"]
    shown["seconds"] = table["seconds"].map(lambda seconds: f"{seconds:.1f}" if pd.notna(seconds) else "")
    random = table["weights"] == RANDOM_WEIGHTS
    if random.any():
        shown["note"] = [RANDOM_WEIGHTS_TAG if flag else "" for flag in random]
    text = shown.to_string(index=False)
    if len(table) > 1 and not differing:
        text += "\n(all runs have the same settings)"
    if random.any():
        text += "\n" + random_weights_warning(RANDOM_WEIGHTS)
    if "base_balanced_accuracy" in table and table["base_balanced_accuracy"].notna().any():
        text += "\nbase_*: the baseline on the same split, logistic regression on each video's mean clean-view feature"
    return text


def best_run(table: pd.DataFrame) -> pd.Series | None:
    """The run with the best validation balanced accuracy (then macro F1, then accuracy); None if no run has validation figures.

    Test figures never take part: choosing on them would make the test
    figures of the chosen run optimistic.
    """
    keys = [f"val_{name}" for name in ("balanced_accuracy", "macro_f1", "accuracy")]
    if any(key not in table for key in keys) or table[keys[0]].isna().all():
        return None
    ranked = table.assign(_order=range(len(table))).dropna(subset=[keys[0]])
    ranked = ranked.sort_values([*keys, "_order"], ascending=[False, False, False, True], na_position="last")
    return ranked.iloc[0]


def best_line(table: pd.DataFrame) -> str:
    """One sentence naming the best run by validation, with its test figures and the baseline's."""
    best = best_run(table)
    if best is None:
        return "no run records validation figures (trained by an older framecache?): choose on validation, not on test"
    test = _figure(best["balanced_accuracy"], best["balanced_accuracy_std"])
    ci = best.get("ci_balanced_accuracy")
    interval = f" [95% CI {ci[0]:.2f}-{ci[1]:.2f}]" if isinstance(ci, (list, tuple)) else ""
    baseline = f"; baseline on the same split: {_figure(best['base_balanced_accuracy'], best.get('base_balanced_accuracy_std'))}" if pd.notna(best.get("base_balanced_accuracy")) else ""
    return (f"best by validation balanced accuracy: {best['run']} (validation {best['val_balanced_accuracy']:.3f}; "
            f"its test balanced accuracy {test}{interval}{baseline})")


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    return table[name] if name in table else pd.Series([None] * len(table), index=table.index)


def _number(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else f"{value:.3f}"


def _figure(value, std) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.3f}" if std is None or pd.isna(std) else f"{value:.3f}±{std:.3f}"
