"""Finite convolutional and residual networks: ``init``, ``apply``, the empirical NTK/NNGP
and ``monte_carlo_kernel`` (fastntk._finite_spatial), against independent references:

1. ``apply`` against plain loops over output positions and window offsets, written here
   from Neural Tangents' conventions (NHWC, HWIO filters, lax's SAME padding split);
2. the empirical NTK against the Gram matrix of an explicit Jacobian, built here by central
   finite differences of ``apply`` over every scalar parameter of a tiny network
   (the parameters are flattened in this test only);
3. Monte Carlo over growing width against the infinite-width kernel of a one-hidden-layer
   CNN with a Flatten readout, computed here in closed form (the arc-cosine kernel per
   position): the error of one network's NTK shrinks like 1/sqrt(width), and the average
   over networks is unbiased;
4. the Monte Carlo average of a pooled residual CNN against tests/reference_cnn.py (the
   per-pixel infinite-width reference, whose window geometry the loops of 1. use too).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt

import reference_cnn as ref

# ---------------------------------------------------------------------------------------
# Plain loops (the references of apply).


def _source(i, n, circular):
    """Input index read at padded position i (None: zero padding)."""
    if circular:
        return i % n
    return i if 0 <= i < n else None


def conv_loop(x, W, b, strides, padding, c_w, c_b):
    """z[n, p, o] = c_w * sum_u sum_c x[n, s p + u - lo, c] W[u, c, o] + c_b b[o]."""
    spatial, window = x.shape[1:-1], W.shape[:-2]
    geo = [ref.out_size_and_pad(n, k, s, padding) for n, k, s in zip(spatial, window, strides)]
    out = np.zeros((x.shape[0],) + tuple(g[0] for g in geo) + (W.shape[-1],))
    for p in np.ndindex(*out.shape[1:-1]):
        for u in np.ndindex(*window):
            src = tuple(_source(s * pi + ui - g[1], n, padding == "CIRCULAR")
                        for pi, ui, s, g, n in zip(p, u, strides, geo, spatial))  # fmt: skip
            if None in src:
                continue
            out[(slice(None),) + p] += c_w * x[(slice(None),) + src] @ W[u]
    if b is not None:
        out += c_b * b
    return out


def pool_loop(x, window, strides, padding, average, normalize_edges):
    spatial, c = x.shape[1:-1], x.shape[-1]
    geo = [ref.out_size_and_pad(n, k, s, padding) for n, k, s in zip(spatial, window, strides)]
    out = np.zeros((x.shape[0],) + tuple(g[0] for g in geo) + (c,))
    for p in np.ndindex(*out.shape[1:-1]):
        count = 0
        for u in np.ndindex(*window):
            src = tuple(_source(s * pi + ui - g[1], n, padding == "CIRCULAR")
                        for pi, ui, s, g, n in zip(p, u, strides, geo, spatial))  # fmt: skip
            if None in src:
                continue
            count += 1
            out[(slice(None),) + p] += x[(slice(None),) + src]
        if average:
            out[(slice(None),) + p] /= (
                count if normalize_edges and padding != "CIRCULAR" else math.prod(window)
            )
    return out


def multipliers(layer, fan_in):
    if layer.parameterization == "ntk":
        return layer.W_std / math.sqrt(fan_in), (layer.b_std or 0.0)
    return 1.0, 1.0


def ref_apply(layers, params, h):
    """A loop-and-NumPy forward pass over fastntk's layer objects (read by class)."""
    for layer, p in zip(layers, params):
        name = type(layer).__name__
        if name == "Conv":
            W, b = p
            c_w, c_b = multipliers(layer, W[..., 0].size)
            h = conv_loop(h, W, b, layer.strides, layer.padding, c_w, c_b)
        elif name == "Dense":
            W, b = p
            c_w, c_b = multipliers(layer, W.shape[0])
            h = np.einsum("...c,co->...o", h, W) * c_w + (0 if b is None else c_b * b)
        elif name in ("AvgPool", "SumPool"):
            h = pool_loop(h, layer.window_shape, layer.strides, layer.padding, name == "AvgPool",
                          getattr(layer, "normalize_edges", False))  # fmt: skip
        elif name == "GlobalAvgPool":
            h = h.reshape(h.shape[0], -1, h.shape[-1]).mean(axis=1)
        elif name == "GlobalSumPool":
            h = h.reshape(h.shape[0], -1, h.shape[-1]).sum(axis=1)
        elif name == "Flatten":
            h = h.reshape(h.shape[0], -1)
        elif name == "LayerNorm":
            axes = tuple(a % h.ndim for a in layer.axis)
            mu = h.mean(axis=axes, keepdims=True)
            var = ((h - mu) ** 2).mean(axis=axes, keepdims=True)
            h = (h - mu) / np.sqrt(var + layer.eps)
        elif name == "FanOut":
            h = [h] * layer.num
        elif name == "Parallel":
            h = [ref_apply(br, pb, hi) for br, pb, hi in zip(layer.branches, p, h)]
        elif name == "FanInSum":
            h = sum(h[1:], h[0])
        elif name == "FanInConcat":
            h = np.concatenate(h, axis=layer.axis)
        elif name == "Identity":
            pass
        else:  # an activation
            h = layer.fn(h)
    return h


