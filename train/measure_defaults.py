"""Measure stage two's candidate defaults against each other and the baseline, by cross-validation.

    python -m framecache.train.measure_defaults --cache motion=motion.h5 --cache appearance=appearance.h5 \\
        --candidates default,raw --cv 6 --seeds 0,1,2 --views --out measure.json

For every cache (a name for the table, then the path), every seed and every
fold of ``--cv`` folds by subject (``StratifiedGroupKFold``, as ``framecache
train --cv``), each candidate trains with the default settings but for its own
(``--candidates``, from :data:`CANDIDATES`; ``default`` is ``framecache
train``'s defaults), exactly as ``framecache train`` does (:func:`fit_split`),
and the baseline (:mod:`framecache.train.baseline`) fits on the same training
videos. A candidate that mixes in the appearance model also reports its GRU
alone (``<name>/gru``), the other combiner refitted on the same parts
(``<name>/classwise`` or ``<name>/weight``) and, on one cache, version 0.3's
mix with a mean-only baseline (``<name>/mean-baseline``). With ``--views`` the test videos are also predicted
from every cached view and the probabilities averaged (test-time
augmentation: ``<name>+views``).

Prints one table: balanced accuracy on the test folds, mean ± std over every
fold of every seed, then each candidate's mean paired difference from
``--reference`` with its standard error (over the folds); writes every figure
to ``--out``. The figures in docs/accuracy.md ("The defaults, by measurement")
come from this script; it takes minutes, so it is not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("framecache.measure")

CANDIDATES = {
    "default": {},  # TrainConfig's defaults, whatever they are
    "centred": {"inputs": "centred", "appearance": False},
    "raw": {"inputs": "raw", "appearance": False},
    "both": {"inputs": "both", "appearance": False},
    "centred+mix": {"inputs": "centred", "appearance": True},
    "raw+mix": {"inputs": "raw", "appearance": True},
    "both+mix": {"inputs": "both", "appearance": True},
    "classwise": {"combine": "classwise"},  # the parts stacked class by class
    "weight": {"combine": "weight"},  # one weight per part, for every class (framecache 0.3's mix)
}
OTHER_COMBINER = {"weight": "classwise", "classwise": "weight"}
GRU_ALONE = "/gru"  # a candidate that mixes in the appearance model also reports its GRU alone, as "<name>/gru"
BASELINE = "baseline"
BASELINE_MEAN = "baseline/mean"  # the baseline on each video's mean alone (framecache 0.3's)


def _figures(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    from framecache.train.figures import headline

    return headline(labels, probabilities, classes).to_json()


def _kept(split, val_probabilities: np.ndarray, test_probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """What the JSON keeps per fold besides the figures: the videos and probabilities, to study combinations afterwards."""
    return {
        "val": split.val.tolist(), "test": split.test.tolist(),
        "val_labels": labels[split.val].tolist(), "test_labels": labels[split.test].tolist(),
        "val_probabilities": np.round(val_probabilities, 5).tolist(), "test_probabilities": np.round(test_probabilities, 5).tolist(),
    }


def measure_cache(path: str, candidates: list[str], cv: int, seeds: list[int], views: bool, overrides: dict, progress=None) -> dict:
    """Per candidate (and the baseline), the figures of every fold of every seed on one cache.

    ``progress(partial)``, if given, is called after every fold with the results so far.
    """
    from framecache.train.baseline import baseline_split
    from framecache.train.combine import combine, fit_combiner
    from framecache.train.config import TrainConfig
    from framecache.train.data import SequenceBatches, load_cache
    from framecache.train.fit import fit_split
    from framecache.train.model import predict_probabilities
    from framecache.train.run_folder import RunFolder
    from framecache.train.splits import group_ids, make_folds

    data = load_cache(path.split("+"))  # pose.h5+cnn.h5: caches of the same videos, joined
    summary = {"path": path, "videos": data.num_videos, "classes": data.classes, "weights": data.weights, "backbone": data.backbone}
    names = np.asarray(data.classes, dtype=object)[data.labels]
    groups = group_ids(data.groups)
    cached_views = int(np.min(data.features.views))
    results: dict[str, list] = {name: [] for name in [*candidates, BASELINE, BASELINE_MEAN]}
    for name in candidates:
        if TrainConfig(**CANDIDATES[name]).appearance:
            results[name + GRU_ALONE] = []
    if views and cached_views > 1:
        results.update({f"{name}+views": [] for name in candidates})
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            for fold, split in enumerate(make_folds(names, groups, cv, TrainConfig().val_fraction, seed)):
                baseline = baseline_split(data.features, data.labels, split, len(data.classes), seed=seed, spans=data.spans, max_len=TrainConfig().max_len,
                                          groups=groups)
                results[BASELINE].append({"seed": seed, "fold": fold + 1, **_figures(data.labels[split.test], baseline.test_probabilities, data.classes),
                                          **_kept(split, baseline.val_probabilities, baseline.test_probabilities, data.labels)})
                mean_only = baseline_split(data.features, data.labels, split, len(data.classes), seed=seed, spans=data.spans, pooling="mean", max_len=TrainConfig().max_len)
                results[BASELINE_MEAN].append({"seed": seed, "fold": fold + 1, **_figures(data.labels[split.test], mean_only.test_probabilities, data.classes)})
                for name in candidates:
                    config = TrainConfig(features=path.split("+"), quiet=True, seed=seed, **{**overrides, **CANDIDATES[name]}).validate()
                    started = time.perf_counter()
                    result = fit_split(data, split, config, RunFolder(scratch).history_file)
                    row = {"seed": seed, "fold": fold + 1, "epochs": result.epochs, "seconds": time.perf_counter() - started}
                    results[name].append({**row, **_figures(data.labels[split.test], result.test_probabilities, data.classes),
                                          **_kept(split, result.val_probabilities, result.test_probabilities, data.labels),
                                          "part_weights": None if result.combiner is None else result.combiner.part_weights(),
                                          "parts": {part.name: {"val_probabilities": np.round(part.val_probabilities, 5).tolist(),
                                                                "test_probabilities": np.round(part.test_probabilities, 5).tolist()}
                                                    for part in result.parts}})  # fmt: skip
                    if result.combiner is not None:  # the other combiner, and version 0.3's mix, refitted on the same parts
                        other = OTHER_COMBINER[result.combiner.method]
                        refits = [(f"{name}/{other}", other, result.parts)]
                        if len(data.parts) == 1:
                            refits.append((f"{name}/mean-baseline", "weight", [result.parts[0], mean_only]))
                        for refit, method, fitted in refits:
                            combiner, _ = fit_combiner(method, data.labels[split.val], [part.val_probabilities for part in fitted])
                            combined = combine(combiner, [part.test_probabilities for part in fitted])
                            results.setdefault(refit, []).append({**row, **_figures(data.labels[split.test], combined, data.classes)})
                    if name + GRU_ALONE in results:
                        gru = result.parts[0]
                        results[name + GRU_ALONE].append({**row, **_figures(data.labels[split.test], gru.test_probabilities, data.classes),
                                                          **_kept(split, gru.val_probabilities, gru.test_probabilities, data.labels)})
                    if f"{name}+views" in results:
                        probabilities = np.mean(
                            [
                                predict_probabilities(
                                    result.model,
                                    SequenceBatches(data.features, None, split.test, config.max_len, config.frame_step, config.batch_size, view=view),
                                )
                                for view in range(cached_views)
                            ],
                            axis=0,
                        )
                        results[f"{name}+views"].append({**row, **_figures(data.labels[split.test], probabilities, data.classes)})
                    log.info("%s seed %d fold %d %s: balanced accuracy %.3f (baseline %.3f), %d epochs, %.1f s", Path(path).name, seed, fold + 1,
                             name, results[name][-1]["balanced_accuracy"], results[BASELINE][-1]["balanced_accuracy"], result.epochs, row["seconds"])
                if progress is not None:
                    progress({**summary, "views": cached_views, "results": results})
    data.close()
    return {**summary, "views": cached_views, "results": results}


def summarise(measured: dict, reference: str, metric: str = "balanced_accuracy") -> str:
    """The table: ``mean ± std`` over folds and seeds, and the paired difference from ``reference`` with its standard error."""
    names = list(next(iter(measured.values()))["results"])
    lines = [f"{metric} on the test folds: mean ± std over every fold of every seed; Δ = paired difference from {reference} ± its standard error",
             "| candidate | " + " | ".join(f"{cache} | Δ" for cache in measured) + " |",
             "| --- | " + " | ".join("--- | ---" for _ in measured) + " |"]
    for name in names:
        cells = []
        for cache in measured.values():
            rows = cache["results"].get(name, [])
            values = np.array([row[metric] for row in rows])
            base = np.array([row[metric] for row in cache["results"].get(reference, [])])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}" if len(values) else "")
            if len(values) and len(base) == len(values) and name != reference:
                difference = values - base
                cells.append(f"{difference.mean():+.3f} ± {difference.std(ddof=1) / np.sqrt(len(difference)):.3f}")
            else:
                cells.append("")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecache.train.measure_defaults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", action="append", required=True, metavar="NAME=PATH",
                        help="a feature cache to measure on (repeat); PATH+PATH: caches of the same videos, joined")
    parser.add_argument("--candidates", default="default,raw", help=f"comma-separated, from {', '.join(CANDIDATES)} (default %(default)s)")
    parser.add_argument("--reference", default="default", help="the candidate the others are compared with, or 'baseline' (default %(default)s)")
    parser.add_argument("--cv", type=int, default=6, help="folds by subject (default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds: each draws its own folds and initial weights (default %(default)s)")
    parser.add_argument("--views", action="store_true", help="also average each model's test predictions over every cached view")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="another training setting for every candidate (repeat)")
    parser.add_argument("--out", help="write every figure here as JSON")
    args = parser.parse_args(argv)
    from framecache import process_setup

    process_setup.for_command(reads_caches=True)  # as `framecache train` sets up its process
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("framecache.train", "framecache.common"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from framecache.common.options import parse_value, value_type
    from framecache.train.config import TrainConfig

    candidates = [name.strip() for name in args.candidates.split(",") if name.strip()]
    unknown = [name for name in candidates if name not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; known: {', '.join(CANDIDATES)}")
    overrides = {}
    for setting in args.set:
        key, _, text = setting.partition("=")
        overrides[key] = parse_value(value_type(TrainConfig, key), text)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    measured = {}

    def save(table: str | None = None) -> None:
        if args.out:
            record = {"argv": sys.argv[1:] if argv is None else argv, "cv": args.cv, "seeds": seeds, "settings": overrides, "caches": measured, "table": table}
            Path(args.out).write_text(json.dumps(record, indent=1) + "\n")

    for entry in args.cache:
        name, _, path = entry.partition("=")

        def progress(partial: dict, name: str = name) -> None:
            measured[name] = partial
            save()

        measured[name] = measure_cache(path or name, candidates, args.cv, seeds, args.views, overrides, progress)
    table = summarise(measured, args.reference)
    print(table)
    save(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
