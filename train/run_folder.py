"""A run folder's life cycle and layout: where a run's files are, how one is created, replaced and read.

A run folder holds ``config.json``, ``metrics.json``, ``report.txt``,
``history.csv``, ``predictions.csv``, ``confusion.png``, ``curves.png``,
``model.keras`` and ``baseline.json`` (a ``--cv`` run: one ``foldK/`` per fold
with its model and baseline, and the pooled figures on top).

Writing: :meth:`RunFolder.create` refuses to mix results into a finished run
unless asked to ``overwrite``; then the old results move to
``<run>/.previous-run`` and stay there until the new run succeeds. Used as a
context manager, the folder cleans up after itself: on success the previous
results go; on any failure (an error, Ctrl-C) the new run's files go, the
previous results come back, and folders this run created are removed if they
are still empty; a folder that existed before, and anything in it, is never removed.
A run killed outright (SIGTERM, SIGKILL) cannot clean up: the next
:meth:`RunFolder.create` of that folder puts the previous results back first.
One process writes a run folder at a time: it holds ``<run>/.writing`` (its
host and pid), which a second one refuses to share and which a dead writer
does not keep.

Reading: :meth:`RunFolder.models` finds a run's model(s), :meth:`RunFolder.find`
the runs under a folder, and :meth:`RunFolder.read_metrics` /
:meth:`RunFolder.read_config` what they recorded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from framecache.common.cache.layout import host, is_stale, owner_tag
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name
from framecache.train.baseline import Baseline
from framecache.train.metrics import CVMetrics, SplitMetrics, read_run_metrics

MODEL_FILE = "model.keras"
BASELINE_FILE = "baseline.json"  # the fitted baseline beside each model.keras (see train.baseline.Baseline)
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE, CONFUSION_FILE, CURVES_FILE = "report.txt", "confusion.png", "curves.png"
RUN_FILES = (MODEL_FILE, BASELINE_FILE, METRICS_FILE, REPORT_FILE, CONFUSION_FILE, CURVES_FILE, HISTORY_FILE, PREDICTIONS_FILE, CONFIG_FILE)
PREVIOUS_RUN = ".previous-run"  # where --overwrite keeps the old results until the new run has succeeded
RUNS = Path("runs")  # where a run goes when none is named
WRITING = ".writing"  # held by the one process writing a run folder: its owner_tag
NAMELESS_LOCK_S = 5.0  # a .writing without its owner's name younger than this is being taken right now

log = logging.getLogger(__name__)


def write_json(path: Path, values: dict) -> None:
    """``values`` as indented JSON, the way every framecache JSON file is written."""
    path.write_text(json.dumps(values, indent=2) + "\n")


class RunFolder:
    """One run's folder (or one fold's, inside a cross-validated run): its files by name, written and read."""

    def __init__(self, path: str | Path, created: list[Path] | None = None, lock: Path | None = None):
        self.path = Path(path)
        self.created = created or []  # folders this run made, deepest first (removed again if it fails)
        self.lock = lock  # the .writing file this process holds while it writes the run

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- creating and replacing

    @staticmethod
    def default_path() -> Path:
        """``runs/<timestamp>``, with a suffix if that exists (``runs/20250101-120000-2``)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder, suffix = RUNS / stamp, 2
        while folder.exists():
            folder, suffix = RUNS / f"{stamp}-{suffix}", suffix + 1
        return folder

    @classmethod
    def create(cls, run: str | Path | None, overwrite: bool) -> RunFolder:
        """Create the run folder (``None``: :meth:`default_path`); refuse a finished run unless ``overwrite``.

        With ``overwrite`` the old results move to ``<run>/.previous-run``; use
        the folder as a context manager to have them dropped once the new run
        succeeds and put back if it fails.
        """
        folder = cls.default_path() if run is None else Path(run)
        created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
        if folder.exists() and not folder.is_dir():
            raise FramecacheError(f"run folder {folder} is a file; pass another {option_name('run')}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            run_folder = cls(folder, created, _hold(folder))
        except PermissionError:
            raise FramecacheError(f"cannot write the run folder {folder}: permission denied; fix its permissions or "
                                  f"pass another {option_name('run')}") from None
        try:
            run_folder._restore_previous_run(killed=True)
            finished = any((folder / name).exists() for name in (METRICS_FILE, MODEL_FILE))
            if finished and not overwrite:
                raise FramecacheError(
                    f"run folder {folder} already holds a run; pass another {option_name('run')}, "
                    f"or {option_name('overwrite', True)} to replace it"
                )
            if finished:
                previous = folder / PREVIOUS_RUN
                previous.mkdir()
                for path in run_folder._results():
                    path.rename(previous / path.name)
        except BaseException:
            run_folder._release()
            run_folder._remove_empty_folders()
            raise
        return run_folder

    def _results(self) -> list[Path]:
        """The run's result files and fold folders that exist."""
        found = [self.path / name for name in RUN_FILES if (self.path / name).exists()]
        return found + [path for path in self.path.glob("fold*") if (path / MODEL_FILE).exists() or (path / METRICS_FILE).exists()]

    def _release(self) -> None:
        if self.lock is not None:
            with contextlib.suppress(OSError):
                self.lock.unlink()
            self.lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, error_type, error, traceback) -> bool:
        if error_type is None:
            shutil.rmtree(self.path / PREVIOUS_RUN, ignore_errors=True)
            self._release()
        else:
            self._restore_previous_run()
            self._release()
            self._remove_empty_folders()
        return False  # the error goes on

    def _restore_previous_run(self, killed: bool = False) -> None:
        """After a failed overwrite: the new run's partial files go, the previous results come back.

        ``killed``: found by the next run, left by one killed outright; its partial files go too.
        """
        previous = self.path / PREVIOUS_RUN
        if not previous.is_dir():
            return
        if killed:
            log.warning("%s: a run replacing it was killed; its previous results are put back", self.path)
            for path in self._results():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path in previous.iterdir():
            target = self.path / path.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            path.rename(target)
        previous.rmdir()

    def _remove_empty_folders(self) -> None:
        """Remove each folder this run created (deepest first) while it is empty; stop at the first that is not."""
        for folder in self.created:
            try:
                folder.rmdir()  # only ever removes an empty folder
            except OSError:
                return

    def fold(self, number: int) -> RunFolder:
        """The folder of fold ``number`` (1-based) of a cross-validated run, created."""
        folder = RunFolder(self.path / f"fold{number}")
        folder.path.mkdir(exist_ok=True)
        return folder

    # -- its files

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS_FILE

    def write_config(self, config: dict) -> None:
        write_json(self.path / CONFIG_FILE, config)

    def write_metrics(self, metrics: SplitMetrics | CVMetrics) -> None:
        write_json(self.path / METRICS_FILE, metrics.to_json())

    def write_baseline(self, baseline: Baseline) -> None:
        write_json(self.path / BASELINE_FILE, baseline.to_dict())

    def write_predictions(self, table: pd.DataFrame) -> None:
        table.to_csv(self.predictions_file, index=False)

    def read_metrics(self) -> SplitMetrics | CVMetrics:
        """What the run recorded in metrics.json (by this or an earlier framecache)."""
        return read_run_metrics(self.path / METRICS_FILE)

    def read_config(self) -> dict:
        """config.json as recorded; a run of framecache before ``--inputs`` (``--centre``/``--no-centre``) gets ``inputs``."""
        config = json.loads((self.path / CONFIG_FILE).read_text())
        if "centre" in config and "inputs" not in config:
            config["inputs"] = "centred" if config.pop("centre") else "raw"
        return config

    # -- finding runs and their models

    @classmethod
    def find(cls, root: str | Path) -> list[RunFolder]:
        """Run folders under ``root`` (a folder with config.json and metrics.json), not the folds inside a cross-validation run."""
        root = Path(root)
        if not root.is_dir():
            raise FramecacheError(f"no runs folder {root}; train a run first with `{command_hint('train')}`")
        found = sorted(path.parent for path in root.rglob(METRICS_FILE) if (path.parent / CONFIG_FILE).exists())
        return [cls(run) for run in found if not any(parent in found for parent in run.parents)]

    @staticmethod
    def models(run: str | Path) -> list[Path]:
        """The models of a run: its ``model.keras`` (or the file itself), or, for a cross-validation run, every fold's, in fold order."""
        run = Path(run)
        if run.suffix == ".keras":
            return [run]
        if not (run / MODEL_FILE).exists() and (run / "fold1" / MODEL_FILE).exists():
            folds = sorted(run.glob(f"fold*/{MODEL_FILE}"), key=lambda path: int(path.parent.name[4:]) if path.parent.name[4:].isdigit() else 0)
            return [path for path in folds if path.parent.name[4:].isdigit()]
        if not run.is_dir():
            raise FramecacheError(f"run folder not found: {run}; train one with `{command_hint('train', run=run)}`")
        return [run / MODEL_FILE]

    @staticmethod
    def baseline_beside(model_path: str | Path) -> Baseline | None:
        """The baseline fitted beside a model (``baseline.json`` in its folder), or None for a run without one."""
        path = Path(model_path).parent / BASELINE_FILE
        if not path.is_file():
            return None
        try:
            return Baseline.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise FramecacheError(f"{path} is damaged ({type(error).__name__}: {error}); train the run again") from None


def _hold(folder: Path) -> Path:
    """Take ``folder``'s :data:`WRITING` file for this process; refuse if a live process holds it."""
    lock = folder / WRITING
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                tag = lock.read_text().strip()
                if not tag and time.time() - lock.stat().st_mtime < NAMELESS_LOCK_S:
                    tag = f"{host()}-{os.getpid()}"  # just created, its name not yet written: a live writer
                if tag and not is_stale(lock, tag):
                    owner_host, pid = tag.split("-")[:2]
                    raise FramecacheError(
                        f"run folder {folder} is being written by another framecache (process {pid} on {owner_host}); "
                        f"wait for it to end, or pass another {option_name('run')}"
                    ) from None
            with contextlib.suppress(OSError):
                lock.unlink()  # its writer is gone (or never wrote its name): take it over
            continue
        with os.fdopen(descriptor, "w") as file:
            file.write(owner_tag() + "\n")
        return lock
    raise FramecacheError(f"cannot take {lock}: another process keeps creating it; pass another {option_name('run')}")

