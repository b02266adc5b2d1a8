"""Networks: ``serial`` chains layers; ``Network.kernel`` evaluates the analytic kernels;
``Network.init``, ``apply``, ``empirical_ntk`` and ``empirical_nngp`` treat the network as
a finite one (see :mod:`fastntk.empirical`)."""

from __future__ import annotations

import math

import numpy as np

from . import _engine, _spatial_program, empirical
from ._args import kernel_tuple, parse_get
from ._progress import check_progress
from .layers import Dense, Layer, Parallel, has_spatial_layer

__all__ = ["serial", "parallel", "Network"]


def _ndim(x) -> int:
    """x's number of axes, without copying a device array to the host."""
    ndim = getattr(x, "ndim", None)
    return int(ndim) if ndim is not None else np.ndim(x)


def _rows(x) -> np.ndarray:
    """An image batch (N, *spatial, C) as the native engine reads it: one row per image, NHWC order."""
    x = np.asarray(x)
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


class Network:
    """A sequence of layers; build it with :func:`serial`."""

    def __init__(self, layers):
        self.layers = tuple(layers)
        # A network with convolutions, pooling or branches is checked when its input shape is
        # known (fastntk._spatial_program): a branch such as serial(Relu(), Conv(...)) is fine
        # on its own, only the whole graph tells whether its activation gets a Gaussian input.
        self.is_spatial = has_spatial_layer(self.layers)
        self._plans = {}  # (input shape without N, diagonal_spatial) -> SpatialPlan
        if not self.is_spatial:
            self._check_order()

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
                            "activation needs a Gaussian input, so it must follow a Dense layer (a branch "
                            "of parallel(...) that starts with an activation: pass its layers as a list, "
                            "parallel(Identity(), [Relu(), Dense()]))"
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

    def kernel(
        self,
        x1,
        x2=None,
        get=("nngp", "ntk"),
        every_layer=False,
        device=None,
        *,
        out=None,
        memory_limit=None,
        progress=None,
        diagonal_spatial=None,
    ):
        """The infinite-width NNGP and/or NTK between the rows of x1 and x2.

        Images (inputs of shape (N, *spatial, C), 1 to 3 spatial axes, channels last) and
        networks with convolutions, pooling or branches are computed by the spatial engine
        (see "Images and branches" below); the rest of this description is about vectors.

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
        device : {'cpu', 'cuda'}, optional
            Where NumPy inputs are computed (default: :func:`fastntk.set_default_device`,
            initially 'cpu'). With 'cuda' the GPU computes them and NumPy arrays come back
            (streamed to host memory band by band, so the output may exceed the GPU's
            memory); float32 inputs then give float32 outputs. CuPy inputs are always
            computed on their own device and CuPy's current stream, and give CuPy outputs
            (float32 stays float32; the walk itself is float64 either way).

        out : array, tuple or dict of arrays, or path, optional
            Where to write the kernels, block by block, in bounded memory (see
            ``memory_limit``): whatever N1 and N2 are, the whole matrix is never held in
            memory. An array (a NumPy array, an ``np.memmap`` or a zarr array, shape
            (N1, N2), float64 or float32) for a single ``get``; a tuple or a
            ``{name: array}`` dict, one per kernel, for several. A path (str or
            ``os.PathLike``) is a **resumable store**: a directory holding one float64
            ``<name>.npy`` per kernel (``np.load(path/'ntk.npy', mmap_mode='r')``), a
            fingerprint of the computation and a record of the finished blocks. The same
            call after a crash (even SIGKILL) computes only the blocks not yet recorded and
            gives a bit-identical result; a store made for another network, other inputs,
            another ``get`` or another fastntk version is refused with a message naming the
            difference. The values of the blocked computation do not depend on
            ``memory_limit``, the thread count or a resumption (every block runs with the
            same 256 x 256 native tiles); they agree with the in-memory kernel to round-off
            (~1e-15 relative). Not with ``every_layer``.
        memory_limit : int or str, optional
            With ``out``: the bytes the block buffers may take (the working memory beyond
            the inputs and ``out``), e.g. ``2**30`` or ``"2GB"``, ``"512MiB"``; default 1 GiB,
            at least 0.5 MiB per kernel (one block of 256 x 256 entries).
            Shapes need not divide anything. Resuming a store keeps its blocks, and refuses
            when they need more than a ``memory_limit`` given now.
        progress : bool, optional
            A progress bar (blocks done with ``out``, else the native tiles done; rate, time
            left) on standard error. None (default): only in a terminal, and only once the
            work has taken 2 s; True: always; False: never. (Not for ``every_layer`` or
            GPU computations.)

        Returns
        -------
        numpy.ndarray (cupy.ndarray for CuPy inputs) of shape (N1, N2)
        (``(len(layers), N1, N2)`` with ``every_layer``), float64 (float32 on the GPU for
        float32 inputs), or a named tuple of them. With ``out``: the arrays written (for a
        path, the store's arrays as ``np.memmap``), in the same form.

        Raises
        ------
        FloatingPointError
            If a kernel overflows float64 in the recursion (e.g. a deep Relu network with
            W_std^2 > 2): the message names the layer where it first stopped being finite.

        Images and branches
        -------------------
        x1 : array_like, shape (N1, *spatial, C)
            Images, channels last (NHWC for 2-D), 1 to 3 spatial axes; or vectors (N1, C) for
            a branched network of Dense layers. x2: (N2, *spatial, C), the same spatial shape
            and channels.
        diagonal_spatial : bool, optional
            Only for a network whose output is an image (no Flatten or global pooling at the
            end): True returns the per-position kernels (N1, N2, *spatial_out), from the
            cheaper diagonal walk (Neural Tangents' ``diagonal_spatial=True``). By default the
            full covariance between all pairs of output positions, laid out as Neural Tangents
            does: (N1, N2, H, H, W, W) for 2-D, entry [a, b, h, h', w, w'] between position
            (h, w) of x1[a] and (h', w') of x2[b]; after an odd number of Conv layers Neural
            Tangents lists the spatial axes in reverse order, (N1, N2, W, W, H, H), and so does
            this (so that the arrays compare one to one).

        Returns (N1, N2) for a network ending in Flatten, GlobalAvgPool, GlobalSumPool or on
        vectors. Computed on the CPU in float64 (or, for CuPy inputs or device='cuda', by the
        CUDA driver: CuPy in, CuPy out; float32 inputs there give float32 outputs); the full
        covariance of a pair lives only in a workspace while its layers run, never for all
        pairs at once. Not supported yet for images: ``every_layer``, ``out``,
        ``memory_limit`` (NotImplementedError).
        Errors before any work, each naming the layer: images of the wrong rank, a filter or
        pooling window that does not fit a 'VALID' input, spatial layers after Flatten,
        branches of different shapes or counts, and architectures without a closed-form
        kernel (an activation whose input is not Gaussian, e.g. right after another
        activation or after pooling one: use :func:`fastntk.monte_carlo_kernel`).
        """
        names, single = parse_get(get)
        check_progress(progress)
        if self.is_spatial or _ndim(x1) >= 3:
            outs = self._spatial_kernel(
                x1, x2, names, every_layer, device, out, memory_limit, progress, diagonal_spatial
            )
            if single:
                return outs[names[0]]
            return kernel_tuple(names)(*(outs[n] for n in names))
        if diagonal_spatial is not None:
            raise ValueError(
                "diagonal_spatial is for networks whose output is an image; this network takes vectors"
            )
        if out is None and memory_limit is not None:
            raise ValueError(
                "memory_limit bounds the working memory of kernels written into out=...; without out "
                "the result itself is computed in memory, in one pass"
            )
        if out is not None and every_layer:
            raise ValueError("out= is not supported with every_layer=True")
        a1, a2, to_host = _engine.kernel_inputs(x1, x2, device)
        if out is not None:
            if to_host or not isinstance(a1, np.ndarray):
                raise ValueError(
                    "out= computes on the CPU, block by block: pass NumPy inputs with device='cpu' "
                    "(GPU blocks are not supported with out= yet)"
                )
            from ._store import kernel_into

            outs = kernel_into(self, a1, a2, names, out, memory_limit=memory_limit, progress=progress)
        elif not every_layer:
            outs = _engine.gram(
                _engine.program(self, a1.shape[1]),
                a1,
                a2,
                names,
                layers=self.layers,
                to_host=to_host,
                progress=progress,
            )
        else:
            outs = _engine.every_layer(self, a1, a2, names, to_host=to_host)
        if single:
            return outs[names[0]]
        return kernel_tuple(names)(*(outs[n] for n in names))

    def spatial_plan(self, input_shape, diagonal_spatial=None):
        """The compiled spatial program of this network for inputs of ``input_shape``
        ``(N, *spatial, C)`` (cached per shape): see :mod:`fastntk._spatial_program`. Raises
        the architecture's errors (ValueError, NotImplementedError) without computing."""
        key = (tuple(input_shape[1:]), diagonal_spatial)
        plan = self._plans.get(key)
        if plan is None:
            plan = _spatial_program.compile_network(
                self.layers, input_shape, diagonal_spatial=diagonal_spatial
            )
            self._plans[key] = plan
        return plan

    def _spatial_kernel(
        self, x1, x2, names, every_layer, device, out, memory_limit, progress, diagonal_spatial
    ):
        for flag, what in (
            (every_layer, "every_layer=True"),
            (out is not None, "out="),
            (memory_limit is not None, "memory_limit="),
        ):
            if flag:
                raise NotImplementedError(
                    f"{what} is not supported yet for networks on images or with branches"
                )
        if device is not None and (not isinstance(device, str) or device.lower() not in ("cpu", "cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        on_gpu = any(hasattr(x, "__cuda_array_interface__") for x in (x1, x2))
        use_gpu = on_gpu or (device.lower() if device is not None else _engine.get_default_device()) == "cuda"
        if diagonal_spatial is not None and not isinstance(diagonal_spatial, bool):
            raise TypeError(f"diagonal_spatial must be True, False or None, got {diagonal_spatial!r}")
        shape1 = np.shape(x1)
        same = x2 is None or x2 is x1
        if not same and (len(np.shape(x2)) != len(shape1) or np.shape(x2)[1:] != shape1[1:]):
            raise ValueError(
                f"x1 and x2 must have the same shape but for the first (batch) axis: x1 has shape {shape1}, "
                f"x2 has shape {np.shape(x2)}"
            )
        plan = self.spatial_plan(shape1, diagonal_spatial)
        if plan.out_dims == () and diagonal_spatial is not None:
            raise ValueError(
                "diagonal_spatial is for networks whose output is an image; this one ends in a vector"
            )
        if use_gpu:
            _engine.require_cuda("x1 is a CuPy array" if on_gpu else "device='cuda' was requested")
        else:
            a1, a2 = _engine.inputs(_rows(x1), None if same else _rows(x2))
        fc = _engine.build_program(_spatial_program.activation_layers(plan), 1)
        fc_ops = [_engine.last_ops(fc)[2 * i + 1] for i in range(len(plan.activations))]
        sprog = _spatial_program.build(plan, _engine.new_spatial_program, (fc, fc_ops))
        if use_gpu:
            # The CUDA driver (checks and places the inputs itself: mixed NumPy/CuPy, CuPy with
            # device='cpu', no CUDA build or device are errors there). float32 inputs give
            # float32 outputs, as the fully connected GPU kernels do; the walk is float64.
            single = all(getattr(x, "dtype", None) == np.float32 for x in (x1, x2) if x is not None)
            raw = _engine.spatial_gram(
                sprog, x1, None if same else x2, names, out_shape_tail=(plan.out_size,), progress=progress,
                device=device, dtype=np.float32 if single else np.float64,
            )  # fmt: skip
            return {name: plan.to_nt(raw[name]) for name in names}
        raw = _engine.spatial_gram(sprog, a1, a2, names, out_shape_tail=(plan.out_size,), progress=progress)
        outs = {}
        for name in names:
            k = raw[name]
            if not np.isfinite(k).all():
                raise FloatingPointError(
                    f"the {name} kernel of this network is not finite for some pair of inputs (an overflow in "
                    "the recursion, e.g. W_std**2 > 2 in a deep Relu network, or LayerNorm with eps=0 on an "
                    "all-zero input)"
                )
            outs[name] = plan.to_nt(k)
        return outs

    # ---- Finite networks (every Dense layer needs its out_dim).

    def init(self, seed, input_dim: int) -> list:
        """Draw the parameters of the finite network.

        Parameters
        ----------
        seed : int, numpy.random.SeedSequence or numpy.random.Generator
            The same seed gives the same parameters (a Generator is drawn from).
        input_dim : int or tuple of int
            Width d of the inputs; for image networks the shape of one image,
            ``(*spatial, C)`` (or Neural Tangents' ``(-1, *spatial, C)``).

        Returns
        -------
        list
            One entry per layer (image and branched networks: Neural Tangents' layout, see
            :mod:`fastntk._finite_spatial` — Conv filters HWIO, a list per parallel branch):
            ``(W, b)`` for a Dense layer, ``W`` float64
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
        x : array_like, shape (N, input_dim) or (N, *spatial, C)
            Inputs, any real dtype (computed in float64). With CuPy params and x (all on one
            device; not a mix of NumPy and CuPy) computed there, a CuPy array out (fully
            connected networks only; image networks run on NumPy).

        Returns
        -------
        numpy.ndarray, float64, shape (N, n_out) (or (N, *spatial, C) for a network
        ending in an image)
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

        CuPy inputs (x1, x2) run on the GPU, on x1's device and CuPy's current stream, and
        give a CuPy float64 array (params may be NumPy or CuPy; batch_size is not used there).

        Returns
        -------
        numpy.ndarray, float64
            Shape (N1, N2) with ``trace_axes=(-1,)``; (N1, N2, n_out, n_out) with
            ``trace_axes=()``, entry [i, j, o, o'] = grad f_o(x1_i) . grad f_o'(x2_j).
        """
        if _engine.empirical_on_gpu(x1, x2):  # CuPy in, CuPy out
            return _engine.empirical_gpu(self, params, x1, x2, ("ntk",), trace_axes)["ntk"]
        return empirical.kernels(self, params, x1, x2, ("ntk",), trace_axes, batch_size)["ntk"]

    def empirical_nngp(self, params, x1, x2=None, trace_axes=(-1,), batch_size=None):
        """The empirical NNGP f(x1) f(x2)^T of the finite network.

        Parameters and conventions as :meth:`empirical_ntk`: with ``trace_axes=(-1,)``
        the mean over outputs, (N1, N2); with ``()`` the (N1, N2, n_out, n_out) array
        ``f_o(x1_i) f_o'(x2_j)``.
        """
        if _engine.empirical_on_gpu(x1, x2):
            return _engine.empirical_gpu(self, params, x1, x2, ("nngp",), trace_axes)["nngp"]
        return empirical.kernels(self, params, x1, x2, ("nngp",), trace_axes, batch_size)["nngp"]


def serial(*layers) -> Network:
    """Chain layers (or networks) into a network, like ``neural_tangents.stax.serial``.

    Each activation must follow a Dense layer (possibly through Identity layers):
    the recursion needs a Gaussian input, so an activation first or two
    activations in a row raise ValueError. Networks with convolutions, pooling or
    branches are checked against their input shape when their kernel is computed
    (a branch may start with an activation: its input comes from the graph).
    """
    return Network([one for k, layer in enumerate(layers) for one in _layers_of(layer, "serial", k)])


def _layers_of(item, who: str, k: int) -> tuple:
    """The layers of argument ``k`` of ``who``: a network's, or a layer alone."""
    if isinstance(item, Network):
        return item.layers
    if isinstance(item, Layer):
        return (item,)
    raise TypeError(f"{who}: argument {k} is not a fastntk layer or network: {item!r}")


def parallel(*layers) -> Parallel:
    """Apply each argument to its own branch, like ``neural_tangents.stax.parallel``:
    after ``FanOut(n)`` (or another ``parallel``) with n branches, ``parallel`` takes n
    arguments, branch i going through argument i; a FanIn layer (:class:`FanInSum`,
    :class:`FanInConcat`) then joins them. Residual block::

        serial(FanOut(2), parallel(Identity(), serial(Relu(), Conv(64, (3, 3), padding='SAME'))), FanInSum())

    Parameters
    ----------
    *layers : Layer, Network, or list of Layer and Network
        One per branch: a layer, a :func:`serial` network, or a list of them (chained). A
        list is for a branch of fully connected layers that starts with an activation, which
        :func:`serial` alone refuses (it checks a fully connected network as a whole), e.g.
        ``parallel(Identity(), [Relu(), Dense(512)])``; the whole network is checked when
        its kernel is computed.
    """
    branches = []
    for k, layer in enumerate(layers):
        items = layer if isinstance(layer, list) else [layer]
        branches.append(tuple(one for item in items for one in _layers_of(item, "parallel", k)))
    if not branches:
        raise ValueError("parallel: needs at least one branch (one layer or network per branch)")
    return Parallel(branches)
