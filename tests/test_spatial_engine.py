"""The spatial (CNN) engine, ``_core.SpatialProgram`` and ``_core.spatial_gram``, driven by hand
(builder calls, no layer classes) against a plain-NumPy evaluation of the same op semantics
written here from the formulas of the CNN contract (loops over positions and window offsets).

The reference runs three states in lockstep -- (x, x), (y, y) and (x, y) -- so that every
activation and LayerNorm reads the per-position variances of x and y from the diagonal of the
self states at that op, as the contract defines them. Tolerances: the walk and the reference
add the same terms in different orders and evaluate arc-cosines through different libraries
(libmvec vs NumPy): a few ulps per op, amplified by at most the depth of these short programs,
so 1e-11 relative (1e-12 absolute for entries near 0) is tight yet safe.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fastntk import _core, _engine

from reference_cnn import out_size_and_pad

RTOL, ATOL = 1e-11, 1e-12


# ---------------------------------------------------------------------------------------
# The reference


def _positions(dims):
    return list(itertools.product(*[range(n) for n in dims]))


def _flat(idx, dims):
    f = 0
    for i, n in zip(idx, dims):
        f = f * n + i
    return f


def _source(i_out, u, stride, pad, n, circular):
    """The input position read by window offset u of output position i_out, or None (a zero)."""
    p = stride * i_out + u - pad
    if circular:
        p %= n
    return p if 0 <= p < n else None


def _read(i_out, offsets, dims, strides, pads, circular):
    """The flat input position of the multi-index output position with window offsets, or None."""
    src = []
    for k, n in enumerate(dims):
        p = _source(i_out[k], offsets[k], strides[k], pads[k], n, circular)
        if p is None:
            return None
        src.append(p)
    return _flat(src, dims)


def _linear_ref(a, full, map_, in_dims, out_dims, window, strides, pad_lo, circular, normalize_edges, scale):
    """L(a) of the contract, a of shape (S, S) (full) or (S,) (diagonal)."""
    if map_ == "identity":
        return scale * a
    if map_ == "flatten":
        return np.array([scale * (np.trace(a) if full else a.sum())])
    if map_ == "global":
        return np.array([scale * a.sum()])
    out_pos = _positions(out_dims)
    offs = list(itertools.product(*[range(k) for k in window]))
    so = len(out_pos)
    if map_ == "conv":
        if full:
            out = np.zeros((so, so))
            for oi, ii in enumerate(out_pos):
                for oj, jj in enumerate(out_pos):
                    acc = 0.0
                    for u in offs:
                        pi = _read(ii, u, in_dims, strides, pad_lo, circular)
                        pj = _read(jj, u, in_dims, strides, pad_lo, circular)
                        if pi is not None and pj is not None:
                            acc += a[pi, pj]
                    out[oi, oj] = scale * acc
            return out
        out = np.zeros(so)
        for oi, ii in enumerate(out_pos):
            acc = 0.0
            for u in offs:
                pi = _read(ii, u, in_dims, strides, pad_lo, circular)
                if pi is not None:
                    acc += a[pi]
            out[oi] = scale * acc
        return out
    assert map_ == "pool" and full

    def weight(ii):
        if not normalize_edges:
            return scale
        count = sum(_read(ii, u, in_dims, strides, pad_lo, circular) is not None for u in offs)
        return 1.0 / count

    out = np.zeros((so, so))
    for oi, ii in enumerate(out_pos):
        for oj, jj in enumerate(out_pos):
            acc = 0.0
            for u in offs:
                pi = _read(ii, u, in_dims, strides, pad_lo, circular)
                if pi is None:
                    continue
                for v in offs:
                    pj = _read(jj, v, in_dims, strides, pad_lo, circular)
                    if pj is not None:
                        acc += a[pi, pj]
            out[oi, oj] = weight(ii) * weight(jj) * acc
    return out


def _relu_ref(qx, qy, s, diag):
    """ReLU's F and S at variances qx, qy and covariance s (diag: the exact x == y map)."""
    if diag:
        return 0.5 * qx, 0.5
    c = np.clip(s / math.sqrt(qx * qy), -1.0, 1.0)
    theta = math.acos(c)
    return (math.sqrt(max(qx * qy - s * s, 0.0)) + (math.pi - theta) * s) / (2 * math.pi), (math.pi - theta) / (
        2 * math.pi
    )


