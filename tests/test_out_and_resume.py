"""Kernels written into a caller's array block by block (``out=``, ``memory_limit=``), the
resumable store (``out=path``: fingerprint, per-block markers, SIGKILL and a full disk), and
the progress bar."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import fastntk as nt
from fastntk import _store

from conftest import TOL, assert_kernel_close, entry_scale
from reference import ntk_gram_ref
from specs import mlp, to_fastntk

SPEC = mlp("relu", depth=3, W_std=1.4, b_std=0.1)
ROOT = Path(__file__).resolve().parent.parent
# Blocks of 256 x 256 entries for two kernels (two buffers each: one computed while the
# other is written): the smallest limit, so that small test sizes already have many blocks.
SMALL = 4 * 8 * 256 * 256


@pytest.fixture
def net():
    return to_fastntk(SPEC)


def _close_to_reference(got, x1, x2=None):
    ref = ntk_gram_ref(SPEC, x1, x2)
    d1 = [np.diag(m) for m in ntk_gram_ref(SPEC, x1)]
    d2 = d1 if x2 is None else [np.diag(m) for m in ntk_gram_ref(SPEC, x2)]
    for k, name in enumerate(("nngp", "ntk")):
        scale = entry_scale(ref[k], d1[k], d2[k])
        assert_kernel_close(getattr(got, name), ref[k], TOL["reference"], scale, what=name)


# ---------------------------------------------------------------------------------------
# Values


def test_symmetric_into_numpy_matches_reference(net, rng):
    x = rng.standard_normal((600, 7))  # 600 = 2 * 256 + 88: blocks that do not divide
    out = (np.full((600, 600), np.nan), np.full((600, 600), np.nan))
    got = net.kernel(x, out=out, memory_limit=SMALL)
    assert got.nngp is out[0] and got.ntk is out[1]
    _close_to_reference(got, x)
    np.testing.assert_array_equal(got.ntk, got.ntk.T)  # mirrored, so exactly symmetric
    whole = net.kernel(x)
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(got, name), getattr(whole, name), rtol=1e-13, atol=0)


def test_cross_into_memmap_and_float32(net, rng, tmp_path):
    x1, x2 = rng.standard_normal((530, 5)), rng.standard_normal((301, 5))
    nngp = np.lib.format.open_memmap(tmp_path / "nngp.npy", mode="w+", dtype=np.float64, shape=(530, 301))
    ntk = np.memmap(tmp_path / "ntk.dat", mode="w+", dtype=np.float64, shape=(530, 301))
    got = net.kernel(x1, x2, out={"ntk": ntk, "nngp": nngp}, memory_limit=SMALL)
    _close_to_reference(got, x1, x2)
    del nngp, ntk, got  # what is on disk, read back
    on_disk = SimpleNamespace(
        nngp=np.load(tmp_path / "nngp.npy"), ntk=np.fromfile(tmp_path / "ntk.dat").reshape(530, 301)
    )
    _close_to_reference(on_disk, x1, x2)
    single = np.zeros((530, 301), dtype=np.float32)
    got32 = net.kernel(x1, x2, get="ntk", out=single, memory_limit=SMALL)
    assert got32 is single
    np.testing.assert_allclose(single, ntk_gram_ref(SPEC, x1, x2)[1], rtol=1e-6)


def test_into_zarr_array(net, rng):
    zarr = pytest.importorskip("zarr")
    x = rng.standard_normal((400, 6))
    z = zarr.zeros(shape=(400, 400), chunks=(128, 96), dtype="f8")
    got = net.kernel(x, get="ntk", out=z, memory_limit=SMALL)
    assert got is z
    np.testing.assert_allclose(z[:], ntk_gram_ref(SPEC, x)[1], rtol=TOL["reference"] * 10, atol=0)
    np.testing.assert_array_equal(z[:], z[:].T)


def test_values_do_not_depend_on_blocks_or_threads(net, rng):
    x = rng.standard_normal((700, 9))
    results = []
    for limit, threads in ((SMALL, None), ("4MiB", None), (None, None), (SMALL, 1)):
        nt.set_num_threads(threads)
        try:
            results.append(net.kernel(x, get="ntk", out=np.empty((700, 700)), memory_limit=limit))
        finally:
            nt.set_num_threads(None)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_memory_limit_bounds_the_blocks(net, rng, tmp_path, monkeypatch):
    n = 1500
    x = rng.standard_normal((n, 4))
    shapes = []
    real = _store._engine.gram_into

    def spy(prog, a1, a2, outs, **kw):
        shapes.append(next(iter(outs.values())).shape)
        return real(prog, a1, a2, outs, **kw)

    monkeypatch.setattr(_store._engine, "gram_into", spy)
    limit = 3 * SMALL // 2
    target = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64, shape=(n, n))
    tracemalloc.start()
    try:
        net.kernel(x, get="ntk", out=target, memory_limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One kernel, two buffers: blocks of 256 x 256 at most (the next multiple of the tile,
    # 512, does not fit); the upper triangle of a 6 x 6 grid of blocks.
    assert 2 * max(r * c for r, c in shapes) * 8 <= limit
    assert len(shapes) == 21
    # NumPy's allocations (the block buffer, the blocks' row slices are views) stay within the
    # limit plus small change, while the output is 18 MB.
    assert peak < limit + 256 * 1024, peak
    np.testing.assert_allclose(target, net.kernel(x, get="ntk"), rtol=1e-13, atol=0)


def test_non_finite_is_still_an_error(rng):
    net = nt.serial(nt.Dense(W_std=1e100), nt.Relu(), nt.Dense(W_std=1e100), nt.Relu(), nt.Dense(W_std=1e100))
    x = rng.standard_normal((300, 3)) * 1e10
    with pytest.raises(FloatingPointError, match="not finite"):
        net.kernel(x, get="ntk", out=np.empty((300, 300)), memory_limit=SMALL)


# ---------------------------------------------------------------------------------------
# The resumable store


def _markers(store: Path) -> set:
    return {p.name for p in (store / "done").iterdir()}


def test_store_layout_and_rerun_skips_everything(net, rng, tmp_path, monkeypatch):
    x = rng.standard_normal((600, 7))
    path = tmp_path / "k"
    got = net.kernel(x, out=path, memory_limit=SMALL)
    assert isinstance(got.ntk, np.memmap)
    _close_to_reference(got, x)
    meta = json.loads((path / "fastntk-store.json").read_text())
    assert meta["fingerprint"]["network"] == repr(net)
    assert meta["tiling"] == {"tile": 256, "block_rows": 256, "block_cols": 256}
    assert _markers(path) == {f"r{i}-c{j}" for i in range(3) for j in range(i, 3)}
    np.testing.assert_array_equal(np.load(path / "ntk.npy"), got.ntk)
    # A complete store: the same call computes nothing, and a larger memory_limit keeps the
    # stored tiling (handled, not refused).
    monkeypatch.setattr(_store._engine, "gram_into", lambda *a, **k: pytest.fail("recomputed a block"))
    again = net.kernel(x, out=str(path), memory_limit="1GB")
    np.testing.assert_array_equal(again.ntk, got.ntk)


@pytest.mark.parametrize(
    "change, field",
    [
        ("network", "the network"),
        ("inputs", "the inputs x1"),
        ("x2", "the inputs x2"),
        ("get", "the requested kernels"),
    ],
)
def test_store_refuses_another_computation(net, rng, tmp_path, change, field):
    x = rng.standard_normal((300, 4))
    path = tmp_path / "k"
    net.kernel(x, out=path, memory_limit=SMALL)
    kwargs = dict(out=path, memory_limit=SMALL)
    with pytest.raises(ValueError, match=field) as info:
        if change == "network":
            to_fastntk(mlp("erf", depth=3)).kernel(x, **kwargs)
        elif change == "inputs":
            y = x.copy()
            y[7, 2] = np.nextafter(y[7, 2], 1.0)  # one bit of one input
            net.kernel(y, **kwargs)
        elif change == "x2":
            net.kernel(x, x.copy(), **kwargs)
        else:
            net.kernel(x, get=("ntk", "nngp"), **kwargs)
    assert "cannot be resumed" in str(info.value) and str(path) in str(info.value)


def test_store_refuses_blocks_over_the_new_memory_limit(net, rng, tmp_path):
    x = rng.standard_normal((600, 4))
    path = tmp_path / "k"
    net.kernel(x, get="ntk", out=path, memory_limit="16MiB")  # one block (a side of 3 tiles, 768)
    with pytest.raises(ValueError, match=r"tiled in blocks of 768 x 768.*memory_limit >= 5760000"):
        net.kernel(x, get="ntk", out=path, memory_limit=SMALL)


def test_store_refuses_a_foreign_directory(net, rng, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a fastntk store"):
        net.kernel(rng.standard_normal((10, 3)), out=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


_CHILD = """
import sys, time
import numpy as np
sys.path.insert(0, {tests!r})
from specs import mlp, to_fastntk
from fastntk import _store

