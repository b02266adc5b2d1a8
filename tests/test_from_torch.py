"""fastntk.from_torch against PyTorch itself (skipped where torch is not installed).

- outputs: ``net.apply(params, x)`` equals ``module(x)`` for float64 and float32 modules,
  with and without biases, nested containers, every supported activation;
- the empirical NTK: fastntk's equals J J^T from torch.autograd on the same module;
- the scales: PyTorch's default initialization has the variances the Dense layers say
  (W_std^2 / fan_in, b_std^2), and for a network without activations (where the Gaussian
  recursion is exact for any weight distribution) ``net.kernel``'s NNGP and NTK are the mean
  over PyTorch-initialized modules of f(x) f(y) and of their autograd NTK;
- errors name the module and its position.

Tolerances:

- outputs: every Dense entry is a dot product of length fan_in + 1 (the bias), within
  gamma_{fan_in + 1} |h| . |W| (+|b|) of the exact value in either precision (Higham 3.1);
  errors already in h pass through |W| and through the activations (Lipschitz <= 1.13:
  Relu, LeakyRelu with |slope| <= 1, Gelu), which also round their result (a few ulps of
  float32 erf for torch's Gelu: 4 u). ``_bound`` propagates these worst-case bounds layer by
  layer for both sides (u = 2^-24 for torch's float32, 2^-53 for float64); a transposed
  weight, a missing bias or a wrong slope is an O(1) error.
- empirical NTK: as tests/test_empirical.py, 1e-12 of the Cauchy-Schwarz scale.
- Monte Carlo: the mean of S independent samples is within Z = 5 standard errors of the
  expectation (SE estimated from the samples: a false failure has probability ~6e-7 per
  checked number if the mean is normal, which it is closely at these S).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastntk as nt

torch = pytest.importorskip("torch")
nn = torch.nn

Z = 5.0


def _bound(module, x: np.ndarray, u: float) -> np.ndarray:
    """Worst-case |torch(x) - exact| + |fastntk(x) - exact| for a module in precision u
    (fastntk always float64), entrywise (N, n_out); module docstring."""
    u64 = 2.0**-53
    h = np.abs(x.astype(np.float64))  # |h|, an upper bound of the magnitudes
    err = np.zeros_like(h)
    for m in _flat(module):
        if isinstance(m, nn.Linear):
            W = np.abs(m.weight.detach().double().numpy().T)
            b = 0.0 if m.bias is None else np.abs(m.bias.detach().double().numpy())
            n = W.shape[0] + 1
            gamma = n * u / (1 - n * u) + n * u64 / (1 - n * u64)
            mag = h @ W + b
            err = err @ W + gamma * mag
            h = mag
        elif isinstance(m, nn.Identity):
            continue
        else:  # the activations: Lipschitz constant, and their own rounding (4 ulps, both sides)
            lip = 1.13 if isinstance(m, nn.GELU) else max(1.0, abs(getattr(m, "negative_slope", 0.0)))
            h = lip * h  # |phi(z)| <= lip |z| for these (phi(0) = 0)
            err = lip * err + 4 * (u + u64) * h
    return err + 1e-300


def _flat(module):
    if isinstance(module, nn.Sequential):
        for child in module.children():
            yield from _flat(child)
    else:
        yield module


def _modules():
    torch.manual_seed(0)
    return {
        "relu": nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)),
        "leaky_no_bias": nn.Sequential(
            nn.Linear(5, 24, bias=False), nn.LeakyReLU(0.2), nn.Linear(24, 2, bias=False)
        ),
        "gelu_nested_identity": nn.Sequential(
            nn.Sequential(nn.Linear(5, 20), nn.GELU()),
            nn.Identity(),
            nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 12), nn.LeakyReLU()),
            nn.Linear(12, 1),
        ),
        "single_linear": nn.Linear(5, 4),
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["relu", "leaky_no_bias", "gelu_nested_identity", "single_linear"])
def test_outputs_equal_pytorch(name, dtype):
    module = _modules()[name].to(getattr(torch, dtype))
    net, params = nt.from_torch(module)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5)).astype(dtype)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).double().numpy()
    got = net.apply(params, x)
    u = 2.0**-24 if dtype == "float32" else 2.0**-53
    assert got.shape == expected.shape and got.dtype == np.float64
    bound = _bound(module, x, u)
    ratio = float((np.abs(got - expected) / bound).max())
    print(
        f"{name} {dtype}: worst error {ratio:.3g} x the bound, {float(np.abs(got - expected).max()):.3g} absolute"
    )
    assert ratio <= 1.0, f"worst error {ratio:.3g} x the round-off bound"


def test_layers_and_scales():
    module = nn.Sequential(
        nn.Linear(5, 7), nn.LeakyReLU(0.3), nn.Sequential(nn.Linear(7, 4, bias=False), nn.GELU()), nn.Identity(),
        nn.Linear(4, 2), nn.ReLU(),
    )  # fmt: skip
    net, params = nt.from_torch(module)
    s = 1 / math.sqrt(3)
    assert net.layers == (
        nt.Dense(7, W_std=s, b_std=1 / math.sqrt(15), parameterization="standard"),
        nt.LeakyRelu(0.3),
        nt.Dense(4, W_std=s, b_std=None, parameterization="standard"),
        nt.Gelu(),
        nt.Identity(),
        nt.Dense(2, W_std=s, b_std=1 / math.sqrt(12), parameterization="standard"),
        nt.Relu(),
    )
    np.testing.assert_array_equal(params[0][0], module[0].weight.detach().numpy().T)
    np.testing.assert_array_equal(params[0][1], module[0].bias.detach().numpy())
    assert params[2][1] is None and params[1] == () and params[0][0].dtype == np.float64
    assert params[0][0].flags.c_contiguous


def test_pytorch_initialization_has_the_variances_of_the_dense_layers():
    """Sample variances of one large freshly initialized Linear layer against W_std^2 / fan_in
    and b_std^2. For w uniform, Var(w^2) / E[w^2]^2 = 9/5 - 1 = 0.8, so the relative standard
    error of a mean of K squares is sqrt(0.8 / K)."""
    torch.manual_seed(1)
    fan_in, out = 400, 300
    layer = nn.Linear(fan_in, out, dtype=torch.float64)
    net, _ = nt.from_torch(nn.Sequential(layer))
    dense = net.layers[0]
    w2 = float((layer.weight.detach() ** 2).mean())
    b2 = float((layer.bias.detach() ** 2).mean())
    assert abs(w2 / (dense.W_std**2 / fan_in) - 1) <= Z * math.sqrt(0.8 / (fan_in * out))
    assert abs(b2 / dense.b_std**2 - 1) <= Z * math.sqrt(0.8 / out)


def _autograd_ntk(module, x):
    """J J^T from torch.autograd, mean over outputs: (N, N) float64."""
    params = [p for p in module.parameters()]
    xt = torch.from_numpy(x)
    out = module(xt)
    n, m = out.shape
    rows = []
    for o in range(m):
        for i in range(n):
            g = torch.autograd.grad(out[i, o], params, retain_graph=True)
            rows.append(torch.cat([a.reshape(-1) for a in g]).numpy())
    j = np.array(rows).reshape(m, n, -1)
    return np.einsum("oip,ojp->ij", j, j) / m, j


def test_empirical_ntk_equals_pytorch_autograd():
    torch.manual_seed(4)
    module = nn.Sequential(
        nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 8, bias=False), nn.GELU(), nn.Linear(8, 2)
    ).double()
    net, params = nt.from_torch(module)
    x = np.random.default_rng(5).standard_normal((6, 3))
    k_torch, j = _autograd_ntk(module, x)
    norms = np.linalg.norm(j, axis=2)  # (m, N)
    scale = np.einsum("oi,oj->ij", norms, norms) / j.shape[0]
    assert np.all(np.abs(net.empirical_ntk(params, x) - k_torch) <= 1e-12 * scale)


def test_kernels_of_a_linear_network_are_pytorch_initialization_means():
    """Without activations, covariances propagate through the variances alone, so net.kernel
    (the Gaussian recursion with PyTorch's variances, standard parameterization) is exactly
    E[f(x) f(y)] and E[Theta_emp(x, y)] over PyTorch's uniform initialization."""
    d, h = 3, 16
    x = np.random.default_rng(6).standard_normal((3, d))
    net, _ = nt.from_torch(nn.Sequential(nn.Linear(d, h), nn.Linear(h, 1)))
    k = net.kernel(x)
    samples = 3000
    nngp, ntk = [], []
    torch.manual_seed(7)
    for _ in range(samples):
        module = nn.Sequential(nn.Linear(d, h), nn.Linear(h, 1)).double()
        theta, _ = _autograd_ntk(module, x)
        with torch.no_grad():
            f = module(torch.from_numpy(x)).numpy()
        nngp.append(f @ f.T)
        ntk.append(theta)
    for name, s, expected in (("nngp", np.array(nngp), k.nngp), ("ntk", np.array(ntk), k.ntk)):
        mean, se = s.mean(axis=0), s.std(axis=0, ddof=1) / math.sqrt(samples)
        assert np.all(np.abs(mean - expected) <= Z * se), (name, mean, expected, se)


@pytest.mark.parametrize(
    "module, kind, match",
    [
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)),
            TypeError,
            r"module 1 \(Tanh\(\)\) is a torch.nn.modules.activation.Tanh",
        ),
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Dropout(0.1))),
            TypeError,
            r"module 1.0 \(Dropout",
        ),
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.GELU(approximate="tanh")),
            ValueError,
            "approximate='none'",
        ),
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1)),
            ValueError,
            r"module 1 .* takes 4 features, but the Linear layer before it gives 3",
        ),
        (
            lambda: nn.Sequential(nn.ReLU(), nn.Linear(2, 1)),
            ValueError,
            r"activation with no Dense layer before it.*fastntk layer 0 = module 0",
        ),
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.ReLU()),
            ValueError,
            "follows another activation",
        ),
        (lambda: np.eye(2), TypeError, "module must be a torch.nn.Module"),
    ],
)
def test_unsupported_modules_raise_clearly(module, kind, match):
    with pytest.raises(kind, match=match):
        nt.from_torch(module())


def test_non_finite_parameters_raise():
    module = nn.Sequential(nn.Linear(2, 3))
    with torch.no_grad():
        module[0].weight[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"module 0 .*weight has a non-finite value"):
        nt.from_torch(module)
