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
