"""The one cache writer of stage one: a process of its own, owning the open shard, on one machine and in every Ray actor.

::

    driver ── FeaturePiece, VideoRecord, FailureRecord, CloseShard, Close ──►  writer process (a CacheWriter)

Features come as the backbone makes them (:class:`FeaturePiece`), and go
straight into the open shard: neither process holds a whole video, so the
memory of stage one does not grow with video length. A shard is closed only
once the videos begun in it are finished (see :mod:`framecache.common.cache.writer`).

What a kill costs, everywhere:

- **the driver** (or the Ray actor it runs in) killed, even with ``kill -9``:
  the videos it was embedding. The writer is in its own session, sees its pipe
  close, deletes what it has of those videos, closes its open shards (their
  finished videos are kept) and exits.
- **the writer** killed (the OOM killer): the videos of its open shards, at
  most ``shard_videos`` videos or ``SHARD_SECONDS`` of work per shard (a shard
  waits, open, for a long video begun in it). Closed shards and the cache stay
  whole; the driver stops with an error saying to run the same command again,
  which extracts just those videos.

Ctrl-C and SIGTERM (a batch system's, sent to every process of a job) are the
driver's to handle: the writer ignores them, and the driver closes it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
from framecache.extract.messages import (
    Close,
    Closed,
    CloseShard,
    FailureRecord,
    FeaturePiece,
    Ready,
    ShardClosed,
    VideoRecord,
    WriterError,
)
from framecache.extract.processes import exit_detail, start_ignoring_sigint

if TYPE_CHECKING:
    from framecache.common.cache import CacheWriter, VideoMeta

WRITER_TICK_S = 5.0  # how often an idle writer checks whether its shard has been open long enough


class WriterProcess:
    """The driver's handle on the writer process (a :class:`~framecache.extract.interfaces.ShardSink`).

    The writer speaks only to answer ``close`` / ``close_shard`` or to report a
    failed write, after which it discards its open shards and exits: every call
    here first checks for such a report, or for the writer's death, and raises
    it as a FramecacheError. :meth:`check` does only that (the driver calls it
    between batches, so a writer killed by the OOM killer stops the run).
    """

    def __init__(self, path: str, provenance: Provenance, overwrite: bool = False, shard_videos: int | None = None):
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe(duplex=True)
        self.process = context.Process(target=writer_main, args=(theirs, path, provenance, overwrite, shard_videos))
        self.failed = False
        try:
            start_ignoring_sigint(self.process)
            theirs.close()
            reply = self.connection.recv()
        except EOFError:
            self.process.join(5)
            raise FramecacheError(
                f"the cache writer stopped unexpectedly{exit_detail(self.process.exitcode)}; run the same command again"
            ) from None
        except BaseException:  # Ctrl-C while it starts: it sees the pipe close, closes the file, exits
            theirs.close()
            self.connection.close()
            raise
        if not isinstance(reply, Ready):
            self.process.join(5)
            raise FramecacheError(reply.message)
        self.cached: dict[str, VideoMeta] = reply.cached  # the cache's videos when it opened, by CSV path
        self.done_paths: set[str] = set(reply.cached)

    def _error(self) -> FramecacheError:
        """The writer's report of what went wrong, or the fact that it died."""
        self.failed = True
        message = None
        with contextlib.suppress(EOFError, OSError):
            if self.connection.poll(5):
                reply = self.connection.recv()
                message = reply.message if isinstance(reply, WriterError) else None
        if message is None:
            self.process.join(5)
            return FramecacheError(
                f"the cache writer died{exit_detail(self.process.exitcode)}: the videos of its open shards are lost, "
                "every closed shard is kept; run the same command again to resume"
            )
        return FramecacheError(f"writing the cache failed: {message}")

    def check(self) -> None:
        """Raise what the writer reported, or its death, if either happened."""
        if self.failed:
            raise FramecacheError("writing the cache failed earlier")
        try:
            reported = self.connection.poll()
        except OSError:
            reported = True
        if reported or not self.process.is_alive():
            raise self._error()

    def send(self, record: FeaturePiece | VideoRecord | FailureRecord) -> None:
        self._send(record)
        if isinstance(record, VideoRecord):
            self.done_paths.add(record.path)

    def _send(self, message) -> None:
        if self.failed:
            raise FramecacheError("writing the cache failed earlier")
        try:
            if self.connection.poll():
                raise self._error()
            self.connection.send(message)
        except OSError:  # BrokenPipeError, ConnectionResetError: the writer is gone
            raise self._error() from None

    def _reply(self) -> None:
        """Wait for the answer to a close; raise what the writer reports instead, if anything."""
        try:
            reply = self.connection.recv()
        except (EOFError, OSError):
            raise self._error() from None
        if isinstance(reply, WriterError):
            self.failed = True
            raise FramecacheError(f"writing the cache failed: {reply.message}")

    def close_shard(self) -> None:
        """Close the open shards and wait until they are: their finished videos are kept from here."""
        self._send(CloseShard())
        self._reply()

    def close(self) -> None:
        """Ask the writer to close its shards and exit; raise what it reports, if anything."""
        try:
            if self.failed:
                return  # already raised
            with contextlib.suppress(OSError):  # it exited: its report, if any, is still in the pipe
                self.connection.send(Close())
            self._reply()
        finally:
            self.process.join(30)
            self.connection.close()

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def writer_main(connection: Connection, path: str, provenance: Provenance, overwrite: bool, shard_videos: int | None) -> None:
    """Writer process: own the CacheWriter and its open shards, and write what the driver sends.

    Replies :class:`Ready` (with the paths done) or :class:`WriterError` after
    opening, :class:`ShardClosed` after :class:`CloseShard` and :class:`Closed`
    after :class:`Close`. A failed write (disk full...) discards the open shards,
    is reported as :class:`WriterError` at once, and the writer exits. While no
    message comes, it still closes a shard once that has been open for ``SHARD_SECONDS``.
    """
    os.setsid()  # not in the driver's process group: a group kill leaves it to close its shard
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
        connection.send(Ready(writer.cached))
        while True:
            try:
                if not connection.poll(WRITER_TICK_S):
                    writer.tick()  # close a shard open for SHARD_SECONDS, even while nothing comes
                    continue
                message = connection.recv()
            except (EOFError, OSError):
                return  # the driver died: close the shards cleanly below (without its unfinished videos)
            if isinstance(message, (FeaturePiece, VideoRecord, FailureRecord)):
                write_record(writer, message)
            elif isinstance(message, CloseShard):
                writer.close_shard()
                connection.send(ShardClosed())
            elif isinstance(message, Close):
                writer.close()
                connection.send(Closed())
                return
    except Exception as error:
        report = str(error) if isinstance(error, FramecacheError) else traceback.format_exc(limit=3)
        with contextlib.suppress(OSError):  # the driver may be gone already
            connection.send(WriterError(report))
    finally:
        with contextlib.suppress(Exception):  # after a failed write: already reported
            writer.close()


def write_record(writer: CacheWriter, record: FeaturePiece | VideoRecord | FailureRecord) -> None:
    """Write one message of the driver's into ``writer``: a piece of a video, its end, or its failure."""
    if isinstance(record, FeaturePiece):
        writer.add_piece(record.path, record.view, record.offset, record.features)
    elif isinstance(record, VideoRecord):
        writer.finish_video(record.path, record.label, record.num_frames, group=record.group, split=record.split,
                            source_frames=record.source_frames, source_fps=record.source_fps,
                            header_frames=record.header_frames)  # fmt: skip
    else:
        writer.add_failure(record.path, record.label, record.reason, group=record.group, split=record.split)
