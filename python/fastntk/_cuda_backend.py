"""The CUDA backend's Python side: loading ``fastntk._cuda`` lazily, CuPy, devices, and the
tiled Gram driver on the GPU. Only :mod:`fastntk._engine` imports this module.

How a Gram is computed on the GPU
---------------------------------
Per input set, one kernel gives each row's squared norm (in float64) and one kernel the
per-point tables and diagonal kernels (the point walk of ``walk_impl.hpp``). Then, by bands
of rows: cuBLAS (through ``cupy.matmul``) writes the band's inner products into a tile
buffer, and one fused kernel walks every layer of the program per entry, one thread per
entry, writing only the requested outputs: straight into the CuPy outputs, or into band
buffers copied to the NumPy outputs (NumPy in, ``device='cuda'``), so that an output larger
than the GPU's memory streams to the host band by band. For ``x2=None`` only the bands'
upper triangles are multiplied and walked, then mirrored; the diagonal comes from the exact
diagonal maps.

Precision: the walk always runs in float64. float32 inputs give float32 outputs: the GEMM
runs in float32 (its error, about d * 2^-24 relative to |x| |y| per inner product, dominates)
and the outputs are rounded to float32.

Everything runs on the input's device and CuPy's current stream; outputs are allocated by
CuPy (its memory pool owns them). Nothing here synchronizes except where a result must be
read on the host (the non-finite flags, band copies to NumPy).
"""

from __future__ import annotations

import threading

import numpy as np

from . import _arrays
from ._args import check_finite, real_array

INSTALL_CUPY = (
    "install CuPy for your CUDA version, e.g. pip install cupy-cuda12x (CUDA 12) or "
    "pip install cupy-cuda13x (CUDA 13)"
)
REBUILD = (
    "fastntk was built without CUDA: reinstall it from source on a machine with the CUDA "
    "toolkit (nvcc), e.g. FASTNTK_CUDA=ON pip install --no-binary fastntk --force-reinstall fastntk "
    "(or pip install . in a checkout)"
)

_lock = threading.Lock()
_loaded = False
_module = None
_reason = ""


# ---------------------------------------------------------------------------------------
# The native module, CuPy, devices


def native():
    """The ``fastntk._cuda`` module, or None when this build has none (or it cannot load)."""
    global _loaded, _module, _reason
    if not _loaded:
        with _lock:
            if not _loaded:
                try:
                    from . import _cuda  # noqa: PLC0415  (lazily: import fastntk never needs it)

                    _module = _cuda
                except ImportError as exc:
                    _module, _reason = None, f"fastntk._cuda could not be imported: {exc}"
                _loaded = True
    return _module


def built() -> bool:
    """True when this build has the CUDA backend (the ``_cuda`` module, built with CUDA)."""
    mod = native()
    return mod is not None and bool(mod.build_info()["cuda"])


def device_count() -> tuple[int, str]:
    """(number of CUDA devices, why it is 0). Never raises."""
    mod = native()
    if mod is None:
        return 0, _reason or "this fastntk was built without CUDA"
    n, why = mod.device_count()
    return int(n), str(why)


def available() -> bool:
    """True when the CUDA backend is built and a CUDA device is present."""
    return built() and device_count()[0] > 0


def info() -> dict:
    """What :func:`fastntk.build_info` reports about CUDA: ``cuda`` (the backend is built and
    a device is present: :func:`fastntk.has_cuda`), ``cuda_build`` (built with it), the
    architectures compiled, the devices seen, and why none is usable."""
    mod = native()
    if mod is None:
        return {"cuda": False, "cuda_build": False, "cuda_devices": [], "cuda_note": _reason or REBUILD}
    facts = dict(mod.build_info())
    n, why = device_count()
    devices = []
    for k in range(n):
        try:
            d = dict(mod.device_info(k))
            devices.append(
                f"{k}: {d['name']} (compute {d['compute_capability']}, {d['multiprocessors']} SMs, "
                f"{d['total_memory'] / 2**30:.1f} GiB)"
            )
        except RuntimeError as exc:  # a device that cannot be queried is reported, not fatal
            devices.append(f"{k}: ({exc})")
    out = {
        "cuda": bool(facts["cuda"]) and n > 0,
        "cuda_build": bool(facts["cuda"]),
        "cuda_architectures": facts["cuda_architectures"],
        "cuda_compiler": facts["cuda_compiler"],
        "cuda_devices": devices,
    }
    if not n:
        out["cuda_note"] = f"no usable CUDA device: {why}"
    return out


