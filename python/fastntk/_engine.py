"""The one door to the native code: every call into ``fastntk._core`` goes through here.

The rest of the package speaks to the drivers only through these functions:

- layer programs: :func:`program` (a network's, cached per input dimension) and
  :func:`build_program` (any layer sequence, with the NTK-only bias scikit-ntk's kernel needs);
- inputs: :func:`as_input` and :func:`inputs` (NumPy, for the CPU drivers), and
  :func:`kernel_inputs`, the single point where NumPy or CuPy arrays are dispatched between
  the OpenMP driver and the CUDA backend (:mod:`fastntk._cuda_backend`, which loads
  ``fastntk._cuda`` lazily: ``import fastntk`` needs no GPU, driver or CuPy);
- devices: :func:`set_default_device`, :func:`get_default_device`, :func:`has_cuda`;
- analytic kernels: :func:`gram` (final kernels, every-layer captures, derivative seeds),
  :func:`every_layer`, :func:`diagonal`, :func:`dense_seeds`;
- finite networks: :func:`empirical_gram` and :func:`matmul`;
- the thread count (:func:`set_num_threads`, :func:`get_num_threads`) and :func:`build_info`.

Every kernel leaves this module finite: an overflow in the recursion raises
FloatingPointError naming the layer where the kernel first stopped being finite (found by
replaying the offending pair with every-layer captures), never a silent NaN or Inf.
"""

from __future__ import annotations

import numbers
import threading
import weakref

import numpy as np

from . import _arrays, _core
from . import _cuda_backend as _gpu
from ._args import all_finite
from ._progress import bar_shown, progress_bar

# The largest degree of Monomial and RectifiedMonomial: fastntk::kMaxDegree of the native
# program, read from the module so that Python never holds a copy of its own.
MAX_DEGREE = int(_core.MAX_DEGREE)


# ---------------------------------------------------------------------------------------
# Build and threads


def build_info() -> dict:
    """What the native modules were built with (a fresh dict); ``cuda_build`` is True when
    this build has the CUDA backend, ``cuda`` when it also finds a device (as
    :func:`has_cuda`), and ``cuda_devices`` names the GPUs it sees."""
    info = dict(_core.build_info())
    info.update(_gpu.info())
    return info


def has_cuda() -> bool:
    """True when the CUDA backend is built and a CUDA device is present."""
    return _gpu.available()


_DEVICES = ("cpu", "cuda")
_default_device = "cpu"


def _check_device(device, name: str = "device") -> str:
    if not isinstance(device, str) or device.lower() not in _DEVICES:
        raise ValueError(f"{name} must be 'cpu' or 'cuda', got {device!r}")
    return device.lower()


def set_default_device(device: str) -> None:
    """Where NumPy inputs are computed when an entry point gets no ``device``: 'cpu' (the
    default) or 'cuda' (the GPU, NumPy results). CuPy inputs always run on their device."""
    global _default_device
    _default_device = _check_device(device)


def get_default_device() -> str:
    """The device of :func:`set_default_device`."""
    return _default_device


_n_threads = 0  # 0: OpenMP's default (OMP_NUM_THREADS, else the number of cores)


def set_num_threads(n: int | None) -> None:
    """Set the number of threads of fastntk's native work; None restores the default."""
    global _n_threads
    if n is None:
        _n_threads = 0
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1 or None, got {n!r}")
    _n_threads = int(n)


def get_num_threads() -> int:
    """The number of threads fastntk's native work uses."""
    if _n_threads:
        return _n_threads
    return int(_core.build_info()["max_threads"])


# ---------------------------------------------------------------------------------------
# Inputs: the dispatch point between NumPy and (later) CuPy


def as_input(x, name: str) -> np.ndarray:
    """x as a C-contiguous float64 NumPy array (N, d), d >= 1, all finite (see
    :func:`fastntk._arrays.as_input`), for the CPU drivers. Device (CuPy) arrays are refused
    here; :func:`kernel_inputs` is where the analytic kernels take them."""
    if _gpu.is_device_array(x):
        if not _gpu.built():
            raise TypeError(
                f"{name} is a CuPy array, but {_gpu.REBUILD}; or pass a NumPy array ({name}.get())"
            )
        raise TypeError(
            f"{name} is a CuPy (CUDA) array, but this function takes NumPy arrays only; pass {name}.get()"
        )
    return _arrays.as_input(x, name)


