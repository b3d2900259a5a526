"""What the driver and its processes send each other over their pipes, one small class per message.

::

    driver ── DecodeTask, Release, None (stop) ──►  decode worker  ── Frames, End, Failed, Retire ──►  driver
    driver ── FeaturePiece, VideoRecord, FailureRecord, CloseShard, Close ──►  writer  ── Ready, WriterError, ShardClosed, Closed ──►  driver

Every message is pickled by ``multiprocessing``; the classes live here, apart
from the processes, so both sides import the same definitions. Decoded frames
themselves do not go through the pipe: they are rows of the decoder's
:class:`~framecache.extract.frame_ring.FrameRing`, and a message names the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from framecache.common.cache import VideoMeta

# -- driver → decode worker


@dataclass(frozen=True)
class DecodeTask:
    index: int  # the video's row in the dataset
    path: str  # the file (or frame folder) to open
    key: str  # the CSV path: seeds the augmentation, so reruns reproduce it
    fps: float | None = None  # the CSV's fps for this row (a frame folder's rate)


@dataclass(frozen=True, eq=False)
class Release:
    """These rows of the decoder's ring were read: it may write them again."""

    rows: np.ndarray  # int64


# -- decode worker → driver


@dataclass(frozen=True, eq=False)
class Frames:
    """The next chunk of a video's frames, every view of it: written into the decoder's ring, or (a decoder without
    one) sent along."""

    index: int
    offset: int  # of the chunk's first frame in the video's sampled frames
    rows: np.ndarray | None = None  # int64 (views, n): the ring's row holding each frame of each view
    views: np.ndarray | None = None  # uint8 (views, n, size, size, 3), where there is no ring


@dataclass(frozen=True)
class End:
    """Every frame of the video was sent."""

    index: int
    num_frames: int  # sampled frames sent (per view)
    source_frames: int  # frames in the file, as far as decoded (fewer than the header's where it ended early)
    source_fps: float
    header_frames: int | None  # the count the file's header states (None: it states none)


@dataclass(frozen=True)
class Failed:
    """The video cannot be read; frames sent for it before are void."""

    index: int
    reason: str


@dataclass(frozen=True)
class Retire:
    """The worker exits to be replaced (decord leaks memory per decoded frame)."""


# -- driver → writer


@dataclass(frozen=True, eq=False)
class FeaturePiece:
    """Frames of one view of a video, embedded: appended to its shard as they come (:meth:`CacheWriter.add_piece`).

    A video's pieces come view by view in frame order (its views, and other
    videos' pieces, interleaved), then its :class:`VideoRecord`, or a
    :class:`FailureRecord` that voids them.
    """

    path: str  # the video's CSV path
    view: int
    offset: int  # of its first frame in the view
    features: np.ndarray  # float16 (n, feature_dim), as the cache stores them


@dataclass(frozen=True)
class VideoRecord:
    """A video whose pieces were all sent, to commit: arguments of :meth:`CacheWriter.finish_video`."""

    path: str
    label: str
    group: str | None
    split: str | None
    num_frames: int  # per view: the frames its pieces brought
    source_frames: int
    source_fps: float
    header_frames: int | None


@dataclass(frozen=True)
class FailureRecord:
    """One video that could not be read (its pieces sent, if any, are void): arguments of :meth:`CacheWriter.add_failure`."""

    path: str
    label: str
    group: str | None
    split: str | None
    reason: str


@dataclass(frozen=True)
class CloseShard:
    """Close the open shards now (a Ray block's end): their finished videos are kept from here."""


@dataclass(frozen=True)
class Close:
    """Close the open shards and exit."""


# -- writer → driver


@dataclass(frozen=True)
class Ready:
    """The cache is open; these videos (by CSV path) are in it already: skipped on resume, their labels checked."""

    cached: dict[str, VideoMeta]


@dataclass(frozen=True)
class WriterError:
    """Opening or writing failed; the writer closed the file and exits."""

    message: str


@dataclass(frozen=True)
class ShardClosed:
    """The open shard (if any) is closed."""


@dataclass(frozen=True)
class Closed:
    """The open shard is closed; the writer exits."""
