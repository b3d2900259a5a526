"""The written interfaces of stage one: what the driver (:class:`~framecache.extract.driver.Driver`) needs of its parts.

::

    Decoder        a video file or frame folder -> its views, uint8 chunks   ViewDecoder (in the decoder processes)
    Embedder       uint8 frames  ->  float32 features                Backbone (built once per process)
                   (started, then collected: PendingFeatures)
    ShardSink      embedded pieces -> closed shards of the cache     WriterProcess (the one writer arrangement)
    ProgressReport counts         -> a bar, lines, or a Ray tally    Progress, blocks' BlockProgress

Each is a :class:`typing.Protocol`: a test double needs only these methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from framecache.extract.messages import FailureRecord, FeaturePiece, VideoRecord
    from framecache.extract.views import DecodeSettings, Placer, VideoViews


class Decoder(Protocol):
    """Turns one video file into its views; built once per decoder process from the run's settings."""

    def __init__(self, settings: DecodeSettings): ...

    def open(self, path: str, key: str, fps: float | None = None, place: Placer | None = None) -> VideoViews:
        """Open ``path`` (``key``, its CSV path, seeds the augmented views; ``fps``: a frame folder's rate from the CSV):
        its header now, its view chunks as iterated, each written where ``place(n)`` says (default: a new array).
        Raises :class:`~framecache.common.errors.FramecacheError` (or any exception: a failed video) for a bad file."""
        ...


PENDING_BATCHES = 2  # batches an Embedder runs at once: it starts the next as soon as it ends one


class PendingFeatures(Protocol):
    """One batch handed to an embedder: its features once computed."""

    finished_at: float  # time.monotonic() when the computation ended; read after result()

    def result(self) -> np.ndarray:
        """Wait for the features: float32 ``(n, feature_dim)``."""
        ...


@dataclass(frozen=True, eq=False)
class Finished:
    """Features computed at once (:class:`PendingFeatures` of an embedder that runs one batch at a time)."""

    features: np.ndarray
    finished_at: float = field(default_factory=time.monotonic)

    def result(self) -> np.ndarray:
        return self.features


class Embedder(Protocol):
    """The frozen backbone: uint8 RGB frames ``(n, size, size, 3)`` in, float32 features ``(n, feature_dim)`` out."""

    batch_size: int  # frames per batch: :meth:`start` takes at most this many

    def embed(self, frames: np.ndarray, streams: list[tuple[object, int, int]] | None = None) -> np.ndarray:
        """``streams``: ``(stream, offset, count)`` for each run of ``frames``, in order: which video's view the run is
        from and where in it it starts (a pose backbone tracks a person along a stream; a CNN ignores it)."""
        ...

    def start(self, frames: np.ndarray, streams: list[tuple[object, int, int]] | None = None) -> PendingFeatures:
        """Begin embedding one batch (at most ``batch_size`` frames; ``streams`` as for :meth:`embed`) and return at once
        where the backbone runs on its own threads, so that the caller prepares the next batch meanwhile. At most
        :data:`PENDING_BATCHES` may be pending: take the oldest one's :meth:`~PendingFeatures.result` before starting
        another.
        Batches are embedded in the order started."""
        ...

    def piece_passes(self, features: np.ndarray) -> bool:
        """Whether some of these clean-view features ``(n, feature_dim)`` (one piece of a video's view 0, as
        :meth:`embed` returned them) show what a video needs to be kept (a pose backbone: a person; a CNN: always).

        A video is judged on its pieces as they come, so that no one holds its whole view: see :meth:`video_failure`.
        """
        ...

    def video_failure(self, frames: int, passed: bool) -> str | None:
        """Why a video is a failure (None: it is not), from its clean view's ``frames`` and whether any of its pieces
        passed (:meth:`piece_passes`)."""
        ...


class ShardSink(Protocol):
    """Where videos go, as they are embedded: the cache's shards. A video is kept once the shard holding it is closed."""

    done_paths: set[str]  # CSV paths in the cache already (closed shards, and those sent since): skipped

    def send(self, record: FeaturePiece | VideoRecord | FailureRecord) -> None:
        """Add to the open shard one embedded piece of a video, the end of a video whose pieces were all sent, or
        the reason a video failed (its pieces sent, if any, are void)."""
        ...

    def check(self) -> None:
        """Raise :class:`~framecache.common.errors.FramecacheError` if writing failed meanwhile (called between batches)."""
        ...

    def close_shard(self) -> None:
        """Close the open shards now: their finished videos are kept from here."""
        ...

    def close(self) -> None:
        """Close the open shards and release the writer."""
        ...


class ProgressReport(Protocol):
    """Counts of one run (or one block) as it goes; called often, shows what it likes."""

    def update(self, done: int, failed: int, frames: int) -> None:
        """``done``: videos done (cached ones included), ``failed``: of those, failed; ``frames``: embedded so far."""
        ...

    def close(self) -> None: ...
