"""Benchmark of the empirical NTK of finite networks: structured (fastntk) vs explicit Jacobians.

    python bench/bench_empirical.py [--quick] [--no-baseline] [--no-large] [--json FILE]

Network: an MLP of depth 3 (three hidden Dense(width) + Relu blocks and a Dense(10)
readout; W_std = 1.5, b_std = 0.1, ntk parameterization), d = 784 inputs, float64, x2 = None.

(a) N = 256 at widths 256 and 1024, traced (trace_axes=(-1,), (N, N)) and full
    (trace_axes=(), (N, N, 10, 10)):
  - fastntk: ``net.empirical_ntk`` (forward and all-output backward passes in NumPy, the
    layer-wise Gram sum in the native driver), best of 3;
  - baseline: plain NumPy with explicit Jacobians. Traced: for each output o, the Jacobian
    J_o (N x P) is written out (its blocks are outer products from backprop of e_o) and
    J_o J_o^T accumulated. Full: the blocks J_o J_o'^T for all output pairs need the rows
    of every output at once, and the whole (N * 10) x P Jacobian does not fit in memory at
    width 1024 (59 GB), so it is formed a block of parameters at a time ((N * 10) x 2^k
    columns) and J J^T accumulated. One run (minutes at width 1024);
  - peak memory beyond the output, each measured in a fresh process;
  - agreement: max |fastntk - baseline| / max |baseline| (the largest entry of these
    positive semi-definite kernels is on the diagonal, so it bounds every entry's
    Cauchy-Schwarz scale).
(b) fastntk alone at N = 2000, width 4096 (the baseline's Jacobian would need 2000 x 34M
    doubles, 0.5 TB), traced and full: seconds and peak memory.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import best_time, machine, markdown_table, peak_extra_bytes, write_json

import fastntk as nt  # noqa: E402  (isort: skip)

D = 784
N_OUT = 10
DEPTH = 3
W_STD, B_STD = 1.5, 0.1


def network(width: int, depth: int = DEPTH, n_out: int = N_OUT):
    return nt.mlp("relu", depth, W_std=W_STD, b_std=B_STD, width=width, n_out=n_out)


def inputs(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


# ---------------------------------------------------------------------------------------
# The baseline: explicit Jacobians in plain NumPy (Dense + Relu MLPs).


def _dense_layers(net, params):
    """(k, c_W, c_b, W, b) of each Dense layer (ntk parameterization)."""
    out = []
    for k, (layer, p) in enumerate(zip(net.layers, params)):
        if isinstance(layer, nt.Dense):
            W, b = p
            out.append((k, layer.W_std / math.sqrt(W.shape[0]), layer.b_std, W, b))
    return out


def _forward(net, params, x):
    """Outputs, the input of each Dense layer and the Relu slopes after each hidden one."""
    h, ins, slopes = x, [], []
    dense = _dense_layers(net, params)
    for i, (_, c_w, c_b, W, b) in enumerate(dense):
        ins.append(h)
        z = c_w * (h @ W) + c_b * b
        if i + 1 < len(dense):
            slopes.append((z > 0).astype(np.float64))
            h = np.maximum(z, 0.0)
        else:
            h = z
    return h, ins, slopes


def _backprop(net, params, slopes, seed):
    """d f / d z at each Dense output, for the output signal `seed` (N, n_out) or, with
    seed of shape (N, n_out, n_out), for every output at once. Last layer first."""
    dense = _dense_layers(net, params)
    g, out = seed, []
    for i in range(len(dense) - 1, -1, -1):
        _, c_w, _, W, _ = dense[i]
        out.append(g)
        if i > 0:
            g = c_w * (g @ W.T) * (slopes[i - 1] if g.ndim == 2 else slopes[i - 1][:, None, :])
    return out[::-1]


def n_params(net, params) -> int:
    return sum(W.size + b.size for _, _, _, W, b in _dense_layers(net, params))


def baseline_traced(net, params, x) -> np.ndarray:
    """(1/n_out) sum_o J_o J_o^T with J_o (N x P) written out for one output at a time."""
    f, ins, slopes = _forward(net, params, x)
    n, m = f.shape
    dense = _dense_layers(net, params)
    J = np.empty((n, n_params(net, params)))
    K = np.zeros((n, n))
    for o in range(m):
        seed = np.zeros((n, m))
        seed[:, o] = 1.0
        col = 0
        for (_, c_w, c_b, W, _), h, g in zip(dense, ins, _backprop(net, params, slopes, seed)):
            fan_in, width = W.shape
            block = J[:, col : col + fan_in * width].reshape(n, fan_in, width)
            np.multiply(h[:, :, None], (c_w * g)[:, None, :], out=block)  # dz/dW[a, u] = c_W h_a e_u
            col += fan_in * width
            J[:, col : col + width] = c_b * g
            col += width
        K += J @ J.T
    return K / m


def baseline_full(net, params, x, block_bytes: int = 1 << 28) -> np.ndarray:
    """[i, j, o, o'] = J_o(x_i) . J_o'(x_j), the (N * n_out) x P Jacobian formed a block of
    weight rows at a time (block_bytes per block) and J J^T accumulated."""
    f, ins, slopes = _forward(net, params, x)
    n, m = f.shape
    eye = np.broadcast_to(np.eye(m), (n, m, m))
    K = np.zeros((n * m, n * m))
    for (_, c_w, c_b, W, _), h, g in zip(
        _dense_layers(net, params), ins, _backprop(net, params, slopes, eye)
    ):
        fan_in, width = W.shape
        rows = max(1, min(fan_in, block_bytes // (8 * n * m * width)))
        buf = np.empty((n, m, rows, width))
        ch = c_w * h
        for a0 in range(0, fan_in, rows):
            a1 = min(a0 + rows, fan_in)
            # rows (i, o), columns (a, u): dz/dW[a, u] = c_W h_a d f_o / d z_u
            J = buf if a1 - a0 == rows else np.empty((n, m, a1 - a0, width))
            np.multiply(ch[:, None, a0:a1, None], g[:, :, None, :], out=J)
            J = J.reshape(n * m, (a1 - a0) * width)
            K += J @ J.T
        Jb = (c_b * g).reshape(n * m, width)
        K += Jb @ Jb.T
    return K.reshape(n, m, n, m).transpose(0, 2, 1, 3).copy()


# ---------------------------------------------------------------------------------------
# Measurements.

_SETUP = """
import json, time, numpy as np
from bench_empirical import network, inputs, baseline_traced, baseline_full, D
net = network({width})
params = net.init(0, D)
x = inputs({n})
def _timed(fn, path):
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    np.save(path + ".npy", out)
    json.dump(seconds, open(path + ".json", "w"))
"""


def _baseline_run(width, n, trace, out_bytes):
    """One run of the baseline in a fresh process: (seconds, peak extra bytes, result)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "baseline")
        fn = "baseline_traced" if trace else "baseline_full"
        call = f"_timed(lambda: {fn}(net, params, x), {path!r})"
        mem = peak_extra_bytes(_SETUP.format(width=width, n=n), call, out_bytes)
        result = np.load(path + ".npy")
        seconds = json.load(open(path + ".json"))
    return seconds, mem, result


