"""Benchmark of the analytic Gram matrices: fastntk vs the NumPy reference vs one GEMM.

    python bench/bench_kernels.py [--quick] [--no-reference] [--json FILE]
    python bench/bench_kernels.py --threads 1,2,4,8,16 [--quick] [--json FILE]
    python bench/bench_kernels.py --device cuda [--quick] [--json FILE]

For N in {1000, 4000}, d in {16, 784}, a depth-5 MLP (relu and erf), x2=None and
x2 != x1, nngp + ntk in float64, it measures in one run:
  - fastntk: net.kernel(x1, x2), best of 3;
  - reference: tests/reference.py (plain NumPy, the test oracle), one run;
  - numpy GEMM: x1 @ x2.T of the same shape (for x2=None, x @ x.T, which NumPy
    evaluates as a symmetric rank-k update): the cost floor of any method that
    needs all inner products;
  - own GEMM: fastntk with depth 0 and get='nngp', i.e. the same tiled BLAS calls
    and output writes with no recursion: what the recursion adds is the difference;
and the ratios, pair-layers per second (pairs actually computed x depth) and the
peak resident memory beyond the outputs.

With --threads, it measures thread scaling instead: the depth-5 relu kernel at N=4000,
d=784 (x2=None and x2 != x1) with each thread count (fastntk.set_num_threads), its
speed-up over the first count, and NumPy's GEMM of the same shape limited to the same
number of BLAS threads.

With --device cuda, the GPU table of the issue (default JSON file gpu_kernels.json): a
fully connected ReLU network of depth 10, NNGP + NTK, x2=None, N=50,000, d=3,072 (with
--quick: N=4,000, d=784), in float64 and float32, as CuPy arrays in and out, against
CuPy's x @ x.T of the same inputs (cuBLAS: the floor of any method that needs every inner
product) and fastntk with no layers (its own banded GEMM and output writes), each timed
as the best of 3 with the device synchronized, in the same run; then the empirical NTK of a
width-4096 depth-3 ReLU MLP (d=784, 10 outputs) at N=2,000, traced and full, on CuPy arrays
with the CPU's time (NumPy arrays, one run) beside it (--quick: N=500, width 1024).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import ROOT, best_time, machine, markdown_table, peak_extra_bytes, write_json

sys.path.insert(0, str(ROOT / "tests"))
import fastntk as nt  # noqa: E402

from reference import ntk_gram_ref  # noqa: E402

DEPTH = 5


def network(act: str, depth: int):
    """depth x [Dense, act], Dense (W_std 1.5, b_std 0.1); its reference: reference_spec."""
    return nt.mlp(act, depth, W_std=1.5, b_std=0.1)


def reference_spec(act: str, depth: int):
    ref = {"relu": ("abrelu", dict(a=0.0, b=1.0)), "erf": ("erf", dict(a=1.0, b=1.0, c=0.0))}[act]
    d = ("dense", dict(W_std=1.5, b_std=0.1, parameterization="ntk", out_dim=None))
    spec = [d]
    for _ in range(depth):
        spec += [ref, d]
    return spec


# Inputs for the memory measurements in a fresh interpreter (bench/ is the working directory).
_SETUP = """
import sys, numpy as np
sys.path.insert(0, "../tests")
from reference import ntk_gram_ref
from bench_kernels import network, reference_spec, DEPTH
rng = np.random.default_rng(0)
x1 = rng.standard_normal(({n}, {d}))
b = None if {sym} else rng.standard_normal(({n}, {d}))
net = network("{act}", DEPTH)
spec = reference_spec("{act}", DEPTH)
"""


def run(sizes, dims, acts, with_reference: bool):
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        for d in dims:
            x1 = rng.standard_normal((n, d))
            x2 = rng.standard_normal((n, d))
            for act in acts:
                net = network(act, DEPTH)
                gemm_only = nt.serial(nt.Dense(b_std=None))
                for sym in (True, False):
                    b = None if sym else x2
                    pairs = n * (n + 1) // 2 if sym else n * n
                    out_bytes = 2 * n * n * 8
                    t_ours = best_time(lambda: net.kernel(x1, b))
                    t_numpy = best_time(lambda: x1 @ x1.T if sym else x1 @ x2.T)
                    t_own = best_time(lambda: gemm_only.kernel(x1, b, get="nngp"))
                    setup = _SETUP.format(n=n, d=d, act=act, sym=sym)
                    mem = peak_extra_bytes(setup, "net.kernel(x1, b)", out_bytes)
                    t_ref = mem_ref = None
                    if with_reference:
                        t_ref = best_time(lambda: ntk_gram_ref(reference_spec(act, DEPTH), x1, b), repeat=1)
                        mem_ref = peak_extra_bytes(setup, "ntk_gram_ref(spec, x1, b)", out_bytes)
                    rows.append(dict(
                        N=n, d=d, act=act, x2="None" if sym else "other", fastntk_s=t_ours, reference_s=t_ref,
                        numpy_gemm_s=t_numpy, own_gemm_s=t_own, vs_numpy_gemm=t_ours / t_numpy,
                        vs_own_gemm=t_ours / t_own, reference_over_fastntk=None if t_ref is None else t_ref / t_ours,
                        pair_layers_per_s=pairs * DEPTH / t_ours, output_bytes=out_bytes, extra_bytes=mem,
                        extra_over_output=None if mem is None else mem / out_bytes, reference_extra_bytes=mem_ref,
                    ))  # fmt: skip
                    print(_row_text(rows[-1]), flush=True)
    return rows


GPU_DEPTH = 10


def run_cuda(n, d, dtypes):
    """The GPU rows: fastntk vs CuPy's x @ x.T, same inputs, same run."""
    import cupy as cp

    def timed(fn):
        def call():
            out = fn()
            cp.cuda.get_current_stream().synchronize()
            return out

        call()  # warm-up: kernels loaded, CuPy's pool filled
        return best_time(call)

    net = nt.mlp("relu", GPU_DEPTH, W_std=1.5, b_std=0.1)
    gemm_only = nt.serial(nt.Dense(b_std=None))
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((n, d))
    rows = []
    for dtype in dtypes:
        x = cp.asarray(x_host, dtype=dtype)
        pool = cp.get_default_memory_pool()
        t_gemm = timed(lambda: x @ x.T)
        pool.free_all_blocks()
        t_own = timed(lambda: gemm_only.kernel(x, get="nngp"))
        pool.free_all_blocks()
        t_ours = timed(lambda: net.kernel(x))
        pool.free_all_blocks()
        pairs = n * (n + 1) // 2
        rows.append(dict(
            N=n, d=d, act="relu", depth=GPU_DEPTH, x2="None", dtype=np.dtype(dtype).name, fastntk_s=t_ours,
            cupy_gemm_s=t_gemm, own_gemm_s=t_own, vs_cupy_gemm=t_ours / t_gemm, vs_own_gemm=t_ours / t_own,
            pair_layers_per_s=pairs * GPU_DEPTH / t_ours, output_bytes=2 * n * n * np.dtype(dtype).itemsize,
        ))  # fmt: skip
        r = rows[-1]
        print(f"N={n} d={d} {r['dtype']} fastntk {t_ours:.4f}s cupy x@x.T {t_gemm:.4f}s "
              f"ratio {r['vs_cupy_gemm']:.2f} own-gemm {t_own:.4f}s", flush=True)  # fmt: skip
        x = None  # freed before the next dtype
        pool.free_all_blocks()
    return rows


