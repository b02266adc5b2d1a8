"""The training-dynamics plot: loss against time, predicted by the NTK and measured on
finite networks trained by gradient descent.

For each width, a network is initialized, its initial outputs f_0 are recorded, and then

- fastntk.predict.gradient_descent_mse says, in closed form, what the outputs of an
  infinitely wide network starting from those same f_0 are after t steps (the NTK of
  infinite width is constant during training, so the dynamics are linear);
- fastntk.train_mse trains the network itself by the same gradient-descent steps.

The two agree better as the width grows (differences of order 1/sqrt(width)). The data:
noisy samples of sin(x) on [-pi, pi], an Erf MLP (W_std = 1.5, b_std = 1), learning rate
max_learning_rate / 2.

    python examples/training_dynamics.py                   # writes out/training_dynamics.png
    python examples/training_dynamics.py --widths 128 2048 --steps 3000 --out figs
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import fastntk as nt

OUT = pathlib.Path(__file__).resolve().parent / "out"


def network(width, depth: int = 2):
    return nt.mlp("erf", depth, W_std=1.5, b_std=1.0, width=width, n_out=1)


def data(n_train: int = 16, n_test: int = 64, noise: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train = rng.uniform(-np.pi, np.pi, (n_train, 1))
    y_train = np.sin(x_train) + noise * rng.standard_normal(x_train.shape)
    x_test = np.linspace(-np.pi, np.pi, n_test)[:, None]
    return x_train, y_train, x_test, np.sin(x_test)


def mse(f, y):
    """0.5 * mean squared error over points and outputs (the training loss), per time."""
    return 0.5 * ((f - y) ** 2).mean(axis=(-2, -1))


def run(widths=(32, 512), steps=1000, n_train=16, n_test=64, seed=0, out=None) -> dict:
    """Train and test loss along the steps, predicted and measured, for each width.

    Returns
    -------
    dict
        ``t`` int64 (T,) the recorded step counts; ``learning_rate``; ``loss`` a dict
        ``{width: {"network": (train (T,), test (T,)), "ntk": (train (T,), test (T,))}}``;
        ``png`` (path, or None without ``out``).
    """
    x_train, y_train, x_test, y_test = data(n_train, n_test, seed=seed)
    # The infinite-width NTK: its dynamics do not depend on the widths given to Dense.
    k_train = network(None).kernel(x_train, get="ntk")
    k_test = network(None).kernel(x_test, x_train, get="ntk")
    lr = nt.predict.max_learning_rate(k_train, y_train.size) / 2
    t = np.unique(np.concatenate([[0], np.round(np.geomspace(1, steps, 30)).astype(int)]))
    predict_fn = nt.predict.gradient_descent_mse(k_train, y_train, lr, discrete=True)
    loss = {}
    for i, width in enumerate(widths):
        net = network(width)
        params = net.init(seed + i, x_train.shape[1])
        f0, ft0 = net.apply(params, x_train), net.apply(params, x_test)
        f_train, f_test = predict_fn(t, f0, ft0, k_test)  # the NTK's prediction from this f_0
        trained = nt.train_mse(
            net, params, x_train, y_train, t, learning_rate=lr, x_test=x_test, discrete=True
        )
        loss[width] = {
            "ntk": (mse(f_train, y_train), mse(f_test, y_test)),
            "network": (trained.loss, mse(trained.fx_test, y_test)),
        }
    png = None if out is None else plot(t, loss, lr, out)
    return dict(t=t, learning_rate=lr, loss=loss, png=png)


def plot(t, loss, lr, out) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for k, (ax, name) in enumerate(zip(axes, ("training", "test"))):
        for i, (width, curves) in enumerate(loss.items()):
            ax.loglog(
                t[1:], curves["network"][k][1:], "-", color=f"C{i}", lw=2, label=f"width {width}: network"
            )
            ax.loglog(
                t[1:],
                curves["ntk"][k][1:],
                "--",
                color=f"C{i}",
                lw=1.5,
                label=f"width {width}: NTK prediction",
            )
        ax.set_title(f"{name} loss")
        ax.set_xlabel("gradient-descent step t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"$\frac{1}{2}$ mean squared error")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Erf MLP on noisy sin(x), learning rate {lr:.3g}: finite networks vs the NTK from the same f_0",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training_dynamics.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, default=OUT, help=f"folder for the PNG (default {OUT})")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 512], help="widths of the finite networks")
    p.add_argument("--steps", type=int, default=1000, help="gradient-descent steps (default 1000)")
    p.add_argument("--n-train", type=int, default=16, help="training points (default 16)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    r = run(widths=tuple(args.widths), steps=args.steps, n_train=args.n_train, seed=args.seed, out=args.out)
    for width, c in r["loss"].items():
        print(f"width {width:>5}: after {r['t'][-1]} steps, test loss {c['network'][1][-1]:.3e} "
              f"(NTK prediction {c['ntk'][1][-1]:.3e})")  # fmt: skip
    print(f"wrote {r['png']}")
    return r


if __name__ == "__main__":
    main()
