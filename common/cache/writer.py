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

A write that fails (disk full, quota, file-size limit) discards the open
shard and raises one :class:`FramecacheError`; the shards closed before are
kept. Every write reaches the file in the call that makes it (see
:func:`_new_shard`), so a failure is raised there, never later as h5py frees
an object (where h5py could only print it): the writer changes no hook of
``sys`` to keep h5py quiet.
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
    FAILURE_FIELDS,
    OPEN_PREFIX,
    SCHEMA_VERSION,
    VIDEO_FIELDS,
    ShardRecord,
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
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name
from framecache.common.provenance import Provenance

# When a shard is closed: after this many videos, this many bytes of features, or this many
# seconds since its first video, whichever comes first. A SIGKILL of the writer loses the open
# shard, so these bound what a kill costs: at most 64 videos, 256 MB or 5 minutes of the writer's
# input (on 2 CPU cores 64 ten-second clips take about 3.5 minutes to extract; on a GPU the count
# comes first, well under a minute). They are large enough that 100,000 videos make about 1,600
# files, not 100,000: few enough for any file system (Lustre and NFS dislike many small files) and
# for a reader, which opens every shard once to list its videos.
SHARD_VIDEOS = 64
SHARD_BYTES = 256 << 20
SHARD_SECONDS = 300.0

# What h5py raises when a write fails (disk full, quota, file-size limit, I/O error).
_WRITE_ERRORS = (OSError, RuntimeError, ValueError)


def _text(value: str | None) -> str:
    return "" if value is None else str(value)


