"""Stage two end to end: a run folder, cross-validation, reproducibility, the CLIs, compare and sweep."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framecache.cli import FlagSpelling
from framecache.cli import main as framecache_main
from framecache.common import options
from framecache.common.errors import FramecacheError
from framecache.train import compare, sweep
from framecache.train.config import TrainConfig
from framecache.train.fit import run_training
from framecache.train.metrics import CVMetrics, SplitMetrics, read_run_metrics
from framecache.train.report import console_summary
from framecache.train.synthetic import write_synthetic_cache

RUN_FILES = ("model.keras", "config.json", "metrics.json", "history.csv", "report.txt", "confusion.png", "curves.png", "predictions.csv")
# Small and quick: the synthetic classes differ only in temporal order, which this GRU learns in a few epochs.
FAST = dict(units=16, head_units=16, max_len=16, epochs=25, patience=5, batch_size=16, learning_rate=0.01, dropout=0.1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "features.h5", videos=48, feature_dim=16, subjects=12, frames=(10, 40))


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "first"
    metrics = run_training(TrainConfig(features=str(cache), run=str(folder), quiet=True, **FAST))
    return folder, metrics


def cli(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["train", *argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_run_folder_holds_every_file(run):
    folder, metrics = run
    assert all((folder / name).is_file() for name in RUN_FILES)
    stored = json.loads((folder / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "labels", "split_sizes", "weights"):
        assert key in stored
    assert stored["labels"] == ["class0", "class1", "class2"] and stored["weights"] == "imagenet"
    assert stored["split_method"] == "group"
    sizes = stored["split_sizes"]
    assert sum(part["videos"] for part in sizes.values()) == 48
    assert sum(part["groups"] for part in sizes.values()) == 12
    assert np.sum(stored["confusion_matrix"]) == sizes["test"]["videos"]
    assert json.loads((folder / "config.json").read_text())["units"] == 16
    history = pd.read_csv(folder / "history.csv")
    assert {"epoch", "loss", "val_loss", "accuracy", "val_accuracy"} <= set(history.columns)
    assert len(history) == stored["epochs"] and 1 <= stored["best_epoch"] <= stored["epochs"]
    assert "precision" in (folder / "report.txt").read_text()
    assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "warning" not in stored


def test_the_gru_learns_temporal_order(run):
    _, metrics = run
    assert metrics["accuracy"] >= 0.75, metrics  # chance is 0.33; the classes share every frame, in another order


def test_same_seed_same_run(cache, run, tmp_path):
    folder, metrics = run
    again = run_training(TrainConfig(features=str(cache), run=str(tmp_path / "again"), quiet=True, **FAST))
    assert pd.read_csv(folder / "history.csv").equals(pd.read_csv(tmp_path / "again" / "history.csv"))
    assert again["confusion_matrix"] == metrics["confusion_matrix"]


def test_cross_validation_aggregates_the_folds(cache, tmp_path):
    folder = tmp_path / "cv"
    metrics = run_training(TrainConfig(features=str(cache), run=str(folder), cv=3, quiet=True, **{**FAST, "epochs": 3}))
    folds = metrics["folds"]
    assert metrics["cv"] == 3 and len(folds) == 3
    assert isinstance(metrics, CVMetrics) and json.dumps(metrics.to_json(), indent=2) + "\n" == (folder / "metrics.json").read_text()
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        figures = [fold[name] for fold in folds]
        assert metrics["mean"][name] == pytest.approx(np.mean(figures))
        assert metrics["std"][name] == pytest.approx(np.std(figures))
        assert metrics[name] == metrics["mean"][name]
    assert sum(fold["split_sizes"]["test"]["videos"] for fold in folds) == 48
    assert np.sum(metrics["confusion_matrix"]) == 48, "the pooled matrix holds every video once"
    predictions = pd.read_csv(folder / "predictions.csv")
    assert sorted(predictions.loc[predictions["split"] == "test", "path"]) == sorted(set(predictions["path"]))
    for fold in (1, 2, 3):
        assert (folder / f"fold{fold}" / "model.keras").is_file()
    assert all((folder / name).is_file() for name in RUN_FILES if name != "model.keras")
    assert "fold 3" in (folder / "report.txt").read_text()
    summary = console_summary(metrics, folder)  # what `make demo` ends with
    mean_rows = summary.split("mean ± std over the folds:\n")[1].split("every fold's")[0].splitlines()
    assert [row.split()[0] for row in mean_rows] == ["model", "GRU", "baseline"], mean_rows  # the parts beside the model
    model_row = mean_rows[0]
    assert f"balanced accuracy {metrics.balanced_accuracy:.3f} ± {metrics.balanced_accuracy_std:.3f}" in model_row
    pooled = summary.split("every fold's 48 test videos together:\n")[1].splitlines()[0]
    assert pooled.split()[0] == "model" and "[" in pooled, "the pooled figure has its interval"
    assert summary.count("  fold ") == 3 and "validation balanced accuracy: model" in summary


def test_random_weights_are_reported_loudly(tmp_path, capsys):
    cache = write_synthetic_cache(tmp_path / "random.h5", videos=24, feature_dim=8, subjects=6, weights="random")
    folder = tmp_path / "random-run"
    code, out, _ = cli(["--features", str(cache), "--run", str(folder), "--epochs", "2", "--units", "8", "--quiet"], capsys)
    assert code == 0
    warning = json.loads((folder / "metrics.json").read_text())["warning"]
    assert warning.startswith("RANDOM WEIGHTS: ") and "--weights imagenet" in warning  # named as the CLI spells it
    assert out.count(warning) == 1 and (folder / "report.txt").read_text().count(warning) == 1
    assert "RANDOM WEIGHTS" in compare.format_table(compare.runs_table(tmp_path))


def test_cli_errors_are_one_line_and_exit_2(run, tmp_path, capsys):
    folder, _ = run
    code, _, err = cli(["--features", str(tmp_path / "missing.h5"), "--run", str(tmp_path / "r")], capsys)
    assert code == 2 and err.startswith("error: feature cache not found") and "Traceback" not in err
    code, _, err = cli(["--features", str(tmp_path / "missing.h5"), "--run", str(folder)], capsys)
    assert code == 2 and "already holds a run" in err
    code, _, err = cli(["--features", "x.h5", "--dropout", "1.5"], capsys)
    assert code == 2 and "dropout must be in [0, 1)" in err


def test_imbalanced_cache_trains_with_oversampling(tmp_path):
    cache = write_synthetic_cache(tmp_path / "imbalanced.h5", videos=40, classes=2, feature_dim=8, subjects=None, class_shares=[3, 1])
    metrics = run_training(TrainConfig(features=str(cache), run=str(tmp_path / "over"), balance="oversample", quiet=True, **{**FAST, "epochs": 3}))
    assert metrics["split_method"] == "stratified"
    assert metrics["per_class"]["class1"]["support"] >= 1 and metrics["split_sizes"]["test"]["groups"] is None


def test_csv_split_and_cv_need_a_choice(tmp_path):
    cache = write_synthetic_cache(tmp_path / "split.h5", videos=30, feature_dim=8, subjects=10, split_column=True)
    with options.spelled(FlagSpelling()), pytest.raises(FramecacheError, match="--ignore-split"):  # as the command words it
        run_training(TrainConfig(features=str(cache), run=str(tmp_path / "cv"), cv=3, quiet=True, **FAST))
    with pytest.raises(FramecacheError, match=r"drop cv .*ignore_split=True"):  # as the library does
        run_training(TrainConfig(features=str(cache), run=str(tmp_path / "cv"), cv=3, quiet=True, **FAST))


def test_metrics_json_is_the_record_it_reads_back_as(run, tmp_path):
    folder, metrics = run
    text = (folder / "metrics.json").read_text()
    again = read_run_metrics(folder / "metrics.json")
    assert isinstance(metrics, SplitMetrics) and again == metrics
    assert json.dumps(again.to_json(), indent=2) + "\n" == text, "the same keys, in the same order, the same values"
    assert metrics["baseline"]["ci"] is metrics.baseline.ci and "mix" in metrics and metrics.get("warning") is None


def test_runs_of_an_earlier_framecache_still_compare(run, tmp_path):
    """metrics.json written before the baseline, the intervals, the mix and the epoch times were recorded."""
    folder, metrics = run
    old = tmp_path / "old" / "run"
    old.mkdir(parents=True)
    (old / "config.json").write_text((folder / "config.json").read_text())
    stored = json.loads((folder / "metrics.json").read_text())
    for key in ("ci", "mix", "model", "baseline", "epoch_seconds", "epoch_cpu_seconds"):
        del stored[key]
    (old / "metrics.json").write_text(json.dumps(stored))
    record = read_run_metrics(old / "metrics.json")
    assert record.baseline is None and record.ci is None and record.accuracy == metrics.accuracy
    table = compare.runs_table(old.parent)
    assert table["base_accuracy"].isna().all() and table["ci_accuracy"].isna().all()
    assert "base_*" not in compare.format_table(table) and compare.best_line(table).startswith("best by validation")
    (old / "metrics.json").write_text(json.dumps({"accuracy": 1.0}))
    with pytest.raises(FramecacheError, match="is not a run's metrics"):
        read_run_metrics(old / "metrics.json")
    with pytest.raises(FramecacheError, match=r"no readable runs under .* \(1 unreadable: .*old/run\)"):
        compare.runs_table(old.parent)


def test_compare_lists_the_good_runs_and_names_a_broken_one(run, tmp_path, caplog):
    folder, metrics = run
    runs = tmp_path / "runs"
    for name in ("good", "broken"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text((folder / "config.json").read_text())
    (runs / "good" / "metrics.json").write_text((folder / "metrics.json").read_text())
    (runs / "broken" / "metrics.json").write_text('{"accuracy": 0.5, "trunc')  # a write cut short
    with caplog.at_level("WARNING"):
        table = compare.runs_table(runs)
    assert list(table["run"]) == ["good"]
    assert any("left out" in record.message and str(runs / "broken") in record.message for record in caplog.records)


def test_compare_shows_the_settings_that_differ(run, tmp_path):
    folder, metrics = run
    table = compare.runs_table(folder.parent)
    assert len(table) == 1 and table["accuracy"][0] == metrics["accuracy"]
    other = pd.concat([table, table.assign(run="second", units=64)], ignore_index=True)
    text = compare.format_table(other)
    header = text.splitlines()[0].split()
    assert header[:2] == ["run", "units"] and "macro_f1" in header and "dropout" not in header


def test_sweep_reads_the_cache_once(cache, tmp_path, monkeypatch, capsys):
    from framecache.train import data as train_data

    loads = []
    real_load = train_data.load_cache
    monkeypatch.setattr(train_data, "load_cache", lambda *args, **kwargs: loads.append(args) or real_load(*args, **kwargs))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"units": [8]}))  # the grid file wins over --units
    argv = ["--features", str(cache), "--out", str(tmp_path / "sweep"), "--grid", str(grid), "--units", "4,5", "--epochs", "2", "--max-len", "16,8",
            "--inputs", "centred", "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["sweep", *argv])
    assert exit_info.value.code == 0 and len(loads) == 1
    runs = sorted(path.name for path in (tmp_path / "sweep").iterdir())
    assert runs == ["max_len16", "max_len8"]
    assert json.loads((tmp_path / "sweep" / "max_len8" / "config.json").read_text())["units"] == 8
    table = capsys.readouterr().out.splitlines()
    header = table[0].split()
    assert header[:2] == ["run", "max_len"] and len(table) == 5  # header, two runs, the baseline's note, the best run
    assert header.index("val_bal_acc") < header.index("acc") < header.index("base_acc"), "validation beside test, and the baseline"
    assert table[-1].startswith("best by validation balanced accuracy: max_len")


@pytest.mark.slow  # the fast suite sweeps in test_sweep_reads_the_cache_once
def test_a_sweep_covers_every_input_mode_unless_told(cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["sweep", "--features", str(cache), "--out", str(tmp_path / "modes"), "--epochs", "1", "--units", "4", "--quiet"])
    assert exit_info.value.code == 0
    assert sorted(path.name for path in (tmp_path / "modes").iterdir()) == ["inputsboth", "inputscentred", "inputsraw"]
    out = capsys.readouterr().out
    table = compare.runs_table(tmp_path / "modes")
    best = compare.best_run(table)
    assert best["val_balanced_accuracy"] == table["val_balanced_accuracy"].max()
    assert f"best by validation balanced accuracy: {best['run']}" in out


def test_sweep_checks_every_setting_before_training(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"unts": [8]}))
    with pytest.raises(FramecacheError, match="unknown setting"):
        sweep.read_grid(str(grid))
    with pytest.raises(FramecacheError, match="dropout must be"):
        sweep.grid_configs(TrainConfig(), {"dropout": [0.2, 2.0]}, tmp_path)


def test_a_failed_training_leaves_no_folder_it_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FramecacheError, match="not found"):  # no cache; the default run folder is runs/<timestamp>
        run_training(TrainConfig(features=str(tmp_path / "missing.h5"), quiet=True))
    assert not (tmp_path / "runs").exists()
    small = write_synthetic_cache(tmp_path / "small.h5", videos=6, classes=2, feature_dim=8, subjects=None)
    with pytest.raises(FramecacheError, match="'class0' \\(3 videos\\)"):  # a class too small for 5 folds
        run_training(TrainConfig(features=str(small), run=str(tmp_path / "deep" / "run"), cv=5, quiet=True))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["small.h5", "small.h5.shards"]  # no deep/run


def test_a_failed_training_keeps_the_users_own_folder(tmp_path):
    mine = tmp_path / "mine"
    (mine / "empty").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    for run in (mine, mine / "empty"):
        with pytest.raises(FramecacheError, match="not found"):
            run_training(TrainConfig(features=str(tmp_path / "missing.h5"), run=str(run), quiet=True))
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "empty").is_dir()


@pytest.mark.slow  # an edge case of --overwrite (the previous run kept when the new one fails): CI's slow suite
def test_a_failed_overwrite_keeps_the_previous_run(cache, tmp_path):
    folder = tmp_path / "kept"
    run_training(TrainConfig(features=str(cache), run=str(folder), quiet=True, **{**FAST, "epochs": 2}))
    before = {name: (folder / name).read_bytes() for name in ("metrics.json", "model.keras", "config.json")}
    with pytest.raises(FramecacheError):
        run_training(TrainConfig(features=str(tmp_path / "missing.h5"), run=str(folder), overwrite=True, quiet=True, **FAST))
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert not (folder / ".previous-run").exists()
    again = run_training(TrainConfig(features=str(cache), run=str(folder), overwrite=True, quiet=True, **{**FAST, "epochs": 2, "units": 8}))
    assert json.loads((folder / "config.json").read_text())["units"] == 8 and again["epochs"] >= 1
    assert not (folder / ".previous-run").exists()


HOLD_A_RUN = """
import sys, time
from framecache.train.run_folder import RunFolder
run = RunFolder.create(sys.argv[1], overwrite=sys.argv[2] == "overwrite")
(run.path / "metrics.json").write_text("{partial")  # the new run, half written
print("writing", flush=True)
time.sleep(60)
"""


def _old_run(folder):
    folder.mkdir(parents=True)
    for name in ("metrics.json", "model.keras", "config.json"):
        (folder / name).write_text(f"old {name}")


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_an_overwrite_killed_outright_keeps_the_old_run_also_after_a_plain_rerun(tmp_path, signal_name):
    import signal
    import subprocess
    import sys

    from framecache.train.run_folder import PREVIOUS_RUN, RunFolder

    folder = tmp_path / "runs" / "first"
    _old_run(folder)
    process = subprocess.Popen([sys.executable, "-c", HOLD_A_RUN, str(folder), "overwrite"], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(getattr(signal, signal_name))
    process.wait(timeout=30)
    assert (folder / PREVIOUS_RUN).is_dir()  # what the kill left
    with pytest.raises(FramecacheError, match="already holds a run"):  # a plain rerun finds the old run, put back
        RunFolder.create(folder, overwrite=False)
    assert all((folder / name).read_text() == f"old {name}" for name in ("metrics.json", "model.keras", "config.json"))
    assert not (folder / PREVIOUS_RUN).exists()


def test_two_trains_into_one_run_folder_one_refuses(tmp_path):
    import subprocess
    import sys

    from framecache.train.run_folder import RunFolder

    folder = tmp_path / "runs" / "shared"
    process = subprocess.Popen([sys.executable, "-c", HOLD_A_RUN, str(folder), "new"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        with pytest.raises(FramecacheError, match=rf"run folder {folder} is being written by another framecache \(process {process.pid} on"):
            RunFolder.create(folder, overwrite=True)
    finally:
        process.kill()
        process.wait(timeout=30)
    with RunFolder.create(folder, overwrite=True) as run:  # a dead writer holds nothing
        (run.path / "metrics.json").write_text("{}")
    assert not (folder / ".writing").exists()


def test_a_run_folder_the_user_cannot_write_is_one_line(tmp_path, monkeypatch, capsys):
    """Permission denied (a read-only folder for a user who is not root; root bypasses modes, so it is simulated)."""
    from framecache.common.cli import run_cli
    from framecache.train.run_folder import RunFolder

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(FramecacheError, match=rf"cannot write the run folder {tmp_path / 'run'}: permission denied"):
        RunFolder.create(tmp_path / "run", overwrite=False)

    def elsewhere() -> int:  # any other place the user cannot write: one line too, exit 2
        (tmp_path / "report").mkdir()
        return 0

    with pytest.raises(SystemExit) as exit_info:
        run_cli(elsewhere)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: permission denied: {tmp_path / 'report'}; fix its permissions or choose another path"


def test_training_says_one_line_per_epoch_and_no_keras_step_lines(cache, tmp_path, capsys, caplog):
    with caplog.at_level("INFO"):
        code, out, err = cli(["--features", str(cache), "--run", str(tmp_path / "cv"), "--epochs", "3", "--patience", "3",
                              "--units", "8", "--cv", "2"], capsys)  # fmt: skip
    assert code == 0
    lines = [record.getMessage() for record in caplog.records if " epoch " in f" {record.getMessage()}"]
    assert [line.split(":")[0] for line in lines] == [f"fold {fold}/2 epoch {epoch}/3" for fold in (1, 2) for epoch in (1, 2, 3)]
    assert all("validation loss" in line for line in lines) and "(best so far)" in lines[0]
    assert "/step" not in out + err + caplog.text  # Keras' progress lines: none