# ---------------------------------------------------------------------------------------
# 1. apply


CONV_CASES = [
    # (spatial shape, filter, strides, padding, parameterization, b_std)
    ((7,), (3,), (1,), "VALID", "ntk", 0.3),
    ((7,), (4,), (2,), "SAME", "standard", 0.5),
    ((6,), (3,), (2,), "CIRCULAR", "ntk", None),
    ((5, 6), (3, 2), (1, 1), "SAME", "ntk", 0.2),
    ((5, 6), (3, 3), (2, 1), "VALID", "standard", None),
    ((5, 4), (4, 3), (2, 2), "CIRCULAR", "ntk", 0.4),
    ((6, 5), (2, 2), (3, 2), "SAME", "ntk", 0.1),
    ((3, 4, 3), (2, 3, 2), (1, 2, 1), "SAME", "ntk", 0.3),
    ((3, 4, 3), (2, 2, 3), (1, 1, 1), "CIRCULAR", "standard", 0.2),
    ((4, 3, 3), (3, 2, 2), (1, 1, 2), "VALID", "ntk", None),
    ((2, 3), (5, 5), (1, 1), "CIRCULAR", "ntk", 0.0),  # the window wraps more than once
]


@pytest.mark.parametrize("spatial, window, strides, padding, param, b_std", CONV_CASES)
def test_conv_apply_matches_loops(rng, spatial, window, strides, padding, param, b_std):
    layer = nt.Conv(
        3, window, strides=strides, padding=padding, W_std=1.3, b_std=b_std, parameterization=param
    )
    net = nt.serial(layer)
    params = net.init(5, spatial + (2,))
    W, b = params[0]
    assert W.shape == window + (2, 3)
    assert (b is None) == (b_std is None)
    x = rng.standard_normal((3,) + spatial + (2,))
    np.testing.assert_allclose(net.apply(params, x), ref_apply(net.layers, params, x), rtol=1e-12, atol=1e-12)


def test_conv_init_distribution():
    """ntk: W, b standard normal; standard: W ~ N(0, W_std^2 / fan_in), b ~ N(0, b_std^2)
    with fan_in = prod(filter) * C_in. 5 sigma bounds on the sample variance (relative sd
    sqrt(2 / n) for n draws)."""
    for param, w_var, b_var in (("ntk", 1.0, 1.0), ("standard", 2.0**2 / (3 * 3 * 8), 0.5**2)):
        net = nt.serial(nt.Conv(400, (3, 3), W_std=2.0, b_std=0.5, parameterization=param))
        W, b = net.init(0, (4, 4, 8))[0]
        for a, var in ((W, w_var), (b, b_var)):
            assert abs(a.var() / var - 1) < 5 * math.sqrt(2 / a.size)
            assert abs(a.mean()) < 5 * math.sqrt(var / a.size)


