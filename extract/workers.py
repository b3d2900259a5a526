"""The processes around the backbone: decoders that feed it and the one cache writer.

Decoding runs in separate processes so that a video that crashes the native
decoder ends one worker, not the run: the pipeline restarts the worker and
records the video as failed. Each worker talks to the pipeline over its own
pipe, so a worker dying mid-message cannot corrupt anyone else's channel.

The writer is a process of its own in its own session: if the pipeline is
killed (even with ``kill -9``), the writer sees its pipe close, finishes the
video it is committing and closes the HDF5 file cleanly, so the cache always
opens and resumes. It ignores Ctrl-C and SIGTERM (the pipeline closes it);
only a SIGKILL of the writer itself in the middle of a commit (HDF5 updates
its metadata in place) can leave a file that no longer opens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import traceback
from dataclasses import dataclass

import numpy as np

from framecache.common.errors import FramecacheError

# decord 0.6 keeps ~75 KB per decoded frame (640x480 source) until its process
# ends, even after its VideoReader is gone: a decord worker retires after this
# many frames (about 0.4 GB) and the pipeline starts a fresh one.
DECORD_RECYCLE_FRAMES = 5000

# Test hook (fault injection): a decode worker given a video whose path contains
# the value of this environment variable kills itself with SIGSEGV before decoding
# it, as a crash in native decoder code would. Unset (the default) it does nothing.
# Used by tests/test_reliability.py.
FAULT_CRASH_ENV = "FRAMECACHE_FAULT_CRASH"


@dataclass(frozen=True)
class DecodeSettings:
    """What a decoding worker needs to turn a path into view frames."""

    size: int
    frame_step: int
    fps: float | None
    chunk_frames: int
    decoder: str
    views: int
    augment: str
    seed: int


@dataclass(frozen=True)
class DecodeTask:
    index: int  # the video's row in the dataset
    path: str  # the file to open
    key: str  # the CSV path: seeds the augmentation, so reruns reproduce it


def decode_worker(connection, settings: DecodeSettings) -> None:
    """Worker process: receive DecodeTasks, send back view frames chunk by chunk.

    Messages sent: ``("frames", index, offset, views)`` with views uint8
    ``(V, n, size, size, 3)``; ``("end", index, num_frames, source_frames, source_fps)``;
    ``("failed", index, reason)``; ``("retire", None)`` before exiting to be
    replaced (decord leaks memory per decoded frame, even across readers).
    Exits when the pipe closes.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pipeline's to handle
    from framecache.extract.augment import ViewAugmenter
    from framecache.extract.decode import iter_frames, probe_video

    augmenter = ViewAugmenter(settings.augment, settings.seed)
    crash_on = os.environ.get(FAULT_CRASH_ENV)
    decoded = 0
    while True:
        if settings.decoder == "decord" and decoded >= DECORD_RECYCLE_FRAMES:
            connection.send(("retire", None))
            return
        try:
            task: DecodeTask = connection.recv()
        except (EOFError, OSError):
            return  # the pipeline is gone
        if task is None:
            return
        if crash_on and crash_on in task.path:
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            info = probe_video(task.path, backend=settings.decoder)
            offset = 0
            for chunk in iter_frames(
                task.path,
                size=settings.size,
                frame_step=settings.frame_step,
                fps=settings.fps,
                chunk_frames=settings.chunk_frames,
                backend=settings.decoder,
            ):
                views = [chunk] + [augmenter(chunk, task.key, view) for view in range(1, settings.views)]
                connection.send(("frames", task.index, offset, np.stack(views)))
                offset += len(chunk)
                decoded += len(chunk) * max(1, settings.frame_step)
            if offset == 0:
                raise FramecacheError("no frames could be decoded")
            connection.send(("end", task.index, offset, info.num_frames, info.fps))
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return
        except FramecacheError as error:
            connection.send(("failed", task.index, str(error)))
        except MemoryError:
            connection.send(("failed", task.index, "out of memory while decoding (frame size too large?)"))
        except Exception as error:  # decord raises assorted types; keep the run going
            reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
            connection.send(("failed", task.index, f"cannot decode: {reason}"))


def writer_process(connection, path: str, provenance: dict, overwrite: bool) -> None:
    """Writer process: own the CacheWriter and commit what the pipeline sends.

    Replies ``("ready", done_paths)`` or ``("error", message)`` after opening,
    and ``("closed", None)`` after a ``("close",)`` message. A failed write
    (disk full...) is reported as ``("error", message)`` at once, and the
    writer closes the file and exits.
    """
    os.setsid()  # not in the pipeline's process group: a group kill leaves it to close the file
    # Ctrl-C and SIGTERM (also a batch system's, sent to every process of a job) are the
    # pipeline's to handle: it then closes this writer; being killed mid-commit could
    # damage the file. The writer also closes the file as soon as the pipeline is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from framecache.common.cache import CacheWriter

    try:
        writer = CacheWriter(path, provenance, overwrite=overwrite)
    except FramecacheError as error:
        connection.send(("error", str(error)))
        return
    except Exception as error:
        connection.send(("error", f"cannot open {path}: {type(error).__name__}: {error}"))
        return
    try:
        connection.send(("ready", writer.done_paths()))
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return  # pipeline died: close the file cleanly below
            kind = message[0]
            if kind == "video":
                writer.add_video(**message[1])
            elif kind == "failure":
                writer.add_failure(**message[1])
            elif kind == "close":
                writer.close()
                connection.send(("closed", None))
                return
    except Exception as error:
        report = str(error) if isinstance(error, FramecacheError) else traceback.format_exc(limit=3)
        with contextlib.suppress(OSError):  # the pipeline may be gone already
            connection.send(("error", report))
    finally:
        try:
            writer.close()
        except Exception:
            pass  # after a failed write: already reported