def _new_shard(path: Path, provenance: Provenance) -> h5py.File:
    """Create an open shard: ``h5py.File(path, "w-", locking=False)``, but with HDF5's sieve buffer off.

    With it, HDF5 keeps a dataset under 64 KiB in memory and writes it when the
    dataset is closed; a write that fails then (disk full) fails as h5py frees
    the dataset, where h5py can only print the error, and it leaves HDF5 in a
    state where closing the file may crash the process. Without it, every
    feature array is written by ``create_dataset``, which raises if that fails.
    The file is the same, byte for byte.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)  # h5py's default
    fapl.set_file_locking(False, ignore_when_disabled=False)
    fapl.set_sieve_buf_size(0)
    shard = h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_EXCL, fapl=fapl))
    attrs = shard.attrs
    attrs["schema_version"] = SCHEMA_VERSION
    attrs["provenance"] = provenance.to_json()
    attrs["provenance_hash"] = provenance.hash
    shard.create_group("videos")
    shard.create_group("failed")
    return shard


def _write_video(shard: h5py.File, key: str, row: dict, features: np.ndarray) -> None:
    videos, failed = shard["videos"], shard["failed"]
    if key in videos:
        del videos[key]
    if key in failed:
        del failed[key]
    entry = videos.create_group(key)
    entry.create_dataset("features", data=features)
    entry.attrs.update(row)


def _write_failure(shard: h5py.File, key: str, row: dict) -> None:
    failed = shard["failed"]
    if key in failed:
        del failed[key]
    failed.create_group(key).attrs.update(row)


def _seal(shard: h5py.File, record: ShardRecord) -> None:
    shard.create_dataset("index", data=record.index_json())
    shard.attrs["closed_at"] = time.time()
    shard.close()


class CacheWriter:
    """Adds videos to a feature cache, in shards of its own; resumes an existing cache with the same provenance.

    Any number of CacheWriters, in any processes or machines, may write into one
    cache at once. Videos are kept once their shard is closed: every
    ``shard_videos`` videos, ``shard_bytes`` of features, ``shard_seconds``
    (checked on every write and by :meth:`tick`), and by :meth:`close`.

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
        self._seq = 0
        self._tag = owner_tag()
        self._shard: h5py.File | None = None
        self._shard_path: Path | None = None
        self._record: ShardRecord | None = None  # what the open shard holds

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
    def _writing(self) -> Iterator[None]:
        """Around every write of the open shard: a write that fails discards the shard and raises FramecacheError.

        The shard's h5py objects live only in the frames of the functions that
        write (``_write_video``…): after a failure the file is closed first,
        then those frames are cleared, so no object of the discarded file
        outlives this call (h5py would print an error as each one is freed).
        """
        try:
            yield
        except _WRITE_ERRORS as error:
            failure = self._write_failed(error)
            traceback.clear_frames(error.__traceback__)
            raise failure from None

    def _open_shard(self) -> None:
        if self._shard is not None:
            return
        self._shard_path = self.folder / f"{OPEN_PREFIX}{self._tag}-{self._seq}.h5"
        self._record = ShardRecord(self._shard_path, self.provenance_hash)
        with self._writing():
            self._shard = _new_shard(self._shard_path, self.provenance)
        self._opened_at = time.monotonic()
        self._bytes = 0

    def _write_failed(self, error: BaseException) -> FramecacheError:
        """Discard the open shard after a failed write; the closed ones are untouched."""
        lost = len(self._record.videos) if self._shard is not None else 0
        shard = self._shard_path
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
        self._shard, self._record = None, None
        with contextlib.suppress(OSError):
            shard.unlink()
        code = getattr(error, "errno", None)
        why = f"{os.strerror(code)}: {error_reason(error)}" if isinstance(code, int) and code > 0 else error_reason(error)
        cause, remedy = write_failure_cause(error, shard.parent)
        return FramecacheError(
            f"writing {shard} failed ({why}): {cause}. That shard ({lost} video(s) not yet closed) was discarded, its "
            f"videos will be extracted again; the videos cached so far are kept: {remedy}"
        )

    def _full(self) -> bool:
        return (
            len(self._record.videos) + len(self._record.failures) >= self.shard_videos
            or self._bytes >= self.shard_bytes
            or time.monotonic() - self._opened_at >= self.shard_seconds
        )

    def close_shard(self) -> None:
        """Close the open shard: write its index, flush, fsync, rename it into place, fsync the folder."""
        if self._shard is None:
            return
        record = self._record
        final = self.folder / f"{host()}-{os.getpid()}-{self._seq:05d}-{self._tag.rsplit('-', 1)[1]}.h5"
        with self._writing():
            _seal(self._shard, record)
            fsync(self._shard_path)
            os.rename(self._shard_path, final)
        self._shard, self._record = None, None
        self._seq += 1
        self.shards_closed += 1
        self._done.update(row["path"] for row in record.videos.values())
        with contextlib.suppress(OSError):  # the rename is done; this makes it survive a power cut
            fsync(self.folder, directory=True)

    def tick(self) -> None:
        """Close the open shard if it has been open for ``shard_seconds`` (call when idle)."""
        if self._shard is not None and time.monotonic() - self._opened_at >= self.shard_seconds:
            self.close_shard()

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
        row = dict(zip(VIDEO_FIELDS, (path, _text(label), _text(group), _text(split), int(features.shape[1]),
                                      int(source_frames if source_frames is not None else features.shape[1]),
                                      float(source_fps or 0.0), int(header_frames or 0))))  # fmt: skip
        self._open_shard()
        with self._writing():
            _write_video(self._shard, key, row, features)
        self._record.failures.pop(key, None)
        self._record.videos[key] = row
        self._bytes += features.nbytes
        if self._full():
            self.close_shard()

    def add_failure(self, path: str, label: str, reason: str, group: str | None = None, split: str | None = None) -> None:
        """Record a video that could not be read, with a reason a person understands (retried on resume)."""
        key = video_id(path)
        row = dict(zip(FAILURE_FIELDS, (path, _text(label), reason, _text(group), _text(split))))
        self._open_shard()
        with self._writing():
            _write_failure(self._shard, key, row)
        self._record.failures[key] = row
        if self._full():
            self.close_shard()

    def close(self) -> None:
        """Close the open shard (its videos are then kept)."""
        self.close_shard()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
