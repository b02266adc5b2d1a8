"""Bad layers, bad images and architectures without a closed-form kernel: each a clear
exception naming the layer (or the argument) and what to do, raised before any work."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastntk as nt
from fastntk import _engine


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Every error here comes before the native program is even built."""

    def started(*args, **kwargs):
        raise AssertionError("the computation started before the error")

    monkeypatch.setattr(_engine, "new_spatial_program", started)
    monkeypatch.setattr(_engine, "spatial_gram", started, raising=False)


def images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------------------
# Constructors


@pytest.mark.parametrize(
    "make, err, message",
    [
        (lambda: nt.Conv(8, 3), TypeError, "Conv: filter_shape must be a tuple of 1 to 3 integers"),
        (lambda: nt.Conv(8), TypeError, "Conv: filter_shape is required"),
        (lambda: nt.Conv(8, ()), ValueError, "Conv: filter_shape must have 1 to 3 entries"),
        (lambda: nt.Conv(8, (1, 1, 1, 1)), ValueError, "Conv: filter_shape must have 1 to 3 entries"),
        (
            lambda: nt.Conv(8, (3, 0)),
            ValueError,
            r"Conv: filter_shape must be a tuple of integers >= 1, got \(3, 0\)",
        ),
        (lambda: nt.Conv(8, (3, 2.5)), TypeError, "Conv: filter_shape must be a tuple of integers"),
        (lambda: nt.Conv(8, "33"), TypeError, "Conv: filter_shape must be a tuple"),
        (lambda: nt.Conv(0, (3,)), ValueError, "Conv: out_chan must be an integer >= 1, got 0"),
        (lambda: nt.Conv(2.0, (3,)), TypeError, "Conv: out_chan must be an integer"),
        (
            lambda: nt.Conv(8, (3, 3), strides=(1,)),
            ValueError,
            r"Conv: strides must have one entry per spatial axis \(2, as the filter_shape\)",
        ),
        (
            lambda: nt.Conv(8, (3, 3), strides=(1, 0)),
            ValueError,
            "Conv: strides must be a tuple of integers >= 1",
        ),
        (
            lambda: nt.Conv(8, (3,), padding="FULL"),
            ValueError,
            "Conv: padding must be 'VALID', 'SAME' or 'CIRCULAR', got 'FULL'",
        ),
        (lambda: nt.Conv(8, (3,), padding=None), ValueError, "Conv: padding must be"),
        (lambda: nt.Conv(8, (3,), W_std=-1.0), ValueError, "Conv: W_std must be >= 0"),
        (lambda: nt.Conv(8, (3,), b_std=float("nan")), ValueError, "Conv: b_std must be a finite number"),
        (
            lambda: nt.Conv(8, (3,), parameterization="mup"),
            ValueError,
            "Conv: parameterization must be 'ntk' or 'standard'",
        ),
        (lambda: nt.AvgPool(2), TypeError, "AvgPool: window_shape must be a tuple"),
        (lambda: nt.AvgPool(), TypeError, "AvgPool: window_shape is required"),
        (
            lambda: nt.AvgPool((2, 2), strides=(2,)),
            ValueError,
            r"AvgPool: strides must have one entry per spatial axis \(2, as the window_shape\)",
        ),
        (lambda: nt.AvgPool((2,), padding="valid!"), ValueError, "AvgPool: padding must be"),
        (
            lambda: nt.AvgPool((2,), normalize_edges=1),
            TypeError,
            "AvgPool: normalize_edges must be True or False",
        ),
        (lambda: nt.SumPool((0,)), ValueError, "SumPool: window_shape must be a tuple of integers >= 1"),
        (lambda: nt.LayerNorm(axis="channels"), TypeError, "LayerNorm: axis must be an integer or a tuple"),
        (lambda: nt.LayerNorm(axis=()), TypeError, "LayerNorm: axis must be an integer or a non-empty tuple"),
        (lambda: nt.LayerNorm(axis=(1.0,)), TypeError, "LayerNorm: axis must be"),
        (lambda: nt.LayerNorm(eps=-1e-3), ValueError, "LayerNorm: eps must be >= 0"),
        (lambda: nt.FanOut(0), ValueError, "FanOut: num must be an integer >= 1, got 0"),
        (lambda: nt.FanOut(2.0), TypeError, "FanOut: num must be an integer"),
        (lambda: nt.FanInConcat("channels"), TypeError, "FanInConcat: axis must be an integer"),
        (lambda: nt.parallel(), ValueError, "parallel: needs at least one branch"),
        (
            lambda: nt.parallel(nt.Relu(), "Dense"),
            TypeError,
            "parallel: argument 1 is not a fastntk layer or network",
        ),
        (lambda: nt.parallel([nt.Relu(), 3]), TypeError, "parallel: argument 0 is not a fastntk layer"),
        (
            lambda: nt.serial(nt.Conv(2, (3,)), nt.Conv),
            TypeError,
            "serial: argument 1 is not a fastntk layer",
        ),
    ],
)
def test_bad_layer_arguments(make, err, message):
    with pytest.raises(err, match=message):
        make()


