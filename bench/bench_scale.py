"""Benchmarks of scale: kernels larger than memory, matrix-free solves, Dask clusters.

    python bench/bench_scale.py --section {memmap,cg,dask} [--quick] [--json FILE]

Sections:
  - ``memmap``: the kernel into a memmap, and resuming it (h-store's section).
  - ``cg``: matrix-free ridge regression, ``kernel_regression(LazyKernel, ..., solver='cg')``
    with the Nystrom preconditioner (1000 landmarks), depth-2 ReLU MLP NTK, 2 outputs,
    ridge = mean of the kernel's diagonal:
      (1) N = 30,000, d = 64 (K fits in memory, 7.2 GB): the direct solve (the kernel, then
          K + ridge I factored in place by ``scipy.linalg.cho_factor`` and solved) against CG
          to tol 1e-8; both times, the test predictions' largest difference relative to the
          largest prediction (target 1e-6), and CG's iteration count with the preconditioner
          (matrix-free) and without it (the same recurrence, run on the dense K already in
          memory, so that it costs GEMVs instead of kernel passes; the count is the same);
      (2) N = 100,000, d = 16 (K alone would take 80 GB): a few iterations of the matrix-free
          CG (tol 1e-4, maxiter 6): time per iteration, the relative residual after each, and
          the process's peak RSS (VmHWM).
  - ``dask``: ``fastntk.dask.kernel`` on a LocalCluster of 2 worker processes x 1 thread
    against ``net.kernel`` in this process (2 threads), N = 20,000, d = 64, depth-2 ReLU, NTK:
    the overhead ratio (target <= 1.3x) with the blocks kept on the workers (``persist``, the
    distributed way to hold a kernel), and with the whole matrix gathered into this process
    (``compute``: 3.2 GB through sockets); and one matrix-free product ``K @ V`` (V: 2
    columns) on the cluster (``DaskKernel``) against ``kernel_matvec`` here.

``--quick`` divides every N by 10 (a smoke test). Runtime on this 2-core machine (quiet): cg
~6 min, dask ~1 min. Timings are single runs (each is long); the ratios are interleaved.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.linalg

import fastntk as nt
from fastntk import _cg
from fastntk.predict import ConvergenceWarning, kernel_regression

from _common import machine, markdown_table, write_json

RIDGE_SCALE = 1.0  # ridge = RIDGE_SCALE * mean diagonal of the kernel
N_TEST = 2000
N_OUT = 2


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM, RssAnon)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _problem(rng, n: int, d: int):
    x = rng.standard_normal((n, d))
    xt = rng.standard_normal((N_TEST, d))
    w = rng.standard_normal(d) / np.sqrt(d)
    y = np.stack([np.tanh(x @ w), np.sin(x[:, 0])], axis=1)
    return x, xt, y


def _gib(b) -> str:
    return f"{b / 2**30:.2f} GiB"


def cg_fits(scale: int):
    """N = 30,000 (K fits): direct vs matrix-free CG, and CG's iterations with/without the preconditioner."""
    n, d = 30_000 // scale, 64
    rng = np.random.default_rng(0)
    net = nt.mlp("relu", depth=2)
    x, xt, y = _problem(rng, n, d)
    lazy, test = nt.LazyKernel(net, x), nt.LazyKernel(net, xt, x)
    ridge = RIDGE_SCALE * float(np.mean(lazy.diag()))
    m = min(n, 1000)

    its = {}
    t0 = time.perf_counter()
    pred_cg = kernel_regression(lazy, y, test, ridge, solver="cg", tol=1e-8, n_landmarks=m,
                                callback=lambda i, r: its.update(pre=i))  # fmt: skip
    t_cg = time.perf_counter() - t0

    t0 = time.perf_counter()
    k = net.kernel(x, get="ntk")
    t_kernel = time.perf_counter() - t0
    # CG without the preconditioner, on the dense K (same iterations; GEMVs instead of kernel passes).
    t1 = time.perf_counter()
    # The solver's own loop on the matrix in place (kernel_regression would first take a
    # symmetrized copy of K: 7.2 GB more).
    _cg.solve(_cg.DenseOperator(k), y, ridge, tol=1e-8, maxiter=3000, preconditioner=None, n_landmarks=None,
              seed=0, callback=lambda i, r: its.update(plain=i))  # fmt: skip
    t_plain_dense = time.perf_counter() - t1
    t1 = time.perf_counter()
    k[np.diag_indices_from(k)] += ridge
    factor = scipy.linalg.cho_factor(k, lower=True, overwrite_a=True, check_finite=False)
    alpha = scipy.linalg.cho_solve(factor, y, check_finite=False)
    del k, factor
    pred_direct = net.kernel(xt, x, get="ntk") @ alpha
    t_direct = t_kernel + time.perf_counter() - t1
    rel = float(np.abs(pred_cg - pred_direct).max() / np.abs(pred_direct).max())
    return dict(
        case="cg, K fits", n=n, d=d, depth=2, ridge=ridge, landmarks=m, direct_s=t_direct,
        kernel_s=t_kernel, cg_s=t_cg, cg_iterations_nystrom=its["pre"], cg_iterations_plain=its["plain"],
        plain_cg_on_dense_k_s=t_plain_dense, cg_s_per_iteration=t_cg / its["pre"], max_rel_diff=rel,
    )  # fmt: skip