def _erf_ref(a, b, c, qx, qy, s):
    """a erf(b x) + c: Neural Tangents' form, DESIGN.md 2.1 (s, q scaled by b^2 first)."""
    s2, qx2, qy2 = b * b * s, b * b * qx, b * b * qy
    d = (1 + 2 * qx2) * (1 + 2 * qy2)
    f = 2 / math.pi * math.atan2(2 * s2, math.sqrt(d - 4 * s2 * s2))
    dot = 4 / math.pi / math.sqrt(d - 4 * s2 * s2)
    return a * a * f + c * c, a * a * b * b * dot


class Ref:
    """The contract's semantics on one pair (x, y), images (*in_dims, C)."""

    def __init__(self, in_dims, channels, full, n_registers):
        self.in_dims, self.channels, self.full, self.n = tuple(in_dims), channels, full, n_registers
        self.ops = []

    def run(self, x, y):
        c = self.channels
        xs = x.reshape(-1, c)
        ys = y.reshape(-1, c)
        state = {}
        for key, (u, v) in {"xx": (xs, xs), "yy": (ys, ys), "xy": (xs, ys)}.items():
            cov = u @ v.T / c
            s0 = cov if self.full else np.diag(cov).copy()
            state[key] = {0: [s0, np.zeros_like(s0), self.in_dims]}
        for op in self.ops:
            getattr(self, "_" + op[0])(state, *op[1:])
        s, t, _ = state["xy"][0]
        return s.ravel(), t.ravel()

    def _diag(self, a):
        return np.diag(a).copy() if self.full else a.copy()

    def _linear(self, state, src, dst, map_, in_dims, out_dims, window, strides, pad_lo, circ, norm, scale, al, be,
                ga, de, ep):  # fmt: skip
        for st in state.values():
            s, t, _ = st[src]
            ls = _linear_ref(s, self.full, map_, in_dims, out_dims, window, strides, pad_lo, circ, norm, scale)
            lt = _linear_ref(t, self.full, map_, in_dims, out_dims, window, strides, pad_lo, circ, norm, scale)
            st[dst] = [al * ls + be, ga * ls + de * lt + ep, tuple(out_dims)]

    def _activation(self, state, reg, kind, params):
        qx = self._diag(state["xx"][reg][0])
        qy = self._diag(state["yy"][reg][0])
        for key, (q1, q2) in {"xx": (qx, qx), "yy": (qy, qy), "xy": (qx, qy)}.items():
            s, t, dims = state[key][reg]
            s_new, t_new = s.copy(), t.copy()
            for idx in np.ndindex(s.shape):
                i, j = (idx if self.full else (idx[0], idx[0]))
                on_diag = key != "xy" and i == j
                if kind == "relu":
                    f, dot = _relu_ref(q1[i], q2[j], s[idx], on_diag)
                else:
                    f, dot = _erf_ref(*params, q1[i], q2[j], s[idx])
                s_new[idx], t_new[idx] = f, t[idx] * dot
            state[key][reg] = [s_new, t_new, dims]

    def _layernorm(self, state, reg, spatial, eps):
        def v(key):
            d = self._diag(state[key][reg][0])
            return np.full_like(d, d.mean() + eps) if spatial else d + eps

        vx, vy = v("xx"), v("yy")
        for key, (v1, v2) in {"xx": (vx, vx), "yy": (vy, vy), "xy": (vx, vy)}.items():
            s, t, dims = state[key][reg]
            f = 1 / np.sqrt(np.outer(v1, v2)) if self.full else 1 / np.sqrt(v1 * v2)
            state[key][reg] = [s * f, t * f, dims]

    def _copy(self, state, src, dst):
        for st in state.values():
            s, t, dims = st[src]
            st[dst] = [s.copy(), t.copy(), dims]

    def _axpy(self, state, src, dst, w):
        for st in state.values():
            s, t, _ = st[src]
            st[dst][0] = st[dst][0] + w * s
            st[dst][1] = st[dst][1] + w * t