def run_cuda_empirical(n, width, d=784, n_out=10, depth=3):
    """The empirical NTK of a finite ReLU MLP on the GPU (CuPy arrays) and on the CPU (NumPy,
    one run), traced and full, with the largest relative difference."""
    import cupy as cp

    net = nt.mlp("relu", depth, width=width, n_out=n_out)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    params = net.init(0, d)
    x_dev = cp.asarray(x)
    params_dev = [
        () if not p else (cp.asarray(p[0]), None if p[1] is None else cp.asarray(p[1])) for p in params
    ]
    rows = []
    for kernel, axes in (("traced", (-1,)), ("full", ())):

        def on_gpu():
            out = net.empirical_ntk(params_dev, x_dev, trace_axes=axes)
            cp.cuda.get_current_stream().synchronize()
            return out

        on_gpu()  # warm-up
        t_gpu = best_time(on_gpu)
        got = on_gpu().get()
        t0 = time.perf_counter()
        want = net.empirical_ntk(params, x, trace_axes=axes)
        t_cpu = time.perf_counter() - t0
        diff = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        rows.append(dict(N=n, width=width, depth=depth, d=d, n_out=n_out, kernel=kernel, gpu_s=t_gpu, cpu_s=t_cpu,
                         cpu_over_gpu=t_cpu / t_gpu, max_rel_diff=diff, cpu_threads=nt.get_num_threads()))  # fmt: skip
        print(f"empirical NTK {kernel}: N={n} width={width} GPU {t_gpu:.4f}s CPU {t_cpu:.3f}s "
              f"max rel diff {diff:.1e}", flush=True)  # fmt: skip
        del got, want
        cp.get_default_memory_pool().free_all_blocks()
    return rows


