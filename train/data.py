"""The feature cache in memory, and the padded, masked batches the GRU trains on.

The whole cache is read once into float16 arrays (every view). Batches are cast
to float32 one at a time. Temporal handling happens here, at train time:

- keep every ``frame_step``-th cached frame (training: a random offset each epoch);
- a video with more than ``max_len`` of those is cut into ``max_len`` equal
  segments and one frame is taken from each: a random one when training, the
  middle one when evaluating or predicting. The GRU always sees the whole video.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np

from framecache.common.cache import FeatureCache
from framecache.common.dataset import encode_labels, oversample_indices
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance

log = logging.getLogger(__name__)


@dataclass
class CachedVideos:
    """A feature cache held in memory."""

    features: list[np.ndarray]  # per video: float16 (views, T, D); view 0 is the clean video
    labels: np.ndarray  # int64 codes into ``classes``
    classes: list[str]
    paths: list[str]
    groups: list[str | None]
    splits: list[str | None]  # the CSV's split column (None where blank)
    provenance: Provenance
    provenance_hash: str
    cache_path: str

    @property
    def num_videos(self) -> int:
        return len(self.features)

    @property
    def feature_dim(self) -> int:
        return int(self.provenance.feature_dim)

    @property
    def weights(self) -> str:
        return str(self.provenance.weights)


def load_cache(path: str, classes: list[str] | None = None) -> CachedVideos:
    """Read every video of a feature cache into memory.

    ``classes`` fixes the label order (a trained model's classes); by default
    the cache's sorted labels. Raises :class:`FramecacheError` for an empty
    cache, or one with fewer than two classes when no order is given.
    """
    with FeatureCache(path) as cache:
        videos = cache.videos
        if not videos:
            failed = f"; {len(cache.failures)} video(s) failed during extraction, see `make info FEATURES={path}`" if cache.failures else ""
            raise FramecacheError(f"feature cache {path} holds no videos{failed}; extract features first")
        if cache.failures:
            log.warning("%d video(s) of %s failed during extraction and are left out (`make info FEATURES=%s` lists them)", len(cache.failures), path, path)
        features = [cache.features(video.key) for video in videos]
        provenance, provenance_hash = cache.provenance, cache.provenance_hash
    fixed_classes = classes is not None
    labels, classes = encode_labels([video.label for video in videos], classes)
    if not fixed_classes and len(classes) < 2:
        raise FramecacheError(
            f"feature cache {path} holds a single class ({classes[0]!r}, {len(videos)} videos); "
            "a classifier needs at least two: add videos of another class to the CSV and extract again"
        )
    log.info("loaded %d videos, %d classes, %d view(s) of %d-d features from %s", len(videos), len(classes), features[0].shape[0], features[0].shape[2], path)
    return CachedVideos(
        features=features,
        labels=labels,
        classes=classes,
        paths=[video.path for video in videos],
        groups=[video.group for video in videos],
        splits=[video.split for video in videos],
        provenance=provenance,
        provenance_hash=provenance_hash,
        cache_path=str(path),
    )


def sample_indices(num_frames: int, max_len: int, frame_step: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Which frames of a ``num_frames``-long sequence the GRU sees (at most ``max_len``, in order).

    Without ``rng`` (evaluation, predict) the choice is fixed; with it
    (training) the stride offset and the frame within each segment are random.
    """
    offset = int(rng.integers(min(frame_step, num_frames))) if rng is not None else 0
    strided = np.arange(offset, num_frames, frame_step)
    if len(strided) <= max_len:
        return strided
    bounds = np.linspace(0, len(strided), max_len + 1).round().astype(np.int64)  # segments of >= 1 frame
    if rng is not None:
        positions = rng.integers(bounds[:-1], bounds[1:])
    else:
        positions = (bounds[:-1] + bounds[1:]) // 2
    return strided[positions]


def padded_length(features: list[np.ndarray], max_len: int, frame_step: int) -> int:
    """The time steps every batch is padded to: enough for the longest sampled video, at most ``max_len``."""
    longest = max(video.shape[1] for video in features)
    return min(max_len, -(-longest // frame_step))


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
    """Batches ``((features, mask), labels)`` over some videos of a cache.

    Training (``train=True``): every epoch draws a new order, a random view per
    video, random frames (see :func:`sample_indices`) and, with
    ``oversample``, new repeats of minority-class videos. Otherwise: view 0,
    fixed frames, the given order.
    """

    def __init__(
        self,
        features: list[np.ndarray],
        labels: np.ndarray,
        indices: np.ndarray,
        max_len: int,
        frame_step: int,
        batch_size: int,
        train: bool = False,
        oversample: bool = False,
        seed: int = 0,
        length: int | None = None,
    ):
        super().__init__()
        self.features = features
        self.labels = np.asarray(labels)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.max_len = max_len
        self.frame_step = frame_step
        self.batch_size = batch_size
        self.train = train
        self.oversample = oversample
        self.rng = np.random.default_rng(seed)
        self.length = length or padded_length([features[index] for index in self.indices], max_len, frame_step)
        self.epoch_plan()

    def epoch_plan(self) -> None:
        """Decide this epoch's videos, views and frames (``__getitem__`` only reads the plan)."""
        order = self.indices
        if self.train:
            if self.oversample:
                order = order[oversample_indices(self.labels[order], seed=int(self.rng.integers(2**31)))]
            else:
                order = self.rng.permutation(order)
        self.order = order
        self.views = [int(self.rng.integers(self.features[index].shape[0])) if self.train else 0 for index in order]
        self.frames = [
            sample_indices(self.features[index].shape[1], self.max_len, self.frame_step, self.rng if self.train else None)
            for index in order
        ]

    def on_epoch_end(self) -> None:
        if self.train:
            self.epoch_plan()

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, batch: int):
        rows = range(batch * self.batch_size, min((batch + 1) * self.batch_size, len(self.order)))
        sequences = [self.features[self.order[row]][self.views[row]][self.frames[row]] for row in rows]
        inputs, mask = pad_sequences(sequences, self.length)
        return (inputs, mask), self.labels[self.order[list(rows)]]


def temporal_inputs(sequence: np.ndarray, centre: bool = False, differences: bool = False) -> np.ndarray:
    """What the model's :class:`train.model.TemporalInputs` makes of one unpadded ``(T, D)`` sequence, in NumPy."""
    sequence = sequence.astype(np.float64)
    parts = [sequence - sequence.mean(axis=0) if centre else sequence]
    if differences:
        parts.append(np.diff(sequence, axis=0, prepend=sequence[:1]))
    return np.concatenate(parts, axis=1)


def feature_statistics(
    features: list[np.ndarray],
    indices: np.ndarray,
    max_len: int | None = None,
    frame_step: int = 1,
    centre: bool = False,
    differences: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and variance of the model's inputs (for input scaling).

    Over view 0 of the given videos, sampled as at evaluation (every frame
    without ``max_len``), after the ``centre`` / ``differences`` transforms.
    """
    total = total_squares = None
    count = 0
    for index in indices:
        frames = features[index][0]
        if max_len is not None:
            frames = frames[sample_indices(len(frames), max_len, frame_step)]
        inputs = temporal_inputs(frames, centre, differences)
        if total is None:
            total, total_squares = np.zeros(inputs.shape[1]), np.zeros(inputs.shape[1])
        total += inputs.sum(axis=0)
        total_squares += (inputs**2).sum(axis=0)
        count += len(inputs)
    mean = total / count
    variance = np.maximum(total_squares / count - mean**2, 1e-4)  # floor: a constant dimension must not explode
    return mean.astype(np.float32), variance.astype(np.float32)
