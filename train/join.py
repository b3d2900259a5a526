"""Several caches of the same videos as one: their features side by side, frame by frame, joined by video path.

``framecache train --features pose.h5 cnn.h5`` reads both caches (made from
the same CSV, one per backbone). Every video in all of them is kept, its
frames' features concatenated in the order the caches were given; the run
models each cache's columns (a :class:`~framecache.train.parts.FeaturePart`)
on its own and combines them. The caches must agree on what they share: a
video's label, group and split (the CSV's) and its number of frames (the same
frame sampling: ``--fps``, ``--frame-step``); a video has as many views as
the cache with the most (see :class:`JoinedFeatures`).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from framecache.common.cache import FeatureCache, VideoMeta
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name
from framecache.train.data import (
    CachedVideos,
    FeatureSource,
    InMemoryFeatures,
    StreamedFeatures,
    choose_in_memory,
    video_labels,
)
from framecache.train.parts import FeaturePart, presence_column

log = logging.getLogger(__name__)


class JoinedFeatures(FeatureSource):
    """Feature sources of the same videos side by side: ``read`` concatenates each one's frames along the feature axis.

    A video has as many views as its source with the most; a source with
    fewer gives its clean view (0) for the others, so a cache extracted with
    one view (pose) still lets training draw the other cache's augmented views.
    """

    def __init__(self, sources: list[FeatureSource]):
        self.sources = sources
        self.num_frames = sources[0].num_frames
        self.views = np.max([source.views for source in sources], axis=0)
        self.locality = sources[0].locality
        self.in_memory = all(getattr(source, "in_memory", True) for source in sources)

    def read(self, index: int, view: int, steps: np.ndarray | None = None) -> np.ndarray:
        return np.concatenate([source.read(index, view if view < source.views[index] else 0, steps) for source in self.sources], axis=1)

    def __getitem__(self, index: int) -> np.ndarray:
        views = int(self.views[index])
        return np.stack([self.read(index, view) for view in range(views)])

    def close(self) -> None:
        for source in self.sources:
            source.close()


def joint_hash(hashes: list[str]) -> str:
    """One provenance hash for features joined from caches with these hashes, in this order."""
    return hashlib.sha256("+".join(hashes).encode()).hexdigest()


def part_names(backbones: list[str], paths: list[str]) -> list[str]:
    """Each cache's name in reports: its backbone, or its file name where two caches share a backbone."""
    return [backbone if backbones.count(backbone) == 1 else str(path) for backbone, path in zip(backbones, paths)]


def join_caches(paths: list[str], in_memory: str) -> tuple[list[VideoMeta], FeatureSource, list[FeaturePart], int]:
    """The videos every cache of ``paths`` holds (in the first cache's order), their joined features, the parts,
    and the joined views per video."""
    caches = [FeatureCache(path) for path in paths]
    try:
        by_path = [{video.path: video for video in cache.videos} for cache in caches]
        common = [video for video in caches[0].videos if all(video.path in videos for videos in by_path[1:])]
        for cache, videos in zip(caches, by_path):
            left_out = len(videos) - len(common)
            if left_out:
                log.warning("%d video(s) of %s are not in every cache (failed or not extracted there) and are left out", left_out, cache.path)
        if not common:
            raise FramecacheError(f"the caches {', '.join(map(str, paths))} have no video in common; extract every cache from the same CSV")
        _check_agree(common, by_path, paths)
        names = part_names([str(cache.provenance.backbone) for cache in caches], [str(path) for path in paths])
        parts, start = [], 0
        for name, cache in zip(names, caches):
            stop = start + cache.feature_dim
            parts.append(FeaturePart(name, start, stop, presence_column(cache.provenance), cache.provenance, cache.provenance_hash, str(cache.path)))
            start = stop
        nbytes = sum(video.num_frames for video in common) * sum(cache.num_views * cache.feature_dim * 2 for cache in caches)
        keep, reason = choose_in_memory(in_memory, nbytes)
        log.info("%s: %s", "in memory" if keep else "streamed from the caches", reason)
        sources = []
        for cache, videos in zip(caches, by_path):
            own = [videos[video.path] for video in common]
            if keep:
                sources.append(InMemoryFeatures([cache.features(video.key) for video in own]))
            else:
                sources.append(StreamedFeatures(own, cache.num_views))
        views = max(cache.num_views for cache in caches)
        if len({cache.num_views for cache in caches}) > 1:
            log.info("the caches hold %s views per video: where one has fewer, its clean view stands in for the others",
                     "/".join(str(cache.num_views) for cache in caches))  # fmt: skip
        return common, JoinedFeatures(sources), parts, views
    finally:
        for cache in caches:
            cache.close()


def _check_agree(common: list[VideoMeta], by_path: list[dict[str, VideoMeta]], paths: list[str]) -> None:
    """The caches must say the same of every shared video: label, group, split (the CSV's) and frame count."""
    for video in common:
        for videos, path in zip(by_path[1:], paths[1:]):
            other = videos[video.path]
            fields = video.differs_from(other)
            if fields:
                raise FramecacheError(
                    f"{video.path}: {paths[0]} and {path} disagree on its {', '.join(fields)}; run `framecache extract` "
                    f"again on each with the same CSV (a rerun brings a cache's labels up to date), then train"
                )
            if other.num_frames != video.num_frames:
                raise FramecacheError(
                    f"{video.path} has {video.num_frames} frames in {paths[0]} and {other.num_frames} in {path}: their features "
                    f"cannot be joined frame by frame; extract both with the same frame sampling ({option_name('fps')}, "
                    f"{option_name('frame_step')}), see `{command_hint('info', features=path)}`"
                )


def load_joined(paths: list[str], classes: list[str] | None, in_memory: str) -> CachedVideos:
    """:func:`framecache.train.data.load_cache` of several caches: their common videos, features side by side."""
    videos, features, parts, views = join_caches(paths, in_memory)
    labels, classes = video_labels(videos, classes, " + ".join(paths))
    log.info("loaded %d videos, %d classes, %d view(s) of %s features from %s", len(videos), len(classes), views,
             " + ".join(f"{part.feature_dim}-d {part.name}" for part in parts), " and ".join(paths))  # fmt: skip
    return CachedVideos(features, labels, classes, videos, parts[0].provenance, joint_hash([part.provenance_hash for part in parts]),
                        " ".join(paths), parts)  # fmt: skip
