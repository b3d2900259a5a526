"""The feature cache: one HDF5 file, the contract between the two stages.

This module is the only code that opens the file. Layout (schema version 1)::

    /                       attrs: schema_version, provenance (JSON), provenance_hash,
                                   backbone, weights, feature_dim, views, framecache_version
    /videos/<xx>/<id>       one group per finished video (<id>: 16 hex chars of the
                            SHA-1 of its CSV path, <xx> its first two, to keep groups small)
        features            float16 (views, num_frames, feature_dim); view 0 is the clean video
        attrs               path, label, group, split, num_frames, source_frames, source_fps
    /failed/<id>            one group per video that could not be read
        attrs               path, label, group, split, reason

Every video's sequence has ``num_frames`` valid steps; readers build a mask
from that when they pad sequences to a common length.

Writes are committed one video at a time and flushed, and a video's
attributes are written after its features, so a group without them is an
interrupted write that the next writer removes. One process writes at a time:
HDF5 locks the file, and a second writer is refused.

HDF5 updates its metadata in place, so a write that fails half-way (disk
full, quota, file-size limit) leaves a file that no longer opens. Before each
commit the writer therefore reserves the space the commit needs on disk
(``posix_fallocate``, with head-room for metadata): when that fails, nothing
has been written and the cache keeps every video committed before.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from framecache import __version__
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance

SCHEMA_VERSION = 1
# Disk space reserved before each commit on top of the features' own bytes: HDF5
# metadata (object headers, B-tree nodes, a group's name heap that grows by
# doubling) of one commit stays far below this.
RESERVE_BYTES = 4 << 20


def video_id(path: str) -> str:
    """The stable key of a video in the cache: derived from its path as written in the CSV."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


@dataclass
class VideoMeta:
    """What the cache knows about one video besides its features."""

    key: str
    path: str
    label: str
    group: str | None
    split: str | None
    num_frames: int
    file: str = ""  # the HDF5 file holding its features (read them with FeatureReader)


@dataclass
class FailedVideo:
    path: str
    label: str
    reason: str


# What h5py raises when a file's internal structure is damaged (e.g. its writer was
# killed with SIGKILL in the middle of a commit): turned into FramecacheError.
_DAMAGE_ERRORS = (OSError, RuntimeError, KeyError, AttributeError, ValueError, TypeError)


def _damaged(path: Path, error: BaseException) -> FramecacheError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return FramecacheError(
        f"{path} is damaged: its contents cannot be read ({reason}). This happens when the process writing it "
        "was killed with SIGKILL in the middle of a commit, or the disk failed; move it aside and extract again"
    )


def _text(value: str | None) -> str:
    return "" if value is None else str(value)


def _optional(value) -> str | None:
    value = value.decode() if isinstance(value, bytes) else value
    return None if value in ("", None) else str(value)


def _open_h5(path: Path, mode: str, lock_timeout: float = 0.0) -> h5py.File:
    """Open an HDF5 file, turning lock and format errors into FramecacheError."""
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            return h5py.File(path, mode)
        except BlockingIOError:
            locked = True
        except PermissionError:
            action = "read" if mode == "r" else "write"
            raise FramecacheError(f"cannot {action} {path}: permission denied; pass another path or fix its permissions") from None
        except OSError as error:
            message = str(error)
            # Not just "lock" in the message: a truncated file's error names "sblock" (the superblock).
            locked = "unable to lock file" in message.lower() or getattr(error, "errno", None) == errno.EAGAIN
            if not locked:
                if mode == "r" and not path.exists():
                    raise FramecacheError(f"feature cache not found: {path}; run `make features` first") from None
                raise FramecacheError(
                    f"{path} is not a readable framecache feature cache (HDF5 says: {message.splitlines()[0]}); "
                    "it may be truncated or another kind of file: pass another path, or move it aside and extract again"
                ) from None
        if time.monotonic() >= deadline:
            raise FramecacheError(
                f"{path} is being written by another process (the file is locked); "
                "wait for that extraction to finish, or write to another --out"
            )
        time.sleep(0.5)


