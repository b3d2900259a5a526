"""The figures a run or an evaluation records, as typed records: built once, written to metrics.json, read back.

Training builds a :class:`SplitMetrics` (one split, and each fold of a
cross-validated run) or a :class:`CVMetrics` (a ``--cv`` run); ``evaluate``
builds an :class:`EvaluationMetrics`. :meth:`Record.to_json` writes exactly the
keys metrics.json has always had, in their order: a record's fields are
declared in that order, and an optional field (:func:`optional`) that is None
is left out. :meth:`Record.from_json` reads them back, from this framecache or
an earlier one (whose files lack the optional fields), so ``report``,
``compare`` and ``evaluate`` read attributes, not string keys.

Every record is also a read-only mapping of its metrics.json keys
(``metrics["accuracy"]``, ``metrics["baseline"]["ci"]``): the metrics that
framecache's public training function and ``evaluate`` have always returned
as dicts can still be read that way.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from framecache.common.errors import FramecacheError

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")
OMIT_NONE = "omit_none"  # field metadata: left out of the JSON when None


def optional(**kwargs) -> Any:
    """A field that may be absent: None by default, and left out of metrics.json when None."""
    return field(default=None, metadata={OMIT_NONE: True}, **kwargs)


class Record(Mapping):
    """Base of every metrics record (a frozen dataclass): JSON in its field order, and read-only key access."""

    def _present(self) -> Iterator[str]:
        for item in fields(self):
            if not (item.metadata.get(OMIT_NONE) and getattr(self, item.name) is None):
                yield item.name

    def __getitem__(self, key: str) -> Any:
        if key not in set(self._present()):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return self._present()

    def __len__(self) -> int:
        return sum(1 for _ in self._present())

    def to_json(self) -> dict:
        """The record as metrics.json holds it: fields in declaration order, absent optional ones left out."""
        return {name: _encode(getattr(self, name)) for name in self._present()}

    @classmethod
    def from_json(cls, values: Mapping) -> typing.Self:
        """A record from its JSON form; keys it does not know are ignored, missing optional ones are None."""
        return _decode(cls, values)


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    return value


def _decode(kind: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as ``kind``: a record, ``X | None``, ``list[X]``, ``dict[str, X]``, or a plain value kept as it is."""
    if value is None:
        return None
    if isinstance(kind, type) and is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        known = {item.name for item in fields(kind)}
        missing = [item.name for item in fields(kind) if item.name not in value and not item.metadata.get(OMIT_NONE)]
        if missing:
            raise KeyError(", ".join(missing))
        return kind(**{name: _decode(hints[name], item) for name, item in value.items() if name in known})
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        records = [argument for argument in arguments if isinstance(argument, type) and is_dataclass(argument)]
        if records and isinstance(value, Mapping):
            return _decode(records[0], value)
        others = [argument for argument in arguments if argument is not type(None)]
        return _decode(others[0], value) if len(others) == 1 else value
    if origin is list:
        return [_decode(arguments[0], item) for item in value]
    if origin is dict:
        return {key: _decode(arguments[1], item) for key, item in value.items()}
    return value


record = dataclass(frozen=True, kw_only=True)


@record
class Figures(Record):
    """The headline figures of some videos."""

    accuracy: float
    balanced_accuracy: float
    macro_f1: float

    @property
    def spread(self) -> Figures | None:
        """Where these figures are means over folds: each one's standard deviation over the folds; else None."""
        return None


@record
class SpreadFigures(Figures):
    """Fold means of the headline figures with their standard deviations (``np.std``) over the folds."""

    accuracy_std: float
    balanced_accuracy_std: float
    macro_f1_std: float

    @property
    def spread(self) -> Figures:
        return _stds(self)


def _stds(figures: SpreadFigures | BaselineMetrics) -> Figures:
    """The ``*_std`` fields of fold means, as figures."""
    return Figures(**{name: getattr(figures, f"{name}_std") for name in HEADLINE})


@record
class Intervals(Record):
    """Percentile bootstrap intervals ``[low, high]`` of the headline figures, and how they were made."""

    accuracy: list[float]
    balanced_accuracy: list[float]
    macro_f1: list[float]
    method: str


@record
class ClassFigures(Record):
    """One class's precision, recall and F1 on the test videos, and its test videos."""

    precision: float
    recall: float
    f1: float
    support: int


@record
class PartSize(Record):
    """Videos and groups (subjects; None without groups) of one part of a split."""

    videos: int
    groups: int | None


@record
class CacheInfo(Record):
    """The feature cache a run trained on."""

    path: str
    provenance_hash: str
    backbone: str


@record
class Classification(Figures):
    """Figures of predictions on some videos: headline, per class, confusion matrix (rows: true, columns: predicted)."""

    videos: int
    labels: list[str]
    per_class: dict[str, ClassFigures]
    confusion_matrix: list[list[int]]

    def headline(self) -> Figures:
        return Figures(accuracy=self.accuracy, balanced_accuracy=self.balanced_accuracy, macro_f1=self.macro_f1)


@record
class _Described(Record):
    model: str  # the description comes first in a baseline's block (see BaselineMetrics' bases)


