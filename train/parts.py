"""The feature sets of a run: which columns of the joined features each cache fills, and which frames count.

A run reads one cache or several of the same videos (one per backbone:
``--features pose.h5 cnn.h5``); their features are joined frame by frame,
side by side, in the order given. A :class:`FeaturePart` names one cache's
columns. Every model of the run reads its part through :func:`part_inputs`,
written (like :func:`framecache.train.temporal.temporal_transform`) against
the small array API that ``keras.ops`` and NumPy share, so the saved model and
the NumPy code that fits its baseline see the same frames:

- the part's columns only;
- a pose part's frames without a person (presence score 0: all zeros in the
  cache) are masked, unless no frame of the video has one (then every frame
  counts, and the video reads as the zeros it is).

:func:`pooled_features` is what the baseline reads of a part: each video's
mean and standard deviation over its valid frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from framecache.common.provenance import Provenance

# NumPy spelled as the part of keras.ops used here and by framecache.train.temporal.temporal_transform.
NUMPY_OPS = SimpleNamespace(
    any=np.any,
    where=np.where,
    logical_and=np.logical_and,
    cast=lambda values, dtype: np.asarray(values).astype(dtype),
    expand_dims=np.expand_dims,
    sum=np.sum,
    maximum=np.maximum,
    sqrt=np.sqrt,
    concatenate=np.concatenate,
    zeros_like=np.zeros_like,
)


@dataclass(frozen=True)
class FeaturePart:
    """One cache's share of the joined features: columns ``start:stop``, what made them, and its presence column."""

    name: str  # the backbone (or the cache's file name, where two caches share a backbone)
    start: int
    stop: int
    presence: int | None  # column of the presence score within the part (pose backbones), or None
    provenance: Provenance
    provenance_hash: str
    cache_path: str

    @property
    def feature_dim(self) -> int:
        return self.stop - self.start

    @property
    def span(self) -> tuple[int, int, int | None]:
        """``(start, stop, presence)``: what a model reads of the joined features (see :func:`part_inputs`)."""
        return self.start, self.stop, self.presence

    def to_json(self) -> dict:
        """What a saved model records of the part (``predict`` re-embeds with its provenance)."""
        return {"name": self.name, "start": self.start, "stop": self.stop, "presence": self.presence, "cache_path": self.cache_path,
                "provenance": self.provenance.to_dict(), "provenance_hash": self.provenance_hash}  # fmt: skip

    @classmethod
    def from_json(cls, values: dict) -> FeaturePart:
        provenance = values["provenance"]
        return cls(values["name"], int(values["start"]), int(values["stop"]), values.get("presence"),
                   provenance if isinstance(provenance, Provenance) else Provenance.from_dict(provenance),
                   values["provenance_hash"], values.get("cache_path", ""))  # fmt: skip


def presence_column(provenance: Provenance) -> int | None:
    """The column of a backbone's features that says whether a frame shows a person (pose backbones), else None."""
    if not str(provenance.backbone).startswith("pose"):
        return None
    from framecache.extract.pose.features import FEATURE_NAMES

    return FEATURE_NAMES.index("score")


def whole(provenance: Provenance, provenance_hash: str, cache_path: str) -> FeaturePart:
    """The one part of a run that reads a single cache."""
    dim = int(provenance.feature_dim)
    return FeaturePart(str(provenance.backbone), 0, dim, presence_column(provenance), provenance, provenance_hash, cache_path)


def part_inputs(features, mask, start: int, stop: int, presence: int | None, ops):
    """``(features[..., start:stop], mask)`` of a padded batch, ``mask`` without the part's frames that show no person.

    ``features`` ``(B, T, D)`` and bool ``mask`` ``(B, T)`` as arrays of
    ``ops`` (``keras.ops`` or :data:`NUMPY_OPS`).
    """
    part = features[..., start:stop]
    if presence is None:
        return part, mask
    present = ops.logical_and(mask, part[..., presence] > 0)
    return part, ops.where(ops.any(present, axis=1, keepdims=True), present, mask)


def pooled_features(features, mask, ops):
    """Each video's mean and standard deviation over its valid steps, side by side: ``(B, 2 * D)``."""
    valid = ops.cast(ops.expand_dims(mask, -1), features.dtype)
    count = ops.maximum(ops.sum(valid, axis=1), 1.0)
    mean = ops.sum(features * valid, axis=1) / count
    deviation = (features - ops.expand_dims(mean, 1)) * valid
    std = ops.sqrt(ops.sum(deviation * deviation, axis=1) / count)
    return ops.concatenate([mean, std], axis=-1)


def frames_of(frames: np.ndarray, part: FeaturePart) -> np.ndarray:
    """One unpadded ``(T, D)`` sequence's part, keeping only its valid frames (as :func:`part_inputs` masks them)."""
    sequence, mask = part_inputs(np.asarray(frames)[None], np.ones((1, len(frames)), dtype=bool), part.start, part.stop, part.presence, NUMPY_OPS)
    return sequence[0][mask[0]]
