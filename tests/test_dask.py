"""fastntk.dask on a two-process LocalCluster: kernels as dask arrays, matrix-free regression,
a worker without fastntk, and a worker killed (SIGKILL) mid-computation.

References: tests/reference.py kernels, np.linalg.solve, and the same blocks computed in
this process, block by block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import assert_kernel_close
from reference import ntk_gram_ref
from specs import mlp, to_fastntk

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import fastntk as nt  # noqa: E402
import fastntk.dask as fd  # noqa: E402
from fastntk.predict import kernel_regression  # noqa: E402

SPEC = mlp("relu", 2, b_std=0.3)


def _by_value(source: str, name: str):
    """A function compiled outside any importable module, so that cloudpickle sends it to the
    workers by value (they cannot import this test module)."""
    ns = {"__name__": "fastntk_test_helpers"}
    exec(source, ns)
    return ns[name]


_hide_fastntk = _by_value(
    "def hide():\n"
    "    import sys, fastntk\n"
    "    sys.modules['_fastntk_hidden'] = fastntk\n"
    "    sys.modules['fastntk'] = None  # import fastntk now raises ImportError\n",
    "hide",
)
_restore_fastntk = _by_value(
    "def restore():\n    import sys\n    sys.modules['fastntk'] = sys.modules.pop('_fastntk_hidden')\n",
    "restore",
)


def blockwise(net, x1, x2, rows: int, cols: int):
    """The kernel assembled here from the same blocks the workers compute: net.kernel on each
    block on and above the diagonal (x2 None: the diagonal blocks by the symmetric path), the
    ones below as transposes."""
    sym = x2 is None
    x2 = x1 if sym else x2
    out = np.empty((len(x1), len(x2)))
    for i in range(0, len(x1), rows):
        for j in range(0, len(x2), cols):
            if sym and j < i:
                out[i : i + rows, j : j + cols] = out[j : j + cols, i : i + rows].T
            elif sym and i == j:
                out[i : i + rows, j : j + cols] = net.kernel(x1[i : i + rows], get="ntk")
            else:
                out[i : i + rows, j : j + cols] = net.kernel(x1[i : i + rows], x2[j : j + cols], get="ntk")
    return out


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1205).normal(size=(150, 4))


def test_import_without_dask_names_the_extra():
    code = (
        "import sys; sys.modules['dask'] = None\n"
        "import fastntk\n"
        "try:\n    import fastntk.dask\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "fastntk[dask]"' in out.stdout


def test_symmetric_kernel_blocks_computed_once(client, x):
    net = to_fastntk(SPEC)
    nngp, ntk = ntk_gram_ref(SPEC, x)
    k = fd.kernel(net, x, chunks=40, get=("nngp", "ntk"))
    assert k.ntk.chunks == ((40, 40, 40, 30), (40, 40, 40, 30))
    graph = dict(k.ntk.__dask_graph__())
    natives = [key for key, task in graph.items() if "fastntk-tiles" in str(key)]
    assert len(natives) == 4 * 5 // 2  # blocks on and above the diagonal, each once
    got_nngp, got_ntk = dask.compute(k.nngp, k.ntk)
    assert_kernel_close(got_ntk, ntk, 1e-12, scale=np.abs(ntk).max())
    assert_kernel_close(got_nngp, nngp, 1e-12, scale=np.abs(nngp).max())
    assert np.array_equal(got_ntk, got_ntk.T)  # the lower blocks are transposes


def test_cross_kernel_ragged_chunks(client, x):
    net = to_fastntk(SPEC)
    x2 = x[:61] * 0.5
    _, ntk = ntk_gram_ref(SPEC, x, x2)
    k = fd.kernel(net, x, x2, chunks=(33, 25), get="ntk")
    assert k.shape == (150, 61)
    got = k.compute()
    assert_kernel_close(got, ntk, 1e-12, scale=np.abs(ntk).max())
    assert np.array_equal(got, blockwise(net, x, x2, 33, 25))


def test_regression_on_the_cluster(client, x):
    # (Without the preconditioner the same loop runs, with ~100 round trips to the cluster:
    # tests/test_matvec_cg.py covers it on a local lazy kernel.)
    net = to_fastntk(SPEC)
    xt = x[:20] + 0.1
    _, k = ntk_gram_ref(SPEC, x)
    _, kt = ntk_gram_ref(SPEC, xt, x)
    y = np.stack([np.sin(x[:, 0]), x[:, 1] ** 2], axis=1)
    ridge = 0.2 * np.mean(np.diag(k))  # a well-conditioned system: few round trips to the cluster
    expected = kt @ np.linalg.solve(k + ridge * np.eye(150), y)
    iterations = []
    got = fd.kernel_regression(net, x, y, xt, ridge, chunks=64, tol=1e-10, n_landmarks=100,
                               callback=lambda it, res: iterations.append(it))  # fmt: skip
    assert np.all(np.abs(got - expected) <= 1e-8 * np.abs(expected).max(axis=0))
    assert 1 < len(iterations) < 15
    # The lazy kernel of the cluster has the interface of LazyKernel.
    op = fd.DaskKernel(net, x, chunks=64)
    v = np.ones((150, 1))
    np.testing.assert_allclose(op.matvec(v), k @ v, rtol=1e-12)
    np.testing.assert_allclose(op.block([1, 2], [5]), k[[1, 2]][:, [5]], rtol=1e-12)
    assert kernel_regression(op, y, None, 1.0, solver="cg").shape == (150, 2)


def test_bad_arguments(client, x):
    net = to_fastntk(SPEC)
    with pytest.raises(ValueError, match="needs the same row and column chunks"):
        fd.kernel(net, x, chunks=(40, 30))
    with pytest.raises(ValueError, match="chunks must be"):
        fd.kernel(net, x, chunks="many")
    with pytest.raises(ValueError, match="x1 has a non-finite value"):
        fd.kernel(net, np.full((3, 4), np.nan))
    with pytest.raises(TypeError, match="net must be a fastntk network"):
        fd.kernel(None, x)
    op = fd.DaskKernel(net, x, chunks=64)
    with pytest.raises(ValueError, match=r"V must have shape \(150,\)"):
        op.matvec(np.ones(149))
    with pytest.raises(ValueError, match="needs ridge > 0"):
        fd.kernel_regression(net, x, np.ones(150), None, 0.0)


@pytest.fixture
def fresh_client():
    """A cluster of its own: no task, data or message of an earlier test can reach a worker
    while fastntk is hidden there (unpickling it would break that worker's connection)."""
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_worker_without_fastntk_is_named(fresh_client, x):
    client = fresh_client
    net = to_fastntk(SPEC)
    victim = sorted(client.scheduler_info()["workers"])[0]
    client.run(_hide_fastntk, workers=[victim])
    fd._checked.clear()
    try:
        with pytest.raises(ImportError, match=rf"worker {victim}: .*fastntk"):
            fd.kernel(net, x, chunks=50)
    finally:
        client.run(_restore_fastntk, workers=[victim])
        fd._checked.clear()
    fd.kernel(net, x, chunks=50)  # all workers have it again


def test_worker_killed_mid_computation(client):
    # Tiles slow enough (a deep network) that a worker dies while tasks run: 36 tiles of
    # ~0.1 s, the kill comes once the victim is processing one.
    spec = mlp("relu", 40, W_std=1.2, b_std=0.2)
    net = to_fastntk(spec)
    xk = np.random.default_rng(7).normal(size=(1200, 8))
    k = fd.kernel(net, xk, chunks=150, get="ntk")
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    future = client.compute(k)
    deadline = time.monotonic() + 60
    while not client.processing().get(victim) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert not future.done(), "the computation ended before the kill: make the tiles slower"
    os.kill(pids[victim], signal.SIGKILL)
    got = future.result(timeout=120)
    # Bit for bit the blocks computed in this process on one thread, like each worker (the
    # nanny sets OMP_NUM_THREADS=1 for threads_per_worker=1); thread counts change the last bits.
    nt.set_num_threads(1)
    try:
        assert np.array_equal(got, blockwise(net, xk, None, 150, 150))
    finally:
        nt.set_num_threads(None)
    expected = net.kernel(xk, get="ntk")
    assert_kernel_close(got, expected, 1e-13, scale=np.abs(expected).max())
    client.wait_for_workers(2, timeout=60)
