"""NTK (and NNGP) regression on your own data.

    python examples/ntk_regression.py                              # scikit-learn's Friedman #1 benchmark
    python examples/ntk_regression.py --data my.csv --target price # a CSV with a header row
    python examples/ntk_regression.py --data my.npz                # arrays x (N, d) and y (N,)

The steps to copy: standardize inputs and targets with the training statistics; compute the
NTK and NNGP of a ReLU MLP (ntk parameterization) between all training points and from the
test points to them; choose a ridge on a validation split of the training set (relative to
the kernel's mean diagonal trace(K)/N, so the grid does not depend on the kernel's scale);
solve the kernel regression (fastntk.predict.kernel_regression: the t = infinity prediction
of an infinitely wide network trained by gradient flow, plus the ridge); report the test R^2
next to a linear ridge regression, and plot predicted against true test targets.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import fastntk as nt

OUT = pathlib.Path(__file__).resolve().parent / "out"
RIDGES = (0.0, 1e-3, 1e-2, 1e-1, 1.0)  # relative to trace(K) / N


def load(path=None, target=None, n_samples=1000, seed=0):
    """Inputs (N, d) and targets (N,) from a CSV (header row; ``target`` names the target
    column, default the last), a .npz (arrays ``x`` and ``y``), or, without a path,
    Friedman #1: y = 10 sin(pi x1 x2) + 20 (x3 - 1/2)^2 + 10 x4 + 5 x5 + noise, 10 inputs
    of which 5 matter."""
    if path is None:
        from sklearn.datasets import make_friedman1

        return make_friedman1(n_samples=n_samples, noise=1.0, random_state=seed)
    path = pathlib.Path(path)
    if path.suffix == ".npz":
        with np.load(path) as f:
            return np.asarray(f["x"], dtype=float), np.asarray(f["y"], dtype=float).ravel()
    table = np.genfromtxt(path, delimiter=",", names=True)
    names = list(table.dtype.names)
    target = names[-1] if target is None else target
    x = np.column_stack([table[n] for n in names if n != target]).astype(float)
    return x, np.asarray(table[target], dtype=float)


def network(depth: int = 3):
    """depth hidden ReLU layers; W_std = sqrt(2) keeps the variance through ReLU (He)."""
    return nt.mlp("relu", depth, W_std=np.sqrt(2.0), b_std=0.05)


def r2(pred, y) -> float:
    return float(1.0 - np.mean((pred - y) ** 2) / np.var(y))


def choose_ridge(k, y, rng, validation=0.2) -> float:
    """The ridge of RIDGES (times trace(k)/N) with the best R^2 on a random validation
    part of the training set, fitted on the rest: k (N, N), y (N,)."""
    n = len(y)
    perm = rng.permutation(n)
    va, tr = perm[: int(validation * n)], perm[int(validation * n) :]
    scale = np.trace(k) / n
    scores = [
        r2(nt.predict.kernel_regression(k[np.ix_(tr, tr)], y[tr], k[np.ix_(va, tr)], ridge=r * scale), y[va])
        for r in RIDGES
    ]
    return RIDGES[int(np.argmax(scores))] * scale


def run(x, y, depth=3, test_fraction=0.25, seed=0, out=None) -> dict:
    """Fit on a random training part, evaluate on the rest.

    Returns
    -------
    dict
        ``r2`` ({'ntk', 'nngp', 'linear'}: test R^2), ``ridge`` ({'ntk', 'nngp'}: the absolute
        ridges chosen), ``y_test`` (M,), ``pred`` ({'ntk', 'nngp'}: (M,)), ``split``
        (train and test indices), ``png`` (path, or None without ``out``).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import train_test_split

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i_train, i_test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed)
    mean, std = x[i_train].mean(axis=0), x[i_train].std(axis=0)
    std[std == 0] = 1.0  # a constant feature is only centred
    x = (x - mean) / std
    y_mean, y_std = y[i_train].mean(), y[i_train].std()
    y_train = (y[i_train] - y_mean) / y_std  # unit-scale targets: the ridge grid is relative
    net = network(depth)
    k_train = net.kernel(x[i_train])  # .nngp, .ntk: (N, N)
    k_test = net.kernel(x[i_test], x[i_train])  # (M, N)
    rng = np.random.default_rng(seed)
    pred, ridge, scores = {}, {}, {}
    for g in ("ntk", "nngp"):
        ridge[g] = choose_ridge(getattr(k_train, g), y_train, rng)
        f = nt.predict.kernel_regression(getattr(k_train, g), y_train, getattr(k_test, g), ridge=ridge[g])
        pred[g] = f * y_std + y_mean
        scores[g] = r2(pred[g], y[i_test])
    scores["linear"] = float(RidgeCV().fit(x[i_train], y[i_train]).score(x[i_test], y[i_test]))
    png = None if out is None else plot(y[i_test], pred, scores, out)
    return dict(r2=scores, ridge=ridge, y_test=y[i_test], pred=pred, split=(i_train, i_test), png=png)


def plot(y_test, pred, scores, out) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    lo, hi = float(y_test.min()), float(y_test.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    for i, g in enumerate(("ntk", "nngp")):
        ax.scatter(
            y_test, pred[g], s=10, alpha=0.6, color=f"C{i}", label=f"{g.upper()}: R$^2$ = {scores[g]:.3f}"
        )
    ax.set_xlabel("true test target")
    ax.set_ylabel("predicted")
    ax.set_title(f"Kernel regression (linear ridge: R$^2$ = {scores['linear']:.3f})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ntk_regression.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", help="a .csv with a header row, or a .npz with arrays x and y (default: Friedman #1)"
    )
    p.add_argument("--target", help="the CSV's target column (default: the last)")
    p.add_argument("--n-samples", type=int, default=1000, help="size of the default data set (default 1000)")
    p.add_argument("--depth", type=int, default=3, help="hidden layers (default 3)")
    p.add_argument("--out", type=pathlib.Path, default=OUT, help=f"folder for the PNG (default {OUT})")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    x, y = load(args.data, args.target, args.n_samples, args.seed)
    r = run(x, y, depth=args.depth, seed=args.seed, out=args.out)
    n_test = len(r["y_test"])
    print(
        f"{len(y) - n_test} training / {n_test} test points, {x.shape[1]} features; depth-{args.depth} ReLU MLP"
    )
    for g in ("ntk", "nngp"):
        print(f"{g.upper():>6}: test R^2 {r['r2'][g]:.4f} (ridge {r['ridge'][g]:.3g})")
    print(f"linear ridge: test R^2 {r['r2']['linear']:.4f}")
    print(f"wrote {r['png']}")
    return r


if __name__ == "__main__":
    main()
