"""``python -m train``: train a GRU on a feature cache and write a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from framecache.common.cli import run_cli
from framecache.train.config import TrainConfig, add_config_arguments


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a GRU on the cached per-frame features of stage one (no video decoding, no CNN) "
        "and write the model, metrics, reports and plots to a run folder.",
    )
    add_config_arguments(parser)
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    from framecache.train.fit import run_training
    from framecache.train.report import console_summary

    config = parse_args(argv)
    metrics = run_training(config)
    print(console_summary(metrics, Path(config.run)))
    return 0


if __name__ == "__main__":
    run_cli(main, quiet="--quiet" in sys.argv)
