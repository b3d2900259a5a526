"""What the processes around the backbone run: decoders that feed it and the one cache writer.

This module is the child side; :mod:`framecache.extract.processes` holds the
pipeline's handles on these processes, and :mod:`framecache.extract.messages`
what they send each other.

Decoding runs in separate processes so that a video that crashes the native
decoder ends one worker, not the run: the pipeline restarts the worker and
records the video as failed. Each worker talks to the pipeline over its own
pipe, so a worker dying mid-message cannot corrupt anyone else's channel.

The writer is a process of its own in its own session, the one owner of the
cache's open shard (:class:`~framecache.common.cache.CacheWriter`): if the
pipeline is killed (even with ``kill -9``), the writer sees its pipe close,
closes its shard (so its videos are kept) and exits. It ignores Ctrl-C and
SIGTERM (the pipeline closes it). A SIGKILL of the writer itself loses only
the videos of its open shard: the closed shards and the cache always open, and
the pipeline stops with an error saying to run the same command again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import traceback

from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
from framecache.extract.messages import (
    Close,
    Closed,
    DecodeTask,
    End,
    Failed,
    FailureRecord,
    Frames,
    Ready,
    Retire,
    VideoRecord,
    WriterError,
)
from framecache.extract.views import DecodeSettings, ViewDecoder, failure_reason

# decord 0.6 keeps ~75 KB per decoded frame (640x480 source) until its process
# ends, even after its VideoReader is gone: a decord worker retires after this
# many frames (about 0.4 GB) and the pipeline starts a fresh one.
DECORD_RECYCLE_FRAMES = 5000

# Test hook (fault injection): a decode worker given a video whose path contains
# the value of this environment variable kills itself with SIGSEGV before decoding
# it, as a crash in native decoder code would. Unset (the default) it does nothing.
# Used by tests/test_reliability.py.
FAULT_CRASH_ENV = "FRAMECACHE_FAULT_CRASH"

WRITER_TICK_S = 5.0  # how often an idle writer checks whether its shard has been open long enough


def decode_worker(connection, settings: DecodeSettings) -> None:
    """Worker process: receive DecodeTasks, send back view frames chunk by chunk.

    Messages sent (:mod:`framecache.extract.messages`): :class:`Frames` with
    views uint8 ``(V, n, size, size, 3)``, then :class:`End`, or
    :class:`Failed` with the reason; :class:`Retire` before exiting to be
    replaced (decord leaks memory per decoded frame, even across readers).
    Exits when the pipe closes or on ``None``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pipeline's to handle
    from framecache.extract.decode import probe_video

    decoder = ViewDecoder(settings)
    crash_on = os.environ.get(FAULT_CRASH_ENV)
    decoded = 0
    while True:
        if settings.decoder == "decord" and decoded >= DECORD_RECYCLE_FRAMES:
            connection.send(Retire())
            return
        try:
            task: DecodeTask | None = connection.recv()
        except (EOFError, OSError):
            return  # the pipeline is gone
        if task is None:
            return
        if crash_on and crash_on in task.path:
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            info = probe_video(task.path, backend=settings.decoder)
            offset = 0
            for views in decoder.views(task.path, task.key):
                connection.send(Frames(task.index, offset, views))
                offset += views.shape[1]
                decoded += views.shape[1] * max(1, settings.frame_step)
            connection.send(End(task.index, offset, info.num_frames, info.fps))
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return
        except Exception as error:  # a bad video; keep the run going
            connection.send(Failed(task.index, failure_reason(error)))


def write_record(writer, record: VideoRecord | FailureRecord) -> None:
    """Add one finished video (its features) or one failure (its reason) to a CacheWriter."""
    if isinstance(record, VideoRecord):
        writer.add_video(record.path, record.label, record.features, group=record.group, split=record.split,
                         source_frames=record.source_frames, source_fps=record.source_fps)
    else:
        writer.add_failure(record.path, record.label, record.reason, group=record.group, split=record.split)


def writer_process(connection, path: str, provenance: Provenance, overwrite: bool, shard_videos: int | None = None) -> None:
    """Writer process: own the CacheWriter and its open shard, and write what the pipeline sends.

    Replies :class:`Ready` (with the paths done) or :class:`WriterError` after
    opening, and :class:`Closed` after a :class:`Close` message. A failed write
    (disk full...) discards the open shard, is reported as :class:`WriterError`
    at once, and the writer exits. While no message comes, it still closes its
    shard once that has been open for ``SHARD_SECONDS``.
    """
    os.setsid()  # not in the pipeline's process group: a group kill leaves it to close its shard
    # Ctrl-C and SIGTERM (also a batch system's, sent to every process of a job) are the
    # pipeline's to handle: it then closes this writer, which keeps the open shard's videos.
    # The writer also closes its shard as soon as the pipeline is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from framecache.common.cache import SHARD_VIDEOS, CacheWriter

    try:
        writer = CacheWriter(path, provenance, overwrite=overwrite, shard_videos=shard_videos or SHARD_VIDEOS)
    except FramecacheError as error:
        connection.send(WriterError(str(error)))
        return
    except Exception as error:
        connection.send(WriterError(f"cannot open {path}: {type(error).__name__}: {error}"))
        return
    try:
        connection.send(Ready(writer.done_paths()))
        while True:
            try:
                if not connection.poll(WRITER_TICK_S):
                    writer.tick()  # close a shard open for SHARD_SECONDS, even while nothing comes
                    continue
                message = connection.recv()
            except (EOFError, OSError):
                return  # pipeline died: close the shard cleanly below
            if isinstance(message, (VideoRecord, FailureRecord)):
                write_record(writer, message)
            elif isinstance(message, Close):
                writer.close()
                connection.send(Closed())
                return
    except Exception as error:
        report = str(error) if isinstance(error, FramecacheError) else traceback.format_exc(limit=3)
        with contextlib.suppress(OSError):  # the pipeline may be gone already
            connection.send(WriterError(report))
    finally:
        try:
            writer.close()
        except Exception:
            pass  # after a failed write: already reported
