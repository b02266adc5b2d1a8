"""A wide network trained by gradient descent against its linearization and the analytic
prediction (Lee et al. 2019, "Wide neural networks of any depth evolve as linear models").

One wide ReLU network (NTK parameterization) is trained by full-batch gradient descent on
MSE (fastntk.train_mse); so is its linearization around initialization
(``linearized=True``: f(x; theta_0) + J(x; theta_0)(theta - theta_0), by JVPs and VJPs); and
fastntk.predict.gradient_descent_mse gives the infinite-width prediction from the analytic
NTK and the network's own outputs at initialization. Inputs lie on the unit circle; the
figure shows the training loss and a test output against the step for the three.

    python experiments/linearization.py            # full: depth 2, width 4096 (a minute)
    python experiments/linearization.py --quick    # the test's version (seconds)

Writes linearization.png to --out and prints the largest differences over the steps:
network - linearization and network - prediction, for the training loss (relative to the
initial loss) and the test outputs (relative to the rms of the targets).
"""

from __future__ import annotations

import math
import sys

import numpy as np

import fastntk as nt
from fastntk import predict

from _common import pyplot, save, script_main

FULL = dict(width=4096, depth=2, n_train=16, n_test=8, steps=300)
QUICK = dict(width=4096, depth=1, n_train=12, n_test=4, steps=150)
W_STD, B_STD = math.sqrt(2.0), 0.1


def network(width, depth: int):
    return nt.mlp("relu", depth, W_std=W_STD, b_std=B_STD, width=width, n_out=1 if width else None)


def circle(gamma):
    return np.stack([np.cos(gamma), np.sin(gamma)], axis=1)


def run(width: int, depth: int, n_train: int, n_test: int, steps: int, seed: int = 0, out=None) -> dict:
    """Train the network and its linearization; compare with the prediction.

    Returns
    -------
    dict
        ``steps`` (steps + 1,), ``loss`` {'network', 'linearized', 'analytic'} each (steps + 1,),
        ``test`` {same keys} each (steps + 1, n_test), ``lin_loss``, ``lin_test``,
        ``analytic_loss``, ``analytic_test`` (the largest differences from the network, relative
        to the initial loss / rms(y)), ``rms_y``, ``learning_rate``, ``png``.
    """
    rng = np.random.default_rng(seed)
    g_train = np.sort(rng.uniform(-np.pi, np.pi, n_train))
    g_test = np.linspace(-np.pi, np.pi, n_test, endpoint=False) + np.pi / n_test
    x, xt = circle(g_train), circle(g_test)
    y = (np.sin(2 * g_train) + 0.5 * np.cos(3 * g_train))[:, None]
    analytic_net = network(None, depth)
    k, kt = analytic_net.kernel(x, get="ntk"), analytic_net.kernel(xt, x, get="ntk")
    lr = y.size / np.linalg.eigvalsh(k)[-1]  # half the stable maximum 2 n / lambda_max
    net = network(width, depth)
    params = net.init(np.random.SeedSequence(seed), 2)
    t = np.arange(steps + 1)
    r = nt.train_mse(net, params, x, y, t, learning_rate=lr, x_test=xt, discrete=True)
    rl = nt.train_mse(net, params, x, y, t, learning_rate=lr, x_test=xt, discrete=True, linearized=True)
    fa, fta = predict.gradient_descent_mse(k, y, lr, discrete=True)(t, r.fx_train[0], r.fx_test[0], kt)
    loss_a = 0.5 * np.sum((fa - y) ** 2, axis=(1, 2)) / y.size
    rms_y = float(np.sqrt(np.mean(y**2)))
    loss = dict(network=r.loss, linearized=rl.loss, analytic=loss_a)
    test = dict(network=r.fx_test[..., 0], linearized=rl.fx_test[..., 0], analytic=fta[..., 0])
    loss0 = float(r.loss[0])

    def dev(key):
        return (
            float(np.abs(loss[key] - loss["network"]).max() / loss0),
            float(np.abs(test[key] - test["network"]).max() / rms_y),
        )

    lin_loss, lin_test = dev("linearized")
    an_loss, an_test = dev("analytic")
    png = None
    if out is not None:
        plt = pyplot()
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        styles = dict(network=dict(color="C0", lw=2.5, alpha=0.6), linearized=dict(color="C1", ls="--", lw=1.5),
                      analytic=dict(color="k", ls=":", lw=1.5))  # fmt: skip
        j = int(np.argmax(np.abs(test["network"][-1] - test["network"][0])))  # the test point that moves most
        for key in ("network", "linearized", "analytic"):
            a1.plot(t, loss[key], label=key, **styles[key])
            a2.plot(t, test[key][:, j], label=key, **styles[key])
        a1.set_yscale("log")
        for a in (a1, a2):  # the first steps move the most: linear below 1 step, logarithmic above
            a.set_xscale("symlog", linthresh=1.0)
            a.set_xlim(0, steps)
        a1.set_xlabel("step")
        a1.set_ylabel("training loss")
        a1.set_title(f"{depth} hidden ReLU layer(s), width {width}, {n_train} points on the circle")
        a1.legend()
        a2.set_xlabel("step")
        a2.set_ylabel("output")
        a2.set_title(f"test output at gamma = {g_test[j]:.2f}")
        a2.legend()
        png = save(fig, out, "linearization.png")
    return dict(
        steps=t, loss=loss, test=test, lin_loss=lin_loss, lin_test=lin_test, analytic_loss=an_loss,
        analytic_test=an_test, rms_y=rms_y, learning_rate=lr, png=png,
    )  # fmt: skip


def report(r: dict) -> None:
    print(
        f"training loss: {r['loss']['network'][0]:.4g} -> {r['loss']['network'][-1]:.3g} over {r['steps'][-1]} steps"
    )
    print(f"network - linearized: training loss {r['lin_loss']:.2e} (of the initial loss), "
          f"test outputs {r['lin_test']:.2e} (of rms(y))")  # fmt: skip
    print(f"network - analytic:   training loss {r['analytic_loss']:.2e} (of the initial loss), "
          f"test outputs {r['analytic_test']:.2e} (of rms(y))")  # fmt: skip
    print(f"figure: {r['png']}")


def main(argv=None) -> dict:
    return script_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
