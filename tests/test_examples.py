"""The example scripts (examples/*.py) with small settings: each runs, writes its figure, and
its numbers agree with an independent NumPy computation (tests/reference.py's kernels,
explicit solves) or with what the theory says for its setting.
"""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from reference import ntk_gram_ref

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def example():
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


def assert_png(path):
    path = pathlib.Path(path)
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_MAGIC, path


def _dense(W_std, b_std):
    return ("dense", dict(W_std=W_std, b_std=b_std, parameterization="ntk", out_dim=None))


def test_ntk_regression(example, tmp_path):
    """Predictions equal (K + ridge I)^-1 solved in NumPy on tests/reference.py's kernels of
    the standardized data; the kernels beat a linear model on Friedman #1 (nonlinear in 5 of
    its 10 inputs; measured over seeds 0-4 at N = 300, depth 2: NTK R^2 0.79-0.85, linear
    0.62-0.73, the NTK ahead by 0.06-0.20)."""
    m = example("ntk_regression")
    x, y = m.load(n_samples=300, seed=0)
    r = m.run(x, y, depth=2, seed=0, out=tmp_path)
    assert_png(r["png"])
    i_train, i_test = r["split"]
    mean, std = x[i_train].mean(0), x[i_train].std(0)
    a, b = (x[i_train] - mean) / std, (x[i_test] - mean) / std
    y_mean, y_std = y[i_train].mean(), y[i_train].std()
    relu = ("abrelu", dict(a=0.0, b=1.0))
    d = _dense(np.sqrt(2.0), 0.05)
    spec = [d, relu, d, relu, d]
    k = dict(zip(("nngp", "ntk"), ntk_gram_ref(spec, a)))
    kt = dict(zip(("nngp", "ntk"), ntk_gram_ref(spec, b, a)))
    for g in ("ntk", "nngp"):
        scale = np.trace(k[g]) / len(a)
        assert any(np.isclose(r["ridge"][g], c * scale, rtol=1e-12) for c in m.RIDGES), g
        alpha = np.linalg.solve(k[g] + r["ridge"][g] * np.eye(len(a)), (y[i_train] - y_mean) / y_std)
        np.testing.assert_allclose(r["pred"][g], kt[g] @ alpha * y_std + y_mean, rtol=1e-8, atol=1e-8 * y_std)
        assert r["r2"][g] > max(r["r2"]["linear"] + 0.03, 0.7), (g, r["r2"])


def test_ntk_regression_loads_csv_and_npz(example, tmp_path):
    m = example("ntk_regression")
    x = np.arange(12.0).reshape(4, 3)
    y = np.array([1.5, -2.0, 0.25, 4.0])
    (tmp_path / "d.csv").write_text(
        "p,price,q,r\n" + "".join(f"{a},{t},{b},{c}\n" for (a, b, c), t in zip(x, y))
    )
    got_x, got_y = m.load(tmp_path / "d.csv", target="price")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    np.savez(tmp_path / "d.npz", x=x, y=y[:, None])
    got_x, got_y = m.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_training_dynamics(example, tmp_path):
    """Network and NTK prediction start from the same f_0 (equal at t = 0), and the wide
    network follows the prediction: their training losses differ by O(1/sqrt(width)) of the
    initial loss. Measured over seeds 0-15 (these settings), sqrt(width) * max_t |difference|
    / initial loss was 0.04-0.99 at width 16 and 0.03-0.80 at width 1024; the bound takes
    2.0 at width 1024, where a wrong time scale or learning rate gives O(1) * sqrt(1024).
    The width-1024 network's loss fell to 0.004-0.04 of its initial value over seeds 0-9."""
    m = example("training_dynamics")
    r = m.run(widths=(16, 1024), steps=100, out=tmp_path)
    assert_png(r["png"])
    assert r["t"][0] == 0 and r["t"][-1] == 100
    for c in r["loss"].values():
        (net_train, net_test), (ntk_train, ntk_test) = c["network"], c["ntk"]
        assert net_train[0] == pytest.approx(ntk_train[0], rel=1e-12)
        assert net_test[0] == pytest.approx(ntk_test[0], rel=1e-12)
    (net_train, _), (ntk_train, _) = r["loss"][1024]["network"], r["loss"][1024]["ntk"]
    gap = np.max(np.abs(net_train - ntk_train)) / ntk_train[0]
    assert gap * np.sqrt(1024) <= 2.0, gap
    assert net_train[-1] < 0.2 * net_train[0]


def test_ensemble_uncertainty(example, tmp_path):
    """The mean and covariance at t = inf against the closed form of the infinite ensemble
    (all layers trained) with A = NTK + diag_reg * trace(NTK)/N * I, computed in NumPy from
    tests/reference.py's kernels:
    mean Theta_xX A^-1 y; cov K_xx + Theta_xX A^-1 K_XX A^-1 Theta_Xx - (Theta_xX A^-1 K_Xx + T).
    The band tightens with t and stays open away from the data."""
    m = example("ensemble_uncertainty")
    r = m.run(n_train=6, n_test=40, times=(1.0, 100.0), out=tmp_path)
    assert_png(r["png"])
    x, y, xt = r["x_train"], r["y_train"], r["x_test"]
    d, erf = _dense(1.5, 1.0), ("erf", dict(a=1.0, b=1.0, c=0.0))
    spec = [d, erf, d, erf, d]
    k, theta = ntk_gram_ref(spec, x)
    kt, theta_t = ntk_gram_ref(spec, xt, x)
    ktt, _ = ntk_gram_ref(spec, xt)
    a = theta + 1e-4 * np.trace(theta) / len(x) * np.eye(len(x))
    h = np.linalg.solve(a, theta_t.T)  # A^-1 Theta_Xx
    mean = h.T @ y
    cross = theta_t @ np.linalg.solve(a, kt.T)
    cov = ktt + h.T @ k @ h - cross - cross.T
    np.testing.assert_allclose(r["mean"][-1], mean[:, 0], atol=1e-8)
    np.testing.assert_allclose(r["cov_inf"], cov, atol=1e-8 * np.abs(ktt).max())
    np.testing.assert_allclose(r["std"][-1], np.sqrt(np.maximum(np.diag(cov), 0)), atol=1e-6)
    avg = r["std"].mean(axis=1)
    assert avg[0] > avg[1] > avg[2], avg  # t = 1, 100, inf
    beyond = np.abs(xt[:, 0]) > np.abs(x).max() + 1.0  # test points far from every training point
    assert r["std"][-1][beyond].min() > 10 * r["std"][-1][~beyond].min()


@pytest.mark.parametrize(
    "name, args, png",
    [
        ("ntk_regression", ["--n-samples", "200", "--depth", "2"], "ntk_regression.png"),
        ("training_dynamics", ["--widths", "16", "--steps", "20", "--n-train", "8"], "training_dynamics.png"),
        (
            "ensemble_uncertainty",
            ["--n-train", "5", "--n-test", "30", "--times", "10"],
            "ensemble_uncertainty.png",
        ),
    ],
)
def test_command_line(tmp_path, name, args, png):
    """Each script as a researcher runs it: a subprocess, --out, a figure, no warnings."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / f"{name}.py"), *args, "--out", str(tmp_path / "figs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert_png(tmp_path / "figs" / png)
    assert f"wrote {tmp_path / 'figs' / png}" in proc.stdout
