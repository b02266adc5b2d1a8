"""Uncertainty bands of an infinite ensemble of wide networks on a 1-D regression.

Every network of an ensemble of infinitely wide networks trained by gradient descent on MSE
outputs, at time t, a draw from a Gaussian process whose mean and covariance are known in
closed form (fastntk.predict.gradient_descent_mse_ensemble). This script plots the mean
+- 2 standard deviations (the square root of the covariance's diagonal) at a few times t
and at t = infinity, on noisy samples of sin(x), for an Erf MLP (W_std = 1.5, b_std = 1).

    python examples/ensemble_uncertainty.py                 # writes out/ensemble_uncertainty.png
    python examples/ensemble_uncertainty.py --out figs --n-train 12 --times 3 30

At t = 0 the band is the prior (the NNGP); as t grows it tightens around the training
points, and at t = infinity the mean interpolates them (up to the small diag_reg) while
the band stays wide away from the data.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import fastntk as nt

OUT = pathlib.Path(__file__).resolve().parent / "out"


def network(depth: int = 2):
    """depth hidden Erf layers. The widths (512) only matter for finite networks; the
    kernels are those of infinite width.

    With 1-D inputs the first layer sees a pair only through W_std^2 x y + b_std^2: a small
    bias would leave the kernel a function of the signs of x and y, hardly of their
    distance, and the band would not widen away from the data; b_std = 1 makes it."""
    return nt.mlp("erf", depth, W_std=1.5, b_std=1.0, width=512, n_out=1)


def data(n_train: int = 8, n_test: int = 100, noise: float = 0.05, seed: int = 0):
    """Noisy sin(x) at n_train random points of [-pi, pi]; a test grid over [-1.5 pi, 1.5 pi]
    (beyond the data, where the band widens). Inputs (N, 1), targets (N, 1)."""
    rng = np.random.default_rng(seed)
    x_train = np.sort(rng.uniform(-np.pi, np.pi, n_train))[:, None]
    y_train = np.sin(x_train) + noise * rng.standard_normal(x_train.shape)
    x_test = np.linspace(-1.5 * np.pi, 1.5 * np.pi, n_test)[:, None]
    return x_train, y_train, x_test


def run(n_train=8, n_test=100, times=(1.0, 10.0, 100.0), depth=2, diag_reg=1e-4, seed=0, out=None) -> dict:
    """The ensemble's mean and standard deviation at each time and at t = infinity.

    Returns
    -------
    dict
        ``x_train`` (N, 1), ``y_train`` (N, 1), ``x_test`` (M, 1), ``times`` (the finite
        times, then inf), ``mean`` and ``std`` float64 (len(times) + 1, M), ``cov_inf``
        (M, M) the covariance at t = infinity, ``png`` (path, or None without ``out``).
    """
    x_train, y_train, x_test = data(n_train, n_test, seed=seed)
    net = network(depth)
    # diag_reg: a small ridge (relative to the kernel's mean diagonal) for the noisy targets.
    predict_fn = nt.predict.gradient_descent_mse_ensemble(net, x_train, y_train, diag_reg=diag_reg)
    # get='ntk': every layer trained (the NTK); get='nngp' would train only the last layer.
    finite = predict_fn(t=np.asarray(times, dtype=float), x_test=x_test, get="ntk", compute_cov=True)
    limit = predict_fn(t=None, x_test=x_test, get="ntk", compute_cov=True)
    means = np.concatenate([finite.mean[..., 0], limit.mean[None, :, 0]])  # (T + 1, M)
    covs = np.concatenate([finite.covariance, limit.covariance[None]])  # (T + 1, M, M)
    # Round-off can leave a variance a hair below zero where the band vanishes.
    std = np.sqrt(np.maximum(np.diagonal(covs, axis1=1, axis2=2), 0.0))
    all_times = tuple(times) + (np.inf,)
    png = None if out is None else plot(x_train, y_train, x_test, all_times, means, std, out)
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, times=all_times, mean=means, std=std,
                cov_inf=limit.covariance, png=png)  # fmt: skip


def plot(x_train, y_train, x_test, times, means, std, out) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(times), figsize=(3.6 * len(times), 3.4), sharey=True)
    xs = x_test[:, 0]
    for ax, t, m, s in zip(np.atleast_1d(axes), times, means, std):
        ax.fill_between(xs, m - 2 * s, m + 2 * s, color="C0", alpha=0.25, label="mean +- 2 std")
        ax.plot(xs, m, color="C0", lw=2, label="ensemble mean")
        ax.plot(xs, np.sin(xs), "k--", lw=1, label="sin(x)")
        ax.plot(x_train[:, 0], y_train[:, 0], "o", color="C3", ms=5, label="training points")
        ax.set_title("t = inf" if np.isinf(t) else f"t = {t:g}")
        ax.set_xlabel("x")
    np.atleast_1d(axes)[0].set_ylabel("f(x)")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Infinite ensemble of wide Erf networks trained by gradient descent (NTK)", fontsize=10)
    fig.tight_layout()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ensemble_uncertainty.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, default=OUT, help=f"folder for the PNG (default {OUT})")
    p.add_argument("--n-train", type=int, default=8, help="training points (default 8)")
    p.add_argument("--n-test", type=int, default=100, help="test grid points (default 100)")
    p.add_argument("--times", type=float, nargs="+", default=[1.0, 10.0, 100.0], help="finite times t")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    r = run(n_train=args.n_train, n_test=args.n_test, times=tuple(args.times), seed=args.seed, out=args.out)
    inside = np.abs(r["x_test"][:, 0]) <= np.pi
    for t, s in zip(r["times"], r["std"]):
        print(f"t = {t:>6g}: mean std {s[inside].mean():.3f} on [-pi, pi], {s[~inside].mean():.3f} beyond")
    print(f"wrote {r['png']}")
    return r


if __name__ == "__main__":
    main()
