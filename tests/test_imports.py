"""``import framecache``, and importing any public module of it, changes nothing outside framecache.

No import hooks, no hooks on ``sys``, no environment variables, no logging
filters: what the ``framecache`` command needs for its own process is set up
by its ``main`` (:mod:`framecache.process_setup`), never by an import.

``import framecache`` alone is checked as it is. Some dependencies change the
process on their own when imported (TensorFlow sets ``TF2_BEHAVIOR`` and adds
absl's and six's import hooks, OpenCV extends ``LD_LIBRARY_PATH``, decord
``PATH``...), so before every module is imported, the third-party modules that
framecache's modules import at module level are imported first: what remains
is framecache's own doing.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# In a fresh interpreter: snapshot the process-wide state, import everything, compare.
CHILD = textwrap.dedent(
    """
    import contextlib, importlib, json, logging, os, pkgutil, sys, threading, traceback

    def filters():
        # the filters on the root and tensorflow loggers, and on their handlers
        found = []
        for name in (None, "tensorflow"):
            logger = logging.getLogger(name)
            found += [("logger", name, filter) for filter in logger.filters]
            found += [("handler of", name, filter) for handler in logger.handlers for filter in handler.filters]
        return found

    def state():
        return {
            "sys.meta_path": list(sys.meta_path),
            "sys.path_hooks": list(sys.path_hooks),
            "sys.excepthook": sys.excepthook,
            "sys.unraisablehook": sys.unraisablehook,
            "threading.excepthook": threading.excepthook,
            "os.environ": dict(os.environ),
            "logging filters": filters(),
        }

    def differences(before, after):
        changed = {}
        for key in before:
            if key == "os.environ":
                keys = set(before[key]) | set(after[key])
                difference = {name: [before[key].get(name), after[key].get(name)] for name in sorted(keys)
                              if before[key].get(name) != after[key].get(name)}
                if difference:
                    changed[key] = difference
            elif before[key] != after[key]:
                changed[key] = {"before": repr(before[key]), "after": repr(after[key])}
        return changed

    before = state()
    import framecache
    changed = {"import framecache": differences(before, state())}

    for name in DEPENDENCIES:  # what they change on their own is theirs
        with contextlib.suppress(ImportError):  # an optional one (ray)
            importlib.import_module(name)
    before = state()
    modules, failed = ["framecache"], {}
    for package in PACKAGES:
        try:
            module = importlib.import_module(package)
        except Exception:
            failed[package] = traceback.format_exc(limit=-3)
            continue
        modules.append(package)
        for info in pkgutil.iter_modules(module.__path__, package + "."):
            if info.name.rsplit(".", 1)[-1].startswith("_") or info.ispkg:
                continue  # private (framecache.__main__ runs the command); packages are in PACKAGES
            try:
                importlib.import_module(info.name)
                modules.append(info.name)
            except Exception:
                failed[info.name] = traceback.format_exc(limit=-3)
    changed["importing every module"] = differences(before, state())
    print(json.dumps({"modules": modules, "failed": failed, "changed": changed}))
    """
)


def packages() -> list[str]:
    """Every package that installs as part of framecache (pyproject's list), the top one first."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    return sorted(listed, key=lambda name: (name.count("."), name))


FOLDERS = ("framecache", "common", "extract", "train", "data", "bench")  # the package's folders (pyproject's package-dir)


def module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level names imported when a module is (not those imported inside its functions)."""
    names = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            for field in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(getattr(node, field, None), list):
                    visit(getattr(node, field))

    visit(tree.body)
    return names


def dependencies() -> list[str]:
    """The third-party modules that framecache's modules import at module level."""
    found = set()
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            found |= module_level_imports(ast.parse(path.read_text()))
    return sorted(name for name in found if name != "framecache" and name not in sys.stdlib_module_names)


@pytest.mark.slow  # a fresh process importing every module and TensorFlow; the fast suite checks the set-up below
def test_importing_every_public_module_changes_nothing_outside_framecache():
    assert {"numpy", "h5py", "keras"} <= set(dependencies())
    code = f"PACKAGES = {packages()!r}\nDEPENDENCIES = {dependencies()!r}\n" + CHILD
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["failed"] == {}, "modules that failed to import:\n" + "\n".join(
        f"{name}:\n{error}" for name, error in report["failed"].items()
    )
    modules = set(report["modules"])
    for name in ("framecache.api", "framecache.cli", "framecache.process_setup", "framecache.common.options",
                 "framecache.common.cache.writer", "framecache.extract.pipeline", "framecache.train.fit",
                 "framecache.train.data", "framecache.data.synthetic", "framecache.bench.run"):
        assert name in modules, f"{name} was not imported: {sorted(modules)}"
    changed = {step: difference for step, difference in report["changed"].items() if difference}
    assert changed == {}, "changed outside framecache:\n" + json.dumps(changed, indent=2)


def test_the_commands_set_up_is_what_process_setup_says():
    """What ``framecache``'s ``main`` sets up (process_setup.for_command), and only then."""
    code = textwrap.dedent(
        """
        import logging, os, sys
        from framecache import process_setup

        process_setup.for_command(reads_caches=True)
        record = logging.LogRecord("tensorflow", logging.WARNING, "", 0, "5 out of the last 5 calls triggered tf.function retracing", None, None)
        other = logging.LogRecord("tensorflow", logging.WARNING, "", 0, "something else", None, None)
        tensorflow = logging.getLogger("tensorflow")
        print(tensorflow.filter(record), tensorflow.filter(other))
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"], os.environ["TF_ENABLE_ONEDNN_OPTS"])
        print(any(type(finder).__name__ == "_FilteredImport" for finder in sys.meta_path))
        print(process_setup.limit_malloc_arenas())  # glibc: applies (again)
        """
    )
    environ = {key: value for key, value in os.environ.items()
               if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "MALLOC_ARENA_MAX")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == "False True"  # the retracing warning dropped, the rest kept
    assert lines[1] == "3 1"
    assert lines[2] == "True"
    assert lines[3] == str(sys.platform == "linux" and platform.libc_ver()[0] == "glibc")
