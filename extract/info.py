"""``framecache info FEATURES [--json] [--csv CSV]``: what a feature cache holds, for a person, and how it agrees with a CSV."""

from __future__ import annotations

from framecache.common.cache import FeatureCache
from framecache.common.dataset import load_dataset
from framecache.common.notices import random_weights_warning
from framecache.common.provenance import Provenance


def csv_agreement(cache: FeatureCache, csv: str) -> dict:
    """Where the cache and the CSV (the source of truth) differ: each cached video whose label, group or split the
    CSV changed, and how many rows are not cached and how many cached videos the CSV no longer lists."""
    rows = {row.path: row for row in load_dataset(csv, min_videos_per_class=1).itertuples()}
    changed = [
        {"path": video.path, "field": field, "cache": getattr(video, field), "csv": getattr(rows[video.path], field)}
        for video in cache.videos if video.path in rows
        for field in video.differs_from(rows[video.path])
    ]  # fmt: skip
    cached = {video.path for video in cache.videos}
    return {"csv": str(csv), "changed": changed, "changed_videos": len({change["path"] for change in changed}),
            "not_cached": len(set(rows) - cached), "not_in_csv": len(cached - set(rows))}  # fmt: skip


def _csv_line(agreement: dict) -> str:
    counts = f"{agreement['not_cached']} row(s) not cached yet, {agreement['not_in_csv']} cached video(s) it does not list"
    if not agreement["changed"]:
        return f"csv         {agreement['csv']} agrees on every cached video's label, group and split; {counts}"
    first = agreement["changed"][0]
    return (f"csv         {agreement['csv']} differs on {agreement['changed_videos']} cached video(s), e.g. {first['path']}: "
            f"{first['field']} {first['cache']!r} here, {first['csv']!r} in the CSV; run the extraction again to bring "
            f"them up to date (their features are kept); {counts}")  # fmt: skip


def _storage_line(summary: dict) -> str:
    """Where the features are: shards (schema 2), duplicates counted once, shards still open."""
    size = f"{summary.get('nbytes', 0) / 1e6:.1f} MB of features"
    if summary["schema_version"] < 2:
        return f"storage     {size} in one file (schema 1: read-only; `framecache merge --out new.h5 {summary['path']}` converts it)"
    line = f"storage     {size} in {summary.get('shards', 0)} closed shard(s)"
    if summary.get("duplicates"):
        line += f"; {summary['duplicates']} video(s) found in more than one shard, counted once"
    if summary.get("open_shards"):
        line += f"; {summary['open_shards']} shard(s) open (being written, or left by a killed writer: not read)"
    return line


def _shortfall_lines(short_videos: list[dict]) -> list[str]:
    """How many videos decoded fewer frames than their header states, and the largest shortfall."""
    if not short_videos:
        return []
    largest = max(short_videos, key=lambda video: (video["frames_short"] / video["header_frames"], video["frames_short"]))
    count = len(short_videos)
    return [f"decoding    {count} video{'s' if count > 1 else ''} decoded a few frames short of {'their' if count > 1 else 'its'} "
            f"header; largest shortfall {largest['frames_short']} frames of {largest['header_frames']} "
            f"({largest['frames_short'] / largest['header_frames']:.0%}): {largest['path']}"]  # fmt: skip


def format_summary(summary: dict) -> str:
    """The human-readable form of :meth:`FeatureCache.summary`."""
    provenance = Provenance.from_dict(summary["provenance"])
    lines = [
        f"cache       {summary['path']} (schema {summary['schema_version']})",
        f"backbone    {summary['backbone']}, weights {summary['weights']}"
        + (f" (sha256 {provenance.weights_sha256[:12]}…)" if provenance.weights_sha256 else ""),
        f"features    {summary['feature_dim']}-d float16 (CNN in {provenance.precision}), {summary['views']} view(s), "
        f"augment {provenance.augment}, seed {provenance.seed}",
        f"sampling    frame_step {provenance.frame_step}, fps {provenance.fps or 'native'}, "
        f"input {provenance.input_size} px ({provenance.resize})",
        f"videos      {summary['videos_ok']} ok, {summary['videos_failed']} failed, {summary['frames']} frames",
        "labels      " + ", ".join(f"{label}: {count}" for label, count in summary["labels"].items()),
        *_shortfall_lines(summary.get("short_videos", [])),
        *([_csv_line(summary["csv_agreement"])] if "csv_agreement" in summary else []),
        _storage_line(summary),
        f"provenance  {summary['provenance_hash'][:16]}, framecache {provenance.framecache_version}",
    ]
    warning = random_weights_warning(summary["weights"])
    if warning:
        lines.append(f"warning     {warning}")
    for failure in summary["failures"]:
        lines.append(f"failed      {failure['path']}: {failure['reason']}")
    return "\n".join(lines)
