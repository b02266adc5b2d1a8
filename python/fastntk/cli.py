"""The ``fastntk`` command: ``fastntk run``, ``fastntk bench``, ``fastntk info``.

``fastntk run``
    The main job, on scikit-learn's handwritten digits (bundled with scikit-learn, no
    download) or on your data (``--data``): the NNGP and NTK of an MLP, NTK (and NNGP)
    kernel regression, the test accuracy of an infinitely wide network along
    gradient-descent time from :func:`fastntk.predict.gradient_descent_mse`, and a finite
    network of the same architecture trained by the same gradient descent
    (:func:`fastntk.train_mse`) for comparison. Prints a table and writes ``run.png``
    (accuracy and training loss against t) and ``run.json`` (every number) to ``--out``.
``fastntk bench``
    A built-in quick benchmark (the depth-5 kernel against one GEMM, measured like
    ``bench/bench_kernels.py``); ``--full`` runs the repository's benchmark suite
    (``bench/bench_*.py``), which is not part of the installed package.
``fastntk info``
    :func:`fastntk.build_info`.

Conventions of ``fastntk run``
------------------------------
- Inputs are standardized with the training set's per-feature mean and standard
  deviation (features constant on the training set are only centred); targets are one-hot
  (one output per class); the predicted class is the largest output.
- The network is ``DEPTH x [Dense(width), activation]`` then ``Dense(n_classes)`` in the ntk
  parameterization; the kernels are its infinite-width limit (``width`` only matters for the
  finite network).
- Time ``t`` counts discrete gradient-descent steps on ``||f - Y||^2 / (2 n)``, ``n =
  Y.size`` (Neural Tangents' convention), with learning rate ``max_learning_rate / 2 =
  n / lambda_max``: the fastest mode of the NTK then converges in one step, and the finite
  network, whose empirical NTK differs from the limit by O(1/sqrt(width)), stays a factor of
  two away from the edge of stability.
- The finite network is *centred*: it is trained on ``Y + f(X; theta_0)``, so ``f(x; theta_t)
  - f(x; theta_0)`` follows the same gradient descent as a network with zero initial outputs,
  the setting of the analytic curve (``fx_train_0 = fx_test_0 = 0``). Without centring the
  random initial outputs, of the size of the targets, would blur the comparison.

Errors (a bad file or option) print one line on stderr and exit with status 1 (2 for
command-line usage), never a traceback; ``FASTNTK_TRACEBACK=1`` shows the traceback of an
error raised inside fastntk (for a bug report).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import time
import warnings

import numpy as np

from ._timing import best_time

__all__ = ["main"]

PROG = "fastntk"

# Activations of --arch: name -> (fastntk layer class, its arguments, default W_std). The
# default W_std keeps the pre-activation variance of order one through the layers for
# standardized inputs, so deep kernels neither vanish nor explode: ReLU halves the variance
# and sqrt(2) restores it (He's initialization; Gelu is ReLU-like), LeakyRelu(0.1) keeps
# (1 + 0.01) / 2 of it, Abs all of it, and Erf (slope 2 / sqrt(pi) at 0, saturating) settles
# at a fixed point of order 0.1 with W_std = 1.
_ACTIVATIONS = {
    "relu": ("Relu", (), math.sqrt(2.0)),
    "leaky_relu": ("LeakyRelu", (0.1,), math.sqrt(2.0 / 1.01)),
    "abs": ("Abs", (), 1.0),
    "erf": ("Erf", (), 1.0),
    "gelu": ("Gelu", (), math.sqrt(2.0)),
}
_DEFAULT_B_STD = 0.05
_MAX_DEPTH = 100

_EXIT_ERROR = 1
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user-facing error: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = _EXIT_ERROR):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) instead of the usage
    text followed by the error, so that every failure of the command is a single line."""

    def error(self, message):
        raise CliError(f"{self.prog}: error: {message} (see '{self.prog} --help')", _EXIT_USAGE)


