"""The feature cache: a root file and its shard files, the contract between the two stages.

This package is the only code that opens these files. Layout (schema version 2)::

    study.h5                the root, the file the user names: written once, atomically, never rewritten
        attrs               schema_version, provenance (JSON), provenance_hash,
                            backbone, weights, feature_dim, views, framecache_version
    study.h5.shards/        the shards (SHARDS_SUFFIX), found by listing this folder
        <host>-<pid>-<seq>-<random>.h5      a closed shard: complete and never written again
            attrs           schema_version, provenance (JSON), provenance_hash, closed_at (Unix time)
            /videos/<id>    one group per video (<id>: 16 hex digits of the SHA-1 of its CSV path)
                features    float16 (views, num_frames, feature_dim); view 0 is the clean video
                            (contiguous, or chunked along the frames when written as they were made)
                attrs       path, label, group, split, num_frames, source_frames, source_fps
            /failed/<id>    attrs path, label, group, split, reason: a video that could not be read
            /index          JSON of the above attributes, so that opening a cache reads one value per shard
        .open-<host>-<pid>-<random>.h5      a shard being written (or left by a killed writer): never read

Every video's sequence has ``num_frames`` valid steps; readers build a mask
from that when they pad sequences to a common length. Schema version 1 (one
file, ``/videos/<xx>/<id>``, ``<xx>`` the id's first two digits) is still
read; :func:`merge_caches` converts it.

One module per job:

- :mod:`.layout`: file names and places, what is safe to delete, and the one
  record of a shard's metadata (:class:`~.layout.ShardRecord`) with the one
  function that reads it;
- :mod:`.writer`: :class:`CacheWriter`, the root and the shards it writes;
- :mod:`.shard`: one shard being written, and the videos streaming into it;
- :mod:`.reader`: :class:`FeatureCache` and :class:`FeatureReader`, a cache's
  shards combined (and schema 1);
- :mod:`.merge`: :func:`merge_caches`, joining caches and converting schema 1.
"""

from framecache.common.cache.layout import (
    OPEN_PREFIX,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS_READ,
    SHARDS_SUFFIX,
    STALE_OPEN_S,
    shards_folder,
    stored_features,
    video_id,
)
from framecache.common.cache.merge import MergeSummary, merge_caches
from framecache.common.cache.reader import FailedVideo, FeatureCache, FeatureReader, VideoMeta
from framecache.common.cache.writer import SHARD_BYTES, SHARD_SECONDS, SHARD_VIDEOS, CacheWriter

__all__ = [
    "OPEN_PREFIX",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS_READ",
    "SHARDS_SUFFIX",
    "SHARD_BYTES",
    "SHARD_SECONDS",
    "SHARD_VIDEOS",
    "STALE_OPEN_S",
    "CacheWriter",
    "FailedVideo",
    "FeatureCache",
    "FeatureReader",
    "MergeSummary",
    "VideoMeta",
    "merge_caches",
    "shards_folder",
    "stored_features",
    "video_id",
]
