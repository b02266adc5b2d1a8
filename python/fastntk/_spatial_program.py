"""Compile a network with images or branches into the native spatial program.

The walk goes through the (possibly branched) layer graph with the shapes of the input,
checks every layer against what reaches it (before any work, each error naming the layer and
what to do), and records the calls of the spatial program's builder
(``fastntk._core.SpatialProgram``; the contract is /work/notes/cnn_spec.md). The math lives
in the native walk; here are only shapes, register bookkeeping and the coefficients of each
layer, which follow Neural Tangents 0.6.5 (``neural_tangents/_src/stax/linear.py`` and
``branching.py``):

- the input kernel is x . y / C over the channels, per pair of positions;
- Conv: the window sum of the kernel divided by the filter size (the 1/fan-in of the
  weights, with the channels' share already in the kernel), then as Dense:
  ntk ``Sigma' = W^2 L(Sigma) + b^2``, ``Theta' = W^2 L(Theta) + Sigma'``; standard
  ``Theta' = fan_in L(Sigma) + W^2 L(Theta) (+ 1 with a bias)``, fan_in = C * prod(filter);
  'SAME' pads ``total = max((out - 1) s + k - n, 0)`` with ``total // 2`` before;
  'CIRCULAR' wraps with the same sizes;
- Dense acts on the channels: the same with a 1 x 1 filter (standard: fan_in = C);
- AvgPool / SumPool: the window sums on both positions independently, divided by the
  window size per position (AvgPool; by the in-image count with normalize_edges);
- Flatten: the mean over positions of the diagonal; GlobalAvgPool: the mean over all pairs
  of positions; GlobalSumPool: their sum;
- LayerNorm: divided by sqrt((v_x + eps)(v_y + eps)), v the mean of the per-point variance
  over the normalized axes;
- FanInSum: the sum of the branches' kernels; FanInConcat (channels): their mean weighted
  by the branches' channel counts.

Regime: the full spatial covariance of a pair (``full=True``) when a pooling layer acts on
an image, or when the output is an image (Neural Tangents' default output shape, unless the
caller asks for the spatial diagonal); else the per-position diagonal. Neural Tangents
returns the full covariance with interleaved axes (N1, N2, H, H, W, W), in reverse spatial
order after an odd number of convolutions (its kernel-side transposition trick); the
layout is reproduced exactly by :meth:`SpatialPlan.to_nt`.
"""

from __future__ import annotations

import dataclasses
import math

from .layers import (
    MAX_SPATIAL_DIMS,
    Activation,
    AvgPool,
    Conv,
    Dense,
    FanInConcat,
    FanInSum,
    FanOut,
    Flatten,
    GlobalAvgPool,
    GlobalSumPool,
    Identity,
    Layer,
    LayerNorm,
    Parallel,
    SumPool,
)

__all__ = ["SpatialPlan", "compile_network", "build", "activation_layers", "MONTE_CARLO_HINT"]

MONTE_CARLO_HINT = (
    "its kernel has no closed form; estimate it by Monte Carlo over finite networks instead: "
    "fastntk.monte_carlo_kernel(net, ...)"
)


@dataclasses.dataclass
class _Value:
    """What one branch carries at a point of the walk."""

    reg: int  # the register holding its Sigma and Theta
    dims: tuple  # spatial shape; () for a vector (after Flatten, global pooling, or no image)
    channels: int | None  # finite channel count (None: unknown, no out_chan given)
    gaussian: bool  # each channel a centred Gaussian process given the weights before?
    why: str  # why not Gaussian (for messages)
    fresh: bool  # through a Dense/Conv since the last FanOut (independent of its siblings)
    reversed: bool  # Neural Tangents' reversed spatial order (full regime only)
    flattened: bool  # after Flatten