# ---------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class Dataset:
    """A classification data set, split and standardized.

    Attributes
    ----------
    name : str
    x_train : float64 (N, d), standardized
    y_train : int64 (N,), class indices into ``classes``
    x_test : float64 (M, d), standardized with the training statistics
    y_test : int64 (M,)
    classes : numpy.ndarray (C,), the original labels
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.classes)


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


def _labels(y, n: int, what: str) -> np.ndarray:
    """1-D labels from labels (n,) or a one-hot matrix (n, C)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] == n and y.dtype.kind in "biuf":
        # One-hot rows: exactly one 1, the rest 0.
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise CliError(
                f"{what} of shape {y.shape} must be one-hot (one 1 per row, zeros elsewhere) or 1-D labels"
            )
        return np.argmax(y, axis=1)
    if y.ndim != 1 or y.shape[0] != n:
        raise CliError(
            f"{what} must have shape ({n},) (one label per point) or ({n}, classes), got {y.shape}"
        )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise CliError(f"{what} must hold class labels (integers or strings), got non-integer floats")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise CliError(f"{what} must hold class labels (integers or strings), got dtype {y.dtype}")
    return y


def _encode(y_train, y_test, where: str):
    classes = np.unique(y_train)
    if classes.size < 2:
        raise CliError(
            f"{where}y_train must hold at least 2 classes, got {classes.size} ({classes.tolist()})"
        )
    unknown = np.setdiff1d(np.unique(y_test), classes)
    if unknown.size:
        raise CliError(f"{where}y_test has labels that y_train lacks: {unknown[:5].tolist()}")
    return classes, np.searchsorted(classes, y_train), np.searchsorted(classes, y_test)


