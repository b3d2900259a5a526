"""Train / validation / test splits and cross-validation folds.

Order of preference:

1. the CSV's ``split`` column, when the cache has one (a missing ``val`` or
   ``test`` part is carved out of ``train``);
2. with groups (subjects): group-aware stratified splitting
   (``StratifiedGroupKFold``), so no subject is ever in two splits;
3. otherwise stratified splitting (``StratifiedKFold``).

A fraction f is realised as one fold of round(1/f), so the sizes are close to,
not exactly, the fractions. Every class is always in the training split.

What scikit-learn's splitters need is checked here first, so a class or a
dataset too small for the split asked for is refused with a
:class:`FramecacheError` naming the class, its videos and subjects, and the
option to change, never with scikit-learn's own error.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from framecache.common.errors import FramecacheError
from framecache.common.options import option_name

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
    train, val = _hold_out(rest, labels, groups, val_fraction / (1 - test_fraction), seed + 1, "validation", scale=1 - test_fraction)
    return Split(train, val, test, "stratified" if groups is None else "group")


def make_folds(labels: np.ndarray, groups: np.ndarray | None, folds: int, val_fraction: float, seed: int) -> list[Split]:
    """``folds`` splits whose test parts cover every video exactly once; each carves its validation part from the rest."""
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    _check_folds(everything, labels, groups, folds)
    splits = []
    for fold, (rest, test) in enumerate(_splitter(groups, folds, seed).split(everything, labels, _groups_of(everything, groups))):
        missing = sorted(set(labels) - set(labels[rest]))
        if missing:  # with groups: every subject of a class fell into this fold's test part
            raise FramecacheError(
                f"fold {fold + 1} of {folds} puts every video of {_class_list(missing, labels, groups, everything)} in its "
                f"test part, so it would train without them: add videos of other subjects to those classes, "
                f"or pass {option_name('cv', folds - 1) if folds > 2 else option_name('cv', 0) + ' (one split)'} or another {option_name('seed')}"
            )
        train, val = _hold_out(rest, labels, groups, val_fraction / (1 - 1 / folds), seed + 1 + fold, "validation", scale=1 - 1 / folds)
        splits.append(Split(train, val, test, "stratified" if groups is None else "group"))
    return splits


def _csv_split(labels, groups, csv_splits, val_fraction, test_fraction, seed) -> Split:
    blank = sum(split is None for split in csv_splits)
    if blank:
        raise FramecacheError(
            f"{blank} of {len(csv_splits)} videos have no value in the CSV's split column; "
            f"fill it in for every row (train, val or test), leave it empty for all, or pass {option_name('ignore_split', True)}"
        )
    parts = {part: np.flatnonzero(np.asarray(csv_splits, dtype=object) == part) for part in PARTS}
    if len(parts["train"]) == 0:
        raise FramecacheError(f"the CSV's split column names no 'train' videos; mark some, or pass {option_name('ignore_split', True)}")
    if len(parts["test"]) == 0:
        log.warning("the CSV's split column has no 'test' videos: holding out %.0f%% of 'train' as test", 100 * test_fraction)
        parts["train"], parts["test"] = _hold_out(
            parts["train"], labels, groups, test_fraction, seed, "test", instead="mark some videos 'test' in the CSV's split column"
        )
    if len(parts["val"]) == 0:
        log.warning("the CSV's split column has no 'val' videos: holding out %.0f%% of 'train' for validation", 100 * val_fraction)
        parts["train"], parts["val"] = _hold_out(
            parts["train"], labels, groups, val_fraction, seed + 1, "validation", instead="mark some videos 'val' in the CSV's split column"
        )
    missing = sorted(set(labels) - set(labels[parts["train"]]))
    if missing:
        raise FramecacheError(
            f"the CSV's split column puts no video of class(es) {missing} in 'train'; "
            f"every class needs training videos: fix the split column, or pass {option_name('ignore_split', True)}"
        )
    if groups is not None:
        for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = set(groups[parts[first]]) & set(groups[parts[second]])
            if shared:
                log.warning("the CSV's split column puts %d group(s) in both %s and %s, e.g. %r", len(shared), first, second, sorted(shared)[0])
    return Split(parts["train"], parts["val"], parts["test"], "csv")


def _hold_out(
    candidates: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    fraction: float,
    seed: int,
    purpose: str,
    scale: float = 1.0,
    instead: str = "give the CSV a split column",
):
    """Split ``candidates`` into (kept, held out), about ``fraction`` held out, every class kept.

    ``purpose`` is ``test`` or ``validation``; the user's option behind it
    (``test_fraction`` / ``val_fraction``) has the value ``fraction * scale``.
    ``instead`` is the other way out that error messages offer.
    """
    folds = max(2, round(1 / fraction))
    option = "test_fraction" if purpose == "test" else "val_fraction"
    rest = " of the videos the test part leaves" if purpose == "validation" and scale != 1 else ""
    asked = f"{option_name(option, round(fraction * scale, 4))} holds out one part in {folds}{rest}"
    units, unit = _units(candidates, groups), _unit_name(groups)
    class_videos = {name: int(np.sum(labels[candidates] == name)) for name in set(labels[candidates])}
    largest = max(class_videos.values())
    if units < folds or largest < folds:
        if units < folds:
            need = f"which needs at least {folds} {unit}; there are {units}"
        else:  # scikit-learn's stratified splitters need one class with at least as many videos as parts
            need = (f"stratified by class, which needs a class with at least {folds} videos; the largest has {largest}: "
                    f"{_class_list(_largest_first(class_videos), labels, groups, candidates)}")
        fits = _fraction_for(min(units, largest), scale)
        change = f"Pass {option_name(option, fits)} (one part in {max(2, round(scale / fits))}) or more, add videos" if fits else "Add videos"
        raise FramecacheError(f"cannot hold out a {purpose} part: {asked}, {need}. {change}, or {instead}")
    needed, target = set(labels[candidates]), fraction * len(candidates)
    usable, lost = [], set()
    for kept, held in _splitter(groups, folds, seed).split(candidates, labels[candidates], _groups_of(candidates, groups)):
        missing = needed - set(labels[candidates[kept]])
        lost |= missing
        if len(held) and not missing:
            usable.append((kept, held))
    if usable:  # the fold closest to the asked size (with few groups, folds differ in size)
        kept, held = min(usable, key=lambda pair: abs(len(pair[1]) - target))
        return candidates[kept], candidates[held]
    raise FramecacheError(
        f"cannot hold out a {purpose} part and keep every class in training: {asked}, and each such part takes every video of "
        f"{_class_list(sorted(lost), labels, groups, candidates) if lost else 'some class'}. Add videos "
        f"{'of other subjects ' if groups is not None else ''}to those classes, or {instead}"
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


def _check_folds(candidates: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, folds: int) -> None:
    """Refuse, before scikit-learn does, cross-validation that the data cannot make."""
    units, unit = _units(candidates, groups), _unit_name(groups)
    asked = f"{option_name('cv', folds)} ({folds}-fold cross-validation)"
    if units < folds:
        raise FramecacheError(
            f"{asked} needs at least {folds} {unit}, there are {units}: "
            f"pass {option_name('cv', units) + ' or less' if units >= 2 else option_name('cv', 0) + ' (one split)'}, or add videos"
        )
    classes = sorted(set(labels[candidates]))
    alone = [name for name in classes if _units(candidates[labels[candidates] == name], groups) < 2]
    if alone:  # the fold that tests such a class has no training video of it, whatever K is
        one = len(alone) == 1
        raise FramecacheError(
            f"{asked} tests every video once, and the fold that tests {_class_list(alone, labels, groups, candidates)} "
            f"would have no training video of {'it' if one else 'them'}: cross-validation needs at least 2 {unit} per class. "
            f"Add videos{' of other subjects' if groups is not None else ''} to {'that class' if one else 'those classes'}, "
            f"drop {'it' if one else 'them'} from the CSV, or pass {option_name('cv', 0)} "
            "(one split, which keeps a class that small in training only)"
        )
    class_videos = {name: int(np.sum(labels[candidates] == name)) for name in classes}
    largest = max(class_videos.values())
    if largest < folds:  # scikit-learn's stratified splitters need one class with at least K videos
        raise FramecacheError(
            f"{asked} is stratified by class and needs a class with at least {folds} videos; the largest has {largest}: "
            f"{_class_list(_largest_first(class_videos), labels, groups, candidates)}. Pass {option_name('cv', largest)} or less, or add videos"
        )


def _units(indices: np.ndarray, groups: np.ndarray | None) -> int:
    """What a split divides: videos, or subjects (groups) when there are groups."""
    return len(indices) if groups is None else len(set(groups[indices]))


def _unit_name(groups: np.ndarray | None) -> str:
    return "videos" if groups is None else "subjects (groups)"


def _class_list(names, labels: np.ndarray, groups: np.ndarray | None, indices: np.ndarray, most: int = 8) -> str:
    """``class 'a' (4 videos, 2 subjects)`` or ``classes 'a' (4 videos), 'b' (1 video)``, counted among ``indices``.

    Lists at most ``most`` classes, then says how many more.
    """
    names = list(names)
    described = []
    for name in names[:most]:
        members = indices[labels[indices] == name]
        count = f"{len(members)} video{'s' if len(members) != 1 else ''}"
        if groups is not None:
            subjects = len(set(groups[members]))
            count += f", {subjects} subject{'s' if subjects != 1 else ''}"
        described.append(f"{str(name)!r} ({count})")
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"class{'es' if len(names) != 1 else ''} {', '.join(described)}{more}"


def _largest_first(class_videos: dict) -> list:
    return sorted(class_videos, key=lambda name: (-class_videos[name], str(name)))


def _fraction_for(parts: int, scale: float) -> float | None:
    """A value of the user's option (about ``scale / parts``, 2 decimals) that holds out one part in ``parts`` or fewer; None if none fits."""
    if parts < 2:
        return None
    value = math.ceil(100 * scale / parts) / 100
    while value < 0.9 and max(2, round(scale / value)) > parts:
        value = round(value + 0.01, 2)
    return value if value < 0.9 else None
