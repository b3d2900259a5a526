"""Train / validation / test splits and cross-validation folds.

Order of preference:

1. the CSV's ``split`` column, when the cache has one (a missing ``val`` or
   ``test`` part is carved out of ``train``);
2. with groups (subjects): group-aware stratified splitting
   (``StratifiedGroupKFold``), so no subject is ever in two splits;
3. otherwise stratified splitting (``StratifiedKFold``).

A fraction f is realised as one fold of round(1/f), so the sizes are close to,
not exactly, the fractions. Every class is always in the training split.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from framecache.common.errors import FramecacheError

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")


@dataclass
class Split:
    """Video indices of each part, and how they were made."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    method: str  # csv | group | stratified

    def sizes(self, group_ids: np.ndarray | None) -> dict:
        """Videos and groups per part, as the reports show them (groups ``None`` without groups)."""
        return {
            part: {
                "videos": int(len(indices)),
                "groups": None if group_ids is None else int(len(np.unique(group_ids[indices]))),
            }
            for part, indices in self.parts().items()
        }

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def group_ids(groups: list[str | None]) -> np.ndarray | None:
    """Group of each video for splitting; ``None`` when no video has one.

    A video without a group, in a cache where others have one, is a group of its own.
    """
    if all(group is None for group in groups):
        return None
    missing = sum(group is None for group in groups)
    if missing:
        log.warning("%d video(s) have no group; each is treated as a subject of its own", missing)
    return np.asarray([f"\0video{index}" if group is None else group for index, group in enumerate(groups)], dtype=object)


def make_split(
    labels: np.ndarray,
    groups: np.ndarray | None,
    csv_splits: list[str | None],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    ignore_csv: bool = False,
) -> Split:
    """One train/val/test split (see the module docstring for the rules).

    ``labels`` are class names (they appear in error messages), ``groups`` from :func:`group_ids`.
    """
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    if not ignore_csv and any(split is not None for split in csv_splits):
        return _csv_split(labels, groups, csv_splits, val_fraction, test_fraction, seed)
    rest, test = _hold_out(everything, labels, groups, test_fraction, seed, "test")
    train, val = _hold_out(rest, labels, groups, val_fraction / (1 - test_fraction), seed + 1, "validation")
    return Split(train, val, test, "stratified" if groups is None else "group")


def make_folds(labels: np.ndarray, groups: np.ndarray | None, folds: int, val_fraction: float, seed: int) -> list[Split]:
    """``folds`` splits whose test parts cover every video exactly once; each carves its validation part from the rest."""
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    _check_enough_units(everything, groups, folds, f"{folds}-fold cross-validation", "pass a smaller --cv")
    splits = []
    for fold, (rest, test) in enumerate(_splitter(groups, folds, seed).split(everything, labels, _groups_of(everything, groups))):
        missing = sorted(set(labels) - set(labels[rest]))
        if missing:
            raise FramecacheError(
                f"fold {fold + 1} of {folds} would hold every video of class(es) {missing} in its test part; "
                "pass a smaller --cv, or add videos (subjects) of the rarest classes"
            )
        train, val = _hold_out(rest, labels, groups, val_fraction / (1 - 1 / folds), seed + 1 + fold, "validation")
        splits.append(Split(train, val, test, "stratified" if groups is None else "group"))
    return splits


def _csv_split(labels, groups, csv_splits, val_fraction, test_fraction, seed) -> Split:
    blank = sum(split is None for split in csv_splits)
    if blank:
        raise FramecacheError(
            f"{blank} of {len(csv_splits)} videos have no value in the CSV's split column; "
            "fill it in for every row (train, val or test), leave it empty for all, or pass --ignore-split"
        )
    parts = {part: np.flatnonzero(np.asarray(csv_splits, dtype=object) == part) for part in PARTS}
    if len(parts["train"]) == 0:
        raise FramecacheError("the CSV's split column names no 'train' videos; mark some, or pass --ignore-split")
    if len(parts["test"]) == 0:
        log.warning("the CSV's split column has no 'test' videos: holding out %.0f%% of 'train' as test", 100 * test_fraction)
        parts["train"], parts["test"] = _hold_out(parts["train"], labels, groups, test_fraction, seed, "test")
    if len(parts["val"]) == 0:
        log.warning("the CSV's split column has no 'val' videos: holding out %.0f%% of 'train' for validation", 100 * val_fraction)
        parts["train"], parts["val"] = _hold_out(parts["train"], labels, groups, val_fraction, seed + 1, "validation")
    missing = sorted(set(labels) - set(labels[parts["train"]]))
    if missing:
        raise FramecacheError(
            f"the CSV's split column puts no video of class(es) {missing} in 'train'; "
            "every class needs training videos: fix the split column, or pass --ignore-split"
        )
    if groups is not None:
        for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = set(groups[parts[first]]) & set(groups[parts[second]])
            if shared:
                log.warning("the CSV's split column puts %d group(s) in both %s and %s, e.g. %r", len(shared), first, second, sorted(shared)[0])
    return Split(parts["train"], parts["val"], parts["test"], "csv")


def _hold_out(candidates: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int, purpose: str):
    """Split ``candidates`` into (kept, held out), about ``fraction`` held out, every class kept."""
    folds = max(2, round(1 / fraction))
    advice = f"lower --{'test' if purpose == 'test' else 'val'}-fraction (now {fraction:.2f} of what remains), add videos, or give the CSV a split column"
    _check_enough_units(candidates, groups, folds, f"a {purpose} share of {fraction:.2f}", advice)
    needed, target = set(labels[candidates]), fraction * len(candidates)
    usable = [
        (kept, held)
        for kept, held in _splitter(groups, folds, seed).split(candidates, labels[candidates], _groups_of(candidates, groups))
        if len(held) and set(labels[candidates[kept]]) == needed
    ]
    if usable:  # the fold closest to the asked size (with few groups, folds differ in size)
        kept, held = min(usable, key=lambda pair: abs(len(pair[1]) - target))
        return candidates[kept], candidates[held]
    unit = "subjects (groups)" if groups is not None else "videos"
    raise FramecacheError(
        f"cannot hold out a {purpose} part and keep every class in training: some class has too few {unit}; {advice}"
    )


def _splitter(groups: np.ndarray | None, folds: int, seed: int):
    if groups is None:
        return _quiet(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))
    return _quiet(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed))


class _quiet:
    """A scikit-learn splitter without its 'least populated class' warnings (small classes are checked here)."""

    def __init__(self, splitter):
        self.splitter = splitter

    def split(self, items, labels, groups):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                yield from self.splitter.split(np.zeros(len(items)), labels, groups)
            except ValueError as error:
                raise FramecacheError(f"cannot split: {error}") from None


def _groups_of(indices: np.ndarray, groups: np.ndarray | None):
    return None if groups is None else groups[indices]


def _check_enough_units(candidates: np.ndarray, groups: np.ndarray | None, folds: int, what: str, advice: str) -> None:
    units = len(candidates) if groups is None else len(set(groups[candidates]))
    if units < folds:
        unit = "videos" if groups is None else "subjects (groups)"
        raise FramecacheError(f"{what} needs at least {folds} {unit}, there are {units}; {advice}")
