"""Benchmarks of fastntk at scale (issue "Scale"), by section:

    python bench/bench_scale.py [--section memmap|cg|dask ...] [--quick] [--n 60000] [--dir DIR] [--json FILE]

memmap: the MNIST-sized kernel that runs out of memory elsewhere: x2=None, N=60,000, d=784,
  a depth-3 ReLU MLP's NTK (float64) written by ``net.kernel(x, get='ntk', out=DIR/store)``
  into a resumable store (a 28.8 GB .npy memmap) with the default ``memory_limit`` (1 GiB).
  Three runs, each in a fresh interpreter that samples its own ``RssAnon`` (anonymous
  resident memory; the memmap's page cache is file-backed and does not count) every 20 ms:
    1. uninterrupted: wall time and peak RssAnon;
    2. the same call, killed with SIGKILL once half of the blocks are recorded;
    3. the same call again: it resumes, computing only the blocks without a record (wall
       time, blocks computed, peak RssAnon), and its result is checked bit for bit against
       run 1 on row strips from both halves (the whole 28.8 GB is not kept twice).
  The store is deleted at the end (the disk must have room for one store; the script
  refuses to start otherwise). ``--quick`` (N=4000, 36 blocks) is a smoke test of a few seconds. The
  60k case takes ~30 minutes on 2 heavily loaded cores (three runs); see the targets below.

cg: matrix-free ridge regression, ``kernel_regression(LazyKernel, ..., solver='cg')``
    with the Nystrom preconditioner (1000 landmarks), depth-2 ReLU MLP NTK, 2 outputs,
    ridge = mean of the kernel's diagonal:
      (1) N = 30,000, d = 64 (K fits in memory, 7.2 GB): the direct solve (the kernel, then
          K + ridge I factored by ``numpy.linalg.cholesky`` on one BLAS thread and solved) against CG
          to tol 1e-8; both times, the test predictions' largest difference relative to the
          largest prediction (target 1e-6), and CG's iteration count with the preconditioner
          (matrix-free) and without it (the same recurrence, run on the dense K already in
          memory, so that it costs GEMVs instead of kernel passes; the count is the same);
      (2) N = 100,000, d = 16 (K alone would take 80 GB): a few iterations of the matrix-free
          CG (tol 1e-4, maxiter 6): time per iteration, the relative residual after each, and
          the process's peak RSS (VmHWM).
dask: ``fastntk.dask.kernel`` on a LocalCluster of 2 worker processes x 1 thread
    against ``net.kernel`` in this process (2 threads), N = 20,000, d = 64, depth-2 ReLU, NTK:
    the overhead ratio (target <= 1.3x) with the blocks kept on the workers (``persist``, the
    distributed way to hold a kernel), and with the whole matrix gathered into this process
    (``compute``: 3.2 GB through sockets); and one matrix-free product ``K @ V`` (V: 2
    columns) on the cluster (``DaskKernel``) against ``kernel_matvec`` here.


The JSON goes to bench/results/scale.json under the section's key (other sections kept).
Targets (issue): under 5 minutes and peak anonymous memory under 2 GB for the 60k kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg

import fastntk as nt
from fastntk import _cg
from fastntk.predict import ConvergenceWarning, kernel_regression

from _common import RESULTS, machine, markdown_table, write_json

JSON_NAME = "scale.json"

# The child computing the kernel: samples its own RssAnon while it works, prints a JSON line.
_CHILD = r"""
import hashlib, json, sys, threading, time
import numpy as np
import fastntk as nt

n, d, path, limit = {n}, {d}, {path!r}, {limit!r}

def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0

peak = [rss_anon()]
stop = threading.Event()

def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.02)

