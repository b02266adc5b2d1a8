"""Convergence of the empirical NTK to the analytic one as the width grows.

For random networks (ReLU, NTK parameterization) of increasing width, the relative error
||Theta_emp - Theta_inf||_F / ||Theta_inf||_F of the empirical NTK at initialization on a set
of inputs, against the width on log-log axes. The empirical NTK is an average over the units
of each layer, so its fluctuations around the limit are O(1/sqrt(width)): the fitted slope
should be near -1/2.

    python experiments/ntk_convergence.py            # full: widths 64..4096, 6 networks each
    python experiments/ntk_convergence.py --quick    # the test's version (seconds)

Writes ntk_convergence.png to --out and prints the fitted slope with its standard error.
"""

from __future__ import annotations

import math
import sys

import numpy as np

import fastntk as nt

from _common import geometric_summary, loglog_fit, pyplot, rel_frobenius, save, script_main

FULL = dict(widths=(64, 128, 256, 512, 1024, 2048, 4096), n_seeds=6, depth=3, n_points=16, input_dim=8)
QUICK = dict(widths=(128, 256, 512, 1024), n_seeds=6, depth=2, n_points=8, input_dim=4)


def network(width, depth: int):
    """depth hidden ReLU layers; W_std = sqrt(2) keeps the ReLU variance (He), a small bias."""
    return nt.mlp("relu", depth, W_std=math.sqrt(2.0), b_std=0.1, width=width, n_out=1 if width else None)


def run(widths, n_seeds: int, depth: int, n_points: int, input_dim: int, seed: int = 0, out=None) -> dict:
    """Relative errors per width and network, the log-log fit, and the figure.

    Returns
    -------
    dict
        ``widths`` (tuple), ``errors`` (float64 (len(widths), n_seeds)), ``slope``,
        ``stderr`` (of the slope), ``intercept``, ``png`` (path, or None without ``out``).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_points, input_dim))
    theta_inf = network(None, depth).kernel(x, get="ntk")
    errors = np.empty((len(widths), n_seeds))
    seeds = np.random.SeedSequence(seed).spawn(len(widths) * n_seeds)
    for i, width in enumerate(widths):
        net = network(width, depth)
        for s in range(n_seeds):
            params = net.init(seeds[i * n_seeds + s], input_dim)
            errors[i, s] = rel_frobenius(net.empirical_ntk(params, x), theta_inf)
    fit = loglog_fit(np.repeat(widths, n_seeds), errors.ravel())
    png = None
    if out is not None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for i, width in enumerate(widths):
            ax.scatter([width] * n_seeds, errors[i], s=12, color="C0", alpha=0.6)
        w = np.array([widths[0], widths[-1]], dtype=float)
        ax.plot(w, fit.line(w), color="C1", label=f"fit: slope {fit}")
        ax.plot(w, fit.line(widths[0]) * (w / widths[0]) ** -0.5, "k--", lw=1, label="slope -1/2")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.set_ylabel(r"$\|\Theta_{emp} - \Theta_\infty\|_F / \|\Theta_\infty\|_F$")
        ax.set_title(f"Empirical NTK at initialization, {depth} hidden ReLU layers, {n_points} points")
        ax.legend()
        png = save(fig, out, "ntk_convergence.png")
    return dict(
        widths=tuple(widths),
        errors=errors,
        slope=fit.slope,
        stderr=fit.stderr,
        intercept=fit.intercept,
        png=png,
    )


def report(r: dict) -> None:
    for width, row in zip(r["widths"], r["errors"]):
        gm, se = geometric_summary(row)
        print(f"width {width:6d}: relative error {gm:.4f} (geometric mean of {row.size}; log-SE {se:.3f})")
    print(f"slope of log error against log width: {r['slope']:+.3f} +- {r['stderr']:.3f} (expected -0.5)")
    print(f"figure: {r['png']}")


def main(argv=None) -> dict:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
