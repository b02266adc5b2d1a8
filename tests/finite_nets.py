"""A plain-NumPy finite multilayer perceptron: initialization, forward pass and the exact
parameter gradient by hand-written backpropagation.

It is the Monte Carlo reference for the infinite-width kernels and shares no code with
fastntk (it must not import it): the test compares what real finite networks do with what
the package says they do in the limit.

Conventions follow Neural Tangents. A Dense layer with input ``h`` of width ``n_in`` computes

- ``parameterization='ntk'``: ``z = W_std * (W @ h) / sqrt(n_in) + b_std * b`` with ``W``, ``b``
  standard normal; the parameters are ``W`` and ``b``;
- ``parameterization='standard'``: ``z = W @ h + b`` with ``W ~ N(0, W_std**2 / n_in)``,
  ``b ~ N(0, b_std**2)``; the parameters are ``W`` and ``b`` themselves.

``b_std=None`` means the layer has no bias parameter at all.

Arrays hold one row per input point: activations are ``(N, width)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# erf without SciPy (not a test dependency): math.erf is correctly rounded to within an ulp
# or so, and the widths here (a few thousand units times a few points) keep it cheap.
_erf = np.vectorize(math.erf, otypes=[np.float64])


@dataclass(frozen=True)
class Dense:
    """A fully connected layer of a finite network.

    Parameters
    ----------
    out_dim : int
        Number of output units.
    W_std, b_std : float
        Weight and bias scales; ``b_std=None`` means no bias parameter.
    parameterization : {'ntk', 'standard'}
        Where the scales enter (see the module docstring).
    """

    out_dim: int
    W_std: float = 1.0
    b_std: float | None = 0.0
    parameterization: str = "ntk"

    def __post_init__(self):
        if self.parameterization not in ("ntk", "standard"):
            raise ValueError(f"parameterization must be 'ntk' or 'standard', got {self.parameterization!r}")

    def multipliers(self, n_in: int) -> tuple[float, float]:
        """(c_W, c_b) with z = c_W * (W @ h) + c_b * b for the stored parameters W, b."""
        if self.parameterization == "ntk":
            return self.W_std / math.sqrt(n_in), (0.0 if self.b_std is None else self.b_std)
        # Standard: the scales live in the initial distribution, not in the forward pass.
        return 1.0, 1.0


@dataclass(frozen=True)
class Relu:
    """phi(z) = max(z, 0)."""

    def phi(self, z):
        return np.maximum(z, 0.0)

    def dphi(self, z):
        # The derivative at exactly 0 is a measure-zero choice; 0 matches Neural Tangents' JAX.
        return (z > 0).astype(z.dtype)


@dataclass(frozen=True)
class Erf:
    """phi(z) = a * erf(b z) + c."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def phi(self, z):
        return self.a * _erf(self.b * z) + self.c

    def dphi(self, z):
        return self.a * self.b * (2.0 / math.sqrt(math.pi)) * np.exp(-((self.b * z) ** 2))


