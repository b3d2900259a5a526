"""``framecache sweep --features F --units 64,128 --dropout 0.2,0.4``: a small grid on one cache.

The cache is opened once (its features held in memory or streamed, as
``--in-memory`` says) and every combination trains on it; each run is a full
run folder under ``--out``, and the comparison table closes the sweep. Every
training flag takes comma-separated values; ``--grid grid.json`` gives the same
as ``{"units": [64, 128], "dropout": [0.2, 0.4]}`` (its values win).

Unless told otherwise (``--inputs both``), a sweep covers every input mode
(:data:`SWEEP_DEFAULTS`): what the GRU should read is the first question on
new data. The table shows each run's validation figures beside its test
figures and the baseline's, and the sweep closes by naming the best run by
validation balanced accuracy (:func:`framecache.train.compare.best_line`):
choose on validation, read the test figures of the chosen run only.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

from framecache.common.errors import FramecacheError
from framecache.train.config import INPUT_CHOICES, RUN_CONTROL, TrainConfig

log = logging.getLogger(__name__)

SWEEPABLE = tuple(name for name in TrainConfig.__dataclass_fields__ if name not in RUN_CONTROL)
# What a sweep tries when its flag is not given (every other setting: the training default).
SWEEP_DEFAULTS = {"inputs": list(INPUT_CHOICES)}


def read_grid(path: str) -> dict[str, list]:
    """A grid file: a JSON object of setting name → list of values (a single value is a list of one)."""
    try:
        grid = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FramecacheError(f"grid file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise FramecacheError(f"grid file {path} is not valid JSON: {error}") from None
    if not isinstance(grid, dict):
        raise FramecacheError(f"grid file {path} must hold a JSON object like {{\"units\": [64, 128]}}")
    unknown = sorted(set(grid) - set(SWEEPABLE))
    if unknown:
        raise FramecacheError(f"grid file {path} names unknown setting(s) {unknown}; known: {', '.join(SWEEPABLE)}")
    return {key: value if isinstance(value, list) else [value] for key, value in grid.items()}


def grid_configs(base: TrainConfig, grid: dict[str, list], out: Path) -> list[TrainConfig]:
    """One validated config per combination, each with its run folder ``out/<swept values>``."""
    swept = [key for key, values in grid.items() if len(values) > 1]
    configs = []
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        name = "-".join(f"{key}{settings[key]}" for key in swept) or "base"
        configs.append(TrainConfig.from_dict({**base.to_dict(), **settings, "run": str(out / name)}).validate())
    return configs


def run_sweep(base: TrainConfig, grid: dict[str, list], out: str | Path) -> Path:
    """Train every combination of ``grid`` on ``base.features`` (read once); return the sweep folder."""
    from framecache.train.data import load_cache
    from framecache.train.fit import run_training
    from framecache.train.report import format_headline

    out = Path(out)
    configs = grid_configs(base, grid, out)  # every value checked before any training
    data = load_cache(base.features, in_memory=base.in_memory)
    try:
        for number, config in enumerate(configs, start=1):
            metrics = run_training(config, data=data)
            baseline = metrics.baseline
            versus = "" if baseline is None else f"; baseline {format_headline(baseline, baseline.spread)}"
            log.info("run %d/%d %s: validation balanced accuracy %.3f; test %s%s (%.1f s)", number, len(configs), Path(config.run).name,
                     metrics.val.balanced_accuracy, format_headline(metrics, metrics.spread), versus, metrics.seconds)
    finally:
        data.close()
    return out