def _ours_memory(width, n, trace, out_bytes):
    axes = "(-1,)" if trace else "()"
    return peak_extra_bytes(_SETUP.format(width=width, n=n), f"net.empirical_ntk(params, x, trace_axes={axes})",
                            out_bytes)  # fmt: skip


def run_small(n, widths, with_baseline: bool):
    rows = []
    x = inputs(n)
    for width in widths:
        net = network(width)
        params = net.init(0, D)
        for trace in (True, False):
            axes = (-1,) if trace else ()
            out_bytes = 8 * n * n * (1 if trace else N_OUT * N_OUT)
            t_ours = best_time(lambda: net.empirical_ntk(params, x, trace_axes=axes))
            mem = _ours_memory(width, n, trace, out_bytes)
            row = dict(N=n, width=width, P=n_params(net, params), kernel="traced" if trace else "full",
                       fastntk_s=t_ours, fastntk_extra_bytes=mem, output_bytes=out_bytes, baseline_s=None,
                       baseline_extra_bytes=None, speedup=None, max_rel_diff=None)  # fmt: skip
            if with_baseline:
                t_base, mem_base, ref = _baseline_run(width, n, trace, out_bytes)
                ours = net.empirical_ntk(params, x, trace_axes=axes)
                row.update(baseline_s=t_base, baseline_extra_bytes=mem_base, speedup=t_base / t_ours,
                           max_rel_diff=float(np.abs(ours - ref).max() / np.abs(ref).max()))  # fmt: skip
            rows.append(row)
            print(_row_text(row), flush=True)
    return rows