def cupy():
    """The CuPy module, or ImportError saying how to install it."""
    try:
        import cupy  # noqa: PLC0415

        return cupy
    except ImportError as exc:
        raise ImportError(
            f"fastntk's CUDA backend needs CuPy, which is not installed: {INSTALL_CUPY}"
        ) from exc


def is_device_array(x) -> bool:
    """True for a CuPy array or any object exposing ``__cuda_array_interface__``."""
    return _arrays.is_cupy(x) or hasattr(x, "__cuda_array_interface__")


def require(what: str) -> None:
    """Raise unless the backend can run: TypeError for a build without CUDA, RuntimeError
    when no device is usable. ``what`` names the thing that asked (for the message)."""
    if not built():
        raise TypeError(f"{what}, but {REBUILD}")
    n, why = device_count()
    if n == 0:
        raise RuntimeError(f"{what}, but fastntk's CUDA backend finds no usable CUDA device ({why})")


# ---------------------------------------------------------------------------------------
# Inputs


def _device_id(x) -> int:
    return int(x.device.id)


def device_input(x, name: str, cp):
    """A checked device copy-or-view of x: CuPy, C-contiguous, 2-D (N, d), d >= 1, real,
    finite; float32 stays float32, every other dtype becomes float64."""
    if not _arrays.is_cupy(x):
        x = cp.asarray(x)  # __cuda_array_interface__ objects: a view on their device
    with x.device:  # the checks and any conversion run on the array's own device
        a = real_array(x, name, cp)
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array of shape (N, d), got shape {a.shape}")
        if a.shape[1] == 0:
            raise ValueError(f"{name} must have at least one feature (d >= 1), got shape {a.shape}")
        dtype = cp.float32 if a.dtype == cp.float32 else cp.float64
        a = cp.ascontiguousarray(a, dtype=dtype)
        check_finite(a, name, cp)
    return a


def host_input(x, name: str) -> np.ndarray:
    """A checked NumPy input for the GPU: as :func:`device_input` but on the host (float32
    stays float32)."""
    a = real_array(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, d), got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature (d >= 1), got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32 if a.dtype == np.float32 else np.float64)
    check_finite(a, name)
    return a


def same_device(a1, a2, names) -> None:
    """ValueError unless two device arrays live on the same device."""
    if a2 is not None and _device_id(a1) != _device_id(a2):
        raise ValueError(
            f"{names[0]} is on CUDA device {_device_id(a1)} and {names[1]} on device {_device_id(a2)}: "
            f"put both on one device (e.g. with cupy.cuda.Device({_device_id(a1)}): {names[1]} = "
            f"cupy.asarray({names[1]}))"
        )


def common_dtype(a1, a2, cp):
    """(a1, a2) in one dtype: float32 only when both are float32."""
    if a2 is not None and a1.dtype != a2.dtype:
        a1, a2 = a1.astype(cp.float64, copy=False), a2.astype(cp.float64, copy=False)
    return a1, a2


# ---------------------------------------------------------------------------------------
# Memory


def _human(n: int) -> str:
    return _arrays._human(int(n))


def free_device_bytes(cp) -> int:
    """Bytes that can be allocated on the current device now: the driver's free memory plus
    what CuPy's pool holds unused."""
    free, _ = native().mem_get_info(cp.cuda.Device().id)
    return int(free) + int(cp.get_default_memory_pool().free_bytes())


def empty_device(cp, shape, dtype, what: str):
    """cp.empty, or MemoryError stating the bytes needed."""
    needed = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    free = free_device_bytes(cp)
    message = (
        f"fastntk: the {what} needs {needed} bytes ({_human(needed)}) of GPU memory for shape {tuple(shape)} "
        f"{np.dtype(dtype).name}"
    )
    if needed > free:
        raise MemoryError(
            f"{message}, but only {free} bytes ({_human(free)}) are free on CUDA device {cp.cuda.Device().id}; "
            "pass NumPy arrays with device='cuda' to stream the output to host memory, or compute it in blocks"
        )
    try:
        return cp.empty(shape, dtype=dtype)
    except cp.cuda.memory.OutOfMemoryError as exc:
        raise MemoryError(f"{message}, which could not be allocated: {exc}") from exc


