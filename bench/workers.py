"""How many decoding processes keep the backbone busy: extraction with 1, 2, 4, ... ``--workers``, side by side.

On 2 CPU cores one decoder is the design (the backbone needs the other
core). On a GPU the backbone costs the CPU little and one decoder cannot
feed it, so the bench extracts the same clips with each count, in
interleaved rounds, and reports frames/s, the share of its embedding time the
backbone waited for frames, and (on a GPU) the memory's peak. The count that
keeps the backbone busy is the smallest whose median idle share is at most
:data:`BUSY_IDLE_SHARE`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from framecache.bench import phases, stats
from framecache.common.errors import FramecacheError
from framecache.common.options import option_name

BUSY_IDLE_SHARE = 0.05  # the backbone waited for frames at most 5 % of its embedding time
FIGURES = ("extract_fps", "idle_share", "gpu_peak_mb")


def worker_counts(text: str, cores: int, gpu: bool) -> list[int]:
    """``--workers-sweep``: ``auto`` (on a GPU 1, 2, 4, ... up to the cores; elsewhere none), ``none``, or ``1,2,4``."""
    text = text.strip()
    if text == "auto":
        return [2**power for power in range(cores.bit_length()) if 2**power <= cores] if gpu else []
    if text in ("none", ""):
        return []
    try:
        counts = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise FramecacheError(f"{option_name('workers_sweep', text)} takes auto, none or a comma-separated list of decoding "
                              "process counts of 1 or more, e.g. 1,2,4")
    return sorted(set(counts))


def measure_workers(csv: Path, folder: Path, precisions: list[str], engine: str, counts: list[int], rounds: int,
                    log: Callable[[str], None] = print) -> dict:
    """Extract ``csv`` with each count of decoding processes at each precision, ``rounds`` times interleaved.

    Returns the figures per precision and count (median, min–max over the
    rounds) and, per precision, the smallest count that kept the backbone busy
    (``None`` where none did).
    """
    measured: dict[str, dict[int, dict[str, list[float]]]] = {
        precision: {count: {name: [] for name in FIGURES} for count in counts} for precision in precisions}
    for number in range(rounds):
        for count in counts:
            for precision in precisions:
                fps, run = phases.extract_fps(csv, folder / f"workers_{precision}.h5", precision, engine=engine, workers=count)
                found = measured[precision][count]
                found["extract_fps"].append(fps)
                found["idle_share"].append(run["embed_idle_share"])
                if run["gpu_peak_mb"] is not None:
                    found["gpu_peak_mb"].append(run["gpu_peak_mb"])
        log(f"bench: decoding processes, round {number + 1}/{rounds}: " + ", ".join(
            f"{count} -> {measured[precision][count]['extract_fps'][-1]:.0f} fps ({precision})"
            for count in counts for precision in precisions))
    by_precision = {precision: {str(count): {name: stats.summarise(values) for name, values in figures.items()}
                                for count, figures in by_count.items()} for precision, by_count in measured.items()}
    return {"counts": counts, "rounds": rounds, "busy_idle_share": BUSY_IDLE_SHARE, "by_precision": by_precision,
            "keeps_backbone_busy": {precision: busiest(by_count) for precision, by_count in by_precision.items()}}


def busiest(by_count: dict[str, dict]) -> int | None:
    """The smallest count whose median idle share is at most ``BUSY_IDLE_SHARE``; ``None`` if none."""
    for count in sorted(by_count, key=int):
        if by_count[count]["idle_share"]["median"] <= BUSY_IDLE_SHARE:
            return int(count)
    return None
