"""``fastntk bench``: the quick built-in benchmark, and ``--full``, the repository's suite."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np

from .._timing import best_time
from ..architectures import mlp
from .errors import EXIT_FAILED, CliError

_BENCH_DEPTH = 5


def _gpu_timer():
    """best_time with the GPU synchronized after each call, and CuPy's asarray."""
    import cupy

    def timed(fn):
        def call():
            out = fn()
            cupy.cuda.get_current_stream().synchronize()
            return out

        call()  # warm-up
        return best_time(call)

    return timed, cupy.asarray


def bench_rows(sizes, dims, seed: int = 0, device: str = "cpu") -> list:
    """The quick benchmark: for each N and d, a depth-5 ReLU MLP's NNGP + NTK (x2 = None,
    float64; W_std 1.5, b_std 0.1 as bench/bench_kernels.py) against NumPy's ``x @ x.T``
    (the floor of any method that needs every inner product) and against fastntk with no
    layers (its own tiled GEMM and output writes: what the recursion adds is the rest).
    device 'cuda': the same on CuPy arrays, against CuPy's ``x @ x.T``."""
    import fastntk as nt

    net = mlp("relu", _BENCH_DEPTH, W_std=1.5, b_std=0.1)
    gemm_only = nt.serial(nt.Dense(b_std=None))
    rng = np.random.default_rng(seed)
    timed, place = (best_time, np.asarray) if device == "cpu" else _gpu_timer()
    rows = []
    for n in sizes:
        for d in dims:
            x = place(rng.standard_normal((n, d)))
            t_ours = timed(lambda: net.kernel(x))  # noqa: B023 (called before the loop moves on)
            t_gemm = timed(lambda: x @ x.T)  # noqa: B023
            t_own = timed(lambda: gemm_only.kernel(x, get="nngp"))  # noqa: B023
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
    here = pathlib.Path(__file__).resolve()  # python/fastntk/cli/bench.py
    for cand in (pathlib.Path.cwd() / "bench", here.parents[3] / "bench"):
        if (cand / "bench_kernels.py").is_file():
            return cand
    return None


def bench(args, out=print) -> int:
    """``fastntk bench`` on parsed arguments: the quick table (and --json), or --full."""
    import fastntk as nt

    if args.full:
        return _bench_full(args, out)
    device = "cuda" if args.device in ("cuda", "gpu") else "cpu"
    info = nt.build_info()
    if device == "cuda":
        if not nt.has_cuda():
            raise CliError(
                f"--device {args.device}: fastntk.has_cuda() is False ({info.get('cuda_note', '')}); use --device cpu"
            )
        try:
            import cupy  # noqa: F401
        except ImportError:
            raise CliError(
                f"--device {args.device} needs CuPy (pip install cupy-cuda12x or cupy-cuda13x)"
            ) from None
    sizes = (1000,) if args.quick else (1000, 4000)
    dims = (16, 784)
    where = (
        f"GPU {'; '.join(info['cuda_devices'])}, GEMM: CuPy's x @ x.T"
        if device == "cuda"
        else f"{nt.get_num_threads()} threads, BLAS {info.get('blas_core', '?')}, SIMD {info.get('simd', '?')}"
    )
    out(
        f"fastntk {nt.__version__} quick benchmark: depth-{_BENCH_DEPTH} ReLU MLP, NNGP + NTK, x2 = None, float64; "
        f"{where}; best of 3-7"
    )
    rows = bench_rows(sizes, dims, device=device)
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
        payload = {"build": info, "threads": nt.get_num_threads(), "depth": _BENCH_DEPTH, "device": device,
                   "rows": rows}  # fmt: skip
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
            raise CliError(f"{s.name} failed with exit status {rc}", EXIT_FAILED)
    return 0