def empty_host(shape, dtype, count: int):
    """count NumPy arrays, or MemoryError stating the bytes (as _arrays.empty_arrays)."""
    shape = tuple(int(n) for n in shape)
    needed = count * int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    available = _arrays.available_memory()
    message = f"fastntk: the requested kernels need {needed} bytes ({_human(needed)}) of host memory"
    if available is not None and needed > available:
        raise MemoryError(f"{message}, but only {available} bytes ({_human(available)}) are available")
    try:
        return [np.empty(shape, dtype=dtype) for _ in range(count)]
    except (MemoryError, ValueError) as exc:
        raise MemoryError(f"{message}, which could not be allocated") from exc


# ---------------------------------------------------------------------------------------
# The Gram


class _Ctx:
    """What one Gram call shares: the module, CuPy, the device, the stream, the program on
    the device and the capture table."""

    def __init__(self, prog, cp, device: int, seeds, capture_after, float32: bool):
        mod = native()
        self.mod, self.cp, self.device = mod, cp, device
        self.stream = int(cp.cuda.get_current_stream().ptr)
        self.prog = prog
        self.n_ops = int(prog.n_ops)
        self.n_act = int(prog.n_activations)
        raw = prog.ops_bytes
        if len(raw) != self.n_ops * int(mod.OP_BYTES):
            raise RuntimeError(
                f"fastntk: the program's ops are {len(raw)} bytes, expected {self.n_ops} x {mod.OP_BYTES}: "
                "fastntk._core and fastntk._cuda come from different builds; reinstall fastntk"
            )
        self.ops = cp.asarray(np.frombuffer(raw, dtype=np.uint8)) if raw else None
        coef = np.asarray(prog.coefficients, dtype=np.float64)
        self.coef = cp.asarray(coef) if coef.size else None
        self.P = 0 if seeds is None else int(seeds.shape[1])
        self.seeds = cp.asarray(np.ascontiguousarray(seeds, dtype=np.float64)) if self.P else None
        if capture_after:
            table = np.full(max(self.n_ops, 1), -1, dtype=np.int32)
            for c, k in enumerate(capture_after):
                table[int(k)] = c
            self.capture = cp.asarray(table)
            self.capture_end, self.C = -1, len(capture_after)
        else:
            self.capture, self.capture_end, self.C = None, 0, 1
        self.float32 = float32
        self.planes = 1 + self.P

    @staticmethod
    def ptr(a) -> int:
        return 0 if a is None else int(a.data.ptr)

    def program_args(self):
        return (self.ptr(self.ops), self.n_ops, self.n_act, self.ptr(self.coef), self.ptr(self.seeds), self.P)


def _points(ctx: _Ctx, a, name: str, host_rows):
    """(table, q_cap, t_cap) of the rows of a: the point tables and the diagonal kernels at
    each capture, (C, n, 1 + P) float64 each. Errors as the CPU driver's, with the row."""
    cp, mod = ctx.cp, ctx.mod
    n, d = a.shape
    q0 = cp.empty(max(n, 1), dtype=cp.float64)
    mod.row_norms(a.data.ptr, ctx.float32, n, d, d, 1.0 / d, q0.data.ptr, ctx.stream, ctx.device)
    if n and not bool(cp.isfinite(q0[:n]).all()):
        i = int(cp.argmax(~cp.isfinite(q0[:n])))
        raise ValueError(
            f"row {i} of {name}: its squared norm overflows float64 (|x|^2 > 1.8e308); scale the inputs down"
        )
    table = cp.empty(max(4 * ctx.n_act * n * ctx.planes, 1), dtype=cp.float64)
    q_cap = cp.empty((ctx.C, n, ctx.planes), dtype=cp.float64)
    t_cap = cp.empty((ctx.C, n, ctx.planes), dtype=cp.float64)
    stopped = cp.empty(max(n, 1), dtype=cp.int32)
    mod.point_pass(*ctx.program_args(), q0.data.ptr, n, table.data.ptr, ctx.ptr(ctx.capture), ctx.capture_end,
                   q_cap.data.ptr, t_cap.data.ptr, stopped.data.ptr, ctx.stream, ctx.device)  # fmt: skip
    if n and bool((stopped[:n] >= 0).any()):
        i = int(cp.argmax(stopped[:n] >= 0))
        _replay_point_error(ctx.prog, host_rows(i), i, name)
    return table, q_cap, t_cap


