"""Benchmark of fastntk.sklearn.MLPGaussianProcessRegressor: maximum-likelihood fits of the
MLP kernels' W_std, b_std, noise (and depth) against scikit-learn's GaussianProcessRegressor
with the same kernel.

    python bench/bench_gp_fit.py [--quick] [--restarts 2] [--threads T] [--json FILE]

The reference is ``GaussianProcessRegressor(K + WhiteKernel(1.0), alpha=0, n_restarts_optimizer=R,
random_state=0)`` with ``K`` fastntk's own ``NTK``/``NNGP`` GP kernel (same analytic gradients,
same bounds (1e-2, 1e2), (1e-5, 1e5), (1e-5, 1e5), same starts: the same seed draws the same
random starts), so the two differ only in the fit around the kernel: scikit-learn does a
Cholesky and ``cho_solve(L, I)`` per evaluation, fastntk a Cholesky and an in-place inversion of
the factor, and for a list of depths one kernel pass for all depths per evaluation where
scikit-learn fits each depth separately (the best of its fits is the reference).

Data (standardized features and targets):
- diabetes: scikit-learn's ``load_diabetes`` (N = 442, d = 10);
- synthetic: N = 1500 (500 with --quick), d = 16, ``y = sin(3 x.w) + |x|^2 / d + 0.1 noise``.

Cases per data set: the NTK (ReLU, depth 3), the NNGP (ReLU, depth 3), and the NTK with the
depth chosen among 1..5. Each fit runs twice, ours and scikit-learn's alternately (the machine
is shared; the minimum is the least disturbed run). Reported: fitted values, log marginal
likelihood, likelihood evaluations, seconds, and the time ratio.

Writes a table and bench/results/gp_fit.json.
"""

from __future__ import annotations

import argparse
import gc
import time
import warnings

import numpy as np
import threadpoolctl
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel

import fastntk as nt
from fastntk.sklearn import NNGP, NTK, MLPGaussianProcessRegressor

from _common import counted, machine, markdown_table, write_json


def cpu_pressure():
    """Linux PSI 'some avg10' for the CPU (share of the last 10 s with runnable tasks waiting),
    or None: how much other work disturbed the timings."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def standardized(x, y):
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, (y - y.mean()) / y.std()


def datasets(quick: bool):
    xd, yd = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(0)
    n, d = (500, 16) if quick else (1500, 16)
    x = rng.standard_normal((n, d))
    w = rng.standard_normal(d) / np.sqrt(d)
    y = np.sin(3 * x @ w) + np.sum(x * x, axis=1) / d + 0.1 * rng.standard_normal(n)
    return {"diabetes": standardized(xd, yd), "synthetic": standardized(x, y)}


def fit_ours(kernel, depths, x, y, restarts):
    est = MLPGaussianProcessRegressor(kernel=kernel, depth=depths if len(depths) > 1 else depths[0],
                                      n_restarts=restarts, random_state=0)  # fmt: skip
    t = time.perf_counter()
    est.fit(x, y)
    elapsed = time.perf_counter() - t
    return elapsed, dict(W_std=est.W_std_, b_std=est.b_std_, noise=est.noise_, depth=est.depth_,
                         lml=est.log_marginal_likelihood_value_, evals=est.n_evaluations_)  # fmt: skip


def fit_sklearn(kernel, depths, x, y, restarts):
    """scikit-learn's GPR fitted at each depth separately; the best likelihood wins."""
    best, evals = None, 0
    t = time.perf_counter()
    for depth in depths:
        cls = counted(NTK if kernel == "ntk" else NNGP)
        gp = GaussianProcessRegressor(cls(depth=depth) + WhiteKernel(1.0), alpha=0.0,
                                      n_restarts_optimizer=restarts, random_state=0)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a bound reached: reported anyway
            gp.fit(x, y)
        evals += cls.calls
        if best is None or gp.log_marginal_likelihood_value_ > best.log_marginal_likelihood_value_:
            best = gp
    elapsed = time.perf_counter() - t
    k = best.kernel_
    return elapsed, dict(W_std=k.k1.W_std, b_std=k.k1.b_std, noise=k.k2.noise_level, depth=k.k1.depth,
                         lml=best.log_marginal_likelihood_value_, evals=evals)  # fmt: skip


def paired(fn_a, fn_b, repeat=2):
    """Best times and the last results of two fits run alternately."""
    best = [np.inf, np.inf]
    res = [None, None]
    for _ in range(repeat):
        for i, fn in enumerate((fn_a, fn_b)):
            gc.collect()
            t, r = fn()
            best[i], res[i] = min(best[i], t), r
    return best, res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="synthetic N = 500, one timing run (a smoke test)")
    ap.add_argument("--restarts", type=int, default=2, help="random restarts after the first start")
    ap.add_argument("--json", default="gp_fit.json", help="file name under bench/results")
    ap.add_argument("--threads", type=int, help="threads of fastntk and BLAS, both fits (default: as is)")
    args = ap.parse_args()
    if args.threads:
        # On a loaded machine a BLAS team whose threads are descheduled waits at every barrier
        # (measured there: a 1500 x 1500 potri 0.9-1.6 s with two OpenBLAS threads, 0.19 s with one).
        threadpoolctl.threadpool_limits(args.threads)
        nt.set_num_threads(args.threads)
    cases = (("ntk", (3,)), ("nngp", (3,)), ("ntk", (1, 2, 3, 4, 5)))
    rows, records = [], []
    print(
        f"threads: fastntk {nt.get_num_threads()}, BLAS {threadpoolctl.threadpool_info()[-1]['num_threads']}",
        flush=True,
    )
    for name, (x, y) in datasets(args.quick).items():
        for kernel, depths in cases:
            before = cpu_pressure()
            (t_ours, t_sk), (ours, sk) = paired(
                lambda: fit_ours(kernel, depths, x, y, args.restarts),
                lambda: fit_sklearn(kernel, depths, x, y, args.restarts),
                repeat=1 if args.quick else 2,
            )
            depth_txt = str(depths[0]) if len(depths) == 1 else f"{depths[0]}..{depths[-1]}"
            for who, r, t in (("fastntk", ours, t_ours), ("sklearn GPR", sk, t_sk)):
                row = [name, x.shape[0], kernel, depth_txt, who, r["depth"], f"{r['W_std']:.4g}",
                       f"{r['b_std']:.4g}", f"{r['noise']:.4g}", f"{r['lml']:.4f}", r["evals"], f"{t:.2f}",
                       f"{t_sk / t_ours:.1f}" if who == "fastntk" else ""]  # fmt: skip
                rows.append(row)
                print(row, flush=True)
            records.append(dict(data=name, n=int(x.shape[0]), d=int(x.shape[1]), kernel=kernel,
                                depths=list(depths), restarts=args.restarts, fastntk=dict(ours, seconds=t_ours),
                                sklearn=dict(sk, seconds=t_sk), speedup=t_sk / t_ours,
                                cpu_pressure=(before, cpu_pressure())))  # fmt: skip
    headers = ["data", "N", "kernel", "depths", "fit", "depth", "W_std", "b_std", "noise", "log lik",
               "evals", "seconds", "speed-up"]  # fmt: skip
    print()
    print(markdown_table(headers, rows))
    info = dict(machine=machine(), threads=nt.get_num_threads(), quick=args.quick,
                blas=[(b["filepath"].split("/")[-1], b["num_threads"]) for b in threadpoolctl.threadpool_info()])  # fmt: skip
    path = write_json(args.json, dict(info, results=records))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