def cg_large(scale: int):
    """N = 100,000 (K would be 80 GB): time per matrix-free iteration, residuals, peak RSS."""
    n, d = 100_000 // scale, 16
    rng = np.random.default_rng(1)
    net = nt.mlp("relu", depth=2)
    x, xt, y = _problem(rng, n, d)
    base = _status("VmRSS")
    _reset_peak()
    lazy, test = nt.LazyKernel(net, x), nt.LazyKernel(net, xt, x)
    ridge = RIDGE_SCALE * float(np.mean(lazy.diag()))
    marks = [(0, time.perf_counter(), 1.0)]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopped at maxiter on purpose
        kernel_regression(lazy, y, test, ridge, solver="cg", tol=1e-4, maxiter=6, n_landmarks=1000,
                          callback=lambda i, r: marks.append((i, time.perf_counter(), float(r.max()))))  # fmt: skip
    total = time.perf_counter() - t0
    per_iteration = (marks[-1][1] - marks[1][1]) / max(len(marks) - 2, 1)
    return dict(
        case="cg, K does not fit", n=n, d=d, depth=2, ridge=ridge, landmarks=1000, total_s=total,
        setup_and_first_iteration_s=marks[1][1] - t0, s_per_iteration=per_iteration,
        iterations=marks[-1][0], residuals=[r for _, _, r in marks[1:]], peak_rss=_status("VmHWM"),
        rss_before=base, dense_kernel_bytes=8 * n * n,
    )  # fmt: skip


def run_cg(scale: int):
    a = cg_fits(scale)
    print(
        markdown_table(
            [
                "N",
                "d",
                "direct s",
                "CG s",
                "CG s/iter",
                "iterations (Nystrom)",
                "iterations (none)",
                "max rel diff",
            ],
            [
                [
                    a["n"],
                    a["d"],
                    f"{a['direct_s']:.1f}",
                    f"{a['cg_s']:.1f}",
                    f"{a['cg_s_per_iteration']:.2f}",
                    a["cg_iterations_nystrom"],
                    a["cg_iterations_plain"],
                    f"{a['max_rel_diff']:.2e}",
                ]
            ],
        )  # fmt: skip
    )
    b = cg_large(scale)
    print()
    print(
        markdown_table(
            ["N", "d", "K would take", "s/iteration", "iterations", "relative residuals", "peak RSS"],
            [
                [
                    b["n"],
                    b["d"],
                    _gib(b["dense_kernel_bytes"]),
                    f"{b['s_per_iteration']:.1f}",
                    b["iterations"],
                    ", ".join(f"{r:.1e}" for r in b["residuals"]),
                    _gib(b["peak_rss"]),
                ]
            ],
        )  # fmt: skip
    )
    return [a, b]


def run_dask(scale: int):
    import dask
    import distributed

    import fastntk.dask as fd

    n, d = 20_000 // scale, 64
    chunk = 2048 // (1 if scale == 1 else 4)  # 10 x 10 blocks (N = 20,000), 4 x 4 with --quick
    rng = np.random.default_rng(2)
    net = nt.mlp("relu", depth=2)
    x = rng.standard_normal((n, d))
    v = rng.standard_normal((n, 2))
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    )
    out = {}
    with distributed.Client(cluster):
        fd.kernel(net, x[:10], get="ntk").compute()  # warm the workers (imports, program)
        times = {"local": [], "persist": [], "compute": [], "matvec_local": [], "matvec_dask": []}
        op = fd.DaskKernel(net, x, chunks=chunk)
        for _ in range(2):  # interleaved, best of 2
            t = time.perf_counter()
            k = net.kernel(x, get="ntk")
            times["local"].append(time.perf_counter() - t)
            del k
            t = time.perf_counter()
            kd = fd.kernel(net, x, chunks=chunk, get="ntk").persist()
            distributed.wait(kd)
            times["persist"].append(time.perf_counter() - t)
            del kd
            t = time.perf_counter()
            k = dask.compute(fd.kernel(net, x, chunks=chunk, get="ntk"))[0]
            times["compute"].append(time.perf_counter() - t)
            del k
            t = time.perf_counter()
            nt.kernel_matvec(net, x, None, v)
            times["matvec_local"].append(time.perf_counter() - t)
            t = time.perf_counter()
            op.matvec(v)
            times["matvec_dask"].append(time.perf_counter() - t)
        best = {key: min(val) for key, val in times.items()}
        out = dict(
            case="dask", n=n, d=d, depth=2, workers=2, threads_per_worker=1, local_threads=nt.get_num_threads(),
            **{f"{key}_s": val for key, val in best.items()},
            ratio_persist=best["persist"] / best["local"], ratio_compute=best["compute"] / best["local"],
            ratio_matvec=best["matvec_dask"] / best["matvec_local"],
        )  # fmt: skip
    cluster.close()
    print(
        markdown_table(
            [
                "N",
                "local s",
                "dask persist s",
                "ratio",
                "dask compute s",
                "ratio",
                "K@V local s",
                "K@V dask s",
                "ratio",
            ],
            [
                [
                    n,
                    f"{best['local']:.2f}",
                    f"{best['persist']:.2f}",
                    f"{out['ratio_persist']:.2f}",
                    f"{best['compute']:.2f}",
                    f"{out['ratio_compute']:.2f}",
                    f"{best['matvec_local']:.2f}",
                    f"{best['matvec_dask']:.2f}",
                    f"{out['ratio_matvec']:.2f}",
                ]
            ],
        )  # fmt: skip
    )
    return [out]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=["memmap", "cg", "dask"], required=True)
    ap.add_argument("--quick", action="store_true", help="every N divided by 10 (a smoke test)")
    ap.add_argument(
        "--json", default=None, help="file name under bench/results (default scale_<section>.json)"
    )
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    if args.section == "memmap":
        raise SystemExit("the memmap section is in h-store's version of this file")
    records = run_cg(scale) if args.section == "cg" else run_dask(scale)
    name = args.json or f"scale_{args.section}{'_quick' if args.quick else ''}.json"
    path = write_json(name, dict(machine=machine(), threads=nt.get_num_threads(), results=records))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