@dataclasses.dataclass
class SpatialPlan:
    """A compiled network for one input shape: the builder calls, the regime and the output
    layout. Build the native program with :func:`build`."""

    in_dims: tuple
    channels: int
    full: bool
    n_registers: int
    calls: list  # [(method name, {argument: value})], in order
    activations: list  # the activation layers, in the order of their add_activation calls
    out_dims: tuple
    reversed: bool  # Neural Tangents' reversed spatial order of a full-covariance output
    layer_names: list  # layer index of set_layer -> "layer 3 (Relu())" (for messages)

    @property
    def out_size(self) -> int:
        s = math.prod(self.out_dims)
        return s * s if self.full and self.out_dims else s

    def nt_shape(self, n1: int, n2: int) -> tuple:
        """The shape Neural Tangents gives this kernel: (N1, N2) for a vector output;
        (N1, N2, *dims) for the spatial diagonal; (N1, N2, d1, d1, d2, d2, ...) for the
        full covariance, the spatial axes reversed when Neural Tangents reverses them."""
        dims = self.out_dims
        if not dims:
            return (n1, n2)
        if not self.full:
            return (n1, n2) + dims
        order = dims[::-1] if self.reversed else dims
        return (n1, n2) + tuple(d for d in order for _ in range(2))

    def to_nt(self, a):
        """``a`` (N1, N2, out_size) from the native program, as Neural Tangents lays it out
        (a view where possible)."""
        n1, n2 = a.shape[:2]
        dims = self.out_dims
        if not dims or not self.full:
            return a.reshape((n1, n2) + dims)
        d = len(dims)
        # native: [i, j] with i, j row-major positions -> axes (N1, N2, *dims, *dims)
        a = a.reshape((n1, n2) + dims + dims)
        axes = range(d - 1, -1, -1) if self.reversed else range(d)
        perm = (0, 1) + tuple(ax for a_ in axes for ax in (2 + a_, 2 + d + a_))
        return a.transpose(perm)


# The coefficients of a map without weights (pooling, Flatten): both kernels pass through
# the map alone, with no bias and no NTK term of new weights.
_WEIGHTLESS = dict(alpha=1.0, beta=0.0, gamma=0.0, delta=1.0, eps=0.0)


def _describe(layer) -> str:
    text = repr(layer)
    return text if len(text) <= 90 else text[:87] + "..."


def _pooled_why(v: _Value, name) -> str:
    """Why a pooled value is not Gaussian (pooling a Gaussian keeps it Gaussian)."""
    return v.why if v.gaussian else f"{v.why}, pooled at {name}"