# ---------------------------------------------------------------------------------------
# One program description, built twice: the native builder and the reference


def _fc_program():
    """ReLU at op 1, Erf(0.7, 1.3, 0.2) at op 3 (each after a Dense, as the FC builder wants)."""
    fc = _core.Program()
    fc.add_dense(1.0, None, False, 1.0)
    fc.add_abrelu(0.0, 1.0)
    fc.add_dense(1.0, None, False, 1.0)
    fc.add_erf(0.7, 1.3, 0.2)
    return fc


ERF = (0.7, 1.3, 0.2)


class Both:
    """Applies each builder call to the native program and the reference alike."""

    def __init__(self, in_dims, channels, full, n_registers=1):
        self.fc = _fc_program()
        self.native = _core.SpatialProgram(list(in_dims), channels, full, n_registers)
        self.ref = Ref(in_dims, channels, full, n_registers)
        self.full = full

    def linear(self, src, dst, map_, in_dims, out_dims, window=(), strides=(), pad_lo=(), circular=False,
               normalize_edges=False, scale=1.0, alpha=1.0, beta=0.0, gamma=0.0, delta=1.0, eps=0.0):  # fmt: skip
        self.native.add_linear(src, dst, map_, list(in_dims), list(out_dims), list(window), list(strides),
                               list(pad_lo), circular, normalize_edges, scale, alpha, beta, gamma, delta, eps)  # fmt: skip
        self.ref.ops.append(("linear", src, dst, map_, tuple(in_dims), tuple(out_dims), tuple(window), tuple(strides),
                             tuple(pad_lo), circular, normalize_edges, scale, alpha, beta, gamma, delta, eps))  # fmt: skip
        return self

    def conv(self, reg, dims, window, strides, padding, w_var=1.7, b_var=0.1, dst=None):
        """A Conv layer's op, NTK parameterization with 1/(window size) as the fan-in scale."""
        out, pads = zip(*(out_size_and_pad(n, k, s, padding) for n, k, s in zip(dims, window, strides)))
        self.linear(reg, reg if dst is None else dst, "conv", dims, out, window, strides, pads,
                    circular=padding == "CIRCULAR", scale=1.0 / math.prod(window), alpha=w_var, beta=b_var,
                    gamma=w_var, delta=w_var, eps=b_var)  # fmt: skip
        return tuple(out)

    def relu(self, reg):
        self.native.add_activation(reg, self.fc, 1)
        self.ref.ops.append(("activation", reg, "relu", None))
        return self

    def erf(self, reg):
        self.native.add_activation(reg, self.fc, 3)
        self.ref.ops.append(("activation", reg, "erf", ERF))
        return self

    def layernorm(self, reg, spatial, eps):
        self.native.add_layernorm(reg, spatial, eps)
        self.ref.ops.append(("layernorm", reg, spatial, eps))
        return self

    def copy(self, src, dst):
        self.native.add_copy(src, dst)
        self.ref.ops.append(("copy", src, dst))
        return self

    def axpy(self, src, dst, w):
        self.native.add_axpy(src, dst, w)
        self.ref.ops.append(("axpy", src, dst, w))
        return self

    def check(self, rng, in_dims, channels, n1=3, n2=2, dtype=np.float64):
        """Symmetric and cross Grams, NNGP and NTK, against the reference on every pair."""
        x1 = rng.standard_normal((n1, *in_dims, channels))
        x2 = rng.standard_normal((n2, *in_dims, channels))
        size = self.native.out_size
        for a, b in ((x1, None), (x1, x2)):
            outs = _engine.spatial_gram(self.native, a, b, ("nngp", "ntk"), out_size=size, dtype=dtype)
            other = a if b is None else b
            for i in range(a.shape[0]):
                for j in range(other.shape[0]):
                    s, t = self.ref.run(a[i], other[j])
                    rtol = RTOL if dtype == np.float64 else 1e-6
                    np.testing.assert_allclose(outs["nngp"][i, j], s, rtol=rtol, atol=ATOL)
                    np.testing.assert_allclose(outs["ntk"][i, j], t, rtol=rtol, atol=ATOL)
            assert all(o.dtype == dtype for o in outs.values())
        return outs


