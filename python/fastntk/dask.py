"""Kernels and matrix-free kernel regression on a Dask cluster.

- :func:`kernel`: the kernel matrix as a ``dask.array``, each block computed by fastntk's native
  core on a worker (NumPy blocks); for x2=None only the blocks on and above the diagonal are
  computed, the ones below are their transposes.
- :class:`DaskKernel`: a lazy kernel (:class:`fastntk.LazyKernel`) whose products
  ``K @ V`` run as block tasks on the cluster (each task computes its tile and multiplies it,
  and only (rows, k) results travel back), so :func:`fastntk.predict.kernel_regression` with
  ``solver='cg'`` fits on a cluster; :func:`kernel_regression` is the shortcut.

Everything runs on the current Dask scheduler: a ``dask.distributed.Client`` when one is active
(``Client("tcp://scheduler:8786")`` connects to an existing cluster), the local threaded
scheduler otherwise. With a distributed client, each call first checks (``client.run``) that
every worker imports the same fastntk version, and raises an error naming the workers that do
not. Workers lost mid-computation are handled by Dask: their tasks run again elsewhere, and
since every block is a pure function of its inputs the result does not change.

Needs Dask (``pip install "fastntk[dask]"``); ``import fastntk`` works without it.
"""

from __future__ import annotations

import itertools
import uuid

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError('fastntk.dask needs Dask: pip install "fastntk[dask]" (dask[distributed])') from exc

import numpy as np

from . import __version__, _engine
from ._args import kernel_tuple, parse_get
from ._matvec import LazyKernel, _check_network

__all__ = ["DaskKernel", "check_workers", "kernel", "kernel_regression"]

_DEFAULT_CHUNK = 2048  # 32 MiB float64 blocks: large enough to keep a worker's threads busy


# ---------------------------------------------------------------------------------------
# Workers


# The probe is compiled from source in a namespace that is not an importable module, so that
# cloudpickle sends it by value: a worker without fastntk can run it (a function of this
# module would be sent by reference, and fail to unpickle there with an unhelpful message).
_PROBE_SOURCE = """
def probe():
    try:
        import fastntk
    except Exception as exc:
        return "error", repr(exc)
    return "ok", fastntk.__version__
"""
_probe_ns = {"__name__": "fastntk_worker_probe"}
exec(compile(_PROBE_SOURCE, "<fastntk.dask probe>", "exec"), _probe_ns)
_probe = _probe_ns["probe"]

_checked: set = set()  # (scheduler address, worker address) pairs known to have fastntk


def _client():
    """The active distributed client, or None (no client: Dask's local scheduler)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def check_workers(client=None) -> None:
    """Raise unless every worker of the cluster imports fastntk of this version.

    Parameters
    ----------
    client : dask.distributed.Client, optional
        Default: the active client; nothing to check without one.

    Raises
    ------
    ImportError
        Naming each worker where ``import fastntk`` fails, with the error there.
    RuntimeError
        Naming each worker with a different fastntk version.
    """
    client = client if client is not None else _client()
    if client is None:
        return
    scheduler = client.scheduler.address
    workers = set(client.scheduler_info()["workers"])
    todo = sorted(w for w in workers if (scheduler, w) not in _checked)
    if not todo:
        return
    answers = client.run(_probe, workers=todo)
    missing = {w: why for w, (status, why) in answers.items() if status != "ok"}
    if missing:
        lines = "; ".join(f"worker {w}: {why}" for w, why in sorted(missing.items()))
        raise ImportError(
            f"fastntk is not importable on {len(missing)} of the cluster's {len(workers)} workers ({lines}). "
            f'Install it on every worker (pip install "fastntk[dask]", version {__version__})'
        )
    other = {w: v for w, (_, v) in answers.items() if v != __version__}
    if other:
        lines = "; ".join(f"worker {w} has {v}" for w, v in sorted(other.items()))
        raise RuntimeError(
            f"fastntk {__version__} here, but a different version on some workers ({lines}): "
            "install the same version everywhere"
        )
    _checked.update((scheduler, w) for w in todo)


# ---------------------------------------------------------------------------------------
# Block tasks (run on the workers)


def _gram_block(net, a1, a2, names):
    """{name: K(a1, a2)} by the native core; a2 None: a1's own (symmetric) block."""
    return _engine.gram(_engine.program(net, a1.shape[1]), a1, a2, names, layers=net.layers)


def _pick(outs, name):
    return outs[name]


def _transpose(block):
    # A view, not a copy: a lower block held on the worker of its mirror costs no memory, and
    # one that travels is serialized from the view like any array.
    return block.T


def _block_products(net, a1, a2, v2, v1, name, diagonal):
    """Products of one tile (rows a1, columns a2): (K v2, K^T v1) or (K v2, None).

    diagonal: the tile is a1's own block (a2 is a1), computed by the symmetric path."""
    k = _gram_block(net, a1, None if diagonal else a2, (name,))[name]
    return k @ v2, (None if v1 is None else k.T @ v1)


def _sum_rows(parts):
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


# ---------------------------------------------------------------------------------------
# The kernel as a dask array


