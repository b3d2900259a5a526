"""The feature cache: a root file and its shard files, the contract between the two stages.

This module is the only code that opens these files. Layout (schema version 2)::

    study.h5                the root, the file the user names: written once, atomically, never rewritten
        attrs               schema_version, provenance (JSON), provenance_hash,
                            backbone, weights, feature_dim, views, framecache_version
    study.h5.shards/        the shards (SHARDS_SUFFIX), found by listing this folder
        <host>-<pid>-<seq>-<random>.h5      a closed shard: complete and never written again
            attrs           schema_version, provenance (JSON), provenance_hash, closed_at (Unix time)
            /videos/<id>    one group per video (<id>: 16 hex digits of the SHA-1 of its CSV path)
                features    float16 (views, num_frames, feature_dim); view 0 is the clean video
                attrs       path, label, group, split, num_frames, source_frames, source_fps
            /failed/<id>    attrs path, label, group, split, reason: a video that could not be read
            /index          JSON of the above attributes, so that opening a cache reads one value per shard
        .open-<host>-<pid>-<random>.h5      a shard being written (or left by a killed writer): never read

Every video's sequence has ``num_frames`` valid steps; readers build a mask
from that when they pad sequences to a common length.

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

**Reading.** The videos of a cache are the union of its closed shards'. The
same video in two shards (two machines extracting the same CSV) is counted
once: the copy in the shard closed first. A success in any shard wins over a
failure in another; of several failures, the latest is reported.

Schema version 1 (one file, ``/videos/<xx>/<id>``, ``<xx>`` the id's first two
digits) is still read; :func:`merge_caches` converts it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from framecache import __version__
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance

SCHEMA_VERSION = 2
SCHEMA_VERSIONS_READ = (1, 2)
SHARDS_SUFFIX = ".shards"  # study.h5 keeps its shards in study.h5.shards/
OPEN_PREFIX = ".open-"  # a shard being written: readers skip it
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
# A leftover open shard (of a killed writer) is deleted by the next writer once it is stale: its
# writer's process is gone (same host), or it has not been written for this long (any host: a
# live writer closes its shard after SHARD_SECONDS, so it is never this old).
STALE_OPEN_S = 24 * 3600.0


def video_id(path: str) -> str:
    """The stable key of a video in the cache: derived from its path as written in the CSV."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


def shards_folder(path: str | Path) -> Path:
    """The folder holding the shards of the cache ``path``: ``study.h5`` → ``study.h5.shards``."""
    path = Path(path)
    return path.with_name(path.name + SHARDS_SUFFIX)


@dataclass
class VideoMeta:
    """What the cache knows about one video besides its features."""

    key: str
    path: str
    label: str
    group: str | None
    split: str | None
    num_frames: int
    file: str = ""  # the HDF5 file holding its features (the shard; the cache itself for schema 1): read with FeatureReader


@dataclass
class FailedVideo:
    path: str
    label: str
    reason: str


# What h5py raises when a file's internal structure is damaged (e.g. a disk failure):
# turned into FramecacheError.
_DAMAGE_ERRORS = (OSError, RuntimeError, KeyError, AttributeError, ValueError, TypeError)
# What h5py raises when a write fails (disk full, quota, file-size limit, I/O error).
_WRITE_ERRORS = (OSError, RuntimeError, ValueError)


