"""The progress-bar policy (fastntk._progress) and its use by ``fastntk run``."""

from __future__ import annotations

import numpy as np
import pytest

from fastntk import _progress
from fastntk.cli import main

RUN = ["run", "--n-train", "100", "--width", "16", "--steps", "3"]


@pytest.fixture
def terminal(monkeypatch):
    """Standard error taken for a terminal, and no delay before an automatic bar."""
    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(_progress, "AUTO_DELAY", 0.0)


def _count(progress):
    with _progress.progress_bar(5, "work", progress, unit="step") as bar:
        for _ in range(5):
            bar.update(1)
    return bar


def test_true_shows_a_bar_false_and_automatic_off_a_terminal_do_not(capsys):
    _count(True)
    err = capsys.readouterr().err
    assert "work" in err and "5/5" in err and "step/s" in err
    for progress in (False, None):  # None: stderr is not a terminal under pytest
        bar = _count(progress)
        assert bar.n == 5  # the silent stand-in still counts
        assert capsys.readouterr().err == ""


def test_automatic_in_a_terminal(terminal, capsys):
    _count(None)
    assert "5/5" in capsys.readouterr().err


def test_automatic_waits_before_showing(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: True)
    _count(None)  # done well within AUTO_DELAY: nothing shown
    assert capsys.readouterr().err == ""


def test_resumed_work_starts_the_bar_where_it_was(capsys):
    with _progress.progress_bar(10, "work", True, initial=7) as bar:
        bar.update(3)
    assert "10/10" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["yes", 1, 0.0, "auto"])
def test_bad_progress_names_the_argument(bad):
    with pytest.raises(ValueError, match="progress must be None"):
        _progress.check_progress(bad)
    assert _progress.check_progress(np.bool_(True)) is True


def test_fastntk_run_shows_its_stages(terminal, tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "fastntk run" in captured.err and "4/4" in captured.err
    assert "kernel regression (t = inf)" in captured.out  # the report itself is unchanged, on stdout


@pytest.mark.parametrize("flag", ["--no-progress"])
def test_fastntk_run_without_a_bar(terminal, tmp_path, capsys, flag):
    assert main([*RUN, "--out", str(tmp_path), flag]) == 0
    assert "fastntk run" not in capsys.readouterr().err


@pytest.mark.parametrize("integrator", ["scipy", "rk4"])
def test_gradient_descent_integration_shows_a_bar_in_a_terminal(terminal, capsys, integrator):
    from fastntk import predict

    rng = np.random.default_rng(3)
    a = rng.standard_normal((20, 20))
    k = a @ a.T / 20 + np.eye(20)
    y = rng.standard_normal((20, 1))
    fn = predict.gradient_descent("mse", k, y, integrator=integrator)
    fn(np.array([0.5, 2.0]), np.zeros((20, 1)))
    err = capsys.readouterr().err
    assert "gradient_descent" in err and "100/100" in err


# ---- The in-memory kernel: the native driver reports its tiles.


def _reported(progress, x):
    """Runs the native Gram of ever deeper networks on x (tiles of 64, 1 thread) until the
    work spans several of the driver's 50 ms polls; returns (network, output)."""
    import fastntk as nt
    from fastntk import _core, _engine

    for depth in (12, 48, 192, 768):
        net = nt.mlp("erf", depth=depth)
        out = np.empty((len(x), len(x)))
        calls = []

        def record(done, total, calls=calls):
            calls.append((done, total))
            progress(done, total)

        _core.ntk_gram(
            _engine.program(net, x.shape[1]), x, None, None, out, n_threads=1, tile=64, progress=record
        )
        if len(calls) >= 3:
            return net, out, calls
    raise AssertionError(f"the driver reported {len(calls)} times over the deepest network")


def test_native_gram_reports_its_tiles_done():
    x = np.random.default_rng(0).standard_normal((2000, 50))
    net, out, calls = _reported(lambda done, total: None, x)
    # tiles of 64: a 32 x 32 grid, its upper triangle with the diagonal: 528 tiles
    assert {t for _, t in calls} == {32 * 33 // 2}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[0] >= 0 and done[-1] <= 528 and done[-1] > done[0]
    ref = net.kernel(x, get="ntk", progress=False)  # (its own tiles: equal to round-off)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14 * np.abs(ref).max())


def test_native_progress_callback_errors_do_not_stop_the_work(monkeypatch):
    import sys

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))

    def broken(done, total):
        raise RuntimeError("a broken display")

    x = np.random.default_rng(1).standard_normal((2000, 50))
    net, out, calls = _reported(broken, x)
    assert len(seen) >= len(calls) and all(isinstance(e, RuntimeError) for e in seen)  # every report
    ref = net.kernel(x, get="ntk", progress=False)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14 * np.abs(ref).max())


def test_in_memory_kernel_shows_a_bar_of_tiles(capsys):
    import re

    import fastntk as nt

    x = np.random.default_rng(2).standard_normal((2000, 50))
    net = nt.mlp("erf", depth=768)  # long enough for the driver to report (see _reported)
    k = net.kernel(x, get="ntk", progress=True)
    err = capsys.readouterr().err
    assert "kernel" in err and "tile" in err
    done, total = re.findall(r"(\d+)/(\d+)", err)[-1]  # the bar ends full
    assert done == total and int(total) > 1
    np.testing.assert_array_equal(k, net.kernel(x, get="ntk", progress=False))
    net.kernel(x, get="ntk")  # automatic: stderr is not a terminal under pytest: silent
    assert capsys.readouterr().err == ""
