"""Networks: ``serial`` chains layers; ``Network.kernel`` evaluates the analytic kernels;
``Network.init``, ``apply``, ``empirical_ntk`` and ``empirical_nngp`` treat the network as
a finite one (see :mod:`fastntk.empirical`)."""

from __future__ import annotations

import collections
import functools

from . import _arrays, _core, _threads, empirical
from ._args import parse_get
from .layers import Dense, Layer

__all__ = ["serial", "Network"]


@functools.cache
def _kernel_tuple(names: tuple):
    return collections.namedtuple("Kernel", names)


class Network:
    """A sequence of layers; build it with :func:`serial`."""

    def __init__(self, layers):
        self.layers = tuple(layers)
        self._check_order()
        self._programs = {}

    def __repr__(self) -> str:
        return "serial(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    def _check_order(self) -> None:
        gaussian_since = None  # index of the Dense layer that makes the current input Gaussian
        last_activation = None
        for k, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                gaussian_since, last_activation = k, None
            elif layer.is_activation:
                if gaussian_since is None:
                    if last_activation is None:
                        raise ValueError(
                            f"layer {k} ({layer!r}) is an activation with no Dense layer before it: an "
                            "activation needs a Gaussian input, so it must follow a Dense layer"
                        )
                    raise ValueError(
                        f"layer {k} ({layer!r}) follows another activation (layer {last_activation}, "
                        f"{self.layers[last_activation]!r}): an activation needs a Gaussian input, so it "
                        "must follow a Dense layer"
                    )
                gaussian_since, last_activation = None, k
        previous_dense = None
        for k, layer in enumerate(self.layers):
            if not isinstance(layer, Dense):
                continue
            if layer.parameterization == "standard" and previous_dense is not None:
                if self.layers[previous_dense].out_dim is None:
                    raise ValueError(
                        f"layer {k} ({layer!r}) uses the standard parameterization, whose NTK needs its "
                        f"input width: give out_dim to the Dense layer {previous_dense} before it"
                    )
            previous_dense = k

    def _program(self, input_dim: int):
        """The native layer program for inputs of dimension input_dim (cached)."""
        program = self._programs.get(input_dim)
        if program is None:
            program = _core.Program()
            n_in = input_dim
            for k, layer in enumerate(self.layers):
                program.set_layer(k)
                layer._emit(program, n_in)
                if isinstance(layer, Dense) and layer.out_dim is not None:
                    n_in = layer.out_dim
            self._programs[input_dim] = program
        return program

    def kernel(self, x1, x2=None, get=("nngp", "ntk"), every_layer=False):
        """The infinite-width NNGP and/or NTK between the rows of x1 and x2.

        Parameters
        ----------
        x1 : array_like, shape (N1, d)
            Inputs, one per row. Any real dtype; converted to float64 (the
            computation is always float64). NaN or Inf raise ValueError.
        x2 : array_like, shape (N2, d), optional
            Second inputs. ``None`` (or ``x1`` itself) means x2 = x1: then only
            the upper triangle is computed and mirrored, and the diagonal comes
            from the exact diagonal maps.
        get : str or tuple of str
            ``'nngp'``, ``'ntk'`` or a tuple of them. A single name returns that
            array; a tuple returns a named tuple with those fields, in order.
        every_layer : bool
            False: the kernels of the whole network. True: the kernels after every
            layer, from the same single pass (the recursion computes them anyway):
            a leading axis over the layers of the network, entry ``l`` being the
            kernel of the network cut after layer ``l`` (an Identity layer repeats
            the entry before it; before any layer the NNGP is x1.x2/d and the NTK 0).
            For an MLP ``Dense, act, Dense, act, ..., Dense`` whose Dense layers are
            alike, entry ``2 l`` is the kernel of the same MLP with ``l`` hidden
            layers: a sweep over depth costs one evaluation.

        Returns
        -------
        numpy.ndarray of shape (N1, N2) (``(len(layers), N1, N2)`` with
        ``every_layer``), float64, or a named tuple of them.
        """
        names, single = parse_get(get)
        a1, a2 = self._inputs(x1, x2)
        if not every_layer:
            outs = self._gram(a1, a2, names)
        else:
            outs = self._every_layer(a1, a2, names)
        if single:
            return outs[names[0]]
        return _kernel_tuple(names)(*(outs[n] for n in names))

    def _inputs(self, x1, x2):
        """x1, x2 checked and converted (x2 None for x1's own Gram)."""
        _arrays.require_numpy(x1, "x1")
        a1 = _arrays.as_input(x1, "x1")
        a2 = None
        if x2 is not None and x2 is not x1:
            _arrays.require_numpy(x2, "x2")
            a2 = _arrays.as_input(x2, "x2")
            if a2.shape[1] != a1.shape[1]:
                raise ValueError(
                    f"x1 and x2 must have the same number of features: x1 has shape {a1.shape}, "
                    f"x2 has shape {a2.shape}"
                )
        return a1, a2

    def _gram(self, a1, a2, names, capture_after=(), seeds=None, program=None):
        """The native call on checked inputs: {name: array}. Plain (N1, N2) arrays for the
        final kernels; (captures, 1 + directions, N1, N2) with capture_after (op indices)
        or seeds (n_ops, directions, 3; see _core.ntk_gram)."""
        n1, d = a1.shape
        n2 = n1 if a2 is None else a2.shape[0]
        program = self._program(d) if program is None else program
        plain = not capture_after and seeds is None
        shape = (
            (n1, n2)
            if plain
            else (max(len(capture_after), 1), 1 + (0 if seeds is None else seeds.shape[1]), n1, n2)
        )
        outs = _arrays.empty_kernels(names, shape)
        _core.ntk_gram(
            program,
            a1,
            a2,
            outs.get("nngp"),
            outs.get("ntk"),
            n_threads=_threads.get_num_threads(),
            capture_after=list(capture_after),
            seeds=seeds,
        )
        return outs

    def _every_layer(self, a1, a2, names):
        program = self._program(a1.shape[1])
        last_op = {}  # layer index -> the last op it emitted
        for k, layer in enumerate(program.op_layers):
            last_op[layer] = k
        captures = sorted(set(last_op.values()))
        n_layers = len(self.layers)
        if not captures:  # no ops at all: every entry is the input kernel
            raw = {n: None for n in names}
        else:
            raw = self._gram(a1, a2, names, capture_after=captures)
            if len(captures) == n_layers:  # one op group per layer: the captures are the answer
                return {n: raw[n][:, 0] for n in names}
        where = {k: c for c, k in enumerate(captures)}
        n1 = a1.shape[0]
        n2 = n1 if a2 is None else a2.shape[0]
        outs = _arrays.empty_kernels(names, (n_layers, n1, n2))
        current = None  # the capture holding the kernel so far; None: the input kernel
        for layer in range(n_layers):
            if layer in last_op:
                current = where[last_op[layer]]
            for n in names:
                if current is not None:
                    outs[n][layer] = raw[n][current, 0]
                elif n == "ntk":
                    outs[n][layer] = 0.0
                else:
                    outs[n][layer] = a1 @ (a1 if a2 is None else a2).T / a1.shape[1]
        return outs

    # ---- Finite networks (every Dense layer needs its out_dim).

    def init(self, seed, input_dim: int) -> list:
        """Draw the parameters of the finite network.

        Parameters
        ----------
        seed : int, numpy.random.SeedSequence or numpy.random.Generator
            The same seed gives the same parameters (a Generator is drawn from).
        input_dim : int
            Width d of the inputs.

        Returns
        -------
        list
            One entry per layer: ``(W, b)`` for a Dense layer, ``W`` float64
            ``(fan_in, out_dim)`` and ``b`` float64 ``(out_dim,)`` (None when
            ``b_std=None``); ``()`` for every other layer. Drawn in layer order, W then b.
            ntk parameterization: W, b standard normal (the scales apply in
            :meth:`apply`); standard: W ~ N(0, W_std^2 / fan_in), b ~ N(0, b_std^2).
        """
        return empirical.init(self, seed, input_dim)

    def apply(self, params, x):
        """The finite network's outputs.

        Parameters
        ----------
        params : list
            As returned by :meth:`init` (checked against the architecture).
        x : array_like, shape (N, input_dim)
            Inputs, any real dtype (computed in float64).

        Returns
        -------
        numpy.ndarray, float64, shape (N, n_out)
        """
        return empirical.apply(self, params, x)

    def empirical_ntk(self, params, x1, x2=None, trace_axes=(-1,), batch_size=None):
        """The empirical NTK grad_theta f(x1) . grad_theta f(x2) of the finite network.

        Exact, computed layer by layer without forming Jacobians (see
        :mod:`fastntk.empirical`), with Neural Tangents' conventions.

        Parameters
        ----------
        params : list
            As returned by :meth:`init`.
        x1 : array_like, shape (N1, input_dim)
        x2 : array_like, shape (N2, input_dim), optional
            None (or x1 itself) means x1, computed with the symmetry.
        trace_axes : tuple
            ``(-1,)``: the output axis is contracted and divided by its size (the mean
            over outputs of Theta_oo); ``()``: the full matrix-valued kernel.
        batch_size : int, optional
            Points that go through the network at a time (None: all at once unless their
            per-layer signals would take more than half of the free memory). The result
            does not depend on it beyond round-off.

        Returns
        -------
        numpy.ndarray, float64
            Shape (N1, N2) with ``trace_axes=(-1,)``; (N1, N2, n_out, n_out) with
            ``trace_axes=()``, entry [i, j, o, o'] = grad f_o(x1_i) . grad f_o'(x2_j).
        """
        return empirical.kernels(self, params, x1, x2, ("ntk",), trace_axes, batch_size)["ntk"]

    def empirical_nngp(self, params, x1, x2=None, trace_axes=(-1,), batch_size=None):
        """The empirical NNGP f(x1) f(x2)^T of the finite network.

        Parameters and conventions as :meth:`empirical_ntk`: with ``trace_axes=(-1,)``
        the mean over outputs, (N1, N2); with ``()`` the (N1, N2, n_out, n_out) array
        ``f_o(x1_i) f_o'(x2_j)``.
        """
        return empirical.kernels(self, params, x1, x2, ("nngp",), trace_axes, batch_size)["nngp"]


def serial(*layers) -> Network:
    """Chain layers (or networks) into a network, like ``neural_tangents.stax.serial``.

    Each activation must follow a Dense layer (possibly through Identity layers):
    the recursion needs a Gaussian input, so an activation first or two
    activations in a row raise ValueError.
    """
    flat = []
    for k, layer in enumerate(layers):
        if isinstance(layer, Network):
            flat.extend(layer.layers)
        elif isinstance(layer, Layer):
            flat.append(layer)
        else:
            raise TypeError(f"serial: argument {k} is not a fastntk layer or network: {layer!r}")
    return Network(flat)
