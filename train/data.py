"""The feature cache for training: metadata in memory, features in memory or streamed, and the one batcher.

Every reader of features (batches, input statistics, baseline, evaluation,
``load_features``) goes through a *feature source*: :class:`InMemoryFeatures`
holds every video's float16 ``(views, T, D)`` array; :class:`StreamedFeatures`
reads from the cache the frames asked for, one video's view at a time, so
memory stays bounded however large the cache. :func:`load_cache` picks one
(:func:`choose_in_memory`); labels, groups, splits and frame counts are always
in memory. Both give the same batches, bit for bit, for the same seed.

Every path turns a source's sequences into model inputs with
:class:`SequenceBatches`: it samples each video's time steps
(:mod:`framecache.train.sampling`), reads just those in the cache's order, and
pads them (:func:`pad_sequences`: float32, one batch at a time, with the mask).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from framecache.common.cache import FeatureCache, FeatureReader, VideoMeta
from framecache.common.dataset import encode_labels, oversample_indices
from framecache.common.errors import FramecacheError
from framecache.common.options import command_hint, option_name
from framecache.common.provenance import Provenance
from framecache.train.parts import FeaturePart, whole
from framecache.train.sampling import READ_BLOCK, WINDOW_VIDEOS, epoch_order, sampled_length, time_steps

log = logging.getLogger(__name__)

IN_MEMORY_CHOICES = ("auto", "yes", "no")
# auto keeps the features in memory when, counted as float32 (twice the float16
# they are held as), they take at most this share of the available memory.
MEMORY_SHARE = 0.5
# Files a streamed source keeps open: a window touches at most WINDOW_VIDEOS / READ_BLOCK
# files (shards), and the validation batches alternate with the training ones.
OPEN_FILES = 2 * WINDOW_VIDEOS // READ_BLOCK


class FeatureSource(Sequence):
    """Per-video features by index; ``source[i]`` is video i's float16 ``(views, T, D)``.

    ``num_frames``, ``views`` (per video) and ``locality`` (a sort key: videos
    next to each other in the cache have neighbouring keys) are in memory;
    :meth:`read` gives one view.
    """

    num_frames: np.ndarray
    views: np.ndarray
    locality: np.ndarray

    @abstractmethod
    def read(self, index: int, view: int, steps: np.ndarray | None = None) -> np.ndarray:
        """Video ``index``'s ``view``: float16 ``(T, D)``; ``steps`` (increasing frame indices): only those frames,
        and only those are read."""

    def __len__(self) -> int:
        return len(self.num_frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[index] for index in range(len(self)))

    def close(self) -> None:
        """Release open files (a streamed source reopens them when read again)."""


class InMemoryFeatures(FeatureSource):
    """Every video's ``(views, T, D)`` array in memory."""

    in_memory = True

    def __init__(self, arrays: list[np.ndarray], locality: np.ndarray | None = None):
        self.arrays = list(arrays)
        self.num_frames = np.asarray([array.shape[1] for array in self.arrays], dtype=np.int64)
        self.views = np.asarray([array.shape[0] for array in self.arrays], dtype=np.int64)
        self.locality = np.arange(len(self.arrays), dtype=np.int64) if locality is None else np.asarray(locality, dtype=np.int64)

    @classmethod
    def clean_views(cls, sequences: Sequence[np.ndarray]) -> InMemoryFeatures:
        """A source of videos embedded outside a cache (``predict``): each ``(T, D)`` sequence is its clean view,
        rounded to float16 as the cache stores features."""
        return cls([np.asarray(sequence).astype(np.float16)[None] for sequence in sequences])

    def read(self, index: int, view: int, steps: np.ndarray | None = None) -> np.ndarray:
        return self.arrays[index][view] if steps is None else self.arrays[index][view][steps]

    def __getitem__(self, index: int) -> np.ndarray:
        return self.arrays[index]