class FiniteMLP:
    """A finite MLP: alternating Dense layers and elementwise activations.

    Parameters
    ----------
    layers : sequence of Dense | Relu | Erf
        The architecture, applied in order.
    input_dim : int
        Width d of the inputs.
    """

    def __init__(self, layers, input_dim: int):
        self.layers = tuple(layers)
        self.input_dim = int(input_dim)
        self.dense_in = []  # n_in of each Dense layer, in order
        width = self.input_dim
        for layer in self.layers:
            if isinstance(layer, Dense):
                self.dense_in.append(width)
                width = layer.out_dim
        self.output_dim = width

    def init(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Draw the parameters of one network.

        Returns
        -------
        list of (W, b)
            One pair per Dense layer: ``W`` float64 ``(out_dim, n_in)``, ``b`` float64
            ``(out_dim,)`` or None without a bias.
        """
        params = []
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        for layer, n_in in zip(dense, self.dense_in):
            W = rng.standard_normal((layer.out_dim, n_in))
            b = None if layer.b_std is None else rng.standard_normal(layer.out_dim)
            if layer.parameterization == "standard":
                W *= layer.W_std / math.sqrt(n_in)
                if b is not None:
                    b *= layer.b_std
            params.append((W, b))
        return params

    def _forward(self, params, x):
        """Forward pass keeping what backprop needs.

        Returns the output ``(N, output_dim)``, the input of each Dense layer and the
        pre-activation fed to each activation.
        """
        h = np.asarray(x, dtype=np.float64)
        dense_inputs, preacts = [], []
        k = 0
        for layer in self.layers:
            if isinstance(layer, Dense):
                W, b = params[k]
                cW, cb = layer.multipliers(self.dense_in[k])
                dense_inputs.append(h)
                h = cW * (h @ W.T)
                if b is not None:
                    h = h + cb * b
                k += 1
            else:
                preacts.append(h)
                h = layer.phi(h)
        return h, dense_inputs, preacts

    def apply(self, params, x: np.ndarray) -> np.ndarray:
        """Outputs of the network.

        Parameters
        ----------
        params : list of (W, b)
            From :meth:`init`.
        x : ndarray, float64, (N, input_dim)

        Returns
        -------
        ndarray, float64, (N, output_dim)
        """
        return self._forward(params, x)[0]

    def _backward(self, params, x, output: int):
        """Backprop of the scalar output ``f[:, output]``.

        Returns, per Dense layer in order, ``(h_in, delta)``: its input ``(N, n_in)`` and
        ``delta = df/dz`` of its output ``(N, out_dim)``. Then, for every point,
        ``df/dW = c_W * outer(delta, h_in)`` and ``df/db = c_b * delta``.
        """
        f, dense_inputs, preacts = self._forward(params, x)
        delta = np.zeros_like(f)
        delta[:, output] = 1.0  # df/df
        out = []
        k, a = len(params), len(preacts)
        for layer in reversed(self.layers):
            if isinstance(layer, Dense):
                k -= 1
                W, _ = params[k]
                cW, _ = layer.multipliers(self.dense_in[k])
                out.append((dense_inputs[k], delta))
                delta = cW * (delta @ W)  # df/dh of this layer's input
            else:
                a -= 1
                delta = delta * layer.dphi(preacts[a])  # chain rule through phi
        return out[::-1]

    def grads(self, params, x: np.ndarray, output: int = 0):
        """The exact gradient of the scalar output ``f[:, output]`` for every point.

        Returns
        -------
        list of (dW, db)
            Per Dense layer: ``dW`` float64 ``(N, out_dim, n_in)``, ``db`` float64
            ``(N, out_dim)`` or None without a bias.
        """
        res = []
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        for (layer, n_in, (_W, b)), (h_in, delta) in zip(
            zip(dense, self.dense_in, params), self._backward(params, x, output)
        ):
            cW, cb = layer.multipliers(n_in)
            dW = cW * delta[:, :, None] * h_in[:, None, :]
            db = None if b is None else cb * delta
            res.append((dW, db))
        return res

    def flat_grads(self, params, x: np.ndarray, output: int = 0) -> np.ndarray:
        """:meth:`grads` flattened in the order of :meth:`flatten`: float64 ``(N, P)``."""
        n = np.asarray(x).shape[0]
        parts = []
        for dW, db in self.grads(params, x, output):
            parts.append(dW.reshape(n, -1))
            if db is not None:
                parts.append(db)
        return np.concatenate(parts, axis=1)

    @staticmethod
    def flatten(params) -> np.ndarray:
        """All parameters as one vector ``(P,)``: W then b of each Dense layer."""
        return np.concatenate([p.ravel() for W, b in params for p in ((W,) if b is None else (W, b))])

    def unflatten(self, theta: np.ndarray):
        """Inverse of :meth:`flatten`."""
        params, i = [], 0
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        for layer, n_in in zip(dense, self.dense_in):
            size = layer.out_dim * n_in
            W = theta[i : i + size].reshape(layer.out_dim, n_in)
            i += size
            b = None
            if layer.b_std is not None:
                b = theta[i : i + layer.out_dim]
                i += layer.out_dim
            params.append((W, b))
        return params

    def ntk(self, params, x: np.ndarray, output: int = 0) -> np.ndarray:
        """Empirical NTK of the scalar output ``f[:, output]``: the Gram matrix of the
        parameter gradients, ``Theta[i, j] = sum_theta df(x_i)/dtheta * df(x_j)/dtheta``.

        Computed layer by layer without materializing the gradients: the weight gradient
        of a Dense layer is ``c_W * outer(delta, h_in)``, and the inner product of two
        outer products is the product of the inner products, so
        ``Theta = sum_layers c_W**2 (delta delta^T)(h_in h_in^T) + c_b**2 delta delta^T``
        (elementwise product) — the same number as ``flat_grads @ flat_grads.T`` up to
        round-off, at O(N^2 width) instead of O(N^2 width^2).

        Returns
        -------
        ndarray, float64, (N, N)
        """
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        theta = 0.0
        for (layer, n_in, (_, b)), (h_in, delta) in zip(
            zip(dense, self.dense_in, params), self._backward(params, x, output)
        ):
            cW, cb = layer.multipliers(n_in)
            dd = delta @ delta.T
            theta = theta + cW**2 * dd * (h_in @ h_in.T)
            if b is not None:
                theta = theta + cb**2 * dd
        return theta
