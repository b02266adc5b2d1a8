"""Networks: ``serial`` chains layers; ``Network.kernel`` evaluates the analytic kernels."""

from __future__ import annotations

import collections
import functools

from . import _arrays, _core, _threads
from .layers import Dense, Layer

__all__ = ["serial", "Network"]

_KERNEL_NAMES = ("nngp", "ntk")


@functools.cache
def _kernel_tuple(names: tuple):
    return collections.namedtuple("Kernel", names)


def _parse_get(get):
    """Returns (names, single): the requested kernels in order, and whether one name was given."""
    if isinstance(get, str):
        names, single = (get,), True
    elif isinstance(get, (tuple, list)) and len(get) > 0 and all(isinstance(g, str) for g in get):
        names, single = tuple(get), False
    else:
        raise ValueError(f"get must be 'nngp', 'ntk' or a non-empty tuple of them, got {get!r}")
    for g in names:
        if g not in _KERNEL_NAMES:
            raise ValueError(f"get: unknown kernel {g!r}; fastntk computes {_KERNEL_NAMES}")
    if len(set(names)) != len(names):
        raise ValueError(f"get names a kernel twice: {get!r}")
    return names, single


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

    def kernel(self, x1, x2=None, get=("nngp", "ntk")):
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

        Returns
        -------
        numpy.ndarray of shape (N1, N2), float64, or a named tuple of them.
        """
        names, single = _parse_get(get)
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
        n1, d = a1.shape
        n2 = n1 if a2 is None else a2.shape[0]
        program = self._program(d)
        outs = _arrays.empty_outputs(len(names), n1, n2)
        by_name = dict(zip(names, outs))
        _core.ntk_gram(
            program,
            a1,
            a2,
            by_name.get("nngp"),
            by_name.get("ntk"),
            n_threads=_threads.get_num_threads(),
        )
        if single:
            return outs[0]
        return _kernel_tuple(names)(*outs)


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