@pytest.fixture
def rng():
    return np.random.default_rng(11)


# ---------------------------------------------------------------------------------------
# Linear maps


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(
    "dims, window, strides, padding",
    [
        ((7,), (3,), (1,), "SAME"),
        ((7,), (3,), (2,), "VALID"),
        ((6,), (4,), (1,), "CIRCULAR"),
        ((4, 5), (3, 3), (1, 1), "SAME"),
        ((6, 5), (3, 3), (1, 1), "VALID"),
        ((5, 4), (3, 2), (2, 1), "VALID"),
        ((4, 5), (3, 3), (2, 2), "CIRCULAR"),
        ((5, 4), (2, 3), (1, 2), "SAME"),
        ((3, 4, 3), (2, 3, 2), (1, 1, 2), "SAME"),
        ((3, 3, 4), (3, 1, 2), (1, 1, 1), "VALID"),
        ((3, 4, 3), (3, 3, 3), (2, 1, 1), "CIRCULAR"),
        # windows larger than the axis wrap around it more than once (Neural Tangents does)
        ((2, 3), (5, 3), (1, 1), "CIRCULAR"),
        ((3,), (8,), (2,), "CIRCULAR"),
    ],
)
def test_conv_relu(rng, full, dims, window, strides, padding):
    b = Both(dims, 2, full)
    out = b.conv(0, dims, window, strides, padding)
    b.relu(0)
    b.conv(0, out, window, (1,) * len(dims), "SAME")
    assert tuple(b.native.out_dims) == out
    b.check(rng, dims, 2)


@pytest.mark.parametrize("full", [False, True])
def test_erf_and_flatten(rng, full):
    dims = (4, 3)
    b = Both(dims, 3, full)
    b.conv(0, dims, (2, 2), (1, 1), "SAME")
    b.erf(0)
    b.linear(0, 0, "flatten", dims, (), scale=1.0 / 12, alpha=1.5, beta=0.2, gamma=0.7, delta=1.5, eps=0.3)
    assert b.native.out_dims == [] and b.native.out_size == 1
    b.check(rng, dims, 3)


@pytest.mark.parametrize("normalize_edges", [False, True])
@pytest.mark.parametrize(
    "dims, window, strides, padding",
    [
        ((5, 4), (2, 2), (2, 2), "VALID"),
        ((5, 4), (3, 3), (1, 1), "SAME"),
        ((7,), (3,), (2,), "SAME"),
        ((5, 4), (3, 2), (2, 1), "CIRCULAR"),
        ((2, 4), (5, 2), (1, 1), "CIRCULAR"),
        ((3, 3, 2), (2, 2, 2), (1, 2, 1), "SAME"),
    ],
)
def test_pool(rng, normalize_edges, dims, window, strides, padding):
    b = Both(dims, 2, True)
    b.conv(0, dims, (2,) * len(dims), (1,) * len(dims), "SAME")
    b.relu(0)
    out, pads = zip(*(out_size_and_pad(n, k, s, padding) for n, k, s in zip(dims, window, strides)))
    b.linear(0, 0, "pool", dims, out, window, strides, pads, circular=padding == "CIRCULAR",
             normalize_edges=normalize_edges, scale=1.0 / math.prod(window))  # fmt: skip
    b.check(rng, dims, 2)


def test_global_and_identity(rng):
    dims = (3, 4)
    b = Both(dims, 2, True)
    b.conv(0, dims, (3, 3), (1, 1), "SAME")
    b.relu(0)
    b.linear(0, 0, "global", dims, (), scale=1.0 / 144)
    b.linear(0, 0, "identity", (), (), scale=2.0, alpha=0.5, beta=0.1, gamma=0.25, delta=0.5, eps=0.05)
    outs = b.check(rng, dims, 2)
    assert outs["nngp"].shape[-1] == 1


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("spatial", [False, True])
def test_layernorm(rng, full, spatial):
    dims = (4, 3)
    b = Both(dims, 2, full)
    b.conv(0, dims, (3, 3), (1, 1), "SAME")
    b.relu(0)
    b.layernorm(0, spatial, 1e-3)
    b.conv(0, dims, (2, 2), (1, 1), "VALID")
    b.check(rng, dims, 2)


