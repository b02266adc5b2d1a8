"""``run.png``: the test metric and the training loss of ``fastntk run`` against the step t."""

from __future__ import annotations

import pathlib

import numpy as np

from .errors import CliError

# task -> (the key suffix of the test metric in run.json, axis label, scale, the baseline's
# key and label). Classification: accuracy in %, chance = always the largest class;
# regression: RMSE in the target's units, baseline = always the training mean.
_METRIC = {
    "classification": ("accuracy", "test accuracy (%)", 100.0, "chance_accuracy", "chance (largest class)"),
    "regression": ("rmse", "test RMSE", 1.0, "mean_baseline_rmse", "training mean (constant prediction)"),
}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CliError("writing the plot needs matplotlib (pip install matplotlib)", 1) from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_run(r: dict, path: pathlib.Path) -> None:
    """Write the figure of the results ``r`` (run.json's dict) to ``path``."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    _metric_panel(ax1, r)
    _loss_panel(ax2, r)
    for ax in (ax1, ax2):
        ax.set_xlabel("gradient-descent step t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{r['data']}: {r['n_train']} train / {r['n_test']} test points; MLP with {r['depth']} hidden "
        f"{r['activation']} layers (ntk parameterization, W_std {r['W_std']:.3g}, b_std {r['b_std']:.3g}); "
        f"learning rate {r['learning_rate']:.3g}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _metric_panel(ax, r: dict) -> None:
    key, label, scale, baseline, baseline_label = _METRIC[r.get("task", "classification")]
    t = np.asarray(r["t"])
    finite = f"finite network, width {r['width']}"
    ax.plot(t, scale * np.asarray(r[f"ntk_test_{key}"]), "-", color="C0", lw=2, label="NTK (infinite width)")
    ax.plot(t, scale * np.asarray(r[f"network_test_{key}"]), "o", color="C1", ms=4, label=finite)
    ax.axhline(scale * r[f"kernel_regression_test_{key}"]["ntk"], color="C0", ls=":", lw=1,
               label="NTK, t = inf (kernel regression)")  # fmt: skip
    ax.axhline(scale * r[baseline], color="gray", ls="--", lw=1, label=baseline_label)
    ax.set_ylabel(label)
    # symlog: t = 0 (chance) is shown, the steps from 1 on a log scale.
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(0, max(t[-1], 1))


def _loss_panel(ax, r: dict) -> None:
    t = np.asarray(r["t"])
    ax.loglog(t[1:], r["ntk_train_loss"][1:], "-", color="C0", lw=2, label="NTK (infinite width)")
    ax.loglog(
        t[1:], r["network_train_loss"][1:], "o", color="C1", ms=4, label=f"finite network, width {r['width']}"
    )
    ax.set_xlim(1, max(t[-1], 2))
    ax.set_ylabel(r"training loss $\|f - Y\|^2 / (2n)$")