def kernel_inputs(x1, x2, device=None, names=("x1", "x2")):
    """(a1, a2, to_host): the inputs of an analytic kernel, checked and placed.

    - NumPy inputs, device 'cpu' (or None with the default 'cpu'): float64 NumPy arrays for
      the OpenMP driver, to_host False.
    - NumPy inputs, device 'cuda': CuPy copies on the current device (float32 kept, other
      dtypes float64), to_host True (the results come back as NumPy arrays).
    - CuPy (or ``__cuda_array_interface__``) inputs: CuPy arrays on their device, to_host
      False (CuPy results on that device and CuPy's current stream). ``device='cpu'`` with
      them is an error.

    a2 is None for x1's own Gram (x2 None or x2 is x1). Mixed NumPy and CuPy inputs, inputs
    on two devices, a build without CUDA and a missing CuPy raise before any work.
    """
    explicit = device is not None
    device = _check_device(device) if explicit else _default_device
    same = x2 is None or x2 is x1
    on_device = _gpu.is_device_array(x1), (not same) and _gpu.is_device_array(x2)
    if not same and on_device[0] != on_device[1]:
        dev, host = (names[0], names[1]) if on_device[0] else (names[1], names[0])
        raise TypeError(
            f"{dev} is a CuPy (CUDA) array but {host} is a NumPy array: pass both on the GPU "
            f"(cupy.asarray({host})) or both on the host ({dev}.get())"
        )
    if not on_device[0] and device == "cpu":
        a1, a2 = inputs(x1, x2, names)
        return a1, a2, False
    if on_device[0] and explicit and device == "cpu":
        raise ValueError(
            f"device='cpu' but {names[0]} is a CuPy (CUDA) array: pass NumPy arrays ({names[0]}.get()) to "
            "compute on the CPU, or leave device unset to compute on the array's GPU"
        )
    what = f"{names[0]} is a CuPy array" if on_device[0] else "device='cuda' was requested"
    _gpu.require(what)
    cp = _gpu.cupy()
    if on_device[0]:
        a1 = _gpu.device_input(x1, names[0], cp)
        a2 = None if same else _gpu.device_input(x2, names[1], cp)
        _gpu.same_device(a1, a2, names)
    else:
        h1 = _gpu.host_input(x1, names[0])
        h2 = None if same else _gpu.host_input(x2, names[1])
        a1 = cp.asarray(h1)
        a2 = None if h2 is None else cp.asarray(h2)
    if a2 is not None and a2.shape[1] != a1.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features: {names[0]} has shape "
            f"{a1.shape}, {names[1]} has shape {a2.shape}"
        )
    with a1.device:
        a1, a2 = _gpu.common_dtype(a1, a2, cp)
    return a1, a2, not on_device[0]


def on_gpu(a) -> bool:
    """True for an input placed on the GPU by :func:`kernel_inputs`."""
    return _arrays.is_cupy(a)


def inputs(x1, x2, names=("x1", "x2")):
    """(a1, a2): x1 and x2 checked and converted; a2 is None for x1's own Gram (x2 None or
    x2 is x1), which the drivers compute with the symmetry."""
    a1 = as_input(x1, names[0])
    a2 = None
    if x2 is not None and x2 is not x1:
        a2 = as_input(x2, names[1])
        if a2.shape[1] != a1.shape[1]:
            raise ValueError(
                f"{names[0]} and {names[1]} must have the same number of features: {names[0]} has shape "
                f"{a1.shape}, {names[1]} has shape {a2.shape}"
            )
    return a1, a2


# ---------------------------------------------------------------------------------------
# Layer programs


def build_program(layers, input_dim: int, *, ntk_bias: float = 0.0):
    """The native program of a layer sequence for inputs of dimension input_dim.

    ``ntk_bias`` adds ``ntk_bias**2`` to the NTK (not the NNGP) at every Dense layer: the
    zero-initialized trainable biases of scikit-ntk's kernel."""
    prog = _core.Program()
    n_in = input_dim
    for k, layer in enumerate(layers):
        prog.set_layer(k)
        layer._emit(prog, n_in, ntk_bias)
        if getattr(layer, "out_dim", None) is not None:
            n_in = layer.out_dim
    return prog


