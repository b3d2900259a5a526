"""Reading a cache: its root, the union of its closed shards, and the features of any video.

A cache is read by listing its shards folder, not through links in the root,
so that writers never touch a file a reader has open. Opening a cache reads
one :class:`~framecache.common.cache.layout.ShardRecord` per closed shard
and combines them: the same video in two shards (two machines extracting
the same CSV, or a rerun that brought its label up to date with the CSV) is
counted once, the copy in the shard closed last; a success in any shard wins
over a failure in another; of several failures, the latest is reported. A schema-1 cache (one file, ``/videos/<xx>/<id>``) is read into
the same record, from its videos' attributes (it has no index).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from framecache.common.cache.layout import (
    DAMAGE_ERRORS,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS_READ,
    ShardRecord,
    closed_shards,
    damaged,
    open_h5,
    open_shards,
    read_shard_record,
    shards_folder,
)
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance

CSV_FIELDS = ("label", "group", "split")  # what the CSV, the source of truth, decides about a cached video


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
    source_frames: int = 0  # the file's frames that decoded (sampling kept num_frames of them)
    source_fps: float = 0.0  # its frame rate (0: unknown)
    header_frames: int = 0  # the count its header states (0: none, or a cache made before it was recorded)

    def differs_from(self, row) -> list[str]:
        """The fields the CSV decides (:data:`CSV_FIELDS`) where ``row`` (a dataset row) says otherwise."""
        return [field for field in CSV_FIELDS if getattr(self, field) != getattr(row, field)]

    @property
    def frames_short(self) -> int:
        """Frames the header promised that did not decode (0 where it promised none, or all decoded)."""
        return max(0, self.header_frames - self.source_frames) if self.header_frames else 0


@dataclass
class FailedVideo:
    """A video that could not be read, and why."""

    path: str
    label: str
    reason: str


def _optional(value) -> str | None:
    value = value.decode() if isinstance(value, bytes) else value
    return None if value in ("", None) else str(value)


# -- the root


def read_root(path: Path) -> tuple[int, Provenance, str]:
    """Schema version, provenance and provenance hash of the cache ``path``; refuses what this version cannot read."""
    if path.is_dir():
        raise FramecacheError(f"{path} is a folder, not a feature cache file")
    with open_h5(path, "r") as root:
        attrs = root.attrs
        try:
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
            return version, read_provenance(attrs["provenance"], path), str(attrs["provenance_hash"])
        except DAMAGE_ERRORS as error:
            raise damaged(path, error) from None


def read_provenance(text: str, path: Path) -> Provenance:
    """A provenance as stored in ``path``, or an error naming that file."""
    try:
        return Provenance.from_json(text)
    except FramecacheError as error:
        raise FramecacheError(f"{path} is not a readable framecache feature cache: {error}") from None


def differences(theirs: Provenance, ours: Provenance, their_name: str, our_name: str) -> str:
    """The fields where two provenances differ, for an error message."""
    found = [f"{key}: {their_name} has {a!r}, {our_name} {b!r}" for key, a, b in theirs.differences(ours)]
    return "; ".join(found) or f"provenance hash: {their_name} has {theirs.hash[:16]}, {our_name} {ours.hash[:16]}"


# -- the shards, combined


@dataclass
class Contents:
    """A cache's records (shards in the order they closed) and their union, duplicates counted once."""

    records: list[ShardRecord]
    videos: dict[str, VideoMeta]
    failures: dict[str, FailedVideo]
    duplicates: int


def combine(records: list[ShardRecord]) -> Contents:
    """Union of the records: a video's latest copy (in the order shards were closed), successes over failures.

    Copies of a video made by one extraction have the same features; a later copy
    with other metadata is a rerun bringing the video's label, group or split up
    to date with the CSV.
    """
    records = sorted(records, key=lambda record: (record.closed_at, record.path.name))
    videos: dict[str, VideoMeta] = {}
    failures: dict[str, FailedVideo] = {}
    duplicates = 0
    for record in records:
        for key, row in record.videos.items():
            duplicates += key in videos
            videos[key] = VideoMeta(key, row["path"], row["label"], _optional(row["group"]), _optional(row["split"]),
                                    int(row["num_frames"]), str(record.path), int(row["source_frames"]),
                                    float(row["source_fps"]), int(row.get("header_frames", 0)))  # fmt: skip
        for key, row in record.failures.items():  # the latest failure of a video is kept
            failures[key] = FailedVideo(row["path"], row["label"], row["reason"])
    return Contents(records, videos, {key: failure for key, failure in failures.items() if key not in videos}, duplicates)


def scan(path: Path, root_hash: str, root_provenance: Provenance) -> Contents:
    """The contents of the closed shards of the cache ``path``; refuses a shard made with other settings."""
    records = []
    for shard in closed_shards(shards_folder(path)):
        record = read_shard_record(shard)
        if record.provenance_hash != root_hash:
            theirs = read_provenance(record.provenance, shard) if record.provenance else None
            detail = differences(theirs, root_provenance, "the shard", "the cache") if theirs else "no provenance"
            raise FramecacheError(
                f"{shard} holds features made with other settings than {path} ({detail}); move it out of "
                f"{shard.parent} (merge its own cache with `framecache merge` only if the settings agree)"
            )
        records.append(record)
    return combine(records)


