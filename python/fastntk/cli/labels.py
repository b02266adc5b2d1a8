"""Targets of ``fastntk run``: class labels or real-valued targets, the task chosen from them,
and the encoding of classes as indices.

The task (``--task auto``) follows the data: integer or string labels, or a one-hot matrix,
are classes (classification); real numbers that are not all integers, a 2-D target that is
not one-hot, or integers with more than 20 distinct values and fewer than 3 points per value
on average (counts, amounts), are regression targets. ``--task classification`` / ``regression`` overrides it
(integer targets can be regressed; real-valued targets cannot be classified).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import CliError, number

TASKS = ("auto", "classification", "regression")
# Integer targets are class labels unless they take more than MANY_VALUES distinct values with
# fewer than MIN_PER_CLASS points per value on average (too few to learn a class from).
MANY_VALUES = 20
MIN_PER_CLASS = 3
# A CSV label column is found by one of these header names (case-insensitive), else it is the last.
LABEL_NAMES = ("label", "target", "class", "y")


def csv_label_column(path, label_column, header, n_cols: int) -> int:
    """The index of the label column of a CSV file: ``label_column`` (a header name or an
    index, negative from the end), else a column named as in LABEL_NAMES, else the last."""
    if label_column is None:
        if header is not None:
            lower = [h.lower() for h in header]
            for name in LABEL_NAMES:
                if name in lower:
                    return lower.index(name)
        return n_cols - 1
    try:
        j = int(label_column)
    except ValueError:
        if header is None or label_column not in header:
            known = f"columns {header}" if header is not None else "no header row"
            raise CliError(f"{path}: no label column {label_column!r} ({known})") from None
        return header.index(label_column)
    if not -n_cols <= j < n_cols:
        raise CliError(f"{path}: --label-column {j} is out of range for {n_cols} columns")
    return j % n_cols


def csv_labels(path, cells, lines, column: str) -> np.ndarray:
    """The label cells of a CSV column as labels: int64 when every cell is an integer, float64
    when every cell is a number and one is not an integer (a regression target), else the
    strings. ``lines[i]`` is the file line of ``cells[i]``, for the messages."""
    cells = [c.strip() for c in cells]
    for line, c in zip(lines, cells):
        if c == "":
            raise CliError(f"{path}: line {line}, {column}: the label is empty")
    numbers = [number(c) for c in cells]
    if all(v is not None for v in numbers):
        bad = [i for i, v in enumerate(numbers) if not math.isfinite(v)]
        if bad:
            raise CliError(f"{path}: line {lines[bad[0]]}, {column}: {cells[bad[0]]!r} is not a finite label")
        if all(v == round(v) for v in numbers):
            return np.array([int(v) for v in numbers], dtype=np.int64)
        return np.array(numbers, dtype=np.float64)
    return np.array(cells)


def array_labels(y, n: int, what: str) -> np.ndarray:
    """Labels from a .npz array: (n,) labels (integers, integer-valued floats, strings) as
    int64 or strings; (n,) real targets as float64; an (n, C) one-hot matrix as its class
    indices (int64); another numeric (n, k) array as float64 regression targets."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] == n and y.dtype.kind in "biuf":
        if not np.isfinite(y).all():
            raise CliError(f"{what} has NaN or Inf entries")
        if y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
            return np.argmax(y, axis=1)  # one-hot rows: exactly one 1, the rest 0
        return y.astype(np.float64)
    if y.ndim != 1 or y.shape[0] != n:
        raise CliError(f"{what} must have shape ({n},) (one label per point) or ({n}, k), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise CliError(f"{what} has NaN or Inf entries")
        return y.astype(np.int64) if (y == np.round(y)).all() else y.astype(np.float64)
    if y.dtype.kind in "US":
        empty = np.flatnonzero(np.char.strip(y.astype(str)) == "")
        if empty.size:
            raise CliError(f"{what} has an empty label (first at index {int(empty[0])})")
        return y
    if y.dtype.kind not in "biu":
        raise CliError(
            f"{what} must hold class labels (integers or strings) or real targets, got dtype {y.dtype}"
        )
    return y.astype(np.int64)


def choose_task(y_train: np.ndarray, y_test: np.ndarray, task: str, where: str) -> str:
    """'classification' or 'regression' for ``--task`` (auto: from the labels' kind)."""
    real = any(y.dtype.kind == "f" or y.ndim == 2 for y in (y_train, y_test))
    if task == "auto":
        return "regression" if real or _many_integers(y_train) else "classification"
    if task == "classification" and real:
        kind = (
            "a 2-D target that is not one-hot"
            if y_train.ndim == 2
            else "real numbers that are not all integers"
        )
        raise CliError(
            f"{where}the target holds {kind}: it cannot be classified; use --task regression (or --task auto)"
        )
    if task == "regression" and (y_train.dtype.kind in "US" or y_test.dtype.kind in "US"):
        raise CliError(f"{where}the labels are strings: they cannot be regressed; use --task classification")
    return task


def _many_integers(y: np.ndarray) -> bool:
    """Integer targets with more than MANY_VALUES distinct values and fewer than
    MIN_PER_CLASS points per value on average: counts or amounts, not classes (scikit-learn's
    diabetes progression, 214 values over 442 points, is one)."""
    if y.dtype.kind not in "iu":
        return False
    distinct = np.unique(y).size
    return distinct > MANY_VALUES and y.size < MIN_PER_CLASS * distinct


def encode_classes(y_train: np.ndarray, y_test: np.ndarray, where: str):
    """(classes (C,), y_train as indices into classes, y_test as indices)."""
    if y_train.dtype.kind in "US" or y_test.dtype.kind in "US":
        y_train, y_test = y_train.astype(str), y_test.astype(str)  # one kind, so they compare
    classes = np.unique(y_train)
    if classes.size < 2:
        raise CliError(
            f"{where}y_train must hold at least 2 classes, got {classes.size} ({classes.tolist()})"
        )
    unknown = np.setdiff1d(np.unique(y_test), classes)
    if unknown.size:
        raise CliError(
            f"{where}y_test has labels that y_train lacks: {unknown[:5].tolist()} (if the target is a "
            "quantity, not a class, use --task regression)"
        )
    return classes, np.searchsorted(classes, y_train), np.searchsorted(classes, y_test)


def regression_targets(y: np.ndarray) -> np.ndarray:
    """Targets as a float64 (n, k) array."""
    y = np.asarray(y, dtype=np.float64)
    return y[:, None] if y.ndim == 1 else y