@pytest.mark.parametrize(
    "pool",
    [
        nt.AvgPool((2, 2)),
        nt.AvgPool((3, 2), strides=(2, 1), padding="SAME"),
        nt.AvgPool((3, 3), strides=(2, 2), padding="SAME", normalize_edges=True),
        nt.AvgPool((3, 2), padding="CIRCULAR"),
        nt.SumPool((2, 3), strides=(2, 2)),
        nt.SumPool((3, 3), padding="SAME"),
        nt.SumPool((2, 2), strides=(2, 1), padding="CIRCULAR"),
        nt.GlobalAvgPool(),
        nt.GlobalSumPool(),
        nt.Flatten(),
        nt.LayerNorm(),
        nt.LayerNorm(axis=(1, 2, 3), eps=0.1),
    ],
    ids=repr,
)
def test_pool_flatten_layernorm_apply(rng, pool):
    net = nt.serial(nt.Conv(3, (2, 2), b_std=0.5), pool)
    params = net.init(1, (6, 5, 2))
    x = rng.standard_normal((2, 6, 5, 2))
    np.testing.assert_allclose(net.apply(params, x), ref_apply(net.layers, params, x), rtol=1e-12, atol=1e-12)


def residual_net(width=4, out=2):
    block = nt.serial(nt.Relu(), nt.Conv(width, (3, 3), padding="SAME", W_std=1.4, b_std=0.1))
    return nt.serial(
        nt.Conv(width, (3, 3), padding="CIRCULAR", b_std=0.2),
        nt.FanOut(2),
        nt.parallel(nt.Identity(), block),
        nt.FanInSum(),
        nt.LayerNorm(axis=-1),
        nt.FanOut(3),
        nt.parallel(
            nt.Conv(2, (1, 1)), nt.serial(nt.Erf(), nt.Conv(3, (2, 2), padding="SAME")), nt.Identity()
        ),
        nt.FanInConcat(),
        nt.Gelu(),
        nt.GlobalAvgPool(),
        nt.Dense(out, W_std=1.1, b_std=0.3),
    )


def test_branches_apply(rng):
    net = residual_net()
    params = net.init(2, (5, 4, 3))
    assert len(params) == len(net.layers) and len(params[2]) == 2 and params[2][0] == [()]
    x = rng.standard_normal((3, 5, 4, 3))
    np.testing.assert_allclose(net.apply(params, x), ref_apply(net.layers, params, x), rtol=1e-12, atol=1e-12)


def test_dense_on_images_and_fc_unchanged(rng):
    """Dense acts on the channel axis of images; FC networks on (N, d) keep their path."""
    net = nt.serial(nt.Dense(4, b_std=0.2), nt.Relu(), nt.Dense(2))
    x = rng.standard_normal((3, 5, 6, 2))
    params = net.init(0, (5, 6, 2))
    np.testing.assert_allclose(net.apply(params, x), ref_apply(net.layers, params, x), rtol=1e-12)
    flat = net.init(0, 2)
    assert all(np.array_equal(a, b) for p, q in zip(params, flat) for a, b in zip(p, q) if a is not None)


def test_init_is_reproducible_and_takes_nt_shapes():
    net = residual_net()
    a, b = net.init(7, (5, 4, 3)), net.init(7, (-1, 5, 4, 3))
    fa = [v for v in _leaves(a)]
    fb = [v for v in _leaves(b)]
    assert len(fa) == len(fb) and all(np.array_equal(u, v) for u, v in zip(fa, fb))


