"""Stage-one settings, and which of them decide the features (the provenance).

``predict`` rebuilds exactly these settings from a trained run, so they live
here, shared by both stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from framecache.common.errors import FramecacheError


@dataclass
class ExtractConfig:
    """Everything ``python -m extract`` takes. Defaults are the CLI's defaults."""

    csv: str = "data/demo/labels.csv"
    out: str = "features.h5"
    backbone: str = "efficientnetb0"
    weights: str = "imagenet"  # imagenet | none | PATH to a weights file
    engine: str = "auto"  # auto | openvino | tensorflow
    views: int = 2  # view 0 is the clean video; 1..views-1 are augmented
    augment: str = "default"  # none | light | default
    seed: int = 0
    frame_step: int = 1  # keep every k-th frame
    fps: float | None = None  # or resample to this frame rate (never up)
    batch_size: int = 32  # frames per backbone call, mixed across videos
    chunk_frames: int = 32  # frames decoded at a time per video (memory stays flat)
    workers: int = 1  # decoding processes
    decoder: str = "pyav"  # pyav | decord (decord leaks memory per frame: see README, Performance)
    overwrite: bool = False
    quiet: bool = False

    def validate(self) -> ExtractConfig:
        """Check values at the boundary; raise :class:`FramecacheError` naming the bad one."""
        positive_ints = ("views", "frame_step", "batch_size", "chunk_frames", "workers")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise FramecacheError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.fps is not None and not self.fps > 0:
            raise FramecacheError(f"fps must be > 0, got {self.fps!r}")
        if self.fps is not None and self.frame_step != 1:
            raise FramecacheError("give either frame_step or fps, not both")
        if self.engine not in ("auto", "openvino", "tensorflow"):
            raise FramecacheError(f"engine must be auto, openvino or tensorflow, got {self.engine!r}")
        if self.decoder not in ("decord", "pyav"):
            raise FramecacheError(f"decoder must be decord or pyav, got {self.decoder!r}")
        if self.views == 1 and self.augment != "none":
            self.augment = "none"  # a single view is the clean one: no preset applies
        return self