def _chunk_sizes(chunks, n1: int, n2: int, owner: str):
    """Row and column chunk sizes (tuples) of an (n1, n2) kernel."""
    if chunks is None or chunks == "auto":
        chunks = _DEFAULT_CHUNK
    try:
        rows, cols = da.core.normalize_chunks(chunks, (n1, n2), dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{owner}: chunks must be an int, a pair or Dask chunks for shape {(n1, n2)}, got {chunks!r}"
        ) from exc
    if any(c <= 0 for c in rows + cols) and n1 and n2:
        raise ValueError(f"{owner}: chunks must be positive, got {chunks!r}")
    return tuple(rows), tuple(cols)


def _offsets(sizes):
    return list(itertools.accumulate((0,) + tuple(sizes)))


def kernel(net, x1, x2=None, chunks="auto", get=("nngp", "ntk")):
    """The kernel matrix as a ``dask.array``, its blocks computed by the native core on workers.

    Parameters
    ----------
    net : fastntk.Network
    x1 : array_like, shape (N1, d)
        A NumPy-convertible array (checked and converted here; NaN or Inf raise).
    x2 : array_like, shape (N2, d), optional
        None (or x1 itself): x1's own kernel, symmetric: only the blocks on and above the
        diagonal are computed (each once, with the exact diagonal maps on the diagonal
        blocks); a block below is the transpose of its mirror. Then the row and column
        chunks must be the same.
    chunks : int, pair, Dask chunks or 'auto'
        Block sizes of the result ('auto': 2048 x 2048, 32 MiB of float64 per block). Sizes
        need not divide N.
    get : str or tuple of str
        ``'nngp'``, ``'ntk'`` or a tuple: a single name returns that dask array; a tuple, a
        named tuple of dask arrays whose blocks come from the same tasks (one native call per
        block computes both).

    Returns
    -------
    dask.array.Array (N1, N2) float64 with NumPy blocks, or a named tuple of them. Nothing
    is computed until ``.compute()`` (or ``.persist()``, ``dask.compute``).

    Raises
    ------
    ImportError
        With a distributed client whose workers lack fastntk, naming the workers.
    """
    owner = "fastntk.dask.kernel"
    _check_network(net, owner)
    names, single = parse_get(get)
    a1, a2 = _engine.inputs(x1, x2)
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    rows, cols = _chunk_sizes(chunks, n1, n2, owner)
    if a2 is None and rows != cols:
        raise ValueError(
            f"{owner}: x2=None (a symmetric kernel) needs the same row and column chunks, got {chunks!r}"
        )
    check_workers()
    token = uuid.uuid4().hex
    # The input blocks travel inside the graph, each once under its own key, rather than
    # scattered to workers beforehand: the scheduler can then send them again when a worker
    # dies (scattered data dies with the only worker holding it, and the computation with it).
    # Dask warns about graphs over 10 MB (N d > 1.3 M inputs); the warning is about speed only.
    graph = {}
    r_off, c_off = _offsets(rows), _offsets(cols)
    in1 = f"fastntk-x1-{token}"
    in2 = in1 if a2 is None else f"fastntk-x2-{token}"
    for i in range(len(rows)):
        graph[(in1, i)] = a1[r_off[i] : r_off[i + 1]]
    if a2 is not None:
        for j in range(len(cols)):
            graph[(in2, j)] = a2[c_off[j] : c_off[j + 1]]
    tiles = f"fastntk-tiles-{token}"
    outs = {n: f"fastntk-{n}-{token}" for n in names}
    for i in range(len(rows)):
        for j in range(len(cols)):
            if a2 is None and j < i:
                for n in names:  # the mirror block, transposed
                    graph[(outs[n], i, j)] = (_transpose, (outs[n], j, i))
                continue
            second = None if (a2 is None and i == j) else (in2, j)
            graph[(tiles, i, j)] = (_gram_block, net, (in1, i), second, names)
            for n in names:
                graph[(outs[n], i, j)] = (_pick, (tiles, i, j), n)
    meta = np.empty((0, 0), dtype=np.float64)
    arrays = [da.Array(graph, outs[n], chunks=(rows, cols), dtype=np.float64, meta=meta) for n in names]
    if single:
        return arrays[0]
    return kernel_tuple(names)(*arrays)


# ---------------------------------------------------------------------------------------
# Matrix-free products on the cluster


