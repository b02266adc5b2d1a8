"""Shared by the experiment scripts: command line and main, log-log fits, figures.

matplotlib is needed by the scripts (and the tests that run them), never by fastntk itself;
it is imported here, with the non-interactive Agg backend, only when a figure is made.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time
from dataclasses import dataclass

import numpy as np

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "out"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="the small version the test runs (seconds)")
    p.add_argument(
        "--out", type=pathlib.Path, default=DEFAULT_OUT, help=f"folder for the PNG (default {DEFAULT_OUT})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random networks and data")
    return p


def script_main(module, argv=None) -> dict:
    """The ``main`` of an experiment script `module`: parses --quick, --out and --seed, calls
    its ``run`` with its ``QUICK`` or ``FULL`` settings, prints its ``report`` and the time."""
    args = parser(module.__doc__.splitlines()[0]).parse_args(argv)
    start = time.perf_counter()
    r = module.run(**(module.QUICK if args.quick else module.FULL), seed=args.seed, out=args.out)
    module.report(r)
    print(f"({time.perf_counter() - start:.1f} s)")
    return r


@dataclass(frozen=True)
class Fit:
    """log(y) = intercept + slope * log(x) by least squares over all samples.

    stderr is the slope's standard error from the residual scatter (scipy.stats.linregress):
    with several random networks per width, it measures how well the seeds pin the slope.
    """

    slope: float
    stderr: float
    intercept: float

    def __str__(self) -> str:
        return f"{self.slope:+.3f} +- {self.stderr:.3f}"

    def line(self, x):
        return np.exp(self.intercept) * np.asarray(x, dtype=float) ** self.slope


def loglog_fit(x, y) -> Fit:
    """Fit of log y against log x (x, y: 1-D arrays of equal length, y > 0)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or np.unique(x).size < 2:
        raise ValueError(
            f"loglog_fit needs 1-D x and y of equal length with >= 2 distinct x, got {x.shape}, {y.shape}"
        )
    if not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError("loglog_fit needs positive x and y")
    r = stats.linregress(np.log(x), np.log(y))
    return Fit(float(r.slope), float(r.stderr), float(r.intercept))


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out, name: str) -> pathlib.Path:
    """Write fig to out/name (creating out), close it, return the path."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path


def rel_frobenius(a, b) -> float:
    """||a - b||_F / ||b||_F."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def geometric_summary(values) -> tuple[float, float]:
    """(geometric mean, standard error of log) of positive samples."""
    logs = np.log(np.asarray(values, dtype=float))
    se = float(logs.std(ddof=1) / math.sqrt(logs.size)) if logs.size > 1 else float("nan")
    return float(np.exp(logs.mean())), se
