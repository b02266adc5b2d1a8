"""CNN / ResNet architectures for tests: one description in tests/reference_cnn.py's form,
turned into fastntk layers here (fastntk is imported only when a network is built)."""

from __future__ import annotations

from reference_cnn import layer_from_spec


def conv(out_chan, filter_shape, strides=None, padding="SAME", W_std=1.3, b_std=0.2, parameterization="ntk"):
    return (
        "conv",
        dict(
            out_chan=out_chan,
            filter_shape=tuple(filter_shape),
            strides=None if strides is None else tuple(strides),
            padding=padding,
            W_std=W_std,
            b_std=b_std,
            parameterization=parameterization,
        ),
    )


def dense(out_dim=None, W_std=1.1, b_std=0.3, parameterization="ntk"):
    return ("dense", dict(out_dim=out_dim, W_std=W_std, b_std=b_std, parameterization=parameterization))


def _window(window_shape, strides, padding):
    return dict(
        window_shape=tuple(window_shape), strides=None if strides is None else tuple(strides), padding=padding
    )


def avg_pool(window_shape, strides=None, padding="VALID", normalize_edges=False):
    return ("avg_pool", dict(_window(window_shape, strides, padding), normalize_edges=normalize_edges))


def sum_pool(window_shape, strides=None, padding="VALID"):
    return ("sum_pool", _window(window_shape, strides, padding))


def layer_norm(axis=-1, eps=1e-12):
    return ("layer_norm", dict(axis=axis, eps=eps))


def fan_out(n):
    return ("fan_out", dict(n=n))


def parallel(*branches):
    return ("parallel", dict(branches=[list(b) for b in branches]))


RELU = ("abrelu", dict(a=0.0, b=1.0))
FLATTEN = ("flatten", {})
GAP = ("global_avg_pool", {})
GSP = ("global_sum_pool", {})
IDENTITY = ("identity", {})
FAN_IN_SUM = ("fan_in_sum", {})
FAN_IN_CONCAT = ("fan_in_concat", dict(axis=-1))

# One of each activation family (the parameters of tests/specs.py).
ACTIVATIONS = {
    "relu": RELU,
    "leaky_relu": ("abrelu", dict(a=0.1, b=1.0)),
    "abrelu": ("abrelu", dict(a=-0.4, b=1.3)),
    "erf": ("erf", dict(a=0.7, b=1.6, c=0.3)),
    "sign": ("sign", {}),
    "gelu": ("gelu", {}),
    "sin": ("sin", dict(a=1.2, b=0.8, c=0.3)),
    "cos": ("cos", dict(a=0.9, b=1.1, c=-0.2)),
    "rbf": ("rbf", dict(gamma=0.7)),
    "exp": ("exp", dict(a=0.8, b=0.5)),
    "gaussian": ("gaussian", dict(a=1.1, b=-0.6)),
    "monomial3": ("monomial", dict(degree=3)),
    "rect_monomial2": ("rectified_monomial", dict(degree=2)),
}


def res_block(c, parameterization="ntk", padding="SAME"):
    """Pre-activation residual block: x + Conv(Relu(Conv(Relu(x)))) (x Gaussian)."""
    branch = [RELU, conv(c, (3, 3), padding=padding, parameterization=parameterization), RELU,
              conv(c, (3, 3), padding=padding, parameterization=parameterization)]  # fmt: skip
    return [fan_out(2), parallel(branch, [IDENTITY]), FAN_IN_SUM]


def down_block(c, parameterization="ntk"):
    """Strided residual block with a 1x1 strided Conv shortcut."""
    branch = [RELU, conv(c, (3, 3), (2, 2), parameterization=parameterization), RELU,
              conv(c, (3, 3), parameterization=parameterization)]  # fmt: skip
    return [
        fan_out(2),
        parallel(branch, [conv(c, (1, 1), (2, 2), parameterization=parameterization)]),
        FAN_IN_SUM,
    ]