@record
class BaselineMetrics(Figures, _Described):
    """The baseline's block: test figures with intervals; for a cross-validated run also fold means, std and pooled figures."""

    accuracy_std: float | None = optional()
    balanced_accuracy_std: float | None = optional()
    macro_f1_std: float | None = optional()
    mean: Figures | None = optional()
    std: Figures | None = optional()
    pooled: Figures | None = optional()
    ci: Intervals
    val: Figures | None = optional()  # an evaluation has none
    val_std: Figures | None = optional()
    videos: int | None = optional()
    confusion_matrix: list[list[int]]

    @property
    def spread(self) -> Figures | None:
        return None if self.accuracy_std is None else _stds(self)


@record
class ValFigures(Figures):
    """Test figures with the validation figures beside them."""

    val: Figures


@record
class SplitMix(Record):
    """How the run's model combines its parts on one split, and each part alone.

    ``parts``: each part's test figures with its validation figures beside
    them, in the combiner's order. Runs of framecache 0.3 and earlier recorded
    only ``gru_weight``, ``val_cross_entropy`` and ``gru_alone`` (read back as they are).
    """

    method: str | None = optional()  # classwise | weight
    part_weights: dict[str, float] | None = optional()  # each part's weight, averaged over the classes
    fit: dict[str, float] | None = optional()  # the combiner's fit: validation cross-entropy (classwise) or of each grid point (weight)
    parts: dict[str, ValFigures] | None = optional()
    gru_weight: float | None = optional()
    val_cross_entropy: dict[str, float] | None = optional()
    gru_alone: ValFigures | None = optional()

    def alone(self) -> dict[str, ValFigures]:
        """Each part alone, by name (an earlier run's: its GRU)."""
        return dict(self.parts) if self.parts else {"GRU alone": self.gru_alone}


@record
class CVMix(Record):
    """The combination of a cross-validated run: each fold's part weights, and each part alone (fold means and std)."""

    method: str | None = optional()
    part_weights: list[dict[str, float]] | None = optional()
    parts: dict[str, SpreadFigures] | None = optional()
    gru_weights: list[float] | None = optional()
    gru_alone: SpreadFigures | None = optional()

    def alone(self) -> dict[str, SpreadFigures]:
        return dict(self.parts) if self.parts else {"GRU alone": self.gru_alone}


@record
class SplitMetrics(Classification):
    """metrics.json of a run on one split (and of each fold of a cross-validated run)."""

    ci: Intervals | None = optional()
    val: Figures
    split_method: str
    split_sizes: dict[str, PartSize]
    weights: str
    epochs: int
    best_epoch: int
    seconds: float
    epoch_seconds: list[float] | None = optional()
    epoch_cpu_seconds: list[float] | None = optional()
    cache: CacheInfo
    model: str | None = optional()
    mix: SplitMix | None = optional()
    baseline: BaselineMetrics | None = optional()
    warning: str | None = optional()


@record
class FoldSummary(Figures):
    """One fold's entry in a cross-validated run's ``folds``."""

    ci: Intervals | None = optional()
    val: Figures
    mix: SplitMix | None = optional()
    baseline: BaselineMetrics | None = optional()
    split_sizes: dict[str, PartSize]
    epochs: int
    best_epoch: int
    seconds: float

    @classmethod
    def of(cls, fold: SplitMetrics) -> FoldSummary:
        return cls(**{item.name: getattr(fold, item.name) for item in fields(cls)})


@record
class CVMetrics(SpreadFigures):
    """metrics.json of a cross-validated run: fold means on top, per-class figures and confusion matrix pooled."""

    cv: int
    mean: Figures
    std: Figures
    pooled: Figures
    ci: Intervals | None = optional()
    val: Figures
    val_std: Figures | None = optional()
    per_class: dict[str, ClassFigures]
    confusion_matrix: list[list[int]]
    labels: list[str]
    videos: int
    split_method: str
    split_sizes: list[dict[str, PartSize]]
    folds: list[FoldSummary]
    weights: str
    epochs: int
    cache: CacheInfo
    note: str
    model: str | None = optional()
    mix: CVMix | None = optional()
    baseline: BaselineMetrics | None = optional()
    warning: str | None = optional()
    seconds: float  # written last: the folds' seconds together


@record
class EvaluationMetrics(Classification):
    """metrics.json of ``framecache evaluate``: a run's model(s) on a cache's videos."""

    ci: Intervals
    baseline: BaselineMetrics | None = optional()
    model: str | list[str]  # the model file, or each fold's
    features: str
    split: str
    evaluated: str  # which videos, in words
    weights: str
    warning: str | None = optional()


RunMetrics = SplitMetrics | CVMetrics


def run_metrics_from_json(values: Mapping) -> RunMetrics:
    """A run's metrics.json content as its record: :class:`CVMetrics` for a cross-validated run, else :class:`SplitMetrics`."""
    return (CVMetrics if "cv" in values else SplitMetrics).from_json(values)


def read_run_metrics(path: str | Path) -> RunMetrics:
    """A run's metrics.json, written by this or an earlier framecache."""
    path = Path(path)
    try:
        return run_metrics_from_json(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as error:
        raise FramecacheError(f"{path} is not a run's metrics ({type(error).__name__}: {error}); train the run again") from None