def _replay_point_error(prog, row, i: int, name: str):
    """Raise the CPU driver's error for a point whose walk stopped (a diverging Gaussian),
    naming the row of the caller's input."""
    from . import _core  # noqa: PLC0415

    try:
        _core.ntk_diag(prog, np.ascontiguousarray(row, dtype=np.float64).reshape(1, -1))
    except ValueError as exc:
        raise ValueError(str(exc).replace("row 0 of x", f"row {i} of {name}")) from None
    raise ValueError(f"row {i} of {name}: the kernel is undefined for this point")  # pragma: no cover


def _band_rows(cp, n1: int, n2: int, per_row: int) -> int:
    """Rows per band: the tile buffer (and band outputs) in at most half of the free device
    memory, at most 2048 rows (for x2=None the band's lower triangle is multiplied for
    nothing: R/N of the GEMM) and at most 65535 (a launch's grid.y)."""
    budget = free_device_bytes(cp) // 2
    rows = budget // max(per_row, 1)
    if rows < 1:
        raise MemoryError(
            f"fastntk: one row of a Gram tile needs {per_row} bytes ({_human(per_row)}) of GPU memory, "
            f"more than half of the {2 * budget} bytes free"
        )
    return int(max(1, min(rows, 2048, n1, 65535)))


def gram(prog, a1, a2, names, *, capture_after=(), seeds=None, to_host=False, host_inputs=None):
    """The Gram of ``prog`` on the GPU: {name: array}, with the shapes of
    :func:`fastntk._engine.gram`. a1, a2: checked CuPy inputs on one device (a2 None: x1
    with itself), of one dtype. to_host: NumPy outputs, streamed band by band.
    host_inputs: (x1, x2) on the host for error replays, or None (copied then).

    Returns (outs, finite): finite is False when an entry is NaN or Inf (the caller replays
    the pair on the CPU to name the layer)."""
    cp = cupy()
    mod = native()
    device = _device_id(a1)
    with cp.cuda.Device(device):
        float32 = a1.dtype == cp.float32
        if seeds is not None and float32:
            raise ValueError("fastntk: derivatives are computed in float64 only: pass float64 inputs")
        ctx = _Ctx(prog, cp, device, seeds, list(capture_after), float32)
        dtype = np.float32 if float32 else np.float64
        item = np.dtype(dtype).itemsize
        symmetric = a2 is None
        n1, d = a1.shape
        b = a1 if symmetric else a2
        n2 = b.shape[0]
        plain = not capture_after and seeds is None
        shape = (n1, n2) if plain else (ctx.C, ctx.planes, n1, n2)
        if to_host:
            outs = dict(zip(names, empty_host(shape, dtype, len(names))))
        else:
            outs = {n: empty_device(cp, shape, dtype, f"{n} kernel") for n in names}
        if n1 == 0 or n2 == 0:
            return outs, True

        def host_rows(which):
            def rows(i):
                src = a1 if which == 1 else b
                return src[i].get()

            return rows

        table1, q1, t1 = _points(ctx, a1, "x1", host_rows(1))
        table2 = table1 if symmetric else _points(ctx, b, "x2", host_rows(2))[0]

        C_planes = ctx.C * ctx.planes
        per_row = n2 * item * (1 + (len(names) * C_planes if to_host else 0))
        R = _band_rows(cp, n1, n2, per_row)
        tile = cp.empty(R * n2, dtype=dtype)
        bands = {n: cp.empty(R * n2 * C_planes, dtype=dtype) for n in names} if to_host else None
        flag = cp.zeros(1, dtype=cp.int32)
        for i0 in range(0, n1, R):
            rows = min(R, n1 - i0)
            j0 = i0 if symmetric else 0
            cols = n2 - j0
            s = tile[: rows * cols].reshape(rows, cols)
            cp.matmul(a1[i0 : i0 + rows], b[j0:].T, out=s)
            if to_host:
                ptrs = {n: int(bands[n].data.ptr) for n in names}
                ld_out, stride = cols, rows * cols
            else:
                ptrs = {n: int(outs[n].data.ptr) + (i0 * n2 + j0) * item for n in names}
                ld_out, stride = n2, n1 * n2
            mod.gram_tile(*ctx.program_args(), float32, s.data.ptr, cols, 1.0 / d, table1.data.ptr, n1,
                          table2.data.ptr, n2, i0, j0, rows, cols, symmetric, ptrs.get("nngp", 0),
                          ptrs.get("ntk", 0), ld_out, stride, ctx.ptr(ctx.capture), ctx.capture_end,
                          flag.data.ptr, ctx.stream, device)  # fmt: skip
            if to_host:
                for n in names:
                    band = bands[n][: C_planes * rows * cols].reshape(C_planes, rows, cols).get()
                    outs[n].reshape(C_planes, n1, n2)[:, i0 : i0 + rows, j0:] = band
        if symmetric:
            for n in names:
                diag = (q1 if n == "nngp" else t1).transpose(0, 2, 1)  # (C, planes, n)
                if to_host:
                    _mirror_host(outs[n].reshape(C_planes, n1, n2), R)
                    out4 = outs[n].reshape(ctx.C, ctx.planes, n1, n2)
                    idx = np.arange(n1)
                    out4[:, :, idx, idx] = diag.get()
                else:
                    flat = outs[n].reshape(C_planes, n1, n2)
                    for p in range(C_planes):
                        mod.mirror(flat[p].data.ptr, float32, n1, n2, ctx.stream, device)
                    out4 = outs[n].reshape(ctx.C, ctx.planes, n1, n2)
                    idx = cp.arange(n1)
                    out4[:, :, idx, idx] = diag
            diag_finite = bool(cp.isfinite(q1).all()) and bool(cp.isfinite(t1).all())
        else:
            diag_finite = True
        finite = diag_finite and int(flag.get()[0]) == 0
        return outs, finite


