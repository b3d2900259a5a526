"""Joining caches made with the same settings, and converting schema 1.

A closed shard is never written again, so merging schema-2 caches is copying
files: each closed shard goes into the target's folder under its own name
(merging twice copies nothing new), and readers count a video found in two
shards once. A schema-1 cache has no shards: its videos are written into new
shards through a :class:`CacheWriter`, which makes
``merge_caches("new.h5", ["old.h5"])`` the schema converter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from framecache.common.cache.layout import (
    OPEN_PREFIX,
    SCHEMA_VERSION,
    closed_shards,
    error_reason,
    fsync,
    owner_tag,
    write_failure_cause,
)
from framecache.common.cache.reader import Contents, FeatureCache, FeatureReader, VideoMeta, differences, open_cache
from framecache.common.cache.writer import CacheWriter
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name

# What two caches must agree on about a video they both hold (num_frames: features of another length).
CONFLICTING = ("label", "group", "split", "num_frames")


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
        """One line for a person: what the target holds and where it came from."""
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
            raise FramecacheError(f"{cache} is the target of the merge itself; give the caches to merge into {option_name('out', out)}")
        version, provenance, provenance_hash, contents = open_cache(cache)
        if version == 1:  # rewritten: it takes the current schema
            provenance = provenance.replace(schema_version=SCHEMA_VERSION)
            provenance_hash = provenance.hash
        sources.append((cache, version, provenance, provenance_hash, contents))
    if not sources:
        raise FramecacheError("give at least one cache to merge")
    target_contents = None
    if out.exists():
        version, target, target_hash, target_contents = open_cache(out)
        if version == 1:
            raise FramecacheError(
                f"{out} is a cache of schema version 1: merge into a new file instead, listing {out} among the caches "
                f"({command_hint('merge', out='new.h5', caches=f'{out} ...')})"
            )
    else:
        _, _, target, target_hash, _ = sources[0]
    for cache, _, provenance, provenance_hash, _ in sources:
        if provenance_hash != target_hash:
            raise FramecacheError(
                f"{cache} was extracted with other settings than {out} ({differences(provenance, target, str(cache), str(out))}); "
                "caches merge only when their features are alike: extract it again with the same settings"
            )
    named = [(str(cache), contents) for cache, _, _, _, contents in sources]
    conflicts = _conflicts(named + ([(str(out), target_contents)] if target_contents is not None else []))
    if conflicts:
        raise FramecacheError(
            f"the caches disagree about {len(conflicts)} video(s), e.g. {'; '.join(conflicts[:3])}; nothing was merged: "
            "extract those videos again from the CSV that is right (or drop them from it), then merge"
        )
    summary = MergeSummary(str(out))
    writer = CacheWriter(out, target)  # creates the target if needed; checks it once more
    try:
        present = {shard.name for shard in closed_shards(writer.folder)}
        for _, version, _, _, contents in sources:
            if version == 1:
                summary.videos_converted += _convert_v1(writer, contents)
                continue
            for record in contents.records:
                if record.path.name in present:
                    summary.shards_present += 1
                    continue
                _copy_shard(record.path, writer.folder)
                present.add(record.path.name)
                summary.shards_copied += 1
    finally:
        writer.close()
    with FeatureCache(out) as merged:
        summary.videos, summary.duplicates = len(merged.videos), merged.duplicates
    return summary


def _conflicts(caches: list[tuple[str, Contents]]) -> list[str]:
    """Each video that two caches record differently (:data:`CONFLICTING`), in words."""
    first: dict[str, tuple[str, VideoMeta]] = {}
    found = []
    for name, contents in caches:
        for key, video in contents.videos.items():
            if key not in first:
                first[key] = (name, video)
                continue
            other_name, other = first[key]
            differing = [f"{field} {getattr(other, field)!r} in {other_name}, {getattr(video, field)!r} in {name}"
                         for field in CONFLICTING if getattr(other, field) != getattr(video, field)]  # fmt: skip
            if differing:
                found.append(f"{video.path}: " + ", ".join(differing))
    return found


def _copy_shard(shard: Path, folder: Path) -> None:
    """Copy a closed shard into ``folder`` as the writers write one: a temporary name, fsync, rename."""
    tmp = folder / f"{OPEN_PREFIX}{owner_tag()}-copy.h5"
    try:
        shutil.copyfile(shard, tmp)
        fsync(tmp)
        os.rename(tmp, folder / shard.name)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        cause, remedy = write_failure_cause(error, folder)
        raise FramecacheError(f"copying {shard} into {folder} failed ({error_reason(error)}): {cause}; "
                              f"{remedy.replace('command again to resume', 'merge again')}") from None  # fmt: skip
    with contextlib.suppress(OSError):
        fsync(folder, directory=True)


def _convert_v1(writer: CacheWriter, contents: Contents) -> int:
    """Write a schema-1 cache's videos (those the target lacks) and failures into new shards."""
    (record,) = contents.records
    done = writer.done_paths()
    converted = 0
    with FeatureReader(max_open=1) as reader:
        for video in sorted(contents.videos.values(), key=lambda video: video.path):
            if video.path in done:
                continue
            writer.add_video(video.path, video.label, reader.read(video), group=video.group, split=video.split,
                             source_frames=video.source_frames, source_fps=video.source_fps,
                             header_frames=video.header_frames)  # fmt: skip
            converted += 1
    for key in contents.failures:
        row = record.failures[key]
        if row["path"] not in done:
            writer.add_failure(row["path"], row["label"], row["reason"], group=row["group"], split=row["split"])
    return converted
