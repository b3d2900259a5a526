"""Where a cache's files are, what they are called, and the one record of what a shard holds.

Writers, readers and merge all find files through this module, so the rules
that make a cache safe without locks live in one place: every writer writes
under a name only it uses (``.open-<host>-<pid>-<random>…``), a temporary
whose writer is gone may be deleted, and a closed shard is fsynced before its
rename and its folder after it.

A shard's metadata (its videos' and failures' attributes) is stored twice:
on each ``/videos/<id>`` and ``/failed/<id>`` group, for people reading the
file with h5py, and as one JSON value, ``/index``, for framecache. Both are
built from one :class:`ShardRecord`; framecache reads a shard only through
:func:`read_shard_record`, which reads the index: one value per shard instead
of seven attributes per video (about 20 times faster to open a cache).
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
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint

SCHEMA_VERSION = 2
SCHEMA_VERSIONS_READ = (1, 2)
SHARDS_SUFFIX = ".shards"  # study.h5 keeps its shards in study.h5.shards/
OPEN_PREFIX = ".open-"  # a shard being written: readers skip it
# A leftover open shard (of a killed writer) is deleted by the next writer once it is stale: its
# writer's process is gone (same host), or it has not been written for this long (any host: a
# live writer closes its shard after SHARD_SECONDS, so it is never this old).
STALE_OPEN_S = 24 * 3600.0

# The attributes of a video's group and of a failure's group, in the order they are written
# (and the order of the values after the key in a row of ``/index``).
# header_frames (the count the file's header states; 0: none) came after caches existed: rows without it read as 0.
VIDEO_FIELDS = ("path", "label", "group", "split", "num_frames", "source_frames", "source_fps", "header_frames")
FAILURE_FIELDS = ("path", "label", "reason", "group", "split")
FEATURE_DTYPE = np.float16  # features as stored: half the bytes of float32, well within a backbone's precision

# What h5py raises when a file's internal structure is damaged (e.g. a disk failure):
# turned into FramecacheError.
DAMAGE_ERRORS = (OSError, RuntimeError, KeyError, AttributeError, ValueError, TypeError)


# float16's smallest normal number. float32 -> float16 casts whose result is below it (subnormal) cost NumPy 2.4 about
# 15 times the CPU of the others on this project's CPUs (67 ns a value against 4); :func:`stored_features` makes them
# itself, with the same bits.
HALF_SMALLEST_NORMAL = np.float32(2.0**-14)
HALF_SUBNORMAL_STEP = np.float32(2.0**-24)  # the spacing of float16's subnormal numbers


def stored_features(features: np.ndarray) -> np.ndarray:
    """``features`` as the cache stores them (:data:`FEATURE_DTYPE`): cast once, and not copied when they are already.

    float32 features are cast bit for bit as ``astype(float16)`` casts them
    (round to nearest, ties to even), at the speed of a normal cast also where
    many are tiny (a backbone with random weights gives features around 1e-6).
    """
    features = np.asarray(features)
    if features.dtype != np.float32:
        return np.asarray(features, dtype=FEATURE_DTYPE)
    magnitude = np.abs(features)
    tiny = magnitude < HALF_SMALLEST_NORMAL
    if not tiny.any():
        return features.astype(FEATURE_DTYPE)
    normal_bits = np.where(tiny, np.float32(0), features).astype(FEATURE_DTYPE).view(np.uint16)
    # A subnormal float16 is m * 2**-24 with m < 1024: m is |x| / 2**-24 rounded half to even (np.rint), an exact
    # division by a power of two; m = 1024 is the bits of the smallest normal, where rounding up should land.
    tiny_bits = np.rint(np.fmin(magnitude, HALF_SMALLEST_NORMAL) / HALF_SUBNORMAL_STEP).astype(np.uint16)
    tiny_bits |= np.signbit(features).astype(np.uint16) << 15
    return np.where(tiny, tiny_bits, normal_bits).view(FEATURE_DTYPE)


def video_id(path: str) -> str:
    """The stable key of a video in the cache: derived from its path as written in the CSV."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


def shards_folder(path: str | Path) -> Path:
    """The folder holding the shards of the cache ``path``: ``study.h5`` → ``study.h5.shards``."""
    path = Path(path)
    return path.with_name(path.name + SHARDS_SUFFIX)


# -- the shard record


@dataclass
class ShardRecord:
    """What one shard holds besides features: written as its attributes and ``/index``, read from the index.

    ``videos`` maps a video's key to its :data:`VIDEO_FIELDS`, ``failures`` a
    failed video's key to its :data:`FAILURE_FIELDS`. A schema-1 cache is read
    into one record too (its ``path`` is the cache file).
    """

    path: Path
    provenance_hash: str = ""
    provenance: str = ""  # JSON, as stored; "" if the file has none
    closed_at: float = 0.0  # Unix time; 0 for a schema-1 cache
    videos: dict[str, dict] = field(default_factory=dict)
    failures: dict[str, dict] = field(default_factory=dict)

    def index_json(self) -> str:
        """The ``/index`` value: rows of the key and the fields' values, in field order."""
        videos = [[key, *(row[name] for name in VIDEO_FIELDS)] for key, row in self.videos.items()]
        failed = [[key, *(row[name] for name in FAILURE_FIELDS)] for key, row in self.failures.items()]
        return json.dumps({"videos": videos, "failed": failed})


