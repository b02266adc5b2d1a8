"""``fastntk run``: kernels, kernel regression, the closed-form gradient-descent dynamics of the
infinitely wide network, and a finite network trained by the same steps; a table, run.png and
run.json. The conventions are in :mod:`fastntk.cli`'s docstring."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import numpy as np

from .._progress import printing, progress_bar
from .arch import parse_arch
from .data import Dataset, load_data
from .errors import CliError
from .plot import plot_run


def time_grid(steps: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Step counts for the table (0, 1, 3, 10, 30, ... below ``steps``, and ``steps``) and for
    the plot (those and about ``n`` log-spaced integers up to ``steps``), as
    ``(plot, table)``, both sorted int64 arrays, table a subset of plot."""
    table, v = [0], 1
    while v < steps:
        table.append(v)
        v = v * 3 if str(v)[0] == "1" else v * 10 // 3
    if steps:
        table.append(steps)
    log_spaced = np.round(np.geomspace(1, steps, n)).astype(np.int64) if steps else np.zeros(0, np.int64)
    plot = np.unique(np.concatenate([np.array(table, dtype=np.int64), log_spaced]))
    return plot, np.array(table, dtype=np.int64)


# ---------------------------------------------------------------------------------------
# The task: what the network fits and how its test predictions are scored


@dataclasses.dataclass
class Task:
    """Targets and scores of one task.

    ``y`` (N, k) is what the network is fitted to: one-hot classes, or the regression targets
    standardized with the training mean and standard deviation (so the zero initial output of
    the analytic dynamics is the training mean). ``score`` maps test outputs (..., M, k) to
    the metric (...): accuracy of the argmax, or the RMSE in the targets' own units.
    """

    data: Dataset
    y: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray

    @classmethod
    def of(cls, data: Dataset) -> Task:
        if data.task == "classification":
            c = data.n_classes
            return cls(data, np.eye(c)[data.y_train], np.zeros(c), np.ones(c))
        mean, std = data.y_train.mean(axis=0), data.y_train.std(axis=0)
        std[std == 0] = 1.0  # a constant target is only centred
        return cls(data, (data.y_train - mean) / std, mean, std)

    @property
    def classifies(self) -> bool:
        return self.data.task == "classification"

    @property
    def metric(self) -> str:
        return "accuracy" if self.classifies else "rmse"

    def fmt(self, v) -> str:
        return f"{v:.2%}" if self.classifies else f"{v:.4g}"

    def score(self, f_test) -> np.ndarray:
        if self.classifies:
            return (np.argmax(f_test, axis=-1) == self.data.y_test).mean(axis=-1)
        err = f_test * self.y_std + self.y_mean - self.data.y_test
        return np.sqrt((err**2).mean(axis=(-2, -1)))

    def r2(self, f_test) -> np.ndarray:
        """Coefficient of determination on the test set, averaged over the outputs
        (scikit-learn's r2_score, uniform average): (...,)."""
        y = self.data.y_test
        sse = ((f_test * self.y_std + self.y_mean - y) ** 2).sum(axis=-2)
        sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (1.0 - sse / sst).mean(axis=-1)

    def baseline(self) -> float:
        """Chance accuracy (always the largest class), or the RMSE of always predicting the
        training mean."""
        if self.classifies:
            return float(
                np.bincount(self.data.y_test, minlength=self.data.n_classes).max() / len(self.data.y_test)
            )
        return float(self.score(np.zeros_like(self.data.y_test)))

    def describe(self) -> str:
        if self.classifies:
            return f"{self.data.n_classes} classes"
        k = self.data.n_outputs
        return f"regression of {k} real-valued target{'s' if k > 1 else ''} (scored by RMSE and R^2)"


# ---------------------------------------------------------------------------------------
# The steps of the job


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _device_arrays(device: str):
    """(to_device, to_host) for --device."""
    import fastntk as nt

    if device == "cpu":
        return (lambda a: a), (lambda a: a)
    if not nt.has_cuda():
        note = nt.build_info().get("cuda_note", "")
        raise CliError(
            f"--device {device}: fastntk.has_cuda() is False: this fastntk was built without the CUDA backend, "
            f"or finds no usable CUDA device ({note}); use --device cpu"
        )
    try:
        import cupy
    except ImportError:
        raise CliError(
            f"--device {device} needs CuPy (pip install cupy-cuda12x or cupy-cuda13x); it is not installed"
        ) from None
    return cupy.asarray, cupy.asnumpy


