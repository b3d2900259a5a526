"""Writing a cache: the root once, then shards that each one process writes and closes for good.

**One writer per file, no locks.** Each shard is written by exactly one
process under a name only it uses (``.open-…``), closed after a bounded amount
of work (:data:`SHARD_VIDEOS` videos, :data:`SHARD_BYTES` of features or
:data:`SHARD_SECONDS`, whichever first), fsynced and renamed to its final name
(then the folder is fsynced). So a SIGKILL of any process at any moment costs
at most the videos of the shards open at that moment; every closed shard and
the root always open. Several processes, on one machine or many sharing a file
system, can write into one cache at once, and every file is opened with
``locking=False`` (HDF5's locks fail on NFS and Lustre; a file with one writer
does not need them).

**Videos streamed, shards whole.** Stage one sends each video's features as
the backbone makes them (:meth:`CacheWriter.add_piece`, then
:meth:`CacheWriter.finish_video`), so no process holds a whole video. A video
stays in the shard it began in; a shard that is full is set aside (new videos
go to a fresh one) and closed once every video begun in it has finished or
failed. Closing deletes what is there of a video still streaming
(:meth:`CacheWriter.close` after an interrupted run), so a closed shard never
holds part of a video.

A write that fails (disk full, quota, file-size limit) discards the open
shards and raises one :class:`FramecacheError`; the shards closed before are
kept. Every write reaches the file in the call that makes it (see
:func:`~framecache.common.cache.shard.new_shard_file`), so a failure is raised
there, never later as h5py frees an object (where h5py could only print it):
the writer changes no hook of ``sys`` to keep h5py quiet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from framecache import __version__
from framecache.common.cache.layout import (
    OPEN_PREFIX,
    SCHEMA_VERSION,
    error_reason,
    fsync,
    host,
    live_writers,
    owner_tag,
    remove_stale_temporaries,
    shards_folder,
    stored_features,
    video_id,
    write_failure_cause,
)
from framecache.common.cache.reader import differences, read_root, scan
from framecache.common.cache.shard import OpenShard, failure_row, video_row
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name
from framecache.common.provenance import Provenance

# When a shard is closed: after this many videos, this many bytes of features, or this many
# seconds since its first video, whichever comes first (a full shard closes once the videos begun in
# it have finished: a long video keeps it open until its end). A SIGKILL of the writer loses the
# open shards, so these bound what a kill costs: at most 64 videos, 256 MB or 5 minutes of the writer's
# input per shard (on 2 CPU cores 64 ten-second clips take about 3.5 minutes to extract; on a GPU the count
# comes first, well under a minute). They are large enough that 100,000 videos make about 1,600
# files, not 100,000: few enough for any file system (Lustre and NFS dislike many small files) and
# for a reader, which opens every shard once to list its videos.
SHARD_VIDEOS = 64
SHARD_BYTES = 256 << 20
SHARD_SECONDS = 300.0

# What h5py raises when a write fails (disk full, quota, file-size limit, I/O error).
_WRITE_ERRORS = (OSError, RuntimeError, ValueError)


class CacheWriter:
    """Adds videos to a feature cache, in shards of its own; resumes an existing cache with the same provenance.

    Any number of CacheWriters, in any processes or machines, may write into one
    cache at once. A video comes whole (:meth:`add_video`) or streamed
    (:meth:`add_piece`..., :meth:`finish_video`). Videos are kept once their
    shard is closed: after ``shard_videos`` videos, ``shard_bytes`` of features
    or ``shard_seconds`` (checked on every write and by :meth:`tick`) once the
    videos begun in it have finished, and by :meth:`close`.

    >>> with CacheWriter("features.h5", provenance) as cache:
    ...     todo = [p for p in paths if p not in cache.done_paths()]
    """

    def __init__(
        self,
        path: str | Path,
        provenance: Provenance,
        overwrite: bool = False,
        shard_videos: int = SHARD_VIDEOS,
        shard_bytes: int = SHARD_BYTES,
        shard_seconds: float = SHARD_SECONDS,
    ):
        if not isinstance(provenance, Provenance):
            raise TypeError(f"provenance must be a framecache.common.provenance.Provenance, got {type(provenance).__name__}")
        if shard_videos < 1 or shard_bytes < 1 or shard_seconds <= 0:
            raise ValueError("shard_videos, shard_bytes and shard_seconds must be positive")
        self.path = Path(path)
        self.folder = shards_folder(self.path)
        # What made the features, for the schema written here (a provenance of schema 1, as read from an old
        # cache, takes this schema: the features are alike, the cache is not).
        self.provenance = provenance.replace(schema_version=SCHEMA_VERSION, framecache_version=__version__)
        self.provenance_hash = self.provenance.hash
        self.shard_videos, self.shard_bytes, self.shard_seconds = shard_videos, shard_bytes, shard_seconds
        if not self.path.parent.is_dir():
            raise FramecacheError(f"output folder does not exist: {self.path.parent}; create it or pass another {option_name('out')}")
        if self.path.is_dir():
            raise FramecacheError(f"{self.path} is a folder, not a feature cache file; pass another {option_name('out')}")
        if overwrite:
            self._remove_cache()
        if not self.path.exists():
            self._create_root()
        self._check_resumable()
        try:
            self.folder.mkdir(exist_ok=True)
        except PermissionError:
            raise FramecacheError(f"cannot write {self.folder}: permission denied; pass another path or fix its permissions") from None
        remove_stale_temporaries(self.path)
        contents = scan(self.path, self.provenance_hash, self.provenance)
        self.cached = {video.path: video for video in contents.videos.values()}  # closed shards' videos at opening, by CSV path
        self._done = set(self.cached)
        self.shards_closed = 0  # by this writer
        self._seq = 0  # of the next shard
        self._tag = owner_tag()
        self._current: OpenShard | None = None  # where new videos go
        self._aside: list[OpenShard] = []  # full: closed once no video streams into them

    # -- the root

    def _remove_cache(self) -> None:
        live = live_writers(self.path)
        if live:
            raise FramecacheError(
                f"cannot overwrite {self.path}: another process is writing into it ({live[0].name} in {self.folder}); "
                "wait for it to finish or stop it first"
            )
        if self.path.exists():
            self.path.unlink()
        if self.folder.exists():
            shutil.rmtree(self.folder)

    def _create_root(self) -> None:
        """Write the root file under a temporary name, fsync it, and give it its name unless another writer did first."""
        tmp = self.path.with_name(f"{self.path.name}.tmp-{owner_tag()}")
        try:
            try:
                with h5py.File(tmp, "w", locking=False) as root:
                    attrs = root.attrs
                    attrs["schema_version"] = SCHEMA_VERSION
                    attrs["provenance"] = self.provenance.to_json()
                    attrs["provenance_hash"] = self.provenance_hash
                    for key in ("backbone", "weights", "feature_dim", "views", "framecache_version"):
                        attrs[key] = getattr(self.provenance, key)
                fsync(tmp)
            except (PermissionError, OSError) as error:
                if isinstance(error, PermissionError) or getattr(error, "errno", None) == errno.EACCES or "ermission denied" in str(error):
                    raise FramecacheError(f"cannot write {self.path}: permission denied; pass another path or fix its permissions") from None
                cause, remedy = write_failure_cause(error, self.path.parent)
                raise FramecacheError(f"cannot create {self.path} ({error_reason(error)}): {cause}; {remedy}") from None
            try:
                os.link(tmp, self.path)  # atomic, and never replaces a root another writer made meanwhile
            except FileExistsError:
                return  # another writer made it first: checked like any existing cache
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                    raise
                if self.path.exists():  # a file system without hard links: rename, unless it appeared
                    return
                os.replace(tmp, self.path)
            fsync(self.path.parent, directory=True)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _check_resumable(self) -> None:
        if not h5py.is_hdf5(self.path):
            raise FramecacheError(
                f"{self.path} exists and is not a readable framecache feature cache (not HDF5, or truncated); "
                f"pass another {option_name('out')}, or move the file aside"
            )
        version, stored, stored_hash = read_root(self.path)
        if version == 1:
            raise FramecacheError(
                f"{self.path} is a cache of schema version 1 (one file, from an earlier framecache): it still reads for train, "
                f"info and predict, but no more videos are written into it. Convert it with "
                f"`{command_hint('merge', out='new.h5', caches=self.path)}` and extract into new.h5, or write to another {option_name('out')}"
            )
        if stored_hash != self.provenance_hash:
            raise FramecacheError(
                f"{self.path} was extracted with other settings ({differences(stored, self.provenance, 'cache', 'this run')}); "
                f"its features would not match. Write to another {option_name('out')}, or pass {option_name('overwrite', True)} to replace it"
            )

    # -- the open shard

    @contextlib.contextmanager
    def _writing(self, shard: OpenShard) -> Iterator[None]:
        """Around every write of an open shard (``shard``): a write that fails discards the open shards and raises
        FramecacheError.

        The shards' h5py objects live only in the frames of the methods that
        write (:class:`~framecache.common.cache.shard.OpenShard`'s): after a
        failure the files are closed first, then those frames are cleared, so no
        object of a discarded file outlives this call (h5py would print an error
        as each one is freed).
        """
        try:
            yield
        except _WRITE_ERRORS as error:
            failure = self._write_failed(error, shard)
            traceback.clear_frames(error.__traceback__)
            raise failure from None

    def _open_shards(self) -> list[OpenShard]:
        """The shards set aside, in the order they were, then the current one."""
        return [*self._aside, *([self._current] if self._current is not None else [])]

    def _shard_for_new_video(self) -> OpenShard:
        if self._current is None:
            shard = OpenShard(self.folder / f"{OPEN_PREFIX}{self._tag}-{self._seq}.h5", self._seq, self.provenance_hash)
            self._seq += 1
            self._current = shard
            with self._writing(shard):
                shard.create(self.provenance)
        return self._current

    def _streaming_into(self, key: str) -> OpenShard | None:
        """The shard the video ``key`` is streaming into, if it is."""
        return next((shard for shard in self._open_shards() if key in shard.streaming), None)

    def _write_failed(self, error: BaseException, shard: OpenShard) -> FramecacheError:
        """Discard the open shards after a failed write of ``shard``; the closed ones are untouched."""
        discarded = self._open_shards()
        if shard not in discarded:
            discarded.append(shard)
        lost = sum(each.lost() for each in discarded)
        for each in discarded:
            each.discard()
        self._current, self._aside = None, []
        code = getattr(error, "errno", None)
        why = f"{os.strerror(code)}: {error_reason(error)}" if isinstance(code, int) and code > 0 else error_reason(error)
        cause, remedy = write_failure_cause(error, shard.path.parent)
        which = "That shard was" if len(discarded) == 1 else f"That shard and the {len(discarded) - 1} other open one(s) were"
        return FramecacheError(
            f"writing {shard.path} failed ({why}): {cause}. {which} discarded ({lost} video(s) not yet closed), their "
            f"videos will be extracted again; the videos cached so far are kept: {remedy}"
        )

    def _full(self, shard: OpenShard) -> bool:
        return (
            shard.count() >= self.shard_videos
            or shard.bytes >= self.shard_bytes
            or time.monotonic() - shard.opened_at >= self.shard_seconds
        )

    def _settle(self) -> None:
        """Set the current shard aside once full (new videos open another); close each shard set aside as soon as
        no video streams into it."""
        if self._current is not None and self._full(self._current):
            self._aside.append(self._current)
            self._current = None
        for shard in [shard for shard in self._aside if not shard.streaming]:
            self._close(shard)

    def _close(self, shard: OpenShard) -> None:
        """Close one open shard: delete what streams into it still, write its index, flush, fsync, rename it into
        place, fsync the folder."""
        final = self.folder / f"{host()}-{os.getpid()}-{shard.seq:05d}-{self._tag.rsplit('-', 1)[1]}.h5"
        with self._writing(shard):
            shard.seal()
            fsync(shard.path)
            os.rename(shard.path, final)
        if shard is self._current:
            self._current = None
        else:
            self._aside.remove(shard)
        self.shards_closed += 1
        self._done.update(row["path"] for row in shard.record.videos.values())
        with contextlib.suppress(OSError):  # the rename is done; this makes it survive a power cut
            fsync(self.folder, directory=True)

    def close_shard(self) -> None:
        """Close every open shard now; a video still streaming is deleted from its shard (send it again, whole)."""
        for shard in self._open_shards():
            self._close(shard)

    def tick(self) -> None:
        """Close what has been open for ``shard_seconds`` (call when idle)."""
        self._settle()

    # -- the API

    def done_paths(self) -> set[str]:
        """CSV paths of the videos in closed shards (these are skipped on resume)."""
        return set(self._done)

    def add_video(
        self,
        path: str,
        label: str,
        features: np.ndarray,
        group: str | None = None,
        split: str | None = None,
        source_frames: int | None = None,
        source_fps: float | None = None,
        header_frames: int | None = None,
    ) -> None:
        """Store one video's features, shape ``(views, num_frames, feature_dim)``; kept once its shard closes.

        ``source_frames``: the file's frames that decoded (default: ``num_frames``); ``header_frames``: the count
        its header states, where it states one.
        """
        features = np.asarray(features)
        expected = (self.provenance.views, self.provenance.feature_dim)
        if features.ndim != 3 or (features.shape[0], features.shape[2]) != expected or features.shape[1] < 1:
            raise ValueError(f"features of {path} have shape {features.shape}, expected (views={expected[0]}, T>=1, {expected[1]})")
        features = stored_features(features)
        key = video_id(path)
        row = video_row(path, label, group, split, features.shape[1], source_frames, source_fps, header_frames)
        streaming = self._streaming_into(key)
        shard = self._shard_for_new_video()
        with self._writing(shard):
            if streaming is not None:
                streaming.drop(key)  # the whole video replaces what was streamed of it
            shard.write_video(key, row, features)
        self._settle()

    def add_piece(self, path: str, view: int, offset: int, features: np.ndarray) -> None:
        """Append frames ``offset``, ``offset + 1``... of view ``view`` of the video ``path``: ``(n, feature_dim)``.

        Stage one streams each video this way as the backbone makes its
        features, then calls :meth:`finish_video`; until then the video is not
        kept (a shard closed meanwhile deletes what it holds of it). Each view's
        pieces come in frame order; views may interleave, videos too.
        """
        features = np.asarray(features)
        views, dim = self.provenance.views, self.provenance.feature_dim
        key = video_id(path)
        shard = self._streaming_into(key)
        expected = shard.streaming[key][view] if shard is not None and 0 <= view < views else 0
        if not 0 <= view < views or features.ndim != 2 or features.shape[1] != dim or len(features) < 1 or offset != expected:
            raise ValueError(f"a piece of {path} (view {view}, from frame {offset}, shape {features.shape}) does not follow: "
                             f"expected a view below {views}, from frame {expected}, shape (n>=1, {dim})")  # fmt: skip
        features = stored_features(features)
        if shard is None:
            shard = self._shard_for_new_video()
        with self._writing(shard):
            shard.append(key, views, view, offset, features)
        self._settle()

    def finish_video(self, path: str, label: str, num_frames: int, group: str | None = None, split: str | None = None,
                     source_frames: int | None = None, source_fps: float | None = None,
                     header_frames: int | None = None) -> None:  # fmt: skip
        """Commit a video streamed with :meth:`add_piece`: each view has ``num_frames`` frames; kept once its shard
        closes. The other arguments are :meth:`add_video`'s."""
        key = video_id(path)
        shard = self._streaming_into(key)
        added = shard.streaming[key] if shard is not None else []
        if num_frames < 1 or added != [num_frames] * self.provenance.views:
            raise ValueError(f"{path} has {num_frames} frames per view, but frames {added or 'none'} were added per view")
        row = video_row(path, label, group, split, num_frames, source_frames, source_fps, header_frames)
        with self._writing(shard):
            shard.finish(key, row)
        self._settle()

    def add_failure(self, path: str, label: str, reason: str, group: str | None = None, split: str | None = None) -> None:
        """Record a video that could not be read, with a reason a person understands (retried on resume); what was
        streamed of it is deleted."""
        key = video_id(path)
        row = failure_row(path, label, reason, group, split)
        shard = self._streaming_into(key) or self._shard_for_new_video()
        with self._writing(shard):
            shard.write_failure(key, row)
        self._settle()

    def close(self) -> None:
        """Close the open shards (their finished videos are then kept; a video still streaming is not)."""
        self.close_shard()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