def _check_schema(handle: h5py.File, path: Path) -> None:
    version = handle.attrs.get("schema_version")
    if version is None or "provenance" not in handle.attrs:
        raise FramecacheError(f"{path} is an HDF5 file but not a framecache feature cache (no schema_version/provenance)")
    if int(version) != SCHEMA_VERSION:
        raise FramecacheError(
            f"{path} uses cache schema version {int(version)}, this framecache reads version {SCHEMA_VERSION}; "
            "extract again into a new file"
        )


def _read_provenance(handle: h5py.File, path: Path) -> Provenance:
    try:
        return Provenance.from_json(handle.attrs["provenance"])
    except FramecacheError as error:
        raise FramecacheError(f"{path} is not a readable framecache feature cache: {error}") from None


class CacheWriter:
    """Appends videos to a feature cache; resumes an existing one with the same provenance.

    >>> with CacheWriter("features.h5", provenance) as cache:
    ...     todo = [p for p in paths if p not in cache.done_paths()]
    """

    def __init__(self, path: str | Path, provenance: Provenance, overwrite: bool = False, lock_timeout: float = 10.0):
        if not isinstance(provenance, Provenance):
            raise TypeError(f"provenance must be a framecache.common.provenance.Provenance, got {type(provenance).__name__}")
        self.path = Path(path)
        self.provenance = provenance.replace(framecache_version=__version__)
        self.provenance_hash = self.provenance.hash
        if not self.path.parent.is_dir():
            raise FramecacheError(f"output folder does not exist: {self.path.parent}; create it or pass another --out")
        if overwrite and self.path.exists():
            self._check_not_locked(lock_timeout)
            self.path.unlink()
        exists = self.path.exists()
        if exists and (self.path.is_dir() or not h5py.is_hdf5(self.path)):
            raise FramecacheError(
                f"{self.path} exists and is not a readable framecache feature cache (not HDF5, or truncated); "
                "pass another --out, or move the file aside"
            )
        self.handle = _open_h5(self.path, "a" if exists else "w", lock_timeout)
        try:
            if exists:
                try:
                    self._check_resumable()
                    self._drop_interrupted_writes()
                except _DAMAGE_ERRORS as error:
                    raise _damaged(self.path, error) from None
            else:
                self._initialise()
        except BaseException:
            self.handle.close()
            raise

    def _check_not_locked(self, lock_timeout: float) -> None:
        _open_h5(self.path, "a", lock_timeout).close()

    def _initialise(self) -> None:
        attrs = self.handle.attrs
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["provenance"] = self.provenance.to_json()
        attrs["provenance_hash"] = self.provenance_hash
        for key in ("backbone", "weights", "feature_dim", "views", "framecache_version"):
            attrs[key] = getattr(self.provenance, key)
        self.handle.require_group("videos")
        self.handle.require_group("failed")
        self.handle.flush()

    def _check_resumable(self) -> None:
        _check_schema(self.handle, self.path)
        if self.handle.attrs["provenance_hash"] == self.provenance_hash:
            return
        stored = _read_provenance(self.handle, self.path)
        differences = [
            f"{key}: cache has {cached!r}, this run {ours!r}" for key, cached, ours in stored.differences(self.provenance)
        ] or [f"provenance hash: cache has {str(self.handle.attrs['provenance_hash'])[:16]}, this run {self.provenance_hash[:16]}"]
        raise FramecacheError(
            f"{self.path} was extracted with other settings ({'; '.join(differences)}); "
            "its features would not match. Write to another OUT=, or pass --overwrite (OVERWRITE=1) to replace it"
        )

    def _drop_interrupted_writes(self) -> None:
        """Remove video groups whose write was cut off (no attributes yet)."""
        for shard in self.handle["videos"].values():
            for key in [key for key, group in shard.items() if "num_frames" not in group.attrs]:
                del shard[key]
        self.handle.flush()

    def _reserve(self, nbytes: int) -> None:
        """Make sure the next commit fits on disk before HDF5 writes any of it.

        Allocates ``nbytes`` plus :data:`RESERVE_BYTES` past the end of the
        data HDF5 has allocated (HDF5 ignores that tail; :meth:`close` gives it
        back, and a file left longer by a kill still opens).
        Raises FramecacheError, with nothing written, when the disk is full, a
        quota or the process's file-size limit is reached. File systems
        without ``posix_fallocate`` support only get the file-size-limit check.
        """
        used = self.handle.id.get_filesize()
        end = used + nbytes + RESERVE_BYTES
        try:
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            if limit != resource.RLIM_INFINITY and end > limit:
                raise OSError(errno.EFBIG, f"the file-size limit of this process ({limit} bytes) would be passed")
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(self.handle.id.get_vfd_handle(), used, end - used)
                except OSError as error:
                    if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        return  # not supported by this file system: write without the guarantee
                    raise
        except OSError as error:
            raise FramecacheError(
                f"no room to add the next video to {self.path}: {error.strerror}; the disk may be full "
                "(or a quota or file-size limit reached). Nothing of that video was written and the videos "
                "cached so far are kept: free some space and run the same command again to resume"
            ) from None

    def _write_failed(self, error: Exception) -> FramecacheError:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return FramecacheError(
            f"writing {self.path} failed ({reason}); the disk may be full or failing, and the file may be "
            "damaged: check it with `python -m extract.info`, free some space and run the same command again"
        )

    def done_paths(self) -> set[str]:
        """CSV paths of the videos already cached (these are skipped on resume)."""
        try:
            return {_optional(group.attrs["path"]) for shard in self.handle["videos"].values() for group in shard.values()}
        except _DAMAGE_ERRORS as error:
            raise _damaged(self.path, error) from None

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
        """Store one video's features, shape ``(views, num_frames, feature_dim)``, and commit."""
        features = np.asarray(features)
        expected = (self.provenance.views, self.provenance.feature_dim)
        if features.ndim != 3 or (features.shape[0], features.shape[2]) != expected or features.shape[1] < 1:
            raise ValueError(f"features of {path} have shape {features.shape}, expected (views={expected[0]}, T>=1, {expected[1]})")
        features = features.astype(np.float16)
        self._reserve(features.nbytes)
        key = video_id(path)
        try:
            shard = self.handle["videos"].require_group(key[:2])
            if key in shard:
                del shard[key]
            entry = shard.create_group(key)
            entry.create_dataset("features", data=features)
            failed = self.handle["failed"]
            if key in failed:
                del failed[key]
            attrs = entry.attrs  # written last: their presence marks a complete video
            attrs["label"] = _text(label)
            attrs["group"] = _text(group)
            attrs["split"] = _text(split)
            attrs["source_frames"] = int(source_frames if source_frames is not None else features.shape[1])
            attrs["source_fps"] = float(source_fps or 0.0)
            attrs["path"] = path
            attrs["num_frames"] = int(features.shape[1])
            self.handle.flush()
        except (OSError, RuntimeError) as error:  # h5py raises both for failed writes
            raise self._write_failed(error) from None

    def add_failure(self, path: str, label: str, reason: str, group: str | None = None, split: str | None = None) -> None:
        """Record a video that could not be read, with a reason a person understands, and commit."""
        self._reserve(0)
        key = video_id(path)
        try:
            failed = self.handle["failed"]
            if key in failed:
                del failed[key]
            entry = failed.create_group(key)
            entry.attrs.update({"path": path, "label": _text(label), "group": _text(group), "split": _text(split), "reason": reason})
            self.handle.flush()
        except (OSError, RuntimeError) as error:
            raise self._write_failed(error) from None

    def close(self) -> None:
        if self.handle.id.valid:
            with contextlib.suppress(OSError):  # give back the unused reservation while the file is still locked
                fd, used = self.handle.id.get_vfd_handle(), self.handle.id.get_filesize()
                if os.fstat(fd).st_size > used:
                    os.ftruncate(fd, used)
            try:
                self.handle.close()
            except (OSError, RuntimeError) as error:  # HDF5 writes what it still holds
                raise self._write_failed(error) from None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class FeatureCache:
    """Read-only view of a feature cache.

    >>> with FeatureCache("features.h5") as cache:
    ...     for video in cache.videos:
    ...         features = cache.features(video.key)   # float16 (views, T, D)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise FramecacheError(f"{self.path} is a folder, not a feature cache file")
        self.handle = _open_h5(self.path, "r")
        try:
            _check_schema(self.handle, self.path)
            self.provenance = _read_provenance(self.handle, self.path)
            self.provenance_hash: str = str(self.handle.attrs["provenance_hash"])
            try:
                self.videos: list[VideoMeta] = self._read_videos()
                self.failures: list[FailedVideo] = self._read_failures()
            except _DAMAGE_ERRORS as error:
                raise _damaged(self.path, error) from None
        except BaseException:
            self.handle.close()
            raise

    def _read_videos(self) -> list[VideoMeta]:
        videos = []
        for shard in self.handle["videos"].values():
            for key, group in shard.items():
                attrs = dict(group.attrs)
                if "num_frames" not in attrs:
                    continue  # an interrupted write; the next extraction removes it
                videos.append(
                    VideoMeta(
                        key=key,
                        path=_optional(attrs["path"]),
                        label=_optional(attrs["label"]),
                        group=_optional(attrs["group"]),
                        split=_optional(attrs["split"]),
                        num_frames=int(attrs["num_frames"]),
                        file=str(self.path),
                    )
                )
        return sorted(videos, key=lambda video: video.path)

    def _read_failures(self) -> list[FailedVideo]:
        failures = [
            FailedVideo(_optional(group.attrs["path"]), _optional(group.attrs["label"]), _optional(group.attrs["reason"]))
            for group in self.handle["failed"].values()
        ]
        return sorted(failures, key=lambda failure: failure.path)

    @property
    def feature_dim(self) -> int:
        return int(self.provenance.feature_dim)

    @property
    def num_views(self) -> int:
        return int(self.provenance.views)

    def features(self, key: str, view: int | None = None) -> np.ndarray:
        """One video's features: float16 ``(views, T, D)``, or ``(T, D)`` for one ``view``."""
        try:
            dataset = self.handle["videos"][key[:2]][key]["features"]
            return dataset[view] if view is not None else dataset[()]
        except _DAMAGE_ERRORS as error:
            if key not in {video.key for video in self.videos}:
                raise KeyError(f"no video {key!r} in {self.path}") from None
            raise _damaged(self.path, error) from None

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
            "schema_version": SCHEMA_VERSION,
            "videos_ok": len(self.videos),
            "videos_failed": len(self.failures),
            "labels": self.labels(),
            "frames": sum(video.num_frames for video in self.videos),
            "views": self.num_views,
            "feature_dim": self.feature_dim,
            "backbone": self.provenance.backbone,
            "weights": self.provenance.weights,
            "provenance_hash": self.provenance_hash,
            "provenance": self.provenance.to_dict(),
            "failures": [{"path": failure.path, "reason": failure.reason} for failure in self.failures],
        }

    def close(self) -> None:
        if self.handle.id.valid:
            self.handle.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class FeatureReader:
    """Reads videos' features by their :class:`VideoMeta`, holding at most ``max_open`` files open.

    Files are opened lazily, in the process that reads: h5py handles do not
    survive ``fork``, so a reader can be handed to worker processes (it pickles
    without its handles). Stage two streams from caches larger than memory with it.
    """

    def __init__(self, max_open: int = 16):
        self.max_open = max_open
        self._handles: dict[str, h5py.File] = {}

    def read(self, video: VideoMeta, view: int | None = None) -> np.ndarray:
        """The video's features: float16 ``(views, T, D)``, or ``(T, D)`` for one ``view``."""
        handle = self._handle(video.file)
        try:
            dataset = handle["videos"][video.key[:2]][video.key]["features"]
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