def _reason(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _damaged(path: Path, error: BaseException) -> FramecacheError:
    if path.parent.name.endswith(SHARDS_SUFFIX):
        what = ("A shard is complete when it gets its name, so the disk failed or the file was changed by hand; "
                "move it out of the shards folder (its videos only are lost) and run the extraction again to redo them")  # fmt: skip
    else:
        what = "The disk may have failed, or the file was changed by hand; move it aside and extract again"
    return FramecacheError(f"{path} is damaged: its contents cannot be read ({_reason(error)}). {what}")


def _text(value: str | None) -> str:
    return "" if value is None else str(value)


def _optional(value) -> str | None:
    value = value.decode() if isinstance(value, bytes) else value
    return None if value in ("", None) else str(value)


def _open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file without HDF5's file locks (every file has one writer), errors as FramecacheError."""
    try:
        return h5py.File(path, mode, locking=False)
    except PermissionError:
        action = "read" if mode == "r" else "write"
        raise FramecacheError(f"cannot {action} {path}: permission denied; pass another path or fix its permissions") from None
    except OSError as error:
        if mode == "r" and not path.exists():
            raise FramecacheError(f"feature cache not found: {path}; run `make features` first") from None
        if getattr(error, "errno", None) == errno.EACCES:
            action = "read" if mode == "r" else "write"
            raise FramecacheError(f"cannot {action} {path}: permission denied; pass another path or fix its permissions") from None
        raise FramecacheError(
            f"{path} is not a readable framecache feature cache (HDF5 says: {_reason(error)}); "
            "it may be truncated or another kind of file: pass another path, or move it aside and extract again"
        ) from None


def _schema(attrs, path: Path) -> int:
    """The schema version of a cache's root file; refuses what this version cannot read."""
    version = attrs.get("schema_version")
    if version is None or "provenance" not in attrs:
        raise FramecacheError(f"{path} is an HDF5 file but not a framecache feature cache (no schema_version/provenance)")
    version = int(version)
    if version > SCHEMA_VERSION:
        raise FramecacheError(
            f"{path} uses cache schema version {version}: it was made by a newer framecache; upgrade "
            f"framecache (this one reads versions up to {SCHEMA_VERSION}) to read it"
        )
    if version not in SCHEMA_VERSIONS_READ:
        raise FramecacheError(f"{path} uses cache schema version {version}, which this framecache cannot read; extract again into a new file")
    return version


def _read_provenance(attrs, path: Path) -> Provenance:
    try:
        return Provenance.from_json(attrs["provenance"])
    except FramecacheError as error:
        raise FramecacheError(f"{path} is not a readable framecache feature cache: {error}") from None


def _differences(theirs: Provenance, ours: Provenance, their_name: str, our_name: str) -> str:
    found = [f"{key}: {their_name} has {a!r}, {our_name} {b!r}" for key, a, b in theirs.differences(ours)]
    return "; ".join(found) or f"provenance hash: {their_name} has {theirs.hash[:16]}, {our_name} {ours.hash[:16]}"


# -- names, and what is safe to delete


def _host() -> str:
    """This machine's name as written in file names: no "-", so that names split on it."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() or "host")[:64]


def _owner_tag() -> str:
    """``<host>-<pid>-<random>``: unique to this writer; the pid and host say whether it still lives."""
    return f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    with contextlib.suppress(OSError, IndexError):  # a zombie (killed, not yet reaped) is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_stale(path: Path, tag: str) -> bool:
    """Whether a temporary file named with :func:`_owner_tag` ``tag`` belongs to a writer that is gone."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_OPEN_S:
        return True
    host, pid = ([*tag.split("-"), ""])[:2]  # hosts are written without "-" (see _host)
    if host == _host() and pid.isdigit():
        return int(pid) != os.getpid() and not _process_alive(int(pid))
    return False


def _open_shards(folder: Path) -> list[Path]:
    """Shards being written, or left by killed writers."""
    return sorted(folder.glob(OPEN_PREFIX + "*")) if folder.is_dir() else []


def _closed_shards(folder: Path) -> list[Path]:
    """Closed shards, by name (``.open-*`` and other hidden files are not shards)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix == ".h5" and not path.name.startswith(".") and path.is_file())


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if not directory or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise  # a folder that cannot be fsynced (some file systems) is fine
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the open shards and root temporaries of writers that are gone (never a live one's)."""
    candidates = [(shard, shard.name[len(OPEN_PREFIX) :].removesuffix(".h5")) for shard in _open_shards(shards_folder(path))]
    prefix = f"{path.name}.tmp-"
    candidates += [(tmp, tmp.name[len(prefix) :]) for tmp in path.parent.glob(prefix + "*")]
    for candidate, tag in candidates:
        if _is_stale(candidate, tag):
            with contextlib.suppress(OSError):
                candidate.unlink()


def _live_writers(path: Path) -> list[Path]:
    return [shard for shard in _open_shards(shards_folder(path))
            if not _is_stale(shard, shard.name[len(OPEN_PREFIX) :].removesuffix(".h5"))]  # fmt: skip


# -- reading the shards


@dataclass
class _Shard:
    """What one closed shard holds (read once, when a cache is opened)."""

    path: Path
    closed_at: float
    videos: dict[str, VideoMeta]
    failures: dict[str, FailedVideo]
    extra: dict[str, dict] = field(default_factory=dict)  # key -> source_frames, source_fps (for merge)


def _read_shard(path: Path, root_hash: str, root_provenance: Provenance, root_path: Path) -> _Shard:
    try:
        handle = h5py.File(path, "r", locking=False)
    except PermissionError:
        raise FramecacheError(f"cannot read {path}: permission denied; fix its permissions") from None
    except OSError as error:
        raise _damaged(path, error) from None
    with handle:
        try:
            attrs = handle.attrs
            if str(attrs.get("provenance_hash", "")) != root_hash:
                theirs = _read_provenance(attrs, path) if "provenance" in attrs else None
                detail = _differences(theirs, root_provenance, "the shard", "the cache") if theirs else "no provenance"
                raise FramecacheError(
                    f"{path} holds features made with other settings than {root_path} ({detail}); move it out of "
                    f"{path.parent} (merge its own cache with `framecache merge` only if the settings agree)"
                )
            closed_at = float(attrs.get("closed_at", 0.0))
            file = str(path)
            if "index" in handle:
                index = json.loads(handle["index"][()])
                if set(handle["videos"]) != {row[0] for row in index["videos"]}:  # reads the group's own index
                    raise ValueError("its index and its videos disagree")
                videos = {row[0]: VideoMeta(row[0], row[1], row[2], _optional(row[3]), _optional(row[4]), int(row[5]), file)
                          for row in index["videos"]}  # fmt: skip
                extra = {row[0]: {"source_frames": int(row[6]), "source_fps": float(row[7])} for row in index["videos"]}
                failures = {row[0]: FailedVideo(row[1], row[2], row[3]) for row in index["failed"]}
                return _Shard(path, closed_at, videos, failures, extra)
            videos, extra = {}, {}
            for key, group in handle["videos"].items():
                entry = dict(group.attrs)
                videos[key] = _video_meta(key, entry, file)
                extra[key] = {"source_frames": int(entry["source_frames"]), "source_fps": float(entry["source_fps"])}
            failures = {key: _failed(dict(group.attrs)) for key, group in handle["failed"].items()}
            return _Shard(path, closed_at, videos, failures, extra)
        except _DAMAGE_ERRORS as error:
            raise _damaged(path, error) from None


def _video_meta(key: str, attrs: dict, file: str) -> VideoMeta:
    return VideoMeta(
        key=key,
        path=_optional(attrs["path"]),
        label=_optional(attrs["label"]),
        group=_optional(attrs["group"]),
        split=_optional(attrs["split"]),
        num_frames=int(attrs["num_frames"]),
        file=file,
    )


def _failed(attrs: dict) -> FailedVideo:
    return FailedVideo(_optional(attrs["path"]), _optional(attrs["label"]), _optional(attrs["reason"]))


@dataclass
class _Contents:
    """A cache's videos and failures, duplicates counted once."""

    shards: list[_Shard]
    videos: dict[str, VideoMeta]
    failures: dict[str, FailedVideo]
    duplicates: int


def _combine(shards: list[_Shard]) -> _Contents:
    """Union of the shards: a video's first copy (in the order shards were closed), successes over failures."""
    shards = sorted(shards, key=lambda shard: (shard.closed_at, shard.path.name))
    videos: dict[str, VideoMeta] = {}
    failures: dict[str, FailedVideo] = {}
    duplicates = 0
    for shard in shards:
        for key, video in shard.videos.items():
            if key in videos:
                duplicates += 1
            else:
                videos[key] = video
        failures.update(shard.failures)  # the latest failure of a video is kept
    return _Contents(shards, videos, {key: failure for key, failure in failures.items() if key not in videos}, duplicates)


def _scan(path: Path, root_hash: str, root_provenance: Provenance) -> _Contents:
    return _combine([_read_shard(shard, root_hash, root_provenance, path) for shard in _closed_shards(shards_folder(path))])


def _read_v1(handle: h5py.File, path: Path) -> _Contents:
    """A schema-1 cache: one file, ``/videos/<xx>/<id>``; groups without attributes are interrupted writes."""
    videos, extra = {}, {}
    for bucket in handle["videos"].values():
        for key, group in bucket.items():
            attrs = dict(group.attrs)
            if "num_frames" not in attrs:
                continue  # an interrupted write
            videos[key] = _video_meta(key, attrs, str(path))
            extra[key] = {"source_frames": int(attrs.get("source_frames", attrs["num_frames"])), "source_fps": float(attrs.get("source_fps", 0.0))}
    failures = {key: _failed(dict(group.attrs)) for key, group in handle["failed"].items()}
    shard = _Shard(path, 0.0, videos, failures, extra)
    return _Contents([shard], videos, {key: failure for key, failure in failures.items() if key not in videos}, 0)


def _open_root(path: Path) -> tuple[int, Provenance, str, _Contents]:
    """Schema, provenance, provenance hash and contents of the cache ``path``."""
    if path.is_dir():
        raise FramecacheError(f"{path} is a folder, not a feature cache file")
    with _open_h5(path, "r") as root:
        try:
            version = _schema(root.attrs, path)
            provenance = _read_provenance(root.attrs, path)
            provenance_hash = str(root.attrs["provenance_hash"])
            if version == 1:
                return version, provenance, provenance_hash, _read_v1(root, path)
        except _DAMAGE_ERRORS as error:
            raise _damaged(path, error) from None
    return version, provenance, provenance_hash, _scan(path, provenance_hash, provenance)


def _schema_1_refused(path: Path) -> FramecacheError:
    return FramecacheError(
        f"{path} is a cache of schema version 1 (one file, from an earlier framecache): it still reads for train, info "
        f"and predict, but no more videos are written into it. Convert it with `framecache merge --out new.h5 {path}` "
        "(make merge OUT=new.h5 CACHES=...) and extract into new.h5, or write to another --out"
    )


# -- writing

_quiet_paths: set[str] = set()


def _quiet_h5py_errors_about(path: Path) -> None:
    """Keep h5py from printing tracebacks about an open shard whose writes fail (it is discarded).

    When a write fails (disk full), h5py's objects of that file fail again as
    they are freed, and h5py prints each such error with a traceback (through
    ``sys.excepthook`` and ``sys.unraisablehook``) whenever that happens. They
    say again what the writer's error message says; errors about other files
    are printed as before.
    """
    if not _quiet_paths:
        previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

        def unraisable(report) -> None:
            if not _about_quiet_path(report.exc_value):
                previous_unraisable(report)

        def excepthook(kind, value, traceback) -> None:
            if not _about_quiet_path(value):
                previous_except(kind, value, traceback)

        sys.unraisablehook, sys.excepthook = unraisable, excepthook
    _quiet_paths.add(str(path))


def _about_quiet_path(error: BaseException | None) -> bool:
    return isinstance(error, (RuntimeError, OSError)) and any(path in str(error) for path in _quiet_paths)


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
            raise FramecacheError(f"output folder does not exist: {self.path.parent}; create it or pass another --out")
        if self.path.is_dir():
            raise FramecacheError(f"{self.path} is a folder, not a feature cache file; pass another --out")
        if overwrite:
            self._remove_cache()
        if not self.path.exists():
            self._create_root()
        self._check_resumable()
        try:
            self.folder.mkdir(exist_ok=True)
        except PermissionError:
            raise FramecacheError(f"cannot write {self.folder}: permission denied; pass another path or fix its permissions") from None
        _remove_stale_temporaries(self.path)
        contents = _scan(self.path, self.provenance_hash, self.provenance)
        self._done = {video.path for video in contents.videos.values()}
        self.shards_closed = 0  # by this writer
        self._seq = 0
        self._tag = _owner_tag()
        self._shard: h5py.File | None = None
        self._shard_path: Path | None = None
        self._index: dict[str, dict] = {}

    # -- the root

    def _remove_cache(self) -> None:
        live = _live_writers(self.path)
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
        tmp = self.path.with_name(f"{self.path.name}.tmp-{_owner_tag()}")
        try:
            try:
                with h5py.File(tmp, "w", locking=False) as root:
                    attrs = root.attrs
                    attrs["schema_version"] = SCHEMA_VERSION
                    attrs["provenance"] = self.provenance.to_json()
                    attrs["provenance_hash"] = self.provenance_hash
                    for key in ("backbone", "weights", "feature_dim", "views", "framecache_version"):
                        attrs[key] = getattr(self.provenance, key)
                _fsync(tmp)
            except (PermissionError, OSError) as error:
                if isinstance(error, PermissionError) or getattr(error, "errno", None) == errno.EACCES or "ermission denied" in str(error):
                    raise FramecacheError(f"cannot write {self.path}: permission denied; pass another path or fix its permissions") from None
                raise FramecacheError(f"cannot create {self.path} ({_reason(error)}); the disk may be full: free some space and run again") from None
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
            _fsync(self.path.parent, directory=True)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _check_resumable(self) -> None:
        if not h5py.is_hdf5(self.path):
            raise FramecacheError(
                f"{self.path} exists and is not a readable framecache feature cache (not HDF5, or truncated); "
                "pass another --out, or move the file aside"
            )
        with _open_h5(self.path, "r") as root:
            try:
                version = _schema(root.attrs, self.path)
                stored_hash = str(root.attrs["provenance_hash"])
                stored = _read_provenance(root.attrs, self.path)
            except _DAMAGE_ERRORS as error:
                raise _damaged(self.path, error) from None
        if version == 1:
            raise _schema_1_refused(self.path)
        if stored_hash != self.provenance_hash:
            raise FramecacheError(
                f"{self.path} was extracted with other settings ({_differences(stored, self.provenance, 'cache', 'this run')}); "
                "its features would not match. Write to another OUT=, or pass --overwrite (OVERWRITE=1) to replace it"
            )

    # -- the open shard

    def _open_shard(self) -> h5py.File:
        if self._shard is None:
            self._shard_path = self.folder / f"{OPEN_PREFIX}{self._tag}-{self._seq}.h5"
            _quiet_h5py_errors_about(self._shard_path)  # a failed write discards it: no tracebacks as it goes
            try:
                self._shard = h5py.File(self._shard_path, "w-", locking=False)
                attrs = self._shard.attrs
                attrs["schema_version"] = SCHEMA_VERSION
                attrs["provenance"] = self.provenance.to_json()
                attrs["provenance_hash"] = self.provenance_hash
                self._shard.create_group("videos")
                self._shard.create_group("failed")
            except _WRITE_ERRORS as error:
                raise self._write_failed(error) from None
            self._opened_at = time.monotonic()
            self._bytes = 0
            self._index = {"videos": {}, "failed": {}}
        return self._shard

    def _write_failed(self, error: BaseException) -> FramecacheError:
        """Discard the open shard after a failed write; the closed ones are untouched."""
        lost = len(self._index.get("videos", {})) if self._shard is not None else 0
        shard = self._shard_path
        self._discard()
        code = getattr(error, "errno", None)
        reason = f"{os.strerror(code)}: {_reason(error)}" if isinstance(code, int) and code > 0 else _reason(error)
        return FramecacheError(
            f"writing {shard} failed ({reason}): the disk may be full (or a quota or file-size limit reached). "
            f"That shard ({lost} video(s) not yet closed) was discarded, its videos will be extracted again; the videos "
            "cached so far are kept: free some space and run the same command again to resume"
        )

    def _discard(self) -> None:
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
            with contextlib.suppress(OSError):
                self._shard_path.unlink()
        self._shard, self._index = None, {}

    def _full(self) -> bool:
        return (
            len(self._index["videos"]) + len(self._index["failed"]) >= self.shard_videos
            or self._bytes >= self.shard_bytes
            or time.monotonic() - self._opened_at >= self.shard_seconds
        )

    def close_shard(self) -> None:
        """Close the open shard: write its index, flush, fsync, rename it into place, fsync the folder."""
        if self._shard is None:
            return
        shard, index = self._shard, self._index
        final = self.folder / f"{_host()}-{os.getpid()}-{self._seq:05d}-{self._tag.rsplit('-', 1)[1]}.h5"
        try:
            videos = [[key, *row] for key, row in index["videos"].items()]
            failed = [[key, *row] for key, row in index["failed"].items()]
            shard.create_dataset("index", data=json.dumps({"videos": videos, "failed": failed}))
            shard.attrs["closed_at"] = time.time()
            shard.close()
            _fsync(self._shard_path)
            os.rename(self._shard_path, final)
        except _WRITE_ERRORS as error:
            raise self._write_failed(error) from None
        self._shard, self._index = None, {}
        self._seq += 1
        self.shards_closed += 1
        self._done.update(row[0] for row in index["videos"].values())
        with contextlib.suppress(OSError):  # the rename is done; this makes it survive a power cut
            _fsync(self.folder, directory=True)

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
    ) -> None:
        """Store one video's features, shape ``(views, num_frames, feature_dim)``; kept once its shard closes."""
        features = np.asarray(features)
        expected = (self.provenance.views, self.provenance.feature_dim)
        if features.ndim != 3 or (features.shape[0], features.shape[2]) != expected or features.shape[1] < 1:
            raise ValueError(f"features of {path} have shape {features.shape}, expected (views={expected[0]}, T>=1, {expected[1]})")
        features = features.astype(np.float16)
        key = video_id(path)
        handle = self._open_shard()
        try:
            videos, failed = handle["videos"], handle["failed"]
            if key in videos:
                del videos[key]
            if key in failed:
                del failed[key]
                self._index["failed"].pop(key, None)
            entry = videos.create_group(key)
            entry.create_dataset("features", data=features)
            row = [path, _text(label), _text(group), _text(split), int(features.shape[1]),
                   int(source_frames if source_frames is not None else features.shape[1]), float(source_fps or 0.0)]  # fmt: skip
            entry.attrs.update(dict(zip(("path", "label", "group", "split", "num_frames", "source_frames", "source_fps"), row)))
        except _WRITE_ERRORS as error:
            raise self._write_failed(error) from None
        self._index["videos"][key] = row
        self._bytes += features.nbytes
        if self._full():
            self.close_shard()

    def add_failure(self, path: str, label: str, reason: str, group: str | None = None, split: str | None = None) -> None:
        """Record a video that could not be read, with a reason a person understands (retried on resume)."""
        key = video_id(path)
        handle = self._open_shard()
        try:
            failed = handle["failed"]
            if key in failed:
                del failed[key]
            row = [path, _text(label), reason, _text(group), _text(split)]
            failed.create_group(key).attrs.update(dict(zip(("path", "label", "reason", "group", "split"), row)))
        except _WRITE_ERRORS as error:
            raise self._write_failed(error) from None
        self._index["failed"][key] = row
        if self._full():
            self.close_shard()

    def close(self) -> None:
        """Close the open shard (its videos are then kept)."""
        self.close_shard()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- reading