@pytest.mark.parametrize("full", [False, True])
def test_registers_residual(rng, full):
    """A residual block: copy the input aside, conv + relu + conv, add the copy back."""
    dims = (5, 3)
    b = Both(dims, 2, full, n_registers=3)
    b.conv(0, dims, (3, 3), (1, 1), "SAME")
    b.copy(0, 1)
    b.relu(1)
    b.conv(1, dims, (3, 3), (1, 1), "SAME", dst=2)
    b.axpy(2, 0, 1.0)
    b.axpy(0, 0, -0.25)  # src == dst
    b.relu(0)
    b.check(rng, dims, 2)


def test_symmetric_diagonal_is_exact_and_matches_copy(rng):
    """x2=None: the diagonal entries come from each image's own walk, where the exact diagonal
    maps apply (ReLU's F(q, q, q) = q / 2); the off-diagonal entries equal those of an explicit
    x2 = x1.copy() call (same pair maps, same order of terms)."""
    dims = (4, 4)
    b = Both(dims, 3, True)
    b.conv(0, dims, (3, 3), (1, 1), "SAME", w_var=2.0, b_var=0.0)
    b.relu(0)
    b.linear(0, 0, "global", dims, (), scale=1.0 / 256)
    x = rng.standard_normal((4, *dims, 3))
    sym = _engine.spatial_gram(b.native, x, None, ("nngp", "ntk"))
    cross = _engine.spatial_gram(b.native, x, x.copy(), ("nngp", "ntk"))
    for name in ("nngp", "ntk"):
        np.testing.assert_array_equal(sym[name], np.swapaxes(sym[name], 0, 1))
        off = ~np.eye(4, dtype=bool)
        np.testing.assert_allclose(sym[name][off], cross[name][off], rtol=1e-13, atol=0)
        np.testing.assert_allclose(np.diagonal(sym[name][..., 0]), np.diagonal(cross[name][..., 0]), rtol=1e-7)
    # A full-regime output mirrors as the transpose: K(y, x)[a, b] = K(x, y)[b, a].
    c = Both(dims, 3, True)
    c.conv(0, dims, (3, 3), (1, 1), "SAME")
    c.relu(0)
    out = _engine.spatial_gram(c.native, x, None, ("nngp",))["nngp"].reshape(4, 4, 16, 16)
    np.testing.assert_array_equal(out[1, 2], out[2, 1].T)
    crossed = _engine.spatial_gram(c.native, x[2:3], x[1:2], ("nngp",))["nngp"].reshape(16, 16)
    np.testing.assert_allclose(out[2, 1], crossed, rtol=1e-13, atol=1e-15)


def test_float32_and_nngp_only(rng):
    dims = (4, 4)
    b = Both(dims, 2, True)
    b.conv(0, dims, (3, 3), (1, 1), "SAME")
    b.relu(0)
    b.check(rng, dims, 2, dtype=np.float32)
    x = rng.standard_normal((3, *dims, 2))
    both = _engine.spatial_gram(b.native, x, None, ("nngp", "ntk"))
    alone = _engine.spatial_gram(b.native, x, None, ("nngp",))
    assert set(alone) == {"nngp"}
    np.testing.assert_array_equal(alone["nngp"], both["nngp"])


def test_overflow_raises(rng):
    dims = (3,)
    b = Both(dims, 1, False)
    for _ in range(4):
        b.linear(0, 0, "conv", dims, dims, (3,), (1,), (1,), scale=1e80, alpha=1.0, gamma=1.0, delta=1.0)
    with pytest.raises(FloatingPointError, match="CNN"):
        _engine.spatial_gram(b.native, rng.standard_normal((2, 3, 1)), None, ("nngp", "ntk"))


# ---------------------------------------------------------------------------------------
# Bad arguments


