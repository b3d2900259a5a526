"""What a user reads besides results: the random-weights warning, worded once, and no TensorFlow start-up noise."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from framecache import process_setup
from framecache.common.cache import FeatureCache
from framecache.common.notices import random_weights_warning
from framecache.extract.info import format_summary
from framecache.train import compare
from framecache.train.config import TrainConfig
from framecache.train.evaluate import evaluate_run
from framecache.train.fit import run_training
from framecache.train.predict import predict_videos
from framecache.train.report import console_summary
from framecache.train.synthetic import write_synthetic_cache

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("common", "extract", "train", "data", "bench", "framecache")
LOG_FORMAT = "%(levelname)s %(message)s"  # as the command line prints log records

# ---- the random-weights warning -----------------------------------------------------------------


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("random")
    cache = write_synthetic_cache(folder / "random.h5", videos=24, feature_dim=8, subjects=6, weights="random")
    return cache, folder / "run"


def warnings_logged(caplog) -> list[str]:
    formatter = logging.Formatter(LOG_FORMAT)
    return [formatter.format(record) for record in caplog.records if "RANDOM WEIGHTS" in record.getMessage()]


def assert_one_prefix(line: str) -> None:
    assert "WARNING WARNING" not in line and "WARNING: WARNING" not in line and "WARNING:" not in line, line


def test_the_warning_is_worded_in_one_place():
    warning = random_weights_warning("random")
    assert warning.startswith("RANDOM WEIGHTS: ") and "WARNING" not in warning
    assert random_weights_warning("imagenet") is None and random_weights_warning("sha256:0123") is None
    holders = [
        str(path.relative_to(ROOT))
        for folder in PACKAGE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if "carry no class signal" in path.read_text() or "chance level" in path.read_text()
    ]
    assert holders == ["common/notices.py"]


def test_info_shows_the_warning_once(random_run):
    cache, _ = random_run
    with FeatureCache(cache) as opened:
        text = format_summary(opened.summary())
    lines = [line for line in text.splitlines() if "RANDOM WEIGHTS" in line]
    assert lines == [f"warning     {random_weights_warning('random')}"]


def test_train_evaluate_predict_and_compare_say_it_once_with_one_prefix(random_run, caplog, monkeypatch):
    cache, folder = random_run
    warning = random_weights_warning("random")
    with caplog.at_level(logging.INFO):
        metrics = run_training(TrainConfig(features=str(cache), run=str(folder), epochs=1, units=4, head_units=4, quiet=True))
    logged = warnings_logged(caplog)
    assert logged == [f"WARNING {warning}"]  # one record; the logger's level is the only prefix
    assert metrics["warning"] == warning
    for text in ((folder / "report.txt").read_text(), console_summary(metrics, folder)):
        assert text.count(warning) == 1 and "WARNING" not in text
    assert json.loads((folder / "metrics.json").read_text())["warning"] == warning

    assert evaluate_run(str(folder), str(cache))["warning"] == warning

    caplog.clear()
    monkeypatch.setattr("framecache.extract.embed.embed_videos", lambda paths, provenance, engine="auto", folder_fps=None: [])
    with caplog.at_level(logging.INFO):
        assert predict_videos(str(folder), []) == []
    assert warnings_logged(caplog) == [f"WARNING {warning}"]

    table = compare.format_table(compare.runs_table(folder.parent))
    assert table.count(warning) == 1
    assert_one_prefix(table)


# ---- TensorFlow's start-up noise ----------------------------------------------------------------

NOISE = (
    "absl::InitializeLog",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized",
    "oneDNN supports DT_BOOL",
    "E0000",
    "I0000",
)


def environment(**values) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(values)
    return env


@pytest.mark.slow  # a fresh TensorFlow process; the fast suite: test_train_evaluate_predict_and_compare_say_it_once_with_one_prefix
def test_a_tiny_keras_fit_in_a_fresh_process_prints_nothing_on_stderr(tmp_path):
    """Through the command: ``framecache train`` sets its process up (process_setup), then a Keras fit is quiet."""
    cache = write_synthetic_cache(tmp_path / "tiny.h5", videos=24, feature_dim=8, subjects=6)
    code = textwrap.dedent(
        f"""
        import numpy as np
        from framecache.cli import main

        try:
            main(["train", "--features", {str(cache)!r}, "--run", {str(tmp_path / "run")!r},
                  "--epochs", "1", "--units", "4", "--head-units", "4", "--quiet"])
        except SystemExit as stop:
            assert stop.code == 0, stop.code

        # and a fit of its own in the same process, after the command set it up
        from framecache.train.data import SequenceBatches
        from framecache.train.model import build_model, predict_probabilities

        features = [np.random.default_rng(index).normal(size=(1, 5, 8)).astype(np.float16) for index in range(6)]
        labels = np.array([0, 1] * 3)
        def batches(train=False):
            return SequenceBatches(features, labels, np.arange(6), max_len=8, frame_step=1, batch_size=3, train=train)
        model = build_model(8, 2, units=4, head_units=4)
        model.fit(batches(train=True), validation_data=batches(), epochs=1, verbose=0)
        print(predict_probabilities(model, batches()).shape)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(6, 2)"
    assert (tmp_path / "run" / "metrics.json").exists()
    assert not [line for line in result.stderr.splitlines() if any(noise in line for noise in NOISE)], result.stderr
    assert result.stderr == "", result.stderr  # nor any Python warning from Keras or absl


