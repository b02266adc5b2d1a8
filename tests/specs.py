"""Architectures for tests: one description, turned into fastntk layers or fed to the reference."""

from __future__ import annotations

import numpy as np

import fastntk as nt


def dense(W_std=1.0, b_std=0.0, parameterization="ntk", out_dim=None):
    return ("dense", dict(W_std=W_std, b_std=b_std, parameterization=parameterization, out_dim=out_dim))


ACTIVATION_SPECS = {
    # name: (reference spec, fastntk layer)
    "relu": (("abrelu", dict(a=0.0, b=1.0)), lambda: nt.Relu()),
    "leaky_relu": (("abrelu", dict(a=0.1, b=1.0)), lambda: nt.LeakyRelu(0.1)),
    "abrelu": (("abrelu", dict(a=-0.4, b=1.3)), lambda: nt.ABRelu(-0.4, 1.3)),
    "abs": (("abrelu", dict(a=-1.0, b=1.0)), lambda: nt.Abs()),
    "erf": (("erf", dict(a=1.0, b=1.0, c=0.0)), lambda: nt.Erf()),
    "erf_abc": (("erf", dict(a=0.7, b=1.6, c=0.3)), lambda: nt.Erf(0.7, 1.6, 0.3)),
    "sign": (("sign", {}), lambda: nt.Sign()),
    "gelu": (("gelu", {}), lambda: nt.Gelu()),
    "sin": (("sin", dict(a=1.2, b=0.8, c=0.3)), lambda: nt.Sin(1.2, 0.8, 0.3)),
    "cos": (("cos", dict(a=0.9, b=1.1, c=-0.2)), lambda: nt.Cos(0.9, 1.1, -0.2)),
    "rbf": (("rbf", dict(gamma=0.7)), lambda: nt.Rbf(0.7)),
    "exp": (("exp", dict(a=0.8, b=0.5)), lambda: nt.Exp(0.8, 0.5)),
    "gaussian": (("gaussian", dict(a=1.1, b=-0.6)), lambda: nt.Gaussian(1.1, -0.6)),
    "monomial2": (("monomial", dict(degree=2)), lambda: nt.Monomial(2)),
    "monomial3": (("monomial", dict(degree=3)), lambda: nt.Monomial(3)),
    "rect_monomial2": (("rectified_monomial", dict(degree=2)), lambda: nt.RectifiedMonomial(2)),
    "rect_monomial3": (("rectified_monomial", dict(degree=3)), lambda: nt.RectifiedMonomial(3)),
    "identity": (("identity", {}), lambda: nt.Identity()),
}


def to_fastntk(spec):
    """The fastntk network of a reference spec."""
    layers = []
    for name, p in spec:
        if name == "dense":
            layers.append(nt.Dense(p["out_dim"], p["W_std"], p["b_std"], p["parameterization"]))
        elif name == "identity":
            layers.append(nt.Identity())
        else:
            for ref, make in ACTIVATION_SPECS.values():
                if ref[0] == name and ref[1] == p:
                    layers.append(make())
                    break
            else:
                layers.append(_layer_from_params(name, p))
    return nt.serial(*layers)


def _layer_from_params(name, p):
    table = {
        "abrelu": lambda: nt.ABRelu(p["a"], p["b"]),
        "erf": lambda: nt.Erf(p["a"], p["b"], p["c"]),
        "sign": nt.Sign,
        "gelu": nt.Gelu,
        "sin": lambda: nt.Sin(p["a"], p["b"], p["c"]),
        "cos": lambda: nt.Cos(p["a"], p["b"], p["c"]),
        "rbf": lambda: nt.Rbf(p["gamma"]),
        "exp": lambda: nt.Exp(p["a"], p["b"]),
        "gaussian": lambda: nt.Gaussian(p["a"], p["b"]),
        "monomial": lambda: nt.Monomial(p["degree"]),
        "rectified_monomial": lambda: nt.RectifiedMonomial(p["degree"]),
    }
    return table[name]()


def mlp(activation: str, depth: int, W_std=1.0, b_std=0.0, parameterization="ntk", widths=None):
    """Dense, act, Dense, act, ..., Dense (depth activations) as a reference spec."""
    ref = ACTIVATION_SPECS[activation][0]
    spec = []
    for k in range(depth):
        out = None if widths is None else widths[k]
        spec += [dense(W_std, b_std, parameterization, out), ref]
    spec.append(dense(W_std, b_std, parameterization, None if widths is None else 1))
    return spec


# Activations whose kernels stay O(1) through many random layers, for random architectures.
RANDOM_ACTIVATIONS = [
    "relu", "leaky_relu", "abrelu", "abs", "erf", "erf_abc", "sign", "gelu", "sin", "cos", "rbf",
    "gaussian", "rect_monomial2", "monomial2",
]  # fmt: skip


def random_spec(rng: np.random.Generator, max_depth: int = 5):
    """A random architecture: a mix of activations, W_std, b_std (incl. None), both
    parameterizations, Dense after Dense and Identity layers."""
    depth = int(rng.integers(0, max_depth + 1))
    param = str(rng.choice(["ntk", "standard"]))
    spec = []

    def rand_dense():
        W_std = float(rng.uniform(0.5, 1.5))
        b_std = None if rng.random() < 0.25 else float(rng.uniform(0.0, 0.7))
        out_dim = int(rng.integers(2, 9)) if param == "standard" else None
        # In the standard parameterization the NTK grows with the widths; keep them small.
        return dense(W_std, b_std, param, out_dim)

    for _ in range(depth):
        spec.append(rand_dense())
        if rng.random() < 0.2:
            spec.append(rand_dense())  # Dense after Dense
        if rng.random() < 0.15:
            spec.append(("identity", {}))
        act = str(rng.choice(RANDOM_ACTIVATIONS))
        spec.append(ACTIVATION_SPECS[act][0])
    spec.append(rand_dense())
    return spec
