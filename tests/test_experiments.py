"""The experiment scripts (experiments/*.py), each in its --quick version: it runs, writes its
PNG, and its fitted numbers are what the theory says for that setting.

Tolerances:

- slopes of log-log fits: the fit's standard error comes from the scatter of the random
  networks (scipy.stats.linregress), and (slope - expected) / stderr follows Student's t
  with (samples - 2) degrees of freedom when the expected slope is right; the tests allow its
  two-sided 99.9 % quantile, ``T999``. Measured over 25-30 seeds of each quick setting, the
  t-values were centred within 0.4 of 0 (the O(1/width) corrections of these small widths)
  with spread ~1, so a fixed seed passes with room, while a kernel that did not converge
  (slope ~0) or a wrong scale is many standard errors off. Each quick setting keeps the
  standard error below 0.15, so "within T999 stderr" also pins the slope to about +-0.5.
- constancy: the slope lies between -1 (the O(1/width) leading term for smooth activations,
  Dyer and Gur-Ari 2019) and -1/2 (Lee et al. 2019's O(1/sqrt(width)) bound), each
  extended by T999 standard errors (experiments/ntk_constancy.py explains why -1/2 is not
  the expected value).
- linearization: the network minus its linearization and minus the analytic prediction are
  O(1/sqrt(width)) for Relu networks (the kinks: units whose pre-activation crosses zero).
  Measured over 16 seeds at widths 256, 1024 and 4096 (quick setting otherwise), the largest
  test-output differences times sqrt(width) / rms(y) were <= 6.6 (linearization) and <= 8.1
  (prediction), the training-loss differences times sqrt(width) / initial loss <= 1.1 and
  <= 1.2; the bounds take twice these. A wrong linearization or time scale gives O(1)
  relative differences, 5-20x the bounds at width 4096.
"""

from __future__ import annotations

import importlib
import math
import pathlib
import sys

import numpy as np
import pytest
from scipy import stats

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def experiments():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(EXPERIMENTS))


def _t999(samples: int) -> float:
    return float(stats.t.ppf(1 - 0.0005, samples - 2))


def _png(path):
    path = pathlib.Path(path)
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ntk_circle(experiments, tmp_path):
    m = experiments("ntk_circle")
    r = m.run(**m.QUICK, out=tmp_path)
    _png(r["png"])
    m.report(r)
    samples = r["deviations"].size
    assert r["stderr"] <= 0.15
    assert abs(r["slope"] + 0.5) <= _t999(samples) * r["stderr"], (r["slope"], r["stderr"])
    # The analytic curve is the kernel itself: Theta(x0, x0) is its maximum on the circle.
    assert np.argmax(r["analytic"]) == len(r["gamma"]) // 2


def test_ntk_convergence(experiments, tmp_path):
    m = experiments("ntk_convergence")
    r = m.run(**m.QUICK, out=tmp_path)
    _png(r["png"])
    m.report(r)
    assert r["stderr"] <= 0.15
    assert abs(r["slope"] + 0.5) <= _t999(r["errors"].size) * r["stderr"], (r["slope"], r["stderr"])


def test_ntk_constancy(experiments, tmp_path):
    m = experiments("ntk_constancy")
    r = m.run(**m.QUICK, out=tmp_path)
    _png(r["png"])
    m.report(r)
    for activation in ("relu", "erf"):
        a = r[activation]
        t = _t999(a["changes"].size)
        assert a["stderr"] <= 0.15, activation
        assert -1.0 - t * a["stderr"] <= a["slope"] <= -0.5 + t * a["stderr"], (
            activation,
            a["slope"],
            a["stderr"],
        )
        assert np.all(a["loss_ratio"] < 1e-2), activation  # the networks did train


def test_linearization(experiments, tmp_path):
    m = experiments("linearization")
    r = m.run(**m.QUICK, out=tmp_path)
    _png(r["png"])
    m.report(r)
    root_w = math.sqrt(m.QUICK["width"])
    assert r["lin_test"] <= 13.2 / root_w and r["analytic_test"] <= 16.2 / root_w, r
    assert r["lin_loss"] <= 2.2 / root_w and r["analytic_loss"] <= 2.4 / root_w, r
    assert r["loss"]["network"][-1] < 0.01 * r["loss"]["network"][0]


@pytest.mark.parametrize("name", ["ntk_circle", "ntk_convergence", "ntk_constancy", "linearization"])
def test_command_line(experiments, tmp_path, name, monkeypatch, capsys):
    """--quick and --out, as a researcher runs them (main() with an argv list)."""
    m = experiments(name)
    calls = {}
    monkeypatch.setattr(m, "run", lambda **kw: calls.update(kw) or {"png": None})
    monkeypatch.setattr(m, "report", lambda r: None)
    m.main(["--quick", "--out", str(tmp_path), "--seed", "3"])
    assert calls == dict(m.QUICK, seed=3, out=tmp_path)
