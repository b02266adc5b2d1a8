"""The command line's options: ``build_parser`` and the checks of option values."""

from __future__ import annotations

import argparse
import math

from ..architectures import ACTIVATIONS, DEFAULT_B_STD
from .errors import PROG, CliError, number
from .labels import TASKS


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) instead of the usage
    text followed by the error, so that every failure of the command is a single line."""

    def error(self, message):
        raise CliError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


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
    v = number(s)
    if v is None or not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {s!r}")
    return v


def _positive_float(s):
    v = number(s)
    if v is None or not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s!r}")
    return v


_RUN_DESCRIPTION = """\
The NNGP and NTK of an MLP (ntk parameterization) on the data, NTK and NNGP kernel
regression, the test score of the infinitely wide network along gradient-descent
steps t (fastntk.predict.gradient_descent_mse), and a finite network of the same
architecture trained by the same steps (fastntk.train_mse). Prints a table; writes
run.png (test score and training loss against t) and run.json to --out.

The task follows the targets (--task auto) and the first line says which: class
labels (integers, strings, one-hot) are classified, with one-hot targets, scored by
accuracy; real-valued targets are regressed, standardized with the training
statistics, scored by RMSE and R^2.
Inputs are standardized with the training statistics; the learning rate is
max_learning_rate / 2; the finite network is centred (trained on Y + f(X; theta_0),
its prediction is f - f(.; theta_0)) so that it starts, like the analytic curve, from
zero outputs."""


def build_parser() -> argparse.ArgumentParser:
    import fastntk as nt

    p = _Parser(
        prog=PROG,
        description="fastntk: exact infinite-width NNGP and NTK kernels, training "
        "dynamics and finite networks.",
    )
    p.add_argument("--version", action="version", version=f"fastntk {nt.__version__}")
    sub = p.add_subparsers(dest="command", metavar="{run,bench,info}")
    _add_run(sub)
    _add_bench(sub)
    i = sub.add_parser("info", help="print fastntk.build_info()")
    i.add_argument("--json", action="store_true", help="as JSON")
    return p


def _add_run(sub) -> None:
    r = sub.add_parser(
        "run",
        help="NTK regression and training dynamics vs a finite network (digits by default)",
        description=_RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_options(r)
    _add_model_options(r)
    r.add_argument(
        "--device",
        choices=("cpu", "gpu", "cuda"),
        default="cpu",
        help="where the kernels and predictions are computed (gpu = cuda: needs the CUDA backend and CuPy)",
    )
    r.add_argument(
        "--out",
        default="fastntk-out",
        metavar="DIR",
        help="folder for run.png and run.json (default ./fastntk-out)",
    )
    r.add_argument("--quiet", action="store_true", help="print only the paths of the files written")
    r.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (by default one shows on stderr in a terminal once the run takes 2 s)",
    )


def _add_data_options(r) -> None:
    """--data, --label-column, --test-fraction, --n-train, --task."""
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
        "--task",
        choices=TASKS,
        default="auto",
        help="auto (default): regression if the targets are real numbers that are not all integers, "
        "or integers with more than 20 values and under 3 points per value (counts), else "
        "classification",
    )


def _add_model_options(r) -> None:
    """--arch, --width, --steps, --learning-rate, --seed."""
    r.add_argument(
        "--arch",
        default="relu:3",
        metavar="ACT:DEPTH[:W_STD[:B_STD]]",
        help=f"hidden activation ({', '.join(ACTIVATIONS)}) and number of hidden layers, optionally "
        f"W_std (default: the activation's, sqrt(2) for relu) and b_std (default {DEFAULT_B_STD}); "
        "default relu:3",
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


def _add_bench(sub) -> None:
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
        "--device",
        choices=("cpu", "gpu", "cuda"),
        default="cpu",
        help="cuda (= gpu): time the GPU backend on CuPy arrays against CuPy's x @ x.T",
    )
    b.add_argument(
        "--full", action="store_true", help="run the full suite bench/bench_*.py (source checkout)"
    )
    b.add_argument(
        "--bench-dir",
        metavar="DIR",
        help="the bench/ folder for --full (default: ./bench, or the one beside an editable install)",
    )