x = np.random.default_rng(0).standard_normal((n, d))  # the same bytes in every run
net = nt.mlp("relu", depth=3)
before = rss_anon()
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
k = net.kernel(x, get="ntk", out=path, memory_limit=limit, progress=False)
wall = time.perf_counter() - t
stop.set()
peak[0] = max(peak[0], rss_anon())
strips = {{}}
for i0 in (0, n // 4, n // 2 + 1, n - 64):  # rows from the first and the second half
    strips[i0] = hashlib.blake2b(np.ascontiguousarray(k[i0 : i0 + 64]).tobytes()).hexdigest()
print(json.dumps(dict(wall_s=wall, peak_rss_anon=peak[0], rss_anon_before=before, inputs_bytes=x.nbytes, strips=strips)))
"""


def _child(n, d, path, limit):
    return [sys.executable, "-c", _CHILD.format(n=n, d=d, path=str(path), limit=limit)]


def _blocks(store: Path) -> int:
    done = store / "done"
    return sum(1 for _ in done.iterdir()) if done.exists() else 0


def _total_blocks(n: int, limit) -> int:
    from fastntk import _store

    # One kernel: two block buffers (one computed while the other is written).
    return len(_store.make_plan(n, n, True, 2, _store.parse_memory_limit(limit)).blocks())


def memmap(args) -> dict:
    n, d = args.n, args.d
    need = 8 * n * n
    work = Path(tempfile.mkdtemp(prefix="fastntk-bench-scale-", dir=args.dir))
    store = work / "store"
    try:
        free = shutil.disk_usage(work).free
        if free < need * 1.05:
            raise SystemExit(
                f"bench_scale memmap: needs {need / 1e9:.1f} GB free in {work}, has {free / 1e9:.1f}"
            )
        total = _total_blocks(n, args.memory_limit)
        print(
            f"memmap: N={n}, d={d}, NTK of a depth-3 ReLU MLP, {need / 1e9:.1f} GB, {total} blocks",
            flush=True,
        )

        # 1. Uninterrupted.
        full = json.loads(
            subprocess.run(
                _child(n, d, store, args.memory_limit), check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        print(
            f"  uninterrupted: {full['wall_s']:.1f} s, peak RssAnon {full['peak_rss_anon'] / 2**30:.2f} GiB",
            flush=True,
        )
        shutil.rmtree(store)

        # 2. Killed with SIGKILL once half of the blocks are recorded.
        t = time.perf_counter()
        child = subprocess.Popen(_child(n, d, store, args.memory_limit), stdout=subprocess.DEVNULL)
        while _blocks(store) < total // 2 and child.poll() is None:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_after = time.perf_counter() - t
        recorded = _blocks(store)
        print(f"  killed after {killed_after:.1f} s with {recorded}/{total} blocks recorded", flush=True)

        # 3. Resumed.
        resumed = json.loads(
            subprocess.run(
                _child(n, d, store, args.memory_limit), check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        identical = resumed["strips"] == full["strips"]
        print(
            f"  resumed: {resumed['wall_s']:.1f} s for {total - recorded} blocks, peak RssAnon "
            f"{resumed['peak_rss_anon'] / 2**30:.2f} GiB; strips bit-identical to the uninterrupted run: "
            f"{identical}",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "n": n,
        "d": d,
        "network": "mlp('relu', depth=3), NTK only, x2=None",
        "bytes_on_disk": need,
        "memory_limit": args.memory_limit or "default (1 GiB)",
        "blocks": total,
        "uninterrupted_s": full["wall_s"],
        "uninterrupted_peak_rss_anon": full["peak_rss_anon"],
        "inputs_bytes": full["inputs_bytes"],
        "killed_after_s": killed_after,
        "blocks_recorded_at_kill": recorded,
        "resumed_s": resumed["wall_s"],
        "resumed_blocks_computed": total - recorded,
        "resumed_peak_rss_anon": resumed["peak_rss_anon"],
        "resumed_bit_identical_strips": identical,
        "targets": {"wall_s": 300, "peak_rss_anon": 2 * 10**9},
        "load_average_at_end": os.getloadavg(),  # the machine's other work: timings scale with it
    }


def memmap_table(r: dict) -> str:
    gib = 2**30
    return markdown_table(
        ["run", "wall s", "blocks computed", "peak RssAnon"],
        [
            [
                "uninterrupted",
                f"{r['uninterrupted_s']:.1f}",
                r["blocks"],
                f"{r['uninterrupted_peak_rss_anon'] / gib:.2f} GiB",
            ],
            ["killed (SIGKILL) at half", f"{r['killed_after_s']:.1f}", r["blocks_recorded_at_kill"], ""],
            [
                "resumed",
                f"{r['resumed_s']:.1f}",
                r["resumed_blocks_computed"],
                f"{r['resumed_peak_rss_anon'] / gib:.2f} GiB",
            ],
        ],
    )


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
    # One BLAS thread for this Cholesky: OpenBLAS's threaded dpotrf crashes (SIGSEGV, NumPy's
    # and SciPy's copies alike, without fastntk loaded too) at N >= 20,000 on this machine
    # (OpenBLAS issues #1413, #2821); single-threaded it completes.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        factor = np.linalg.cholesky(k)
    del k
    alpha = scipy.linalg.solve_triangular(factor, y, lower=True, check_finite=False)
    alpha = scipy.linalg.solve_triangular(factor, alpha, lower=True, trans="T", check_finite=False)
    del factor
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


def cg(args) -> dict:
    scale = 10 if args.quick else 1
    return {"fits": cg_fits(scale), "large": cg_large(scale)}


def cg_table(r: dict) -> str:
    a, b = r["fits"], r["large"]
    return (
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
        + "\n\n"
        + markdown_table(
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


def dask_section(args) -> dict:
    scale = 10 if args.quick else 1
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
    return out


def dask_table(out: dict) -> str:
    return markdown_table(
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
                    out["n"],
                    f"{out['local_s']:.2f}",
                    f"{out['persist_s']:.2f}",
                    f"{out['ratio_persist']:.2f}",
                    f"{out['compute_s']:.2f}",
                    f"{out['ratio_compute']:.2f}",
                    f"{out['matvec_local_s']:.2f}",
                    f"{out['matvec_dask_s']:.2f}",
                    f"{out['ratio_matvec']:.2f}",
                ]
            ],
        )  # fmt: skip


# name -> (run(args) -> dict, table(dict) -> str)
SECTIONS = {"memmap": (memmap, memmap_table), "cg": (cg, cg_table), "dask": (dask_section, dask_table)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--section", action="append", choices=sorted(SECTIONS), help="sections to run (default: all)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test of a few seconds (memmap: N=4000, memory_limit 8MiB); no JSON unless --json",
    )
    p.add_argument("--n", type=int, default=None, help="memmap: the number of points (default 60000)")
    p.add_argument("--d", type=int, default=784, help="memmap: the input dimension (default 784)")
    p.add_argument("--memory-limit", default=None, help="memmap: net.kernel's memory_limit (default: 1 GiB)")
    p.add_argument(
        "--dir", default=None, help="memmap: where the store goes (default: the temporary directory)"
    )
    p.add_argument("--json", default=None, help=f"file in bench/results (default {JSON_NAME})")
    args = p.parse_args()
    if args.n is None:
        args.n = 4000 if args.quick else 60000
    if args.quick and args.memory_limit is None:
        args.memory_limit = "8MiB"  # blocks of 512: enough of them to kill the run halfway
    json_name = args.json or (None if args.quick else JSON_NAME)
    path = RESULTS / (json_name or JSON_NAME)
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload["machine"] = machine()
    for name in args.section or sorted(SECTIONS):
        run, table = SECTIONS[name]
        result = run(args)
        payload[name] = result
        print(table(result))
    if json_name:
        print(f"\nJSON: {write_json(json_name, payload)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
