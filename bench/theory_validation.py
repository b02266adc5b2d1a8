"""Predicted vs measured test error of NTK ridge regression over a ridge sweep (fastntk.theory).

    python bench/theory_validation.py [--quick] [--json FILE] [--figure FILE]

Two tasks, the NTK of a depth-2 ReLU MLP (``fastntk.mlp('relu', 2, b_std=0.2)``):
  - teacher: Gaussian inputs in d = 8, targets from a finite random ReLU network (width 64)
    plus noise of variance 0.05; N = 300 training and 1000 test points per draw;
  - digits: scikit-learn's 1797 digits (pixels / 16), one-hot targets (10 outputs); per draw
    N = 300 training images drawn without replacement, tested on the other 1497.
For each of 10 draws and 11 ridges (relative to trace(K)/N, 1e-4 ... 10) it measures the
held-out MSE and computes, from the training kernel alone (one eigh per draw), the exact
leave-one-out MSE, GCV and KARE. Eigenlearning takes the spectrum of a larger sample: 3000
fresh inputs and the teacher's noiseless values (teacher), all 1797 images (digits; its
population is then the 1797 images, so it is compared with the error over all of them,
training images included, plotted dotted). Also: the ridge each criterion picks (per draw)
and the measured error there vs the best of the grid; the depth (0 ... 5 hidden layers, from
ONE every-layer pass) and ridge that leave-one-out picks on digits vs the measured best.

Writes the figure (default docs/figures/theory_validation.png) and, with --json, the
numbers into bench/results/. Last, a timing: leave-one-out at 50 ridges for N = 2000 from one
eigh vs one Cholesky per ridge. About 1-2 minutes on 2 loaded cores (--quick: ~20 s).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import fastntk as nt
from fastntk import theory

from _common import ROOT, machine, markdown_table, write_json

RIDGES_REL = np.logspace(-4, 1, 11)
CRITERIA = ("loo", "gcv", "kare")


def _net(depth=2):
    return nt.mlp("relu", depth=depth, b_std=0.2)


def _krr_mse(k, kt, y, yt, ridges):
    """Held-out MSE of KRR at every ridge, from the training kernel's eigendecomposition."""
    lam, u = theory.spectrum(k)
    c = u.T @ y.reshape(len(y), -1)
    coef = np.matmul(u, c[None] / (lam[None, :, None] + ridges[:, None, None]))  # (R, N, k)
    return np.mean((kt @ coef - yt.reshape(len(yt), -1)[None]) ** 2, axis=(1, 2))


def _estimates(k, y, ridges):
    spec = theory.spectrum(k)
    return {
        "loo": theory.leave_one_out(spec, y, ridges).mse,
        "gcv": theory.gcv(spec, y, ridges),
        "kare": theory.kare(spec, y, ridges),
    }


def teacher_task(rng, n, n_test, pool, draws):
    d, noise = 8, 0.05
    w, a = rng.standard_normal((d, 64)), rng.standard_normal(64)

    def f(x):
        return np.maximum(x @ w / np.sqrt(d), 0.0) @ a / 8.0

    net = _net()
    x_pool = rng.standard_normal((pool, d))
    k_pool = net.kernel(x_pool, get="ntk")
    ridges = RIDGES_REL * np.trace(k_pool) / pool  # the same absolute ridges for every draw
    measured, est = [], {c: [] for c in CRITERIA}
    for _ in range(draws):
        x, xt = rng.standard_normal((n, d)), rng.standard_normal((n_test, d))
        y = f(x) + np.sqrt(noise) * rng.standard_normal(n)
        yt = f(xt) + np.sqrt(noise) * rng.standard_normal(n_test)
        k = net.kernel(x, get="ntk")
        measured.append(_krr_mse(k, net.kernel(xt, x, get="ntk"), y, yt, ridges))
        for c, v in _estimates(k, y, ridges).items():
            est[c].append(v)
    eig = theory.eigenlearning(k_pool, f(x_pool), ridges, n_train=n, noise=noise).test_mse
    return dict(measured=np.array(measured), est={c: np.array(v) for c, v in est.items()}, eigenlearning=eig)