def test_errors_before_work(rng):
    net = nt.serial(nt.Conv(3, (4, 4)), nt.Relu(), nt.Flatten(), nt.Dense(1))
    with pytest.raises(ValueError, match=r"layer 0 .*does not fit"):
        net.init(0, (3, 5, 2))
    with pytest.raises(ValueError, match="spatial axes"):
        nt.serial(nt.Conv(3, (2,))).init(0, (4, 4, 2))
    with pytest.raises(ValueError, match="no out_chan"):
        nt.serial(nt.Conv(None, (2, 2))).init(0, (4, 4, 2))
    with pytest.raises(ValueError, match=r"layer 2 .*needs images"):
        nt.serial(nt.Flatten(), nt.Dense(2), nt.AvgPool((2,))).init(0, (4, 2))
    with pytest.raises(ValueError, match="FanInSum needs branches of one shape"):
        nt.serial(nt.FanOut(2), nt.parallel(nt.Conv(2, (1, 1)), nt.Conv(3, (1, 1))), nt.FanInSum()).init(
            0, (3, 3, 2)
        )
    params = net.init(0, (5, 5, 2))
    with pytest.raises(
        ValueError, match=r"input has 3 channels\): W must have shape \(4, 4, 3, 3\), got \(4, 4, 2, 3\)"
    ):
        net.apply(params, rng.standard_normal((2, 5, 5, 3)))
    with pytest.raises(ValueError, match="does not fit"):
        net.apply(params, rng.standard_normal((2, 3, 5, 2)))
    with pytest.raises(ValueError, match="batch axis"):
        net.empirical_ntk(params, rng.standard_normal((2, 5, 5, 2)), trace_axes=(0,))


# ---------------------------------------------------------------------------------------
# 2. Empirical NTK against an explicit finite-difference Jacobian.


def _leaves(tree):
    """The parameter arrays of a params tree, depth first (this test's flattening)."""
    if isinstance(tree, np.ndarray):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for t in tree:
            yield from _leaves(t)


def fd_jacobian(net, params, x, h=1e-6):
    """J[n, o, p] = d f_o(x_n) / d theta_p by central differences over every scalar
    parameter. Truncation error ~ h^2 f''' (1e-12 here) and round-off ~ u |f| / h (1e-10),
    so J is good to ~1e-9 relative; the NTK built from it to ~1e-8."""
    leaves = list(_leaves(params))
    cols = []
    for leaf in leaves:
        flat = leaf.reshape(-1)  # a view: the perturbation reaches params
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + h
            up = net.apply(params, x)
            flat[i] = keep - h
            down = net.apply(params, x)
            flat[i] = keep
            cols.append(((up - down) / (2 * h)).reshape(x.shape[0], -1))
    return np.stack(cols, axis=-1)


# Smooth activations only: a finite difference across a Relu kink would be wrong, not the code.
JACOBIAN_NETS = {
    "conv_pool_flatten": (
        nt.serial(
            nt.Conv(3, (2, 2), strides=(2, 1), padding="SAME", W_std=1.5, b_std=0.3),
            nt.Erf(),
            nt.AvgPool((2, 2), padding="SAME", normalize_edges=True),
            nt.Conv(2, (3, 2), padding="CIRCULAR", parameterization="standard", b_std=0.2),
            nt.Gelu(),
            nt.Flatten(),
            nt.Dense(2, b_std=0.4),
        ),
        (5, 4, 2),
    ),
    "residual_layernorm_concat": (residual_net(width=3, out=2), (4, 3, 2)),
    "conv1d_sumpool_gap": (
        nt.serial(
            nt.Conv(3, (3,), padding="SAME", b_std=None),
            nt.Sin(),
            nt.SumPool((2,), strides=(2,)),
            nt.Dense(2),
            nt.Erf(),
            nt.GlobalSumPool(),
            nt.Dense(3, b_std=None),
        ),  # fmt: skip
        (6, 2),
    ),
    "conv3d_layernorm_image": (
        nt.serial(
            nt.Conv(2, (2, 2, 2), padding="CIRCULAR", b_std=0.1),
            nt.LayerNorm(axis=(1, 2, 3, 4)),
            nt.Erf(),
            nt.Conv(2, (2, 1, 2), strides=(1, 1, 2)),
        ),  # fmt: skip
        (2, 3, 4, 2),
    ),
}


