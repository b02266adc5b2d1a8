"""A slow, plain NumPy reference of the infinite-width NNGP / NTK of convolutional and
residual networks, independent of fastntk (and of JAX / Neural Tangents).

It is written from the formulas of the infinite-channel limit, with Neural Tangents'
conventions (the facts are listed, with their numerical checks, in the session notes
``nt_facts.md``):

* A point is an image ``x[*spatial, channel]`` with 0 to 3 spatial axes (NHWC without the
  batch axis). The state of the network on a set of M points is the joint covariance of
  all positions of all points, ``K[a, b, p, q]`` (points a, b; positions p, q in row-major
  order over the current spatial shape), and the NTK ``T`` of the same shape. The pairs
  a == b hold each point's own covariance, whose diagonal gives the per-position
  variances the activations and LayerNorm need, so the pair (x, y) and the self pairs
  (x, x), (y, y) always go through the same formulas.
* Input: ``K[a, b, p, q] = x_a[p, :] . x_b[q, :] / C``, ``T = 0``.
* Every spatial map loops over output positions and filter offsets explicitly.

The spatial covariance is always kept in full (the "diagonal regime" of the engine is an
optimization; here its numbers are the diagonal ``K[a, b, p, p]``).

Architectures are lists of ``(name, params)`` pairs:

    ('dense', dict(W_std=, b_std=None|float, parameterization='ntk'|'standard', out_dim=None|int))
        acts on the channel axis (every position, shared weights)
    ('conv', dict(out_chan=, filter_shape=(..), strides=None|(..), padding='VALID'|'SAME'|'CIRCULAR',
                  W_std=, b_std=None|float, parameterization='ntk'|'standard'))
    ('avg_pool', dict(window_shape=(..), strides=None|(..), padding=.., normalize_edges=False))
    ('sum_pool', dict(window_shape=(..), strides=None|(..), padding=..))
    ('global_avg_pool', {}), ('global_sum_pool', {}), ('flatten', {}), ('identity', {})
    ('layer_norm', dict(axis=-1|tuple, eps=1e-12))
    ('fan_out', dict(n=)), ('parallel', dict(branches=[spec, spec, ...])),
    ('fan_in_sum', {}), ('fan_in_concat', dict(axis=-1)), ('serial', dict(layers=spec))
    activations as in tests/reference.py: ('abrelu', dict(a=, b=)), ('erf', dict(a=, b=, c=)), ...

:func:`spec_from_fastntk` converts fastntk layers / networks into this form by their class
names and attributes (Neural Tangents' argument names), without importing fastntk.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from reference import _ACTIVATIONS, _sign_diag

# ---------------------------------------------------------------------------------------
# Geometry of a window over one spatial axis


def out_size_and_pad(n: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """Output length and low-side padding of a window of size k, stride s over n positions.

    VALID: no padding, floor((n - k) / s) + 1 outputs. SAME and CIRCULAR: ceil(n / s)
    outputs, padded by max((out - 1) s + k - n, 0) in all, the smaller half (floor) on
    the low side (XLA's / TensorFlow's convention, which Neural Tangents uses).
    """
    padding = padding.upper()
    if padding == "VALID":
        if n < k:
            raise ValueError(f"a window of {k} does not fit {n} positions with VALID padding")
        return (n - k) // s + 1, 0
    if padding in ("SAME", "CIRCULAR"):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return out, total // 2
    raise ValueError(f"padding must be VALID, SAME or CIRCULAR, got {padding!r}")


def _window_geometry(dims, window, strides, padding):
    """Output dims, and for each output position (row-major) and each window offset
    (row-major), the flat input position it reads, or None where it reads the zero padding."""
    if len(window) != len(dims):
        raise ValueError(f"window {window} does not match the {len(dims)} spatial axes {dims}")
    strides = tuple(strides) if strides is not None else (1,) * len(dims)
    circular = padding.upper() == "CIRCULAR"
    per_axis = [out_size_and_pad(n, k, s, padding) for n, k, s in zip(dims, window, strides)]
    out_dims = tuple(o for o, _ in per_axis)
    pads = [lo for _, lo in per_axis]
    offsets = list(itertools.product(*(range(k) for k in window)))
    table = []
    for o in itertools.product(*(range(m) for m in out_dims)):
        row = []
        for u in offsets:
            src = []
            for ax in range(len(dims)):
                pos = strides[ax] * o[ax] + u[ax] - pads[ax]
                if circular:
                    pos %= dims[ax]
                elif not 0 <= pos < dims[ax]:
                    src = None
                    break
                src.append(pos)
            row.append(None if src is None else int(np.ravel_multi_index(src, dims)) if dims else 0)
        table.append(row)
    return out_dims, table


# ---------------------------------------------------------------------------------------
# Linear maps of a covariance array A[M, M, S, S] (loops over positions and offsets)


def conv_map(A, dims, window, strides, padding):
    """Covariance after a weight-shared convolution with unit weights normalized by the
    filter size: out[p', q'] = (1 / |window|) sum_u A[src(p', u), src(q', u)] (the same
    offset u for both positions: one filter is shared by all positions)."""
    out_dims, table = _window_geometry(dims, window, strides, padding)
    size = math.prod(window)
    M = A.shape[0]
    S_out = math.prod(out_dims)
    out = np.zeros((M, M, S_out, S_out))
    for p in range(S_out):
        for q in range(S_out):
            acc = np.zeros((M, M))
            for sp, sq in zip(table[p], table[q]):
                if sp is not None and sq is not None:
                    acc += A[:, :, sp, sq]
            out[:, :, p, q] = acc / size
    return out, out_dims


def pool_map(A, dims, window, strides, padding, average, normalize_edges):
    """Covariance after sum / average pooling: both positions pool their own windows
    independently, out[p', q'] = c(p') c(q') sum_{u, v} A[src(p', u), src(q', v)]."""
    out_dims, table = _window_geometry(dims, window, strides, padding)
    size = math.prod(window)
    M = A.shape[0]
    S_out = math.prod(out_dims)
    if not average:
        coef = [1.0] * S_out
    elif normalize_edges and padding.upper() == "SAME":
        # the number of window positions that fall inside the image
        coef = [1.0 / sum(s is not None for s in table[p]) for p in range(S_out)]
    else:
        coef = [1.0 / size] * S_out
    out = np.zeros((M, M, S_out, S_out))
    for p in range(S_out):
        for q in range(S_out):
            acc = np.zeros((M, M))
            for sp in table[p]:
                for sq in table[q]:
                    if sp is not None and sq is not None:
                        acc += A[:, :, sp, sq]
            out[:, :, p, q] = coef[p] * coef[q] * acc
    return out, out_dims


def trace_map(A):
    """Flatten: the mean over positions of the same-position covariance, (1/S) sum_p A[p, p]."""
    S = A.shape[2]
    acc = np.zeros(A.shape[:2])
    for p in range(S):
        acc += A[:, :, p, p]
    return (acc / S)[:, :, None, None]


def global_map(A, average):
    """Global pooling: sum_{p, q} A[p, q], divided by S^2 for the average."""
    S = A.shape[2]
    acc = np.zeros(A.shape[:2])
    for p in range(S):
        for q in range(S):
            acc += A[:, :, p, q]
    return ((acc / S**2) if average else acc)[:, :, None, None]


# ---------------------------------------------------------------------------------------
# The state of one branch


class _State:
    """K, T: [M, M, S, S] float64; dims: spatial shape; width: channels of the finite net
    (None when unknown: a Dense without out_dim); reversed: whether Neural Tangents would
    hold this kernel with its spatial axes in reverse order (it flips them at every Conv;
    only the layout of a spatial output depends on it, see :func:`to_nt_layout`)."""

    def __init__(self, K, T, dims, width, reversed=False):
        self.K, self.T, self.dims, self.width, self.reversed = K, T, tuple(dims), width, reversed

    def copy(self):
        return _State(self.K.copy(), self.T.copy(), self.dims, self.width, self.reversed)


def _diag(K):
    """The per-point, per-position variances K[a, a, p, p]: [M, S]."""
    M, S = K.shape[0], K.shape[2]
    return np.array([[K[a, a, p, p] for p in range(S)] for a in range(M)])


def _affine(st, p, L_K, L_T, fan_in_factor):
    """A Dense / Conv update from the maps L_K = L(K), L_T = L(T) of the input state.

    ntk:      K' = W^2 L(K) + b^2,  T' = K' + W^2 L(T)
    standard: K' = W^2 L(K) + b^2,  T' = n_in L(K) + W^2 L(T) (+ 1 with a bias),
    where n_in L(K) is the gradient of the weights themselves (n_in = fan-in: channels,
    times the filter size for a Conv, whose L carries 1/size).
    """
    w2 = p["W_std"] ** 2
    b2 = 0.0 if p["b_std"] is None else p["b_std"] ** 2
    K_new = w2 * L_K + b2
    param = p.get("parameterization", "ntk").lower()
    if param == "ntk":
        T_new = K_new + w2 * L_T
    elif param == "standard":
        if st.width is None:
            raise ValueError("the standard parameterization needs the input width (give out_dim)")
        one = 0.0 if p["b_std"] is None else 1.0
        T_new = st.width * fan_in_factor * L_K + w2 * L_T + one
    else:
        raise ValueError(p["parameterization"])
    return K_new, T_new


def _dense(st, p):
    K, T = _affine(st, p, st.K, st.T, 1)
    width = st.width if p.get("out_dim") is None else p["out_dim"]
    return _State(K, T, st.dims, width, st.reversed)


def _conv(st, p):
    window = tuple(p["filter_shape"])
    L_K, out_dims = conv_map(st.K, st.dims, window, p.get("strides"), p.get("padding", "VALID"))
    L_T, _ = conv_map(st.T, st.dims, window, p.get("strides"), p.get("padding", "VALID"))
    K, T = _affine(st, p, L_K, L_T, math.prod(window))
    return _State(K, T, out_dims, p["out_chan"], not st.reversed)


def _activation(st, name, p):
    f = _ACTIVATIONS[name](p)
    q = _diag(st.K)
    M, S = q.shape
    K, T = np.empty_like(st.K), np.empty_like(st.T)
    for i in range(S):
        for j in range(S):
            # entry [a, b, i, j] uses q_a[i] and q_b[j]
            K[:, :, i, j], T[:, :, i, j] = f(st.K[:, :, i, j], q[:, None, i], q[None, :, j], st.T[:, :, i, j])
    if name == "sign":
        # the variance of sign(u) is 1 (0 for u == 0); set the self entries from the diagonal map
        for a in range(M):
            for i in range(S):
                K[a, a, i, i] = _sign_diag(q[a, i])
    return _State(K, T, st.dims, st.width, st.reversed)


def _layer_norm(st, p):
    """Divide by the standard deviations: per position (axis = channels only) or, when axis
    also lists spatial axes, by the mean of the variances over those axes (each + eps)."""
    nd = len(st.dims)
    ndim = nd + 2
    axis = p.get("axis", -1)
    axes = {a % ndim for a in ((axis,) if isinstance(axis, int) else tuple(axis))}
    if ndim - 1 not in axes:
        raise ValueError(f"LayerNorm must normalize over the channel axis, got axis={axis}")
    if 0 in axes:
        raise NotImplementedError("LayerNorm over the batch axis")
    spatial = tuple(a - 1 for a in sorted(axes) if 1 <= a <= nd)
    eps = p.get("eps", 1e-12)
    M = st.K.shape[0]
    var = (_diag(st.K) + eps).reshape((M,) + st.dims)
    if spatial:
        var = np.mean(var, axis=tuple(1 + a for a in spatial), keepdims=True)
        var = np.broadcast_to(var, (M,) + st.dims)
    v = var.reshape(M, -1)
    S = v.shape[1]
    K, T = np.empty_like(st.K), np.empty_like(st.T)
    for i in range(S):
        for j in range(S):
            scale = np.sqrt(v[:, None, i] * v[None, :, j])
            K[:, :, i, j] = st.K[:, :, i, j] / scale
            T[:, :, i, j] = st.T[:, :, i, j] / scale
    return _State(K, T, st.dims, st.width, st.reversed)


def _majority_reversed(states):
    """Neural Tangents' layout after a fan-in: reversed iff more than half the branches are."""
    return sum(s.reversed for s in states) > len(states) / 2