def digits_task(rng, n, draws):
    from sklearn.datasets import load_digits

    x_all, labels = load_digits(return_X_y=True)
    x_all, y_all = x_all / 16.0, np.eye(10)[labels]
    m = len(x_all)
    k_all = _net().kernel(x_all, get="ntk")
    ridges = RIDGES_REL * np.trace(k_all) / m
    measured, whole, est = [], [], {c: [] for c in CRITERIA}
    for _ in range(draws):
        perm = rng.permutation(m)
        tr, te = perm[:n], perm[n:]
        k = k_all[np.ix_(tr, tr)]
        measured.append(_krr_mse(k, k_all[np.ix_(te, tr)], y_all[tr], y_all[te], ridges))
        whole.append(_krr_mse(k, k_all[:, tr], y_all[tr], y_all, ridges))
        for c, v in _estimates(k, y_all[tr], ridges).items():
            est[c].append(v)
    eig = theory.eigenlearning(k_all, y_all, ridges, n_train=n).test_mse
    return dict(
        measured=np.array(measured),
        whole=np.array(whole),
        est={c: np.array(v) for c, v in est.items()},
        eigenlearning=eig,
    )


def digits_depth(rng, n, max_depth=5):
    """Depth and ridge by leave-one-out from ONE every-layer pass, vs the measured best."""
    from sklearn.datasets import load_digits

    x_all, labels = load_digits(return_X_y=True)
    perm = rng.permutation(len(x_all))
    tr, te = perm[:n], perm[n:]
    x, y = x_all[tr] / 16.0, np.eye(10)[labels[tr]]
    net = _net(max_depth)
    t0 = time.perf_counter()
    layers = net.kernel(x, get="ntk", every_layer=True)  # (2 max_depth + 1, N, N)
    kernels = {depth: layers[2 * depth] for depth in range(max_depth + 1)}
    # Relative ridges (ridge * trace(K)/N per depth): the kernels' scales differ by depth.
    chosen = theory.select_depth(kernels, y, RIDGES_REL, criterion="loo", relative=True)
    scaled = {depth: k / (np.trace(k) / n) for depth, k in kernels.items()}  # the same fits, unit scale
    seconds = time.perf_counter() - t0
    cross = net.kernel(x_all[te] / 16.0, x, get="ntk", every_layer=True)
    measured = np.array(
        [
            _krr_mse(
                scaled[d], cross[2 * d] / (np.trace(kernels[d]) / n), y, np.eye(10)[labels[te]], RIDGES_REL
            )
            for d in range(max_depth + 1)
        ]
    )
    best = np.unravel_index(np.argmin(measured), measured.shape)
    return dict(
        depth=int(chosen.depth),
        ridge_rel=chosen.ridge,
        loo=chosen.scores,
        measured=measured,
        measured_at_choice=float(measured[chosen.depth, list(RIDGES_REL).index(chosen.ridge)]),
        best_depth=int(best[0]),
        best_ridge_rel=float(RIDGES_REL[best[1]]),
        best_measured=float(measured[best]),
        seconds_select=seconds,
    )


