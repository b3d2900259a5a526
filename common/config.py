"""Stage-one settings, and the lists of choices both stages share.

Every field is an option (see :mod:`framecache.common.options`): a flag of
``framecache extract`` (``frame_step`` → ``--frame-step``) and a Make
variable of ``make features`` (``FRAME_STEP=``). ``predict`` rebuilds the
settings that decide the features from a trained run, so they live here,
shared by both stages.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from framecache.common.errors import FramecacheError
from framecache.common.options import Interval, option, option_name, validate

ENGINES = ("auto", "openvino", "tensorflow")
DECODERS = ("pyav", "decord")
AUGMENT_PRESETS = ("none", "light", "default", "blur-noise", "pose")
POSE_BACKBONES = ("pose", "pose_lite", "pose_heavy")  # as extract.pose.backbone.POSE_BACKBONES (kept here: the CLI must not import it)
# The CNN's arithmetic in stage one. f32 everywhere by default (caches from any machine agree);
# bf16 where the hardware runs it natively: OpenVINO on a CPU with BF16, TensorFlow on a GPU.
PRECISIONS = ("f32", "bf16")
AT_LEAST_ONE = Interval(1, None)


def cache_folder(kind: str) -> Path:
    """framecache's own cache of ``kind`` (converted OpenVINO models, pose models): ``$FRAMECACHE_CACHE/<kind>``,
    default ``~/.cache/framecache/<kind>``."""
    return Path(os.environ.get("FRAMECACHE_CACHE", "~/.cache/framecache")).expanduser() / kind

# --frame-shortfall's default: the share of a header's frame count that may fail to decode at a video's end.
# Real clips have decoded 1-6 frames short of headers of 120-622 frames (at most 5 %); a copy cut short by an
# interrupted transfer loses far more (docs/reliability.md).
FRAME_SHORTFALL = 0.1
# --ray: local, auto, ray://host[:port] (Ray Client) or host:port (a head node's GCS address)
RAY_ADDRESS = re.compile(r"local|auto|ray://[\w.\-\[\]:]+|[\w.\-]+:\d+")


@dataclass
class ExtractConfig:
    """Everything ``framecache extract`` takes. Defaults are the CLI's defaults."""

    csv: str = option("data/demo/labels.csv", "dataset CSV with path,label[,group][,split]")
    out: str = option("features.h5", "HDF5 feature cache to write or resume")
    backbone: str = option("efficientnetb0", "frozen backbone: efficientnetb0, mobilenet_v2 or efficientnet_lite0 (offline ImageNet "
                           "weights), or a human pose model: pose (BlazePose full), pose_lite, pose_heavy")
    weights: str = option("imagenet", "imagenet (Keras' cache; downloaded where online; for pose: MediaPipe's models) | none "
                          "(random: no class signal) | PATH to a weights file (pose: a folder of .tflite files or a .task bundle)")
    engine: str = option("auto", "inference engine (auto: OpenVINO when installed, TensorFlow on a GPU)", choices=ENGINES)
    precision: str = option("f32", "the CNN's arithmetic: f32, or bf16 where the hardware has it natively (OpenVINO on a CPU "
                            "with BF16, TensorFlow on a GPU); recorded in the provenance", choices=PRECISIONS)
    views: int = option(2, "views per video; view 0 is the clean video, the others augmented", interval=AT_LEAST_ONE)
    augment: str = option("auto", "augmentation preset of views 1.. (auto: pose for a pose backbone, else default)",
                          choices=("auto", *AUGMENT_PRESETS))
    seed: int = option(0, "seed of every random choice (augmentation)")
    frame_step: int = option(1, "keep every k-th frame (1: all)", interval=AT_LEAST_ONE)
    fps: float | None = option(None, "resample to this frame rate instead of keeping every k-th frame (never up)", interval=Interval(0, None, "neither"))
    batch_size: int = option(32, "frames per backbone call, mixed across videos", interval=AT_LEAST_ONE)
    chunk_frames: int = option(32, "frames decoded at a time per video (memory stays flat)", interval=AT_LEAST_ONE)
    workers: int | None = option(None, "decoding processes (default: one, and one more, up to one per core, each time the "
                                 "backbone waits for frames); with --ray local: the CPUs of the Ray cluster started here "
                                 "(default 1)", interval=AT_LEAST_ONE)
    frame_shortfall: float = option(FRAME_SHORTFALL, "the share of a video's frames, of its header's count, that may fail "
                                    "to decode at its end (a header's count is an estimate); a video missing more is "
                                    "recorded as failed", interval=Interval(0, 1))
    folder_fps: float | None = option(None, "frame rate of the frame folders whose CSV row has no fps (needed to sample "
                                      "them with --fps)", interval=Interval(0, None, "neither"))
    decoder: str = option("pyav", "video decoder (decord's memory grows with every decoded frame of a video, pyav's stays flat: docs/reliability.md)", choices=DECODERS)
    # 64: framecache.common.cache.writer.SHARD_VIDEOS (not imported here: h5py is heavy), where the bound is explained.
    shard_videos: int = option(64, "videos per cache shard: a shard is kept for good once closed, after this many videos, "
                               "256 MB or 5 minutes; a kill of the writer loses at most its open shard", interval=AT_LEAST_ONE)
    overwrite: bool = option(False, "replace a cache made with other settings")
    quiet: bool = option(False, "no progress, warnings only")
    ray: str | None = option(None, "run on a Ray cluster (pip install -e '.[ray]'): local (start one here with --workers CPUs), "
                             "auto (join the running cluster, or RAY_ADDRESS) or ray://HOST:10001; unset: no Ray")
    actor_cpus: int = option(1, "with --ray: CPU cores per Ray actor (one backbone, built once; its threads and decoders)",
                             interval=AT_LEAST_ONE)
    block_videos: int | None = option(None, "with --ray: videos per block, one task writing shards of its own (default: up "
                                      "to --shard-videos, one shard, and at least 2 blocks per actor)", interval=AT_LEAST_ONE)

    def augment_preset(self) -> str:
        """The preset views 1.. are made with (``auto`` resolved: ``pose`` for a pose backbone, else ``default``);
        the provenance records this one."""
        if self.augment != "auto":
            return self.augment
        return "pose" if self.backbone in POSE_BACKBONES else "default"

    def validate(self) -> ExtractConfig:
        """Check values at the boundary; raise :class:`FramecacheError` naming the bad one."""
        validate(self)
        if self.fps is not None and self.frame_step != 1:
            raise FramecacheError(f"give either {option_name('frame_step')} or {option_name('fps')}, not both")
        if self.ray is not None and not RAY_ADDRESS.fullmatch(self.ray):
            raise FramecacheError(
                f"{option_name('ray', self.ray)} is not a Ray cluster: give local (a cluster on this machine), auto (the "
                "running cluster, or RAY_ADDRESS), ray://HOST:10001 (Ray Client) or HOST:6379 (the head node's GCS)"
            )
        if self.views == 1 and self.augment != "none":
            self.augment = "none"  # a single view is the clean one: no preset applies
        return self
