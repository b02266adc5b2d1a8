"""The layers of images and branches: constructors (Neural Tangents' names and defaults),
repr/eq/hash, nesting, shape propagation, the regime chosen, Neural Tangents' output layout,
and the exact builder calls of small networks (against coefficients derived by hand from the
formulas in /work/notes/nt_facts_front.md, each checked numerically against Neural Tangents
0.6.5). The native engine is not needed: a recording stand-in takes the builder calls."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt
from fastntk import _engine, _spatial_program
from fastntk._spatial_program import build, compile_network

from reference_cnn import out_size_and_pad


class Recorder:
    """A stand-in for fastntk._core.SpatialProgram that records the calls it gets."""

    def __init__(self, in_dims, channels, full, n_registers):
        self.args = (list(in_dims), channels, full, n_registers)
        self.calls = []

    def __getattr__(self, name):
        if not name.startswith(("add_", "set_layer")):
            raise AttributeError(name)
        return lambda **kwargs: self.calls.append((name, kwargs))


def record(net, shape, diagonal_spatial=None, fc=("FC", None)):
    plan = compile_network(net.layers, shape, diagonal_spatial=diagonal_spatial)
    ops = list(range(100, 100 + len(plan.activations)))
    rec = build(plan, Recorder, (fc[0], ops))
    # set_layer tags are checked separately; the math is in the other calls
    return plan, rec.args, [c for c in rec.calls if c[0] != "set_layer"]


def linear(
    src,
    dst,
    map,
    in_dims,
    out_dims,
    *,
    window=None,
    strides=None,
    pad_lo=None,
    circular=False,
    normalize_edges=False,
    scale=1.0,
    alpha=1.0,
    beta=0.0,
    gamma=0.0,
    delta=1.0,
    eps=0.0,
):
    kw = dict(src=src, dst=dst, map=map, in_dims=list(in_dims), out_dims=list(out_dims))
    if map in ("conv", "pool"):
        kw.update(
            window=list(window),
            strides=list(strides),
            pad_lo=list(pad_lo),
            circular=circular,
            normalize_edges=normalize_edges,
        )
    kw.update(scale=scale, alpha=alpha, beta=beta, gamma=gamma, delta=delta, eps=eps)
    return ("add_linear", kw)


def assert_calls(actual, expected):
    assert len(actual) == len(expected), (actual, expected)
    for (name_a, kw_a), (name_e, kw_e) in zip(actual, expected):
        assert name_a == name_e, (name_a, name_e)
        assert kw_a.keys() == kw_e.keys(), (name_a, kw_a, kw_e)
        for key in kw_e:
            if isinstance(kw_e[key], float):
                assert kw_a[key] == pytest.approx(kw_e[key], rel=1e-15, abs=0), (
                    name_a,
                    key,
                    kw_a[key],
                    kw_e[key],
                )
            else:
                assert kw_a[key] == kw_e[key], (name_a, key, kw_a[key], kw_e[key])


# ---------------------------------------------------------------------------------------
# Constructors, with Neural Tangents' names and defaults


def test_defaults():
    c = nt.Conv(16, (3, 3))
    assert (c.out_chan, c.filter_shape, c.strides, c.padding) == (16, (3, 3), (1, 1), "VALID")
    assert (c.W_std, c.b_std, c.parameterization) == (1.0, 0.0, "ntk")
    p = nt.AvgPool((2, 3))
    assert (p.window_shape, p.strides, p.padding, p.normalize_edges) == ((2, 3), (1, 1), "VALID", False)
    s = nt.SumPool((2,), strides=(2,), padding="same")
    assert (s.window_shape, s.strides, s.padding) == ((2,), (2,), "SAME")
    assert not hasattr(s, "normalize_edges") or "normalize_edges" not in s._fields
    ln = nt.LayerNorm()
    assert (ln.axis, ln.eps) == ((-1,), 1e-12)
    assert nt.LayerNorm(axis=(1, 2, 3), eps=0.5).axis == (1, 2, 3)
    assert nt.FanOut(3).num == 3
    assert nt.FanInConcat().axis == -1
    assert nt.Conv(None, [5], strides=[2], padding="circular", b_std=None).padding == "CIRCULAR"


@pytest.mark.parametrize(
    "layer",
    [
        nt.Conv(
            8, (3, 3), strides=(2, 1), padding="SAME", W_std=1.5, b_std=None, parameterization="standard"
        ),
        nt.Conv(None, (2,)),
        nt.AvgPool((2, 2), (2, 2), "SAME", normalize_edges=True),
        nt.SumPool((3, 1, 2)),
        nt.GlobalAvgPool(),
        nt.GlobalSumPool(),
        nt.Flatten(),
        nt.LayerNorm((1, 2, -1), eps=0.1),
        nt.FanOut(2),
        nt.FanInSum(),
        nt.FanInConcat(),
        nt.parallel(nt.Identity(), nt.serial(nt.Relu(), nt.Conv(4, (3, 3), padding="SAME"))),
    ],
)
def test_repr_eq_hash_immutable(layer):
    again = eval(repr(layer), {k: getattr(nt, k) for k in nt.__all__} | {"serial": nt.serial})
    assert again == layer and hash(again) == hash(layer) and repr(again) == repr(layer)
    for field in layer._fields:
        with pytest.raises(AttributeError, match="immutable"):
            setattr(layer, field, getattr(layer, field))


def test_equality_is_by_type_and_fields():
    assert nt.Conv(8, (3, 3)) == nt.Conv(8, [3, 3], strides=(1, 1), padding="valid")
    assert nt.Conv(8, (3, 3)) != nt.Conv(8, (3, 3), padding="SAME")
    assert nt.AvgPool((2, 2)) != nt.SumPool((2, 2))
    assert nt.GlobalAvgPool() != nt.GlobalSumPool()
    assert len({nt.FanInSum(), nt.FanInSum(), nt.Flatten()}) == 2


def test_exported():
    for name in (
        "Conv",
        "AvgPool",
        "SumPool",
        "GlobalAvgPool",
        "GlobalSumPool",
        "Flatten",
        "LayerNorm",
        "FanOut",
        "FanInSum",
        "FanInConcat",
        "Parallel",
        "parallel",
        "serial",
    ):
        assert name in nt.__all__ and hasattr(nt, name)


def test_serial_and_parallel_nest():
    a, b, c = nt.Conv(4, (3,)), nt.Relu(), nt.Dense(2)
    assert nt.serial(nt.serial(a, b), c).layers == (a, b, c)
    assert nt.serial(nt.serial(nt.serial(a), b), nt.serial(c)).layers == (a, b, c)
    par = nt.parallel(a, nt.serial(c, b), nt.serial(nt.serial(c)), [b, nt.serial(c, b), a])
    assert par.branches == ((a,), (c, b), (c,), (b, c, b, a))
    assert nt.serial(nt.FanOut(4), par, nt.FanInSum()).layers[1] is par
    assert nt.serial(
        nt.Dense(), nt.FanOut(2), nt.parallel(nt.Dense(), nt.Identity()), nt.FanInSum()
    ).is_spatial
    assert not nt.serial(nt.Dense(), nt.Relu()).is_spatial


def test_a_branch_may_start_with_an_activation():
    # A branch alone is not checked (its input comes from the graph) ...
    block = nt.serial(nt.Relu(), nt.Conv(4, (3, 3), padding="SAME"))
    net = nt.serial(nt.Conv(4, (3, 3)), nt.FanOut(2), nt.parallel(nt.Identity(), block), nt.FanInSum())
    compile_network(net.layers, (2, 6, 6, 3))
    # ... while a fully connected network still raises at construction, as before; a list
    # makes such a branch without serial.
    with pytest.raises(ValueError, match="activation with no Dense layer before it"):
        nt.serial(nt.Relu(), nt.Dense())
    fc = nt.serial(
        nt.Dense(), nt.FanOut(2), nt.parallel(nt.Identity(), [nt.Relu(), nt.Dense()]), nt.FanInSum()
    )
    assert fc.layers[2].branches[1] == (nt.Relu(), nt.Dense())
    compile_network(fc.layers, (2, 5))


# ---------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
@pytest.mark.parametrize("k,s", [(1, 1), (3, 1), (3, 2), (2, 3), (5, 1)])
def test_conv_and_pool_output_shapes(padding, k, s):
    dims = (7, 5, 6)
    for n_axes in (1, 2, 3):
        shape = (2,) + dims[:n_axes] + (3,)
        expect = tuple(out_size_and_pad(n, k, s, padding)[0] for n in dims[:n_axes])
        conv = nt.Conv(4, (k,) * n_axes, strides=(s,) * n_axes, padding=padding)
        assert compile_network((conv,), shape).out_dims == expect
        pool = nt.AvgPool((k,) * n_axes, strides=(s,) * n_axes, padding=padding)
        assert compile_network((nt.Dense(), pool), shape).out_dims == expect


def test_pad_lo_of_same_padding():
    # lax's SAME padding: total = max((out - 1) s + k - n, 0), total // 2 before (the rest after)
    for n, k, s, lo in [
        (5, 3, 1, 1),
        (5, 3, 2, 1),
        (6, 4, 1, 1),
        (6, 2, 1, 0),
        (7, 3, 3, 1),
        (4, 6, 1, 2),
        (5, 1, 2, 0),
    ]:
        _, _, calls = record(nt.serial(nt.Conv(2, (k,), strides=(s,), padding="SAME")), (1, n, 2))
        assert calls[0][1]["pad_lo"] == [lo], (n, k, s)
        assert calls[0][1]["out_dims"] == [math.ceil(n / s)]


def test_shapes_through_flatten_and_global_pooling():
    x = (3, 6, 5, 2)
    assert compile_network(nt.serial(nt.Conv(4, (3, 3)), nt.Flatten()).layers, x).out_dims == ()
    assert (
        compile_network(nt.serial(nt.Conv(4, (3, 3)), nt.GlobalAvgPool(), nt.Dense(1)).layers, x).out_dims
        == ()
    )
    assert compile_network(nt.serial(nt.Dense(2), nt.Relu(), nt.Dense(1)).layers, x).out_dims == (6, 5)
    assert (
        compile_network(
            nt.serial(nt.FanOut(2), nt.parallel(nt.Dense(3), nt.Dense(3)), nt.FanInSum()).layers, (4, 7)
        ).out_dims
        == ()
    )


# ---------------------------------------------------------------------------------------
# The regime and Neural Tangents' output layout


@pytest.mark.parametrize(
    "layers, full",
    [
        ((nt.Conv(4, (3, 3)), nt.Relu(), nt.Flatten(), nt.Dense(1)), False),
        ((nt.Conv(4, (3, 3)), nt.Relu(), nt.GlobalAvgPool(), nt.Dense(1)), True),
        ((nt.Conv(4, (3, 3)), nt.Relu(), nt.GlobalSumPool()), True),
        ((nt.Conv(4, (3, 3)), nt.Relu(), nt.AvgPool((2, 2)), nt.Flatten()), True),
        ((nt.Conv(4, (3, 3)), nt.SumPool((1, 1)), nt.Flatten()), True),
        ((nt.Conv(4, (3, 3)), nt.Relu(), nt.Conv(4, (3, 3))), True),  # image output: NT's full covariance
        ((nt.Dense(3), nt.Relu(), nt.Dense(2)), True),
        ((nt.Conv(4, (3, 3)), nt.Relu(), nt.Flatten(), nt.Dense(2), nt.Relu(), nt.Dense(1)), False),
    ],
)
def test_regime(layers, full):
    plan = compile_network(layers, (2, 6, 7, 3))
    assert plan.full is full


def test_image_outputs_diagonal_on_request():
    layers = (nt.Conv(4, (3, 3)), nt.Relu(), nt.Conv(4, (3, 3)))
    plan = compile_network(layers, (2, 6, 7, 3), diagonal_spatial=True)
    assert not plan.full and plan.nt_shape(2, 5) == (2, 5, 2, 3) and plan.out_size == 6
    assert compile_network(layers, (2, 6, 7, 3), diagonal_spatial=False).full


@pytest.mark.parametrize(
    "layers, shape, nt_shape",
    [
        # From neural_tangents 0.6.5's kernel_fn on x1 (2, 5, 6, 3), x2 (3, 5, 6, 3) (see
        # nt_facts_front.md): the full covariance, axes interleaved, reversed after an odd
        # number of convolutions.
        ((nt.Conv(4, (3, 2)),), (2, 5, 6, 3), (2, 3, 5, 5, 3, 3)),
        ((nt.Conv(4, (3, 2)), nt.Conv(4, (2, 2))), (2, 5, 6, 3), (2, 3, 2, 2, 4, 4)),
        ((nt.Conv(4, (3, 2)), nt.AvgPool((1, 1))), (2, 5, 6, 3), (2, 3, 5, 5, 3, 3)),
        (
            (nt.Conv(4, (3, 2)), nt.Conv(4, (1, 2)), nt.Conv(4, (1, 1)), nt.AvgPool((1, 1))),
            (2, 5, 6, 3),
            (2, 3, 4, 4, 3, 3),
        ),
        ((nt.Dense(3),), (2, 5, 6, 3), (2, 3, 5, 5, 6, 6)),
        ((nt.Conv(4, (3, 2)), nt.Flatten()), (2, 5, 6, 3), (2, 3)),
        ((nt.Conv(4, (3, 2)), nt.GlobalAvgPool()), (2, 5, 6, 3), (2, 3)),
        # residual: one branch reversed, one not: NT unreverses on a tie
        (
            (nt.Conv(4, (3, 2)), nt.FanOut(2), nt.parallel(nt.Identity(), nt.Conv(4, (1, 1))), nt.FanInSum()),
            (2, 5, 6, 3),
            (2, 3, 3, 3, 5, 5),
        ),
        (
            (
                nt.Conv(4, (3, 2)),
                nt.FanOut(3),
                nt.parallel(nt.Identity(), nt.Conv(4, (1, 1)), nt.Conv(4, (1, 1))),
                nt.FanInSum(),
            ),
            (2, 5, 6, 3),
            (2, 3, 3, 3, 5, 5),
        ),
        ((nt.Conv(2, (3,)),), (2, 7, 3), (2, 3, 5, 5)),
        ((nt.Conv(2, (2, 2, 1)),), (2, 4, 5, 3, 2), (2, 3, 3, 3, 4, 4, 3, 3)),
    ],
)
def test_neural_tangents_output_shapes(layers, shape, nt_shape):
    plan = compile_network(layers, shape)
    assert plan.nt_shape(2, 3) == nt_shape


def _coded(n1, n2, dims, full):
    """A native output whose entries encode their indices: a*1e6 + b*1e4 + i*100 + j."""
    s = math.prod(dims)
    a = np.arange(n1)[:, None, None, None] * 1e6 + np.arange(n2)[None, :, None, None] * 1e4
    if full:
        code = a + np.arange(s)[:, None] * 100 + np.arange(s)[None, :]
        return code.reshape(n1, n2, s * s)
    return (a[..., 0] + np.arange(s)[None, None, :] * 100).reshape(n1, n2, s)


def test_to_nt_layout_full_and_reversed():
    dims = (2, 3)
    plan = compile_network((nt.Dense(2),), (2,) + dims + (1,))  # full, not reversed
    out = plan.to_nt(_coded(2, 3, dims, True))
    assert out.shape == (2, 3, 2, 2, 3, 3)
    for a, b, h, h2, w, w2 in np.ndindex(out.shape):
        # entry [a, b, h, h', w, w']: position (h, w) of x1[a] with (h', w') of x2[b]
        assert out[a, b, h, h2, w, w2] == a * 1e6 + b * 1e4 + (h * 3 + w) * 100 + (h2 * 3 + w2)
    plan = compile_network((nt.Conv(2, (1, 1)),), (2,) + dims + (1,))  # one conv: reversed
    assert plan.reversed
    out = plan.to_nt(_coded(2, 3, dims, True))
    assert out.shape == (2, 3, 3, 3, 2, 2)
    for a, b, w, w2, h, h2 in np.ndindex(out.shape):
        assert out[a, b, w, w2, h, h2] == a * 1e6 + b * 1e4 + (h * 3 + w) * 100 + (h2 * 3 + w2)


def test_to_nt_layout_diagonal_and_3d():
    plan = compile_network((nt.Conv(2, (1, 1)),), (2, 2, 3, 1), diagonal_spatial=True)
    out = plan.to_nt(_coded(2, 3, (2, 3), False))
    assert out.shape == (2, 3, 2, 3) and not plan.reversed
    for a, b, h, w in np.ndindex(out.shape):
        assert out[a, b, h, w] == a * 1e6 + b * 1e4 + (h * 3 + w) * 100
    dims = (2, 3, 4)
    plan = compile_network((nt.Dense(1),), (1,) + dims + (1,))
    out = plan.to_nt(_coded(1, 1, dims, True))
    assert out.shape == (1, 1, 2, 2, 3, 3, 4, 4)
    for d, d2, h, h2, w, w2 in np.ndindex(out.shape[2:]):
        i, j = (d * 3 + h) * 4 + w, (d2 * 3 + h2) * 4 + w2
        assert out[0, 0, d, d2, h, h2, w, w2] == i * 100 + j


# ---------------------------------------------------------------------------------------
# Builder calls of small networks (coefficients from the formulas, written out by hand)


def test_calls_conv_relu_flatten_dense():
    net = nt.serial(
        nt.Conv(4, (3, 3), padding="SAME", W_std=2.0, b_std=0.5),
        nt.Relu(),
        nt.Flatten(),
        nt.Dense(1, W_std=1.5),
    )
    plan, args, calls = record(net, (7, 5, 5, 3))
    assert args == ([5, 5], 3, False, 1)
    assert_calls(
        calls,
        [
            # ntk: Sigma' = W^2 L(Sigma) + b^2, Theta' = W^2 L(Theta) + Sigma'; L = window sum / 9
            linear(
                0,
                0,
                "conv",
                (5, 5),
                (5, 5),
                window=(3, 3),
                strides=(1, 1),
                pad_lo=(1, 1),
                scale=1 / 9,
                alpha=4.0,
                beta=0.25,
                gamma=4.0,
                delta=4.0,
                eps=0.25,
            ),
            ("add_activation", dict(src_dst=0, fc_program="FC", op_index=100)),
            linear(0, 0, "flatten", (5, 5), (), scale=1 / 25),  # mean of the diagonal over 25 positions
            linear(0, 0, "identity", (), (), alpha=2.25, beta=0.0, gamma=2.25, delta=2.25, eps=0.0),
        ],
    )
    assert plan.activations == [nt.Relu()]


def test_calls_standard_parameterization():
    net = nt.serial(
        nt.Conv(7, (2, 2), strides=(2, 1), W_std=1.2, b_std=0.3, parameterization="standard"),
        nt.Conv(5, (1, 3), padding="CIRCULAR", W_std=0.5, b_std=None, parameterization="standard"),
        nt.Dense(2, W_std=0.9, parameterization="standard"),
    )
    _, args, calls = record(net, (1, 6, 4, 3), diagonal_spatial=True)
    assert args == ([6, 4], 3, False, 1)
    assert_calls(
        calls,
        [
            # standard: Theta' = fan_in L(Sigma) + W^2 L(Theta) (+ 1 with a bias); fan_in = C prod(filter)
            linear(
                0,
                0,
                "conv",
                (6, 4),
                (3, 3),
                window=(2, 2),
                strides=(2, 1),
                pad_lo=(0, 0),
                scale=1 / 4,
                alpha=1.44,
                beta=0.09,
                gamma=3 * 4,
                delta=1.44,
                eps=1.0,
            ),
            linear(
                0,
                0,
                "conv",
                (3, 3),
                (3, 3),
                window=(1, 3),
                strides=(1, 1),
                pad_lo=(0, 1),
                circular=True,
                scale=1 / 3,
                alpha=0.25,
                beta=0.0,
                gamma=7 * 3,
                delta=0.25,
                eps=0.0,
            ),
            linear(0, 0, "identity", (3, 3), (3, 3), alpha=0.81, beta=0.0, gamma=5.0, delta=0.81, eps=1.0),
        ],
    )


def test_calls_pooling():
    net = nt.serial(
        nt.Dense(4, b_std=None),
        nt.AvgPool((3, 2), strides=(2, 2), padding="SAME", normalize_edges=True),
        nt.SumPool((2, 2), padding="CIRCULAR"),
        nt.GlobalAvgPool(),
    )
    plan, args, calls = record(net, (2, 5, 6, 1))
    assert args == ([5, 6], 1, True, 1) and plan.out_dims == ()
    # 5 -> ceil(5/2) = 3, total pad (3-1)*2+3-5 = 2, 1 before; 6 -> 3, total (3-1)*2+2-6 = 0
    assert_calls(
        calls,
        [
            linear(0, 0, "identity", (5, 6), (5, 6), alpha=1.0, beta=0.0, gamma=1.0, delta=1.0, eps=0.0),
            linear(
                0,
                0,
                "pool",
                (5, 6),
                (3, 3),
                window=(3, 2),
                strides=(2, 2),
                pad_lo=(1, 0),
                normalize_edges=True,
                scale=1 / 6,
            ),
            # SumPool CIRCULAR 2x2 on 3x3: total pad 1, 0 before
            linear(
                0,
                0,
                "pool",
                (3, 3),
                (3, 3),
                window=(2, 2),
                strides=(1, 1),
                pad_lo=(0, 0),
                circular=True,
                scale=1.0,
            ),
            linear(0, 0, "global", (3, 3), (), scale=1 / 81),  # mean over all 9 x 9 pairs of positions
        ],
    )


def test_calls_global_sum_pool_and_layernorm():
    net = nt.serial(
        nt.Conv(3, (1,)),
        nt.LayerNorm(eps=0.1),
        nt.Relu(),
        nt.Conv(3, (1,)),
        nt.LayerNorm(axis=(1, 2), eps=0.2),
        nt.GlobalSumPool(),
    )
    _, args, calls = record(net, (2, 4, 2))
    assert args == ([4], 2, True, 1)
    conv = linear(
        0,
        0,
        "conv",
        (4,),
        (4,),
        window=(1,),
        strides=(1,),
        pad_lo=(0,),
        scale=1.0,
        alpha=1.0,
        gamma=1.0,
        delta=1.0,
    )
    assert_calls(
        calls,
        [
            conv,
            ("add_layernorm", dict(src_dst=0, spatial=False, eps=0.1)),
            ("add_activation", dict(src_dst=0, fc_program="FC", op_index=100)),
            conv,
            ("add_layernorm", dict(src_dst=0, spatial=True, eps=0.2)),
            linear(0, 0, "global", (4,), (), scale=1.0),
        ],
    )


def test_calls_residual_block():
    block = nt.serial(nt.Relu(), nt.Conv(4, (3,), padding="SAME", W_std=1.5))
    net = nt.serial(
        nt.Conv(4, (3,)),
        nt.FanOut(2),
        nt.parallel(nt.Identity(), block),
        nt.FanInSum(),
        nt.Relu(),
        nt.Flatten(),
    )
    plan, args, calls = record(net, (2, 8, 3))
    assert args == ([8], 3, False, 2)
    assert_calls(
        calls,
        [
            linear(
                0,
                0,
                "conv",
                (8,),
                (6,),
                window=(3,),
                strides=(1,),
                pad_lo=(0,),
                scale=1 / 3,
                alpha=1.0,
                gamma=1.0,
                delta=1.0,
            ),
            ("add_copy", dict(src=0, dst=1)),
            ("add_activation", dict(src_dst=1, fc_program="FC", op_index=100)),
            linear(
                1,
                1,
                "conv",
                (6,),
                (6,),
                window=(3,),
                strides=(1,),
                pad_lo=(1,),
                scale=1 / 3,
                alpha=2.25,
                gamma=2.25,
                delta=2.25,
            ),
            ("add_axpy", dict(src=1, dst=0, weight=1.0)),
            ("add_activation", dict(src_dst=0, fc_program="FC", op_index=101)),
            linear(0, 0, "flatten", (6,), (), scale=1 / 6),
        ],
    )


def test_calls_nested_branches_reuse_registers():
    inner = nt.serial(nt.FanOut(2), nt.parallel(nt.Conv(2, (1,)), nt.Conv(2, (1,))), nt.FanInSum())
    net = nt.serial(
        nt.Conv(2, (1,)),
        nt.FanOut(3),
        nt.parallel(nt.Identity(), inner, inner),
        nt.FanInSum(),
        nt.FanOut(2),
        nt.parallel(nt.Identity(), nt.Conv(2, (1,))),
        nt.FanInSum(),
        nt.Flatten(),
    )
    plan, args, calls = record(net, (1, 3, 1))
    names = [c[0] for c in calls]
    assert names.count("add_copy") == 2 + 2 + 1 and names.count("add_axpy") == 2 + 2 + 1
    # registers: 0 the trunk, 1 and 2 the outer branches, 3 the inner copy (freed, reused)
    assert args[3] == 4
    assert calls[-1][0] == "add_linear" and calls[-1][1]["dst"] == 0


def test_calls_fan_in_concat_weights_by_channels():
    net = nt.serial(
        nt.FanOut(2), nt.parallel(nt.Dense(3, W_std=1.5), nt.Dense(5, W_std=0.5)), nt.FanInConcat()
    )
    plan, args, calls = record(net, (2, 4, 2))
    assert args == ([4], 2, True, 2)
    assert_calls(
        calls,
        [
            ("add_copy", dict(src=0, dst=1)),
            linear(0, 0, "identity", (4,), (4,), alpha=2.25, gamma=2.25, delta=2.25),
            linear(1, 1, "identity", (4,), (4,), alpha=0.25, gamma=0.25, delta=0.25),
            # the mean weighted by channels: 3/8 and 5/8 (Neural Tangents' _concat_kernels)
            linear(0, 0, "identity", (4,), (4,), alpha=3 / 8, gamma=0.0, delta=3 / 8),
            ("add_axpy", dict(src=1, dst=0, weight=5 / 8)),
        ],
    )
    # equal widths: 1/2 each
    net = nt.serial(nt.FanOut(2), nt.parallel(nt.Dense(4), nt.Dense(4)), nt.FanInConcat(-1))
    calls = record(net, (2, 4, 2))[2]
    assert calls[-2][1]["alpha"] == 0.5 and calls[-1] == ("add_axpy", dict(src=1, dst=0, weight=0.5))


def test_calls_vectors_with_branches():
    net = nt.serial(
        nt.Dense(8),
        nt.FanOut(2),
        nt.parallel(nt.Identity(), [nt.Relu(), nt.Dense(8)]),
        nt.FanInSum(),
        nt.Relu(),
        nt.Dense(1),
    )
    plan, args, calls = record(net, (5, 6))
    # vectors go to the native program as images of one position
    assert args == ([1], 6, False, 2) and plan.out_dims == () and plan.nt_shape(5, 4) == (5, 4)
    assert plan.out_size == 1
    assert calls[0] == linear(0, 0, "identity", (1,), (1,), alpha=1.0, gamma=1.0, delta=1.0)
    assert [c[0] for c in calls] == [
        "add_linear",
        "add_copy",
        "add_activation",
        "add_linear",
        "add_axpy",
        "add_activation",
        "add_linear",
    ]


def test_set_layer_tags_every_layer_depth_first():
    net = nt.serial(
        nt.Conv(2, (1,)),
        nt.FanOut(2),
        nt.parallel(nt.Identity(), nt.serial(nt.Relu(), nt.Conv(2, (1,)))),
        nt.FanInSum(),
    )
    plan = compile_network(net.layers, (1, 3, 1))
    # 0 Conv, 1 FanOut, 2 parallel, 3 its Identity, 4 its Relu, 5 its Conv, 6 FanInSum
    tags = [kw["layer"] for name, kw in plan.calls if name == "set_layer"]
    assert tags == list(range(7))
    assert plan.layer_names[4] == "layer 2, branch 1, layer 0 (Relu())"
    assert plan.layer_names[6].startswith("layer 3 (FanInSum()")
    # every other call follows the tag of its layer: the activation is layer 4's
    i = plan.calls.index(("set_layer", {"layer": 4}))
    assert plan.calls[i + 1][0] == "add_activation"


def test_activation_ops_in_the_fc_program():
    """The activations go to the spatial program as ops of one FC program, each after a Dense
    op (the FC program's own order check): the op numbers handed over are the activations'."""
    acts = [nt.Relu(), nt.Erf(2.0, 0.5, 0.1), nt.Gelu()]
    net = nt.serial(
        nt.Conv(2, (1,)), acts[0], nt.Conv(2, (1,)), acts[1], nt.Conv(2, (1,)), acts[2], nt.Flatten()
    )
    plan = compile_network(net.layers, (1, 3, 1))
    assert plan.activations == acts
    layers = _spatial_program.activation_layers(plan)
    fc = _engine.build_program(layers, 1)
    last = _engine.last_ops(fc)
    ops = [last[2 * i + 1] for i in range(len(acts))]
    assert [fc.op_layers[o] for o in ops] == [1, 3, 5]
    assert [layers[fc.op_layers[o]] for o in ops] == acts


@pytest.mark.parametrize(
    "layers",
    [
        (nt.Conv(2, (3, 3)), nt.LayerNorm(), nt.Relu()),  # a Gaussian divided by a per-point constant
        (nt.Conv(2, (3, 3)), nt.AvgPool((2, 2)), nt.Relu()),  # pooling a Gaussian keeps it Gaussian
        (nt.Conv(2, (3, 3)), nt.GlobalAvgPool(), nt.Erf()),
        (nt.Conv(2, (3, 3)), nt.Identity(), nt.Relu()),
        (
            nt.Conv(2, (3, 3)),
            nt.FanOut(2),
            nt.parallel(nt.Identity(), nt.serial(nt.Relu(), nt.Conv(2, (1, 1)))),
            nt.FanInSum(),
            nt.Relu(),
        ),
        (
            nt.Conv(2, (3, 3)),
            nt.FanOut(2),
            nt.parallel(nt.Relu(), nt.Gelu()),
        ),  # each branch its own activation
        (nt.Flatten(), nt.Dense(3), nt.Relu()),
    ],
)
def test_activations_with_gaussian_inputs_compile(layers):
    if isinstance(layers[-1], nt.Parallel):
        layers = layers + (nt.FanInConcat(),)
    compile_network(layers, (2, 5, 5, 2))


# ---------------------------------------------------------------------------------------
# Through the native engine: the layout of image outputs
# against the closed form of a Dense / 1x1 Conv layer, W^2 x[p] . y[q] / C + b^2.


def test_image_output_layout_end_to_end():
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((3, 2, 4, 5)), rng.standard_normal((2, 2, 4, 5))
    # [a, b, h, w, h', w']: position (h, w) of x1[a] with (h', w') of x2[b]
    closed = 1.44 * np.einsum("ahwc,bgvc->abhwgv", x1, x2) / 5 + 0.09
    k = nt.serial(nt.Dense(3, W_std=1.2, b_std=0.3)).kernel(x1, x2)
    np.testing.assert_allclose(k.nngp, closed.transpose(0, 1, 2, 4, 3, 5), rtol=1e-13, atol=0)
    np.testing.assert_allclose(k.ntk, k.nngp, rtol=1e-13, atol=0)  # Theta = Sigma after one layer
    # one Conv: Neural Tangents' reversed axes (N1, N2, W, W', H, H')
    k = nt.serial(nt.Conv(3, (1, 1), W_std=1.2, b_std=0.3)).kernel(x1, x2, get="nngp")
    np.testing.assert_allclose(k, closed.transpose(0, 1, 3, 5, 2, 4), rtol=1e-13, atol=0)
    k = nt.serial(nt.Conv(3, (1, 1), W_std=1.2, b_std=0.3)).kernel(x1, x2, get="nngp", diagonal_spatial=True)
    np.testing.assert_allclose(k, np.einsum("abhwhw->abhw", closed), rtol=1e-13, atol=0)
