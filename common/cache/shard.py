"""One shard being written: its file under a temporary name, what it holds, and the videos still streaming into it.

A video reaches its shard in one of two ways: whole
(:meth:`OpenShard.write_video`, a contiguous dataset, as a schema-1 conversion or a
test writes it), or **streamed**, its features appended piece by piece as the
backbone makes them (:meth:`OpenShard.append`, then :meth:`OpenShard.finish`).
A streamed video's ``features`` dataset is chunked, ``(1, CHUNK_FRAMES,
feature_dim)``, and grows along its frames (``maxshape (views, None,
feature_dim)``); once finished it reads exactly as a whole one: float16
``(views, T, feature_dim)``, the same attributes, the same row in ``/index``.

Until :meth:`OpenShard.finish`, a streamed video is a group without
attributes and is not in the shard's record; :meth:`OpenShard.seal` deletes
every such group first, so a closed shard never holds part of a video.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import h5py
import numpy as np

from framecache.common.cache.layout import FAILURE_FIELDS, FEATURE_DTYPE, SCHEMA_VERSION, VIDEO_FIELDS, ShardRecord
from framecache.common.provenance import Provenance

# A streamed video's features are stored in chunks of this many frames of one view (with 1280-d
# features, 20 KB). HDF5 stores a view's last chunk whole, so a video takes up to this many frames
# per view more than contiguous storage: about 10 % more for the demo's 1.5-second clips, 1 to 3 %
# for clips of 5 to 20 seconds. Reading stays far faster than training needs (1.5 GB/s from the
# page cache, against 6.5 GB/s contiguous), and a one-hour video is a few thousand chunks per view.
CHUNK_FRAMES = 8


def _text(value: str | None) -> str:
    return "" if value is None else str(value)


def video_row(path: str, label: str, group: str | None, split: str | None, num_frames: int,
              source_frames: int | None, source_fps: float | None, header_frames: int | None) -> dict:  # fmt: skip
    """A video's :data:`~framecache.common.cache.layout.VIDEO_FIELDS` (``source_frames`` defaults to ``num_frames``)."""
    return dict(zip(VIDEO_FIELDS, (path, _text(label), _text(group), _text(split), int(num_frames),
                                   int(source_frames if source_frames is not None else num_frames),
                                   float(source_fps or 0.0), int(header_frames or 0))))  # fmt: skip


def failure_row(path: str, label: str, reason: str, group: str | None, split: str | None) -> dict:
    """A failed video's :data:`~framecache.common.cache.layout.FAILURE_FIELDS`."""
    return dict(zip(FAILURE_FIELDS, (path, _text(label), reason, _text(group), _text(split))))


