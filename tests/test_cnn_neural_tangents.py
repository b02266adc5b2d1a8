"""CNN / ResNet kernels vs Neural Tangents (optional: runs where neural_tangents 0.6.5 and JAX
are installed, e.g. the separate environment DESIGN.md describes; skipped otherwise).

Two checks per architecture: the plain NumPy reference (tests/reference_cnn.py) against
Neural Tangents' ``kernel_fn`` (this needs no fastntk CNN code: it establishes the reference),
and fastntk against ``kernel_fn`` directly, both in float64 to 1e-10 relative (DESIGN.md
section 2) — including Neural Tangents' output shapes and axis order for spatial outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnn_specs import ARCHITECTURE_NAMES_WITHOUT_NT, architectures, to_fastntk
from conftest import assert_kernel_close
from reference_cnn import cnn_kernels_ref, layer_from_spec

stax = pytest.importorskip("neural_tangents.stax")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

try:
    import fastntk as nt
except ImportError:  # the reference half also runs in an environment without fastntk
    nt = None

requires_cnn = pytest.mark.skipif(
    nt is None or not hasattr(nt, "Conv"),
    reason="fastntk.Conv is missing: the CNN layers of issue 11 have not landed",
)

# Neural Tangents warns at every FanInSum / FanInConcat that it assumes independent branches
# (ours are: each starts with a Conv or is the identity of a Gaussian input).
pytestmark = pytest.mark.filterwarnings("ignore:`FanIn` layers assume independent inputs:UserWarning")

# Neural Tangents' 1e-10 (DESIGN.md section 2). Measured: reference vs NT <= 2e-15.
RTOL = 1e-10

ARCHS = architectures()
NT_ARCHS = sorted(n for n in ARCHS if n not in ARCHITECTURE_NAMES_WITHOUT_NT)


def to_stax(spec):
    """The Neural Tangents layer of a reference spec (stax.serial of its layers)."""
    layers = []
    for name, p in spec:
        if name == "conv":
            layers.append(
                stax.Conv(
                    p["out_chan"],
                    p["filter_shape"],
                    p["strides"],
                    p["padding"],
                    p["W_std"],
                    p["b_std"],
                    parameterization=p["parameterization"],
                )
            )
        elif name == "dense":
            # out_dim enters only the standard NTK of the next layer; NT needs some value
            out = 1 if p["out_dim"] is None else p["out_dim"]
            layers.append(stax.Dense(out, p["W_std"], p["b_std"], parameterization=p["parameterization"]))
        elif name == "parallel":
            layers.append(stax.parallel(*(to_stax(b) for b in p["branches"])))
        else:
            layers.append(layer_from_spec(stax, name, p))
    return stax.serial(*layers)


def _compare(got, spec, x1, x2, kernel_fn):
    """got (nngp, ntk) vs Neural Tangents. For x2=None only off the diagonal pairs: NT sends
    the diagonal pairs through its pair formulas at a correlation rounded to 1 - 1e-16,
    which costs up to ~1e-8 after an arc-cosine (measured 5e-9 for Sign); ours are exact
    (tests/test_cnn_kernels.py checks them against the reference)."""
    theirs = kernel_fn(x1, x2, ("nngp", "ntk"))
    _, scale = cnn_kernels_ref(spec, x1, x2, return_scale=True)
    for name, mine, ref, s in zip(("nngp", "ntk"), got, theirs, scale):
        ref = np.asarray(ref)
        assert mine.shape == ref.shape, (name, mine.shape, ref.shape)
        if x2 is None:
            n = ref.shape[0]
            mask = np.broadcast_to(~np.eye(n, dtype=bool).reshape((n, n) + (1,) * (ref.ndim - 2)), ref.shape)
            assert_kernel_close(mine[mask], ref[mask], RTOL, s[mask], name)
        else:
            assert_kernel_close(mine, ref, RTOL, s, name)


@pytest.mark.parametrize("name", NT_ARCHS)
def test_reference_agrees_with_neural_tangents(name, rng):
    spec, shape = ARCHS[name]
    kernel_fn = to_stax(spec)[2]
    x1, x2 = rng.standard_normal((3,) + shape), rng.standard_normal((2,) + shape)
    for b in (x2, None):
        _compare(cnn_kernels_ref(spec, x1, b), spec, x1, b, kernel_fn)


FASTNTK_ARCHS = [
    "conv_relu_flatten_ntk",
    "conv_relu_flatten_standard",
    "conv_relu_gap_standard",
    "myrtle_ntk",
    "resnet_ntk",
    "resnet_standard",
    "resnet_spatial_out",
    "resnet_layer_norm",
    "conv1d_ntk",
    "conv3d_standard",
    "conv_CIRCULAR_3x3_s(2, 2)",
    "conv_SAME_2x2_s(2, 1)",
    "single_conv_spatial_out",
    "conv3d_spatial_out",
    "avg_pool_SAME_normalize_edges",
    "sum_pool_CIRCULAR",
    "concat_unequal",
    "concat_spatial_out",
    "fan_out3_sum",
    "layer_norm_spatial",
    "mixed_standard_5x3",
    "erf_gap",
    "gelu_flatten",
    "sign_gap",
]


@requires_cnn
@pytest.mark.parametrize("name", FASTNTK_ARCHS)
def test_fastntk_agrees_with_neural_tangents(name, rng):
    spec, shape = ARCHS[name]
    kernel_fn = to_stax(spec)[2]
    net = to_fastntk(spec)
    x1, x2 = rng.standard_normal((4,) + shape), rng.standard_normal((3,) + shape)
    for b in (x2, None):
        k = net.kernel(x1, b)
        _compare((k.nngp, k.ntk), spec, x1, b, kernel_fn)