class StreamedFeatures(FeatureSource):
    """Features read from the cache on demand: one HDF5 dataset read per video and view.

    Files are opened lazily by a :class:`FeatureReader`, in the process that
    reads (the source pickles without open files).
    """

    in_memory = False

    def __init__(self, videos: list[VideoMeta], views: int, reader: FeatureReader | None = None):
        self.videos = list(videos)
        self.num_frames = np.asarray([video.num_frames for video in self.videos], dtype=np.int64)
        self.views = np.full(len(self.videos), int(views), dtype=np.int64)
        self.locality = video_locality(self.videos)
        self.reader = reader or FeatureReader(max_open=OPEN_FILES)

    def read(self, index: int, view: int, steps: np.ndarray | None = None) -> np.ndarray:
        if steps is not None and len(steps) == self.num_frames[index]:
            steps = None  # every frame: one contiguous read
        return self.reader.read(self.videos[index], view, frames=steps)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.reader.read(self.videos[index])

    def close(self) -> None:
        self.reader.close()


def as_source(features: FeatureSource | Sequence[np.ndarray]) -> FeatureSource:
    """A feature source as it is, or a list of ``(views, T, D)`` arrays held in memory."""
    return features if isinstance(features, FeatureSource) else InMemoryFeatures(list(features))


def video_locality(videos: list[VideoMeta]) -> np.ndarray:
    """A sort key per video: by its file, then by its place in the cache's listing of that file."""
    files = {file: rank for rank, file in enumerate(sorted({video.file for video in videos}))}
    file_rank = np.asarray([files[video.file] for video in videos], dtype=np.int64)
    position = np.zeros(len(videos), dtype=np.int64)
    seen: dict[str, int] = {}
    for index, video in enumerate(videos):
        position[index] = seen.get(video.file, 0)
        seen[video.file] = position[index] + 1
    locality = np.empty(len(videos), dtype=np.int64)
    locality[np.lexsort((position, file_rank))] = np.arange(len(videos))
    return locality


def available_memory() -> int:
    """Bytes this process can still use: the system's available memory, or less under a cgroup limit."""
    import psutil

    available = int(psutil.virtual_memory().available)
    with contextlib.suppress(OSError, ValueError):  # cgroup v2 (containers): the limit minus what the group already uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, max(0, int(limit) - used))
    return available


def feature_bytes(cache: FeatureCache) -> int:
    """Bytes of the cache's features on disk (float16, every view)."""
    nbytes = getattr(cache, "nbytes", None)
    if nbytes is not None:
        return int(nbytes)
    return sum(video.num_frames for video in cache.videos) * int(cache.provenance.views) * int(cache.provenance.feature_dim) * 2


def choose_in_memory(setting: str, nbytes: int, available: int | None = None) -> tuple[bool, str]:
    """Whether to hold the features in memory (``setting`` ``auto``, ``yes`` or ``no``), and why, in words.

    ``auto``: in memory when the features as float32 (``2 * nbytes``: they are
    held as float16, the factor leaves room for reading and batching) take at
    most :data:`MEMORY_SHARE` of the available memory; otherwise streamed.
    """
    if setting not in IN_MEMORY_CHOICES:
        raise FramecacheError(f"{option_name('in_memory')} must be one of {', '.join(IN_MEMORY_CHOICES)}, got {setting!r}")
    size = f"{_gb(2 * nbytes)} GB as float32 ({_gb(nbytes)} GB float16 in the cache)"
    if setting != "auto":
        return setting == "yes", f"{option_name('in_memory', setting)} was given; the features take {size}"
    available = available_memory() if available is None else available
    fits = 2 * nbytes <= MEMORY_SHARE * available
    return fits, (
        f"the features take {size}, {'at most' if fits else 'more than'} {MEMORY_SHARE:.0%} of the "
        f"{_gb(available)} GB of memory available ({option_name('in_memory', 'no' if fits else 'yes')} forces the other way)"
    )


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.3g}"