# network -> {input_dim: program}; weak, so a network's programs go with it.
_programs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_programs_lock = threading.Lock()


def program(net, input_dim: int):
    """The native program of ``net`` (a Network) for inputs of dimension input_dim, cached."""
    with _programs_lock:
        cache = _programs.setdefault(net, {})
        prog = cache.get(input_dim)
    if prog is None:
        prog = build_program(net.layers, input_dim)
        with _programs_lock:
            prog = cache.setdefault(input_dim, prog)
    return prog


def last_ops(prog) -> dict:
    """{layer index: index of the last op it emitted} (layers without ops are absent)."""
    last = {}
    for op, layer in enumerate(prog.op_layers):
        last[layer] = op
    return last


def new_spatial_program(in_dims, channels: int, full: bool, n_registers: int):
    """An empty native spatial (CNN) program, ``_core.SpatialProgram``; filled by
    :func:`fastntk._spatial_program.build`. NotImplementedError in a build without it."""
    cls = getattr(_core, "SpatialProgram", None)
    if cls is None:
        raise NotImplementedError("this build of fastntk has no spatial (CNN) kernels yet")
    return cls(in_dims, channels, full, n_registers)


def dense_seeds(prog, directions) -> np.ndarray:
    """Seeds (n_ops, P, 3) for the derivatives along P directions, each a (slot, value)
    pair applied to every Dense op: slot 0 = W_std^2, 1 = b_std^2, 2 = the NTK-only bias
    term; value = d(that quantity) along the direction."""
    seeds = np.zeros((prog.n_ops, len(directions), 3))
    dense = np.asarray(prog.dense_ops, dtype=bool)
    for p, (slot, value) in enumerate(directions):
        seeds[dense, p, slot] = value
    return seeds


# ---------------------------------------------------------------------------------------
# Analytic kernels


def gram(
    prog, a1, a2, names, *, capture_after=(), seeds=None, layers=None, to_host=False, progress=False
) -> dict:
    """The native Gram on checked inputs (from :func:`inputs` or :func:`kernel_inputs`):
    {name: array}. CuPy inputs run on the GPU: CuPy outputs, or NumPy ones with
    ``to_host`` (from :func:`kernel_inputs`).

    Plain (N1, N2) arrays for the final kernels; (captures, 1 + directions, N1, N2) with
    ``capture_after`` (op indices) or ``seeds`` (n_ops, directions, 3; see
    :func:`dense_seeds`). ``layers`` (the layer sequence, for messages) names the layer
    where a non-finite kernel first appeared; see :func:`check_kernels`. ``progress`` (None,
    True or False, see :mod:`fastntk._progress`) shows a bar of the native tiles (CPU).
    """
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    plain = not capture_after and seeds is None
    shape = (
        (n1, n2)
        if plain
        else (max(len(capture_after), 1), 1 + (0 if seeds is None else seeds.shape[1]), n1, n2)
    )
    if on_gpu(a1):
        outs, finite = _gpu.gram(
            prog, a1, a2, names, capture_after=capture_after, seeds=seeds, to_host=to_host
        )
        if not finite:
            h1, h2 = _host_float64(a1), None if a2 is None else _host_float64(a2)
            check_kernels(prog, h1, h2, {n: _host(o) for n, o in outs.items()}, layers)
        return outs
    outs = _arrays.empty_kernels(names, shape)
    with progress_bar(None, "kernel", progress=progress, unit="tile") as bar:
        finite = _native_gram(prog, a1, a2, outs, capture_after, seeds, bar=bar)
    if not finite:
        check_kernels(prog, a1, a2, outs, layers)
    return outs


def _host(a) -> np.ndarray:
    return a.get() if on_gpu(a) else np.asarray(a)


def _host_float64(a) -> np.ndarray:
    return np.ascontiguousarray(_host(a), dtype=np.float64)