@pytest.mark.parametrize("name", list(JACOBIAN_NETS))
def test_empirical_ntk_matches_fd_jacobian(name):
    net, shape = JACOBIAN_NETS[name]
    rng = np.random.default_rng(3)
    params = net.init(11, shape)
    x1 = rng.standard_normal((3,) + shape)
    x2 = rng.standard_normal((2,) + shape)
    f1, f2 = net.apply(params, x1), net.apply(params, x2)
    out_shape = f1.shape[1:]
    j1, j2 = fd_jacobian(net, params, x1), fd_jacobian(net, params, x2)
    full = np.einsum("aop,bqp->aboq", j1, j2).reshape((3, 2) + out_shape + out_shape)
    r = len(out_shape)
    zipped = (0, 1) + tuple(x for i in range(r) for x in (2 + i, 2 + r + i))
    expect_full = full.transpose(zipped)
    scale = np.abs(full).max()
    got_full = net.empirical_ntk(params, x1, x2, trace_axes=())
    np.testing.assert_allclose(got_full, expect_full, rtol=0, atol=1e-7 * scale)
    # trace_axes=(-1,): the channel axis contracted and divided by its size
    traced = np.trace(full, axis1=1 + r, axis2=1 + 2 * r) / out_shape[-1]
    traced = traced.transpose((0, 1) + tuple(x for i in range(r - 1) for x in (2 + i, 2 + r - 1 + i)))
    np.testing.assert_allclose(net.empirical_ntk(params, x1, x2), traced, rtol=0, atol=1e-7 * scale)
    # the NNGP: products of the outputs, with the same axis conventions
    nngp = np.einsum("ao,bq->aboq", f1.reshape(3, -1), f2.reshape(2, -1))
    nngp = nngp.reshape((3, 2) + out_shape + out_shape).transpose(zipped)
    np.testing.assert_allclose(
        net.empirical_nngp(params, x1, x2, trace_axes=()), nngp, rtol=1e-13, atol=1e-13
    )


def test_empirical_symmetric_batches_and_trace_axes(rng):
    """x2=None (mirrored blocks) equals the explicit x2 = x1; batch_size does not change the
    result beyond round-off; tracing every output axis is the mean over all outputs."""
    net, shape = JACOBIAN_NETS["conv3d_layernorm_image"]
    params = net.init(4, shape)
    x = rng.standard_normal((5,) + shape)
    full = net.empirical_ntk(params, x, np.array(x), trace_axes=())
    for bs in (None, 2, 3):
        sym = net.empirical_ntk(params, x, trace_axes=(), batch_size=bs)
        np.testing.assert_allclose(sym, full, rtol=1e-12, atol=1e-12 * np.abs(full).max())
    n, out_shape = 5, net.apply(params, x[:1]).shape[1:]
    everything = net.empirical_ntk(params, x, trace_axes=(1, 2, 3, 4))
    diag = np.einsum("abijklmnop->abijklmnop", full).reshape(n, n, *[s for s in out_shape for _ in (0, 1)])
    mean = np.einsum("abiijjkkll->ab", diag) / math.prod(out_shape)
    np.testing.assert_allclose(everything, mean, rtol=1e-12, atol=1e-12 * np.abs(mean).max())


# ---------------------------------------------------------------------------------------
# 3. Monte Carlo at growing width against a closed form.

W1, B1, W2, B2 = 1.5, 0.3, 1.2, 0.2
IMG = (4, 4, 2)