def _mirror_host(planes: np.ndarray, rows: int) -> None:
    """Lower triangles of (K, n, n) from their upper ones, by bands of rows (in place)."""
    n = planes.shape[-1]
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        planes[:, i0:i1, :i0] = planes[:, :i0, i0:i1].transpose(0, 2, 1)
        lower = np.tril_indices(i1 - i0, -1)
        block = planes[:, i0:i1, i0:i1]
        block[:, lower[0], lower[1]] = block[:, lower[1], lower[0]]


def diagonal(prog, a):
    """(nngp, ntk) diagonals K(x_i, x_i) of a checked CuPy input (float64 walk, a's dtype out),
    O(N (d + layers)), and whether they are finite."""
    cp = cupy()
    device = _device_id(a)
    with cp.cuda.Device(device):
        ctx = _Ctx(prog, cp, device, None, [], a.dtype == cp.float32)
        _, q, t = _points(ctx, a, "x", lambda i: a[i].get())
        nngp, ntk = q[0, :, 0].astype(a.dtype), t[0, :, 0].astype(a.dtype)
        return nngp, ntk, bool(cp.isfinite(nngp).all()) and bool(cp.isfinite(ntk).all())


# ---------------------------------------------------------------------------------------
# Spatial (CNN) kernels
#
# One CUDA block walks one pair (csrc/cuda/spatial_gram_cuda.hpp): a point pass (each
# image with itself: the records the pairs read, and for x2=None the exact diagonal), then
# bands of rows, one launch per band, the blocks striding over the band's pairs. A block's
# state lives in a workspace of its own, sized for the blocks the device runs at once, never
# for all pairs: O(blocks * R * S^2) doubles in the full regime. The input covariance is
# computed by the blocks themselves (see spatial_gram_cuda.cu for why not by cuBLAS).


def _spatial_threads(prog_entries: int) -> int:
    """Threads of a block: 256 (eight warps share a pair's entries), fewer for small states
    (a diagonal-regime register of a few positions), so that threads do not idle."""
    threads = 32
    while threads < 256 and threads < prog_entries:
        threads *= 2
    return threads


