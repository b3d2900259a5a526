"""The bench's arithmetic over rounds, kept pure so it can be tested on made-up measurements.

A *round* measures every phase once and is a flat ``{figure: value}`` dict.
Each figure is summarised over the rounds by its median and min–max; each
ratio is computed *within* each round (so a machine that slows down between
rounds moves numerator and denominator together) and then summarised the
same way. ``spread`` is the largest distance of a round from the median, as a
fraction of the median: the issue's goal of "every headline ratio within
+-10 % of its median" is ``spread <= 0.10``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence


def summarise(values: Iterable[float]) -> dict:
    """Median, min, max and spread (largest |value - median| / median) of the finite values; {} if none."""
    kept = [float(value) for value in values if value is not None and math.isfinite(value)]
    if not kept:
        return {}
    median = statistics.median(kept)
    spread = max(abs(value - median) for value in kept) / abs(median) if median else 0.0
    return {"median": median, "min": min(kept), "max": max(kept), "spread": spread, "rounds": kept}


def figures(rounds: Sequence[Mapping[str, float]]) -> dict[str, dict]:
    """Every numeric figure of the rounds, summarised; a figure missing from some rounds uses the others."""
    names = list(dict.fromkeys(name for measured in rounds for name, value in measured.items() if _is_number(value)))
    return {name: summarise(measured[name] for measured in rounds if _is_number(measured.get(name))) for name in names}


def ratios(rounds: Sequence[Mapping[str, float]], definitions: Mapping[str, tuple[str, str]]) -> dict[str, dict]:
    """Each ratio ``name: (numerator, denominator)`` computed within each round, then summarised.

    A round lacking either figure (or with a zero denominator) does not count;
    a ratio no round can compute is left out.
    """
    summaries = {}
    for name, (numerator, denominator) in definitions.items():
        per_round = [
            measured[numerator] / measured[denominator]
            for measured in rounds
            if _is_number(measured.get(numerator)) and _is_number(measured.get(denominator)) and measured[denominator]
        ]
        if per_round:
            summaries[name] = summarise(per_round)
    return summaries


def format_summary(summary: Mapping, digits: int = 3) -> str:
    """``151 (148–160)``, or ``0.76 (0.74–0.79, ±4%)`` with ``spread``; ``-`` when nothing was measured."""
    if not summary:
        return "-"
    text = f"{_number(summary['median'], digits)} ({_number(summary['min'], digits)}–{_number(summary['max'], digits)}"
    return text + (f", ±{100 * summary['spread']:.0f}%)" if len(summary["rounds"]) > 1 else ")")


def _number(value: float, digits: int) -> str:
    """``digits`` significant digits, without exponent for everyday magnitudes: 151, 9.90, 0.762."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