def one_hidden_layer(width):
    return nt.serial(nt.Conv(width, (3, 3), padding="SAME", W_std=W1, b_std=B1), nt.Relu(), nt.Flatten(),
                     nt.Dense(1, W_std=W2, b_std=B2))  # fmt: skip


def closed_form(x):
    """NNGP and NTK of one_hidden_layer at infinite width, per position (the arc-cosine
    kernel; written from the formulas in DESIGN.md):
    Sigma1_p(x, y) = W1^2 / (9 C) sum_u x[p + u] . y[p + u] + B1^2 (zero padding, SAME),
    NNGP = W2^2 mean_p F(Sigma1_p) + B2^2, NTK = NNGP + W2^2 mean_p Sdot(Sigma1_p) Sigma1_p
    (Flatten's readout weights are per position, so positions do not mix)."""
    n, (hh, ww, c) = x.shape[0], x.shape[1:]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.stack([xp[:, i : i + hh, j : j + ww] for i in range(3) for j in range(3)], axis=3)
    patches = patches.reshape(n, hh * ww, -1)
    s1 = W1**2 / (9 * c) * np.einsum("apk,bpk->abp", patches, patches) + B1**2
    q = np.einsum("aap->ap", s1)
    qq = q[:, None, :] * q[None, :, :]
    theta = np.arctan2(np.sqrt(np.maximum(qq - s1**2, 0)), s1)
    f = (np.sqrt(np.maximum(qq - s1**2, 0)) + (np.pi - theta) * s1) / (2 * np.pi)
    sdot = (np.pi - theta) / (2 * np.pi)
    nngp = W2**2 * f.mean(axis=2) + B2**2
    return nngp, nngp + W2**2 * (sdot * s1).mean(axis=2)


def mse_slope(make_net, x, ntk_inf, widths, S):
    """(slope, standard error) of log MSE against log width, where MSE is the mean over S
    networks of the mean squared error of one network's empirical NTK; and the S kernels
    (S, N, N) at the last width.

    Weighted least squares over the widths; each log MSE has standard error
    sd(e_s) / (sqrt(S) mean(e_s)) from the spread of the S per-network squared errors e_s
    (delta method), and the slope's standard error follows from those."""
    logs, ses = [], []
    for n in widths:
        net = make_net(n)
        ks = np.array([net.empirical_ntk(net.init(1000 * n + s, x.shape[1:]), x) for s in range(S)])
        e = ((ks - ntk_inf) ** 2).mean(axis=(1, 2))
        logs.append(math.log(e.mean()))
        ses.append(e.std(ddof=1) / (math.sqrt(S) * e.mean()))
    lx, ly, w = np.log(widths), np.array(logs), 1 / np.array(ses) ** 2
    xbar = (w * lx).sum() / w.sum()
    slope = (w * (lx - xbar) * ly).sum() / (w * (lx - xbar) ** 2).sum()
    return slope, 1 / math.sqrt((w * (lx - xbar) ** 2).sum()), ks


def test_monte_carlo_ntk_error_shrinks_like_inverse_sqrt_width():
    """One network's NTK at width n is an average over the n independent channels of
    terms whose mean is exactly the limit (first-layer pre-activations are exactly Gaussian,
    the readout is linear with independent per-position weights), so its mean squared
    error is exactly c / n: log MSE against log n has slope -1 (RMS error ~ 1/sqrt(n)).

    The slope is fitted over 4 widths (:func:`mse_slope`) and may be 4 of its standard
    errors off -1 (false alarm ~6e-5 for a fresh seed; the seed is fixed). With S = 24 the
    standard error is ~0.05, so a kernel that does not converge (slope 0) or converges at
    another rate (-2) fails by > 10 standard errors."""
    x = np.random.default_rng(5).standard_normal((3,) + IMG)
    _, ntk_inf = closed_form(x)
    slope, se, _ = mse_slope(one_hidden_layer, x, ntk_inf, (4, 16, 64, 256), 24)
    assert abs(slope + 1) <= 4 * se, (slope, se)