def run_large(n, width):
    rows = []
    x = inputs(n)
    net = network(width)
    params = net.init(0, D)
    for trace in (True, False):
        axes = (-1,) if trace else ()
        out_bytes = 8 * n * n * (1 if trace else N_OUT * N_OUT)
        t0 = time.perf_counter()
        net.empirical_ntk(params, x, trace_axes=axes)
        t_ours = time.perf_counter() - t0
        mem = _ours_memory(width, n, trace, out_bytes)
        rows.append(dict(N=n, width=width, P=n_params(net, params), kernel="traced" if trace else "full",
                         fastntk_s=t_ours, fastntk_extra_bytes=mem, output_bytes=out_bytes))  # fmt: skip
        print(_row_text(rows[-1]), flush=True)
    return rows


def _mib(v):
    return "-" if v is None else f"{v / 2**20:.0f} MiB"


def _row_text(r):
    base = (
        ""
        if r.get("baseline_s") is None
        else f" baseline {r['baseline_s']:.2f}s ({_mib(r['baseline_extra_bytes'])})"
    )
    return (f"N={r['N']} width={r['width']} {r['kernel']:6s} fastntk {r['fastntk_s']:.3f}s "
            f"({_mib(r['fastntk_extra_bytes'])} + output {_mib(r['output_bytes'])}){base}")  # fmt: skip


def table_small(rows) -> str:
    headers = ["N", "width", "P", "kernel", "fastntk s", "baseline s", "baseline/fastntk", "fastntk extra memory",
               "baseline extra memory", "output", "max rel. diff"]  # fmt: skip
    body = [[r["N"], r["width"], f"{r['P'] / 1e6:.2f} M", r["kernel"], f"{r['fastntk_s']:.3f}",
             "-" if r["baseline_s"] is None else f"{r['baseline_s']:.1f}",
             "-" if r["speedup"] is None else f"{r['speedup']:.0f}", _mib(r["fastntk_extra_bytes"]),
             _mib(r["baseline_extra_bytes"]), _mib(r["output_bytes"]),
             "-" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"] for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def table_large(rows) -> str:
    headers = ["N", "width", "P", "kernel", "fastntk s", "fastntk extra memory", "output"]
    body = [[r["N"], r["width"], f"{r['P'] / 1e6:.1f} M", r["kernel"], f"{r['fastntk_s']:.2f}",
             _mib(r["fastntk_extra_bytes"]), _mib(r["output_bytes"])] for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    p.add_argument("--no-baseline", action="store_true", help="skip the explicit-Jacobian baseline (minutes)")
    p.add_argument("--no-large", action="store_true", help="skip part (b), N = 2000 at width 4096")
    p.add_argument(
        "--json", default="empirical.json", help="file name under bench/results (default empirical.json)"
    )
    args = p.parse_args(argv)
    n_small, widths, (n_large, w_large) = (
        (64, (64, 128), (200, 256)) if args.quick else (256, (256, 1024), (2000, 4096))
    )
    small = run_small(n_small, widths, not args.no_baseline)
    large = [] if args.no_large else run_large(n_large, w_large)
    info = {"machine": machine(), "build": nt.build_info(), "threads": nt.get_num_threads(), "depth": DEPTH,
            "d": D, "n_out": N_OUT}  # fmt: skip
    print()
    print(f"fastntk {nt.__version__} on {info['machine'].get('cpu', '?')}, {info['threads']} threads, "
          f"BLAS core {info['build']['blas_core']}; MLP depth {DEPTH}, d = {D}, n_out = {N_OUT}, float64, x2=None")  # fmt: skip
    print(table_small(small))
    if large:
        print()
        print(table_large(large))
    path = write_json(args.json, {"info": info, "small": small, "large": large})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
