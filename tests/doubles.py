"""Test doubles passed where stage one takes a decoder class (``decoder_class``): ones that fail on purpose, one that counts.

Run as a script, it is ``framecache`` itself with :class:`CrashingDecoder` in
every decoder process: ``python tests/doubles.py extract --csv ...``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from framecache.extract.views import VideoViews, ViewDecoder

CRASH_MARKER = "SEGFAULT-ME"  # CrashingDecoder crashes on the paths that contain it
KILL_MARKER = "v3.mp4"  # ParentKillingDecoder kills its parent (a Ray actor) on the paths that contain it
COUNT_DIR_ENV = "DOUBLES_COUNT_DIR"  # where CountingDecoder writes what it counted (a test's temporary folder)


class CrashingDecoder(ViewDecoder):
    """Kills its own process with SIGSEGV on a path containing :data:`CRASH_MARKER`, as native decoder code would."""

    def open(self, path: str, key: str, fps: float | None = None) -> VideoViews:
        if CRASH_MARKER in path:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().open(path, key, fps)


class ParentKillingDecoder(ViewDecoder):
    """Kills the process that started it (the Ray actor extracting the block) with SIGKILL, as the OOM killer or a
    lost node would, on a path containing :data:`KILL_MARKER`; then exits itself."""

    def open(self, path: str, key: str, fps: float | None = None) -> VideoViews:
        if KILL_MARKER in path:
            os.kill(os.getppid(), signal.SIGKILL)
            os._exit(1)
        return super().open(path, key, fps)


class CountingDecoder(ViewDecoder):
    """The real decoder, counting in its process every file opened and header read: one line ``<what> <path>`` each,
    in ``$DOUBLES_COUNT_DIR/<pid>.log``. Spies on PyAV's ``av.open``, the header reader and decord's ``VideoReader``."""

    def __init__(self, settings):
        super().__init__(settings)
        import av

        from framecache.extract import video_files

        log = Path(os.environ[COUNT_DIR_ENV]) / f"{os.getpid()}.log"

        def counted(what: str, function, path_of):
            def spy(*args, **kwargs):
                with open(log, "a") as file:
                    file.write(f"{what} {path_of(*args)}\n")
                return function(*args, **kwargs)

            return spy

        av.open = counted("av.open", av.open, lambda path, *rest: path)
        video_files._header = counted("header", video_files._header, lambda container, stream, first, path: path)
        video_files.VideoReader = counted("decord.open", video_files.VideoReader, lambda path, *rest, **options: path)


def counted_opens(folder: Path) -> Counter:
    """What every CountingDecoder process counted: ``Counter({("av.open", path): n, ...})``."""
    lines = [line.split(" ", 1) for log in folder.glob("*.log") for line in log.read_text().splitlines()]
    return Counter((what, path) for what, path in lines)


def main() -> None:
    """``framecache`` whose extractions decode with :class:`CrashingDecoder`."""
    from framecache import cli
    from framecache.extract import pipeline

    pipeline.run_extraction = functools.partial(pipeline.run_extraction, decoder_class=CrashingDecoder)
    cli.main(sys.argv[1:])


if __name__ == "__main__":
    main()