def _split(x, y, test_fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    try:  # stratified when every class has at least two points
        return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    except ValueError:
        return train_test_split(x, y, test_size=test_fraction, random_state=seed)


def _load_npz(path: pathlib.Path):
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
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:  # object arrays need pickle, which a data file must not
        raise CliError(f"{path}: cannot read this .npz without pickle ({e})") from None
    except Exception as e:  # not a zip, truncated, ...: one line naming the file
        raise CliError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
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
    y_train = _labels(arrays["y_train"], x_train.shape[0], f"{path}: y_train")
    y_test = _labels(arrays["y_test"], x_test.shape[0], f"{path}: y_test")
    return x_train, y_train, x_test, y_test


def _number(s: str):
    try:
        return float(s)
    except ValueError:
        return None


def _load_csv(path: pathlib.Path, label_column, test_fraction: float, seed: int):
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CliError(f"{path}: cannot read it as CSV ({type(e).__name__}: {e})") from None
    if not rows:
        raise CliError(f"{path}: the file is empty")
    # A header is a first row with a cell that is not a number (labels may be words, so
    # look at whether every cell of the first row parses).
    header = None
    if any(_number(c) is None for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise CliError(f"{path}: no data rows after the header")
    n_cols = len(header) if header is not None else len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != n_cols:
            line = i + 1 + (header is not None)
            raise CliError(f"{path}: line {line} has {len(r)} columns, expected {n_cols}")
    if n_cols < 2:
        raise CliError(f"{path}: needs at least two columns (features and a label), got {n_cols}")
    col = _label_index(path, label_column, header, n_cols)
    feature_cols = [j for j in range(n_cols) if j != col]
    x = np.empty((len(rows), len(feature_cols)))
    for i, r in enumerate(rows):
        for k, j in enumerate(feature_cols):
            v = _number(r[j])
            if v is None:
                line = i + 1 + (header is not None)
                name = header[j] if header else f"column {j}"
                raise CliError(f"{path}: line {line}, {name}: {r[j]!r} is not a number")
            x[i, k] = v
    if not np.isfinite(x).all():
        raise CliError(f"{path}: the features have NaN or Inf entries")
    raw = [r[col].strip() for r in rows]
    numbers = [_number(v) for v in raw]
    if all(v is not None and math.isfinite(v) and v == round(v) for v in numbers):
        y = np.array([int(v) for v in numbers])
    else:
        y = np.array(raw)
    if len(rows) < 4:
        raise CliError(f"{path}: {len(rows)} data rows are too few to split into training and test sets")
    x_train, x_test, y_train, y_test = _split(x, y, test_fraction, seed)
    return x_train, y_train, x_test, y_test


def _label_index(path, label_column, header, n_cols: int) -> int:
    if label_column is None:
        if header is not None:
            for name in ("label", "target", "class", "y"):
                if name in [h.lower() for h in header]:
                    return [h.lower() for h in header].index(name)
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


def load_data(
    path=None, *, label_column=None, test_fraction: float = 0.3, seed: int = 0, n_train=None
) -> Dataset:
    """The data of ``fastntk run``: split, standardized, labels encoded.

    Parameters
    ----------
    path : str or path-like, optional
        None: scikit-learn's handwritten digits (1797 images of 8x8 pixels, 10 classes).
        A ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (features 2-D
        numeric; labels 1-D integers or strings, or one-hot 2-D); or a ``.csv`` with one
        point per line and a label column (``label_column``: a name or an index; default a
        column named label, target, class or y, else the last one), split at random.
    label_column : str or int, optional
    test_fraction : float in (0, 1)
        Share of the test set when the data is split here (digits, CSV).
    seed : int
        Seed of the split and of the subsample.
    n_train : int, optional
        Keep this many training points (a random subset), for a quicker run.

    Returns
    -------
    Dataset

    Raises
    ------
    CliError
        For a missing or malformed file, with a one-line message naming it.
    """
    if path is None:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x_train, x_test, y_train, y_test = _split(x, y, test_fraction, seed)
        name = "digits (scikit-learn)"
    else:
        path = pathlib.Path(path)
        if not path.is_file():
            raise CliError(f"--data {path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            x_train, y_train, x_test, y_test = _load_npz(path)
        elif suffix == ".csv":
            x_train, y_train, x_test, y_test = _load_csv(path, label_column, test_fraction, seed)
        else:
            raise CliError(
                f"--data {path}: unsupported file type {suffix or '(none)'!r}; use a .npz (x_train, y_train, "
                "x_test, y_test) or a .csv with a label column"
            )
        name = path.name
    classes, y_train, y_test = _encode(y_train, y_test, "" if path is None else f"{path}: ")
    if n_train is not None and n_train < len(y_train):
        keep = np.sort(np.random.default_rng(seed).choice(len(y_train), n_train, replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant features (e.g. digits' border pixels) are only centred
    return Dataset(
        name=name,
        x_train=(x_train - mean) / std,
        y_train=y_train,
        x_test=(x_test - mean) / std,
        y_test=y_test,
        classes=classes,
    )


# ---------------------------------------------------------------------------------------
# Architecture


@dataclasses.dataclass(frozen=True)
class Arch:
    """``--arch ACT:DEPTH[:W_STD[:B_STD]]``: DEPTH hidden layers of ACT."""

    activation: str
    depth: int
    W_std: float
    b_std: float

    def __str__(self) -> str:
        return f"{self.activation}:{self.depth}:{self.W_std:.6g}:{self.b_std:.6g}"

    def network(self, width: int, n_out: int):
        """The MLP ``depth x [Dense(width), act]`` then ``Dense(n_out)``, ntk parameterization."""
        import fastntk as nt

        cls_name, args, _ = _ACTIVATIONS[self.activation]
        layers = []
        for _ in range(self.depth):
            layers += [nt.Dense(width, W_std=self.W_std, b_std=self.b_std), getattr(nt, cls_name)(*args)]
        return nt.serial(*layers, nt.Dense(n_out, W_std=self.W_std, b_std=self.b_std))


def parse_arch(text: str) -> Arch:
    """Parse ``ACT:DEPTH[:W_STD[:B_STD]]`` (e.g. ``relu:3``, ``erf:5:1.2:0.1``).

    Raises
    ------
    CliError
        Naming what is wrong.
    """
    parts = text.split(":")
    names = ", ".join(_ACTIVATIONS)
    if not 2 <= len(parts) <= 4:
        raise CliError(
            f"--arch {text!r}: expected ACT:DEPTH[:W_STD[:B_STD]], e.g. relu:3 (ACT one of {names})",
            _EXIT_USAGE,
        )
    act = parts[0].strip().lower()
    if act not in _ACTIVATIONS:
        raise CliError(
            f"--arch {text!r}: unknown activation {parts[0]!r}; choose one of {names}", _EXIT_USAGE
        )
    try:
        depth = int(parts[1])
    except ValueError:
        depth = -1
    if not 1 <= depth <= _MAX_DEPTH:
        raise CliError(
            f"--arch {text!r}: DEPTH must be an integer from 1 to {_MAX_DEPTH}, got {parts[1]!r}", _EXIT_USAGE
        )
    W_std = _ACTIVATIONS[act][2]
    b_std = _DEFAULT_B_STD
    for k, name in ((2, "W_STD"), (3, "B_STD")):
        if len(parts) > k:
            v = _number(parts[k])
            if v is None or not math.isfinite(v) or v < 0 or (k == 2 and v == 0):
                bound = "> 0" if k == 2 else ">= 0"
                raise CliError(
                    f"--arch {text!r}: {name} must be a finite number {bound}, got {parts[k]!r}", _EXIT_USAGE
                )
            if k == 2:
                W_std = v
            else:
                b_std = v
    return Arch(act, depth, W_std, b_std)


# ---------------------------------------------------------------------------------------
# fastntk run


def time_grid(steps: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Step counts for the table (0, 1, 3, 10, 30, ... below ``steps``, and ``steps``) and for
    the plot (those and about ``n`` log-spaced integers up to ``steps``), as
    ``(plot, table)``, both sorted int64 arrays, table a subset of plot."""
    table, v = [0], 1
    while v < steps:
        table.append(v)
        v = v * 3 if str(v)[0] == "1" else v * 10 // 3
    if steps:
        table.append(steps)
    log_spaced = np.round(np.geomspace(1, steps, n)).astype(np.int64) if steps else np.zeros(0, np.int64)
    plot = np.unique(np.concatenate([np.array(table, dtype=np.int64), log_spaced]))
    return plot, np.array(table, dtype=np.int64)


def _accuracy(scores, labels) -> np.ndarray:
    """Share of argmax(scores) == labels: scores (..., M, C) -> (...)."""
    return (np.argmax(scores, axis=-1) == labels).mean(axis=-1)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _device_arrays(device: str):
    """(to_device, to_host) for --device."""
    import fastntk as nt

    if device == "cpu":
        return (lambda a: a), (lambda a: a)
    if not nt.has_cuda():
        raise CliError(
            "--device gpu: this fastntk was built without the CUDA backend (fastntk.has_cuda() is False; "
            "the GPU backend is not part of this version yet); use --device cpu"
        )
    try:
        import cupy
    except ImportError:
        raise CliError("--device gpu needs CuPy (pip install cupy-cuda12x); it is not installed") from None
    return cupy.asarray, cupy.asnumpy


def run(args, out=print) -> dict:
    """``fastntk run`` on parsed arguments; returns the results written to run.json."""
    import fastntk as nt

    arch = parse_arch(args.arch)
    to_device, to_host = _device_arrays(args.device)
    outdir = pathlib.Path(args.out)
    try:  # before any work: a bad --out should not cost the run
        outdir.mkdir(parents=True, exist_ok=True)
        if not os.access(outdir, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise CliError(f"--out {outdir}: cannot write there ({e.strerror or e})") from None
    data = load_data(
        args.data,
        label_column=args.label_column,
        test_fraction=args.test_fraction,
        seed=args.seed,
        n_train=args.n_train,
    )
    xtr, xte = data.x_train, data.x_test
    n_train, n_test, d, c = xtr.shape[0], xte.shape[0], xtr.shape[1], data.n_classes
    y = np.eye(c)[data.y_train]  # one-hot targets (N, C)
    net = arch.network(args.width, c)
    out(
        f"fastntk {nt.__version__}: {data.name}, {n_train} train / {n_test} test points, {d} features, {c} classes"
    )
    out(
        f"network: {arch.depth} hidden layers [Dense, {type(net.layers[1]).__name__}], ntk parameterization, "
        f"W_std {arch.W_std:.4g}, b_std {arch.b_std:.4g}; finite network: width {args.width}"
    )

    # ---- The kernels.
    xtr_d, xte_d = to_device(xtr), to_device(xte)
    (k_train, k_test), t_kernel = _timed(lambda: (net.kernel(xtr_d), net.kernel(xte_d, xtr_d)))
    out(
        f"kernels: NNGP and NTK, train ({n_train} x {n_train}) and test-train ({n_test} x {n_train}) in "
        f"{t_kernel:.3f} s ({args.device}, {nt.get_num_threads()} threads)"
    )

    # ---- t = infinity: kernel regression.
    y_d = to_device(y)
    acc_inf = {
        g: float(
            _accuracy(
                to_host(nt.predict.kernel_regression(getattr(k_train, g), y_d, getattr(k_test, g))),
                data.y_test,
            )
        )
        for g in ("ntk", "nngp")
    }
    out(f"kernel regression (t = inf): test accuracy NTK {acc_inf['ntk']:.2%}, NNGP {acc_inf['nngp']:.2%}")
    # The training loss at t = inf: 0 when the NTK is positive definite (the flow interpolates).
    loss_inf = float(0.5 * np.mean((to_host(nt.predict.kernel_regression(k_train.ntk, y_d)) - y) ** 2))

    # ---- Gradient descent: the infinitely wide network in closed form.
    lr_max = nt.predict.max_learning_rate(k_train.ntk, y.size)
    lr = lr_max / 2 if args.learning_rate is None else args.learning_rate
    t_plot, t_table = time_grid(args.steps)
    predict_fn = nt.predict.gradient_descent_mse(k_train.ntk, y_d, lr, discrete=True)
    f_train, f_test = predict_fn(t_plot, 0.0, 0.0, k_test.ntk)
    f_train, f_test = to_host(f_train), to_host(f_test)
    ntk_acc = _accuracy(f_test, data.y_test)
    ntk_loss = 0.5 * ((f_train - y) ** 2).mean(axis=(1, 2))

    # ---- The finite network, centred (module docstring), trained by the same steps.
    params = net.init(args.seed, d)
    f0_train, f0_test = net.apply(params, xtr), net.apply(params, xte)
    out(
        f"training the finite network for {args.steps} steps at learning rate {lr:.4g} "
        f"(max_learning_rate {lr_max:.4g}) ..."
    )
    result, t_train = _timed(
        lambda: nt.train_mse(
            net, params, xtr, y + f0_train, t_plot, learning_rate=lr, x_test=xte, discrete=True
        )
    )
    net_acc = _accuracy(result.fx_test - f0_test, data.y_test)
    net_loss = result.loss
    out(f"trained in {t_train:.3g} s")
    out("")
    rows = np.searchsorted(t_plot, t_table)
    header = (
        f"{'step t':>8}  {'NTK test acc':>12}  {'network test acc':>16}  {'NTK train loss':>14}  "
        f"{'network train loss':>18}"
    )
    out(header)
    for i in rows:
        out(
            f"{t_plot[i]:>8d}  {ntk_acc[i]:>12.2%}  {net_acc[i]:>16.2%}  {ntk_loss[i]:>14.4e}  {net_loss[i]:>18.4e}"
        )
    out(f"{'inf':>8}  {acc_inf['ntk']:>12.2%}  {'':>16}  {loss_inf:>14.4e}")
    out("")

    results = dict(
        version=nt.__version__,
        data=data.name,
        n_train=n_train,
        n_test=n_test,
        n_features=d,
        n_classes=c,
        arch=str(arch),
        activation=arch.activation,
        depth=arch.depth,
        W_std=arch.W_std,
        b_std=arch.b_std,
        width=args.width,
        seed=args.seed,
        device=args.device,
        threads=nt.get_num_threads(),
        learning_rate=lr,
        max_learning_rate=lr_max,
        kernel_seconds=t_kernel,
        train_seconds=t_train,
        t=t_plot.tolist(),
        ntk_test_accuracy=ntk_acc.tolist(),
        network_test_accuracy=net_acc.tolist(),
        ntk_train_loss=ntk_loss.tolist(),
        network_train_loss=net_loss.tolist(),
        kernel_regression_test_accuracy=acc_inf,
        kernel_regression_train_loss=loss_inf,
        chance_accuracy=float(np.bincount(data.y_test, minlength=c).max() / n_test),
    )
    try:
        png = outdir / "run.png"
        _plot(results, png)
        js = outdir / "run.json"
        js.write_text(json.dumps(results, indent=1) + "\n")
    except OSError as e:
        raise CliError(f"--out {outdir}: cannot write there ({e.strerror or e})") from None
    results["files"] = [str(png), str(js)]
    return results


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CliError("writing the plot needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _plot(r: dict, path: pathlib.Path) -> None:
    plt = _pyplot()
    t = np.asarray(r["t"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(t, 100 * np.asarray(r["ntk_test_accuracy"]), "-", color="C0", lw=2, label="NTK (infinite width)")
    ax1.plot(
        t,
        100 * np.asarray(r["network_test_accuracy"]),
        "o",
        color="C1",
        ms=4,
        label=f"finite network, width {r['width']}",
    )
    ax1.axhline(
        100 * r["kernel_regression_test_accuracy"]["ntk"],
        color="C0",
        ls=":",
        lw=1,
        label="NTK, t = inf (kernel regression)",
    )
    ax1.axhline(100 * r["chance_accuracy"], color="gray", ls="--", lw=1, label="chance (largest class)")
    ax1.set_ylabel("test accuracy (%)")
    # symlog: t = 0 (chance) is shown, the steps from 1 on a log scale.
    ax1.set_xscale("symlog", linthresh=1.0)
    ax1.set_xlim(0, max(t[-1], 1))
    ax2.loglog(t[1:], r["ntk_train_loss"][1:], "-", color="C0", lw=2, label="NTK (infinite width)")
    ax2.loglog(
        t[1:], r["network_train_loss"][1:], "o", color="C1", ms=4, label=f"finite network, width {r['width']}"
    )
    ax2.set_xlim(1, max(t[-1], 2))
    ax2.set_ylabel(r"training loss $\|f - Y\|^2 / (2n)$")
    for ax in (ax1, ax2):
        ax.set_xlabel("gradient-descent step t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{r['data']}: {r['n_train']} train / {r['n_test']} test points; MLP with {r['depth']} hidden "
        f"{r['activation']} layers (ntk parameterization, W_std {r['W_std']:.3g}, b_std {r['b_std']:.3g}); "
        f"learning rate {r['learning_rate']:.3g}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# fastntk bench


_BENCH_DEPTH = 5


def bench_rows(sizes, dims, seed: int = 0) -> list:
    """The quick benchmark: for each N and d, a depth-5 ReLU MLP's NNGP + NTK (x2 = None,
    float64; W_std 1.5, b_std 0.1 as bench/bench_kernels.py) against NumPy's ``x @ x.T``
    (the floor of any method that needs every inner product) and against fastntk with no
    layers (its own tiled GEMM and output writes: what the recursion adds is the rest)."""
    import fastntk as nt

    layers = [nt.Dense(W_std=1.5, b_std=0.1)]
    for _ in range(_BENCH_DEPTH):
        layers += [nt.Relu(), nt.Dense(W_std=1.5, b_std=0.1)]
    net = nt.serial(*layers)
    gemm_only = nt.serial(nt.Dense(b_std=None))
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in dims:
            x = rng.standard_normal((n, d))
            t_ours = best_time(lambda: net.kernel(x))  # noqa: B023 (called before the loop moves on)
            t_gemm = best_time(lambda: x @ x.T)  # noqa: B023
            t_own = best_time(lambda: gemm_only.kernel(x, get="nngp"))  # noqa: B023
            pairs = n * (n + 1) // 2
            rows.append(
                dict(
                    N=n,
                    d=d,
                    fastntk_s=t_ours,
                    numpy_gemm_s=t_gemm,
                    own_gemm_s=t_own,
                    vs_numpy_gemm=t_ours / t_gemm,
                    vs_own_gemm=t_ours / t_own,
                    pair_layers_per_s=pairs * _BENCH_DEPTH / t_ours,
                )
            )
    return rows


def _bench_dir(given) -> pathlib.Path | None:
    """The repository's bench/ folder: --bench-dir, else ./bench, else the one beside an
    editable install (python/fastntk/ -> the repository root)."""
    if given is not None:
        return pathlib.Path(given)
    here = pathlib.Path(__file__).resolve()
    for cand in (pathlib.Path.cwd() / "bench", here.parents[2] / "bench"):
        if (cand / "bench_kernels.py").is_file():
            return cand
    return None


def bench(args, out=print) -> int:
    import fastntk as nt

    if args.full:
        return _bench_full(args, out)
    sizes = (1000,) if args.quick else (1000, 4000)
    dims = (16, 784)
    info = nt.build_info()
    out(
        f"fastntk {nt.__version__} quick benchmark: depth-{_BENCH_DEPTH} ReLU MLP, NNGP + NTK, x2 = None, float64; "
        f"{nt.get_num_threads()} threads, BLAS {info.get('blas_core', '?')}, SIMD {info.get('simd', '?')}; best of 3-7"
    )
    rows = bench_rows(sizes, dims)
    out("")
    out(
        f"{'N':>6} {'d':>5} {'fastntk s':>10} {'GEMM s':>10} {'fastntk/GEMM':>13} {'own GEMM s':>11} "
        f"{'fastntk/own':>12} {'pair-layers/s':>14}"
    )
    for r in rows:
        out(
            f"{r['N']:>6} {r['d']:>5} {r['fastntk_s']:>10.4f} {r['numpy_gemm_s']:>10.4f} {r['vs_numpy_gemm']:>13.2f} "
            f"{r['own_gemm_s']:>11.4f} {r['vs_own_gemm']:>12.2f} {r['pair_layers_per_s'] / 1e6:>12.0f} M"
        )
    out("")
    out(
        "GEMM: NumPy's x @ x.T, the floor of any method that needs all inner products; own GEMM: fastntk "
        "with no layers (its tiled BLAS and output writes)."
    )
    where = _bench_dir(None)
    if where is not None:
        out(
            f"Full suite (vs the NumPy reference, predict, empirical NTK, memory): fastntk bench --full, "
            f"or the scripts in {where}"
        )
    else:
        out(
            "Full suite: bench/bench_*.py in the fastntk source repository (not part of the installed "
            "package); from a checkout: fastntk bench --full"
        )
    if args.json is not None:
        payload = {"build": info, "threads": nt.get_num_threads(), "depth": _BENCH_DEPTH, "rows": rows}
        try:
            pathlib.Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
        except OSError as e:
            raise CliError(f"--json {args.json}: cannot write it ({e.strerror or e})") from None
        out(f"wrote {args.json}")
    return 0


def _bench_full(args, out) -> int:
    where = _bench_dir(args.bench_dir)
    if where is None or not where.is_dir():
        raise CliError(
            ("--bench-dir " + str(where) + ": no such folder")
            if where is not None
            else "the full benchmark suite (bench/bench_*.py) is in the fastntk source repository, not in the "
            "installed package: run this from a checkout or pass --bench-dir PATH/TO/bench"
        )
    first = ("bench_kernels.py", "bench_predict.py", "bench_empirical.py")
    scripts = sorted(
        where.glob("bench_*.py"),
        key=lambda p: (p.name not in first, first.index(p.name) if p.name in first else 0, p.name),
    )
    if not scripts:
        raise CliError(f"--bench-dir {where}: no bench_*.py scripts there")
    for s in scripts:
        cmd = [sys.executable, str(s)] + (["--quick"] if args.quick else [])
        out(f"$ python {s.relative_to(where.parent)}" + (" --quick" if args.quick else ""))
        sys.stdout.flush()  # before the child writes to the same stream
        rc = subprocess.call(cmd, cwd=where.parent)
        if rc != 0:
            raise CliError(f"{s.name} failed with exit status {rc}")
    return 0


# ---------------------------------------------------------------------------------------
# fastntk info


def info(args, out=print) -> int:
    import fastntk as nt

    data = dict(nt.build_info())
    data["threads"] = nt.get_num_threads()
    data["numpy"] = np.__version__
    data["python"] = sys.version.split()[0]
    if args.json:
        out(json.dumps(data, indent=1))
    else:
        width = max(len(k) for k in data)
        for k, v in data.items():
            out(f"{k:<{width}}  {v}")
    return 0


# ---------------------------------------------------------------------------------------
# The command line


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def _nonneg_int(s):
    try:
        v = int(s)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {s!r}")
    return v


def _fraction(s):
    v = _number(s)
    if v is None or not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {s!r}")
    return v


def _positive_float(s):
    v = _number(s)
    if v is None or not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s!r}")
    return v


_RUN_DESCRIPTION = """\
The NNGP and NTK of an MLP (ntk parameterization) on the data, NTK and NNGP kernel
regression, the test accuracy of the infinitely wide network along gradient-descent
steps t (fastntk.predict.gradient_descent_mse), and a finite network of the same
architecture trained by the same steps (fastntk.train_mse). Prints a table; writes
run.png (accuracy and training loss against t) and run.json to --out.

Inputs are standardized with the training statistics and targets are one-hot; the
learning rate is max_learning_rate / 2; the finite network is centred (trained on
Y + f(X; theta_0), its prediction is f - f(.; theta_0)) so that it starts, like the
analytic curve, from zero outputs."""


def build_parser() -> argparse.ArgumentParser:
    import fastntk as nt

    p = _Parser(
        prog=PROG,
        description="fastntk: exact infinite-width NNGP and NTK kernels, training "
        "dynamics and finite networks.",
    )
    p.add_argument("--version", action="version", version=f"fastntk {nt.__version__}")
    sub = p.add_subparsers(dest="command", metavar="{run,bench,info}")

    r = sub.add_parser(
        "run",
        help="NTK regression and training dynamics vs a finite network (digits by default)",
        description=_RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--data",
        metavar="FILE",
        help="a .npz with x_train, y_train, x_test, y_test, or a .csv with a "
        "label column (default: scikit-learn's handwritten digits)",
    )
    r.add_argument(
        "--label-column",
        metavar="COL",
        help="CSV label column, a name or an index (default: a column "
        "named label/target/class/y, else the last)",
    )
    r.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.3,
        metavar="F",
        help="test share when the data is split here (digits, CSV; default 0.3)",
    )
    r.add_argument(
        "--n-train",
        type=_positive_int,
        metavar="N",
        help="use a random subset of N training points (default: all)",
    )
    r.add_argument(
        "--arch",
        default="relu:3",
        metavar="ACT:DEPTH[:W_STD[:B_STD]]",
        help=f"hidden activation ({', '.join(_ACTIVATIONS)}) and number of hidden layers, optionally "
        f"W_std and b_std (default relu:3, i.e. W_std sqrt(2), b_std {_DEFAULT_B_STD})",
    )
    r.add_argument(
        "--width",
        type=_positive_int,
        default=512,
        metavar="N",
        help="width of the finite network's hidden layers (default 512)",
    )
    r.add_argument(
        "--steps",
        type=_nonneg_int,
        default=100,
        metavar="T",
        help="gradient-descent steps, the largest t (default 100)",
    )
    r.add_argument(
        "--learning-rate",
        type=_positive_float,
        metavar="LR",
        help="default: fastntk.predict.max_learning_rate / 2",
    )
    r.add_argument(
        "--seed", type=int, default=0, help="seed of the split, the subset and the network (default 0)"
    )
    r.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="where the kernels and predictions are computed (gpu needs the CUDA backend)",
    )
    r.add_argument(
        "--out",
        default="fastntk-out",
        metavar="DIR",
        help="folder for run.png and run.json (default ./fastntk-out)",
    )
    r.add_argument("--quiet", action="store_true", help="print only the paths of the files written")

    b = sub.add_parser(
        "bench",
        help="a quick kernel benchmark; --full runs the repository's suite",
        description="Built-in quick benchmark: the depth-5 ReLU NNGP + NTK against one GEMM "
        "(best of 3-7 runs, like bench/bench_kernels.py). --full runs bench/bench_*.py of a "
        "source checkout (they write bench/results/*.json).",
    )
    b.add_argument(
        "--quick", action="store_true", help="N = 1000 only (with --full: pass --quick to each script)"
    )
    b.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    b.add_argument(
        "--full", action="store_true", help="run the full suite bench/bench_*.py (source checkout)"
    )
    b.add_argument(
        "--bench-dir",
        metavar="DIR",
        help="the bench/ folder for --full (default: ./bench, or the one beside an editable install)",
    )

    i = sub.add_parser("info", help="print fastntk.build_info()")
    i.add_argument("--json", action="store_true", help="as JSON")
    return p


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {category.__name__}: {message}".replace("\n", " "), file=sys.stderr)


def main(argv=None) -> int:
    """Entry point of the ``fastntk`` console script (and ``python -m fastntk``).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 for an error (a bad file, a failed run), 2 for a
        command-line usage error, 130 if interrupted. Errors are one line on stderr.
    """
    saved = warnings.showwarning
    warnings.showwarning = _one_line_warnings
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version
            return int(e.code or 0)
        if args.command is None:
            raise CliError(
                f"{PROG}: error: choose a command: run, bench or info (see '{PROG} --help')", _EXIT_USAGE
            )
        if args.command == "run":
            quiet = args.quiet
            results = run(args, out=(lambda *a, **k: None) if quiet else print)
            for f in results["files"]:
                print(f if quiet else f"wrote {f}")
            return 0
        if args.command == "bench":
            return bench(args)
        return info(args)
    except CliError as e:
        msg = str(e)
        if not msg.startswith(f"{PROG}"):
            msg = f"{PROG}: error: {msg}"
        print(msg.replace("\n", " "), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    except (ValueError, TypeError, MemoryError, FloatingPointError, OSError) as e:
        # What fastntk itself raises for inputs it cannot take (clear messages already):
        # shown as one line, like the command's own errors.
        if os.environ.get("FASTNTK_TRACEBACK"):
            raise
        print(f"{PROG}: error: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return _EXIT_ERROR
    finally:
        warnings.showwarning = saved