def architectures():
    """name -> (spec, input shape without the batch axis). Small images (S <= 25 positions)
    keep the reference's pixel loops fast."""
    A = {}
    for par in ("ntk", "standard"):
        A[f"conv_relu_flatten_{par}"] = (
            [conv(3, (3, 3), parameterization=par), RELU, conv(4, (2, 2), (2, 1), "VALID", parameterization=par),
             RELU, FLATTEN, dense(1, parameterization=par)],
            (4, 3, 2),
        )  # fmt: skip
        A[f"conv_relu_gap_{par}"] = (
            [conv(3, (3, 3), parameterization=par), RELU, conv(4, (3, 2), parameterization=par), RELU, GAP,
             dense(1, parameterization=par)],
            (5, 3, 2),
        )  # fmt: skip
        A[f"myrtle_{par}"] = (
            [conv(4, (3, 3), W_std=1.4, b_std=0.1, parameterization=par), RELU, conv(4, (3, 3), parameterization=par),
             RELU, avg_pool((2, 2), (2, 2)), conv(4, (3, 3), parameterization=par), RELU, GAP,
             dense(1, parameterization=par)],
            (4, 4, 3),
        )  # fmt: skip
        A[f"conv1d_{par}"] = (
            [conv(3, (3,), (2,), parameterization=par), RELU, conv(2, (2,), None, "CIRCULAR", parameterization=par),
             ACTIVATIONS["erf"], FLATTEN, dense(1, parameterization=par)],
            (7, 2),
        )  # fmt: skip
        A[f"conv3d_{par}"] = (
            [conv(3, (2, 2, 2), parameterization=par), RELU, conv(2, (2, 1, 2), (1, 2, 1), "VALID", parameterization=par),
             RELU, GAP, dense(1, parameterization=par)],
            (3, 3, 2, 2),
        )  # fmt: skip
        A[f"resnet_{par}"] = (
            [conv(3, (3, 3), parameterization=par)] + res_block(3, par) + down_block(4, par)
            + [RELU, FLATTEN, dense(1, parameterization=par)],
            (4, 4, 2),
        )  # fmt: skip
        A[f"dense_on_channels_{par}"] = (
            [dense(4, parameterization=par), RELU, dense(3, parameterization=par)],
            (4, 3, 2),
        )
        A[f"no_bias_{par}"] = (
            [conv(3, (2, 2), b_std=None, parameterization=par), RELU, conv(2, (2, 2), b_std=None, parameterization=par),
             RELU, GAP],
            (4, 3, 2),
        )  # fmt: skip
    # every padding and some strides, with a spatial output (Neural Tangents' full layout)
    for pad in ("VALID", "SAME", "CIRCULAR"):
        for f, s in (((3, 2), None), ((2, 2), (2, 1)), ((3, 3), (2, 2))):
            A[f"conv_{pad}_{f[0]}x{f[1]}_s{s}"] = (
                [conv(3, f, s, pad), RELU, conv(2, (2, 2), None, pad)],
                (5, 5, 2),
            )
    # CIRCULAR windows larger than the image wrap around more than once (Neural Tangents
    # pads with np.pad's 'wrap', which repeats the image)
    A["circular_window_larger_than_input"] = (
        [conv(3, (3, 4), None, "CIRCULAR"), RELU, conv(2, (5, 2), (2, 1), "CIRCULAR"), RELU,
         avg_pool((3, 3), None, "CIRCULAR"), GAP],
        (2, 3, 2),
    )  # fmt: skip
    A["single_conv_spatial_out"] = ([conv(3, (2, 3), None, "SAME")], (4, 3, 2))
    A["conv3d_spatial_out"] = ([conv(2, (2, 2, 2), None, "CIRCULAR")], (3, 2, 2, 2))
    # activations, with both readouts
    for name, act in ACTIVATIONS.items():
        A[f"{name}_flatten"] = ([conv(3, (2, 2)), act, conv(2, (3, 3)), act, FLATTEN, dense(1)], (4, 3, 2))
        A[f"{name}_gap"] = ([conv(3, (2, 2)), act, conv(2, (2, 2)), act, GAP], (3, 3, 2))
    # pooling
    for pad in ("VALID", "SAME", "CIRCULAR"):
        A[f"avg_pool_{pad}"] = (
            [conv(3, (2, 2)), RELU, avg_pool((3, 2), (2, 1), pad), conv(2, (2, 2)), RELU, GAP],
            (5, 3, 2),
        )
        A[f"avg_pool_{pad}_normalize_edges"] = (
            [conv(3, (2, 2)), RELU, avg_pool((2, 3), (2, 2), pad, True), FLATTEN, dense(1)],
            (4, 4, 2),
        )
        A[f"sum_pool_{pad}"] = ([conv(3, (2, 2)), RELU, sum_pool((2, 2), None, pad)], (4, 3, 2))
    A["global_sum_pool"] = ([conv(3, (2, 2)), RELU, conv(2, (2, 2)), GSP, dense(1)], (4, 3, 2))
    A["pool_1d"] = ([conv(3, (2,)), RELU, avg_pool((3,), (2,), "SAME", True), FLATTEN], (7, 2))
    A["pool_3d"] = ([conv(3, (2, 2, 1)), RELU, avg_pool((2, 2, 2), None, "SAME")], (3, 3, 2, 2))
    # LayerNorm
    A["layer_norm_channels"] = (
        [conv(3, (2, 2)), layer_norm(-1), RELU, conv(2, (2, 2)), RELU, FLATTEN],
        (4, 3, 2),
    )
    A["layer_norm_spatial"] = (
        [conv(3, (2, 2)), layer_norm((1, 2, 3)), RELU, conv(2, (2, 2)), RELU, GAP],
        (4, 3, 2),
    )
    A["layer_norm_spatial_flatten"] = (
        [conv(3, (2, 2)), layer_norm((1, 2, 3)), RELU, conv(2, (3, 2), (2, 1)), RELU, FLATTEN, dense(1)],
        (5, 3, 2),
    )
    A["layer_norm_eps"] = (
        [conv(3, (2, 2), b_std=0.0), layer_norm(-1, 0.5), ACTIVATIONS["erf"], GAP],
        (4, 3, 2),
    )
    A["resnet_layer_norm"] = (
        [conv(3, (3, 3), None, "CIRCULAR"), fan_out(2),
         parallel([layer_norm((1, 2, 3)), RELU, conv(3, (3, 3), None, "CIRCULAR")], [IDENTITY]),
         FAN_IN_SUM, RELU, GAP],
        (4, 3, 2),
    )  # fmt: skip
    # branches
    A["resnet_gap"] = ([conv(3, (3, 3))] + res_block(3) + res_block(3) + [RELU, GAP, dense(1)], (4, 3, 2))
    A["resnet_spatial_out"] = ([conv(3, (3, 3))] + res_block(3), (4, 3, 2))
    A["fan_out3_sum"] = (
        [conv(2, (2, 2)), fan_out(3), parallel([conv(2, (2, 2))], [conv(2, (3, 3))], [IDENTITY]), FAN_IN_SUM],
        (4, 3, 2),
    )
    A["concat_equal"] = (
        [conv(3, (2, 2)), RELU, fan_out(2), parallel([conv(4, (2, 2))], [conv(4, (3, 3), None, "CIRCULAR")]),
         FAN_IN_CONCAT, GAP],
        (4, 3, 2),
    )  # fmt: skip
    A["concat_unequal"] = (
        [conv(3, (2, 2)), RELU, fan_out(3),
         parallel([conv(4, (2, 2))], [conv(7, (3, 3), None, "CIRCULAR")], [IDENTITY]), FAN_IN_CONCAT, FLATTEN, dense(1)],
        (4, 3, 2),
    )  # fmt: skip
    A["concat_spatial_out"] = (
        [conv(3, (2, 2)), RELU, fan_out(2), parallel([conv(4, (2, 2))], [IDENTITY]), FAN_IN_CONCAT],
        (4, 3, 2),
    )
    A["concat_then_dense_standard"] = (
        [conv(3, (2, 2)), RELU, fan_out(2), parallel([conv(4, (2, 2))], [IDENTITY]), FAN_IN_CONCAT,
         dense(2, parameterization="standard"), RELU, GAP, dense(1, parameterization="standard")],
        (4, 3, 2),
    )  # fmt: skip
    A["mixed_standard_5x3"] = (
        [conv(3, (3, 2), (1, 2), "CIRCULAR", parameterization="standard"), ACTIVATIONS["erf"],
         dense(4, parameterization="standard"), ACTIVATIONS["gelu"], sum_pool((2, 1), None, "SAME"), FLATTEN,
         dense(1, parameterization="standard")],
        (5, 3, 2),
    )  # fmt: skip
    return A


# ---------------------------------------------------------------------------------------
# spec -> fastntk


def to_fastntk_layers(spec):
    """The fastntk layers of a reference spec (a list; nested specs become serial networks)."""
    import fastntk as nt

    out = []
    for name, p in spec:
        if name == "parallel":
            out.append(nt.parallel(*(nt.serial(*to_fastntk_layers(b)) for b in p["branches"])))
        elif name == "serial":
            out.extend(to_fastntk_layers(p["layers"]))
        else:
            out.append(layer_from_spec(nt, name, p))
    return out


def to_fastntk(spec):
    """The fastntk network of a reference spec."""
    import fastntk as nt

    return nt.serial(*to_fastntk_layers(spec))


# Architectures Neural Tangents cannot serve as a reference for: it returns NaN for
# RectifiedMonomial wherever it meets a correlation of exactly 1 (every position's self
# covariance of a full-spatial network, every diagonal pair of x2=None).
ARCHITECTURE_NAMES_WITHOUT_NT = frozenset({"rect_monomial2_flatten", "rect_monomial2_gap"})