# ---------------------------------------------------------------------------------------
# Images that do not fit the network


def test_images_of_the_wrong_rank():
    net = nt.serial(nt.Conv(4, (3, 3)), nt.Relu(), nt.Flatten(), nt.Dense(1))
    with pytest.raises(ValueError, match=re.escape("layer 0 (Conv(out_chan=4, filter_shape=(3, 3)")) as info:
        net.kernel(images((2, 8, 3)))
    assert "has a 2-D filter (3, 3), but its input has 1 spatial axes (8,)" in str(info.value)
    assert "(N, ..., ..., C)" in str(info.value)
    with pytest.raises(
        ValueError, match=r"layer 0 .* has a 2-D filter \(3, 3\), but its input has 3 spatial axes"
    ):
        net.kernel(images((2, 5, 5, 5, 1)))
    with pytest.raises(ValueError, match=r"layer 0 \(Conv.*\) is a spatial layer on a vector"):
        net.kernel(images((2, 8)))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "inputs must have shape (N, C), (N, W, C), (N, H, W, C) or (N, D, H, W, C), got shape (2, 1, 1, 1, 1, 3)"
        ),
    ):
        net.kernel(np.ones((2, 1, 1, 1, 1, 3)))
    with pytest.raises(ValueError, match=re.escape("got shape (4,)")):
        net.kernel(np.ones(4))
    with pytest.raises(ValueError, match="at least one channel"):
        net.kernel(np.ones((2, 5, 5, 0)))


def test_pooling_window_of_the_wrong_rank():
    net = nt.serial(nt.Conv(4, (3, 3)), nt.AvgPool((2,)), nt.Flatten())
    with pytest.raises(
        ValueError, match=r"layer 1 \(AvgPool.*\) has a 1-D window \(2,\), but its input has 2 spatial axes"
    ):
        net.kernel(images((2, 6, 6, 3)))


def test_filter_larger_than_a_valid_input():
    net = nt.serial(nt.Conv(4, (3, 3)), nt.Relu(), nt.Conv(4, (5, 1)), nt.Flatten())
    with pytest.raises(ValueError, match=re.escape("layer 2 (Conv(out_chan=4, filter_shape=(5, 1)")) as info:
        net.kernel(images((2, 6, 6, 3)))
    msg = str(info.value)
    assert "the filter (5, 1) does not fit its input of spatial shape (4, 4) with padding='VALID'" in msg
    assert "padding='SAME'" in msg
    # the same filter with SAME or CIRCULAR padding is fine
    for padding in ("SAME", "CIRCULAR"):
        nt.serial(
            nt.Conv(4, (3, 3)), nt.Relu(), nt.Conv(4, (5, 1), padding=padding), nt.Flatten()
        ).spatial_plan((2, 6, 6, 3))