class FeatureCache:
    """Read-only view of a feature cache (schema 2, or 1).

    >>> with FeatureCache("features.h5") as cache:
    ...     for video in cache.videos:
    ...         features = cache.features(video.key)   # float16 (views, T, D)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.schema_version, self.provenance, self.provenance_hash, contents = _open_root(self.path)
        self._contents = contents
        self._by_key = contents.videos
        self.videos: list[VideoMeta] = sorted(contents.videos.values(), key=lambda video: video.path)
        self.failures: list[FailedVideo] = sorted(contents.failures.values(), key=lambda failure: failure.path)
        self.duplicates: int = contents.duplicates  # videos found in more than one shard, counted once
        self.shards: list[Path] = [shard.path for shard in contents.shards] if self.schema_version >= 2 else []
        self._reader = FeatureReader()

    @property
    def feature_dim(self) -> int:
        return int(self.provenance.feature_dim)

    @property
    def num_views(self) -> int:
        return int(self.provenance.views)

    @property
    def nbytes(self) -> int:
        """Bytes of the videos' features on disk (float16): what reading them all into memory takes."""
        return sum(video.num_frames for video in self.videos) * self.num_views * self.feature_dim * 2

    def features(self, key: str, view: int | None = None) -> np.ndarray:
        """One video's features: float16 ``(views, T, D)``, or ``(T, D)`` for one ``view``."""
        video = self._by_key.get(key)
        if video is None:
            raise KeyError(f"no video {key!r} in {self.path}")
        return self._reader.read(video, view)

    def labels(self) -> dict[str, int]:
        """Videos per label, over the cached (successful) videos."""
        counts: dict[str, int] = {}
        for video in self.videos:
            counts[video.label] = counts.get(video.label, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict:
        """Provenance plus counts: what ``make info`` prints."""
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "videos_ok": len(self.videos),
            "videos_failed": len(self.failures),
            "labels": self.labels(),
            "frames": sum(video.num_frames for video in self.videos),
            "views": self.num_views,
            "feature_dim": self.feature_dim,
            "nbytes": self.nbytes,
            "shards": len(self.shards),
            "open_shards": len(_open_shards(shards_folder(self.path))) if self.schema_version >= 2 else 0,
            "duplicates": self.duplicates,
            "backbone": self.provenance.backbone,
            "weights": self.provenance.weights,
            "provenance_hash": self.provenance_hash,
            "provenance": self.provenance.to_dict(),
            "failures": [{"path": failure.path, "reason": failure.reason} for failure in self.failures],
        }

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class FeatureReader:
    """Reads videos' features by their :class:`VideoMeta`, holding at most ``max_open`` files open.

    Files are opened lazily, in the process that reads: h5py handles do not
    survive ``fork``, so a reader can be handed to worker processes (it pickles
    without its handles). Reads both layouts: ``/videos/<id>`` (schema 2
    shards) and ``/videos/<xx>/<id>`` (schema 1). Stage two streams from
    caches larger than memory with it.
    """

    def __init__(self, max_open: int = 16):
        self.max_open = max_open
        self._handles: dict[str, h5py.File] = {}

    def read(self, video: VideoMeta, view: int | None = None) -> np.ndarray:
        """The video's features: float16 ``(views, T, D)``, or ``(T, D)`` for one ``view``."""
        handle = self._handle(video.file)
        try:
            videos = handle["videos"]
            entry = videos.get(video.key)
            dataset = (entry if entry is not None else videos[video.key[:2]][video.key])["features"]
            return dataset[view] if view is not None else dataset[()]
        except _DAMAGE_ERRORS as error:
            raise _damaged(Path(video.file), error) from None

    def _handle(self, file: str) -> h5py.File:
        handle = self._handles.pop(file, None)
        if handle is None or not handle.id.valid:
            if len(self._handles) >= self.max_open:  # close the least recently used
                oldest = next(iter(self._handles))
                self._handles.pop(oldest).close()
            handle = _open_h5(Path(file), "r")
        self._handles[file] = handle  # most recently used last
        return handle

    def close(self) -> None:
        for handle in self._handles.values():
            if handle.id.valid:
                handle.close()
        self._handles.clear()

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open, "_handles": {}}

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- merging and converting