def _prog(full=True, registers=2):
    return _core.SpatialProgram([4, 4], 2, full, registers)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: _core.SpatialProgram([], 2, True, 1), "in_dims"),
        (lambda: _core.SpatialProgram([4, 4, 4, 4], 2, True, 1), "in_dims"),
        (lambda: _core.SpatialProgram([4, 0], 2, True, 1), "in_dims"),
        (lambda: _core.SpatialProgram([4], 0, True, 1), "channels"),
        (lambda: _core.SpatialProgram([4], 1, True, 0), "n_registers"),
        (lambda: _prog().add_linear(1, 0, "conv", [4, 4], [4, 4], [3, 3], [1, 1], [1, 1]), "src"),
        (lambda: _prog().add_linear(0, 5, "conv", [4, 4], [4, 4], [3, 3], [1, 1], [1, 1]), "dst"),
        (lambda: _prog().add_linear(0, 0, "conv", [4, 5], [4, 5], [3, 3], [1, 1], [1, 1]), "in_dims"),
        (lambda: _prog().add_linear(0, 0, "conv", [4, 4], [4, 4], [3], [1, 1], [1, 1]), "window"),
        (lambda: _prog().add_linear(0, 0, "conv", [4, 4], [4, 4], [3, 3], [0, 1], [1, 1]), "strides"),
        (lambda: _prog().add_linear(0, 0, "conv", [4, 4], [6, 4], [3, 3], [1, 1], [1, 1]), "out size"),
        (lambda: _prog().add_linear(0, 0, "conv", [4, 4], [4, 4], [3, 3], [1, 1], [1, 1], scale=math.inf), "scale"),
        (lambda: _prog(full=False).add_linear(0, 0, "pool", [4, 4], [2, 2], [2, 2], [2, 2], [0, 0]), "full"),
        (lambda: _prog(full=False).add_linear(0, 0, "global", [4, 4], []), "full"),
        (lambda: _prog().add_linear(0, 0, "flatten", [4, 4], [4]), "out_dims"),
        (lambda: _prog().add_linear(0, 0, "identity", [4, 4], [2, 2]), "identity"),
        (lambda: _prog().add_linear(0, 0, "dense", [4, 4], [4, 4]), "map"),
        (lambda: _prog().add_activation(1, _fc_program(), 1), "src_dst"),
        (lambda: _prog().add_activation(0, _fc_program(), 0), "Dense"),
        (lambda: _prog().add_activation(0, _fc_program(), 4), "op_index"),
        (lambda: _prog().add_layernorm(0, False, -1.0), "eps"),
        (lambda: _prog().add_copy(1, 0), "src"),
        (lambda: _prog().add_axpy(0, 1, 1.0), "dst"),
        (
            lambda: _prog()
            .add_linear(0, 1, "pool", [4, 4], [2, 2], [2, 2], [2, 2], [0, 0])
            .add_axpy(1, 0, 1.0),
            "shape",
        ),
    ],
)
def test_bad_builder_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_gram_arguments(rng):
    p = _prog()
    x = rng.standard_normal((2, 4 * 4 * 2))
    with pytest.raises(ValueError, match="x1"):
        _core.spatial_gram(p, np.ascontiguousarray(x[:, :-1]), None, np.empty((2, 2, 256)), None)
    with pytest.raises(ValueError, match="nngp"):
        _core.spatial_gram(p, x, None, np.empty((2, 2, 255)), None)
    with pytest.raises(ValueError, match="out_size"):
        _engine.spatial_gram(p, x, None, ("nngp",), out_size=16)
    with pytest.raises(ValueError, match="dtype"):
        _engine.spatial_gram(p, x, None, ("nngp",), dtype=np.int32)


def test_program_properties():
    p = _core.SpatialProgram([6, 5], 3, True, 2)
    p.set_layer(4)
    p.add_linear(0, 0, "conv", [6, 5], [3, 3], [2, 3], [2, 2], [0, 1])
    p.add_activation(0, _fc_program(), 1)
    assert p.n_ops == 2 and p.n_activations == 1 and p.full and p.out_dims == [3, 3]
    assert p.out_size == 81 and p.op_layers == [4, 4] and p.channels == 3 and p.in_dims == [6, 5]


