"""Kernels of convolutional and residual networks: fastntk vs the plain NumPy reference
(tests/reference_cnn.py), closed forms, and properties.

The reference loops over pixels and was checked against Neural Tangents 0.6.5 layer by
layer (tests/test_cnn_neural_tangents.py; agreement ~1e-15). The closed forms and
properties are also asserted of the reference itself, so they run before fastntk's CNN
layers exist; the fastntk halves skip until ``fastntk.Conv`` is there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastntk as nt

from cnn_specs import (
    ACTIVATIONS,
    FLATTEN,
    GAP,
    RELU,
    architectures,
    avg_pool,
    conv,
    dense,
    to_fastntk,
)
from conftest import TOL, assert_kernel_close
from reference import ntk_gram_ref
from reference_cnn import cnn_kernels_ref, out_size_and_pad, spec_from_fastntk
from specs import to_fastntk as fc_to_fastntk

EPS = np.finfo(np.float64).eps
ARCHS = architectures()
IMPLS = ["reference", "fastntk"]


def kernels(impl, spec, x1, x2=None):
    """(nngp, ntk) of spec, from the reference or from fastntk, in Neural Tangents' shapes."""
    if impl == "reference":
        return cnn_kernels_ref(spec, x1, x2)
    k = to_fastntk(spec).kernel(x1, x2)
    return k.nngp, k.ntk


def check_against_reference(got, spec, x1, x2, rtol=TOL["reference"]):
    """Every entry within rtol of the reference, relative to its Cauchy-Schwarz bound
    sqrt(K(x, x)[p, p] K(y, y)[q, q]) (both kernels are PSD), so that entries that cancel
    to ~0 are measured on the scale of their inputs."""
    ref, scale = cnn_kernels_ref(spec, x1, x2, return_scale=True)
    for name, g, r, s in zip(("nngp", "ntk"), got, ref, scale):
        assert_kernel_close(g, r, rtol, s, name)


def as_matrix(k, n1, n2):
    """A kernel in Neural Tangents' layout as the (n1 S, n2 S) matrix over (point, position):
    (N1, N2, d1, d1', d2, d2', ...) -> (N1, d1, d2, .., N2, d1', d2', ..). A reversed layout
    only permutes the positions of both sides alike, which no property below depends on."""
    nd = (k.ndim - 2) // 2
    order = [0] + [2 + 2 * i for i in range(nd)] + [1] + [3 + 2 * i for i in range(nd)]
    S = math.prod(k.shape[2::2])
    return k.transpose(order).reshape(n1 * S, n2 * S)


def swap_points(k):
    """K(x2, x1) from K(x1, x2) in Neural Tangents' layout: swap the points and, on every
    spatial axis, the two positions."""
    nd = (k.ndim - 2) // 2
    order = [1, 0] + [ax for i in range(nd) for ax in (3 + 2 * i, 2 + 2 * i)]
    return k.transpose(order)


# ---------------------------------------------------------------------------------------
# fastntk vs the reference


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_matches_reference(name, rng):
    spec, shape = ARCHS[name]
    net = to_fastntk(spec)
    x1, x2 = rng.standard_normal((4,) + shape), rng.standard_normal((3,) + shape)
    for b in (x2, None):
        k = net.kernel(x1, b)
        assert all(type(m) is np.ndarray and m.dtype == np.float64 for m in k)
        check_against_reference((k.nngp, k.ntk), spec, x1, b)


@pytest.mark.parametrize(
    "name", ["myrtle_ntk", "resnet_standard", "conv_relu_flatten_ntk", "single_conv_spatial_out"]
)
def test_float32_inputs(name, rng):
    """float32 inputs convert exactly to float64, so the reference on the converted values
    is exact; a float32 result may differ by its own rounding, 2^-24 relative."""
    spec, shape = ARCHS[name]
    x1 = rng.standard_normal((4,) + shape).astype(np.float32)
    x2 = rng.standard_normal((3,) + shape).astype(np.float32)
    for b in (x2, None):
        k = to_fastntk(spec).kernel(x1, b)
        rtol = TOL["reference"] + (2.0**-24 if k.nngp.dtype == np.float32 else 0.0)
        check_against_reference(
            (k.nngp.astype(np.float64), k.ntk.astype(np.float64)),
            spec,
            x1.astype(np.float64),
            None if b is None else b.astype(np.float64),
            rtol,
        )