@dataclass
class MergeSummary:
    """What :func:`merge_caches` did."""

    out: str
    shards_copied: int = 0
    shards_present: int = 0  # already in the target (merged before)
    videos_converted: int = 0  # from schema-1 caches
    videos: int = 0  # in the target afterwards, duplicates counted once
    duplicates: int = 0

    def line(self) -> str:
        return (
            f"{self.out}: {self.videos} videos; {self.shards_copied} shard(s) copied, {self.shards_present} already there, "
            f"{self.videos_converted} video(s) converted from schema 1; {self.duplicates} duplicate(s) counted once"
        )


def _same_file(first: Path, second: Path) -> bool:
    with contextlib.suppress(OSError):
        return first.resolve() == second.resolve() or (second.exists() and os.path.samefile(first, second))
    return False


def merge_caches(out: str | Path, caches: list[str | Path]) -> MergeSummary:
    """Bring caches made with the same settings into one, ``out`` (created if missing).

    The closed shards of schema-2 caches are copied as they are (merging twice
    copies nothing new); a schema-1 cache is converted: its videos are written
    into new shards, so ``merge_caches("new.h5", ["old.h5"])`` is the schema
    converter. A cache made with other settings is refused, naming the fields
    that differ. The same video in two caches is kept once when read.
    """
    out = Path(out)
    sources = []
    for cache in map(Path, caches):
        if _same_file(cache, out):
            raise FramecacheError(f"{cache} is the target of the merge itself; give the caches to merge into --out {out}")
        version, provenance, provenance_hash, contents = _open_root(cache)
        if version == 1:  # rewritten: it takes the current schema
            provenance = provenance.replace(schema_version=SCHEMA_VERSION)
            provenance_hash = provenance.hash
        sources.append((cache, version, provenance, provenance_hash, contents))
    if not sources:
        raise FramecacheError("give at least one cache to merge")
    if out.exists():
        version, target, target_hash, _ = _open_root(out)
        if version == 1:
            raise FramecacheError(
                f"{out} is a cache of schema version 1: merge into a new file instead, listing {out} among the caches "
                f"(framecache merge --out new.h5 {out} ...)"
            )
    else:
        _, _, target, target_hash, _ = sources[0]
    for cache, _, provenance, provenance_hash, _ in sources:
        if provenance_hash != target_hash:
            raise FramecacheError(
                f"{cache} was extracted with other settings than {out} ({_differences(provenance, target, str(cache), str(out))}); "
                "caches merge only when their features are alike: extract it again with the same settings"
            )
    summary = MergeSummary(str(out))
    writer = CacheWriter(out, target)  # creates the target if needed; checks it once more
    try:
        present = {shard.name for shard in _closed_shards(writer.folder)}
        for cache, version, _, _, contents in sources:
            if version == 1:
                summary.videos_converted += _convert_v1(writer, cache, contents)
                continue
            for shard in contents.shards:
                if shard.path.name in present:
                    summary.shards_present += 1
                    continue
                _copy_shard(shard.path, writer.folder)
                present.add(shard.path.name)
                summary.shards_copied += 1
    finally:
        writer.close()
    with FeatureCache(out) as merged:
        summary.videos, summary.duplicates = len(merged.videos), merged.duplicates
    return summary