def read_v1(path: Path, provenance_hash: str) -> Contents:
    """A schema-1 cache, one file: ``/videos/<xx>/<id>``; groups without attributes are interrupted writes."""
    record = ShardRecord(path, provenance_hash)
    with open_h5(path, "r") as handle:
        try:
            for bucket in handle["videos"].values():
                for key, group in bucket.items():
                    attrs = dict(group.attrs)
                    if "num_frames" not in attrs:
                        continue  # an interrupted write
                    record.videos[key] = {
                        "path": _optional(attrs["path"]), "label": _optional(attrs["label"]),
                        "group": attrs["group"], "split": attrs["split"], "num_frames": int(attrs["num_frames"]),
                        "source_frames": int(attrs.get("source_frames", attrs["num_frames"])),
                        "source_fps": float(attrs.get("source_fps", 0.0)),
                    }  # fmt: skip
            for key, group in handle["failed"].items():
                attrs = dict(group.attrs)
                record.failures[key] = {"path": _optional(attrs["path"]), "label": _optional(attrs["label"]), "reason": _optional(attrs["reason"]),
                                        "group": _optional(attrs.get("group")), "split": _optional(attrs.get("split"))}  # fmt: skip
        except DAMAGE_ERRORS as error:
            raise damaged(path, error) from None
    return combine([record])


def open_cache(path: Path) -> tuple[int, Provenance, str, Contents]:
    """Schema version, provenance, provenance hash and contents of the cache ``path``."""
    version, provenance, provenance_hash = read_root(path)
    contents = read_v1(path, provenance_hash) if version == 1 else scan(path, provenance_hash, provenance)
    return version, provenance, provenance_hash, contents


# -- the public readers


class FeatureCache:
    """Read-only view of a feature cache (schema 2, or 1).

    >>> with FeatureCache("features.h5") as cache:
    ...     for video in cache.videos:
    ...         features = cache.features(video.key)   # float16 (views, T, D)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.schema_version, self.provenance, self.provenance_hash, contents = open_cache(self.path)
        self._by_key = contents.videos
        self.videos: list[VideoMeta] = sorted(contents.videos.values(), key=lambda video: video.path)
        self.failures: list[FailedVideo] = sorted(contents.failures.values(), key=lambda failure: failure.path)
        self.duplicates: int = contents.duplicates  # videos found in more than one shard, counted once
        self.shards: list[Path] = [record.path for record in contents.records] if self.schema_version >= 2 else []
        self._reader = FeatureReader()

    @property
    def feature_dim(self) -> int:
        """Length of one frame's feature vector."""
        return int(self.provenance.feature_dim)

    @property
    def num_views(self) -> int:
        """Views per video (view 0 is the clean video)."""
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

    def short_videos(self) -> list[dict]:
        """The videos that decoded fewer frames than their header states (accepted within ``frame_shortfall``)."""
        return [{"path": video.path, "header_frames": video.header_frames, "frames_short": video.frames_short}
                for video in self.videos if video.frames_short]  # fmt: skip

    def summary(self) -> dict:
        """Provenance plus counts: what ``make info`` prints."""
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "videos_ok": len(self.videos),
            "videos_failed": len(self.failures),
            "labels": self.labels(),
            "frames": sum(video.num_frames for video in self.videos),
            "short_videos": self.short_videos(),
            "views": self.num_views,
            "feature_dim": self.feature_dim,
            "nbytes": self.nbytes,
            "shards": len(self.shards),
            "open_shards": len(open_shards(shards_folder(self.path))) if self.schema_version >= 2 else 0,
            "duplicates": self.duplicates,
            "backbone": self.provenance.backbone,
            "weights": self.provenance.weights,
            "provenance_hash": self.provenance_hash,
            "provenance": self.provenance.to_dict(),
            "failures": [{"path": failure.path, "reason": failure.reason} for failure in self.failures],
        }

    def close(self) -> None:
        """Close the files opened to read features."""
        self._reader.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _check_backed(dataset: h5py.Dataset, video: VideoMeta) -> None:
    """Refuse (as damage) features whose declared shape the stored bytes cannot back, before reading a byte of them:
    a file can declare millions of frames it does not hold, and reading them would fill memory with nothing."""
    if dataset.ndim != 3 or dataset.shape[1] != video.num_frames:
        raise ValueError(f"{video.path}'s features have shape {dataset.shape}, its record says {video.num_frames} frames")
    if dataset.compression is None and dataset.id.get_storage_size() < dataset.size * dataset.dtype.itemsize:
        raise ValueError(f"{video.path}'s features declare {dataset.shape} but the file stores only "
                         f"{dataset.id.get_storage_size()} bytes of them")  # fmt: skip


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

    def read(self, video: VideoMeta, view: int | None = None, frames: slice | None = None) -> np.ndarray:
        """The video's features: float16 ``(views, T, D)``, or ``(T, D)`` for one ``view``; ``frames``: only those."""
        handle = self._handle(video.file)
        try:
            videos = handle["videos"]
            entry = videos.get(video.key)
            dataset = (entry if entry is not None else videos[video.key[:2]][video.key])["features"]
            _check_backed(dataset, video)
            if frames is not None:
                return dataset[view, frames] if view is not None else dataset[:, frames]
            return dataset[view] if view is not None else dataset[()]
        except DAMAGE_ERRORS as error:
            raise damaged(Path(video.file), error) from None

    def _handle(self, file: str) -> h5py.File:
        handle = self._handles.pop(file, None)
        if handle is None or not handle.id.valid:
            if len(self._handles) >= self.max_open:  # close the least recently used
                oldest = next(iter(self._handles))
                self._handles.pop(oldest).close()
            handle = open_h5(Path(file), "r")
        self._handles[file] = handle  # most recently used last
        return handle

    def close(self) -> None:
        """Close every file this reader holds open."""
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