def test_pooling_window_that_does_not_fit():
    net = nt.serial(nt.Conv(4, (3, 3), strides=(2, 2)), nt.Relu(), nt.AvgPool((3, 3)), nt.Flatten())
    with pytest.raises(
        ValueError,
        match=r"layer 2 \(AvgPool.*\): the window \(3, 3\) does not fit its input of spatial shape \(2, 2\)",
    ):
        net.kernel(images((1, 5, 5, 1)))
    with pytest.raises(ValueError, match=r"layer 1 \(SumPool.*\): the window \(4,\) does not fit"):
        nt.serial(nt.Dense(), nt.SumPool((4,))).kernel(images((1, 3, 1)))


@pytest.mark.parametrize(
    "layer",
    [nt.Conv(2, (1, 1)), nt.AvgPool((1, 1)), nt.SumPool((1, 1)), nt.GlobalAvgPool(), nt.GlobalSumPool()],
)
def test_spatial_layers_after_flatten(layer):
    net = nt.serial(nt.Conv(4, (3, 3)), nt.Flatten(), nt.Dense(3), layer)
    with pytest.raises(
        ValueError,
        match=r"layer 3 \(.*\) .*after Flatten.*put it before Flatten|layer 3 \(.*\) is a spatial layer after Flatten",
    ):
        net.kernel(images((2, 5, 5, 1)))


def test_spatial_layers_after_global_pooling():
    net = nt.serial(nt.Conv(4, (3, 3)), nt.GlobalAvgPool(), nt.Conv(4, (1, 1)))
    with pytest.raises(
        ValueError, match=r"layer 2 \(Conv.*\) is a spatial layer on a vector \(no spatial axes left\)"
    ):
        net.kernel(images((2, 5, 5, 1)))


def test_x1_and_x2_of_different_shapes():
    net = nt.serial(nt.Conv(4, (3, 3)), nt.Flatten())
    with pytest.raises(
        ValueError,
        match=re.escape(
            "x1 and x2 must have the same shape but for the first (batch) axis: x1 has shape (2, 5, 5, 1), x2 has shape (3, 5, 6, 1)"
        ),
    ):
        net.kernel(images((2, 5, 5, 1)), images((3, 5, 6, 1)))
    with pytest.raises(ValueError, match="x1 and x2 must have the same shape"):
        net.kernel(images((2, 5, 5, 1)), images((3, 25)))


def test_non_finite_images():
    net = nt.serial(nt.Conv(4, (3, 3)), nt.Flatten())
    x = images((3, 5, 5, 1))
    x[1, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"x1 has a non-finite value \(NaN or Inf\) in row 1"):
        net.kernel(x)


# ---------------------------------------------------------------------------------------
# Branches


def _joined(first, second, fan_in, padding="VALID"):
    """Conv, FanOut(2), parallel(first, second), fan_in: the fan-in is layer 3."""
    return nt.serial(nt.Conv(4, (3, 3), padding=padding), nt.FanOut(2), nt.parallel(first, second), fan_in)


@pytest.mark.parametrize("fan_in", [nt.FanInSum(), nt.FanInConcat()], ids=repr)
def test_fan_in_of_different_shapes(fan_in):
    net = _joined(nt.Identity(), nt.Conv(4, (3, 3)), fan_in, padding="SAME")
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"layer 3 ({fan_in!r}) joins branches of different spatial shapes [(6, 6), (4, 4)]: every branch "
            "must give the same shape"
        ),
    ):
        net.kernel(images((2, 6, 6, 1)))


def test_fan_in_sum_of_different_channel_counts():
    net = _joined(nt.Conv(4, (1, 1)), nt.Conv(6, (1, 1)), nt.FanInSum())
    with pytest.raises(
        ValueError, match=re.escape("layer 3 (FanInSum()) sums branches with different channel counts [4, 6]")
    ):
        net.kernel(images((2, 6, 6, 1)))


