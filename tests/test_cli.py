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

from framecache.cli import build_parser
from framecache.cli import main as framecache_main
from framecache.common import options
from framecache.common.config import ExtractConfig
from framecache.common.options import make_variable, value_type
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
    options.set_interface(options.PYTHON)


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
    for package in ("common", "extract", "train", "data", "bench"):
        assert f"framecache/{package}/__init__.py" in names
    assert "framecache = framecache.cli:main" in scripts


def test_option_helpers_examples():
    import doctest

    try:
        assert doctest.testmod(options).failed == 0
    finally:
        options.set_interface(options.PYTHON)