@pytest.mark.parametrize("full", [False, True])
def test_threads_do_not_change_results(rng, full):
    """Each pair's walk is sequential and its BLAS call has a fixed shape: the entries do not
    depend on the number of threads (bit for bit)."""
    dims = (4, 4)
    b = Both(dims, 2, full)
    b.conv(0, dims, (3, 3), (1, 1), "SAME")
    b.relu(0)
    x = rng.standard_normal((9, *dims, 2))
    try:
        _engine.set_num_threads(1)
        one = _engine.spatial_gram(b.native, x, None, ("nngp", "ntk"))
        _engine.set_num_threads(2)
        two = _engine.spatial_gram(b.native, x, None, ("nngp", "ntk"))
    finally:
        _engine.set_num_threads(None)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])


def test_gaussian_divergence_is_a_value_error(rng):
    """Gaussian(a, b > 0) needs 4 b q < 1 at every position: the point pass checks each image
    before any pair is computed and names the layer."""
    fc = _core.Program()
    fc.add_dense(1.0, None, False, 1.0)
    fc.add_gaussian(1.0, 0.5)
    p = _core.SpatialProgram([3], 1, False, 1)
    p.set_layer(7)
    p.add_activation(0, fc, 1)
    small = np.full((2, 3, 1), 0.5)  # q = 0.25: 4 b q = 0.5
    out = _engine.spatial_gram(p, small, None, ("nngp",))["nngp"]
    np.testing.assert_allclose(out[0, 0], 1.0 / math.sqrt(1.0 - 4 * 0.5 * 0.25), rtol=1e-14)
    big = small.copy()
    big[1, 2, 0] = 2.0  # q = 4 at position 2 of image 1
    with pytest.raises(ValueError, match=r"Gaussian.*layer 7.*image 1 of x1.*position 2"):
        _engine.spatial_gram(p, big, None, ("nngp",))


# A full-regime CNN (a pair: a few milliseconds), the number of images sized to this machine.
_CTRL_C_NET = """
import numpy as np
from fastntk import _core, _engine
fc = _core.Program()
fc.add_dense(1.0, None, False, 1.0)
fc.add_abrelu(0.0, 1.0)
sprog = _core.SpatialProgram([16, 16], 3, True, 1)
for _ in range(4):
    sprog.add_linear(0, 0, "conv", [16, 16], [16, 16], [3, 3], [1, 1], [1, 1], False, False, 1 / 9, 2.0, 0.0, 2.0,
                     2.0, 0.0)
    sprog.add_activation(0, fc, 1)
sprog.add_linear(0, 0, "global", [16, 16], [])
x = np.random.default_rng(0).standard_normal(({n}, 16, 16, 3))
"""


def test_ctrl_c_stops_spatial_gram():
    """The pairs release the GIL and poll for Ctrl-C between pairs."""
    from ctrl_c import seconds_to_stop, size_for  # noqa: PLC0415

    scope = {}
    exec(_CTRL_C_NET.format(n=1), scope)
    sprog, x = scope["sprog"], np.random.default_rng(0).standard_normal((400, 16, 16, 3))
    n = size_for(4.0, lambda m: _engine.spatial_gram(sprog, x[:m], None, ("nngp", "ntk")), 4, power=2)
    seconds = seconds_to_stop(_CTRL_C_NET.format(n=n), '_engine.spatial_gram(sprog, x, None, ("nngp", "ntk"))')
    assert seconds < 1.0, f"took {seconds:.2f} s after Ctrl-C to stop"


def test_out_shape_tail_alias(rng):
    """The front end passes the output's trailing shape instead of its size."""
    p = _core.SpatialProgram([3, 2], 1, True, 1)
    x = rng.standard_normal((2, 6))
    a = _engine.spatial_gram(p, x, None, ("nngp",), out_shape_tail=(36,))["nngp"]
    b = _engine.spatial_gram(p, x, None, ("nngp",), out_shape_tail=(6, 6))["nngp"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0, 1].reshape(6, 6), np.outer(x[0], x[1]), rtol=1e-15)
    with pytest.raises(ValueError, match="out_size"):
        _engine.spatial_gram(p, x, None, ("nngp",), out_shape_tail=(6,))
