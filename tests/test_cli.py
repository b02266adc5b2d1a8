"""The ``fastntk`` command (fastntk.cli), run as users run it: ``python -m fastntk ...`` in a
subprocess (the console script ``fastntk`` calls the same ``fastntk.cli:main``).

- ``run`` end to end on the bundled digits with small settings, and on a .npz whose numbers
  are checked against an independent NumPy computation (tests/reference.py's kernels, an
  explicit eigendecomposition for the gradient-descent steps);
- bad files and options: one line on stderr, a non-zero exit, no traceback;
- ``info``, ``bench`` (quick, and ``--full`` on a stand-in suite), ``--device gpu``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastntk as nt
from fastntk import cli

from reference import ntk_gram_ref

ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Small settings of `fastntk run` (seconds): enough points and steps that the accuracy is
# far above chance (measured: NTK regression ~96 %, the finite network ~80 % at step 30).
SMALL = ["--n-train", "300", "--width", "64", "--steps", "30"]


def fastntk(*args, cwd=None, timeout=120):
    """``python -m fastntk *args`` -> CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "fastntk", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def assert_png(path):
    path = pathlib.Path(path)
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_MAGIC, path


def assert_one_line_error(proc, *phrases):
    """A failure as the house wants it: non-zero exit, exactly one line on stderr, no traceback."""
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert lines[0].startswith("fastntk"), lines[0]
    for p in phrases:
        assert p in lines[0], (p, lines[0])


# ---------------------------------------------------------------------------------------
# fastntk run


