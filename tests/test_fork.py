"""fastntk in a child process: after fork() (multiprocessing's default start method on
Linux) and with 'spawn'.

libgomp's thread pool does not survive fork(): a forked child of a process that has run
fastntk on several threads would wait forever for the parent's pool threads. Such a child
runs single-threaded instead, with one RuntimeWarning. Each case runs in a fresh
interpreter under a timeout, so that a hang fails the test instead of hanging the run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX")

# The parent computes the kernels on two threads (so that libgomp has built its pool even
# on a one-core machine); `check(tag)` recomputes them wherever it runs and compares.
_COMMON = """
import os, sys, warnings
import numpy as np
import fastntk as nt

nt.set_num_threads(2)
net = nt.serial(nt.Dense(64, b_std=0.1), nt.Relu(), nt.Dense(64, b_std=0.1), nt.Erf(), nt.Dense(2))
x = np.random.default_rng(0).standard_normal((300, 7))
params = net.init(1, 7)


def kernels():
    k = net.kernel(x, get=("nngp", "ntk"))
    return k.nngp, k.ntk, net.empirical_ntk(params, x[:60])


def check(expected):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = kernels()
        again = kernels()  # the warning comes once per process, not once per call
    for e, g, a in zip(expected, got, again):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
"""


def _run(body: str, tmp_path, timeout: float = 120) -> str:
    script = tmp_path / "job.py"
    script.write_text(_COMMON + textwrap.dedent(body))
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the job did not finish within {timeout} s (a forked child hung)")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_os_fork_after_a_kernel_call(tmp_path):
    out = _run(
        """
        expected = kernels()
        pid = os.fork()
        if pid == 0:
            try:
                warned = check(expected)
                assert len(warned) == 1 and "single-threaded" in warned[0], warned
                print("child ok", flush=True)
                code = 0
            except BaseException as exc:
                print("child failed:", repr(exc), flush=True)
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent keeps its threads and its results.
        assert check(expected) == []
        print("parent ok")
        """,
        tmp_path,
    )
    assert "child ok" in out and "parent ok" in out


_POOL = """
import multiprocessing as mp


def job(rows):
    return net.kernel(x[rows[0] : rows[1]], x, get="ntk"), net.empirical_ntk(params, x[rows[0] : rows[1]], x[:60])


if __name__ == "__main__":
    expected = kernels()
    with mp.get_context("{method}").Pool(2) as pool:
        parts = pool.map(job, [(0, 150), (150, 300)])
    np.testing.assert_allclose(np.vstack([p[0] for p in parts]), expected[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.vstack([p[1] for p in parts])[:60], expected[2], rtol=1e-12, atol=1e-14)
    print("pool ok")
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_after_a_kernel_call(tmp_path, method):
    assert "pool ok" in _run(_POOL.format(method=method), tmp_path)


def test_fork_before_any_call_keeps_the_threads(tmp_path):
    # A child of a process that never ran fastntk's threads has a sound libgomp: it keeps
    # its threads and says nothing.
    out = _run(
        """
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    kernels()
                code = 0 if not caught else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        print("ok")
        """,
        tmp_path,
    )
    assert "ok" in out
