"""The ``framecache`` command: one subcommand per job, each a thin layer over a library function.

Building the parser imports nothing heavy, so ``framecache --help`` and
``framecache train --help`` answer at once; TensorFlow is imported only by the
subcommand that needs it. Stage one's and stage two's flags are generated from
their config dataclasses (:mod:`framecache.common.options`).

This is the one place that knows the command line's vocabulary: messages made
during a command name options as flags (``--max-len 32``), or, under make
(``FRAMECACHE_MAKE=1``, set by the Makefile), as the Make variables that are the
same options (``MAX_LEN=32``, read here as the flags' defaults). What the
command's process needs around the library (quiet TensorFlow, capped malloc
arenas) is set up by :func:`main` through :mod:`framecache.process_setup`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from framecache import __version__, process_setup
from framecache.common import options
from framecache.common.cli import run_cli
from framecache.common.config import ENGINES, ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.train.config import TrainConfig
from framecache.train.sweep import SWEEP_DEFAULTS, SWEEPABLE


def _print_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-config", action="store_true", help="print the settings as JSON and exit, doing nothing")


def _extract_parser(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, ExtractConfig)
    _print_config_flag(parser)


def _extract(args: argparse.Namespace) -> int:
    config = ExtractConfig(**{name: getattr(args, name) for name in ExtractConfig.__dataclass_fields__})
    if args.print_config:
        print(json.dumps(asdict(config.validate())))
        return 0
    from framecache.extract.pipeline import run_extraction

    summary = run_extraction(config)  # checks the settings, once
    for path, reason in summary.failures:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(f"{config.out}: {summary.line()}")
    from framecache.extract.engines import available_cores

    notice = summary.decoding_notice(config.workers, available_cores())
    if notice:
        logging.getLogger("framecache.extract").warning(notice)
    if summary.interrupted:
        print("stopped early; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _info_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("features", help="the HDF5 feature cache")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--csv", help="also say where the cache and this dataset CSV disagree (labels, groups, splits)")


def _info(args: argparse.Namespace) -> int:
    from framecache.common.cache import FeatureCache
    from framecache.extract.info import csv_agreement, format_summary

    with FeatureCache(args.features) as cache:
        summary = cache.summary()
        if args.csv:
            summary["csv_agreement"] = csv_agreement(cache, args.csv)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def _merge_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the cache to merge into (created if missing)")
    parser.add_argument("caches", nargs="+", help="caches made with the same settings; a schema-1 cache is converted")


def _merge(args: argparse.Namespace) -> int:
    from framecache.common.cache import merge_caches

    print(merge_caches(args.out, args.caches).line())
    return 0


def _train_parser(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, TrainConfig)
    _print_config_flag(parser)


def _train(args: argparse.Namespace) -> int:
    config = _config(TrainConfig, args)
    if args.print_config:
        print(json.dumps(asdict(config)))
        return 0
    from framecache.train.fit import run_training
    from framecache.train.report import console_summary

    metrics = run_training(config)
    print(console_summary(metrics, Path(config.run)))
    return 0


def _evaluate_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by `framecache train` (or its model.keras)")
    parser.add_argument("--features", required=True, nargs="+", help="HDF5 feature cache to evaluate on (a run trained on several: "
                        "as many, in the run's order)")
    parser.add_argument("--split", default="test", choices=["test", "all", "val", "train"],
                        help="which videos: the run's own test videos (test, default; a cross-validation run: each by the fold "
                        "that did not train on it), every video of a cache of new videos (all: refused if any trained the run; "
                        "a cross-validation run predicts with its folds' mean probabilities), or the run's val/train videos (optimistic)")
    parser.add_argument("--out", help="also write metrics.json, report.txt, confusion.png and predictions.csv here")
    parser.add_argument("--quiet", action="store_true", help="warnings and the result only")


def _evaluate(args: argparse.Namespace) -> int:
    from framecache.train import report
    from framecache.train.evaluate import evaluate_run

    metrics = evaluate_run(args.run, args.features, args.split, args.out)
    if metrics.get("warning"):
        print(metrics["warning"])
    print(f"{metrics['videos']} videos of {' '.join(args.features)} ({metrics['evaluated']}): model {report.format_headline(metrics, ci=metrics['ci'])}")
    if "baseline" in metrics:
        print(f"  baseline {report.format_headline(metrics['baseline'], ci=metrics['baseline']['ci'])}")
    print(f"[ ]: {metrics['ci']['method']}")
    if args.out:
        print(f"files in {args.out}: metrics.json, report.txt, confusion.png, predictions.csv")
    return 0


def _predict_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by `framecache train` (or its model.keras)")
    parser.add_argument("--top", type=int, default=3, help="classes listed per video (default %(default)s)")
    parser.add_argument("--engine", default="auto", choices=ENGINES, help="backbone inference engine (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="warnings only on stderr")
    parser.add_argument("--folder-fps", type=float, help="frame rate of the frame folders among VIDEOS (needed only where "
                        "the run's features were sampled with --fps)")
    parser.add_argument("videos", nargs="+", help="video files, or folders of frames (JPEG/PNG in frame order)")


def _predict(args: argparse.Namespace) -> int:
    from framecache.train.predict import predict_videos

    if args.top < 1:
        raise FramecacheError(f"{options.option_name('top')} must be >= 1, got {args.top}")
    if args.folder_fps is not None and not args.folder_fps > 0:
        raise FramecacheError(f"{options.option_name('folder_fps')} must be a positive frame rate, got {args.folder_fps}")
    lines = predict_videos(args.run, args.videos, engine=args.engine, top=args.top, folder_fps=args.folder_fps)
    for line in lines:
        print(json.dumps(line), flush=True)
    return 1 if all("error" in line for line in lines) else 0


def _compare_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="?", default="runs", help="folder holding run folders (default %(default)s)")


def _compare(args: argparse.Namespace) -> int:
    from framecache.train.compare import format_table, runs_table

    print(format_table(runs_table(args.runs)))
    return 0


def _sweep_parser(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, TrainConfig, as_lists=SWEEPABLE, skip=("run",))
    parser.set_defaults(**SWEEP_DEFAULTS)  # a sweep tries every input mode unless told otherwise
    for action in parser._actions:
        if action.dest in SWEEP_DEFAULTS:
            action.help = f"{action.help.split(' (default')[0]} (a sweep tries {','.join(map(str, SWEEP_DEFAULTS[action.dest]))} unless given)"
    parser.add_argument("--grid", help="JSON file: {\"setting\": [values, ...]}; overrides the same flags")
    parser.add_argument("--out", help="folder for the sweep's runs (default runs/sweep-<timestamp>)")


def _sweep(args: argparse.Namespace) -> int:
    from datetime import datetime

    from framecache.train.compare import best_line, format_table, runs_table
    from framecache.train.sweep import read_grid, run_sweep

    values = vars(args).copy()
    grid_file, out = values.pop("grid"), values.pop("out")
    grid = {key: values.pop(key) for key in SWEEPABLE}
    if grid_file:
        grid.update(read_grid(grid_file))
    base = TrainConfig(**{name: value for name, value in values.items() if name in TrainConfig.__dataclass_fields__})
    base.quiet = True  # no per-epoch lines: one line per run
    out = out or f"runs/sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_sweep(base, grid, out)
    table = runs_table(out)
    print(format_table(table))
    print(best_line(table))
    return 0


def _bench_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench/results.json", help="where the results go, as JSON (default %(default)s)")
    parser.add_argument("--csv", help="benchmark on these videos instead of generated clips")
    parser.add_argument("--clips", type=int, help="generated clips, all extracted every round (default 8; quick 4)")
    parser.add_argument("--seconds", type=float, help="length of each generated clip (default 10; quick 4)")
    parser.add_argument("--long-minutes", help="video lengths for the memory check (default 1,10; quick: none)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds, each measuring every phase once (default 3; quick 2)")
    parser.add_argument("--quick", action="store_true", help="for development: fewer and shorter clips, 2 rounds, "
                        "no long-video memory check (about a minute)")
    parser.add_argument("--precisions", default="f32,bf16", help="stage one's precisions to compare with f32; those this "
                        "machine lacks are reported as such (default %(default)s)")
    parser.add_argument("--accuracy", action="store_true", help="also the demo's GRU test accuracy per precision "
                        "(EfficientNet-Lite0 ImageNet features; about 2 minutes more)")
    parser.add_argument("--train-memory", action=argparse.BooleanOptionalAction, default=None, help="stage two's memory "
                        "bar: peak RSS of make train streamed on 10,000 vs 2,000 synthetic videos, and streamed vs in-memory "
                        "seconds per epoch (default: on; off with --quick)")
    parser.add_argument("--pose-models", help="folder of MediaPipe's pose models (pose_detection.tflite and "
                        "pose_landmark_<size>.tflite, or pose_landmarker_<size>.task): the pose backbone per size found, "
                        "alone and through stage one (default: where --backbone pose looks, $FRAMECACHE_CACHE/pose; "
                        "nothing is downloaded; none found: skipped)")
    parser.add_argument("--engine", default="auto", choices=ENGINES, help="the backbone's engine, alone and in every "
                        "extraction (auto: OpenVINO, TensorFlow on a GPU; tensorflow: what a GPU runs) (default %(default)s)")
    parser.add_argument("--workers-sweep", default="auto", help="also extract with each of these counts of decoding processes, "
                        "e.g. 1,2,4: frames/s, the backbone's idle share, GPU memory (auto: on a GPU 1, 2, 4, ... up to the "
                        "cores; elsewhere none; none: skip) (default %(default)s)")


def _bench(args: argparse.Namespace) -> int:
    from framecache.bench.run import run_bench

    return run_bench(out=args.out, csv=args.csv, clips=args.clips, seconds=args.seconds, long_minutes=args.long_minutes,
                     rounds=args.rounds, quick=args.quick, precisions=args.precisions, accuracy=args.accuracy,
                     train_memory=args.train_memory, pose_models=args.pose_models, engine=args.engine,
                     workers_sweep=args.workers_sweep)


# Flags that Make variables never set: their Make names mean something else in the Makefile
# (OUT= is the feature cache), so the Makefile passes them under their own names.
MAKE_SKIP = {"evaluate": ("out",), "sweep": ("out",), "bench": ("out",)}

# name: (build its flags, run it, one line of help)
COMMANDS = {
    "extract": (_extract_parser, _extract, "stage one: decode the CSV's videos, embed every frame, cache the features (resumes)"),
    "info": (_info_parser, _info, "what a feature cache holds: provenance, videos per label, failures"),
    "merge": (_merge_parser, _merge, "bring caches made with the same settings into one (also converts a schema-1 cache)"),
    "train": (_train_parser, _train, "stage two: train a GRU on a feature cache and write a run folder"),
    "evaluate": (_evaluate_parser, _evaluate, "a trained run's model on a feature cache"),
    "predict": (_predict_parser, _predict, "label new videos end to end with a trained run (one JSON line each)"),
    "compare": (_compare_parser, _compare, "one table of every run under a folder"),
    "sweep": (_sweep_parser, _sweep, "train a grid of settings on one cache (read once) and compare them"),
    "bench": (_bench_parser, _bench, "stage one and two measured side by side"),
}


STAGE_TWO = ("train", "sweep", "evaluate")  # the commands that stream feature caches (see process_setup)
# Set by the Makefile on every command it runs: flags then also come from Make variables.
MAKE_ENV = "FRAMECACHE_MAKE"
# Make targets whose name differs from the framecache command they run.
MAKE_TARGETS = {"extract": "features"}


def make_variable(name: str) -> str:
    """The Make variable of an option: ``max_len`` → ``MAX_LEN``.

    >>> make_variable("max_len")
    'MAX_LEN'
    """
    return name.upper()


class FlagSpelling(options.Spelling):
    """Options as the command line spells them: ``--test-fraction 0.1``, ``--no-appearance``."""

    def option(self, name: str, value: object = None) -> str:
        return options.command_line_option(name, value)


class MakeSpelling(options.Spelling):
    """Options as Make variables (``TEST_FRACTION=0.1``, ``APPEARANCE=0``) and commands as Make targets."""

    def option(self, name: str, value: object = None) -> str:
        if value is None:
            return make_variable(name)
        return f"{make_variable(name)}={int(value) if isinstance(value, bool) else value}"

    def command(self, command: str, values: dict[str, object]) -> str:
        target = MAKE_TARGETS.get(command, command)
        return " ".join([f"make {target}", *(self.option(name, value) for name, value in values.items())])


def make_defaults(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (), environ: Mapping[str, str] | None = None) -> None:
    """Under make, turn the Make variables that name a parser's flags (``MAX_LEN=32``) into its defaults.

    The Makefile exports every variable given on its command line and sets
    ``FRAMECACHE_MAKE=1``; flags given explicitly (``ARGS=...``) still win.
    """
    environ = os.environ if environ is None else environ
    if not environ.get(MAKE_ENV):
        return
    defaults = {}
    for action in parser._actions:
        text = environ.get(make_variable(action.dest), "")
        if not action.option_strings or action.dest in ("help", *skip) or not text.strip():
            continue
        is_flag = isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction))
        try:
            if action.nargs == "+":  # FEATURES="pose.h5 cnn.h5": one value per word
                value = [(action.type or str)(word) for word in text.split()]
            else:
                value = options.parse_bool(text) if is_flag else (action.type or str)(text.strip())
        except (ValueError, argparse.ArgumentTypeError):
            kind = "true/false (1/0)" if is_flag else getattr(action.type, "__name__", "value")
            raise FramecacheError(f"{make_variable(action.dest)}={text} is not a valid {kind}") from None
        if action.choices is not None and value not in action.choices:
            raise FramecacheError(f"{make_variable(action.dest)}={text}: choose one of {', '.join(map(str, action.choices))}")
        defaults[action.dest] = value
    parser.set_defaults(**defaults)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; under make, Make variables become the subcommands' defaults."""
    parser = argparse.ArgumentParser(
        prog="framecache",
        description="Classify short labelled videos: a frozen CNN's per-frame features are cached once (extract), "
        "a GRU trains on them in seconds (train).",
    )
    parser.add_argument("--version", action="version", version=f"framecache {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add_flags, run, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        add_flags(command)
        make_defaults(command, skip=MAKE_SKIP.get(name, ()))
        command.set_defaults(command_handler=run)
    return parser


def _config(config_class: type, args: argparse.Namespace):
    """The config dataclass from parsed flags, checked at the boundary."""
    return config_class(**{name: getattr(args, name) for name in config_class.__dataclass_fields__}).validate()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``framecache`` command."""
    argv = sys.argv[1:] if argv is None else argv
    spelling = MakeSpelling() if os.environ.get(MAKE_ENV) else FlagSpelling()

    def run() -> int:
        with options.spelled(spelling):
            args = build_parser().parse_args(argv)
            if getattr(args, "quiet", False) or args.command == "info":
                logging.getLogger().setLevel(logging.WARNING)
            return args.command_handler(args)

    process_setup.for_command(reads_caches=bool(argv) and argv[0] in STAGE_TWO)
    run_cli(run)


if __name__ == "__main__":
    main()