def test_run_on_digits_end_to_end(tmp_path):
    out = tmp_path / "results"
    proc = fastntk("run", *SMALL, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert_png(out / "run.png")
    r = json.loads((out / "run.json").read_text())
    assert r["data"].startswith("digits") and r["n_classes"] == 10 and r["n_features"] == 64
    assert r["n_train"] == 300 and r["n_test"] == 540  # 30 % of 1797, as the default split says
    chance = r["chance_accuracy"]
    assert 0.09 < chance < 0.12  # digits' classes are balanced
    # Accuracy above chance by a wide margin: the kernels, the closed-form dynamics, the
    # trained network.
    assert r["kernel_regression_test_accuracy"]["ntk"] > chance + 0.75
    assert r["kernel_regression_test_accuracy"]["nngp"] > chance + 0.75
    assert r["ntk_test_accuracy"][-1] > chance + 0.7
    assert r["network_test_accuracy"][-1] > chance + 0.5
    assert r["t"][0] == 0 and r["t"][-1] == 30
    # The table printed: a row per step of 0, 1, 3, 10, 30 and t = inf; then the files.
    table_rows = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert table_rows[-5:] == ["0", "1", "3", "10", "30"]
    assert f"wrote {out / 'run.png'}" in proc.stdout and f"wrote {out / 'run.json'}" in proc.stdout


def _digits_npz(path, n_train, n_test, seed=1):
    """A .npz with the CLI's layout from a random part of digits (labels as 1-D ints)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(seed).permutation(len(y))[: n_train + n_test]
    np.savez(path, x_train=x[idx[:n_train]], y_train=y[idx[:n_train]], x_test=x[idx[n_train:]],
             y_test=y[idx[n_train:]])  # fmt: skip
    return x[idx[:n_train]], y[idx[:n_train]], x[idx[n_train:]], y[idx[n_train:]]


def test_run_numbers_match_an_independent_computation(tmp_path):
    """The run's NTK accuracies, losses and learning rate, recomputed in plain NumPy from the
    documented conventions: standardize with the training statistics, one-hot targets,
    learning rate n / lambda_max (max_learning_rate / 2, n = Y.size), discrete steps
    f_t = (I - (I - lr Theta / n)^t) Y on the training set from zero outputs."""
    x_tr, y_tr, x_te, y_te = _digits_npz(tmp_path / "d.npz", 150, 100)
    proc = fastntk("run", "--data", tmp_path / "d.npz", "--arch", "erf:2", "--width", "32", "--steps", "10",
                   "--out", tmp_path / "o", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # --quiet: only the files written.
    assert proc.stdout.split() == [str(tmp_path / "o" / "run.png"), str(tmp_path / "o" / "run.json")]
    r = json.loads((tmp_path / "o" / "run.json").read_text())

    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1
    a, b = (x_tr - mean) / std, (x_te - mean) / std
    dense = ("dense", dict(W_std=1.0, b_std=0.05, parameterization="ntk", out_dim=None))  # erf's defaults
    spec = [dense, ("erf", dict(a=1.0, b=1.0, c=0.0)), dense, ("erf", dict(a=1.0, b=1.0, c=0.0)), dense]
    nngp, ntk = ntk_gram_ref(spec, a)
    nngp_t, ntk_t = ntk_gram_ref(spec, b, a)
    Y = np.eye(10)[y_tr]
    n = Y.size
    lam, vecs = np.linalg.eigh(ntk)
    lr = n / lam[-1]
    assert r["learning_rate"] == pytest.approx(lr, rel=1e-9)
    assert r["max_learning_rate"] == pytest.approx(2 * lr, rel=1e-6)  # eps=1e-12 in the denominator
    ts = np.asarray(r["t"])
    assert ts[0] == 0 and ts[-1] == 10
    acc, loss = [], []
    for t in ts:
        moved = vecs @ np.diag(1 - (1 - lr * lam / n) ** t) @ vecs.T  # I - (I - lr Theta / n)^t
        alpha = np.linalg.solve(ntk, moved @ Y)  # Theta^-1 (I - ...) Y
        acc.append(np.mean(np.argmax(ntk_t @ alpha, 1) == y_te))
        loss.append(0.5 * np.mean((moved @ Y - Y) ** 2))
    # Accuracies: counts of argmax agreements; a near-tie could flip one point by round-off.
    np.testing.assert_allclose(r["ntk_test_accuracy"], acc, atol=1.01 / len(y_te))
    np.testing.assert_allclose(r["ntk_train_loss"], loss, rtol=1e-7)
    for g, (k, kt) in {"ntk": (ntk, ntk_t), "nngp": (nngp, nngp_t)}.items():
        want = np.mean(np.argmax(kt @ np.linalg.solve(k, Y), 1) == y_te)
        assert abs(r["kernel_regression_test_accuracy"][g] - want) <= 1.01 / len(y_te), g
    # The centred finite network starts from zero outputs, like the analytic curve: at t = 0
    # both losses are 0.5 * mean(Y^2) = 0.5 / classes and both predict class 0 everywhere.
    assert r["network_train_loss"][0] == pytest.approx(0.5 / 10, rel=1e-12)
    assert r["network_test_accuracy"][0] == pytest.approx(np.mean(y_te == 0))
    assert r["network_train_loss"][-1] < 0.7 * r["network_train_loss"][0]  # and it trains


def test_run_on_a_csv_with_string_labels(tmp_path):
    """A CSV with a header, the label column named 'label' in the middle, words as labels:
    three well-separated Gaussian blobs, split 70/30 here."""
    rng = np.random.default_rng(0)
    centres = {"cat": (3, 0, 0), "dog": (0, 3, 0), "eel": (0, 0, 3)}
    lines = ["f1,label,f2,f3"]
    for name, c in centres.items():
        for p in rng.standard_normal((30, 3)) * 0.5 + c:
            lines.append(f"{p[0]},{name},{p[1]},{p[2]}")
    (tmp_path / "blobs.csv").write_text("\n".join(lines) + "\n")
    proc = fastntk(
        "run", "--data", tmp_path / "blobs.csv", "--width", "16", "--steps", "3", "--out", tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "run.json").read_text())
    assert (r["n_classes"], r["n_features"], r["n_train"] + r["n_test"], r["n_test"]) == (3, 3, 90, 27)
    assert r["kernel_regression_test_accuracy"]["ntk"] > 0.9
    assert_png(tmp_path / "run.png")


def test_load_data_conventions(tmp_path):
    """In-process: label column by name and by index, one-hot and string labels in a .npz,
    standardization with the training statistics (constant features only centred)."""
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,target\n1,5,x\n2,5,y\n3,5,x\n4,5,y\n5,5,x\n6,5,y\n7,5,x\n8,5,y\n")
    d = cli.load_data(csv, test_fraction=0.25)
    assert d.x_train.shape == (6, 2) and d.x_test.shape == (2, 2) and list(d.classes) == ["x", "y"]
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(d.x_train[:, 0].std(), 1, rtol=1e-12)
    assert np.all(d.x_train[:, 1] == 0) and np.all(d.x_test[:, 1] == 0)  # b is constant
    # The label column by name (first here), by index, and the last column without a header.
    (tmp_path / "k.csv").write_text(
        "".join(f"{'xy'[i % 2]},{i}\n" for i in range(8)).replace("x,0", "kind,a\nx,0", 1)
    )
    d = cli.load_data(tmp_path / "k.csv", label_column="kind", test_fraction=0.25)
    assert list(d.classes) == ["x", "y"] and d.x_train.shape == (6, 1)
    d = cli.load_data(tmp_path / "k.csv", label_column="-2", test_fraction=0.25)  # 'kind', by index
    assert list(d.classes) == ["x", "y"]
    (tmp_path / "n.csv").write_text("".join(f"{i},{i * i},{i % 3}\n" for i in range(9)))
    d = cli.load_data(tmp_path / "n.csv", test_fraction=1 / 3)
    assert list(d.classes) == [0, 1, 2] and d.x_train.shape == (6, 2)

    x_tr = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 7.0]])
    x_te = np.array([[1.0, 1.0]])
    np.savez(tmp_path / "o.npz", x_train=x_tr, y_train=np.eye(3)[[2, 0, 1]], x_test=x_te,
             y_test=np.array([[0, 0, 1]]))  # fmt: skip
    d = cli.load_data(tmp_path / "o.npz")
    assert list(d.y_train) == [2, 0, 1] and list(d.y_test) == [2]
    mean, std = x_tr.mean(0), x_tr.std(0)
    np.testing.assert_allclose(d.x_test, (x_te - mean) / std, rtol=1e-14)
    np.savez(tmp_path / "s.npz", x_train=x_tr, y_train=np.array(["b", "a", "b"]), x_test=x_te,
             y_test=np.array(["a"]))  # fmt: skip
    d = cli.load_data(tmp_path / "s.npz")
    assert list(d.classes) == ["a", "b"] and list(d.y_train) == [1, 0, 1] and list(d.y_test) == [0]


def test_arch_builds_the_documented_network():
    """--arch ACT:DEPTH[:W_STD[:B_STD]] -> DEPTH x [Dense, ACT] + Dense, ntk parameterization;
    its kernel is that of the same spec in tests/reference.py."""
    arch = cli.parse_arch("relu:3")
    assert (arch.activation, arch.depth, arch.W_std, arch.b_std) == ("relu", 3, math.sqrt(2), 0.05)
    arch = cli.parse_arch("erf:2:1.3:0.2")
    net = arch.network(16, 4)
    assert [type(layer).__name__ for layer in net.layers] == ["Dense", "Erf", "Dense", "Erf", "Dense"]
    assert [layer.out_dim for layer in net.layers[::2]] == [16, 16, 4]
    x = np.random.default_rng(0).standard_normal((7, 3))
    dense = ("dense", dict(W_std=1.3, b_std=0.2, parameterization="ntk", out_dim=None))
    erf = ("erf", dict(a=1.0, b=1.0, c=0.0))
    want = ntk_gram_ref([dense, erf, dense, erf, dense], x)
    got = net.kernel(x)
    np.testing.assert_allclose(got.nngp, want[0], rtol=1e-12)
    np.testing.assert_allclose(got.ntk, want[1], rtol=1e-12)


@pytest.mark.parametrize("steps", [0, 1, 30, 300, 1000, 7])
def test_time_grid(steps):
    plot, table = cli.time_grid(steps)
    assert plot[0] == 0 and plot[-1] == steps and np.all(np.diff(plot) > 0)
    assert set(table) <= set(plot)
    expected = [0] + [v for v in (1, 3, 10, 30, 100, 300, 1000) if v < steps] + ([steps] if steps else [])
    assert list(table) == expected


# ---------------------------------------------------------------------------------------
# Errors: one line, non-zero exit, no traceback


def _bad_files(tmp: pathlib.Path) -> dict:
    """name -> (path, a phrase the message must contain)."""
    (tmp / "text.npz").write_text("hello")
    np.savez(tmp / "missing.npz", x_train=np.zeros((3, 2)))
    ok = dict(
        x_train=np.ones((4, 2)),
        y_train=np.array([0, 1, 0, 1]),
        x_test=np.ones((2, 2)),
        y_test=np.array([0, 1]),
    )
    np.savez(tmp / "nan.npz", **{**ok, "x_train": np.array([[1, 2], [np.nan, 0], [1, 1], [0, 0]])})
    np.savez(tmp / "features.npz", **{**ok, "x_test": np.ones((2, 3))})
    np.savez(tmp / "one_class.npz", **{**ok, "y_train": np.zeros(4, int), "y_test": np.zeros(2, int)})
    np.savez(tmp / "unseen.npz", **{**ok, "y_test": np.array([0, 7])})
    np.savez(tmp / "shape.npz", **{**ok, "y_train": np.array([0, 1, 0])})
    np.savez(tmp / "objects.npz", **{**ok, "y_train": np.array([0, 1, None, 1], dtype=object)})
    (tmp / "word.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n")
    (tmp / "ragged.csv").write_text("1,2,0\n3,4\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "data.txt").write_text("1,2,3\n")
    (tmp / "folder.csv").mkdir()
    (tmp / "blank_label.csv").write_text("a,b,label\n1,2,x\n\n3,4,y\n5,6,\n7,8,x\n9,1,y\n")
    np.savez(tmp / "blank_label.npz", **{**ok, "y_train": np.array(["x", "y", " ", "x"])})
    np.savez(tmp / "two_d.npz", **{**ok, "y_test": np.ones((2, 3))})
    return {
        "no such file": (tmp / "absent.npz", "no such file"),
        "not a zip": (tmp / "text.npz", "not a .npz"),
        "missing arrays": (tmp / "missing.npz", "missing arrays"),
        "NaN": (tmp / "nan.npz", "NaN"),
        "feature mismatch": (tmp / "features.npz", "features"),
        "one class": (tmp / "one_class.npz", "at least 2 classes"),
        "unseen label": (tmp / "unseen.npz", "labels that y_train lacks"),
        "label shape": (tmp / "shape.npz", "y_train must have shape"),
        "object array": (tmp / "objects.npz", "pickle"),
        "word in csv": (tmp / "word.csv", "'oops' is not a number"),
        "ragged csv": (tmp / "ragged.csv", "line 2 has 2 columns"),
        "empty csv": (tmp / "empty.csv", "empty"),
        "extension": (tmp / "data.txt", "unsupported file type"),
        "directory": (tmp / "folder.csv", "is a directory"),
        "empty label in csv": (tmp / "blank_label.csv", "line 5, label: the label is empty"),
        "empty label in npz": (tmp / "blank_label.npz", "y_train has an empty label (first at index 2)"),
        "target columns": (tmp / "two_d.npz", "their columns must agree"),
    }


def test_bad_files_give_one_line(tmp_path):
    for name, (path, phrase) in _bad_files(tmp_path).items():
        proc = fastntk("run", "--data", path, "--out", tmp_path / "o")
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
        assert_one_line_error(proc, phrase)
        assert str(path) in proc.stderr, name


@pytest.mark.parametrize(
    "args, phrase, code",
    [
        (["run", "--arch", "tanh:3"], "unknown activation 'tanh'", 2),
        (["run", "--arch", "relu"], "ACT:DEPTH", 2),
        (["run", "--arch", "relu:0"], "DEPTH must be an integer from 1", 2),
        (["run", "--arch", "relu:3:0"], "W_STD must be a finite number > 0", 2),
        (["run", "--arch", "relu:3:1:-1"], "B_STD must be a finite number >= 0", 2),
        (["run", "--width", "0"], "--width: must be a positive integer", 2),
        (["run", "--steps", "-1"], "--steps: must be a non-negative integer", 2),
        (["run", "--test-fraction", "1"], "--test-fraction", 2),
        (["run", "--learning-rate", "nan"], "--learning-rate", 2),
        (["run", "--device", "tpu"], "invalid choice: 'tpu'", 2),
        (["run", "--bogus"], "unrecognized arguments: --bogus", 2),
        (["frobnicate"], "invalid choice: 'frobnicate'", 2),
        ([], "choose a command", 2),
        (["bench", "--full", "--bench-dir", "/nonexistent/bench"], "no such folder", 2),
    ],
)
def test_bad_options_give_one_line(args, phrase, code):
    proc = fastntk(*args)
    assert proc.returncode == code, proc.stderr
    assert_one_line_error(proc, phrase)


def test_unwritable_out(tmp_path):
    """--out naming a file: refused before any work, one line."""
    (tmp_path / "file").write_text("")
    proc = fastntk("run", *SMALL, "--out", tmp_path / "file")
    assert_one_line_error(proc, "--out", "cannot write there")


@pytest.mark.skipif(nt.has_cuda(), reason="this build has the CUDA backend")
def test_device_gpu_without_cuda(tmp_path):
    proc = fastntk("run", "--device", "gpu", "--out", tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, "--device gpu", "without the CUDA backend", "--device cpu")
    assert not (tmp_path / "run.json").exists()


# ---------------------------------------------------------------------------------------
# fastntk info, bench; the entry point


def test_info():
    proc = fastntk("info", "--json")
    assert proc.returncode == 0, proc.stderr
    reported = json.loads(proc.stdout)
    for key, value in nt.build_info().items():  # what this process's build says
        assert reported[key] == value, key
    assert reported["threads"] == nt.get_num_threads()
    plain = fastntk("info")
    assert plain.returncode == 0
    lines = dict(line.split(None, 1) for line in plain.stdout.splitlines())
    assert lines["version"] == nt.__version__ and lines["cuda"] == str(nt.has_cuda())


def test_bench_quick(tmp_path):
    proc = fastntk("bench", "--quick", "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(r["N"], r["d"]) for r in rows] == [(1000, 16), (1000, 784)]
    for r in rows:
        for key in ("fastntk_s", "numpy_gemm_s", "own_gemm_s"):
            assert 0 < r[key] < 10, (key, r)
        assert r["vs_numpy_gemm"] == pytest.approx(r["fastntk_s"] / r["numpy_gemm_s"])
        assert r["pair_layers_per_s"] == pytest.approx(1000 * 1001 / 2 * 5 / r["fastntk_s"])
    assert "fastntk/GEMM" in proc.stdout and "Full suite" in proc.stdout


def test_bench_full_runs_the_suite_scripts_in_order(tmp_path):
    """--full runs bench_kernels, bench_predict, bench_empirical, then the other bench_*.py
    (sorted), from the repository root, passing --quick; a failing script stops it."""
    bench = tmp_path / "bench"
    bench.mkdir()
    log = tmp_path / "log.txt"
    for name in (
        "bench_zeta.py",
        "bench_empirical.py",
        "bench_kernels.py",
        "bench_alpha.py",
        "bench_predict.py",
    ):
        (bench / name).write_text(
            "import os, sys\n"
            f"open({str(log)!r}, 'a').write({name!r} + ' ' + ' '.join(sys.argv[1:]) + ' ' + os.getcwd() + '\\n')\n"
        )
    (bench / "_common.py").write_text("raise SystemExit('not a benchmark')\n")
    proc = fastntk("bench", "--full", "--quick", "--bench-dir", bench)
    assert proc.returncode == 0, proc.stderr
    runs = [line.split() for line in log.read_text().splitlines()]
    assert [r[0] for r in runs] == ["bench_kernels.py", "bench_predict.py", "bench_empirical.py", "bench_alpha.py",
                                    "bench_zeta.py"]  # fmt: skip
    assert all(r[1] == "--quick" and pathlib.Path(r[2]) == tmp_path for r in runs)

    (bench / "bench_predict.py").write_text("raise SystemExit(3)\n")
    proc = fastntk("bench", "--full", "--bench-dir", bench)
    assert_one_line_error(proc, "bench_predict.py failed with exit status 3")


def test_entry_point_is_cli_main(tmp_path):
    """pyproject's console script names fastntk.cli:main, which reads sys.argv and returns
    the exit status (the generated script does sys.exit(main()))."""
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})
    assert scripts.get("fastntk") == "fastntk.cli:main", scripts
    module, attr = scripts["fastntk"].split(":")
    assert getattr(importlib.import_module(module), attr) is cli.main
    wrapper = (
        "import sys; from fastntk.cli import main; sys.argv = ['fastntk', 'info', '--json']; sys.exit(main())"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["version"] == nt.__version__
    bad = wrapper.replace("'info', '--json'", "'run', '--arch', 'x'")
    proc = subprocess.run([sys.executable, "-c", bad], capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "--arch")
    # Where the package is installed with its scripts, the command itself.
    script = pathlib.Path(sys.executable).with_name("fastntk")
    if not script.exists():
        script = shutil.which("fastntk")
    if script is None:
        pytest.skip("the fastntk console script is not installed (reinstall after the pyproject change)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastntk {nt.__version__}"


def test_help_and_version():
    proc = fastntk("--help")
    assert proc.returncode == 0 and all(c in proc.stdout for c in ("run", "bench", "info"))
    proc = fastntk("run", "--help")
    assert proc.returncode == 0 and "--data" in proc.stdout and "--device" in proc.stdout
    proc = fastntk("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastntk {nt.__version__}"


def test_warnings_are_one_line(tmp_path):
    """A learning rate above the stable maximum: predict's LearningRateWarning as one line,
    the run still completes (a few steps do not overflow)."""
    proc = fastntk("run", "--n-train", "60", "--width", "8", "--steps", "2", "--learning-rate", "1000",
                   "--out", tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastntk: warning: LearningRateWarning"), proc.stderr
    assert os.path.exists(tmp_path / "run.png")


# ---------------------------------------------------------------------------------------
# Real-valued targets: a regression, chosen from the data and said in the output


def _regression_npz(path, n_train=40, n_test=15, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -3.0]
    y = np.column_stack([np.sin(x[:, 0]) + 0.3 * x[:, 1], 10.0 + 2.0 * x[:, 2]])  # two targets
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_run_regresses_real_targets_as_an_independent_computation_says(tmp_path):
    """Real-valued targets: the output says regression; the RMSE and R^2 of NTK regression
    and of the closed-form steps are those of plain NumPy with the documented conventions
    (inputs and targets standardized with the training statistics, predictions mapped back)."""
    x_tr, y_tr, x_te, y_te = _regression_npz(tmp_path / "r.npz")
    proc = fastntk("run", "--data", tmp_path / "r.npz", "--arch", "relu:2:1.3:0.2", "--width", "16",
                   "--steps", "30", "--out", tmp_path / "o")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "regression of 2 real-valued targets" in proc.stdout.splitlines()[0]
    assert "test RMSE" in proc.stdout and "R^2" in proc.stdout
    r = json.loads((tmp_path / "o" / "run.json").read_text())
    assert (r["task"], r["n_outputs"], r["n_classes"]) == ("regression", 2, 0)

    mean, std = x_tr.mean(0), x_tr.std(0)
    a, b = (x_tr - mean) / std, (x_te - mean) / std
    y_mean, y_std = y_tr.mean(0), y_tr.std(0)
    Y = (y_tr - y_mean) / y_std
    dense = ("dense", dict(W_std=1.3, b_std=0.2, parameterization="ntk", out_dim=None))
    relu = ("abrelu", dict(a=0.0, b=1.0))
    spec = [dense, relu, dense, relu, dense]
    nngp, ntk = ntk_gram_ref(spec, a)
    nngp_t, ntk_t = ntk_gram_ref(spec, b, a)

    def rmse_r2(f):
        pred = f * y_std + y_mean
        r2 = 1 - ((pred - y_te) ** 2).sum(0) / ((y_te - y_te.mean(0)) ** 2).sum(0)
        return np.sqrt(np.mean((pred - y_te) ** 2)), r2.mean()

    for g, (k, kt) in {"ntk": (ntk, ntk_t), "nngp": (nngp, nngp_t)}.items():
        rmse, r2 = rmse_r2(kt @ np.linalg.solve(k, Y))
        assert r["kernel_regression_test_rmse"][g] == pytest.approx(rmse, rel=1e-7), g
        assert r["kernel_regression_test_r2"][g] == pytest.approx(r2, rel=1e-7), g
    lam, vecs = np.linalg.eigh(ntk)
    lr = Y.size / lam[-1]
    assert r["learning_rate"] == pytest.approx(lr, rel=1e-9)
    for i, t in enumerate(r["t"]):
        moved = vecs @ np.diag(1 - (1 - lr * lam / Y.size) ** t) @ vecs.T
        rmse, r2 = rmse_r2(ntk_t @ np.linalg.solve(ntk, moved @ Y))
        assert r["ntk_test_rmse"][i] == pytest.approx(rmse, rel=1e-7), t
        assert r["ntk_test_r2"][i] == pytest.approx(r2, rel=1e-7, abs=1e-9), t
    # Zero outputs predict the training mean: the baseline, at t = 0 for both curves.
    baseline = np.sqrt(np.mean((y_tr.mean(0) - y_te) ** 2))
    assert r["mean_baseline_rmse"] == pytest.approx(baseline, rel=1e-12)
    assert r["network_test_rmse"][0] == pytest.approx(baseline, rel=1e-9)
    assert r["network_test_rmse"][-1] < 0.8 * baseline  # the finite network learns
    assert_png(tmp_path / "o" / "run.png")


def test_real_targets_in_a_csv_and_the_task_option(tmp_path):
    """A CSV target column of real numbers is regressed (not one class per value); integer
    targets are classes unless --task regression; --task classification refuses real targets."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 2))
    lines = ["u,v,target"] + [f"{a},{b},{a - 0.5 * b + 0.01 * i:.6f}" for i, (a, b) in enumerate(x)]
    (tmp_path / "real.csv").write_text("\n".join(lines) + "\n")
    d = cli.load_data(tmp_path / "real.csv")
    assert d.task == "regression" and d.classes is None and d.y_train.shape == (21, 1)
    ints = ["u,v,target"] + [f"{a},{b},{i % 3}" for i, (a, b) in enumerate(x)]
    (tmp_path / "ints.csv").write_text("\n".join(ints) + "\n")
    assert cli.load_data(tmp_path / "ints.csv").task == "classification"
    d = cli.load_data(tmp_path / "ints.csv", task="regression")
    assert d.task == "regression" and set(np.unique(d.y_train)) <= {0.0, 1.0, 2.0}
    # Integers with more than 20 values and under 3 points per value: a quantity, regressed
    # (30 values over 30 points); classified on request, and then the test set has unseen labels.
    counts = ["u,v,target"] + [f"{a},{b},{100 + 7 * i}" for i, (a, b) in enumerate(x)]
    (tmp_path / "counts.csv").write_text("\n".join(counts) + "\n")
    assert cli.load_data(tmp_path / "counts.csv").task == "regression"
    proc = fastntk("run", "--data", tmp_path / "counts.csv", "--task", "classification", "--out", tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, "labels that y_train lacks", "use --task regression")
    # 21 values over 63 points (3 each): classes.
    (tmp_path / "classes.csv").write_text("".join(f"{i},{i % 21}\n" for i in range(63)))
    assert cli.load_data(tmp_path / "classes.csv").task == "classification"

    proc = fastntk("run", "--data", tmp_path / "real.csv", "--task", "classification", "--out", tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, "cannot be classified", "--task regression")
    (tmp_path / "words.csv").write_text("a,label\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(8)))
    proc = fastntk("run", "--data", tmp_path / "words.csv", "--task", "regression", "--out", tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, "strings", "cannot be regressed")


# ---------------------------------------------------------------------------------------
# A closed pipe, warnings said once


@pytest.mark.parametrize("args", [["info"], ["run", "--n-train", "60", "--width", "8", "--steps", "2"]])
def test_closed_stdout_ends_quietly(tmp_path, args):
    """The reader of stdout is gone before the command writes (`fastntk ... | head -0`): no
    traceback, no 'Exception ignored', status 141 (128 + SIGPIPE) as a shell reports it."""
    extra = ["--out", tmp_path] if args[0] == "run" else []
    # Block-buffered stdout (a pipe, without PYTHONUNBUFFERED): the write comes at the end.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "fastntk", *map(str, args + extra)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def test_head_of_the_output(tmp_path):
    """`fastntk run | head -1` as a user types it: the first line, nothing on stderr."""
    cmd = f"{shlex.quote(sys.executable)} -m fastntk run --n-train 60 --width 8 --steps 2 --out {shlex.quote(str(tmp_path))} | head -1"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("fastntk "), proc
    assert proc.stderr == ""


def test_a_repeated_warning_is_said_once(monkeypatch, capsys):
    """The same warning raised from two places (or twice, from different call sites) is
    one line; a different one is its own line."""

    def warn(*_, **__):
        warnings.warn("the same thing", RuntimeWarning, stacklevel=1)
        warnings.warn("the same thing", RuntimeWarning, stacklevel=1)  # another line: not the filter's once
        for _ in range(3):
            warnings.warn("something else", UserWarning, stacklevel=1)
        return {"files": []}

    monkeypatch.setattr(cli, "run", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["run"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "fastntk: warning: RuntimeWarning: the same thing",
        "fastntk: warning: UserWarning: something else",
    ]