def _native_gram(prog, a1, a2, outs: dict, capture_after=(), seeds=None, bar=None) -> bool:
    """Fills ``outs``; True when the native side saw every entry finite (it checks the plain
    kernels' tiles while they are in cache), False when some entry may not be (then
    :func:`check_kernels` scans the outputs and names the layer). ``bar`` (a progress bar
    from :func:`fastntk._progress.progress_bar`, or None) follows the tiles done."""
    finite = _core.ntk_gram(
        prog,
        a1,
        a2,
        outs.get("nngp"),
        outs.get("ntk"),
        n_threads=get_num_threads(),
        capture_after=list(capture_after),
        seeds=seeds,
        progress=None if bar is None or not bar_shown(bar) else _tiles_to(bar),
    )
    if bar is not None and bar_shown(bar) and bar.total is not None:
        bar.update(bar.total - bar.n)
    return finite


def _tiles_to(bar):
    """The native progress callback: (tiles done, tiles in all) onto ``bar``."""

    def report(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return report


def gram_into(prog, a1, a2, outs: dict, *, tile: int, layers=None) -> None:
    """The plain kernels of a1 and a2 (a2 None: symmetric) into the given C-contiguous
    float64 (N1, N2) arrays ``outs`` ({name: array}), with square native tiles of side
    ``tile``: fixing the tile fixes every BLAS call's shape, so an entry's value does not
    depend on the thread count (the blocked ``out=`` path relies on it, see
    :mod:`fastntk._store`). Non-finite entries raise as in :func:`gram`."""
    finite = _core.ntk_gram(
        prog, a1, a2, outs.get("nngp"), outs.get("ntk"), n_threads=get_num_threads(), tile=int(tile)
    )
    if not finite:
        check_kernels(prog, a1, a2, outs, layers)


def every_layer(net, a1, a2, names, to_host=False) -> dict:
    """{name: (len(net.layers), N1, N2)}: the kernels after every layer, from one pass (see
    :meth:`fastntk.Network.kernel`)."""
    prog = program(net, a1.shape[1])
    last_op = last_ops(prog)
    captures = sorted(set(last_op.values()))
    n_layers = len(net.layers)
    if not captures:  # no ops at all: every entry is the input kernel
        raw = {n: None for n in names}
    else:
        raw = gram(prog, a1, a2, names, capture_after=captures, layers=net.layers, to_host=to_host)
        if len(captures) == n_layers:  # one op group per layer: the captures are the answer
            return {n: raw[n][:, 0] for n in names}
    where = {k: c for c, k in enumerate(captures)}
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    if on_gpu(a1):  # the layers without ops are filled on the device, or on the host with to_host
        xp = np if to_host else _gpu.cupy()
        outs = {n: xp.empty((n_layers, n1, n2), dtype=a1.dtype) for n in names}
        a1 = _host(a1) if to_host else a1
        a2 = None if a2 is None else (_host(a2) if to_host else a2)
    else:
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


def diagonal(prog, a, layers=None):
    """(nngp, ntk): the diagonals k(x, x) of the rows of a checked input, O(N (d + layers));
    CuPy in (from :func:`kernel_inputs`), CuPy out."""
    if on_gpu(a):
        nngp, ntk, finite = _gpu.diagonal(prog, a)
        if not finite:
            nngp_h, ntk_h = _host(nngp), _host(ntk)
            bad = np.flatnonzero(~(np.isfinite(nngp_h) & np.isfinite(ntk_h)))[0]
            raise _non_finite_error(
                prog, _host_float64(a), None, int(bad), int(bad), layers, "kernel diagonal"
            )
        return nngp, ntk
    nngp, ntk = _core.ntk_diag(prog, a, n_threads=get_num_threads())
    if not (all_finite(nngp) and all_finite(ntk)):
        bad = np.flatnonzero(~(np.isfinite(nngp) & np.isfinite(ntk)))[0]
        raise _non_finite_error(prog, a, None, int(bad), int(bad), layers, "kernel diagonal")
    return nngp, ntk


# ---------------------------------------------------------------------------------------
# No silent non-finite results


def check_kernels(prog, a1, a2, outs: dict, layers=None) -> None:
    """FloatingPointError unless every entry of the kernels in ``outs`` (from ``prog`` on a1,
    a2) is finite. Called when the native pass did not vouch for them (see
    :func:`_native_gram`). One summing pass over each output (over the upper triangle only when
    a2 is None: the drivers mirror it); only on failure is the offending pair replayed to
    find the layer."""
    for name, out in outs.items():
        if out is None or _all_finite_kernel(out, symmetric=a2 is None):
            continue
        index = np.unravel_index(int(np.argmax(~np.isfinite(out).ravel())), out.shape)
        i, j = int(index[-2]), int(index[-1])
        raise _non_finite_error(prog, a1, a2, i, j, layers, f"{name} kernel")


def _all_finite_kernel(out, symmetric: bool, rows: int = 64) -> bool:
    """all_finite(out) for (..., N1, N2) kernels; symmetric ones are read by blocks of rows
    from the diagonal on, about half of the entries (this pass costs ~2% of a kernel on its
    own, all of it memory traffic)."""
    if not symmetric:
        return all_finite(out)
    n = out.shape[-1]
    return all(all_finite(out[..., i : i + rows, i:]) for i in range(0, n, rows))


def _first_bad_op(prog, b1, b2):
    """The first op after which the kernels of one pair (b1, b2 rows; b2 None: b1 with
    itself, by the diagonal maps) are not finite, or None."""
    n_ops = prog.n_ops
    if n_ops == 0:
        return None
    outs = _arrays.empty_kernels(("nngp", "ntk"), (n_ops, 1, 1, 1))
    _native_gram(prog, b1, b2, outs, capture_after=range(n_ops))
    bad = ~(np.isfinite(outs["nngp"][:, 0, 0, 0]) & np.isfinite(outs["ntk"][:, 0, 0, 0]))
    return int(np.argmax(bad)) if bad.any() else None


def _non_finite_error(prog, a1, a2, i: int, j: int, layers, what: str) -> FloatingPointError:
    """The error for a non-finite kernel entry (i, j): the layer where the replay of that
    pair (each point with itself first: overflow usually starts in a variance) first
    stopped being finite."""
    rows2 = a1 if a2 is None else a2
    if a2 is None:
        where = f"row {i} of x1" if i == j else f"the pair (rows {i} and {j} of x1)"
    else:
        where = f"the pair (row {i} of x1, row {j} of x2)"
    op = None
    for b1, b2, who in (
        (a1[i : i + 1], None, f"row {i} of x1"),
        (rows2[j : j + 1], None, f"row {j} of x{1 if a2 is None else 2}"),
        (a1[i : i + 1], rows2[j : j + 1], where),
    ):
        op = _first_bad_op(prog, b1, b2)
        if op is not None:
            where = who
            break
    entry = f"entry {i}" if what == "kernel diagonal" else f"entry {(i, j)}"
    head = f"fastntk: the {what} is not finite (NaN or Inf) at {entry}"
    advice = (
        "The variances grow from layer to layer until they overflow float64: use a smaller W_std "
        "(for Relu, W_std^2 > 2 multiplies the variance by W_std^2 / 2 per layer) or b_std, fewer "
        "layers, or scale the inputs down"
    )
    if op is None:
        return FloatingPointError(
            f"{head}; replaying it gave finite values, so the layer is unknown. {advice}"
        )
    layer = int(prog.op_layers[op])
    name = f" ({layers[layer]!r})" if layers is not None and layer < len(layers) else ""
    return FloatingPointError(f"{head}: for {where} it stops being finite at layer {layer}{name}. {advice}")


# ---------------------------------------------------------------------------------------
# Finite networks


def empirical_on_gpu(x1, x2) -> bool:
    """True when the empirical kernels of (x1, x2) go to the GPU path (device arrays)."""
    return _gpu.is_device_array(x1) or (x2 is not None and _gpu.is_device_array(x2))


def empirical_gpu(net, params, x1, x2, names, trace_axes) -> dict:
    """The empirical kernels on CuPy inputs (see :mod:`fastntk._cuda_empirical`): {name:
    CuPy array} on x1's device, float64; the checks and errors of the CPU path."""
    from . import _cuda_empirical  # noqa: PLC0415
    from ._finite import non_finite_error  # noqa: PLC0415
    from .empirical import parse_trace_axes  # noqa: PLC0415

    trace = parse_trace_axes(trace_axes)
    a1, a2, _ = kernel_inputs(x1, x2)
    cp = _gpu.cupy()
    with a1.device:
        a1 = a1.astype(cp.float64, copy=False)
        a2 = None if a2 is None else a2.astype(cp.float64, copy=False)
    outs = _cuda_empirical.kernels(net, params, a1, a2, names, trace)
    for name, out in outs.items():
        if not all_finite(out, cp):
            from ._finite import check_params  # noqa: PLC0415

            host = check_params(net, [p if not p else tuple(_host(v) if v is not None else None for v in p)
                                      for p in params])[0]  # fmt: skip
            inputs = {"x1": _host_float64(a1), "x2": None if a2 is None else _host_float64(a2)}
            raise non_finite_error(net, host, inputs, f"empirical {name.upper()}", squares=True)
    return outs


def empirical_gram(terms, n1: int, n2, m: int, out, **kwargs) -> None:
    """``_core.empirical_gram`` on fastntk's thread team (see :mod:`fastntk._finite`)."""
    _core.empirical_gram(terms, n1, n2, m, out, n_threads=get_num_threads(), **kwargs)


def matmul(a, b, alpha: float, trans_b: bool = False) -> np.ndarray:
    """alpha * a @ b (b.T if trans_b) on fastntk's BLAS and thread team: the products of the
    forward and backward passes then share one team with the kernel assembly, instead of
    alternating with NumPy's BLAS threads (each team spins for a while after its work, and
    on a few cores the two slow each other down)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    out = np.empty((a.shape[0], b.shape[0] if trans_b else b.shape[1]))
    _core.matmul(a, b, out, trans_b=trans_b, alpha=alpha, n_threads=get_num_threads())
    return out


def pencil_pivots(band: np.ndarray, tm1: np.ndarray, derivatives: bool = False) -> tuple:
    """``_core.pencil_pivots``: for M(t) = I + (t - 1) B, B symmetric band given as
    ``band[j, k] = B[j + k, j]`` ((n, kd + 1), kd >= 1: LAPACK's lower band array read in C
    order; for a tridiagonal B the rows are (d_j, e_j), the last e ignored), at each
    tm1 = t - 1: (ok, log|M|, r_1) and with ``derivatives`` also (d log|M|/dt, d r_1/dt);
    ok (bool) says M is positive definite, (M^-1)_11 = 1 / r_1. Runs on
    :func:`get_num_threads` threads."""
    out = _core.pencil_pivots(band, np.ascontiguousarray(tm1, dtype=np.float64), derivatives, get_num_threads())
    return (out[0].astype(bool),) + tuple(out[1:])


# ---------------------------------------------------------------------------------------
# Spatial (CNN) kernels


def spatial_gram(
    sprog, a1, a2, names, *, out_size=None, out_shape_tail=None, dtype=np.float64, progress=None, device=None
) -> dict:
    """The native spatial (CNN) Gram of a ``_core.SpatialProgram`` on checked inputs.

    Parameters
    ----------
    sprog : fastntk._core.SpatialProgram
        The compiled network (see the CNN contract; built by :mod:`fastntk._spatial_program`).
    a1 : ndarray, float64, (N1, S_in * C) or (N1, *in_dims, C)
        The images, NHWC, flattened per image (C-contiguous float64; converted if not).
    a2 : ndarray or None
        The same for the second set; None for a1's own Gram (upper triangle and mirror, the
        diagonal from each image's own walk, exact).
    names : sequence of {'nngp', 'ntk'}
        The kernels to compute; without 'ntk' the NTK recursion is not run at all.
    out_size : int, optional
        Entries per pair of the output: 1 (scalar readout), S_out (diagonal regime) or
        S_out**2 (full regime); must equal ``sprog.out_size`` (the default).
    out_shape_tail : tuple of int, optional
        Alternatively, the trailing output shape whose product is out_size.
    dtype : float64 or float32
        Storage of the outputs (the walk is float64 either way).
    progress : None, True or False
        A progress bar of the native work (see :mod:`fastntk._progress`).
    device : {None, 'cpu', 'cuda'}
        Where NumPy inputs are computed (None: the default device). CuPy inputs run on their
        GPU (CuPy outputs); NumPy inputs with 'cuda' on the current GPU (NumPy outputs).

    Returns
    -------
    dict
        {name: ndarray (N1, N2, out_size) of ``dtype``} (CuPy arrays for CuPy inputs).

    Raises
    ------
    FloatingPointError
        If an entry is not finite (the CNN kernel overflowed).
    """
    expected = int(sprog.out_size)
    if out_size is None and out_shape_tail is not None:
        out_size = int(np.prod(out_shape_tail, dtype=np.int64))
    if out_size is None:
        out_size = expected
    if int(out_size) != expected:
        raise ValueError(f"out_size must be the program's {expected} entries per pair, got {out_size}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    for name in names:
        if name not in ("nngp", "ntk"):
            raise ValueError(f"names must be 'nngp' and/or 'ntk', got {name!r}")
    if _spatial_on_gpu(a1, a2, device):
        return _spatial_gram_gpu(sprog, a1, a2, names, device, dtype, progress)
    a1 = _spatial_rows(a1)
    a2 = None if a2 is None else _spatial_rows(a2)
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    outs = {name: np.empty((n1, n2, expected), dtype=dtype) for name in names}
    with progress_bar(None, "CNN kernel", progress=progress, unit="tile") as bar:
        shown = bar is not None and bar_shown(bar)
        finite = _core.spatial_gram(
            sprog,
            a1,
            a2,
            outs.get("nngp"),
            outs.get("ntk"),
            n_threads=get_num_threads(),
            progress=_tiles_to(bar) if shown else None,
        )
        if shown and bar.total is not None:
            bar.update(bar.total - bar.n)
    if not finite:
        raise _spatial_not_finite([name for name, out in outs.items() if not all_finite(out)], dtype)
    return outs


def _spatial_not_finite(bad, dtype) -> FloatingPointError:
    return FloatingPointError(
        f"fastntk: the CNN {' and '.join(n.upper() for n in bad) or 'kernel'} is not finite (NaN or Inf): "
        "the recursion overflowed"
        + (" float32" if dtype == np.float32 else "")
        + ". Use a smaller W_std or b_std, fewer layers, or scale the inputs down"
    )


def require_cuda(what: str) -> None:
    """Raise before any work unless the CUDA backend can run (TypeError: a build without
    CUDA; RuntimeError: no usable device); ``what`` names what asked for it."""
    _gpu.require(what)


def _spatial_on_gpu(a1, a2, device) -> bool:
    """Whether a spatial Gram runs on the GPU: CuPy inputs, or device (else the default) 'cuda'."""
    if _gpu.is_device_array(a1) or (a2 is not None and _gpu.is_device_array(a2)):
        return True
    return (_default_device if device is None else _check_device(device)) == "cuda"


def _spatial_gram_gpu(sprog, a1, a2, names, device, dtype, progress) -> dict:
    """spatial_gram on the CUDA driver (:func:`fastntk._cuda_backend.spatial_gram`): inputs
    checked and placed by :func:`kernel_inputs` (its errors: mixed NumPy and CuPy, CuPy with
    device='cpu', no CUDA build or device), images flattened to rows first."""

    def rows(a):
        a = a if _gpu.is_device_array(a) else np.asarray(a)
        return a.reshape(a.shape[0], int(np.prod(a.shape[1:]))) if a.ndim > 2 else a  # -1 fails for N = 0

    g1, g2, to_host = kernel_inputs(rows(a1), None if a2 is None else rows(a2), device)
    with progress_bar(None, "CNN kernel", progress=progress, unit="band") as bar:
        report = _tiles_to(bar) if bar is not None and bar_shown(bar) else None
        outs, bad = _gpu.spatial_gram(sprog, g1, g2, names, dtype=dtype, to_host=to_host, report=report)
    if bad:
        raise _spatial_not_finite(bad, dtype)
    return outs


def _spatial_rows(a) -> np.ndarray:
    """a as C-contiguous float64 (N, S_in * C): one flattened NHWC image per row."""
    a = np.asarray(a)
    if a.ndim > 2:
        a = a.reshape(a.shape[0], int(np.prod(a.shape[1:])))  # -1 fails for N = 0
    return np.ascontiguousarray(a, dtype=np.float64)