def _concat(states, axis):
    nd = len(states[0].dims)
    if axis % (nd + 2) != nd + 1:
        raise NotImplementedError(f"FanInConcat along axis {axis} (only the channel axis)")
    widths = [s.width for s in states]
    if any(w is None for w in widths):
        if len(set(widths)) != 1:
            raise ValueError(f"FanInConcat of branches of unknown widths {widths}")
        weights = [1.0 / len(states)] * len(states)
        width = None
    else:
        # the concatenated channels: each branch's covariance weighted by its share of them
        weights = [w / sum(widths) for w in widths]
        width = sum(widths)
    K = sum(w * s.K for w, s in zip(weights, states))
    T = sum(w * s.T for w, s in zip(weights, states))
    return _State(K, T, states[0].dims, width, _majority_reversed(states))


def _run(spec, states):
    """Apply the layers of spec to a list of branch states (one, or n after a FanOut)."""
    for name, p in spec:
        if name == "serial":
            states = _run(p["layers"], states)
            continue
        if name == "fan_out":
            if len(states) != 1:
                raise ValueError("FanOut of several branches")
            states = [states[0].copy() for _ in range(p["n"])]
            continue
        if name == "parallel":
            branches = p["branches"]
            if len(branches) != len(states):
                raise ValueError(f"parallel of {len(branches)} branches on {len(states)} inputs")
            out = []
            for b, st in zip(branches, states):
                r = _run(b, [st])
                if len(r) != 1:
                    raise ValueError("a parallel branch must end in one output")
                out.append(r[0])
            states = out
            continue
        if name == "fan_in_sum":
            if any(s.dims != states[0].dims for s in states):
                raise ValueError(f"FanInSum of shapes {[s.dims for s in states]}")
            K, T = sum(s.K for s in states), sum(s.T for s in states)
            states = [_State(K, T, states[0].dims, states[0].width, _majority_reversed(states))]
            continue
        if name == "fan_in_concat":
            states = [_concat(states, p.get("axis", -1))]
            continue
        if len(states) != 1:
            raise ValueError(f"layer {name} applied to {len(states)} branches")
        st = states[0]
        if name == "identity":
            pass
        elif name == "dense":
            st = _dense(st, p)
        elif name == "conv":
            st = _conv(st, p)
        elif name in ("avg_pool", "sum_pool"):
            window = tuple(p["window_shape"])
            padding = p.get("padding", "VALID")
            avg = name == "avg_pool"
            ne = bool(p.get("normalize_edges", False)) and avg
            K, dims = pool_map(st.K, st.dims, window, p.get("strides"), padding, avg, ne)
            T, _ = pool_map(st.T, st.dims, window, p.get("strides"), padding, avg, ne)
            st = _State(K, T, dims, st.width, st.reversed)
        elif name == "flatten":
            width = None if st.width is None else st.width * math.prod(st.dims)
            st = _State(trace_map(st.K), trace_map(st.T), (), width)
        elif name in ("global_avg_pool", "global_sum_pool"):
            avg = name == "global_avg_pool"
            st = _State(global_map(st.K, avg), global_map(st.T, avg), (), st.width)
        elif name == "layer_norm":
            st = _layer_norm(st, p)
        elif name in _ACTIVATIONS:
            st = _activation(st, name, p)
        else:
            raise ValueError(f"unknown layer {name!r}")
        states = [st]
    return states