@dataclass
class CachedVideos:
    """A feature cache for training: its metadata in memory, its features from a :class:`FeatureSource`."""

    features: FeatureSource  # per video: float16 (views, T, D); view 0 is the clean video
    labels: np.ndarray  # int64 codes into ``classes``
    classes: list[str]
    videos: list[VideoMeta]  # what the cache records of each (path, group, split, source frames and rate)
    provenance: Provenance  # of the first cache (the only one, mostly)
    provenance_hash: str  # of the features as the run reads them: a cache's, or joined caches' together
    cache_path: str  # the cache, or the caches separated by spaces
    parts: list[FeaturePart] = field(default_factory=list)  # each cache's columns (default: one cache, every column)

    def __post_init__(self):
        if not self.parts:
            self.parts = [whole(self.provenance, self.provenance_hash, self.cache_path)]

    @property
    def backbone(self) -> str:
        """The backbone, or the joined caches' backbones (``pose + efficientnet_lite0``)."""
        return " + ".join(part.name for part in self.parts) if len(self.parts) > 1 else str(self.provenance.backbone)

    @property
    def spans(self) -> list[tuple[int, int, int | None]] | None:
        """What the run's baseline reads: every part's columns and presence column, or None (one part, every frame counts)."""
        if len(self.parts) == 1 and self.parts[0].presence is None:
            return None
        return [part.span for part in self.parts]

    @functools.cached_property
    def paths(self) -> list[str]:
        return [video.path for video in self.videos]

    @functools.cached_property
    def groups(self) -> list[str | None]:
        return [video.group for video in self.videos]  # the CSV's group column (the subject; None where blank)

    @functools.cached_property
    def splits(self) -> list[str | None]:
        return [video.split for video in self.videos]  # the CSV's split column (None where blank)

    @property
    def num_videos(self) -> int:
        return len(self.features)

    @property
    def feature_dim(self) -> int:
        return int(self.parts[-1].stop)

    @property
    def weights(self) -> str:
        """The backbone's weights (``random``: none); for joined caches, each cache's, ``+`` between them."""
        weights = [str(part.provenance.weights) for part in self.parts]
        return weights[0] if len(set(weights)) == 1 else " + ".join(weights)

    @property
    def in_memory(self) -> bool:
        return bool(getattr(self.features, "in_memory", True))

    def close(self) -> None:
        self.features.close()


def load_cache(path: str | list[str], classes: list[str] | None = None, in_memory: str = "auto") -> CachedVideos:
    """A feature cache's metadata, and its features in memory or streamed (``in_memory``: auto, yes, no).

    ``path``: one cache, or several of the same videos (a list: joined by
    video path, see :mod:`framecache.train.join`). ``classes`` fixes the label
    order (a trained model's classes); by default the cache's sorted labels.
    Raises :class:`FramecacheError` for an empty cache, or one with fewer than
    two classes when no order is given. The choice between memory and
    streaming is logged with its reason.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if len(paths) > 1:
        from framecache.train.join import load_joined

        return load_joined([str(item) for item in paths], classes, in_memory)
    path = paths[0]
    with FeatureCache(path) as cache:
        videos = cache.videos
        if not videos:
            failed = f"; {len(cache.failures)} video(s) failed during extraction, see `{command_hint('info', features=path)}`" if cache.failures else ""
            raise FramecacheError(f"feature cache {path} holds no videos{failed}; extract features first")
        if cache.failures:
            log.warning("%d video(s) of %s failed during extraction and are left out (`%s` lists them)", len(cache.failures), path, command_hint("info", features=path))
        provenance, provenance_hash = cache.provenance, cache.provenance_hash
        labels, classes = video_labels(videos, classes, path)
        keep, reason = choose_in_memory(in_memory, feature_bytes(cache))
        log.info("%s: %s", "in memory" if keep else "streamed from the cache", reason)
        if keep:  # read in the cache's order (file by file), kept in the listing's
            locality = video_locality(videos)
            arrays: list = [None] * len(videos)
            for index in np.argsort(locality):
                arrays[index] = cache.features(videos[index].key)
            features: FeatureSource = InMemoryFeatures(arrays, locality)
    if not keep:  # the framecache command caps malloc arenas for this (framecache.process_setup)
        features = StreamedFeatures(videos, int(provenance.views))
    log.info("loaded %d videos, %d classes, %d view(s) of %d-d features from %s", len(videos), len(classes), provenance.views, provenance.feature_dim, path)
    return CachedVideos(features, labels, classes, videos, provenance, provenance_hash, str(path))


def video_labels(videos: list[VideoMeta], classes: list[str] | None, path: str) -> tuple[np.ndarray, list[str]]:
    """The videos' label codes and the class order (``classes``, or the sorted labels: at least two)."""
    fixed_classes = classes is not None
    labels, classes = encode_labels([video.label for video in videos], classes)
    if not fixed_classes and len(classes) < 2:
        raise FramecacheError(
            f"feature cache {path} holds a single class ({classes[0]!r}, {len(videos)} videos); "
            "a classifier needs at least two: add videos of another class to the CSV and extract again"
        )
    return labels, classes


