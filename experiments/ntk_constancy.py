"""Constancy of the NTK during training, against the width.

Random networks (NTK parameterization) of increasing width are trained by full-batch
gradient descent on MSE (fastntk.train_mse) for a fixed number of steps at a fixed learning
rate (half the stable maximum of the analytic NTK; the loss falls by orders of magnitude),
and the relative change of their empirical NTK on the training set,
||Theta_T - Theta_0||_F / ||Theta_0||_F, is plotted against the width on log-log axes, for a
Relu and a smooth (erf) activation.

What to expect: the change vanishes as the width grows (the NTK regime), with a slope
between -1 and -1/2, not at -1/2. Lee et al. (2019) bound the change by O(1/sqrt(width));
for smooth activations its leading term is O(1/width) (Dyer and Gur-Ari 2019; Huang and Yau
2019: the NTK's time derivative is O(1/width)), so their slope is near -1. Relu's kink adds a
slower term: the O(1/sqrt(width)) movement of the pre-activations switches the units within
that distance of 0, a fraction O(1/sqrt(width)) of them, each carrying O(1/width) of the
kernel, on and off in about equal numbers, so the net change is ~sqrt(width^(1/2)) / width =
width^(-3/4) (a heuristic count). Full run: Relu -0.75, erf -0.97.

    python experiments/ntk_constancy.py            # full: depth 2, widths 64..4096, 6 networks each (minutes)
    python experiments/ntk_constancy.py --quick    # the test's version (seconds)

Writes ntk_constancy.png to --out and prints the fitted slopes with their standard errors.
"""

from __future__ import annotations

import math
import sys

import numpy as np

import fastntk as nt

from _common import geometric_summary, loglog_fit, pyplot, rel_frobenius, save, script_main

FULL = dict(
    widths=(64, 128, 256, 512, 1024, 2048, 4096), n_seeds=6, depth=2, n_points=16, input_dim=4, steps=200
)
QUICK = dict(widths=(64, 256, 1024, 4096), n_seeds=6, depth=1, n_points=8, input_dim=4, steps=100)
ACTIVATIONS = ("relu", "erf")


def network(width, depth: int, activation: str):
    return nt.mlp(activation, depth, W_std=math.sqrt(2.0), b_std=0.1, width=width, n_out=1 if width else None)


def run(
    widths, n_seeds: int, depth: int, n_points: int, input_dim: int, steps: int, seed: int = 0, out=None,
    activations=("relu", "erf"),
) -> dict:  # fmt: skip
    """Relative NTK changes per activation, width and network; log-log fits; the figure.

    Returns
    -------
    dict
        ``widths``; per activation name a dict with ``changes`` float64 (len(widths),
        n_seeds), ``loss_ratio`` (final / initial training loss, same shape), ``slope``,
        ``stderr``, ``intercept``, ``learning_rate``; ``png`` (path, or None without ``out``).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_points, input_dim))
    y = np.sin(2.0 * x[:, :1]) + 0.5 * x[:, 1:2]
    result = dict(widths=tuple(widths))
    for a, activation in enumerate(activations):
        theta_inf = network(None, depth, activation).kernel(x, get="ntk")
        lr = y.size / np.linalg.eigvalsh(theta_inf)[-1]  # half the stable maximum 2 n / lambda_max
        changes = np.empty((len(widths), n_seeds))
        loss_ratio = np.empty_like(changes)
        seeds = np.random.SeedSequence([seed, a]).spawn(len(widths) * n_seeds)
        for i, width in enumerate(widths):
            net = network(width, depth, activation)
            for s in range(n_seeds):
                params = net.init(seeds[i * n_seeds + s], input_dim)
                r = nt.train_mse(net, params, x, y, [0, steps], learning_rate=lr, discrete=True, get_ntk=True)
                changes[i, s] = rel_frobenius(r.ntk_train[1], r.ntk_train[0])
                loss_ratio[i, s] = r.loss[1] / r.loss[0]
        fit = loglog_fit(np.repeat(widths, n_seeds), changes.ravel())
        result[activation] = dict(
            changes=changes, loss_ratio=loss_ratio, slope=fit.slope, stderr=fit.stderr, intercept=fit.intercept,
            learning_rate=lr, fit=fit,
        )  # fmt: skip
    result["png"] = None
    if out is not None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4.2))
        w = np.array([widths[0], widths[-1]], dtype=float)
        for a, activation in enumerate(activations):
            r = result[activation]
            color = f"C{a}"
            for i, width in enumerate(widths):
                ax.scatter([width] * n_seeds, r["changes"][i], s=12, color=color, alpha=0.5)
            ax.plot(w, r["fit"].line(w), color=color, label=f"{activation}: slope {r['fit']}")
        anchor = result[activations[0]]["fit"].line(widths[0])
        ax.plot(w, anchor * (w / widths[0]) ** -0.5, "k--", lw=1, label="slope -1/2")
        ax.plot(w, anchor * (w / widths[0]) ** -1.0, "k:", lw=1, label="slope -1")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.set_ylabel(r"$\|\Theta_T - \Theta_0\|_F / \|\Theta_0\|_F$")
        ax.set_title(f"NTK change over {steps} steps of gradient descent, {depth} hidden layers")
        ax.legend()
        result["png"] = save(fig, out, "ntk_constancy.png")
    return result


def report(r: dict) -> None:
    for activation in ACTIVATIONS:
        if activation not in r:
            continue
        a = r[activation]
        for width, row, lr in zip(r["widths"], a["changes"], a["loss_ratio"]):
            gm, se = geometric_summary(row)
            print(f"{activation:5s} width {width:6d}: relative NTK change {gm:.5f} (geometric mean of {row.size}; "
                  f"log-SE {se:.3f}); final / initial loss {np.median(lr):.2g}")  # fmt: skip
        print(
            f"{activation:5s} slope of log change against log width: {a['slope']:+.3f} +- {a['stderr']:.3f}"
        )
    print("expected: between -1 (smooth activations, leading order) and -1/2 (Lee et al.'s bound)")
    print(f"figure: {r['png']}")


def main(argv=None) -> dict:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
