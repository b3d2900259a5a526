"""framecache's public functions, importable without TensorFlow.

Each function imports what it needs when called, so ``import framecache`` stays
light. The names follow the CNN-RNN tutorials this project grew from: load a
CSV, encode labels, load and augment a video, build the model; and on top the
two stages: extract features once, then load them or train on them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def load_dataset(csv: str | Path, balance: bool = False, seed: int = 0):
    """Read and check a dataset CSV (``path,label[,group][,split][,fps]``): a pandas DataFrame.

    Relative paths resolve against the CSV's folder (column ``abs_path``). With
    ``balance=True`` the rows of smaller classes are repeated (seeded) until
    every class is as large as the largest.

    >>> table = framecache.load_dataset("videos/labels.csv")
    >>> sorted(table.columns)
    ['abs_path', 'fps', 'group', 'label', 'path', 'split']
    >>> framecache.load_dataset("videos/labels.csv", balance=True)["label"].value_counts().nunique()
    1
    """
    from framecache.common.dataset import load_dataset as load
    from framecache.common.dataset import oversample_indices

    table = load(csv)
    if balance:
        table = table.iloc[np.sort(oversample_indices(table["label"].to_numpy(), seed=seed))].reset_index(drop=True)
    return table


load_dataframe = load_dataset  # the name the CNN-RNN tutorials use


def encode_labels(labels, classes: list[str] | None = None):
    """Integer codes for string labels, and the class names in code order: a list that also has
    ``classes_`` (and ``transform``, ``inverse_transform``) like a fitted scikit-learn LabelEncoder.

    >>> codes, classes = framecache.encode_labels(["squat", "lunge", "squat"])
    >>> codes.tolist(), classes
    ([1, 0, 1], ['lunge', 'squat'])
    >>> y, encoder = framecache.encode_labels(["squat", "lunge", "squat"])
    >>> len(encoder.classes_), encoder.inverse_transform([0]).tolist()
    (2, ['lunge'])
    """
    from framecache.common.dataset import encode_labels as encode

    return encode(labels, classes)


def load_video(path: str | Path, size: int = 224, frame_step: int = 1, fps: float | None = None,
               decoder: str = "pyav") -> np.ndarray:
    """Every sampled frame of a video as uint8 RGB ``(T, size, size, 3)``, resized and centre-cropped as stage one does.

    >>> frames = framecache.load_video("videos/squat_0.mp4")
    >>> frames.dtype, frames.shape[1:]
    (dtype('uint8'), (224, 224, 3))
    """
    from framecache.extract.decode import iter_frames

    chunks = list(iter_frames(str(path), size=size, frame_step=frame_step, fps=fps, backend=decoder))
    return np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)


def augment_video(frames: np.ndarray, preset: str = "default", seed: int = 0, view: int = 1) -> np.ndarray:
    """One augmented view of ``frames`` (uint8 ``(T, H, W, 3)``): one random transform applied to every frame.

    ``preset``: ``none``, ``light``, ``default`` or ``blur-noise`` (see the README). The same
    ``seed`` and ``view`` give the same transform; view 0 is the clean video.

    >>> frames = framecache.load_video("videos/squat_0.mp4")
    >>> augmented = framecache.augment_video(frames, seed=1)
    >>> augmented.shape == frames.shape, bool((augmented != frames).any())
    (True, True)
    """
    from framecache.extract.augment import ViewAugmenter

    return ViewAugmenter(preset, seed)(np.asarray(frames), "augment_video", view)


def build_model(num_classes: int, feature_dim: int = 1280, **options):
    """The compiled Keras GRU classifier of stage two; ``options`` as :func:`framecache.train.model.build_model`.

    It takes ``(features, mask)``: float ``(B, T, feature_dim)`` and bool ``(B, T)``.

    >>> model = framecache.build_model(num_classes=3, feature_dim=16, units=8)
    >>> model.output_shape
    (None, 3)
    """
    from framecache.train.model import build_model as build

    return build(feature_dim=feature_dim, num_classes=num_classes, **options)


def extract_features(csv: str | Path, out: str | Path, **options):
    """Stage one: embed every frame of the CSV's videos into the feature cache ``out`` (resumes); a summary.

    ``options``: any field of :class:`framecache.common.config.ExtractConfig`
    (``backbone``, ``weights``, ``views``, ``augment``, ``frame_step``, ...).

    >>> summary = framecache.extract_features("videos/labels.csv", "features.h5", backbone="efficientnet_lite0", quiet=True)
    >>> summary.ok, summary.failed
    (12, 0)
    """
    from framecache.common.config import ExtractConfig
    from framecache.extract.pipeline import run_extraction

    return run_extraction(ExtractConfig(csv=str(csv), out=str(out), **options))


@dataclass
class PaddedFeatures:
    """A feature cache as padded arrays; unpacks as ``X, mask, y = load_features(...)``."""

    features: np.ndarray  # float32 (videos, max_len, feature_dim), zeros after each video's end
    mask: np.ndarray  # bool (videos, max_len): True on real frames
    labels: np.ndarray  # int64 codes into ``classes``
    classes: list[str]
    paths: list[str]
    groups: list[str | None]  # the CSV's group column (the subject): split by it, never across it
    splits: list[str | None]  # the CSV's split column (None where blank)
    times: np.ndarray  # float32 (videos, max_len): each step's time in its video, seconds; NaN after the end or rate unknown

    def __iter__(self):
        return iter((self.features, self.mask, self.labels))


def load_features(cache: str | Path, max_len: int | None = None, view: int = 0) -> PaddedFeatures:
    """The cached sequences of one view (0: clean) padded to a common length, with masks and label codes.

    Videos longer than ``max_len`` are sampled uniformly over their whole length
    (as stage two evaluates); by default the longest video sets the length.

    >>> X, mask, y = framecache.load_features("features.h5", max_len=16)
    >>> X.shape[0] == mask.shape[0] == len(y), X.shape[1] <= 16, X.dtype
    (True, True, dtype('float32'))
    >>> padded = framecache.load_features("features.h5")
    >>> len(padded.groups) == len(y)  # for an honest split of your own
    True
    >>> bool((padded.times[0][padded.mask[0]][1:] > padded.times[0][padded.mask[0]][:-1]).all())  # seconds, rising
    True
    """
    from framecache.train.data import SequenceBatches, load_cache
    from framecache.train.sampling import time_steps

    data = load_cache(str(cache))
    try:
        views = int(data.features.views[0])
        if not 0 <= view < views:
            raise ValueError(f"view must be in 0..{views - 1} for {cache}, got {view}")
        every_video = np.arange(data.num_videos)  # one batch of them all, sampled and padded as stage two evaluates
        (features, mask), labels = SequenceBatches(data.features, data.labels, every_video, max_len or None, 1, data.num_videos, view=view)[0]
    finally:
        data.close()
    times = np.full(mask.shape, np.nan, dtype=np.float32)
    for row, video in enumerate(data.videos):
        steps = time_steps(video.num_frames, max_len or None)
        times[row, : len(steps)] = _frame_times(video, data.provenance)[steps]
    return PaddedFeatures(features, mask, labels, data.classes, data.paths, data.groups, data.splits, times)


def _frame_times(video, provenance) -> np.ndarray:
    """Seconds into its file of each cached frame of ``video`` (a cache's VideoMeta), as stage one sampled them;
    NaN where the file's frame rate is unknown (a frame folder without one)."""
    from framecache.extract.decode import iter_sample_indices

    if not video.source_fps:
        return np.full(video.num_frames, np.nan, dtype=np.float32)
    decoded_from = video.header_frames or video.source_frames  # stage one sampled the header's count, kept what decoded
    indices = iter_sample_indices(decoded_from, video.source_fps, int(provenance.frame_step), provenance.fps)
    return (np.fromiter(itertools.islice(indices, video.num_frames), np.float64) / video.source_fps).astype(np.float32)


def train_model(features: str | Path, run: str | Path | None = None, **options) -> dict:
    """Stage two: train a GRU on a feature cache, write the run folder, return its metrics.

    ``options``: any field of :class:`framecache.train.config.TrainConfig`
    (``units``, ``epochs``, ``max_len``, ``cv``, ...).

    >>> metrics = framecache.train_model("features.h5", run="runs/first", epochs=3, quiet=True)
    >>> 0 <= metrics["accuracy"] <= 1, sorted(path.name for path in Path("runs/first").glob("*.keras"))
    (True, ['model.keras'])
    """
    from framecache.train.config import TrainConfig
    from framecache.train.fit import run_training

    return run_training(TrainConfig(features=str(features), run=None if run is None else str(run), **options))


def predict(run: str | Path, videos: list[str | Path], top: int = 3, engine: str = "auto") -> list[dict]:
    """Label new videos end to end with a trained run: one dict per video, its top classes or its error.

    >>> results = framecache.predict("runs/first", ["videos/squat_0.mp4"])
    >>> results[0]["path"], len(results[0]["top"])
    ('videos/squat_0.mp4', 2)
    """
    from framecache.train.predict import predict_videos

    return predict_videos(str(run), [str(video) for video in videos], engine=engine, top=top)