def _copy_shard(shard: Path, folder: Path) -> None:
    """Copy a closed shard into ``folder`` as the writers write one: a temporary name, fsync, rename."""
    tmp = folder / f"{OPEN_PREFIX}{_owner_tag()}-copy.h5"
    try:
        shutil.copyfile(shard, tmp)
        _fsync(tmp)
        os.rename(tmp, folder / shard.name)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise FramecacheError(f"copying {shard} into {folder} failed ({_reason(error)}); the disk may be full: "
                              "free some space and run the same merge again") from None  # fmt: skip
    with contextlib.suppress(OSError):
        _fsync(folder, directory=True)


def _convert_v1(writer: CacheWriter, cache: Path, contents: _Contents) -> int:
    """Write a schema-1 cache's videos (those the target lacks) and failures into new shards."""
    (shard,) = contents.shards
    done = writer.done_paths()
    converted = 0
    with FeatureReader(max_open=1) as reader:
        for key, video in sorted(contents.videos.items(), key=lambda item: item[1].path):
            if video.path in done:
                continue
            extra = shard.extra[key]
            writer.add_video(video.path, video.label, reader.read(video), group=video.group, split=video.split,
                             source_frames=extra["source_frames"], source_fps=extra["source_fps"])  # fmt: skip
            converted += 1
    with _open_h5(cache, "r") as handle:
        failed = {key: dict(group.attrs) for key, group in handle["failed"].items()}
    for key in contents.failures:
        attrs = failed[key]
        if _optional(attrs["path"]) not in done:
            writer.add_failure(_optional(attrs["path"]), _optional(attrs["label"]), _optional(attrs["reason"]),
                               group=_optional(attrs.get("group")), split=_optional(attrs.get("split")))  # fmt: skip
    return converted
