"""``framecache compare [runs/]``: one table of every run under a folder.

Columns: the run, the settings that differ between runs, and the headline
test figures (``mean±std`` for ``--cv`` runs), the epochs trained and seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from framecache.common.errors import FramecacheError
from framecache.common.notices import RANDOM_WEIGHTS, RANDOM_WEIGHTS_TAG, random_weights_warning
from framecache.common.options import command_hint
from framecache.train.report import HEADLINE

IGNORED_SETTINGS = ("run", "overwrite", "quiet")
SHORT_NAMES = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "macro_f1": "macro_f1"}


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (a folder with config.json and metrics.json), not the folds inside a cross-validation run."""
    root = Path(root)
    if not root.is_dir():
        raise FramecacheError(f"no runs folder {root}; train a run first with `{command_hint('train')}`")
    found = sorted(path.parent for path in root.rglob("metrics.json") if (path.parent / "config.json").exists())
    return [run for run in found if not any(parent in found for parent in run.parents)]


def runs_table(root: str | Path) -> pd.DataFrame:
    """One row per run: name, every setting, headline figures, and the cache's weights."""
    rows = []
    root = Path(root)
    for run in find_runs(root):
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        row = {"run": str(run.relative_to(root)) if run != root else run.name}
        row.update({key: value for key, value in config.items() if key not in IGNORED_SETTINGS})
        for name in HEADLINE:
            row[name] = metrics[name]
            row[f"{name}_std"] = metrics.get(f"{name}_std")
        row.update(epochs_trained=metrics.get("epochs"), seconds=metrics.get("seconds"), weights=metrics.get("weights"))
        rows.append(row)
    if not rows:
        raise FramecacheError(f"no runs under {root}; train one with `{command_hint('train', run=f'{root}/NAME')}`")
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    """The settings that differ between runs, then the figures; random-weight runs flagged."""
    settings = [column for column in table.columns if column not in ("run", "epochs_trained", "seconds", "weights") and not column.startswith(HEADLINE)]
    differing = [column for column in settings if table[column].astype(str).nunique() > 1]
    shown = table[["run", *differing]].copy()
    for name in HEADLINE:
        shown[SHORT_NAMES[name]] = [
            f"{value:.3f}" if pd.isna(std) else f"{value:.3f}±{std:.3f}" for value, std in zip(table[name], table[f"{name}_std"])
        ]
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
    return text
