"""fastntk.predict on CuPy arrays against the same call on NumPy arrays, in one run.

    python bench/gpu/bench_predict_cupy.py [--n 8000]

An erf MLP's NTK (computed once by fastntk on the CPU, outside the timings) for N_train
points, 1000 test points, 10 outputs; ``gradient_descent_mse(K, y)(ts, f0, ft0, K_test)``
for 50 times t: best of 2 fresh runs on each side (on CuPy the first pays for its
kernel compilation; the clock stops after a device synchronisation), and the largest
difference between the two answers.
"""

from __future__ import annotations

import argparse
import time

import cupy as cp
import numpy as np

import fastntk as nt
from fastntk import predict


def best(fn, sync=lambda: None, repeat=2):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000, help="training points (default 8000)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, m, d = args.n, 1000, 32
    x, xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y = rng.standard_normal((n, 10))
    net = nt.serial(nt.Dense(512, b_std=0.1), nt.Erf(), nt.Dense(512, b_std=0.1), nt.Erf(), nt.Dense(10))
    k = net.kernel(x, get="ntk")
    kt = net.kernel(xt, x, get="ntk")
    f0, ft0 = np.zeros_like(y), np.zeros((m, 10))
    ts = np.logspace(-1, 4, 50)

    t_np, ref = best(lambda: predict.gradient_descent_mse(k, y)(ts, f0, ft0, kt)[1])
    kg, ktg, yg = cp.asarray(k), cp.asarray(kt), cp.asarray(y)
    f0g, ft0g = cp.asarray(f0), cp.asarray(ft0)
    sync = cp.cuda.runtime.deviceSynchronize
    t_cp, got = best(lambda: predict.gradient_descent_mse(kg, yg)(ts, f0g, ft0g, ktg)[1], sync)
    diff = float(np.abs(cp.asnumpy(got) - ref).max() / np.abs(ref).max())
    print("| N_train | NumPy s | CuPy s | NumPy / CuPy | max rel. difference |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {n} | {t_np:.3f} | {t_cp:.3f} | {t_np / t_cp:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