def cuda_empirical_table(rows) -> str:
    headers = ["N", "width", "depth", "d", "n_out", "kernel", "GPU s", "CPU s (threads)", "CPU / GPU",
               "max rel. difference"]  # fmt: skip
    body = [[r["N"], r["width"], r["depth"], r["d"], r["n_out"], r["kernel"], f"{r['gpu_s']:.4f}",
             f"{r['cpu_s']:.3f} ({r['cpu_threads']})", f"{r['cpu_over_gpu']:.0f}x", f"{r['max_rel_diff']:.1e}"]
            for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def cuda_table(rows) -> str:
    headers = ["N", "d", "act", "depth", "x2", "dtype", "fastntk s", "CuPy x @ x.T s", "fastntk / GEMM",
               "own GEMM s", "fastntk / own GEMM", "pair-layers/s"]  # fmt: skip
    body = [[r["N"], r["d"], r["act"], r["depth"], r["x2"], r["dtype"], f"{r['fastntk_s']:.4f}",
             f"{r['cupy_gemm_s']:.4f}", f"{r['vs_cupy_gemm']:.2f}", f"{r['own_gemm_s']:.4f}",
             f"{r['vs_own_gemm']:.2f}", f"{r['pair_layers_per_s'] / 1e9:.1f} G"] for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def run_threads(counts, n, d):
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((n, d))
    x2 = rng.standard_normal((n, d))
    net = network("relu", DEPTH)
    saved = nt.get_num_threads()
    rows = []
    try:
        for sym in (True, False):
            b = None if sym else x2
            first = None
            for threads in counts:
                nt.set_num_threads(threads)
                with threadpool_limits(threads, user_api="blas"):
                    t_ours = best_time(lambda: net.kernel(x1, b))
                    t_numpy = best_time(lambda: x1 @ x1.T if sym else x1 @ x2.T)
                first = t_ours if first is None else first
                rows.append(dict(
                    N=n, d=d, act="relu", x2="None" if sym else "other", threads=threads, fastntk_s=t_ours,
                    speedup=first / t_ours, per_thread_efficiency=first * counts[0] / (t_ours * threads),
                    numpy_gemm_s=t_numpy, vs_numpy_gemm=t_ours / t_numpy,
                ))  # fmt: skip
                r = rows[-1]
                print(f"N={n} d={d} x2={r['x2']:5s} threads={threads:3d} fastntk {t_ours:.4f}s "
                      f"speed-up {r['speedup']:.2f}x numpy-gemm {t_numpy:.4f}s", flush=True)  # fmt: skip
    finally:
        nt.set_num_threads(saved)
    return rows


def threads_table(rows) -> str:
    headers = ["N", "d", "act", "x2", "threads", "fastntk s", "speed-up", "efficiency", "GEMM s (numpy)",
               "fastntk/GEMM"]  # fmt: skip
    body = [[r["N"], r["d"], r["act"], r["x2"], r["threads"], f"{r['fastntk_s']:.4f}", f"{r['speedup']:.2f}x",
             f"{r['per_thread_efficiency']:.0%}", f"{r['numpy_gemm_s']:.4f}", f"{r['vs_numpy_gemm']:.2f}"]
            for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return counts


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _row_text(r):
    return (f"N={r['N']:5d} d={r['d']:4d} {r['act']:4s} x2={r['x2']:5s} fastntk {r['fastntk_s']:.4f}s "
            f"ref {_fmt(r['reference_s'], '.3f')}s numpy-gemm {r['numpy_gemm_s']:.4f}s "
            f"own-gemm {r['own_gemm_s']:.4f}s")  # fmt: skip


def table(rows) -> str:
    headers = ["N", "d", "act", "x2", "fastntk s", "reference s", "ref/fastntk", "GEMM s (numpy)",
               "fastntk/GEMM", "own GEMM s", "fastntk/own GEMM", "pair-layers/s", "fastntk extra memory (of output)",
               "reference extra memory"]  # fmt: skip
    body = [[r["N"], r["d"], r["act"], r["x2"], f"{r['fastntk_s']:.4f}", _fmt(r["reference_s"], ".3f"),
             _fmt(r["reference_over_fastntk"], ".0f"), f"{r['numpy_gemm_s']:.4f}", f"{r['vs_numpy_gemm']:.2f}",
             f"{r['own_gemm_s']:.4f}", f"{r['vs_own_gemm']:.2f}", f"{r['pair_layers_per_s'] / 1e6:.0f} M",
             _fmt(None if r["extra_bytes"] is None else r["extra_bytes"] / 2**20, ".2f") + " MiB ("
             + _fmt(r["extra_over_output"], ".2%") + ")",
             _fmt(None if r["reference_extra_bytes"] is None else r["reference_extra_bytes"] / 2**20, ".0f")
             + " MiB"] for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    p.add_argument("--no-reference", action="store_true", help="skip the slow NumPy reference")
    p.add_argument(
        "--json", default="kernels.json", help="file name under bench/results (default kernels.json)"
    )
    p.add_argument(
        "--threads",
        type=_thread_counts,
        metavar="1,2,4,...",
        help="measure thread scaling with these thread counts instead (default JSON file kernels_threads.json)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the GPU table instead (CuPy arrays; needs the CUDA backend and CuPy)",
    )
    args = p.parse_args(argv)
    info = {"machine": machine(), "build": nt.build_info(), "threads": nt.get_num_threads(), "depth": DEPTH}
    if args.device == "cuda":
        if not nt.has_cuda():
            sys.exit(f"--device cuda: no CUDA backend or device ({nt.build_info().get('cuda_note', '')})")
        n, d = (4000, 784) if args.quick else (50_000, 3072)
        rows = run_cuda(n, d, (np.float64, np.float32))
        empirical = run_cuda_empirical(*((500, 1024) if args.quick else (2000, 4096)))
        info["depth"] = GPU_DEPTH
        print()
        print(f"fastntk {nt.__version__} on {', '.join(info['build']['cuda_devices'])}; ReLU depth {GPU_DEPTH}, "
              "nngp+ntk, x2=None, CuPy in and out")  # fmt: skip
        print(cuda_table(rows))
        print()
        print("Empirical NTK of a finite ReLU MLP (x2=None), CuPy arrays vs NumPy arrays, same run:")
        print(cuda_empirical_table(empirical))
        name = "gpu_kernels.json" if args.json == "kernels.json" else args.json
        print(f"\nJSON: {write_json(name, {'info': info, 'rows': rows, 'empirical': empirical})}")
        return
    if args.threads:
        n, d = (1000, 64) if args.quick else (4000, 784)
        rows = run_threads(args.threads, n, d)
        print()
        print(
            f"fastntk {nt.__version__} on {info['machine'].get('cpu', '?')}, BLAS core {info['build']['blas_core']}, "
            f"SIMD {info['build']['simd']}; depth {DEPTH}, float64, nngp+ntk"
        )
        print(threads_table(rows))
        name = "kernels_threads.json" if args.json == "kernels.json" else args.json
        print(f"\nJSON: {write_json(name, {'info': info, 'rows': rows})}")
        return
    sizes, dims = ((300,), (16, 64)) if args.quick else ((1000, 4000), (16, 784))
    rows = run(sizes, dims, ("relu", "erf"), not args.no_reference)
    print()
    print(
        f"fastntk {nt.__version__} on {info['machine'].get('cpu', '?')}, {info['threads']} threads, "
        f"BLAS core {info['build']['blas_core']}, SIMD {info['build']['simd']}; depth {DEPTH}, float64, nngp+ntk"
    )
    print(table(rows))
    path = write_json(args.json, {"info": info, "rows": rows})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