# ---------------------------------------------------------------------------------------
# Entry point


def input_covariance(z):
    """K[a, b, p, q] = z_a[p, :] . z_b[q, :] / C for points z[M, *dims, C]."""
    M, C = z.shape[0], z.shape[-1]
    X = z.reshape(M, -1, C)
    S = X.shape[1]
    K = np.zeros((M, M, S, S))
    for p in range(S):
        for q in range(S):
            K[:, :, p, q] = X[:, p, :] @ X[:, q, :].T / C
    return K


def to_nt_layout(A, dims, spatial="full", reversed=False):
    """[N1, N2, S, S] -> Neural Tangents' shape of the kernel.

    A scalar output: (N1, N2). A spatial output, spatial='full': the two positions' axes
    interleaved per spatial axis, (N1, N2, d1, d1, d2, d2, ...), and in reverse axis order
    (N1, N2, ..., d2, d2, d1, d1) when ``reversed`` (Neural Tangents returns its internal
    layout, flipped by every Conv); spatial='diagonal': (N1, N2, d1, d2, ...) (the entries
    at positions (p, p), in natural axis order).
    """
    N1, N2 = A.shape[:2]
    if not dims:
        return A[:, :, 0, 0].copy()
    if spatial == "diagonal":
        S = A.shape[2]
        return np.stack([A[:, :, p, p] for p in range(S)], axis=-1).reshape((N1, N2) + tuple(dims))
    if spatial != "full":
        raise ValueError(f"spatial must be 'full' or 'diagonal', got {spatial!r}")
    nd = len(dims)
    full = A.reshape((N1, N2) + tuple(dims) + tuple(dims))
    axes = range(nd - 1, -1, -1) if reversed else range(nd)
    order = [0, 1] + [ax for k in axes for ax in (2 + k, 2 + nd + k)]
    return full.transpose(order).copy()