def test_monte_carlo_kernel_unbiased_one_hidden_layer():
    """monte_carlo_kernel is the mean of the per-network empirical kernels of the documented
    networks (SeedSequence(seed).spawn(S)[s]), and that mean is within Z = 5 standard errors
    (from the spread of the S kernels) of the closed form: unbiased at any width here (see
    the test above), so no finite-width allowance is needed."""
    x1 = np.random.default_rng(6).standard_normal((3,) + IMG)
    x2 = np.random.default_rng(7).standard_normal((2,) + IMG)
    nngp_inf, ntk_inf = closed_form(np.concatenate([x1, x2]))
    net, S = one_hidden_layer(32), 64
    mc = nt.monte_carlo_kernel(net, x1, x2, n_samples=S, seed=9)
    children = np.random.SeedSequence(9).spawn(S)
    for name, inf in (("nngp", nngp_inf[:3, 3:]), ("ntk", ntk_inf[:3, 3:])):
        ks = []
        for child in children:
            params = net.init(child, IMG)
            ks.append(getattr(net, f"empirical_{name}")(params, x1, x2))
        ks = np.array(ks)
        mean = ks.mean(axis=0)
        np.testing.assert_allclose(
            getattr(mc, name), mean, rtol=1e-12, atol=4 * S * 2**-53 * np.abs(ks).max()
        )
        se = ks.std(axis=0, ddof=1) / math.sqrt(S)
        assert np.all(np.abs(mean - inf) <= 5 * se), (name, mean, inf, se)


# ---------------------------------------------------------------------------------------
# 4. Against the per-pixel infinite-width reference (tests/reference_cnn.py).