def new_shard_file(path: Path, provenance: Provenance) -> h5py.File:
    """Create an open shard: ``h5py.File(path, "w-", locking=False)``, but with HDF5's sieve buffer and chunk cache off.

    With either, HDF5 keeps small writes in memory and writes them when the
    dataset is closed; a write that fails then (disk full) fails as h5py frees
    the dataset, where h5py can only print the error, and it leaves HDF5 in a
    state where closing the file may crash the process. Without them, every
    feature array (a whole video's, or a streamed piece's chunks) is written in
    the call that writes it, which raises if that fails. The file is the same,
    byte for byte.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)  # h5py's default
    fapl.set_file_locking(False, ignore_when_disabled=False)
    fapl.set_sieve_buf_size(0)
    mdc, slots, _, w0 = fapl.get_cache()
    fapl.set_cache(mdc, slots, 0, w0)  # no raw-data chunk cache: a chunk is written when its piece is
    shard = h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_EXCL, fapl=fapl))
    attrs = shard.attrs
    attrs["schema_version"] = SCHEMA_VERSION
    attrs["provenance"] = provenance.to_json()
    attrs["provenance_hash"] = provenance.hash
    shard.create_group("videos")
    shard.create_group("failed")
    return shard


class OpenShard:
    """A shard being written by one :class:`~framecache.common.cache.writer.CacheWriter`.

    ``record`` holds its finished videos and failures; ``streaming`` the videos
    begun in it and not finished, with the frames added so far per view. Its
    h5py objects live only inside the calls that write: only ``file`` outlives them.
    """

    def __init__(self, path: Path, seq: int, provenance_hash: str):
        self.path, self.seq = path, seq
        self.record = ShardRecord(path, provenance_hash)
        self.file: h5py.File | None = None  # set by create()
        self.opened_at = time.monotonic()
        self.bytes = 0  # of features written
        self.streaming: dict[str, list[int]] = {}  # video key -> frames added so far, per view

    def create(self, provenance: Provenance) -> None:
        """Create the file (under the temporary name ``path``)."""
        self.file = new_shard_file(self.path, provenance)

    def count(self) -> int:
        """Videos in it: finished, failed and streaming."""
        return len(self.record.videos) + len(self.record.failures) + len(self.streaming)

    def lost(self) -> int:
        """Videos it would lose if discarded now: finished and streaming."""
        return len(self.record.videos) + len(self.streaming)

    def _clear(self, key: str) -> None:
        """Remove what the shard holds of video ``key`` (a video written again replaces the earlier copy)."""
        videos, failed = self.file["videos"], self.file["failed"]
        if key in videos:
            del videos[key]
        if key in failed:
            del failed[key]
        self.record.videos.pop(key, None)
        self.record.failures.pop(key, None)
        self.streaming.pop(key, None)

    def write_video(self, key: str, row: dict, features: np.ndarray) -> None:
        """A whole video, float16 ``(views, T, feature_dim)``: one contiguous dataset."""
        self._clear(key)
        entry = self.file["videos"].create_group(key)
        entry.create_dataset("features", data=features)
        entry.attrs.update(row)
        self.record.videos[key] = row
        self.bytes += features.nbytes

    def append(self, key: str, views: int, view: int, offset: int, features: np.ndarray) -> None:
        """Frames ``offset...`` of view ``view`` of the streamed video ``key``: float16 ``(n, feature_dim)``.

        The caller checks that they follow the frames added before; the first piece of a video begins it.
        """
        if key not in self.streaming:
            self._clear(key)
            dim = features.shape[1]
            self.file["videos"].create_group(key).create_dataset(
                "features", shape=(views, 0, dim), maxshape=(views, None, dim), chunks=(1, CHUNK_FRAMES, dim), dtype=FEATURE_DTYPE)
            self.streaming[key] = [0] * views
        dataset = self.file["videos"][key]["features"]
        end = offset + len(features)
        if end > dataset.shape[1]:
            dataset.resize(end, axis=1)
        dataset[view, offset:end] = features
        self.streaming[key][view] = end
        self.bytes += features.nbytes

    def finish(self, key: str, row: dict) -> None:
        """The streamed video ``key`` is whole: give it its attributes and its row in the record."""
        self.file["videos"][key].attrs.update(row)
        del self.streaming[key]
        self.record.videos[key] = row

    def drop(self, key: str) -> None:
        """Delete what was streamed of the video ``key`` (if anything)."""
        if key in self.streaming:
            del self.file["videos"][key]
            del self.streaming[key]

    def write_failure(self, key: str, row: dict) -> None:
        """A video that failed; what was streamed of it is deleted (a finished copy here stays: a success wins)."""
        self.drop(key)
        failed = self.file["failed"]
        if key in failed:
            del failed[key]
        failed.create_group(key).attrs.update(row)
        self.record.failures[key] = row

    def seal(self) -> None:
        """Delete the videos still streaming, write the index and ``closed_at``, close the file."""
        for key in list(self.streaming):
            self.drop(key)
        self.file.create_dataset("index", data=self.record.index_json())
        self.file.attrs["closed_at"] = time.time()
        self.file.close()

    def discard(self) -> None:
        """Close the file (its writes failed) and delete it; errors are ignored: it is being given up."""
        with contextlib.suppress(Exception):
            if self.file is not None:
                self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