def test_fan_in_concat_axes():
    for axis in (1, 2, 0, -2):
        net = _joined(nt.Conv(4, (1, 1)), nt.Conv(4, (1, 1)), nt.FanInConcat(axis))
        with pytest.raises(
            NotImplementedError,
            match=rf"layer 3 \(FanInConcat\(axis={axis}\)\): concatenation along axis {axis} is not supported; only the channel axis \(-1\) is",
        ):
            net.kernel(images((2, 6, 6, 1)))
    net = _joined(nt.Conv(4, (1, 1)), nt.Conv(4, (1, 1)), nt.FanInConcat(7))
    with pytest.raises(ValueError, match="axis 7 is out of range for inputs of 4 axes"):
        net.kernel(images((2, 6, 6, 1)))


def test_fan_in_concat_needs_the_widths():
    net = nt.serial(
        nt.Conv(4, (3, 3)),
        nt.FanOut(2),
        nt.parallel(nt.Conv(4, (1, 1)), nt.Conv(None, (1, 1))),
        nt.FanInConcat(),
    )
    with pytest.raises(
        ValueError,
        match=r"layer 3 \(FanInConcat.*\) weights each branch's kernel by its channel count, but branch 1 has no known width: give out_chan",
    ):
        net.kernel(images((2, 6, 6, 1)))


def test_branch_counts():
    x = images((2, 6, 6, 1))
    net = nt.serial(
        nt.Conv(4, (3, 3)),
        nt.FanOut(2),
        nt.parallel(nt.Identity(), nt.Conv(4, (1, 1)), nt.Conv(4, (1, 1))),
        nt.FanInSum(),
    )
    with pytest.raises(
        ValueError, match=r"layer 2 \(parallel\(.*\) has 3 branches but gets 2 \(from FanOut\(2\)"
    ):
        net.kernel(x)
    net = nt.serial(nt.Conv(4, (3, 3)), nt.parallel(nt.Identity(), nt.Conv(4, (1, 1))), nt.FanInSum())
    with pytest.raises(
        ValueError,
        match=r"layer 1 \(parallel.*\) has 2 branches but gets a single input: split it first with FanOut\(2\)",
    ):
        net.kernel(x)
    net = nt.serial(nt.Conv(4, (3, 3)), nt.FanOut(2), nt.Relu())
    with pytest.raises(
        ValueError,
        match=r"layer 2 \(Relu\(\)\) gets 2 branches .*: join them first with FanInSum\(\) or FanInConcat\(\)",
    ):
        net.kernel(x)
    net = nt.serial(nt.Conv(4, (3, 3)), nt.FanOut(3))
    with pytest.raises(
        ValueError, match=r"the network ends with 3 branches: join them with FanInSum\(\) or FanInConcat\(\)"
    ):
        net.kernel(x)
    net = nt.serial(nt.Conv(4, (3, 3)), nt.FanInSum())
    with pytest.raises(ValueError, match=r"layer 1 \(FanInSum\(\)\) joins branches, but gets a single input"):
        net.kernel(x)
    net = nt.serial(nt.Conv(4, (3, 3)), nt.FanOut(2), nt.FanOut(2))
    with pytest.raises(ValueError, match=r"layer 2 \(FanOut\(num=2\)\) gets 2 branches"):
        net.kernel(x)
    # a nested branch count inside a branch: the message names the path
    inner = nt.serial(nt.FanOut(2), nt.parallel(nt.Conv(4, (1, 1))), nt.FanInSum())
    net = nt.serial(nt.Conv(4, (3, 3)), nt.FanOut(2), nt.parallel(nt.Identity(), inner), nt.FanInSum())
    with pytest.raises(
        ValueError, match=r"layer 2, branch 1, layer 1 \(parallel\(.*\) has 1 branch but gets 2"
    ):
        net.kernel(x)


def test_branches_that_are_not_independent():
    net = _joined(nt.Identity(), nt.Identity(), nt.FanInSum())
    with pytest.raises(
        ValueError,
        match=r"layer 3 \(FanInSum\(\)\) sums branches 0 and 1, which both carry the FanOut's input without a Dense or Conv layer",
    ):
        net.kernel(images((2, 6, 6, 1)))
    net = nt.serial(
        nt.Conv(4, (3, 3)),
        nt.FanOut(3),
        nt.parallel(nt.Conv(4, (1, 1)), nt.AvgPool((1, 1)), nt.LayerNorm()),
        nt.FanInSum(),
    )
    with pytest.raises(ValueError, match="sums branches 1 and 2"):
        net.kernel(images((2, 6, 6, 1)))


