"""The README's Python examples run as written, and give what their comments say."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    text = README.read_text(encoding="utf-8")
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if not b.startswith(">>>")]


def _gpu():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver or no device
        return False


def test_readme_python_blocks_run():
    blocks = _blocks()
    assert len(blocks) >= 5, "the README lost its quick start"
    scope = {"print": lambda *a, **k: None}
    ran_torch = False
    for block in blocks:
        if "import cupy" in block and not _gpu():
            continue
        if "import torch" in block:
            pytest.importorskip("torch")
            ran_torch = True
        exec(compile(block, str(README), "exec"), scope)
    s = scope
    assert s["k_train"].ntk.shape == (1000, 1000) and s["k_train"].nngp.shape == (1000, 1000)
    assert s["k_test"].shape == (200, 1000)
    assert s["f_test"].shape == (50, 200, 1)
    assert s["theta"].shape == (1000, 1000) and s["theta_full"].shape == (200, 1000, 1, 1)
    assert s["run"].fx_test.shape == (2, 200, 1) and s["run"].loss.shape == (2,)
    assert s["lin"].fx_test.shape == (2, 200, 1)
    assert s["k_cnn"].nngp.shape == (20, 20) and s["k_cnn"].ntk.shape == (20, 20)
    assert s["k_map"].shape == (20, 20, 6, 6)
    # t = 100 is well on the way to t = infinity from a network of width 512: the training
    # loss fell, for the network and its linearization alike.
    assert s["run"].loss[1] < s["run"].loss[0] and s["lin"].loss[1] < s["lin"].loss[0]
    if ran_torch:
        import torch

        x = np.random.default_rng(0).standard_normal((7, 20))
        with torch.no_grad():
            ref = s["module"](torch.from_numpy(x).to(torch.float32)).double().numpy()
        np.testing.assert_allclose(s["tnet"].apply(s["tparams"], x), ref, rtol=0, atol=1e-5)
        assert s["reg"].depth_ in (1, 2, 3, 4)
