"""Data of ``fastntk run``: scikit-learn's digits, a .npz or a .csv, split, standardized, and
its targets as classes or real numbers (:mod:`.labels`)."""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import numpy as np

from . import labels
from .errors import CliError, number


@dataclasses.dataclass
class Dataset:
    """A data set, split and standardized.

    Attributes
    ----------
    name : str
    task : {'classification', 'regression'}
    x_train : float64 (N, d), standardized
    y_train : int64 (N,) class indices into ``classes``, or float64 (N, k) targets
    x_test : float64 (M, d), standardized with the training statistics
    y_test : int64 (M,) or float64 (M, k), as y_train
    classes : numpy.ndarray (C,), the original labels; None for regression
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray | None
    task: str = "classification"

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return 0 if self.classes is None else len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Outputs of the network: one per class, or one per target column."""
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]


def _features(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise CliError(f"{what} must be numeric, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise CliError(f"{what} must be a non-empty 2-D array (points, features), got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise CliError(
            f"{what} has NaN or Inf entries (first at row {int(np.argwhere(~np.isfinite(a))[0, 0])})"
        )
    return a


def _split(x, y, test_fraction: float, seed: int, stratify: bool):
    from sklearn.model_selection import train_test_split

    if stratify:
        try:  # stratified when every class has at least two points
            return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
        except ValueError:
            pass
    return train_test_split(x, y, test_size=test_fraction, random_state=seed)


def _read_npz(path: pathlib.Path) -> dict:
    # np.load takes any file that is not a zip for a pickle; say what it is instead.
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CliError(f"{path}: cannot read it ({e.strerror or e})") from None
    if magic[:2] != b"PK":
        raise CliError(f"{path}: not a .npz file (not a zip archive; write one with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays need pickle, which a data file must not
        raise CliError(f"{path}: cannot read this .npz without pickle ({e})") from None
    except Exception as e:  # not a zip, truncated, ...: one line naming the file
        raise CliError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def _load_npz(path: pathlib.Path):
    arrays = _read_npz(path)
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise CliError(
            f"{path}: missing arrays {missing}; a .npz for --data holds x_train, y_train, x_test, y_test "
            f"(found {sorted(arrays)})"
        )
    x_train = _features(arrays["x_train"], f"{path}: x_train")
    x_test = _features(arrays["x_test"], f"{path}: x_test")
    if x_test.shape[1] != x_train.shape[1]:
        raise CliError(
            f"{path}: x_train has {x_train.shape[1]} features and x_test {x_test.shape[1]}; they must agree"
        )
    y_train = labels.array_labels(arrays["y_train"], x_train.shape[0], f"{path}: y_train")
    y_test = labels.array_labels(arrays["y_test"], x_test.shape[0], f"{path}: y_test")
    if (y_train.ndim == 2 or y_test.ndim == 2) and y_train.shape[1:] != y_test.shape[1:]:
        raise CliError(
            f"{path}: y_train has shape {y_train.shape} and y_test {y_test.shape}; their columns must agree"
        )
    return x_train, y_train, x_test, y_test


def _read_csv_rows(path: pathlib.Path):
    """(header or None, data rows, file line of the first data row); blank lines dropped."""
    try:
        with open(path, newline="") as f:
            rows = [(i + 1, r) for i, r in enumerate(csv.reader(f)) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CliError(f"{path}: cannot read it as CSV ({type(e).__name__}: {e})") from None
    if not rows:
        raise CliError(f"{path}: the file is empty")
    # A header is a first row with a cell that is not a number (labels may be words, so
    # look at whether every cell of the first row parses).
    header = None
    if any(number(c) is None for c in rows[0][1]):
        header, rows = [c.strip() for c in rows[0][1]], rows[1:]
    if not rows:
        raise CliError(f"{path}: no data rows after the header")
    n_cols = len(header) if header is not None else len(rows[0][1])
    for line, r in rows:
        if len(r) != n_cols:
            raise CliError(f"{path}: line {line} has {len(r)} columns, expected {n_cols}")
    if n_cols < 2:
        raise CliError(f"{path}: needs at least two columns (features and a label), got {n_cols}")
    return header, rows, n_cols


def _load_csv(path: pathlib.Path, label_column):
    """(x (n, d), labels (n,)) of a CSV with one point per line."""
    header, rows, n_cols = _read_csv_rows(path)
    col = labels.csv_label_column(path, label_column, header, n_cols)
    feature_cols = [j for j in range(n_cols) if j != col]
    x = np.empty((len(rows), len(feature_cols)))
    for i, (line, r) in enumerate(rows):
        for k, j in enumerate(feature_cols):
            v = number(r[j])
            if v is None:
                name = header[j] if header else f"column {j}"
                raise CliError(f"{path}: line {line}, {name}: {r[j]!r} is not a number")
            x[i, k] = v
    if not np.isfinite(x).all():
        raise CliError(f"{path}: the features have NaN or Inf entries")
    name = header[col] if header else f"column {col}"
    y = labels.csv_labels(path, [r[col] for _, r in rows], [line for line, _ in rows], name)
    if len(rows) < 4:
        raise CliError(f"{path}: {len(rows)} data rows are too few to split into training and test sets")
    return x, y


def _read(path, label_column, task: str, test_fraction: float, seed: int):
    """(name, task, x_train, y_train, x_test, y_test) with raw labels, split."""
    if path is None:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        task = labels.choose_task(y, y, task, "")
        return ("digits (scikit-learn)", task) + _pick(_split(x, y, test_fraction, seed, True))
    path = pathlib.Path(path)
    if path.is_dir():
        raise CliError(f"--data {path}: is a directory; give a .npz or .csv file")
    if not path.is_file():
        raise CliError(f"--data {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x_train, y_train, x_test, y_test = _load_npz(path)
        task = labels.choose_task(y_train, y_test, task, f"{path}: ")
    elif suffix == ".csv":
        x, y = _load_csv(path, label_column)
        task = labels.choose_task(y, y, task, f"{path}: ")
        x_train, y_train, x_test, y_test = _pick(_split(x, y, test_fraction, seed, task == "classification"))
    else:
        raise CliError(
            f"--data {path}: unsupported file type {suffix or '(none)'!r}; use a .npz (x_train, y_train, "
            "x_test, y_test) or a .csv with a label column"
        )
    return path.name, task, x_train, y_train, x_test, y_test


def _pick(split):
    """train_test_split's (x_train, x_test, y_train, y_test) as (x_train, y_train, x_test, y_test)."""
    x_train, x_test, y_train, y_test = split
    return x_train, y_train, x_test, y_test


def _standardize(x_train, x_test):
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant features (e.g. digits' border pixels) are only centred
    return (x_train - mean) / std, (x_test - mean) / std


def load_data(
    path=None,
    *,
    label_column=None,
    test_fraction: float = 0.3,
    seed: int = 0,
    n_train=None,
    task: str = "auto",
) -> Dataset:
    """The data of ``fastntk run``: split, standardized, labels encoded.

    Parameters
    ----------
    path : str or path-like, optional
        None: scikit-learn's handwritten digits (1797 images of 8x8 pixels, 10 classes).
        A ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (features 2-D
        numeric; labels 1-D integers or strings, or one-hot 2-D; or real targets, 1-D or
        2-D); or a ``.csv`` with one point per line and a label column (``label_column``: a
        name or an index; default a column named label, target, class or y, else the last
        one), split at random.
    label_column : str or int, optional
    test_fraction : float in (0, 1)
        Share of the test set when the data is split here (digits, CSV).
    seed : int
        Seed of the split and of the subsample.
    n_train : int, optional
        Keep this many training points (a random subset), for a quicker run.
    task : {'auto', 'classification', 'regression'}
        auto: regression if the targets are real numbers that are not all integers (or a
        2-D target that is not one-hot), else classification.

    Returns
    -------
    Dataset
        Classes encoded as indices; regression targets as float64 (n, k), as given.

    Raises
    ------
    CliError
        For a missing or malformed file, with a one-line message naming it.
    """
    name, task, x_train, y_train, x_test, y_test = _read(path, label_column, task, test_fraction, seed)
    where = "" if path is None else f"{path}: "
    if task == "classification":
        classes, y_train, y_test = labels.encode_classes(y_train, y_test, where)
    else:
        classes, y_train, y_test = None, labels.regression_targets(y_train), labels.regression_targets(y_test)
    if n_train is not None and n_train < len(y_train):
        keep = np.sort(np.random.default_rng(seed).choice(len(y_train), n_train, replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    x_train, x_test = _standardize(x_train, x_test)
    return Dataset(
        name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=classes, task=task
    )