def sweep_timing(rng, n, n_ridges=50, repeats=3):
    """Leave-one-out at n_ridges ridges: one eigh + the closed form at every ridge, vs the
    one-ridge closed form (a Cholesky and a triangular inverse) repeated per ridge.
    Interleaved, best of `repeats` each (the machine is shared); the per-ridge path is
    timed at one ridge and multiplied by n_ridges (its work does not depend on the ridge)."""
    x = rng.standard_normal((n, 16))
    k = _net().kernel(x, get="ntk")
    y = rng.standard_normal((n, 10))
    ridges = np.logspace(-4, 1, n_ridges) * np.trace(k) / n
    sweep, one = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        theory.leave_one_out(k, y, ridges)
        sweep.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theory.loo_residuals_cholesky(k, y, ridges[n_ridges // 2])
        one.append(time.perf_counter() - t0)
    return dict(
        n=n,
        ridges=n_ridges,
        outputs=10,
        sweep_s=min(sweep),
        per_ridge_s=min(one),
        per_ridge_total_s=n_ridges * min(one),
    )


def selection_rows(task):
    """Per criterion: the measured error at the ridge it picks (mean over draws) vs the best."""
    rows = []
    meas = task["measured"]
    best = np.mean(np.min(meas, axis=1))
    for c in CRITERIA:
        idx = np.argmin(task["est"][c], axis=1)  # per draw
        at = meas[np.arange(len(meas)), idx]
        rows.append([c, f"{np.mean(at):.5f}", f"{best:.5f}", f"{np.mean(at) / best:.3f}"])
    return rows


def plot(teacher, digits, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, task, title in [
        (axes[0], teacher, "teacher ReLU network + noise, N = {n}"),
        (axes[1], digits, "digits (one-hot, 10 outputs), N = {n}"),
    ]:
        meas = task["measured"]
        mean, sd = meas.mean(0), meas.std(0, ddof=1)
        ax.fill_between(RIDGES_REL, mean - sd, mean + sd, color="0.85", label="measured ±1 sd (draws)")
        ax.plot(RIDGES_REL, mean, "k-", lw=2, label="measured test MSE (held out)")
        ax.plot(
            RIDGES_REL,
            task["est"]["loo"].mean(0),
            "o-",
            color="C0",
            label="leave-one-out (exact, closed form)",
        )
        ax.plot(RIDGES_REL, task["est"]["gcv"].mean(0), "s-", color="C1", ms=7, mfc="none", label="GCV")
        ax.plot(RIDGES_REL, task["est"]["kare"].mean(0), "x", color="C3", ms=6, label="KARE (= GCV)")
        ax.plot(
            RIDGES_REL,
            task["eigenlearning"],
            "--",
            color="C2",
            lw=2,
            label="eigenlearning (larger sample's spectrum)",
        )
        if "whole" in task:
            ax.plot(
                RIDGES_REL,
                task["whole"].mean(0),
                ":",
                color="C2",
                lw=2,
                label="measured over all 1797 (eigenlearning's population)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ridge / (trace(K) / N)")
        ax.set_ylabel("test MSE")
        ax.set_title(title.format(n=task["n"]))
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7.5, loc="upper left")
    fig.suptitle(
        "fastntk.theory: test error predicted from the training kernel alone vs measured (mean of draws)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer draws")
    parser.add_argument("--json", nargs="?", const="theory_validation.json", default=None)
    parser.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "theory_validation.png"))
    args = parser.parse_args()
    rng = np.random.default_rng(13)
    n, draws, pool = (150, 4, 1000) if args.quick else (300, 10, 3000)
    t0 = time.perf_counter()
    teacher = teacher_task(rng, n, 1000, pool, draws)
    teacher["n"] = n
    digits = digits_task(rng, n, draws)
    digits["n"] = n
    depth = digits_depth(rng, n)
    timing = sweep_timing(rng, 600 if args.quick else 2000)
    plot(teacher, digits, Path(args.figure))

    for name, task in [("teacher", teacher), ("digits", digits)]:
        print(f"\n{name}: mean over {draws} draws, N = {n}")
        headers = ["ridge/(tr K/N)", "measured", "sd", "LOO", "GCV", "KARE", "eigenlearning"]
        if "whole" in task:
            headers.append("measured, all 1797")
        rows = []
        for j, r in enumerate(RIDGES_REL):
            row = [
                f"{r:.0e}",
                f"{task['measured'][:, j].mean():.5f}",
                f"{task['measured'][:, j].std(ddof=1):.5f}",
            ]
            row += [f"{task['est'][c][:, j].mean():.5f}" for c in CRITERIA]
            row.append(f"{task['eigenlearning'][j]:.5f}")
            if "whole" in task:
                row.append(f"{task['whole'][:, j].mean():.5f}")
            rows.append(row)
        print(markdown_table(headers, rows))
        print("\nridge chosen by each criterion (per draw): measured MSE there vs the grid's best")
        print(markdown_table(["criterion", "measured at choice", "best", "ratio"], selection_rows(task)))
    print(
        f"\ndigits depth (0..5 hidden layers, one every-layer pass) by leave-one-out: depth {depth['depth']}, "
        f"ridge {depth['ridge_rel']:.0e} -> measured {depth['measured_at_choice']:.5f}; measured best: depth "
        f"{depth['best_depth']}, ridge {depth['best_ridge_rel']:.0e} -> {depth['best_measured']:.5f} "
        f"(selection {depth['seconds_select']:.1f} s)"
    )
    print(
        f"\nleave-one-out at {timing['ridges']} ridges, N = {timing['n']}, 10 outputs: one eigh + closed form "
        f"{timing['sweep_s']:.2f} s; one Cholesky per ridge {timing['per_ridge_total_s']:.2f} s "
        f"({timing['per_ridge_s']:.2f} s each); ratio {timing['per_ridge_total_s'] / timing['sweep_s']:.1f}x"
    )
    total = time.perf_counter() - t0
    print(f"\nfigure: {args.figure}; total {total:.0f} s")
    if args.json:

        def plain(task):
            out = {k: v.tolist() for k, v in task.items() if isinstance(v, np.ndarray)}
            out["est"] = {c: v.tolist() for c, v in task["est"].items()}
            out["n"] = task["n"]
            return out

        payload = dict(
            machine=machine(),
            ridges_relative=RIDGES_REL.tolist(),
            draws=draws,
            teacher=plain(teacher),
            digits=plain(digits),
            digits_depth={k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in depth.items()},
            loo_sweep_timing=timing,
            seconds=total,
        )
        print("json:", write_json(args.json, payload))


if __name__ == "__main__":
    main()