def cnn_kernels_ref(spec, x1, x2=None, spatial="full", return_scale=False):
    """(nngp, ntk) of the architecture `spec` between the points of x1 and x2 (x2=None: x1).

    Parameters
    ----------
    spec : list of (name, params)
        The architecture (module docstring), or a fastntk network / layer list
        (converted with :func:`spec_from_fastntk`).
    x1 : array_like, shape (N1, *spatial, C)
        Points, NHWC with 0 to 3 spatial axes; any real dtype (used as float64).
    x2 : array_like, shape (N2, *spatial, C), optional
    spatial : {'full', 'diagonal'}
        Layout of a spatial output (see :func:`to_nt_layout`; 'full' is Neural Tangents'
        shape, including its axis reversal); ignored for a scalar output.
    return_scale : bool
        Also return, for each kernel, the Cauchy-Schwarz bound of each entry,
        sqrt(|K(x_a, x_a)[p, p]| |K(y_b, y_b)[q, q]|), in the same layout: the natural
        scale of an entry of a positive semi-definite kernel, for relative errors.

    Returns
    -------
    nngp, ntk : ndarray, float64, shape (N1, N2) or (N1, N2, *spatial layout)
    (nngp, ntk), (nngp_scale, ntk_scale) with return_scale.
    """
    if not isinstance(spec, list) or (spec and not isinstance(spec[0], tuple)):
        spec = spec_from_fastntk(spec)
    x1 = np.asarray(x1, dtype=np.float64)
    if x1.ndim < 2:
        raise ValueError(f"x1 must be (N, *spatial, C), got shape {x1.shape}")
    n1 = x1.shape[0]
    z = x1 if x2 is None else np.concatenate([x1, np.asarray(x2, dtype=np.float64)], axis=0)
    K = input_covariance(z)
    st = _State(K, np.zeros_like(K), x1.shape[1:-1], x1.shape[-1])
    (st,) = _run(spec, [st])
    rows, cols = (slice(None), slice(None)) if x2 is None else (slice(0, n1), slice(n1, None))
    out = tuple(to_nt_layout(A[rows, cols], st.dims, spatial, st.reversed) for A in (st.K, st.T))
    if not return_scale:
        return out
    scales = []
    for A in (st.K, st.T):
        d = np.abs(_diag(A))  # [M, S]
        bound = np.sqrt(d[:, None, :, None] * d[None, :, None, :])  # [M, M, S, S]
        scales.append(to_nt_layout(bound[rows, cols], st.dims, spatial, st.reversed))
    return out, tuple(scales)