def read_shard_record(path: Path) -> ShardRecord:
    """Read a closed shard's record: its provenance and ``closed_at`` attributes and its ``/index``."""
    try:
        handle = h5py.File(path, "r", locking=False)
    except PermissionError:
        raise FramecacheError(f"cannot read {path}: permission denied; fix its permissions") from None
    except OSError as error:
        raise damaged(path, error) from None
    with handle:
        try:
            attrs = handle.attrs
            index = json.loads(handle["index"][()])
            if set(handle["videos"]) != {row[0] for row in index["videos"]}:  # reads the group's own index
                raise ValueError("its index and its videos disagree")
            return ShardRecord(
                path=path,
                provenance_hash=str(attrs.get("provenance_hash", "")),
                provenance=str(attrs.get("provenance", "")),
                closed_at=float(attrs.get("closed_at", 0.0)),
                videos={row[0]: dict(zip(VIDEO_FIELDS, row[1:])) for row in index["videos"]},
                failures={row[0]: dict(zip(FAILURE_FIELDS, row[1:])) for row in index["failed"]},
            )
        except DAMAGE_ERRORS as error:
            raise damaged(path, error) from None


# -- opening files, and saying what went wrong


def error_reason(error: BaseException) -> str:
    """The first line of an error's message (h5py's go on for lines), or its type's name."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


LOW_SPACE_BYTES = 256 << 20  # a folder with less free space than this may well have run out during a write
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_failure_cause(error: BaseException, folder: Path) -> tuple[str, str]:
    """Why a write may have failed and what to do, in words: a full disk only where the error or the folder's free
    space says so (an HDF5 error is not a full disk)."""
    free = None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder).free
    if getattr(error, "errno", None) in SPACE_ERRNOS or (free is not None and free < LOW_SPACE_BYTES):
        return "the disk may be full (or a quota or file-size limit reached)", "free some space and run the same command again to resume"
    space = f" ({free / 1e9:.1f} GB free)" if free is not None else ""
    return f"not for want of space{space}", "run the same command again to resume; if it fails the same way, report it with this message"


def damaged(path: Path, error: BaseException) -> FramecacheError:
    """The error for a cache file whose contents cannot be read, saying what to do about it."""
    if path.parent.name.endswith(SHARDS_SUFFIX):
        what = ("A shard is complete when it gets its name, so the disk failed or the file was changed by hand; "
                "move it out of the shards folder (its videos only are lost) and run the extraction again to redo them")  # fmt: skip
    else:
        what = "The disk may have failed, or the file was changed by hand; move it aside and extract again"
    return FramecacheError(f"{path} is damaged: its contents cannot be read ({error_reason(error)}). {what}")


def open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file without HDF5's file locks (every file has one writer), errors as FramecacheError."""
    action = "read" if mode == "r" else "write"
    if path.exists() and not path.is_file():  # a folder, a FIFO (which would block the read forever), a device
        raise FramecacheError(f"{path} is not a regular file, so not a feature cache; pass the .h5 file extraction wrote")
    try:
        return h5py.File(path, mode, locking=False)
    except PermissionError:
        raise FramecacheError(f"cannot {action} {path}: permission denied; pass another path or fix its permissions") from None
    except OSError as error:
        if mode == "r" and not path.exists():
            raise FramecacheError(f"feature cache not found: {path}; run `{command_hint('extract')}` first") from None
        if getattr(error, "errno", None) == errno.EACCES:
            raise FramecacheError(f"cannot {action} {path}: permission denied; pass another path or fix its permissions") from None
        raise FramecacheError(
            f"{path} is not a readable framecache feature cache (HDF5 says: {error_reason(error)}); "
            "it may be truncated or another kind of file: pass another path, or move it aside and extract again"
        ) from None


def fsync(path: Path, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to disk; a folder that cannot be fsynced is fine."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if not directory or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


# -- names, and what is safe to delete


def host() -> str:
    """This machine's name as written in file names: no "-", so that names split on it."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() or "host")[:64]


def owner_tag() -> str:
    """``<host>-<pid>-<random>``: unique to this writer; the pid and host say whether it still lives."""
    return f"{host()}-{os.getpid()}-{secrets.token_hex(4)}"


def process_alive(pid: int) -> bool:
    """Whether the process ``pid`` of this machine runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def is_stale(path: Path, tag: str) -> bool:
    """Whether a temporary file named with :func:`owner_tag` ``tag`` belongs to a writer that is gone."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_OPEN_S:
        return True
    owner_host, pid = ([*tag.split("-"), ""])[:2]  # hosts are written without "-" (see host)
    if owner_host == host() and pid.isdigit():
        return int(pid) != os.getpid() and not process_alive(int(pid))
    return False


def open_shards(folder: Path) -> list[Path]:
    """Shards being written, or left by killed writers."""
    return sorted(folder.glob(OPEN_PREFIX + "*")) if folder.is_dir() else []


def closed_shards(folder: Path) -> list[Path]:
    """Closed shards, by name (``.open-*`` and other hidden files are not shards)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix == ".h5" and not path.name.startswith(".") and path.is_file())


def _open_shard_tag(shard: Path) -> str:
    return shard.name[len(OPEN_PREFIX) :].removesuffix(".h5")


def remove_stale_temporaries(path: Path) -> None:
    """Delete the open shards and root temporaries of the cache ``path`` whose writers are gone (never a live one's)."""
    candidates = [(shard, _open_shard_tag(shard)) for shard in open_shards(shards_folder(path))]
    prefix = f"{path.name}.tmp-"
    candidates += [(tmp, tmp.name[len(prefix) :]) for tmp in path.parent.glob(prefix + "*")]
    for candidate, tag in candidates:
        if is_stale(candidate, tag):
            with contextlib.suppress(OSError):
                candidate.unlink()


def live_writers(path: Path) -> list[Path]:
    """The open shards of the cache ``path`` whose writers may still be writing."""
    return [shard for shard in open_shards(shards_folder(path)) if not is_stale(shard, _open_shard_tag(shard))]
