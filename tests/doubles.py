"""Test doubles of stage one's parts.

- Passed where stage one takes a decoder class (``decoder_class``): ones that
  fail on purpose, one that counts.
- For the :class:`~framecache.extract.driver.Driver` run in one process, without
  files or a backbone: :class:`SyntheticDecoders` (a DecoderPool serving made-up
  videos of any length), :class:`FakeEmbedder` and :class:`InProcessSink` (a
  ShardSink writing into a CacheWriter here).

Run as a script, it is ``framecache`` itself with :class:`CrashingDecoder` in
every decoder process: ``python tests/doubles.py extract --csv ...``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from framecache.extract.decoders import Chunk
from framecache.extract.frame_ring import FrameRows
from framecache.extract.interfaces import Finished
from framecache.extract.messages import DecodeTask, End, Failed
from framecache.extract.views import VideoViews, ViewDecoder

if TYPE_CHECKING:  # not imported in the decoder processes that load this module for its decoders
    from framecache.common.cache import CacheWriter

CRASH_MARKER = "SEGFAULT-ME"  # CrashingDecoder crashes on the paths that contain it
KILL_MARKER = "v3.mp4"  # ParentKillingDecoder kills its parent (a Ray actor) on the paths that contain it
COUNT_DIR_ENV = "DOUBLES_COUNT_DIR"  # where CountingDecoder writes what it counted (a test's temporary folder)


class CrashingDecoder(ViewDecoder):
    """Kills its own process with SIGSEGV on a path containing :data:`CRASH_MARKER`, as native decoder code would."""

    def open(self, path: str, key: str, fps: float | None = None, place=None) -> VideoViews:
        if CRASH_MARKER in path:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().open(path, key, fps, place)


class ParentKillingDecoder(ViewDecoder):
    """Kills the process that started it (the Ray actor extracting the block) with SIGKILL, as the OOM killer or a
    lost node would, on a path containing :data:`KILL_MARKER`; then exits itself."""

    def open(self, path: str, key: str, fps: float | None = None, place=None) -> VideoViews:
        if KILL_MARKER in path:
            os.kill(os.getppid(), signal.SIGKILL)
            os._exit(1)
        return super().open(path, key, fps, place)


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


class SyntheticDecoders:
    """A :class:`~framecache.extract.decoders.DecoderPool` in this process: the video of a task is ``frames[path]``
    frames of ``views`` views, made up a chunk at a time as a decoder process sends them (frame ``i`` of view ``v``:
    every pixel ``(i + 7 * v) % 251``; 0 in a video whose path contains ``EMPTY``). A video whose path contains
    ``FAIL`` fails after half its frames."""

    def __init__(self, frames: dict[str, int], views: int, chunk_frames: int = 32, size: int = 2, most: int = 1):
        self.frames, self.views, self.chunk_frames, self.size = frames, views, chunk_frames, size
        self.tasks: deque[DecodeTask] = deque()
        self.sent = 0  # frames (per view) of the current task sent so far
        self.count, self.most = 1, most  # "processes": one sends every message; a test's double may send faster with more

    def can_add(self) -> bool:
        return self.count < self.most

    def add(self) -> None:
        self.count += 1

    def assign(self, todo: deque[DecodeTask]) -> None:
        while todo and len(self.tasks) < 2:
            self.tasks.append(todo.popleft())

    def busy(self) -> bool:
        return bool(self.tasks)

    def receive(self, timeout: float) -> list:
        """The current task's next message: a chunk of its frames, then its End (or its failure)."""
        task = self.tasks[0]
        total = self.frames[task.key]
        if "FAIL" in task.key and self.sent >= total // 2:
            self.tasks.popleft()
            self.sent = 0
            return [Failed(task.index, "made to fail")]
        if self.sent == total:
            self.tasks.popleft()
            self.sent = 0
            return [End(task.index, total, total, 25.0, total)]
        count = min(self.chunk_frames, total - self.sent)
        values = (np.arange(self.sent, self.sent + count)[None, :] + 7 * np.arange(self.views)[:, None]) % 251
        values *= "EMPTY" not in task.key
        views = np.broadcast_to(values.astype(np.uint8)[..., None, None, None], (self.views, count, self.size, self.size, 3))
        message = Chunk(task.index, self.sent, [FrameRows.of(np.ascontiguousarray(frames)) for frames in views])
        self.sent += count
        return [message]


class FakeEmbedder:
    """An :class:`~framecache.extract.interfaces.Embedder` without a model: frame ``f``'s features are
    ``f[0, 0, 0] + arange(feature_dim) / feature_dim`` (float32); a frame whose pixels are 0 shows nobody (fails
    :meth:`piece_passes`), as a pose backbone's would."""

    def __init__(self, feature_dim: int):
        self.feature_dim = feature_dim

    def embed(self, frames: np.ndarray, streams: list | None = None) -> np.ndarray:
        return features_of(frames[:, 0, 0, 0], self.feature_dim)

    def start(self, frames: np.ndarray, streams: list | None = None) -> Finished:
        return Finished(self.embed(frames, streams))

    def piece_passes(self, features: np.ndarray) -> bool:
        return bool(np.any(features[:, 0] > 0))

    def video_failure(self, frames: int, passed: bool) -> str | None:
        return None if passed else f"nobody in any of its {frames} frames"


def features_of(values: np.ndarray, feature_dim: int) -> np.ndarray:
    """:class:`FakeEmbedder`'s features of frames whose pixels are ``values``: float32 ``(len(values), feature_dim)``."""
    return np.asarray(values, np.float32)[:, None] + np.arange(feature_dim, dtype=np.float32) / feature_dim


class InProcessSink:
    """A :class:`~framecache.extract.interfaces.ShardSink` writing into a :class:`CacheWriter` in this process."""

    def __init__(self, writer: CacheWriter):
        from framecache.extract.writer_process import write_record

        self.writer, self.write = writer, write_record
        self.done_paths: set[str] = writer.done_paths()

    def send(self, record) -> None:
        self.write(self.writer, record)

    def check(self) -> None:
        """Writes raise here, in the call that makes them: nothing to check between batches."""

    def close_shard(self) -> None:
        self.writer.close_shard()

    def close(self) -> None:
        self.writer.close()


def main() -> None:
    """``framecache`` whose extractions decode with :class:`CrashingDecoder`."""
    from framecache import cli
    from framecache.extract import pipeline

    pipeline.run_extraction = functools.partial(pipeline.run_extraction, decoder_class=CrashingDecoder)
    cli.main(sys.argv[1:])


if __name__ == "__main__":
    main()