@pytest.mark.parametrize("name", ["resnet_ntk", "concat_unequal", "layer_norm_spatial", "myrtle_standard"])
def test_adapter_reads_fastntk_layers(name, rng):
    """spec_from_fastntk (the reference's reader of fastntk layers) recovers the spec."""
    spec, shape = ARCHS[name]
    x = rng.standard_normal((3,) + shape)
    for a, b in zip(cnn_kernels_ref(spec_from_fastntk(to_fastntk(spec)), x), cnn_kernels_ref(spec, x)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------
# Closed forms


def _one_by_one(act, parameterization, readout):
    """A network of 1x1 convolutions and its fully connected twin on single pixels."""
    cnn = [
        conv(4, (1, 1), W_std=1.3, b_std=0.2, parameterization=parameterization),
        act,
        conv(3, (1, 1), W_std=0.9, b_std=0.4, parameterization=parameterization),
        act,
        conv(2, (1, 1), W_std=1.1, b_std=0.1, parameterization=parameterization),
        readout,
    ]
    fc = [
        dense(4, 1.3, 0.2, parameterization),
        act,
        dense(3, 0.9, 0.4, parameterization),
        act,
        dense(2, 1.1, 0.1, parameterization),
    ]
    return cnn, fc


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("readout", ["flatten", "gap"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("act", ["relu", "erf", "gelu"])
def test_one_by_one_conv_is_the_fc_kernel_per_pixel(act, parameterization, readout, impl, rng):
    """A 1x1 convolution applies one Dense layer (shared weights, fan-in = channels) to
    every pixel, and activations act per pixel: the network on an image is the FC network
    on each pixel, so the covariance of position p of x and q of y is the FC kernel of the
    pixels (x_p, y_q) (the input covariance x_p . y_q / C is the FC one with d = C).
    Flatten averages the same-position entries: mean_p FC(x_p, y_p); GlobalAvgPool
    averages all of them: mean_{p, q} FC(x_p, y_q)."""
    cnn, fc = _one_by_one(ACTIVATIONS[act], parameterization, FLATTEN if readout == "flatten" else GAP)
    shape = (3, 2, 3)
    x1, x2 = rng.standard_normal((4,) + shape), rng.standard_normal((3,) + shape)
    S, C = 6, 3
    p1, p2 = x1.reshape(4 * S, C), x2.reshape(3 * S, C)
    if impl == "reference":
        fc_k = ntk_gram_ref(fc, p1, p2)
    else:
        k = fc_to_fastntk(fc).kernel(p1, p2)
        fc_k = (k.nngp, k.ntk)
    got = kernels(impl, cnn, x1, x2)
    for g, f in zip(got, fc_k):
        f = f.reshape(4, S, 3, S)
        if readout == "flatten":
            expected = np.mean([f[:, p, :, p] for p in range(S)], axis=0)
        else:
            expected = f.mean(axis=(1, 3))
        np.testing.assert_allclose(g, expected, rtol=TOL["reference"], atol=0)


def _roll(x, shifts):
    return np.roll(x, shifts, axis=tuple(range(1, 1 + len(shifts))))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_circular_padding_is_translation_invariant(readout, impl, rng):
    """With CIRCULAR padding and unit strides every Conv commutes with a circular shift of
    the image (and so does every per-position layer), so shifting both images by the same
    translation permutes the positions of the covariance alike, and the mean over
    positions (Flatten) or over position pairs (GlobalAvgPool) does not change."""
    spec = [
        conv(3, (3, 2), None, "CIRCULAR"),
        RELU,
        conv(4, (2, 3), None, "CIRCULAR", parameterization="standard"),
        ACTIVATIONS["erf"],
        conv(2, (3, 3), None, "CIRCULAR"),
        RELU,
        FLATTEN if readout == "flatten" else GAP,
    ]
    shape = (5, 4, 2)
    x1, x2 = rng.standard_normal((3,) + shape), rng.standard_normal((2,) + shape)
    base = kernels(impl, spec, x1, x2)
    for shifts in ((1, 0), (0, 3), (2, 1), (-4, 2)):
        moved = kernels(impl, spec, _roll(x1, shifts), _roll(x2, shifts))
        for a, b in zip(moved, base):
            np.testing.assert_allclose(a, b, rtol=TOL["reference"], atol=0)


def test_same_padding_is_not_translation_invariant(rng):
    """The control of the test above: with zero padding the edges break the invariance,
    so the check is able to fail."""
    spec = [conv(3, (3, 3), None, "SAME"), RELU, conv(2, (3, 3), None, "SAME"), RELU, GAP]
    x = rng.standard_normal((3, 5, 4, 2))
    a = cnn_kernels_ref(spec, x)[0]
    b = cnn_kernels_ref(spec, _roll(x, (1, 2)))[0]
    assert np.max(np.abs(a - b)) > 1e-3 * np.max(np.abs(a))


def test_reference_without_spatial_axes_is_the_fc_reference(rng):
    """Images with no spatial axis are FC inputs: the CNN reference is tests/reference.py."""
    spec = [
        dense(5, 1.2, 0.3, "standard"),
        ACTIVATIONS["gelu"],
        dense(4, 0.8, None, "standard"),
        RELU,
        dense(1),
    ]
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    for b in (x2, None):
        for a, r in zip(cnn_kernels_ref(spec, x1, b), ntk_gram_ref(spec, x1, b)):
            np.testing.assert_allclose(a, r, rtol=1e-14, atol=0)


def test_reference_geometry():
    """Output sizes and low-side pads of XLA's SAME convention, worked by hand."""
    assert out_size_and_pad(5, 3, 1, "VALID") == (3, 0)
    assert out_size_and_pad(5, 3, 2, "VALID") == (2, 0)
    assert out_size_and_pad(5, 3, 1, "SAME") == (5, 1)
    assert out_size_and_pad(4, 2, 1, "SAME") == (4, 0)  # total pad 1, all on the high side
    assert out_size_and_pad(5, 3, 2, "SAME") == (3, 1)  # ceil(5/2) = 3, pad (3-1)*2+3-5 = 2
    assert out_size_and_pad(6, 3, 2, "CIRCULAR") == (3, 0)  # pad (3-1)*2+3-6 = 1
    assert out_size_and_pad(4, 4, 2, "SAME") == (2, 1)  # pad (2-1)*2+4-4 = 2


# ---------------------------------------------------------------------------------------
# Properties

PROPERTY_ARCHS = ["resnet_gap", "myrtle_ntk", "concat_unequal", "layer_norm_spatial", "conv3d_ntk",
                  "sign_gap", "resnet_spatial_out", "single_conv_spatial_out", "conv_relu_flatten_standard"]  # fmt: skip


def _min_eig_bound(m):
    """A symmetric matrix whose entries carry a few ulps of error is PSD up to eigenvalue
    perturbations of at most ||E||_2 <= n max|E_ij| (Weyl); 64 ulps of the largest
    diagonal entry per entry is a generous bound for E (as tests/test_properties.py)."""
    return -64 * EPS * m.shape[0] * np.max(np.abs(np.diag(m)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", PROPERTY_ARCHS)
def test_symmetric_and_psd(name, impl, rng):
    spec, shape = ARCHS[name]
    n = 6
    x = rng.standard_normal((n,) + shape)
    off = ~np.eye(n, dtype=bool)
    for k in kernels(impl, spec, x):
        swapped = swap_points(k)
        if impl == "fastntk":
            # pairs a != b: the mirrored triangle, exactly
            np.testing.assert_array_equal(k[off], swapped[off])
        # a point with itself: its own S x S covariance, symmetric up to the round-off of
        # its inner products x_p . x_q vs x_q . x_p (a few ulps of the largest entry)
        np.testing.assert_allclose(k, swapped, rtol=0, atol=64 * EPS * np.max(np.abs(k)))
        m = as_matrix(k, n, n)
        m = (m + m.T) / 2
        assert np.linalg.eigvalsh(m).min() >= _min_eig_bound(m)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["resnet_gap", "single_conv_spatial_out", "concat_spatial_out"])
def test_swapping_x1_and_x2_transposes(name, impl, rng):
    spec, shape = ARCHS[name]
    x1, x2 = rng.standard_normal((4,) + shape), rng.standard_normal((3,) + shape)
    for a, b in zip(kernels(impl, spec, x1, x2), kernels(impl, spec, x2, x1)):
        np.testing.assert_allclose(swap_points(b), a, rtol=TOL["reference"], atol=1e-15 * np.max(np.abs(a)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act", ["erf", "gelu", "relu"])
def test_x2_none_equals_a_copy_of_x1(act, impl, rng):
    """x2 = x1.copy() goes through the cross path. The smooth maps agree to round-off
    everywhere. For Relu, a point paired with its own copy has correlation 1 only up to the
    round-off of differently ordered dot products (delta <= (C + 2) eps); its NTK factor
    acos is not smooth there: acos(1 - delta) = sqrt(2 delta), so those entries may differ
    by ~n_relu sqrt(2 delta) / pi relative (as tests/test_properties.py derives)."""
    a_ = ACTIVATIONS[act]
    spec = [
        conv(3, (3, 3)),
        a_,
        conv(4, (2, 2)),
        a_,
        avg_pool((2, 2), None, "SAME"),
        conv(2, (2, 2)),
        a_,
        GAP,
    ]
    shape = (4, 3, 2)
    C = shape[-1]
    x = rng.standard_normal((4,) + shape)
    a, b = kernels(impl, spec, x), kernels(impl, spec, x, x.copy())
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(b[0], a[0], rtol=TOL["reference"], atol=0)
    np.testing.assert_allclose(b[1][off], a[1][off], rtol=TOL["reference"], atol=0)
    diag_tol = TOL["reference"] if act != "relu" else 3 * math.sqrt(2 * (C + 2) * EPS) / math.pi
    np.testing.assert_allclose(np.diag(b[1]), np.diag(a[1]), rtol=diag_tol, atol=0)


def test_x2_is_x1_takes_the_symmetric_path(rng):
    spec, shape = ARCHS["resnet_gap"]
    net = to_fastntk(spec)
    x = rng.standard_normal((5,) + shape)
    a, b = net.kernel(x), net.kernel(x, x)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)


# ---------------------------------------------------------------------------------------
# Random architectures

_ACT_NAMES = sorted(ACTIVATIONS)


@st.composite
def cnn_specs(draw):
    """(spec, input shape): 1 to 3 conv blocks (random filter, stride, padding,
    parameterization, bias, activation, optional pooling) and a readout.

    At least 2 input channels: with one channel, a 1x1 first filter and no bias every
    pair of positions is exactly parallel or antiparallel (correlation +-1 up to an ulp),
    where the arc-cosine NTK factors lose half the digits in any implementation (see
    test_d_equals_one in tests/test_properties.py)."""
    nd = draw(st.integers(1, 2))
    dims = [draw(st.integers(2, 5)) for _ in range(nd)]
    if nd == 2:
        dims[1] = min(dims[1], 4)
    shape = tuple(dims) + (draw(st.integers(2, 3)),)
    par = draw(st.sampled_from(["ntk", "standard"]))
    spec = []
    for _ in range(draw(st.integers(1, 3))):
        pad = draw(st.sampled_from(["VALID", "SAME", "CIRCULAR"]))
        f = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        s = tuple(draw(st.integers(1, 2)) for _ in range(nd))
        if pad != "SAME" and any(k > n for k, n in zip(f, dims)):
            pad = "SAME"  # VALID cannot; CIRCULAR can (wrapping twice), tested by name
        b_std = draw(st.sampled_from([None, 0.0, 0.3]))
        spec.append(conv(draw(st.integers(1, 4)), f, s, pad, draw(st.floats(0.5, 1.5)), b_std, par))
        dims = [out_size_and_pad(n, k, st_, pad)[0] for n, k, st_ in zip(dims, f, s)]
        spec.append(ACTIVATIONS[draw(st.sampled_from(_ACT_NAMES))])
        if draw(st.booleans()):
            w = tuple(draw(st.integers(1, 2)) for _ in range(nd))
            # (CIRCULAR pooling is tested by name: test_matches_reference[*_pool_CIRCULAR*])
            ppad = draw(st.sampled_from(["SAME", "VALID"]))
            if any(k > n for k, n in zip(w, dims)):
                ppad = "SAME"
            dims = [out_size_and_pad(n, k, 1, ppad)[0] for n, k in zip(dims, w)]
            spec.append(avg_pool(w, None, ppad, draw(st.booleans())))
    readout = draw(st.sampled_from(["flatten", "gap", "none"]))
    if readout != "none":
        spec += [FLATTEN if readout == "flatten" else GAP, dense(1, parameterization=par)]
    return spec, shape


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cnn_specs())
def test_random_architectures_match_reference(case):
    spec, shape = case
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((3,) + shape), rng.standard_normal((2,) + shape)
    k = to_fastntk(spec).kernel(x1, x2)
    check_against_reference((k.nngp, k.ntk), spec, x1, x2)


@pytest.mark.parametrize(
    "name, reversed_",
    [
        ("single_conv_spatial_out", True),  # one Conv flips Neural Tangents' axis order
        ("resnet_spatial_out", True),  # Conv, then a sum of a 2-Conv branch and the identity
        ("conv3d_spatial_out", True),
        ("concat_spatial_out", False),  # one of two branches reversed: a tie is not reversed
        ("conv_SAME_3x2_sNone", False),  # two Convs
    ],
)
def test_reference_layouts(name, reversed_, rng):
    """The full layout interleaves the two positions' axes, in reverse axis order after an
    odd number of Convs; the diagonal layout (N1, N2, *dims) holds its same-position entries."""
    spec, shape = ARCHS[name]
    x1, x2 = rng.standard_normal((3,) + shape), rng.standard_normal((2,) + shape)
    full = cnn_kernels_ref(spec, x1, x2)
    diag = cnn_kernels_ref(spec, x1, x2, spatial="diagonal")
    for f, d in zip(full, diag):
        dims = d.shape[2:]
        axes = dims[::-1] if reversed_ else dims
        assert f.shape == (3, 2) + tuple(n for n in axes for _ in (0, 1))
        for idx in np.ndindex(*dims):
            pos = idx[::-1] if reversed_ else idx
            fidx = (slice(None), slice(None)) + tuple(i for i in pos for _ in (0, 1))
            np.testing.assert_array_equal(f[fidx], d[(slice(None), slice(None)) + idx])