class DaskKernel(LazyKernel):
    """A :class:`fastntk.LazyKernel` whose products and blocks are computed on a Dask cluster.

    ``matvec(V)`` builds one task per tile (on and above the diagonal when x2 is None), each
    computing its tile natively and multiplying it by its slices of V, and one sum per block
    row; only the (rows, k) products travel. The inputs are sent to the cluster once
    (``dask.persist``), V at every product. Pass it to
    :func:`fastntk.predict.kernel_regression` (``solver='cg'``) to fit on the cluster.

    Parameters
    ----------
    net, x1, x2, get
        As :class:`fastntk.LazyKernel`.
    chunks : int
        Tile side (default 2048).
    """

    def __init__(self, net, x1, x2=None, get="ntk", chunks=None):
        super().__init__(net, x1, x2, get)
        owner = "DaskKernel"
        n1, n2 = self.shape
        rows, cols = _chunk_sizes(chunks if chunks is not None else _DEFAULT_CHUNK, n1, n2, owner)
        if self.symmetric and rows != cols:
            raise ValueError(f"{owner}: x2=None (a symmetric kernel) needs square chunks, got {chunks!r}")
        self.chunks = (rows, cols)
        self._r_off, self._c_off = _offsets(rows), _offsets(cols)
        check_workers()
        # The network and the input blocks go to the cluster once, as persisted tasks (not
        # scattered data): a worker lost mid-fit has them recomputed (see :func:`kernel`).
        d_net = dask.delayed(net, traverse=False)
        p1 = [dask.delayed(self.x1[a:b], traverse=False) for a, b in zip(self._r_off, self._r_off[1:])]
        p2 = p1
        if not self.symmetric:
            p2 = [dask.delayed(self.x2[a:b], traverse=False) for a, b in zip(self._c_off, self._c_off[1:])]
        self._net, self._p1, self._p2 = dask.persist(d_net, p1, p2)

    def __repr__(self) -> str:
        return f"DaskKernel({self.net!r}, get={self.get!r}, shape={self.shape}, chunks={self.chunks})"

    @property
    def T(self):
        if self.symmetric:
            return self
        return DaskKernel(self.net, self.x2, self.x1, self.get, chunks=self.chunks[1][0])

    def _products(self, v):
        # Keys are named here rather than hashed from the data (dask's default for
        # delayed values): tokenizing every slice of V and every task costs more than
        # the scheduler's round trip at small N.
        token = uuid.uuid4().hex
        r_off, c_off = self._r_off, self._c_off
        v_cols = [
            dask.delayed(v[a:b], name=f"fastntk-v-{token}-{j}", traverse=False)
            for j, (a, b) in enumerate(zip(c_off, c_off[1:]))
        ]
        task = dask.delayed(_block_products, nout=2, pure=False)
        parts = [[] for _ in range(len(r_off) - 1)]
        for i in range(len(r_off) - 1):
            for j in range(len(c_off) - 1):
                if self.symmetric and j < i:
                    continue
                diagonal = self.symmetric and i == j
                mirrored = self.symmetric and i != j
                kv, ktv = task(self._net, self._p1[i], self._p2[j], v_cols[j],
                               v_cols[i] if mirrored else None, self.get, diagonal,
                               dask_key_name=f"fastntk-kv-{token}-{i}-{j}")  # fmt: skip
                parts[i].append(kv)
                if mirrored:
                    parts[j].append(ktv)
        sums = [
            dask.delayed(_sum_rows, pure=False)(p, dask_key_name=f"fastntk-kvsum-{token}-{i}")
            for i, p in enumerate(parts)
        ]
        return np.concatenate(dask.compute(*sums), axis=0)

    def to_dense(self):
        """The whole matrix, computed on the cluster and gathered here (float64 (N1, N2))."""
        return kernel(self.net, self.x1, self.x2, chunks=self.chunks[0][0], get=self.get).compute()

    def block(self, rows=slice(None), cols=slice(None)):
        """The dense block ``K[rows, cols]``, computed on the cluster by row chunks."""
        from ._matvec import _index

        r = _index(rows, self.shape[0], "rows")
        c = _index(cols, self.shape[1], "cols")
        x2 = self.x1 if self.x2 is None else self.x2
        if self.symmetric and r.size == c.size and np.array_equal(r, c):
            return kernel(self.net, self.x1[r], None, chunks=self.chunks[0][0], get=self.get).compute()
        return kernel(self.net, self.x1[r], x2[c], chunks=self.chunks[0][0], get=self.get).compute()


def kernel_regression(net, x_train, y_train, x_test=None, ridge: float = 0.0, *, get="ntk", chunks=None,
                      **options):  # fmt: skip
    """:func:`fastntk.predict.kernel_regression` with every kernel product on the Dask cluster.

    Parameters
    ----------
    net : fastntk.Network
    x_train : array_like (N, d)
    y_train : array_like (N,) or (N, n_out)
    x_test : array_like (M, d), optional
        None: predictions at the training points.
    ridge : float, > 0 for the (default) conjugate-gradient solver
    get : {'ntk', 'nngp'}
    chunks : int, optional
        Tile side of the products (default 2048).
    **options
        ``solver`` (default ``'cg'``), ``tol``, ``maxiter``, ``preconditioner``,
        ``n_landmarks``, ``seed``, ``callback``: as :func:`fastntk.predict.kernel_regression`.

    Returns
    -------
    numpy.ndarray float64 (M, n_out) or (M,) like y_train.
    """
    from .predict import kernel_regression as solve

    options.setdefault("solver", "cg")
    kk = DaskKernel(net, x_train, None, get, chunks=chunks)
    kt = None if x_test is None else DaskKernel(net, x_test, x_train, get, chunks=chunks)
    return solve(kk, y_train, kt, ridge, **options)