def test_monte_carlo_pooled_residual_against_reference():
    """A GlobalAvgPool residual CNN: the Monte Carlo mean over S networks of width n within
    Z = 5 standard errors plus the finite-width bias bound of tests/test_monte_carlo.py,
    C_BIAS (L - 1) / n of the entry scale with C_BIAS = 1 and L = 2 hidden layers (the
    residual block's second conv sees a fluctuating covariance; one extra layer)."""
    net = nt.serial(
        nt.Conv(64, (3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.2),
        nt.FanOut(2),
        nt.parallel(nt.Identity(), nt.serial(nt.Relu(), nt.Conv(64, (3, 3), padding="SAME", W_std=1.3))),
        nt.FanInSum(),
        nt.Relu(),
        nt.GlobalAvgPool(),
        nt.Dense(8, W_std=1.1, b_std=0.1),  # 8 outputs: their mean shrinks the NNGP's sampling noise
    )
    x = np.random.default_rng(8).standard_normal((3, 4, 4, 2))
    inf = dict(zip(("nngp", "ntk"), ref.cnn_kernels_ref(ref.spec_from_fastntk(net), x)))
    S, n = 48, 64
    ks = {"nngp": [], "ntk": []}
    for child in np.random.SeedSequence(3).spawn(S):
        params = net.init(child, x.shape[1:])
        ks["nngp"].append(net.empirical_nngp(params, x))
        ks["ntk"].append(net.empirical_ntk(params, x))
    for name in ("nngp", "ntk"):
        k_inf = inf[name]
        arr = np.array(ks[name])
        mean, se = arr.mean(axis=0), arr.std(axis=0, ddof=1) / math.sqrt(S)
        d = np.sqrt(np.abs(np.diag(k_inf)))
        bias = 1.0 * (2 - 1) / n * d[:, None] * d[None, :]
        assert np.all(np.abs(mean - k_inf) <= 5 * se + bias), (name, mean, k_inf, se)


def test_overflow_names_the_layer(rng):
    """A signal that overflows float64 raises FloatingPointError naming the first layer whose
    output is not finite (never NaN results): Exp after a conv with a huge W_std."""
    net = nt.serial(nt.Conv(2, (2, 2), W_std=1e3), nt.Exp(), nt.Flatten(), nt.Dense(1))
    params = net.init(0, (3, 3, 1))
    x = rng.standard_normal((2, 3, 3, 1)) * 10
    with pytest.raises(FloatingPointError, match=r"layer 1 \(Exp"):
        net.apply(params, x)
    with pytest.raises(FloatingPointError, match=r"layer 1 \(Exp"):
        net.empirical_ntk(params, x)


def test_monte_carlo_shapes_and_single_get(rng):
    """Image outputs keep Neural Tangents' layout; a single name returns that array, equal
    to the same field of the tuple (the same networks)."""
    net = nt.serial(nt.Conv(3, (2, 2), padding="SAME", b_std=0.1), nt.Relu(), nt.Conv(2, (1, 1)))
    x = rng.standard_normal((2, 3, 4, 1))
    both = nt.monte_carlo_kernel(net, x, n_samples=3, seed=1)
    assert both.nngp.shape == both.ntk.shape == (2, 2, 3, 3, 4, 4)
    ntk = nt.monte_carlo_kernel(net, x, n_samples=3, seed=1, get="ntk", batch_size=1)
    np.testing.assert_allclose(ntk, both.ntk, rtol=1e-13, atol=1e-13 * np.abs(ntk).max())
    full = nt.monte_carlo_kernel(net, x, n_samples=2, seed=1, get="nngp", trace_axes=())
    assert full.shape == (2, 2, 3, 3, 4, 4, 2, 2)


def test_monte_carlo_gap_error_shrinks_like_inverse_sqrt_width():
    """A GlobalAvgPool readout mixes positions (its weights are shared by all of them), so
    the limit needs the full spatial covariance: tests/reference_cnn.py gives it. With one
    hidden layer the empirical NTK is still an average over independent channels with the
    exact limit as mean (first-layer pre-activations exactly Gaussian, a linear readout),
    so its mean squared error is c / n: slope -1 within 4 standard errors (as above).
    The slope measures concentration, not the limit; the limit is checked by the mean of
    the S kernels at the largest width, within Z = 5 standard errors of the reference
    (unbiased at any width, so no finite-width allowance)."""

    def make(n):
        return nt.serial(
            nt.Conv(n, (2, 3), strides=(1, 2), padding="CIRCULAR", W_std=1.3, b_std=0.2),
            nt.Erf(),
            nt.AvgPool((2, 2), padding="SAME"),
            nt.GlobalAvgPool(),
            nt.Dense(1, W_std=1.4, b_std=0.1),
        )

    x = np.random.default_rng(10).standard_normal((3, 4, 5, 2))
    _, ntk_inf = ref.cnn_kernels_ref(ref.spec_from_fastntk(make(1)), x)
    slope, se, ks = mse_slope(make, x, ntk_inf, (4, 16, 64, 256, 1024), 24)
    assert abs(slope + 1) <= 4 * se, (slope, se)
    mean, se_mean = ks.mean(axis=0), ks.std(axis=0, ddof=1) / math.sqrt(len(ks))
    assert np.all(np.abs(mean - ntk_inf) <= 5 * se_mean), (mean, ntk_inf, se_mean)


def test_training_refuses_spatial_networks_clearly():
    """fastntk.training has no spatial path yet: a TypeError naming the layer and what to
    use instead, before any work."""
    net = nt.serial(nt.Conv(2, (2, 2)), nt.Relu(), nt.Flatten(), nt.Dense(1))
    params = net.init(0, (3, 3, 1))
    with pytest.raises(
        TypeError, match=r"layer 0 \(Conv.*fastntk.training .*Dense layers and activations only"
    ):
        nt.linearize(net, params)(params, np.ones((2, 3, 3, 1)))