# ---------------------------------------------------------------------------------------
# Architectures whose kernel has no closed form: name the layer, suggest Monte Carlo


MONTE_CARLO = "estimate it by Monte Carlo over finite networks instead: fastntk.monte_carlo_kernel(net, ...)"


def test_monte_carlo_is_the_real_name():
    assert callable(nt.monte_carlo_kernel)


@pytest.mark.parametrize(
    "layers, message",
    [
        ((nt.Relu(), nt.Conv(2, (3, 3))), r"layer 0 \(Relu\(\)\) gets the input, which is not Gaussian"),
        (
            (nt.Conv(2, (3, 3)), nt.Relu(), nt.Erf()),
            r"layer 2 \(Erf\(a=1.0, b=1.0, c=0.0\)\) gets the output of the activation layer 1 \(Relu\(\)\), which is not Gaussian",
        ),
        (
            (nt.Conv(2, (3, 3)), nt.Relu(), nt.AvgPool((2, 2)), nt.Relu()),
            r"layer 3 \(Relu\(\)\) gets the output of the activation layer 1 \(Relu\(\)\), pooled at layer 2 \(AvgPool",
        ),
        (
            (nt.Conv(2, (3, 3)), nt.Gelu(), nt.GlobalAvgPool(), nt.Relu()),
            r"layer 3 \(Relu\(\)\) gets the output of the activation layer 1 \(Gelu\(\)\), pooled at layer 2 \(GlobalAvgPool",
        ),
        (
            (nt.Conv(2, (3, 3)), nt.Flatten(), nt.Relu()),
            r"layer 2 \(Relu\(\)\) gets the output of Flatten \(entries of different positions have different variances\)",
        ),
        (
            (
                nt.Conv(2, (3, 3)),
                nt.FanOut(2),
                nt.parallel(nt.Conv(2, (1, 1)), nt.Conv(2, (1, 1))),
                nt.FanInConcat(),
                nt.Relu(),
            ),
            r"layer 4 \(Relu\(\)\) gets the channel concatenation at layer 3 \(FanInConcat\(axis=-1\)\)",
        ),
        (
            (nt.Conv(2, (3, 3)), nt.Relu(), nt.LayerNorm(), nt.Relu()),
            r"layer 2 \(LayerNorm\(axis=\(-1,\), eps=1e-12\)\) gets the output of the activation layer 1 \(Relu\(\)\), which is not Gaussian: the kernel of LayerNorm needs a centred Gaussian input",
        ),
        # a sum of a non-Gaussian branch (nonzero mean) with another: cross terms the kernels miss
        (
            (
                nt.Conv(2, (3, 3)),
                nt.FanOut(2),
                nt.parallel(nt.Relu(), nt.Conv(2, (1, 1))),
                nt.FanInSum(),
                nt.Relu(),
            ),
            r"layer 3 \(FanInSum\(\)\) sums 2 branches, and branch 0 gives the output of the activation layer 2, branch 0, layer 0 \(Relu\(\)\), which is not a centred Gaussian",
        ),
        # in a branch: the message gives the path
        (
            (
                nt.Conv(2, (3, 3)),
                nt.FanOut(2),
                nt.parallel(nt.Identity(), nt.serial(nt.Relu(), nt.Relu(), nt.Conv(2, (1, 1)))),
                nt.FanInSum(),
            ),
            r"layer 2, branch 1, layer 1 \(Relu\(\)\) gets the output of the activation layer 2, branch 1, layer 0 \(Relu\(\)\)",
        ),
    ],
)
def test_no_closed_form(layers, message):
    net = nt.serial(*layers)
    with pytest.raises(ValueError, match=message) as info:
        net.kernel(images((2, 6, 6, 1)))
    assert MONTE_CARLO in str(info.value)


