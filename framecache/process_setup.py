"""What the ``framecache`` command sets up in its own process; importing framecache sets up nothing.

:func:`for_command` is called by the command's ``main`` before any work:

- TensorFlow's start-up messages are held to ``TF_CPP_MIN_LOG_LEVEL``
  (default 3 here: fatal ones only), see below;
- oneDNN is asked for (``TF_ENABLE_ONEDNN_OPTS=1`` unless the user set it:
  TensorFlow ~1.6x faster on this kind of CPU, equal outputs);
- TensorFlow's "triggered tf.function retracing" warning is dropped: every
  fold and sweep run builds a new model, so new traces are expected;
- for stage two's commands, glibc's malloc arenas are capped (:func:`limit_malloc_arenas`).

A library user (a notebook) gets none of this: their process is theirs.

TensorFlow prints C++ log lines to stderr: oneDNN and CPU-instruction
notices, and errors that are not errors (``E0000 ... oneDNN supports DT_BOOL
only on platforms with AVX-512``). ``TF_CPP_MIN_LOG_LEVEL`` silences them,
except for what its libraries log while they load, before TensorFlow has read
the variable: ``oneDNN custom operations are on`` (once per library) and each
time absl's ``WARNING: All log messages before absl::InitializeLog() is called
are written to STDERR``. :func:`quiet_tensorflow` therefore

- sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it (their value is kept),
- and, while ``tensorflow`` is first imported, passes what is written to
  stderr through a filter that applies that same level to those early lines.

With ``TF_CPP_MIN_LOG_LEVEL=0`` every line is shown as TensorFlow prints it.
The filter is a small separate process (this file run as a script), so a line
printed just before TensorFlow crashes the interpreter (a CPU it cannot run
on) still reaches the terminal.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import re
import sys

VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "3"  # TensorFlow's levels: 0 all, 1 no INFO, 2 no WARNING either, 3 no ERROR either
ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# absl's line format: severity and date (MMDD), time, thread, file:line] message; before absl is
# initialised the date is 0000 and the time 00:00:<seconds since 1970>, as in
# "I0000 00:00:1796173181.392423    9768 port.cc:153] oneDNN custom operations are on. ..."
RECORD = re.compile(rb"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]\s]+:\d+\] ")
SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


MALLOC_ARENA_ENV = "MALLOC_ARENA_MAX"  # glibc's own variable: where the user set it, their value stands
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def for_command(reads_caches: bool = False) -> None:
    """Set up this process for a ``framecache`` command (``reads_caches``: stage two's, which stream caches)."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    quiet_tensorflow()
    logging.getLogger("tensorflow").addFilter(_ExpectedRetracing())
    if reads_caches:
        limit_malloc_arenas()


def quiet_tensorflow() -> None:
    """Default ``TF_CPP_MIN_LOG_LEVEL`` to 3 and filter the first ``import tensorflow`` by it (once per process)."""
    os.environ.setdefault(VARIABLE, DEFAULT_LEVEL)
    if "tensorflow" in sys.modules or any(isinstance(finder, _FilteredImport) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _FilteredImport())


class _ExpectedRetracing(logging.Filter):
    """Drop TensorFlow's 'triggered tf.function retracing' warning (a new model per fold or sweep run traces anew)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (as ``MALLOC_ARENA_MAX`` would): True where it applied.

    Streamed training reads many small arrays from several threads (Keras,
    TensorFlow, HDF5), and glibc gives each thread an arena of its own that
    keeps what it freed: peak memory then grows with the cache's size although
    no more data is held. Measured on 10,000 synthetic videos (1.1 GB cache):
    peak RSS 1,253 MB with glibc's default arenas, 1,131 MB with 2 (2,000 videos:
    941 and 934 MB). Other C libraries (musl, macOS) are left as they are.
    """
    import ctypes

    if MALLOC_ARENA_ENV in os.environ:
        return False  # the user chose
    process = ctypes.CDLL(None)  # the symbols this process has loaded, the C library's among them
    return bool(process.mallopt(M_ARENA_MAX, arenas)) if hasattr(process, "mallopt") else False


def min_level() -> int:
    """The level ``TF_CPP_MIN_LOG_LEVEL`` asks for (0 where it is not a number, as TensorFlow reads it)."""
    try:
        return int(os.environ.get(VARIABLE, "0"))
    except ValueError:
        return 0


def keep(line: bytes, level: int) -> bool:
    """Whether a line TensorFlow writes to stderr passes ``level``; lines that are not its log records always do."""
    if line.rstrip(b"\r\n") == ABSL_NOTICE:
        return level <= 0
    record = RECORD.match(line)
    return record is None or SEVERITY[record.group(1)] >= level


class _FilteredImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders, and runs its module code with stderr filtered."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or min_level() <= 0:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            del loader.exec_module  # back to the loader's own method
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)  # one import: later ones, and TensorFlow's own, go the usual way
            with _filtered_stderr(min_level()):
                run(module)

        loader.exec_module = exec_module
        return spec


class _filtered_stderr:
    """Send file descriptor 2 through the filter process while the block runs; fall back to no filter."""

    def __init__(self, level: int):
        self.level = level
        self.saved = self.process = None

    def __enter__(self):
        import subprocess

        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__, str(self.level)],
                stdin=subprocess.PIPE,
                stdout=self.saved,
                stderr=self.saved,
                start_new_session=True,  # a Ctrl-C meant for framecache does not reach it: it ends when its input does
            )
            os.dup2(self.process.stdin.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no real stderr, no interpreter to start: unfiltered
            self._restore()
        return self

    def __exit__(self, *exc_info):
        self._restore()
        return False

    def _restore(self) -> None:
        if self.saved is None:
            return
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a closed or replaced stderr
            sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.saved = None
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()  # everything it kept is written before anything that follows


def _filter(level: int) -> None:
    """The filter process: stdin to stdout, line by line, keeping what passes ``level``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for line in sys.stdin.buffer:
        if keep(line, level):
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()


if __name__ == "__main__":
    _filter(int(sys.argv[1]))
