"""Kernel products without the kernel: ``K(x1, x2) @ V`` tile by tile, and :class:`LazyKernel`.

This is the block primitive of matrix-free solvers, ours (:func:`fastntk.predict.kernel_regression`
with ``solver='cg'``) and external ones (Falkon, EigenPro, GPyTorch, SciPy's iterative
solvers): they need products with the kernel matrix, never the matrix itself. Each tile
``K[rows, cols]`` is computed by the native core (through :mod:`fastntk._engine`, like
:meth:`fastntk.Network.kernel`), multiplied into the result by a BLAS GEMM (NumPy's matmul)
with the matching rows of ``V``, and dropped. Working memory is one tile per requested kernel,
bounded by ``memory_limit``, whatever the number of points.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _engine
from ._args import check_finite, kernel_tuple, parse_get, real_array

__all__ = ["kernel_matvec", "LazyKernel"]

# Default bound on the tiles' working memory. 256 MiB holds one 5792 x 5792 float64 tile:
# large enough that each native call keeps every thread busy (the drivers tile again inside
# for the caches) and the Python loop costs nothing, small enough for any machine.
DEFAULT_MEMORY_LIMIT = 256 << 20
# A tile side below this would make the per-tile overheads (a native call, a GEMM call) dominate.
_MIN_TILE = 16


def _check_network(net, owner: str):
    from .network import Network

    if not isinstance(net, Network):
        raise TypeError(
            f"{owner}: net must be a fastntk network (fastntk.serial(...)), got {type(net).__name__}"
        )


def _memory_limit(memory_limit, owner: str) -> int:
    if memory_limit is None:
        return DEFAULT_MEMORY_LIMIT
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, numbers.Real) or not memory_limit > 0:
        raise ValueError(
            f"{owner}: memory_limit must be a positive number of bytes or None, got {memory_limit!r}"
        )
    return int(memory_limit)


def tile_side(memory_limit: int, n_kernels: int, owner: str = "kernel_matvec") -> int:
    """The side of the square tiles whose ``n_kernels`` float64 arrays fit in memory_limit bytes."""
    side = math.isqrt(memory_limit // (8 * n_kernels))
    if side < _MIN_TILE:
        need = 8 * n_kernels * _MIN_TILE**2
        raise ValueError(
            f"{owner}: memory_limit = {memory_limit} bytes is too small: the smallest tiles "
            f"({_MIN_TILE} x {_MIN_TILE}, {n_kernels} kernel(s), float64) need {need} bytes"
        )
    return side


def check_vectors(v, n2: int, owner: str, name: str = "V"):
    """V as float64 (n2, k) and whether it was 1-D; ValueError naming V otherwise."""
    v = real_array(v, f"{owner}: {name}")
    if v.ndim not in (1, 2) or v.shape[0] != n2:
        raise ValueError(
            f"{owner}: {name} must have shape ({n2},) or ({n2}, k), one row per point of x2 "
            f"(x1 when x2 is None), got shape {v.shape}"
        )
    flat = v.ndim == 1
    v = np.ascontiguousarray(v.reshape(n2, -1), dtype=np.float64)
    check_finite(v, f"{owner}: {name}")
    return v, flat


def _bounds(n: int, side: int):
    return [(i, min(i + side, n)) for i in range(0, n, side)]


def products(prog, layers, a1, a2, v, names, side: int) -> dict:
    """{name: K_name(a1, a2) @ v} for checked inputs (a2 None: a1's own Gram, by symmetry).

    v : float64 (N2, k). Each tile is computed once and used for every product it enters.
    """
    n1, k = a1.shape[0], v.shape[1]
    outs = {name: np.zeros((n1, k)) for name in names}
    if a2 is not None:
        for r0, r1 in _bounds(n1, side):
            for c0, c1 in _bounds(a2.shape[0], side):
                tile = _engine.gram(prog, a1[r0:r1], a2[c0:c1], names, layers=layers)
                for name in names:
                    outs[name][r0:r1] += tile[name] @ v[c0:c1]
        return outs
    # Symmetric: only the tiles on and above the diagonal are computed; an upper tile
    # K[I, J] serves both K[I, J] V[J] and, transposed, K[J, I] V[I] (half the kernel work,
    # which dominates the GEMMs). Diagonal tiles go through the symmetric native path, so that
    # their diagonals come from the exact diagonal maps, as in Network.kernel.
    blocks = _bounds(n1, side)
    for bi, (r0, r1) in enumerate(blocks):
        for c0, c1 in blocks[bi:]:
            if c0 == r0:
                tile = _engine.gram(prog, a1[r0:r1], None, names, layers=layers)
            else:
                tile = _engine.gram(prog, a1[r0:r1], a1[c0:c1], names, layers=layers)
            for name in names:
                outs[name][r0:r1] += tile[name] @ v[c0:c1]
                if c0 != r0:
                    outs[name][c0:c1] += tile[name].T @ v[r0:r1]
    return outs


def kernel_matvec(net, x1, x2, V, get="ntk", *, memory_limit=None):
    """``K(x1, x2) @ V`` computed tile by tile, without ever storing ``K``.

    The block primitive for matrix-free solvers (Falkon, EigenPro, GPyTorch, SciPy's
    iterative solvers, :func:`fastntk.predict.kernel_regression` with ``solver='cg'``):
    block rows of x1 by block columns of x2 are computed by the native core, multiplied with
    the matching rows of V by a BLAS GEMM, and dropped. Equal to
    ``net.kernel(x1, x2, get=get) @ V`` up to round-off.

    Parameters
    ----------
    net : fastntk.Network
        The architecture (:func:`fastntk.serial`).
    x1 : array_like, shape (N1, d)
        Rows of the kernel. Any real dtype (computed in float64); NaN or Inf raise.
    x2 : array_like, shape (N2, d), or None
        Columns of the kernel. None (or x1 itself) means x1: then only the tiles on and
        above the diagonal are computed, each used twice (half the kernel work).
    V : array_like, shape (N2,) or (N2, k)
        The vectors to multiply, one row per point of x2 (of x1 when x2 is None).
    get : str or tuple of str
        ``'ntk'`` (default) or ``'nngp'``: that kernel's product; a tuple of both: a named
        tuple of both products, from the same tiles.
    memory_limit : int, optional, keyword-only
        Bytes of working memory for the kernel tiles (default 256 MiB): tiles are square,
        ``side = sqrt(memory_limit / (8 * number of kernels))``, cut at the edges, so no size
        has to divide anything. The result (N1, k) and the inputs come on top.

    Returns
    -------
    numpy.ndarray, float64, shape (N1,) or (N1, k) like V, or a named tuple of them.

    Examples
    --------
    >>> import numpy as np, fastntk as nt
    >>> net = nt.serial(nt.Dense(1), nt.Relu(), nt.Dense(1))
    >>> x = np.random.default_rng(0).normal(size=(500, 8))
    >>> v = np.ones(500)
    >>> np.allclose(nt.kernel_matvec(net, x, None, v), net.kernel(x, get="ntk") @ v)
    True
    """
    owner = "kernel_matvec"
    _check_network(net, owner)
    names, single = parse_get(get)
    limit = _memory_limit(memory_limit, owner)
    a1, a2 = _engine.inputs(x1, x2)
    n2 = a1.shape[0] if a2 is None else a2.shape[0]
    v, flat = check_vectors(V, n2, owner)
    side = tile_side(limit, len(names), owner)
    outs = products(_engine.program(net, a1.shape[1]), net.layers, a1, a2, v, names, side)
    if flat:
        outs = {name: out[:, 0] for name, out in outs.items()}
    if single:
        return outs[names[0]]
    return kernel_tuple(names)(*(outs[n] for n in names))


def _index(idx, n: int, name: str):
    """A slice or integer index array along an axis of length n, as an int64 array."""
    if isinstance(idx, slice):
        return np.arange(n)[idx]
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ValueError(f"LazyKernel.block: {name} must be a slice or a 1-D integer array, got {idx!r}")
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"LazyKernel.block: {name} has indices outside [0, {n})")
    return np.where(idx < 0, idx + n, idx).astype(np.int64)


class LazyKernel:
    """The kernel matrix ``K(x1, x2)`` of a network as an operator, never stored.

    What a matrix-free solver needs from a kernel: its :attr:`shape` and :attr:`dtype`,
    products :meth:`matvec` (tile by tile, :func:`kernel_matvec`), its diagonal
    :meth:`diag` (O(N)) and blocks :meth:`block` (rows by columns, e.g. Nystrom landmarks).
    :func:`fastntk.predict.kernel_regression` takes it wherever it takes a kernel matrix.
    It also has ``matmat``, ``rmatvec`` and ``@``, so ``scipy.sparse.linalg.aslinearoperator``
    accepts it as it is.

    Parameters
    ----------
    net : fastntk.Network
    x1 : array_like, shape (N1, d)
    x2 : array_like, shape (N2, d), optional
        None (or x1 itself): the symmetric kernel of x1, whose products use the symmetry.
    get : {'ntk', 'nngp'}
    memory_limit : int, optional
        Bytes of working memory of each product (see :func:`kernel_matvec`).
    """

    def __init__(self, net, x1, x2=None, get="ntk", memory_limit=None):
        owner = "LazyKernel"
        _check_network(net, owner)
        names, single = parse_get(get)
        if not single:
            raise ValueError(f"{owner}: get must be one kernel name, 'ntk' or 'nngp', got {get!r}")
        self.net = net
        self.get = names[0]
        self.memory_limit = _memory_limit(memory_limit, owner)
        self._tile = tile_side(self.memory_limit, 1, owner)
        self.x1, self.x2 = _engine.inputs(x1, x2)
        n2 = self.x1.shape[0] if self.x2 is None else self.x2.shape[0]
        self.shape = (self.x1.shape[0], n2)
        self.dtype = np.dtype(np.float64)
        self.ndim = 2

    @property
    def symmetric(self) -> bool:
        """True for x1's own kernel (x2 None)."""
        return self.x2 is None

    def __repr__(self) -> str:
        kind = "symmetric" if self.symmetric else "cross"
        return f"LazyKernel({self.net!r}, get={self.get!r}, shape={self.shape}, {kind})"

    @property
    def _program(self):
        return _engine.program(self.net, self.x1.shape[1])

    def _products(self, v):
        """K @ v for checked float64 v (N2, k)."""
        return products(self._program, self.net.layers, self.x1, self.x2, v, (self.get,), self._tile)[
            self.get
        ]

    def matvec(self, V):
        """``K @ V`` for V of shape (N2,) or (N2, k), float64 like V's shape."""
        v, flat = check_vectors(V, self.shape[1], "LazyKernel.matvec")
        out = self._products(v)
        return out[:, 0] if flat else out

    matmat = matvec

    def __matmul__(self, V):
        return self.matvec(V)

    def rmatvec(self, V):
        """``K.T @ V`` for V of shape (N1,) or (N1, k)."""
        return self.T.matvec(V)

    @property
    def T(self) -> LazyKernel:
        """The transposed kernel K(x2, x1) (the same operator when symmetric)."""
        if self.symmetric:
            return self
        return type(self)(self.net, self.x2, self.x1, self.get, self.memory_limit)

    def diag(self):
        """The diagonal k(x_i, x_i), float64 (N,), from the exact diagonal maps, O(N).
        Only for the symmetric kernel (x2 None)."""
        if not self.symmetric:
            raise ValueError("LazyKernel.diag: the diagonal needs the symmetric kernel (x2=None)")
        nngp, ntk = _engine.diagonal(self._program, self.x1, self.net.layers)
        return ntk if self.get == "ntk" else nngp

    def block(self, rows=slice(None), cols=slice(None)):
        """The dense block ``K[rows, cols]`` (slices or 1-D integer index arrays), float64."""
        r = _index(rows, self.shape[0], "rows")
        c = _index(cols, self.shape[1], "cols")
        x2 = self.x1 if self.x2 is None else self.x2
        if self.symmetric and r.size == c.size and np.array_equal(r, c):
            return self.net.kernel(self.x1[r], get=self.get)  # exact diagonal
        return self.net.kernel(self.x1[r], x2[c], get=self.get)

    def to_dense(self):
        """The whole matrix, float64 (N1, N2), by :meth:`fastntk.Network.kernel`."""
        return self.net.kernel(self.x1, self.x2, get=self.get)

    def __array__(self, dtype=None, copy=None):
        k = self.to_dense()
        return k if dtype is None else k.astype(dtype)
