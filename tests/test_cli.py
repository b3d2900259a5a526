"""The ``framecache`` command, its Make layer, and the package as installed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from framecache import cli
from framecache.cli import FlagSpelling, MakeSpelling, build_parser, make_variable
from framecache.cli import main as framecache_main
from framecache.common import options
from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.common.options import value_type
from framecache.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("tensorflow", "keras", "h5py", "cv2", "openvino", "sklearn", "pandas", "ray")


def make(*arguments: str) -> subprocess.CompletedProcess:
    """``make -s ...`` in the repository, running this interpreter's framecache, with no install step."""
    environ = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    command = ["make", "-s", "--no-print-directory", *arguments, "STAMP=", f"FRAMECACHE_CMD={sys.executable} -m framecache"]
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


VALID = {"ray": "auto"}  # fields whose values have a form of their own


def other_value(config_class: type, field: dataclasses.Field):
    """A valid value of ``field`` that differs from its default."""
    default = getattr(config_class(), field.name)
    kind = value_type(config_class, field.name)
    if field.name in VALID:
        return VALID[field.name]
    if field.metadata.get("choices"):
        return next(choice for choice in field.metadata["choices"] if choice != default)
    if kind is bool:
        return not default
    if kind is int:
        return (default or 0) + 3
    if kind is float:
        interval = field.metadata.get("interval")
        return next(value for value in (0.15, 0.25, 2.5) if value != default and (interval is None or value in interval))
    return f"{field.name}-value"


@pytest.mark.parametrize("config_class, target, exclusive", [(ExtractConfig, "features", "fps"), (TrainConfig, "train", None)])
def test_every_option_reaches_the_command_through_make(config_class, target, exclusive):
    """Each config field, set as a Make variable, arrives in the command's settings."""
    fields = dataclasses.fields(config_class)
    # frame_step and fps exclude each other: one make call with fps, one with everything else.
    groups = [[field for field in fields if field.name != exclusive]]
    if exclusive:
        groups.append([field for field in fields if field.name == exclusive])
    seen = set()
    for group in groups:
        wanted = {field.name: other_value(config_class, field) for field in group}
        variables = [f"{make_variable(name)}={int(value) if isinstance(value, bool) else value}" for name, value in wanted.items()]
        # -o: with RAY= set, make would install Ray first; the settings are all this test is about.
        result = make("-o", ".venv/.ray-stamp", target, *variables, "ARGS=--print-config")
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout.strip().splitlines()[-1])
        for name, value in wanted.items():
            assert printed[name] == value, f"{make_variable(name)}= did not reach {name}"
            seen.add(name)
    assert seen == {field.name for field in fields}