def pad_sequences(sequences: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``(T_i, D)`` sequences into float32 ``(B, length, D)`` zeros-padded at the end, and the bool mask."""
    feature_dim = sequences[0].shape[1]
    batch = np.zeros((len(sequences), length, feature_dim), dtype=np.float32)
    mask = np.zeros((len(sequences), length), dtype=bool)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = True
    return batch, mask


class SequenceBatches(keras.utils.PyDataset):
    """Batches ``((features, mask), labels)`` over some videos of a feature source; ``((features, mask),)`` without labels.

    Training (``train=True``): every epoch draws a new order (see
    :func:`~framecache.train.sampling.epoch_order`), a random view per video,
    random frames (see :func:`~framecache.train.sampling.time_steps`) and, with
    ``oversample``, new repeats of minority-class videos. Otherwise: ``view``
    (0, the clean video, by default), fixed frames, the given order.
    ``features`` is a :class:`FeatureSource` or a list of ``(views, T, D)``
    arrays. ``max_len=None`` keeps every frame. The batches of a window (about
    :data:`WINDOW_VIDEOS` videos) are read together, in the cache's order,
    keeping only the sampled frames, so read the batches in order
    (``model.fit(..., shuffle=False)``: the epoch plan is already shuffled);
    any order gives the same batches, only slower.
    """

    def __init__(
        self,
        features: FeatureSource | Sequence[np.ndarray],
        labels: np.ndarray | None,
        indices: np.ndarray,
        max_len: int | None,
        frame_step: int,
        batch_size: int,
        train: bool = False,
        oversample: bool = False,
        seed: int = 0,
        length: int | None = None,
        view: int = 0,
    ):
        super().__init__()
        self.source = as_source(features)
        self.labels = None if labels is None else np.asarray(labels)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.max_len = max_len
        self.frame_step = frame_step
        self.batch_size = batch_size
        self.train = train
        self.oversample = oversample
        self.view = view
        self.rng = np.random.default_rng(seed)
        self.length = length or sampled_length(self.source.num_frames[self.indices], max_len, frame_step)
        self.window_batches = max(1, WINDOW_VIDEOS // batch_size)
        self.epoch_plan()

    def epoch_plan(self) -> None:
        """Decide this epoch's videos, views and frames (``__getitem__`` only reads the plan)."""
        order = self.indices
        if self.train:
            if self.oversample:
                order = order[oversample_indices(self.labels[order], seed=int(self.rng.integers(2**31)))]
            order = epoch_order(order, self.source.locality, self.rng)
        self.order = order
        self.views = [int(self.rng.integers(self.source.views[index])) if self.train else self.view for index in order]
        self.frames = [
            time_steps(int(self.source.num_frames[index]), self.max_len, self.frame_step, self.rng if self.train else None) for index in order
        ]
        self._window, self._sequences = None, {}

    def on_epoch_end(self) -> None:
        if self.train:
            self.epoch_plan()

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def _read_window(self, window: int) -> None:
        """Read the sampled frames of every video of batches ``window * window_batches ...``, in the cache's order."""
        first = window * self.window_batches * self.batch_size
        rows = np.arange(first, min(first + self.window_batches * self.batch_size, len(self.order)))
        rows = rows[np.argsort(self.source.locality[self.order[rows]], kind="stable")]
        self._window, self._sequences = None, {}  # the previous window's frames go first
        self._sequences = {int(row): self.source.read(int(self.order[row]), self.views[row], self.frames[row]) for row in rows}
        self._window = window

    def __getitem__(self, batch: int) -> tuple:
        window = batch // self.window_batches
        if window != self._window:
            self._read_window(window)
        rows = range(batch * self.batch_size, min((batch + 1) * self.batch_size, len(self.order)))
        inputs = pad_sequences([self._sequences[row] for row in rows], self.length)
        if self.labels is None:
            return (inputs,)
        return inputs, self.labels[self.order[list(rows)]]