def test_fully_connected_branches_check_the_same():
    net = nt.serial(
        nt.Dense(4), nt.FanOut(2), nt.parallel([nt.Relu(), nt.Relu()], nt.Dense(4)), nt.FanInSum()
    )
    with pytest.raises(
        ValueError, match=r"layer 2, branch 0, layer 1 \(Relu\(\)\) gets the output of the activation"
    ):
        net.kernel(images((3, 5)))


# ---------------------------------------------------------------------------------------
# Other layer/network combinations


def test_layernorm_axes():
    x = images((2, 6, 6, 1))
    with pytest.raises(
        ValueError, match=r"layer 1 \(LayerNorm.*\): axis must include the channel axis \(-1\)"
    ):
        nt.serial(nt.Conv(2, (3, 3)), nt.LayerNorm(axis=(1, 2))).kernel(x)
    with pytest.raises(
        NotImplementedError,
        match=r"layer 1 \(LayerNorm.*\): normalizing over the batch axis \(0\) is not supported",
    ):
        nt.serial(nt.Conv(2, (3, 3)), nt.LayerNorm(axis=(0, -1))).kernel(x)
    with pytest.raises(
        NotImplementedError,
        match=r"normalizing over some spatial axes but not all is not supported: use axis=-1 \(per position\) or axis=\(1, 2, 3\)",
    ):
        nt.serial(nt.Conv(2, (3, 3)), nt.LayerNorm(axis=(1, -1))).kernel(x)
    with pytest.raises(ValueError, match="axis 4 is out of range for inputs of 4 axes"):
        nt.serial(nt.Conv(2, (3, 3)), nt.LayerNorm(axis=(4, -1))).kernel(x)


def test_standard_parameterization_needs_the_fan_in():
    net = nt.serial(
        nt.Conv(None, (3, 3)), nt.Relu(), nt.Conv(2, (3, 3), parameterization="standard"), nt.Flatten()
    )
    with pytest.raises(
        ValueError, match=r"layer 2 \(Conv.*\) uses the standard parameterization, whose NTK needs its fan-in"
    ):
        net.kernel(images((2, 6, 6, 1)))


def test_unsupported_options_for_images():
    net = nt.serial(nt.Conv(2, (3, 3)), nt.Relu(), nt.Flatten())
    x = images((2, 6, 6, 1))
    with pytest.raises(
        NotImplementedError, match="every_layer=True is not supported yet for networks on images"
    ):
        net.kernel(x, every_layer=True)
    with pytest.raises(NotImplementedError, match="out= is not supported yet"):
        net.kernel(x, out=np.zeros((2, 2)), get="nngp")
    with pytest.raises(NotImplementedError, match="memory_limit= is not supported yet"):
        net.kernel(x, memory_limit="1GB")
    if not nt.has_cuda():  # the CUDA driver computes it where there is one (tests/test_cuda_cnn.py)
        with pytest.raises((TypeError, RuntimeError), match="device='cuda' was requested, but"):
            net.kernel(x, device="cuda")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'gpu'"):
        net.kernel(x, device="gpu")
    with pytest.raises(ValueError, match="get"):
        net.kernel(x, get="cov1")
    with pytest.raises(
        ValueError,
        match="diagonal_spatial is for networks whose output is an image; this one ends in a vector",
    ):
        net.kernel(x, diagonal_spatial=True)
    with pytest.raises(TypeError, match="diagonal_spatial must be True, False or None"):
        nt.serial(nt.Conv(2, (3, 3))).kernel(x, diagonal_spatial="yes")
    with pytest.raises(ValueError, match="diagonal_spatial=True: this network pools over positions"):
        nt.serial(nt.Conv(2, (3, 3)), nt.AvgPool((2, 2))).kernel(x, diagonal_spatial=True)
    with pytest.raises(
        ValueError,
        match="diagonal_spatial is for networks whose output is an image; this network takes vectors",
    ):
        nt.serial(nt.Dense(2)).kernel(images((2, 3)), diagonal_spatial=True)