# ---------------------------------------------------------------------------------------
# fastntk layers -> this form (by class names and Neural Tangents' attribute names)


# Each name of this form: the class of the same layer in fastntk and in Neural Tangents' stax
# (the same names in both) and its parameters, in the order of both constructors' positional
# arguments (as far as they are positional: stax's Dense and Conv take parameterization by
# keyword only). Layers with branches ('parallel', 'serial') are not in it.
LAYERS = {
    "dense": ("Dense", ("out_dim", "W_std", "b_std", "parameterization")),
    "conv": (
        "Conv",
        ("out_chan", "filter_shape", "strides", "padding", "W_std", "b_std", "parameterization"),
    ),
    "avg_pool": ("AvgPool", ("window_shape", "strides", "padding", "normalize_edges")),
    "sum_pool": ("SumPool", ("window_shape", "strides", "padding")),
    "global_avg_pool": ("GlobalAvgPool", ()),
    "global_sum_pool": ("GlobalSumPool", ()),
    "flatten": ("Flatten", ()),
    "identity": ("Identity", ()),
    "layer_norm": ("LayerNorm", ("axis", "eps")),
    "fan_out": ("FanOut", ("n",)),
    "fan_in_sum": ("FanInSum", ()),
    "fan_in_concat": ("FanInConcat", ("axis",)),
    "abrelu": ("ABRelu", ("a", "b")),
    "erf": ("Erf", ("a", "b", "c")),
    "sign": ("Sign", ()),
    "gelu": ("Gelu", ()),
    "sin": ("Sin", ("a", "b", "c")),
    "cos": ("Cos", ("a", "b", "c")),
    "rbf": ("Rbf", ("gamma",)),
    "exp": ("Exp", ("a", "b")),
    "gaussian": ("Gaussian", ("a", "b")),
    "monomial": ("Monomial", ("degree",)),
    "rectified_monomial": ("RectifiedMonomial", ("degree",)),
}
_NAME_OF_CLASS = {cls: name for name, (cls, _) in LAYERS.items()}
_SHAPES = frozenset({"filter_shape", "window_shape", "strides"})