FAKE_TENSORFLOW = """
import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1796173181.392423    9768 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"W0000 00:00:1796173181.392423    9768 some.cc:1] a warning\\n")
os.write(2, b"E0000 00:00:1796173181.392423    9768 util.cc:131] an error\\n")
os.write(2, b"F0000 00:00:1796173181.392423    9768 guard.cc:9] fatal: this CPU lacks AVX\\n")
os.write(2, b"a line of another kind\\n")
if os.environ.get("FAKE_TENSORFLOW_CRASH"):
    os.abort()
"""


def run_fake_tensorflow(tmp_path, command: bool = True, **values) -> subprocess.CompletedProcess:
    package = tmp_path / "fake" / "tensorflow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(FAKE_TENSORFLOW)
    env = environment(PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]), **values)
    # what the framecache command does first (framecache.cli.main): importing framecache alone sets up nothing
    setup = "from framecache import process_setup; process_setup.for_command(); " if command else ""
    code = f"import sys, framecache; {setup}import tensorflow; sys.stderr.write('after\\n')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "level, shown",
    [
        (None, ["fatal", "another kind", "after"]),  # framecache's default, 3
        ("2", ["an error", "fatal", "another kind", "after"]),
        ("0", ["absl::InitializeLog", "oneDNN", "a warning", "an error", "fatal", "another kind", "after"]),
    ],
)
def test_the_import_filter_keeps_the_users_level(tmp_path, level, shown):
    result = run_fake_tensorflow(tmp_path, **({} if level is None else {"TF_CPP_MIN_LOG_LEVEL": level}))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(shown) and all(expected in line for expected, line in zip(shown, lines)), result.stderr


def test_the_import_filter_passes_on_what_came_before_a_crash(tmp_path):
    result = run_fake_tensorflow(tmp_path, FAKE_TENSORFLOW_CRASH="1")
    assert result.returncode != 0
    assert "fatal: this CPU lacks AVX" in result.stderr and "a line of another kind" in result.stderr
    assert "oneDNN" not in result.stderr


def test_importing_framecache_leaves_tensorflows_output_alone(tmp_path):
    """A library user's process is theirs: without the command's set-up, every line TensorFlow prints is shown."""
    result = run_fake_tensorflow(tmp_path, command=False)
    assert result.returncode == 0, result.stderr
    for expected in ("absl::InitializeLog", "oneDNN", "a warning", "an error", "fatal", "another kind", "after"):
        assert expected in result.stderr


def test_keep_reads_absl_records():
    record = b"I0000 00:00:1796173181.392423    9768 port.cc:153] oneDNN custom operations are on.\n"
    assert not process_setup.keep(record, 1) and process_setup.keep(record, 0)
    assert process_setup.keep(b"E0312 14:02:11.123456   42 util.cc:131] late error\n", 2)
    assert process_setup.keep(b"Traceback (most recent call last):\n", 3)
