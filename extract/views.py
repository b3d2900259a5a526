"""A video's views, chunk by chunk: the one way stage one and ``predict`` turn a file into frames.

View 0 is the clean video, decoded and resized as :mod:`framecache.extract.decode`
does; views 1.. are its augmented copies (:mod:`framecache.extract.augment`),
one random transform per view applied to all its frames alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from framecache.common.config import FRAME_SHORTFALL
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance

if TYPE_CHECKING:  # decode imports the decoders' native libraries: loaded where frames are decoded
    from framecache.extract.decode import VideoFrames, VideoInfo


@dataclass(frozen=True)
class DecodeSettings:
    """What a decoding worker needs to turn a path into view frames."""

    size: int
    frame_step: int
    fps: float | None
    chunk_frames: int
    decoder: str
    views: int
    augment: str
    seed: int
    frame_shortfall: float = FRAME_SHORTFALL  # the share of a header's frame count that may fail to decode at its end
    folder_fps: float | None = None  # the frame rate of frame folders whose CSV row gives none
    fit: str = "crop"  # crop (the centre square) or letterbox (the whole picture): the backbone's resize policy

    @classmethod
    def from_provenance(cls, provenance: Provenance, chunk_frames: int = 32, views: int | None = None,
                        frame_shortfall: float | None = None, folder_fps: float | None = None) -> DecodeSettings:  # fmt: skip
        """Decode as the features of ``provenance`` were made (``views``: fewer, e.g. 1 for the clean view only).

        ``frame_shortfall`` and ``folder_fps`` decide which inputs are accepted, not their features: not recorded.
        """
        from framecache.extract.decode import fit_of

        if provenance.input_size is None:
            raise FramecacheError(f"the provenance of these features records no input size ({provenance.backbone}); extract them again")
        return cls(
            size=int(provenance.input_size),
            frame_step=int(provenance.frame_step),
            fps=provenance.fps,
            chunk_frames=chunk_frames,
            decoder=provenance.decoder,
            views=provenance.views if views is None else views,
            augment=provenance.augment,
            seed=provenance.seed,
            frame_shortfall=FRAME_SHORTFALL if frame_shortfall is None else frame_shortfall,
            folder_fps=folder_fps,
            fit=fit_of(provenance.resize),
        )


@dataclass
class VideoViews:
    """One opened video's views, chunk by chunk; ``info`` (what the file says it holds) is known before the first
    chunk, ``frames.source_frames`` (how many of its frames decoded) once the last chunk is taken."""

    frames: VideoFrames
    chunks: Iterator[np.ndarray]  # uint8 (views, n, size, size, 3), in order

    @property
    def info(self) -> VideoInfo:
        return self.frames.info

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.chunks


Placer = Callable[[int], np.ndarray]  # frames n -> uint8 (views, n, size, size, 3) to write a chunk's views into


class ViewDecoder:
    """Decodes videos into their views with one set of :class:`DecodeSettings` (stage one's :class:`Decoder`)."""

    def __init__(self, settings: DecodeSettings):
        from framecache.extract.augment import ViewAugmenter

        self.settings = settings
        # Only views 1.. are augmented: a clean-only decoder needs no (valid) preset.
        self.augmenter = ViewAugmenter(settings.augment, settings.seed) if settings.views > 1 else None

    def open(self, path: str, key: str, fps: float | None = None, place: Placer | None = None) -> VideoViews:
        """Open ``path`` (its header read once); ``key`` (the CSV path) seeds the views; ``fps``: a frame folder's rate;
        ``place(n)``: where to write the views of a chunk of ``n`` frames (a decoder process's shared memory), by
        default a new array.

        Raises :class:`FramecacheError` for a file that cannot be read (see
        :mod:`framecache.extract.decode`), here or while iterating, possibly
        after some chunks: the caller then discards what it received for the video.
        """
        from framecache.extract.decode import iter_frames

        settings = self.settings
        frames = iter_frames(path, size=settings.size, frame_step=settings.frame_step, fps=settings.fps,
                             chunk_frames=settings.chunk_frames, backend=settings.decoder,
                             frame_shortfall=settings.frame_shortfall, folder_fps=fps or settings.folder_fps, fit=settings.fit)
        return VideoViews(frames, self._views(frames, key, place))

    def _views(self, frames: Iterable[np.ndarray], key: str, place: Placer | None) -> Iterator[np.ndarray]:
        decoded = 0
        for chunk in frames:
            shape = (self.settings.views, *chunk.shape)
            views = np.empty(shape, np.uint8) if place is None else place(len(chunk))
            if views.shape != shape:
                raise RuntimeError(f"a place of shape {views.shape} for views of shape {shape}")
            views[0] = chunk
            for view in range(1, self.settings.views):
                self.augmenter(chunk, key, view, start=decoded, out=views[view])
            yield views
            decoded += len(chunk)
        if decoded == 0:
            raise FramecacheError("no frames could be decoded")


def failure_reason(error: BaseException) -> str:
    """Why a video failed, in one line, from what decoding (or embedding) it raised."""
    if isinstance(error, FramecacheError):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory while decoding (frame size too large?)"
    reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]  # decord raises assorted types
    return f"cannot decode: {reason}"