class _SpatialCtx:
    """What one spatial Gram call shares: the program on the device, its launch plan."""

    def __init__(self, sprog, cp, device: int, ntk: bool, float32: bool, n_pairs: int, workspace=None):
        mod = native()
        self.mod, self.cp, self.device, self.sprog = mod, cp, device, sprog
        self.stream = int(cp.cuda.get_current_stream().ptr)
        raw = sprog.ops_bytes
        n_ops = int(sprog.n_ops)
        if len(raw) != n_ops * int(mod.SPATIAL_OP_BYTES):
            raise RuntimeError(
                f"fastntk: the spatial program's ops are {len(raw)} bytes, expected {n_ops} x "
                f"{mod.SPATIAL_OP_BYTES}: fastntk._core and fastntk._cuda come from different builds; reinstall fastntk"
            )
        self.ops = cp.asarray(np.frombuffer(raw, dtype=np.uint8)) if raw else None
        coef = np.asarray(sprog.coefficients, dtype=np.float64)
        self.coef = cp.asarray(coef) if coef.size else None
        self.prog = (
            _Ctx.ptr(self.ops), n_ops, int(sprog.n_registers), int(sprog.n_activations), bool(sprog.full),
            list(sprog.in_dims), list(sprog.out_dims), int(sprog.max_entries), int(sprog.point_stride),
            _Ctx.ptr(self.coef),
        )  # fmt: skip
        self.channels = int(sprog.channels)
        self.record_stride = max(int(sprog.point_stride), 1)
        self.float32 = float32
        self.launch = self._plan(ntk, max(n_pairs, 1), workspace)

    def _plan(self, ntk: bool, n_pairs: int, workspace):
        """(n_blocks, threads, shared, workspace pointer): as many blocks as the device runs
        at once (and the pairs need), each with a workspace; in shared memory where it fits
        (workspace='shared' or 'global' forces one, for the tests)."""
        mod, cp = self.mod, self.cp
        doubles = int(mod.spatial_workspace_doubles(self.prog, ntk))
        bytes_per_block = doubles * 8
        threads = _spatial_threads(int(self.sprog.max_entries))
        shared = (
            bytes_per_block <= int(mod.SPATIAL_MAX_SHARED_BYTES)
            if workspace is None
            else workspace == "shared"
        )
        resident = int(
            mod.spatial_resident_blocks(ntk, threads, bytes_per_block if shared else 0, self.device)
        )
        blocks = max(1, min(resident, n_pairs))
        if shared:
            self.workspace = None
            return (blocks, threads, True, 0)
        budget = free_device_bytes(cp) // 2
        if bytes_per_block > budget:
            raise MemoryError(
                f"fastntk: one pair's workspace of the CNN kernel needs {bytes_per_block} bytes "
                f"({_human(bytes_per_block)}) of GPU memory, more than half of the {2 * budget} bytes free"
            )
        blocks = max(1, min(blocks, budget // bytes_per_block))
        self.workspace = empty_device(cp, (blocks * doubles,), np.float64, "CNN kernel's workspace")
        return (blocks, threads, False, int(self.workspace.data.ptr))

    def points(self, x, name: str, host_row, outs=None, ld_point: int = 0, ntk: bool = False):
        """The records of the images x (n, S_in * C) float64, (n, record_stride); with outs
        ({name: pointer}), each image's own kernel written at outs + p * ld_point. A diverging
        Gaussian raises the CPU driver's ValueError, naming the image of ``name``."""
        cp, mod = self.cp, self.mod
        n = x.shape[0]
        records = cp.empty((max(n, 1), self.record_stride), dtype=cp.float64)
        stopped = cp.zeros(max(n, 1), dtype=cp.int32)
        flag = cp.zeros(1, dtype=cp.int32)
        outs = outs or {}
        # A walk without Theta lays the blocks' slices out at half the stride, inside the
        # same allocation: one launch plan serves both.
        launch = self.launch
        mod.spatial_points(self.prog, self.channels, x.data.ptr, n, records.data.ptr, self.record_stride,
                           self.float32, outs.get("nngp", 0), outs.get("ntk", 0) if ntk else 0, ld_point,
                           stopped.data.ptr, flag.data.ptr, launch, self.stream, self.device)  # fmt: skip
        if n and bool((stopped[:n] != 0).any()):
            i = int(cp.argmax(stopped[:n] != 0))
            _replay_spatial_point_error(self.sprog, host_row(i), i, name)
        return records, int(flag.get()[0]) == 0


def _replay_spatial_point_error(sprog, row, i: int, name: str):
    """Raise the CPU driver's error for an image whose walk diverges (a Gaussian with
    4 b q >= 1), naming the image of the caller's input."""
    from . import _core  # noqa: PLC0415

    x = np.ascontiguousarray(row, dtype=np.float64).reshape(1, -1)
    try:
        _core.spatial_gram(sprog, x, None, np.empty((1, 1, int(sprog.out_size))), None, n_threads=1)
    except ValueError as exc:
        raise ValueError(str(exc).replace("image 0 of x1", f"image {i} of {name}")) from None
    raise ValueError(f"image {i} of {name}: the CNN kernel is undefined for this image")  # pragma: no cover


def spatial_gram(sprog, a1, a2, names, *, dtype=np.float64, to_host=False, report=None, workspace=None):
    """The spatial (CNN) Gram of ``sprog`` on the GPU, as :func:`fastntk._engine.spatial_gram`.

    Parameters
    ----------
    sprog : fastntk._core.SpatialProgram
    a1 : cupy.ndarray, (N1, S_in * C) (or (N1, *in_dims, C)), float32 or float64
        Checked images on one device (see :func:`fastntk._engine.kernel_inputs`); the walk
        reads them as float64.
    a2 : cupy.ndarray or None
        The second set on a1's device; None for a1's own Gram (upper triangle, mirrored; the
        diagonal from each image's own walk, exact).
    names : sequence of {'nngp', 'ntk'}
    dtype : float64 or float32
        Storage of the outputs (the walk is float64 either way).
    to_host : bool
        NumPy outputs, streamed band by band (NumPy inputs with device='cuda'); else CuPy
        outputs on a1's device.
    report : callable, optional
        report(bands done, bands in all) after each band.
    workspace : {None, 'shared', 'global'}
        Where the blocks' workspaces live; None: shared memory where one fits (for tests).

    Returns
    -------
    (dict, list)
        {name: array (N1, N2, out_size) of dtype}, and the names whose output holds a NaN or
        an Inf (empty when all are finite).
    """
    cp = cupy()
    device = _device_id(a1)
    with cp.cuda.Device(device):
        dtype = np.dtype(dtype)
        float32 = dtype == np.dtype(np.float32)
        symmetric = a2 is None
        row = int(np.prod(sprog.in_dims)) * int(sprog.channels)
        x1 = _spatial_rows(cp, a1, "x1", row)
        x2 = x1 if symmetric else _spatial_rows(cp, a2, "x2", row)
        n1, n2 = x1.shape[0], x2.shape[0]
        m = int(sprog.out_size)
        shape = (n1, n2, m)
        if to_host:
            outs = dict(zip(names, empty_host(shape, dtype, len(names))))
        else:
            outs = {n: empty_device(cp, shape, dtype, f"{n} kernel") for n in names}
        if n1 == 0 or n2 == 0:
            return outs, []
        ntk = "ntk" in names
        n_pairs = n1 * (n1 - 1) // 2 if symmetric else n1 * n2
        ctx = _SpatialCtx(sprog, cp, device, ntk, float32, max(n_pairs, n1, n2), workspace)

        def host_row(x):
            return lambda i: x[i].get()

        item = dtype.itemsize
        finite = True
        diag = None
        if symmetric:
            if to_host:
                diag = {n: empty_device(cp, (n1, m), dtype, f"{n} diagonal") for n in names}
                ptrs, ld_point = {n: int(diag[n].data.ptr) for n in names}, m
            else:
                ptrs, ld_point = {n: int(outs[n].data.ptr) for n in names}, (n1 + 1) * m
            rec1, finite = ctx.points(x1, "x1", host_row(x1), ptrs, ld_point, ntk=ntk)
            rec2 = rec1
        else:
            rec1, _ = ctx.points(x1, "x1", host_row(x1))
            rec2, _ = ctx.points(x2, "x2", host_row(x2))

        rows_per_band = _spatial_band_rows(cp, ctx, n1, n2, m * item * len(names) if to_host else 0)
        bands = (
            {n: empty_device(cp, (rows_per_band * n2 * m,), dtype, f"{n} band") for n in names}
            if to_host
            else None
        )
        flag = cp.zeros(1, dtype=cp.int32)
        starts = range(0, n1 - 1 if symmetric else n1, rows_per_band)
        stream = cp.cuda.get_current_stream()
        for done, i0 in enumerate(starts, 1):
            rows = min(rows_per_band, n1 - i0)
            j0 = i0 if symmetric else 0
            cols = n2 - j0
            if to_host:
                ptrs = {n: int(bands[n].data.ptr) for n in names}
                out_i0, out_j0, ld_row, mirror = i0, j0, cols * m, False
            else:
                ptrs = {n: int(outs[n].data.ptr) for n in names}
                out_i0, out_j0, ld_row, mirror = 0, 0, n2 * m, symmetric
            ctx.mod.spatial_pairs(ctx.prog, ctx.channels, x1.data.ptr, x2.data.ptr, rec1.data.ptr, rec2.data.ptr,
                                  ctx.record_stride, n1, n2, i0, rows, j0, cols, symmetric, float32,
                                  ptrs.get("nngp", 0), ptrs.get("ntk", 0), m, out_i0, out_j0, ld_row, mirror,
                                  flag.data.ptr, ctx.launch, ctx.stream, device)  # fmt: skip
            if to_host:
                for n in names:
                    outs[n][i0 : i0 + rows, j0:] = bands[n][: rows * cols * m].reshape(rows, cols, m).get()
            else:
                stream.synchronize()  # a band at a time: Ctrl-C and progress between bands
            if report is not None:
                report(done, len(starts))
        if symmetric and to_host:
            so = int(np.prod(sprog.out_dims)) if sprog.full and m > 1 else 0
            idx = np.arange(n1)
            for n in names:
                _mirror_host_spatial(outs[n], so)
                outs[n][idx, idx] = diag[n].get()
        finite = finite and int(flag.get()[0]) == 0
        bad = []
        if not finite:
            xp = np if to_host else cp
            bad = [n for n in names if not bool(xp.isfinite(outs[n]).all())]
        return outs, bad


def _spatial_rows(cp, a, name: str, row: int):
    """a as C-contiguous float64 (N, S_in * C) on its device: one flattened NHWC image per row."""
    a = a.reshape(a.shape[0], int(np.prod(a.shape[1:]))) if a.ndim != 2 else a  # -1 fails for N = 0
    if a.shape[1] != row:
        raise ValueError(
            f"{name} must have {row} values per image (positions x channels), got shape {a.shape}"
        )
    return cp.ascontiguousarray(a, dtype=cp.float64)


def _spatial_band_rows(cp, ctx: _SpatialCtx, n1: int, n2: int, host_bytes_per_pair: int) -> int:
    """Rows per band: enough pairs to keep every block busy for several pairs (8 each in the
    full regime, where a pair is a millisecond or more; 64 in the diagonal regime) between
    the synchronizations, and for host outputs band buffers in half of the free memory."""
    blocks = ctx.launch[0]
    target = blocks * (8 if ctx.sprog.full else 64)
    rows = -(-target // max(n2, 1))
    if host_bytes_per_pair:
        per_row = host_bytes_per_pair * n2
        budget = free_device_bytes(cp) // 2
        if per_row > budget:
            raise MemoryError(
                f"fastntk: one row of the CNN kernels needs {per_row} bytes ({_human(per_row)}) of GPU memory, "
                f"more than half of the {2 * budget} bytes free"
            )
        rows = min(rows, budget // per_row)
    return int(max(1, min(rows, n1)))


def _mirror_host_spatial(out: np.ndarray, so: int) -> None:
    """The lower triangle of a symmetric Gram (n, n, m) from its upper one, in place:
    out[i, j] = out[j, i] for j < i, transposed as an so x so matrix when so > 0 (a
    full-regime output: K(x_i, x_j)[a, b] = K(x_j, x_i)[b, a])."""
    n = out.shape[0]
    v = out.reshape(n, n, so, so) if so else out
    for i in range(1, n):
        upper = v[:i, i]
        v[i, :i] = upper.swapaxes(-1, -2) if so else upper
