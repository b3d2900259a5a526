"""The CSV dataset contract: load, validate, balance and encode labels.

A dataset is a CSV with the columns ``path,label`` and optionally ``group``
(the subject), ``split`` (``train``, ``val`` or ``test``) and ``fps`` (the
frame rate of a row whose path is a folder of frames). Relative paths
resolve against the CSV's own folder, so a dataset folder can be moved whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from framecache.common.errors import FramecacheError
from framecache.common.options import option_name

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("group", "split")
SPLITS = ("train", "val", "test")


def load_dataset(csv_path: str | Path, min_videos_per_class: int = 2) -> pd.DataFrame:
    """Read and validate a dataset CSV.

    Returns a DataFrame with the columns ``path`` (as written in the CSV),
    ``abs_path`` (resolved against the CSV's folder), ``label``, ``group``,
    ``split`` and ``fps`` (a float; all three ``None`` where the CSV has no such
    column or a blank cell).
    Rows repeating a path with the same label are dropped with a warning; every
    other problem raises :class:`FramecacheError` naming the bad value.
    """
    csv_path = Path(csv_path)
    if csv_path.exists() and not csv_path.is_file():  # a folder, or a FIFO that would block the read
        raise FramecacheError(f"dataset CSV {csv_path} is not a regular file; pass {option_name('csv', 'path/to/labels.csv')}")
    if not csv_path.is_file():
        raise FramecacheError(f"dataset CSV not found: {csv_path}; pass {option_name('csv', 'path/to/labels.csv')}")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise FramecacheError(f"dataset CSV is empty: {csv_path}; it needs a header 'path,label' and one row per video") from None
    except UnicodeDecodeError:
        raise FramecacheError(
            f"dataset CSV is not UTF-8: {csv_path} ({_first_undecodable(csv_path)}); save it as UTF-8 and retry"
        ) from None
    except pd.errors.ParserError as error:
        raise FramecacheError(f"dataset CSV cannot be parsed: {csv_path}: {error}") from None

    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise FramecacheError(
            f"dataset CSV {csv_path} lacks the column(s) {', '.join(missing)}; "
            f"found {', '.join(table.columns) or 'none'}; required: path,label (optional: group,split,fps)"
        )
    if table.empty:
        raise FramecacheError(f"dataset CSV has a header but no rows: {csv_path}")

    for column in ("path", "label", *OPTIONAL_COLUMNS):
        if column in table.columns:
            table[column] = table[column].str.strip()
    _check_blank(table, "path", csv_path)
    _check_blank(table, "label", csv_path)
    _check_control_characters(table, csv_path)

    for column in OPTIONAL_COLUMNS:  # blank cells and absent columns become None
        values = table[column].tolist() if column in table.columns else [""] * len(table)
        table[column] = pd.Series([value or None for value in values], index=table.index, dtype=object)
    table["split"] = pd.Series([value.lower() if value else None for value in table["split"]], index=table.index, dtype=object)
    if table["split"].notna().any():
        unknown = sorted(set(table["split"].dropna()) - set(SPLITS))
        if unknown:
            raise FramecacheError(
                f"dataset CSV {csv_path} has unknown split value(s) {', '.join(map(repr, unknown))}; "
                f"use one of {', '.join(SPLITS)} or leave the cell blank"
            )

    table["fps"] = _frame_rates(table, csv_path)
    table = _drop_duplicate_paths(table, csv_path)
    _check_label_spellings(table, csv_path)
    _check_class_sizes(table, csv_path, min_videos_per_class)

    folder = csv_path.resolve().parent
    table["abs_path"] = [str(folder / path) if not Path(path).is_absolute() else path for path in table["path"]]
    return table[["path", "abs_path", "label", "group", "split", "fps"]].reset_index(drop=True)


def _first_undecodable(csv_path: Path) -> str:
    """Where the first non-UTF-8 byte is (pandas reports a position within its read buffer)."""
    raw = csv_path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return f"line {line}, byte {error.start}: {raw[error.start : error.start + 1]!r}"
    return "undecodable bytes"


def _check_blank(table: pd.DataFrame, column: str, csv_path: Path) -> None:
    blank = table.index[(table[column] == "") | table[column].str.lower().isin(["nan", "none", "null"])]
    if len(blank):
        rows = ", ".join(str(index + 2) for index in blank[:10])  # +2: header line and 1-based lines
        more = f" and {len(blank) - 10} more" if len(blank) > 10 else ""
        raise FramecacheError(
            f"dataset CSV {csv_path} has a blank {column} on line(s) {rows}{more} (empty, or NaN/None/null); fill or remove them"
        )


def _check_control_characters(table: pd.DataFrame, csv_path: Path) -> None:
    """Refuse cells holding control characters (a NUL byte, a stray carriage return): no file or label has them."""
    for column in table.columns:
        bad = table.index[table[column].str.contains(r"[\x00-\x08\x0b-\x1f\x7f]", regex=True, na=False)]
        if len(bad):
            index = bad[0]
            raise FramecacheError(
                f"dataset CSV {csv_path} has a control character in its {column} column on line {index + 2} "
                f"({table.at[index, column]!r}{f' and {len(bad) - 1} more line(s)' if len(bad) > 1 else ''}); "
                "the file may be damaged or exported as binary: fix those cells"
            )


def _frame_rates(table: pd.DataFrame, csv_path: Path) -> pd.Series:
    """The ``fps`` column as floats (None where blank or absent); a value that is not a positive number raises."""
    cells = table["fps"].str.strip().tolist() if "fps" in table.columns else [""] * len(table)
    rates = pd.to_numeric(pd.Series(cells, index=table.index).replace("", np.nan), errors="coerce")
    bad = table.index[(pd.Series(cells, index=table.index) != "") & ~((rates > 0) & np.isfinite(rates))]
    if len(bad):
        rows = ", ".join(f"{index + 2} ({table.at[index, 'fps']!r})" for index in bad[:5])  # +2: the header, 1-based
        raise FramecacheError(
            f"dataset CSV {csv_path} has an fps that is not a positive number on line(s) {rows}; give the frame rate of "
            "the row's frame folder (e.g. 25) or leave the cell blank"
        )
    return pd.Series([None if np.isnan(rate) else float(rate) for rate in rates], index=table.index, dtype=object)


def _drop_duplicate_paths(table: pd.DataFrame, csv_path: Path) -> pd.DataFrame:
    duplicated = table[table.duplicated("path", keep=False)]
    if duplicated.empty:
        return table
    conflicting = duplicated.groupby("path")["label"].nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        path = conflicting.index[0]
        labels = sorted(duplicated.loc[duplicated["path"] == path, "label"].unique())
        raise FramecacheError(
            f"dataset CSV {csv_path} lists {path!r} with different labels {labels}; "
            f"a video has one label: fix the CSV ({len(conflicting)} such path(s))"
        )
    count = int(table.duplicated("path").sum())
    log.warning("dataset CSV %s repeats %d path(s), e.g. %r; keeping the first of each", csv_path, count, duplicated["path"].iloc[0])
    return table.drop_duplicates("path", keep="first")


def _label_key(label: str) -> str:
    """What two spellings of one class share: case and runs of spaces do not count."""
    return " ".join(label.casefold().split())


def _check_label_spellings(table: pd.DataFrame, csv_path: Path) -> None:
    """Refuse labels that differ only in case or inner spaces ('Jack', 'jack'): each would be a class of its own.

    Surrounding spaces are already stripped, so 'jack ' and 'jack' are one
    class, 'jack'. The message names every spelling with its number of videos.
    """
    keys = table["label"].map(_label_key)
    spellings = table.groupby(keys)["label"].unique()
    clashes = {key: sorted(values) for key, values in spellings.items() if len(values) > 1}
    if not clashes:
        return
    described = []
    for key in sorted(clashes):
        parts = []
        for spelling in clashes[key]:
            rows = table.index[table["label"] == spelling]
            parts.append(f"{spelling!r} ({len(rows)} video{'s' if len(rows) != 1 else ''}, e.g. line {rows[0] + 2})")
        described.append(" vs ".join(parts))
    raise FramecacheError(
        f"dataset CSV {csv_path} spells {'a label' if len(described) == 1 else f'{len(described)} labels'} in more than one way, "
        f"differing only in case or spaces: {'; '.join(described)}. Each spelling would be a class of its own: "
        "fix the CSV so that every video of a class has the same label"
    )


def _check_class_sizes(table: pd.DataFrame, csv_path: Path, min_videos_per_class: int) -> None:
    counts = table["label"].value_counts()
    small = counts[counts < min_videos_per_class]
    if len(small):
        listing = ", ".join(f"{label!r} ({count})" for label, count in small.items())
        raise FramecacheError(
            f"dataset CSV {csv_path}: class(es) {listing} have fewer than {min_videos_per_class} videos; "
            "a classifier needs at least one video to train on and one to evaluate per class: add videos or drop the class"
        )


class Classes(list):
    """The class names in code order: a list, and also what a fitted scikit-learn ``LabelEncoder`` offers
    (``classes_``, ``transform``, ``inverse_transform``), as the CNN-RNN tutorials use it."""

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self, dtype=str)

    def transform(self, labels) -> np.ndarray:
        """Codes of ``labels``; a label outside these classes raises :class:`FramecacheError`."""
        return encode_labels(labels, list(self))[0]

    def inverse_transform(self, codes) -> np.ndarray:
        """The class names of integer ``codes``."""
        return self.classes_[np.asarray(codes, dtype=np.int64)]


def encode_labels(labels: list[str] | np.ndarray, classes: list[str] | None = None) -> tuple[np.ndarray, Classes]:
    """Map string labels to integer codes; return ``(codes, classes)``.

    ``classes`` (a :class:`Classes`: a list of names that also has ``classes_``
    like a fitted LabelEncoder) fixes the order when given (e.g. the classes a
    trained model knows); a label outside it raises :class:`FramecacheError`.
    """
    from sklearn.preprocessing import LabelEncoder

    encoder = LabelEncoder()
    if classes is None:
        encoder.fit(np.asarray(labels, dtype=str))
    else:
        encoder.classes_ = np.asarray(classes, dtype=str)
        unknown = sorted(set(np.asarray(labels, dtype=str)) - set(encoder.classes_))
        if unknown:
            raise FramecacheError(f"label(s) {unknown} are not among the known classes {list(encoder.classes_)}")
    codes = encoder.transform(np.asarray(labels, dtype=str)).astype(np.int64)
    return codes, Classes(str(name) for name in encoder.classes_)


def oversample_indices(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices that repeat minority-class items until every class is as large as the largest.

    Applied to cached features in stage two, so no video is extracted twice.
    The result is shuffled with ``seed``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max() if len(counts) else 0
    picked = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        extra = rng.choice(members, size=target - len(members), replace=True) if target > len(members) else []
        picked.append(np.concatenate([members, np.asarray(extra, dtype=np.int64)]))
    indices = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    return rng.permutation(indices)
