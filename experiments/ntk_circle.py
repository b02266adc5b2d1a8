"""The NTK of random networks on the unit circle against the analytic NTK (after Jacot,
Gabriel and Hongler 2018, Figure 1).

Inputs x(gamma) = (cos gamma, sin gamma); the kernel Theta(x0, x(gamma)) with x0 = (1, 0) as a
function of the angle gamma, for a few random networks of two widths (depth 4: three hidden
ReLU layers and a linear output, NTK parameterization, W_std = 1, b_std = 0.1, as in the
paper), against the infinite-width NTK. The wider networks' kernels lie closer to the limit:
the deviation shrinks like 1/sqrt(width).

    python experiments/ntk_circle.py            # full: widths 100 and 10000, 4 networks each (~2 GB)
    python experiments/ntk_circle.py --quick    # the test's version (seconds)

Writes ntk_circle.png to --out and prints, per width, the relative deviation
||Theta_emp(x0, .) - Theta_inf(x0, .)|| / ||Theta_inf(x0, .)|| over the angles, and the slope of
its logarithm against log width (two widths; standard error from the spread of the networks).
"""

from __future__ import annotations

import sys

import numpy as np

import fastntk as nt

from _common import geometric_summary, loglog_fit, pyplot, save, script_main

FULL = dict(widths=(100, 10000), n_seeds=4, n_angles=121)
QUICK = dict(widths=(64, 1024), n_seeds=6, n_angles=61)
DEPTH, W_STD, B_STD = 3, 1.0, 0.1  # hidden layers; Jacot et al.'s beta = 0.1


def network(width):
    return nt.mlp("relu", DEPTH, W_std=W_STD, b_std=B_STD, width=width, n_out=1 if width else None)


def run(widths, n_seeds: int, n_angles: int, seed: int = 0, out=None) -> dict:
    """Empirical and analytic Theta(x0, x(gamma)); deviations; fit; figure.

    Returns
    -------
    dict
        ``gamma`` (n_angles,), ``analytic`` (n_angles,), ``empirical`` {width: (n_seeds,
        n_angles)}, ``deviations`` float64 (len(widths), n_seeds), ``slope``, ``stderr``,
        ``png`` (path, or None without ``out``).
    """
    gamma = np.linspace(-np.pi, np.pi, n_angles)
    x = np.stack([np.cos(gamma), np.sin(gamma)], axis=1)
    x0 = np.array([[1.0, 0.0]])
    analytic = network(None).kernel(x0, x, get="ntk")[0]
    empirical, deviations = {}, np.empty((len(widths), n_seeds))
    seeds = np.random.SeedSequence(seed).spawn(len(widths) * n_seeds)
    for i, width in enumerate(widths):
        net = network(width)
        rows = []
        for s in range(n_seeds):
            params = net.init(seeds[i * n_seeds + s], 2)
            row = net.empirical_ntk(params, x0, x)[0]
            del params  # width 10000: 1.6 GB of weights per network
            rows.append(row)
            deviations[i, s] = np.linalg.norm(row - analytic) / np.linalg.norm(analytic)
        empirical[width] = np.array(rows)
    fit = loglog_fit(np.repeat(widths, n_seeds), deviations.ravel())
    png = None
    if out is not None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        styles = [dict(color="C0", ls="--", lw=0.9), dict(color="C1", ls="-", lw=0.9)]
        for i, width in enumerate(widths):
            for s, row in enumerate(empirical[width]):
                ax.plot(gamma, row, alpha=0.8, label=f"width {width}" if s == 0 else None, **styles[i % 2])
        ax.plot(gamma, analytic, color="k", lw=2, label=r"$n \to \infty$")
        ax.set_xlabel(r"$\gamma$")
        ax.set_ylabel(r"$\Theta(x_0, x(\gamma))$")
        ax.set_xlim(-np.pi, np.pi)
        ax.set_title(f"NTK of depth-{DEPTH + 1} ReLU networks on the unit circle ({n_seeds} draws per width)")
        ax.legend()
        png = save(fig, out, "ntk_circle.png")
    return dict(
        gamma=gamma, analytic=analytic, empirical=empirical, widths=tuple(widths), deviations=deviations,
        slope=fit.slope, stderr=fit.stderr, png=png,
    )  # fmt: skip


def report(r: dict) -> None:
    for width, row in zip(r["widths"], r["deviations"]):
        gm, se = geometric_summary(row)
        print(f"width {width:6d}: relative deviation from the analytic NTK {gm:.4f} (geometric mean of "
              f"{row.size}; per network {np.array2string(row, precision=4)})")  # fmt: skip
    print(f"slope of log deviation against log width: {r['slope']:+.3f} +- {r['stderr']:.3f} (expected -0.5)")
    print(f"figure: {r['png']}")


def main(argv=None) -> dict:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