def _output_dir(given) -> pathlib.Path:
    """--out, created and checked before any work: a bad --out should not cost the run."""
    outdir = pathlib.Path(given)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        if not os.access(outdir, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise CliError(f"--out {outdir}: cannot write there ({e.strerror or e})") from None
    return outdir


def _kernel_regression(nt, task: Task, k_train, k_test, to_device, to_host) -> dict:
    """t = infinity: the test metric of NTK and NNGP regression (and R^2 for regression), and
    the NTK's training loss (0 when the NTK is positive definite: the flow interpolates)."""
    y_d = to_device(task.y)
    f = {
        g: to_host(nt.predict.kernel_regression(getattr(k_train, g), y_d, getattr(k_test, g)))
        for g in ("ntk", "nngp")
    }
    out = dict(metric={g: float(task.score(f[g])) for g in f})
    if not task.classifies:
        out["r2"] = {g: float(task.r2(f[g])) for g in f}
    out["loss"] = float(
        0.5 * np.mean((to_host(nt.predict.kernel_regression(k_train.ntk, y_d)) - task.y) ** 2)
    )
    return out


def _analytic_dynamics(nt, task: Task, k_train, k_test, lr, t_plot, to_device, to_host):
    """The infinitely wide network along the steps, in closed form: (test outputs, train loss)."""
    predict_fn = nt.predict.gradient_descent_mse(k_train.ntk, to_device(task.y), lr, discrete=True)
    f_train, f_test = predict_fn(t_plot, 0.0, 0.0, k_test.ntk)
    f_train, f_test = to_host(f_train), to_host(f_test)
    return f_test, 0.5 * ((f_train - task.y) ** 2).mean(axis=(1, 2))


def _finite_network(nt, net, task: Task, lr, t_plot, seed: int):
    """The finite network, centred (module docstring), trained by the same steps:
    (test outputs less the initial ones, train loss, seconds)."""
    xtr, xte = task.data.x_train, task.data.x_test
    params = net.init(seed, xtr.shape[1])
    f0_train, f0_test = net.apply(params, xtr), net.apply(params, xte)
    result, seconds = _timed(
        lambda: nt.train_mse(
            net, params, xtr, task.y + f0_train, t_plot, learning_rate=lr, x_test=xte, discrete=True
        )
    )
    return result.fx_test - f0_test, result.loss, seconds


def _print_table(out, task: Task, t_plot, t_table, ntk, net, inf: dict) -> None:
    name = "acc" if task.classifies else "RMSE"
    h1, h2 = f"NTK test {name}", f"network test {name}"
    w1, w2 = len(h1), len(h2)
    out(f"{'step t':>8}  {h1}  {h2}  {'NTK train loss':>14}  {'network train loss':>18}")
    for i in np.searchsorted(t_plot, t_table):
        out(
            f"{t_plot[i]:>8d}  {task.fmt(ntk['metric'][i]):>{w1}}  {task.fmt(net['metric'][i]):>{w2}}  "
            f"{ntk['loss'][i]:>14.4e}  {net['loss'][i]:>18.4e}"
        )
    out(f"{'inf':>8}  {task.fmt(inf['metric']['ntk']):>{w1}}  {'':>{w2}}  {inf['loss']:>14.4e}")
    if not task.classifies:
        out(
            f"test R^2: NTK regression (t = inf) {inf['r2']['ntk']:.4f}, NNGP {inf['r2']['nngp']:.4f}; at step "
            f"{t_plot[-1]}: NTK {ntk['r2'][-1]:.4f}, finite network {net['r2'][-1]:.4f}"
        )
    out("")


def _write_files(results: dict, outdir: pathlib.Path) -> list:
    try:
        png = outdir / "run.png"
        plot_run(results, png)
        js = outdir / "run.json"
        js.write_text(json.dumps(results, indent=1) + "\n")
    except OSError as e:
        raise CliError(f"--out {outdir}: cannot write there ({e.strerror or e})") from None
    return [str(png), str(js)]


# ---------------------------------------------------------------------------------------
# The job


def run(args, out=print) -> dict:
    """``fastntk run`` on parsed arguments; returns the results written to run.json, and
    ``files``, the paths written."""
    import fastntk as nt

    arch = parse_arch(args.arch)
    to_device, to_host = _device_arrays(args.device)
    outdir = _output_dir(args.out)
    data = load_data(args.data, label_column=args.label_column, test_fraction=args.test_fraction,
                     seed=args.seed, n_train=args.n_train, task=args.task)  # fmt: skip
    task = Task.of(data)
    xtr, xte = data.x_train, data.x_test
    n_train, n_test, d = xtr.shape[0], xte.shape[0], xtr.shape[1]
    net = arch.network(args.width, data.n_outputs)
    out(
        f"fastntk {nt.__version__}: {data.name}, {n_train} train / {n_test} test points, {d} features, {task.describe()}"
    )
    out(
        f"network: {arch.depth} hidden layers [Dense, {type(net.layers[1]).__name__}], ntk parameterization, "
        f"W_std {arch.W_std:.4g}, b_std {arch.b_std:.4g}; finite network: width {args.width}"
    )

    # A bar over the four stages (in a terminal, once the run has taken 2 s); lines printed
    # meanwhile go above it.
    progress = False if getattr(args, "quiet", False) or getattr(args, "no_progress", False) else None
    with progress_bar(4, "fastntk run", progress, "stage") as bar:
        return _stages(nt, args, arch, net, data, task, outdir, to_device, to_host, bar, _above(out))


def _above(out):
    def say(*a, **k):
        with printing():
            out(*a, **k)

    return say


def _stages(nt, args, arch, net, data, task, outdir, to_device, to_host, bar, out) -> dict:
    """The job after its inputs are read: kernels, kernel regression, the infinitely wide
    network's dynamics, the finite network's training; then the table and the files."""
    xtr, xte = data.x_train, data.x_test
    n_train, n_test, d = xtr.shape[0], xte.shape[0], xtr.shape[1]
    xtr_d, xte_d = to_device(xtr), to_device(xte)
    bar.set_postfix_str("kernels")
    (k_train, k_test), t_kernel = _timed(lambda: (net.kernel(xtr_d), net.kernel(xte_d, xtr_d)))
    bar.update(1)
    out(
        f"kernels: NNGP and NTK, train ({n_train} x {n_train}) and test-train ({n_test} x {n_train}) in "
        f"{t_kernel:.3f} s ({args.device}, {nt.get_num_threads()} threads)"
    )
    bar.set_postfix_str("kernel regression")
    inf = _kernel_regression(nt, task, k_train, k_test, to_device, to_host)
    bar.update(1)
    what = "test accuracy" if task.classifies else "test RMSE"
    out(
        f"kernel regression (t = inf): {what} NTK {task.fmt(inf['metric']['ntk'])}, NNGP {task.fmt(inf['metric']['nngp'])}"
    )

    lr_max = nt.predict.max_learning_rate(k_train.ntk, task.y.size)
    lr = lr_max / 2 if args.learning_rate is None else args.learning_rate
    t_plot, t_table = time_grid(args.steps)
    bar.set_postfix_str("NTK dynamics")
    f_ntk, ntk_loss = _analytic_dynamics(nt, task, k_train, k_test, lr, t_plot, to_device, to_host)
    bar.update(1)
    bar.set_postfix_str("finite network")
    out(
        f"training the finite network for {args.steps} steps at learning rate {lr:.4g} (max_learning_rate {lr_max:.4g}) ..."
    )
    f_net, net_loss, t_train = _finite_network(nt, net, task, lr, t_plot, args.seed)
    bar.update(1)
    bar.close()
    out(f"trained in {t_train:.3g} s")
    out("")
    ntk = dict(metric=task.score(f_ntk), loss=ntk_loss)
    fin = dict(metric=task.score(f_net), loss=net_loss)
    if not task.classifies:
        ntk["r2"], fin["r2"] = task.r2(f_ntk), task.r2(f_net)
    _print_table(out, task, t_plot, t_table, ntk, fin, inf)

    m = task.metric
    results = dict(
        version=nt.__version__, task=data.task, data=data.name, n_train=n_train, n_test=n_test, n_features=d,
        n_classes=data.n_classes, n_outputs=data.n_outputs, arch=str(arch), activation=arch.activation,
        depth=arch.depth, W_std=arch.W_std, b_std=arch.b_std, width=args.width, seed=args.seed,
        device=args.device, threads=nt.get_num_threads(), learning_rate=lr, max_learning_rate=lr_max,
        kernel_seconds=t_kernel, train_seconds=t_train, t=t_plot.tolist(),
        **{f"ntk_test_{m}": ntk["metric"].tolist(), f"network_test_{m}": fin["metric"].tolist()},
        ntk_train_loss=ntk_loss.tolist(), network_train_loss=net_loss.tolist(),
        **{f"kernel_regression_test_{m}": inf["metric"]}, kernel_regression_train_loss=inf["loss"],
    )  # fmt: skip
    if task.classifies:
        results["chance_accuracy"] = task.baseline()
    else:
        results.update(
            mean_baseline_rmse=task.baseline(), ntk_test_r2=ntk["r2"].tolist(), network_test_r2=fin["r2"].tolist(),
            kernel_regression_test_r2=inf["r2"],
        )  # fmt: skip
    results["files"] = _write_files(results, outdir)
    return results