class _Compiler:
    def __init__(self):
        self.calls = []
        self.activations = []
        self.layer_names = []
        self.free = []
        self.n_registers = 1
        self.pooled = False

    # ---- registers

    def new_register(self) -> int:
        if self.free:
            return self.free.pop()
        self.n_registers += 1
        return self.n_registers - 1

    def call(self, name, **kwargs):
        self.calls.append((name, kwargs))

    def linear(self, reg, kind, in_dims, out_dims, scale, coef=None, **geometry):
        """An ``add_linear`` in place on ``reg``; ``coef`` (alpha ... eps) defaults to a
        weightless map (see :data:`_WEIGHTLESS`); ``geometry``: a window's arguments."""
        self.call(
            "add_linear",
            src=reg,
            dst=reg,
            map=kind,
            in_dims=list(in_dims),
            out_dims=list(out_dims),
            **geometry,
            scale=scale,
            **(_WEIGHTLESS if coef is None else coef),
        )

    # ---- the walk

    def walk(self, layers, state, where: str):
        """Walk a layer sequence from ``state`` (a _Value, or a list of states: branches)."""
        for j, layer in enumerate(layers):
            index = len(self.layer_names)
            name = f"{where}layer {j} ({_describe(layer)})"
            self.layer_names.append(name)
            self.call("set_layer", layer=index)
            state = self.layer(layer, state, name, f"{where}layer {j}")
        return state

    def layer(self, layer, state, name, path):
        if isinstance(layer, FanOut):
            return self.fan_out(layer, self.single(state, name), name)
        if isinstance(layer, Parallel):
            return self.parallel(layer, state, name, path)
        if isinstance(layer, (FanInSum, FanInConcat)):
            return self.fan_in(layer, state, name)
        v = self.single(state, name)
        if isinstance(layer, Identity):
            return v
        if isinstance(layer, Activation):
            return self.activation(layer, v, name)
        if isinstance(layer, Dense):
            return self.dense(layer, v, name)
        if isinstance(layer, Conv):
            return self.conv(layer, v, name)
        if isinstance(layer, AvgPool):  # SumPool too
            return self.pool(layer, v, name)
        if isinstance(layer, (GlobalAvgPool, GlobalSumPool)):
            return self.global_pool(layer, v, name)
        if isinstance(layer, Flatten):
            return self.flatten(v)
        if isinstance(layer, LayerNorm):
            return self.layer_norm(layer, v, name)
        raise TypeError(f"{name}: fastntk has no infinite-width kernel for this layer")

    def single(self, state, name) -> _Value:
        if isinstance(state, list):
            raise ValueError(
                f"{name} gets {len(state)} branches (from FanOut or parallel): join them first with "
                "FanInSum() or FanInConcat(), or give one layer per branch with parallel(...)"
            )
        return state

    # ---- layers

    def activation(self, layer, v: _Value, name) -> _Value:
        if not v.gaussian:
            raise ValueError(
                f"{name} gets {v.why}, which is not Gaussian: an activation needs a Gaussian input "
                f"(put a Dense or Conv layer before it); as written, {MONTE_CARLO_HINT}"
            )
        self.call("add_activation", src_dst=v.reg, op_index=len(self.activations))
        self.activations.append(layer)
        return dataclasses.replace(v, gaussian=False, why=f"the output of the activation {name}")

    def _affine(self, layer, v: _Value, name, fan_in_factor: int):
        """alpha, beta, gamma, delta, eps of a Dense or Conv layer (see the module docstring)."""
        w2 = layer.W_std**2
        b2 = 0.0 if layer.b_std is None else layer.b_std**2
        if layer.parameterization == "ntk":
            return dict(alpha=w2, beta=b2, gamma=w2, delta=w2, eps=b2)
        if v.channels is None:
            raise ValueError(
                f"{name} uses the standard parameterization, whose NTK needs its fan-in (input channels "
                "x filter size): give out_chan / out_dim to the Conv or Dense layer before it"
            )
        return dict(
            alpha=w2,
            beta=b2,
            gamma=float(v.channels * fan_in_factor),
            delta=w2,
            eps=0.0 if layer.b_std is None else 1.0,
        )

    def dense(self, layer: Dense, v: _Value, name) -> _Value:
        self.linear(v.reg, "identity", v.dims, v.dims, 1.0, self._affine(layer, v, name, 1))
        return dataclasses.replace(v, channels=layer.out_dim, gaussian=True, why="", fresh=True)

    def _window(self, layer, v: _Value, name, window, what):
        """(out_dims, the window's add_linear arguments) over v's spatial axes, or an error."""
        kind = type(layer).__name__
        if not v.dims:
            after = "after Flatten" if v.flattened else "on a vector (no spatial axes left)"
            raise ValueError(
                f"{name} is a spatial layer {after}: its input has no spatial axes; put {kind} before "
                "Flatten / global pooling"
            )
        if len(window) != len(v.dims):
            raise ValueError(
                f"{name} has a {len(window)}-D {what} {window}, but its input has {len(v.dims)} spatial "
                f"axes {v.dims}: images for this network have shape (N, {', '.join(['...'] * len(window))}, C) "
                f"({len(window)} spatial axes)"
            )
        out, pad_lo = [], []
        for n, k, s in zip(v.dims, window, layer.strides):
            if layer.padding == "VALID":
                if k > n:
                    raise ValueError(
                        f"{name}: the {what} {window} does not fit its input of spatial shape {v.dims} "
                        "with padding='VALID': use a smaller window, larger images, or padding='SAME'"
                    )
                out.append((n - k) // s + 1)
                pad_lo.append(0)
            else:
                o = -(-n // s)
                out.append(o)
                pad_lo.append(max((o - 1) * s + k - n, 0) // 2)
        geometry = dict(
            window=list(window),
            strides=list(layer.strides),
            pad_lo=pad_lo,
            circular=layer.padding == "CIRCULAR",
        )
        return tuple(out), geometry

    def conv(self, layer: Conv, v: _Value, name) -> _Value:
        out, geometry = self._window(layer, v, name, layer.filter_shape, "filter")
        size = math.prod(layer.filter_shape)
        coef = self._affine(layer, v, name, size)
        self.linear(v.reg, "conv", v.dims, out, 1.0 / size, coef, **geometry, normalize_edges=False)
        # Neural Tangents transposes the spatial axes of a full covariance at every convolution.
        return dataclasses.replace(
            v, dims=out, channels=layer.out_chan, gaussian=True, why="", fresh=True, reversed=not v.reversed
        )

    def pool(self, layer: AvgPool, v: _Value, name) -> _Value:
        out, geometry = self._window(layer, v, name, layer.window_shape, "window")
        average = not isinstance(layer, SumPool)
        self.pooled = True
        scale = 1.0 / math.prod(layer.window_shape) if average else 1.0
        normalize = average and layer.normalize_edges
        self.linear(v.reg, "pool", v.dims, out, scale, **geometry, normalize_edges=normalize)
        return dataclasses.replace(v, dims=out, why=_pooled_why(v, name))

    def global_pool(self, layer, v: _Value, name) -> _Value:
        if not v.dims:
            after = "after Flatten" if v.flattened else "on a vector"
            raise ValueError(
                f"{name} pools over spatial axes, but its input {after} has none: put it before Flatten"
            )
        self.pooled = True
        s = math.prod(v.dims)
        scale = 1.0 / (s * s) if isinstance(layer, GlobalAvgPool) else 1.0
        self.linear(v.reg, "global", v.dims, (), scale)
        return dataclasses.replace(v, dims=(), why=_pooled_why(v, name), reversed=False)

    def flatten(self, v: _Value) -> _Value:
        if not v.dims:  # a vector: nothing to flatten
            return v
        s = math.prod(v.dims)
        self.linear(v.reg, "flatten", v.dims, (), 1.0 / s)
        # The flattened entries of one position share a variance that differs between
        # positions: not identically distributed, so an activation after it has no closed form
        # (as in Neural Tangents, where Flatten's output is not Gaussian).
        return dataclasses.replace(
            v,
            dims=(),
            channels=None if v.channels is None else v.channels * s,
            gaussian=False,
            why="the output of Flatten (entries of different positions have different variances)",
            reversed=False,
            flattened=True,
        )

    def layer_norm(self, layer: LayerNorm, v: _Value, name) -> _Value:
        ndim = 2 + len(v.dims)
        axes = set()
        for a in layer.axis:
            if not -ndim <= a < ndim:
                raise ValueError(
                    f"{name}: axis {a} is out of range for inputs of {ndim} axes (batch, "
                    f"{len(v.dims)} spatial, channels)"
                )
            axes.add(a % ndim)
        if ndim - 1 not in axes:
            raise ValueError(
                f"{name}: axis must include the channel axis (-1): the infinite-width kernel needs the "
                f"normalization over channels; got axis={layer.axis}"
            )
        if 0 in axes:
            raise NotImplementedError(f"{name}: normalizing over the batch axis (0) is not supported")
        spatial = axes - {0, ndim - 1}
        if spatial and len(spatial) != len(v.dims):
            raise NotImplementedError(
                f"{name}: normalizing over some spatial axes but not all is not supported: use axis=-1 "
                f"(per position) or axis={tuple(range(1, ndim))} (the whole image)"
            )
        if not v.gaussian:
            raise ValueError(
                f"{name} gets {v.why}, which is not Gaussian: the kernel of LayerNorm needs a centred "
                f"Gaussian input (put a Dense or Conv layer before it); as written, {MONTE_CARLO_HINT}"
            )
        self.call("add_layernorm", src_dst=v.reg, spatial=bool(spatial), eps=layer.eps)
        return v  # a Gaussian divided by a per-point constant stays Gaussian

    # ---- branches

    def fan_out(self, layer: FanOut, v: _Value, name) -> list:
        branches = [dataclasses.replace(v, fresh=False)]
        for _ in range(layer.num - 1):
            reg = self.new_register()
            self.call("add_copy", src=v.reg, dst=reg)
            branches.append(dataclasses.replace(v, reg=reg, fresh=False))
        return branches

    def parallel(self, layer: Parallel, state, name, path) -> list:
        m = len(layer.branches)
        if not isinstance(state, list):
            raise ValueError(
                f"{name} has {m} branches but gets a single input: split it first with FanOut({m})"
            )
        if len(state) != m:
            raise ValueError(
                f"{name} has {m} branch{'es' if m > 1 else ''} but gets {len(state)} (from FanOut({len(state)}) or a parallel of "
                f"{len(state)}): give one layer or network per branch"
            )
        return [
            self.walk(branch, s, f"{path}, branch {b}, ")
            for b, (branch, s) in enumerate(zip(layer.branches, state))
        ]

    def fan_in(self, layer, state, name) -> _Value:
        if not isinstance(state, list):
            raise ValueError(f"{name} joins branches, but gets a single input: split it first with FanOut(n)")
        for b, s in enumerate(state):
            if isinstance(s, list):
                raise ValueError(
                    f"{name}: its branch {b} holds {len(s)} branches of its own: join them first"
                )
        dims = [s.dims for s in state]
        if any(d != dims[0] for d in dims):
            raise ValueError(
                f"{name} joins branches of different spatial shapes {dims}: every branch must give the "
                "same shape (e.g. padding='SAME' and the same strides)"
            )
        n = len(state)
        n_reversed = sum(s.reversed for s in state)
        # Neural Tangents turns the minority of branches to the majority's spatial order (ties: unreversed).
        merged = dict(reversed=n_reversed > n / 2, fresh=all(s.fresh for s in state), flattened=False)
        if isinstance(layer, FanInSum):
            weights, out = self.sum_weights(state, name), state[0]
            merged.update(channels=self.sum_channels(state, name), gaussian=all(s.gaussian for s in state))
            if not merged["gaussian"]:
                merged["why"] = f"the sum of branches at {name}"
        else:
            weights, out = self.concat_weights(layer, state, name), state[0]
            channels = None if any(s.channels is None for s in state) else sum(s.channels for s in state)
            # Concatenated channels come from branches with different kernels: not identically
            # distributed, so no closed form for an activation after it (as Neural Tangents).
            merged.update(
                channels=channels,
                gaussian=False,
                why=f"the channel concatenation at {name} (its channels have different kernels)",
            )
        dst = out.reg
        if weights[0] != 1.0:
            coef = dict(_WEIGHTLESS, alpha=weights[0], delta=weights[0])
            self.linear(dst, "identity", out.dims, out.dims, 1.0, coef)
        for s, w in zip(state[1:], weights[1:]):
            self.call("add_axpy", src=s.reg, dst=dst, weight=w)
            self.free.append(s.reg)
        return dataclasses.replace(out, **merged)

    def sum_weights(self, state, name) -> list:
        if len(state) > 1:
            bad = [b for b, s in enumerate(state) if not s.gaussian]
            if bad:
                raise ValueError(
                    f"{name} sums {len(state)} branches, and branch {bad[0]} gives {state[bad[0]].why}, which "
                    "is not a centred Gaussian: the kernel of a sum needs independent centred branches (end "
                    f"each branch with a Dense or Conv layer, or Identity of one); as written, {MONTE_CARLO_HINT}"
                )
            shared = [b for b, s in enumerate(state) if not s.fresh]
            if len(shared) > 1:
                raise ValueError(
                    f"{name} sums branches {shared[0]} and {shared[1]}, which both carry the FanOut's input "
                    "without a Dense or Conv layer of their own: they are not independent, and the sum of "
                    "their kernels is not the kernel of their sum; give each branch but one a Dense or Conv "
                    "layer"
                )
        return [1.0] * len(state)

    @staticmethod
    def sum_channels(state, name):
        known = {s.channels for s in state if s.channels is not None}
        if len(known) > 1:
            raise ValueError(
                f"{name} sums branches with different channel counts {[s.channels for s in state]}: give "
                "every branch the same number of channels"
            )
        return known.pop() if known and all(s.channels is not None for s in state) else None

    @staticmethod
    def concat_weights(layer: FanInConcat, state, name) -> list:
        ndim = 2 + len(state[0].dims)
        if not -ndim <= layer.axis < ndim:
            raise ValueError(f"{name}: axis {layer.axis} is out of range for inputs of {ndim} axes")
        if layer.axis % ndim != ndim - 1:
            raise NotImplementedError(
                f"{name}: concatenation along axis {layer.axis} is not supported; only the channel axis "
                "(-1) is"
            )
        widths = [s.channels for s in state]
        if any(w is None for w in widths):
            missing = [b for b, w in enumerate(widths) if w is None]
            raise ValueError(
                f"{name} weights each branch's kernel by its channel count, but branch {missing[0]} has no "
                "known width: give out_chan / out_dim to the last Conv or Dense layer of each branch"
            )
        total = sum(widths)
        return [w / total for w in widths]


def compile_network(layers, input_shape, *, diagonal_spatial=None) -> SpatialPlan:
    """Check a network against an input shape and compile it.

    Parameters
    ----------
    layers : sequence of Layer
        The network's layers (``Network.layers``).
    input_shape : tuple of int
        ``(N, *spatial, C)`` with 0 to 3 spatial axes (0: vectors, for branched networks on
        vectors).
    diagonal_spatial : bool, optional
        For a network whose output is an image: True gives the per-position diagonal of the
        output covariance (cheaper; Neural Tangents' ``diagonal_spatial=True``), False or None
        the full covariance (Neural Tangents' default). Networks that pool need the full
        covariance inside: True raises ValueError for them.

    Returns
    -------
    SpatialPlan
    """
    input_shape = tuple(int(s) for s in input_shape)
    if not 2 <= len(input_shape) <= 2 + MAX_SPATIAL_DIMS:
        raise ValueError(
            f"inputs must have shape (N, C), (N, W, C), (N, H, W, C) or (N, D, H, W, C), got shape {input_shape}"
        )
    in_dims, channels = input_shape[1:-1], input_shape[-1]
    if channels < 1 or any(d < 1 for d in in_dims):
        raise ValueError(
            f"inputs must have at least one channel and one position per axis, got shape {input_shape}"
        )
    for layer in layers:
        if not isinstance(layer, Layer):
            raise TypeError(f"not a fastntk layer: {layer!r}")
    c = _Compiler()
    v = _Value(
        reg=0,
        dims=in_dims,
        channels=channels,
        gaussian=False,
        why="the input",
        fresh=False,
        reversed=False,
        flattened=False,
    )
    out = c.walk(layers, v, "")
    if isinstance(out, list):
        raise ValueError(
            f"the network ends with {len(out)} branches: join them with FanInSum() or FanInConcat()"
        )
    if out.reg != 0:
        c.call("add_copy", src=out.reg, dst=0)
    if diagonal_spatial and c.pooled:
        raise ValueError(
            "diagonal_spatial=True: this network pools over positions, which needs the full spatial "
            "covariance; leave diagonal_spatial unset"
        )
    full = c.pooled or (bool(out.dims) and not diagonal_spatial)
    return SpatialPlan(
        in_dims=in_dims,
        channels=channels,
        full=full,
        n_registers=c.n_registers,
        calls=c.calls,
        activations=c.activations,
        out_dims=out.dims,
        reversed=full and out.reversed and bool(out.dims),
        layer_names=c.layer_names,
    )


def build(plan: SpatialPlan, builder, fc_program=None):
    """Replay the plan into ``builder(in_dims, channels, full, n_registers)`` (the native
    ``SpatialProgram``, or a test's recorder) and return it. ``fc_program``: an FC program
    whose op ``fc_ops[i]`` is activation i (see :func:`activation_ops`), as ``(program,
    fc_ops)``."""
    # The native program takes images of 1 to 3 spatial axes: vectors (a branched network of
    # Dense layers) go as images of one position, whose only ops are per-position ones.
    lift = not plan.in_dims
    prog = builder(list(plan.in_dims) or [1], plan.channels, plan.full, plan.n_registers)
    for name, kwargs in plan.calls:
        if lift and "in_dims" in kwargs:
            kwargs = dict(kwargs, in_dims=kwargs["in_dims"] or [1], out_dims=kwargs["out_dims"] or [1])
        if name == "add_activation":
            fc, ops = fc_program
            prog.add_activation(src_dst=kwargs["src_dst"], fc_program=fc, op_index=ops[kwargs["op_index"]])
        else:
            getattr(prog, name)(**kwargs)
    return prog


def activation_layers(plan: SpatialPlan) -> tuple:
    """The layer sequence whose FC program holds the plan's activations: each after a Dense
    (the FC program checks that an activation has a Gaussian input), so activation i is
    layer ``2 i + 1``."""
    seq = []
    for act in plan.activations:
        seq += [Dense(), act]
    return tuple(seq)
