"""``python -m extract``: stage one, videos listed in a CSV → one HDF5 feature cache."""

from __future__ import annotations

import argparse
import sys

from framecache.common.cli import run_cli
from framecache.common.config import ExtractConfig


def parse_args(argv: list[str] | None = None) -> ExtractConfig:
    defaults = ExtractConfig()
    parser = argparse.ArgumentParser(
        prog="python -m extract",
        description="Decode every video of a CSV, embed each frame with a frozen backbone, "
        "and cache the features in one HDF5 file. Rerunning resumes.",
    )
    parser.add_argument("--csv", default=defaults.csv, help="dataset CSV with path,label[,group][,split] (default %(default)s)")
    parser.add_argument("--out", default=defaults.out, help="HDF5 feature cache to write or resume (default %(default)s)")
    parser.add_argument("--backbone", default=defaults.backbone, help="efficientnetb0 | mobilenet_v2 | efficientnet_lite0 (default %(default)s)")
    parser.add_argument(
        "--weights",
        default=defaults.weights,
        help="imagenet (Keras' cache; download where online) | none (random: no class signal) | PATH to a weights file",
    )
    parser.add_argument("--engine", default=defaults.engine, choices=["auto", "openvino", "tensorflow"], help="inference engine (default %(default)s: OpenVINO when installed)")
    parser.add_argument("--views", type=int, default=defaults.views, help="views per video; view 0 is clean (default %(default)s)")
    parser.add_argument("--augment", default=defaults.augment, help="augmentation preset for views 1.. : none | light | default (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice (default %(default)s)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--frame-step", type=int, default=defaults.frame_step, help="keep every k-th frame (default %(default)s: all)")
    sampling.add_argument("--fps", type=float, default=defaults.fps, help="resample to this frame rate instead (never up)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="frames per backbone call (default %(default)s)")
    parser.add_argument("--chunk-frames", type=int, default=defaults.chunk_frames, help="frames decoded at a time (default %(default)s)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="decoding processes (default %(default)s)")
    parser.add_argument("--decoder", default=defaults.decoder, choices=["pyav", "decord"], help="video decoder (default %(default)s; decord's memory grows with every decoded frame)")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache made with other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    args = parser.parse_args(argv)
    return ExtractConfig(**vars(args))


def main(argv: list[str] | None = None) -> int:
    from framecache.extract.pipeline import run_extraction

    config = parse_args(argv)
    summary = run_extraction(config)
    for path, reason in summary.failures:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(f"{config.out}: {summary.line()}")
    if summary.interrupted:
        print("stopped early; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    run_cli(main, quiet="--quiet" in sys.argv)