def test_messages_name_options_as_the_interface_does(tmp_path, capsys):
    under_make = make("train", "VAL_FRACTION=0.5", "TEST_FRACTION=0.45", "ARGS=--print-config")
    assert under_make.returncode == 2
    assert "VAL_FRACTION + TEST_FRACTION = 0.95" in under_make.stderr and "--test-fraction" not in under_make.stderr
    assert "Traceback" not in under_make.stderr

    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["train", "--val-fraction", "0.5", "--test-fraction", "0.45", "--print-config"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--val-fraction + --test-fraction = 0.95" in error and "TEST_FRACTION" not in error

    bad_make_value = make("train", "EPOCHS=many", "ARGS=--print-config")
    assert bad_make_value.returncode == 2 and "EPOCHS=many is not a valid int" in bad_make_value.stderr
    assert options.option_name("test_fraction") == "test_fraction"  # the command's spelling ended with its run


def test_explicit_flags_win_over_make_variables():
    result = make("train", "EPOCHS=7", "ARGS=--epochs 9 --print-config")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["epochs"] == 9


def test_help_answers_without_heavy_imports():
    code = (
        "import sys, contextlib, io\n"
        "from framecache.cli import main\n"
        "for command in ([], ['extract'], ['train'], ['sweep'], ['predict'], ['evaluate'], ['info'], ['merge'], ['compare'], ['bench']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([*command, '--help'])\n"
        f"print(sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"--help imported {result.stdout.strip()}"
    assert result.stderr == ""


def test_import_framecache_is_light():
    code = f"import sys, framecache; print(sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_stage_one_without_ray_never_imports_it():
    """Every module a run without --ray uses, and the block extractor itself, import no Ray."""
    modules = ("framecache.extract.pipeline", "framecache.extract.blocks", "framecache.extract.backbones", "framecache.common.cache")
    code = f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\nprint('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_every_subcommand_is_listed_in_the_help_and_the_makefile():
    help_text = build_parser().format_help()
    makefile = (ROOT / "Makefile").read_text()
    for name in ("extract", "info", "merge", "train", "evaluate", "predict", "compare", "sweep", "bench"):
        assert name in help_text
        assert f"$(FRAMECACHE) {name}" in makefile or f"$(FRAMECACHE_CMD) {name}" in makefile


def test_a_users_own_train_py_does_not_shadow_the_package(tmp_path):
    for name in ("train", "common", "data", "extract"):
        (tmp_path / f"{name}.py").write_text("raise RuntimeError('the user module was imported')\n")
    code = "import framecache.train.splits, framecache.common.cache, framecache.data.synthetic, framecache.extract.decode; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_the_wheel_holds_one_top_level_package(tmp_path):
    """``pip install .`` gives ``framecache`` as the only top-level name, and the command."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("framecache-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(name for name in names if name.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"framecache"}
    for package in ("common", "extract", "extract/pose", "train", "data", "bench"):
        assert f"framecache/{package}/__init__.py" in names
    assert "framecache = framecache.__main__:run" in scripts  # a Ctrl-C while it imports ends it quietly


def test_option_helpers_examples():
    import doctest

    assert doctest.testmod(options).failed == 0
    assert doctest.testmod(cli).failed == 0


def test_the_command_spells_options_as_flags_or_make_variables():
    """The spellings the command installs (framecache.cli); the library's own is Python keywords."""
    assert make_variable("max_len") == "MAX_LEN"
    with options.spelled(MakeSpelling()):
        assert options.option_name("test_fraction", 0.1) == "TEST_FRACTION=0.1"
        assert options.option_name("appearance", False) == "APPEARANCE=0"
        assert options.command_hint("info", features="study.h5") == "make info FEATURES=study.h5"
        assert options.command_hint("extract", out="f.h5") == "make features OUT=f.h5"
    with options.spelled(FlagSpelling()):
        assert options.option_name("test_fraction", 0.1) == "--test-fraction 0.1"
        assert options.option_name("appearance", False) == "--no-appearance"
        assert options.command_hint("train", run="runs/a") == "framecache train --run runs/a"
        assert options.command_hint("info", features="study.h5") == "framecache info study.h5"
        with pytest.raises(FramecacheError, match="--batch-size must be >= 1, got 0"):
            options.check("batch_size", 0, int, options.Interval(1, None))
    assert options.option_name("test_fraction", 0.1) == "test_fraction=0.1"
    assert options.option_name("test_fraction") == "test_fraction"


def test_make_defaults_reads_make_variables_only_under_make():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--max-len", type=int, default=8)
    parser.add_argument("--quiet", action="store_true")
    cli.make_defaults(parser, environ={"MAX_LEN": "32", "QUIET": "1"})  # no FRAMECACHE_MAKE: not under make
    assert vars(parser.parse_args([])) == {"max_len": 8, "quiet": False}
    cli.make_defaults(parser, environ={cli.MAKE_ENV: "1", "MAX_LEN": "32", "QUIET": "yes"})
    assert vars(parser.parse_args([])) == {"max_len": 32, "quiet": True}
    assert parser.parse_args(["--max-len", "4"]).max_len == 4  # an explicit flag wins
    with pytest.raises(FramecacheError, match="MAX_LEN=many is not a valid int"):
        cli.make_defaults(parser, environ={cli.MAKE_ENV: "1", "MAX_LEN": "many"})


@pytest.mark.parametrize("command, reads_caches",
                         [("train", True), ("sweep", True), ("evaluate", True), ("extract", False), ("predict", False)])
def test_the_command_sets_its_process_up_first(monkeypatch, capsys, command, reads_caches):
    """``main`` calls process_setup.for_command (the stage-two commands: with capped malloc arenas)."""
    calls = []
    monkeypatch.setattr(cli.process_setup, "for_command", lambda **kwargs: calls.append(kwargs))
    with pytest.raises(SystemExit) as exit_info:
        framecache_main([command, "--help"])
    assert exit_info.value.code == 0
    assert calls == [{"reads_caches": reads_caches}]


def test_make_features_says_when_decoding_held_the_backbone_back(monkeypatch, caplog):
    from framecache.extract import engines, pipeline
    from framecache.extract.driver import ExtractSummary

    starved = ExtractSummary(videos_total=2, ok=2, frames=500, seconds=50.0, embed_seconds=40.0, embed_idle_seconds=30.0)
    monkeypatch.setattr(pipeline, "run_extraction", lambda config: starved)
    monkeypatch.setattr(engines, "available_cores", lambda: 16)
    monkeypatch.setenv("FRAMECACHE_MAKE", "1")
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["extract", "--csv", "labels.csv", "--out", "f.h5"])
    assert exit_info.value.code == 0
    assert "waited for decoded frames" not in caplog.text  # WORKERS unset: the run added decoding processes itself
    with pytest.raises(SystemExit) as exit_info:
        framecache_main(["extract", "--csv", "labels.csv", "--out", "f.h5", "--workers", "1"])
    assert exit_info.value.code == 0
    assert "waited for decoded frames 75 % of its time" in caplog.text and "WORKERS=2 or more may be faster" in caplog.text
    assert "or leave WORKERS unset" in caplog.text