def layer_from_spec(api, name, params):
    """The layer of one entry ``(name, params)`` from ``api`` (the module ``fastntk`` or
    ``neural_tangents.stax``), by :data:`LAYERS`'s positional arguments."""
    cls, keys = LAYERS[name]
    return getattr(api, cls)(*(params[k] for k in keys))


def _classes(obj):
    return [c.__name__ for c in type(obj).__mro__]


def _tuple_or_none(v):
    return None if v is None else tuple(int(a) for a in v)


def spec_from_fastntk(obj):
    """The reference spec of a fastntk network (``serial(...)``), layer, or list of layers."""
    if isinstance(obj, (list, tuple)):
        return [t for layer in obj for t in spec_from_fastntk(layer)]
    names = _classes(obj)
    if hasattr(obj, "layers") and ("Network" in names or "Serial" in names):
        return spec_from_fastntk(list(obj.layers))
    if "Parallel" in names:
        branches = getattr(obj, "branches", None)
        if branches is None:
            branches = obj.layers
        return [("parallel", dict(branches=[spec_from_fastntk(b) for b in branches]))]
    if names[0] == "FanOut":
        return [("fan_out", dict(n=getattr(obj, "num", None) or obj.n))]
    # The nearest class of the table: Relu, LeakyRelu and Abs are ABRelus.
    for cls in names:
        if cls in _NAME_OF_CLASS:
            name = _NAME_OF_CLASS[cls]
            params = {k: getattr(obj, k) for k in LAYERS[name][1]}
            return [(name, {k: _tuple_or_none(v) if k in _SHAPES else v for k, v in params.items()})]
    raise TypeError(f"spec_from_fastntk: no reference for {obj!r}")