real = _store.write_block
calls = []


def write_block(target, b, buf, transposed=False):
    calls.append(b.key)
    if len(calls) == {stop_at}:
        # Half of the block written (garbage), then stuck: the parent kills the process here.
        target.array[b.i0 : b.i1, b.j0 : b.j1][: (b.i1 - b.i0) // 2] = np.nan
        print("IN_WRITE", b.key, flush=True)
        time.sleep(600)
    real(target, b, buf, transposed)


_store.write_block = write_block
x = np.load({x!r})
to_fastntk(mlp("relu", depth=3, W_std=1.4, b_std=0.1)).kernel(x, out={path!r}, memory_limit={limit})
print("FINISHED", flush=True)
"""


def test_sigkill_during_a_block_write_then_resume_is_bit_identical(net, rng, tmp_path, monkeypatch):
    n = 700  # 3 x 3 blocks of 256: 6 above the diagonal
    x = rng.standard_normal((n, 7))
    np.save(tmp_path / "x.npy", x)
    path = tmp_path / "store"
    # write_block is called once per kernel for a diagonal block, twice (with the mirror) for
    # the others: r0-c0 takes 2 calls, r0-c1 and r0-c2 4 each, so call 11 is the NNGP of
    # r1-c1, the 4th block.
    code = _CHILD.format(
        tests=str(ROOT / "tests"), stop_at=11, x=str(tmp_path / "x.npy"), path=str(path), limit=SMALL
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = child.stdout.readline()
        assert line.startswith("IN_WRITE r1-c1"), line
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    finished = _markers(path)
    assert finished == {"r0-c0", "r0-c1", "r0-c2"}
    assert np.isnan(np.load(path / "nngp.npy")[256:384, 256:512]).all()  # the half-written block

    computed = []
    real = _store._engine.gram_into

    def spy(prog, a1, a2, outs, **kw):
        computed.append(1)
        return real(prog, a1, a2, outs, **kw)

    monkeypatch.setattr(_store._engine, "gram_into", spy)
    resumed = net.kernel(x, out=path)
    assert len(computed) == 6 - len(finished)  # the finished blocks were not recomputed
    monkeypatch.setattr(_store._engine, "gram_into", real)
    whole = net.kernel(x, out=(np.empty((n, n)), np.empty((n, n))), memory_limit=SMALL)
    np.testing.assert_array_equal(resumed.nngp, whole.nngp)
    np.testing.assert_array_equal(resumed.ntk, whole.ntk)
    assert _markers(path) == {f"r{i}-c{j}" for i in range(3) for j in range(i, 3)}


def test_full_disk_while_writing_then_resume(net, rng, tmp_path, monkeypatch):
    x = rng.standard_normal((700, 5))
    path = tmp_path / "k"
    real = _store.write_block
    calls = []

    def full_disk(target, b, buf, transposed=False):
        calls.append(b.key)
        if len(calls) >= 4:  # the first kernel of block r0-c1 is written, its mirror is not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(target, b, buf, transposed)

    monkeypatch.setattr(_store, "write_block", full_disk)
    with pytest.raises(OSError, match="No space left on device") as info:
        net.kernel(x, get=("ntk", "nngp"), out=path, memory_limit=SMALL)
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert "block r0-c1" in message and "1 finished blocks" in message and "resume" in message
    assert _markers(path) == {"r0-c0"}

    monkeypatch.setattr(_store, "write_block", real)  # space is back
    resumed = net.kernel(x, get=("ntk", "nngp"), out=path, memory_limit=SMALL)
    whole = net.kernel(
        x, get=("ntk", "nngp"), out=(np.empty((700, 700)), np.empty((700, 700))), memory_limit=SMALL
    )
    np.testing.assert_array_equal(resumed.ntk, whole.ntk)
    np.testing.assert_array_equal(resumed.nngp, whole.nngp)


def test_full_disk_while_recording_a_block(net, rng, tmp_path, monkeypatch):
    x = rng.standard_normal((600, 5))
    path = tmp_path / "k"
    real = _store.Store.mark_done

    def mark_done(self, key):
        if key == "r0-c2":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, key)

    monkeypatch.setattr(_store.Store, "mark_done", mark_done)
    with pytest.raises(OSError, match=r"recording a finished block.*No space left") as info:
        net.kernel(x, get="ntk", out=path, memory_limit=SMALL)
    assert info.value.errno == errno.ENOSPC
    assert _markers(path) == {"r0-c0", "r0-c1"}
    monkeypatch.setattr(_store.Store, "mark_done", real)
    resumed = net.kernel(x, get="ntk", out=path)
    np.testing.assert_array_equal(
        resumed, net.kernel(x, get="ntk", out=np.empty((600, 600)), memory_limit=SMALL)
    )


def test_full_disk_before_any_work(net, rng, tmp_path, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(_store.shutil, "disk_usage", lambda p: Usage)
    monkeypatch.setattr(_store._engine, "gram_into", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(OSError, match=r"needs 10240000 bytes .* only 1000 bytes") as info:
        net.kernel(rng.standard_normal((800, 3)), out=tmp_path / "k")
    assert info.value.errno == errno.ENOSPC


def test_unwritable_store_path(net, rng, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="fastntk: creating the store at .* failed"):
        net.kernel(rng.standard_normal((10, 3)), out=tmp_path / "file" / "store")


# ---------------------------------------------------------------------------------------
# Progress


def test_progress_bar_on_and_off(net, rng, capsys):
    x = rng.standard_normal((600, 3))
    net.kernel(x, get="ntk", out=np.empty((600, 600)), memory_limit=SMALL, progress=True)
    err = capsys.readouterr().err
    assert "kernel" in err and "6/6" in err and "block/s" in err
    for progress in (False, None):  # None: automatic, and stderr is not a terminal here
        net.kernel(x, get="ntk", out=np.empty((600, 600)), memory_limit=SMALL, progress=progress)
        assert capsys.readouterr().err == ""


def test_progress_bar_counts_resumed_blocks(net, rng, tmp_path, capsys):
    x = rng.standard_normal((600, 3))
    net.kernel(x, get="ntk", out=tmp_path / "k", memory_limit=SMALL, progress=False)
    net.kernel(x, get="ntk", out=tmp_path / "k", progress=True)
    assert "6/6" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Bad input: clear errors before any work


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(get="ntk", out=np.empty((50, 49))), ValueError, r"out\['ntk'\] must have shape \(50, 50\)"),
        (dict(get="ntk", out=np.empty((50, 50), dtype=np.int64)), ValueError, "dtype float64 or float32"),
        (dict(get="ntk", out=[[0.0] * 50] * 50), ValueError, "1 array"),
        (dict(get="ntk", out=(np.empty((50, 50)).tolist(),)), TypeError, "must be a NumPy array"),
        (dict(out=np.empty((50, 50))), ValueError, "asks for 2 kernels"),
        (dict(out={"ntk": np.empty((50, 50))}), ValueError, "exactly the keys"),
        (dict(get="ntk", out=np.empty((50, 50)), memory_limit=0), ValueError, "memory_limit must be"),
        (dict(get="ntk", out=np.empty((50, 50)), memory_limit=-5), ValueError, "memory_limit must be"),
        (dict(get="ntk", out=np.empty((50, 50)), memory_limit="lots"), ValueError, "memory_limit must be"),
        (dict(get="ntk", out=np.empty((50, 50)), memory_limit=True), ValueError, "memory_limit must be"),
        (dict(get="ntk", out=np.empty((50, 50)), memory_limit=1000), ValueError, "too small"),
        (dict(get="ntk", memory_limit="1GB"), ValueError, "without out"),
        (dict(get="ntk", out=np.empty((50, 50)), progress="yes"), ValueError, "progress must be"),
        (dict(get="ntk", out=np.empty((2, 50, 50)), every_layer=True), ValueError, "every_layer"),
    ],
)
def test_bad_arguments(net, rng, monkeypatch, kwargs, error, match):
    monkeypatch.setattr(_store._engine, "gram_into", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(error, match=match):
        net.kernel(rng.standard_normal((50, 3)), **kwargs)


def test_read_only_and_shared_targets(net, rng, tmp_path, monkeypatch):
    monkeypatch.setattr(_store._engine, "gram_into", lambda *a, **k: pytest.fail("computed"))
    x = rng.standard_normal((50, 3))
    ro = np.empty((50, 50))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="must be writeable"):
        net.kernel(x, get="ntk", out=ro)
    np.save(tmp_path / "k.npy", np.zeros((50, 50)))
    with pytest.raises(ValueError, match="must be writeable"):
        net.kernel(x, get="ntk", out=np.load(tmp_path / "k.npy", mmap_mode="r"))
    same = np.empty((50, 50))
    with pytest.raises(ValueError, match="its own array"):
        net.kernel(x, out=(same, same))


def test_memory_limit_strings():
    assert _store.parse_memory_limit("2GB") == 2 * 10**9
    assert _store.parse_memory_limit("512 MiB") == 512 * 2**20
    assert _store.parse_memory_limit("1.5GiB") == 3 * 2**29
    assert _store.parse_memory_limit(4096) == 4096
    assert _store.parse_memory_limit(None) == 2**30
