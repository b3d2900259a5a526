"""A cache of schema version 1, written exactly as framecache wrote it before shards (one HDF5 file).

Layout (what the CacheWriter wrote up to schema 1, when the cache was one module, common/cache.py;
now the common/cache/ package)::

    /                       attrs: schema_version=1, provenance (JSON), provenance_hash,
                                   backbone, weights, feature_dim, views, framecache_version
    /videos/<xx>/<id>       features float16 (views, T, D); attrs label, group, split,
                            source_frames, source_fps, path, num_frames (written in that order)
    /failed/<id>            attrs path, label, group, split, reason

Tests use it to check that such caches still open (train, info, predict) and convert (merge).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from framecache.common.cache import video_id
from framecache.common.provenance import Provenance


def write_v1_cache(path: str | Path, provenance: Provenance, videos: list[dict], failures: list[dict] = ()) -> Path:
    """``videos``: dicts of path, label, features (views, T, D) and optional group, split, source_frames, source_fps;
    ``failures``: dicts of path, label, reason and optional group, split."""
    path = Path(path)
    provenance = provenance.replace(schema_version=1, framecache_version=provenance.framecache_version or "0.1.0")
    with h5py.File(path, "w") as handle:
        attrs = handle.attrs
        attrs["schema_version"] = 1
        attrs["provenance"] = provenance.to_json()
        attrs["provenance_hash"] = provenance.hash
        for key in ("backbone", "weights", "feature_dim", "views", "framecache_version"):
            attrs[key] = getattr(provenance, key)
        handle.require_group("videos")
        handle.require_group("failed")
        for video in videos:
            key = video_id(video["path"])
            features = np.asarray(video["features"]).astype(np.float16)
            entry = handle["videos"].require_group(key[:2]).create_group(key)
            entry.create_dataset("features", data=features)
            entry.attrs["label"] = video["label"]
            entry.attrs["group"] = video.get("group") or ""
            entry.attrs["split"] = video.get("split") or ""
            entry.attrs["source_frames"] = int(video.get("source_frames", features.shape[1]))
            entry.attrs["source_fps"] = float(video.get("source_fps", 0.0))
            entry.attrs["path"] = video["path"]
            entry.attrs["num_frames"] = int(features.shape[1])
        for failure in failures:
            entry = handle["failed"].create_group(video_id(failure["path"]))
            entry.attrs.update({"path": failure["path"], "label": failure["label"], "group": failure.get("group") or "",
                                "split": failure.get("split") or "", "reason": failure["reason"]})  # fmt: skip
    return path
