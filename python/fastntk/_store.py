"""Kernels into any array in bounded memory, and resumable kernel stores on disk.

``Network.kernel(..., out=...)`` comes here. The output is cut into **blocks** (the unit
of working memory, of progress and of resumption); each block is one call of the native
driver on the block's rows of x1 and x2, computed into a block buffer (or straight into
the target when the target's block is a C-contiguous float64 NumPy region) and then
written. For x2=None only the blocks on and above the diagonal are computed; each
off-diagonal block is also written transposed below the diagonal, so the result is
exactly symmetric and the N x N matrix is never held in memory.

Memory. Two sets of block buffers (one per kernel each) take at most ``memory_limit``:
the native core computes block k into one set while a writer thread writes block k - 1
from the other (and, with a store, syncs and records it), so that the copies, page
faults and disk waits of the writes overlap the computation.

Values. The native driver runs every block with square tiles of a fixed side
(``TILE`` = 256) and every block boundary is a multiple of it, so every BLAS call has
the shape it would have in one whole computation with that tile side: a block's values
do not depend on which other blocks exist, on the block size (``memory_limit``), on the
thread count, or on whether the run was interrupted and resumed. They agree with the
in-memory ``net.kernel(x1, x2)`` (whose tiles are shaped for speed, not fixed) to
round-off, ~1e-15 relative.

The resumable store (``out`` a path) is a directory::

    <path>/fastntk-store.json   what was computed: the fingerprint (network, a hash of the
                                inputs' bytes, shapes, get, dtype, fastntk version) and the
                                tiling; written once, atomically (temporary file + rename)
    <path>/<name>.npy           one float64 .npy per requested kernel (np.load(...,
                                mmap_mode='r') reads it), its space reserved at creation
    <path>/done/r<I>-c<J>       an empty marker per finished block (block row I, column J),
                                created only after the block's data is on disk (fsync)

A block without its marker is computed again, so a process killed (even by SIGKILL) in
the middle of writing a block never leaves a half-written block counted as done. The
same call on an existing store skips the finished blocks; a different fingerprint is
refused with a message naming what differs.
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, _engine
from ._progress import check_progress, progress_bar

STORE_FILE = "fastntk-store.json"
STORE_FORMAT = "fastntk-kernel-store"
STORE_VERSION = 1
DONE_DIR = "done"

# The working memory when memory_limit is None: large blocks keep the per-block overheads
# (the point tables, a BLAS call's packing) negligible, and 1 GiB leaves room beside the
# inputs on any machine that would run such a kernel.
DEFAULT_MEMORY_LIMIT = 1 << 30
# The native tile side of the blocked path (the driver's own preferred tile is 256 rows):
# fixed, so that no block size and no thread count changes a value (see the docstring).
TILE = 256

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({u + "b": v for u, v in list(_UNITS.items()) if u not in ("", "b")})
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_memory_limit(value) -> int:
    """Bytes from ``memory_limit``: None (the default, 1 GiB), a positive number of bytes,
    or a string such as ``"2GB"``, ``"512 MiB"``, ``"1.5GiB"``; ValueError otherwise."""
    if value is None:
        return DEFAULT_MEMORY_LIMIT
    number = None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    elif not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
    if number is None or not math.isfinite(number) or number < 1:
        raise ValueError(
            "memory_limit must be a positive number of bytes or a string like '2GB' or '512MiB', "
            f"got {value!r}"
        )
    return int(number)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# ---------------------------------------------------------------------------------------
# The tiling


@dataclass(frozen=True)
class Block:
    row: int  # block row and column index (the marker's name)
    col: int
    i0: int  # rows [i0, i1) x columns [j0, j1) of the output
    i1: int
    j0: int
    j1: int

    @property
    def key(self) -> str:
        return f"r{self.row}-c{self.col}"

    @property
    def diagonal(self) -> bool:
        return self.i0 == self.j0 and self.i1 == self.j1


@dataclass(frozen=True)
class Plan:
    """How an (n1, n2) output is cut: blocks of block_rows x block_cols (the last ones
    smaller), native tiles of tile x tile; symmetric: the blocks on and above the diagonal."""

    n1: int
    n2: int
    symmetric: bool
    tile: int
    block_rows: int
    block_cols: int

    def blocks(self) -> list:
        out = []
        for r, i0 in enumerate(range(0, self.n1, self.block_rows)):
            first = r if self.symmetric else 0
            for c, j0 in enumerate(range(first * self.block_cols, self.n2, self.block_cols), start=first):
                i1, j1 = min(i0 + self.block_rows, self.n1), min(j0 + self.block_cols, self.n2)
                out.append(Block(r, c, i0, i1, j0, j1))
        return out

    def buffer_bytes(self, n_out: int) -> int:
        return n_out * 8 * min(self.block_rows, self.n1) * min(self.block_cols, self.n2)

    def as_dict(self) -> dict:
        return {"tile": self.tile, "block_rows": self.block_rows, "block_cols": self.block_cols}


def make_plan(n1: int, n2: int, symmetric: bool, n_buffers: int, memory_limit: int) -> Plan:
    """The tiling whose n_buffers float64 block buffers fit in memory_limit bytes (two per
    kernel, see run_blocks, plus one for a target that copies a mirrored block).

    Block sides are multiples of the tile (see the module docstring). Symmetric outputs
    get square blocks (the diagonal blocks are the native symmetric call); otherwise
    full-width row strips when a strip of one tile's rows fits, else square blocks."""
    per_entry = 8 * n_buffers
    tile = TILE
    if per_entry * tile * tile > memory_limit:
        raise ValueError(
            f"memory_limit={memory_limit} bytes is too small: the smallest blocks ({tile} x {tile} float64 "
            f"entries, {n_buffers} block buffers: two per kernel, computed and written in turn) need "
            f"{per_entry * tile * tile} bytes"
        )

    def multiple(n: int, cap: int) -> int:  # n rounded down to a multiple of tile, in [tile, cap]
        cap = max(tile, -(-cap // tile) * tile)
        return max(tile, min(cap, n // tile * tile))

    if not symmetric and per_entry * tile * n2 <= memory_limit:
        rows = multiple(memory_limit // (per_entry * max(n2, 1)), n1)
        return Plan(n1, n2, False, tile, rows, max(n2, 1))
    side = multiple(math.isqrt(memory_limit // per_entry), max(n1, n2))
    return Plan(n1, n2, symmetric, tile, side, side)


# ---------------------------------------------------------------------------------------
# Targets: where the blocks go


def _is_zarr(x) -> bool:
    return type(x).__module__.split(".")[0] == "zarr"


class Target:
    """One output array (NumPy, np.memmap or zarr) and how to write a block into it."""

    def __init__(self, array, name: str, shape: tuple):
        self.array = array
        self.name = name
        self.numpy = isinstance(array, np.ndarray)
        if not self.numpy and not _is_zarr(array):
            raise TypeError(
                f"out[{name!r}] must be a NumPy array, an np.memmap, a zarr array or a path (a resumable "
                f"store), got {type(array).__name__}"
            )
        if tuple(array.shape) != shape:
            raise ValueError(f"out[{name!r}] must have shape {shape}, got {tuple(array.shape)}")
        dtype = np.dtype(array.dtype)
        if dtype not in (np.float64, np.float32):
            raise ValueError(f"out[{name!r}] must have dtype float64 or float32, got {dtype}")
        if self.numpy and not array.flags.writeable:
            raise ValueError(f"out[{name!r}] must be writeable (got a read-only array)")
        if not self.numpy and getattr(array, "read_only", False):
            raise ValueError(f"out[{name!r}] must be writeable (got a read-only zarr array)")

    def direct(self, b: Block):
        """The target's block itself when the driver can write it directly (a C-contiguous
        float64 NumPy region), else None."""
        if not self.numpy or self.array.dtype != np.float64:
            return None
        view = self.array[b.i0 : b.i1, b.j0 : b.j1]
        flags = view.flags
        return view if flags.c_contiguous and flags.writeable and flags.aligned else None

    def write(self, b: Block, buf: np.ndarray) -> None:
        self.array[b.i0 : b.i1, b.j0 : b.j1] = buf

    def write_transposed(self, b: Block, buf: np.ndarray) -> None:
        """The mirror of an off-diagonal block: rows [j0, j1) x columns [i0, i1) = buf.T."""
        if not self.numpy:
            self.array[b.j0 : b.j1, b.i0 : b.i1] = np.ascontiguousarray(buf.T)
            return
        dst = self.array[b.j0 : b.j1, b.i0 : b.i1]
        # In patches of 64 destination rows x 512 columns: each patch's source columns stay
        # in cache while its destination rows are written; a plain dst[...] = buf.T walks
        # the source with a cache miss per entry (measured ~1.5x slower).
        for c in range(0, dst.shape[0], 64):
            for r in range(0, dst.shape[1], 512):
                dst[c : c + 64, r : r + 512] = buf[r : r + 512, c : c + 64].T


def targets_from_out(out, names, shape) -> dict:
    """{name: Target} from the ``out`` argument (an array for a single name, or a tuple, list
    or dict of them, one per name)."""
    if isinstance(out, dict):
        if sorted(out) != sorted(names):
            raise ValueError(f"out: a dict must have exactly the keys {list(names)}, got {list(out)}")
        arrays = [out[n] for n in names]
    elif isinstance(out, (tuple, list)):
        if len(out) != len(names):
            raise ValueError(f"out: {len(names)} array(s) needed for get={tuple(names)}, got {len(out)}")
        arrays = list(out)
    elif len(names) == 1:
        arrays = [out]
    else:
        raise ValueError(
            f"out: get={tuple(names)} asks for {len(names)} kernels: pass a tuple or dict of arrays "
            "(one per kernel) or a path (a store holding both)"
        )
    targets = {n: Target(a, n, shape) for n, a in zip(names, arrays)}
    ids = [id(t.array) for t in targets.values()]
    if len(set(ids)) != len(ids):
        raise ValueError("out: each kernel needs its own array; the same array was given twice")
    return targets


# ---------------------------------------------------------------------------------------
# The resumable store


def _digest(a) -> str | None:
    if a is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((a.shape, str(a.dtype))).encode())
    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def fingerprint(net, a1, a2, names) -> dict:
    """What a store's data depends on (the tiling is kept beside it, see Store.open)."""
    n2 = a1.shape[0] if a2 is None else a2.shape[0]
    return {
        "network": repr(net),
        "x1": _digest(a1),
        "x2": "x1 (symmetric)" if a2 is None else _digest(a2),
        "shape": [int(a1.shape[0]), int(n2)],
        "input_dim": int(a1.shape[1]),
        "get": list(names),
        "dtype": "float64",
        "fastntk": __version__,
    }


_FIELD_NAMES = {
    "network": "the network",
    "x1": "the inputs x1 (their bytes)",
    "x2": "the inputs x2 (their bytes, or x2=None)",
    "shape": "the output shape",
    "input_dim": "the input dimension",
    "get": "the requested kernels (get)",
    "dtype": "the dtype",
    "fastntk": "the fastntk version",
}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    """path holds text, or (after any crash) its previous state: never a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Store:
    """A resumable kernel store directory (layout in the module docstring)."""

    def __init__(self, path: Path, meta: dict, arrays: dict):
        self.path = path
        self.meta = meta
        self.arrays = arrays  # {name: np.memmap}

    @property
    def done_dir(self) -> Path:
        return self.path / DONE_DIR

    def plan(self) -> Plan:
        t = self.meta["tiling"]
        fp = self.meta["fingerprint"]
        n1, n2 = fp["shape"]
        return Plan(n1, n2, fp["x2"] == "x1 (symmetric)", t["tile"], t["block_rows"], t["block_cols"])

    def done(self) -> set:
        return {p.name for p in self.done_dir.iterdir() if not p.name.endswith(".tmp")}

    def sync_data(self) -> None:
        """Every block written so far is on disk (fsync of each data file)."""
        for name in self.arrays:
            fd = os.open(self.path / f"{name}.npy", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def mark_done(self, key: str) -> None:
        """Records a block as finished, after its data is on disk. The marker is empty, so
        creating it is atomic; the directory is synced so that the marker itself survives."""
        self.sync_data()
        fd = os.open(self.done_dir / key, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        _fsync_dir(self.done_dir)

    @classmethod
    def open(cls, path, fp: dict, names, memory_limit: int, limit_given: bool) -> Store:
        """The store at path for this fingerprint: opened (resumed) if it exists, created
        otherwise. A store made for another computation is refused, before any work."""
        path = Path(os.fspath(path))
        meta_path = path / STORE_FILE
        if meta_path.exists():
            return cls._resume(path, meta_path, fp, names, memory_limit, limit_given)
        return cls._create(path, fp, names, memory_limit)

    @classmethod
    def _resume(cls, path, meta_path, fp, names, memory_limit, limit_given) -> Store:
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"out: {meta_path} cannot be read as a fastntk store ({exc})") from exc
        if meta.get("format") != STORE_FORMAT or meta.get("version") != STORE_VERSION:
            raise ValueError(f"out: {path} is not a fastntk kernel store of version {STORE_VERSION}")
        stored = meta["fingerprint"]
        differ = [k for k in fp if stored.get(k) != fp[k]]
        if differ:
            lines = "; ".join(
                f"{_FIELD_NAMES.get(k, k)}: stored {stored.get(k)!r}, now {fp[k]!r}" for k in differ
            )
            raise ValueError(
                f"out: the store at {path} holds a different computation, so it cannot be resumed "
                f"({lines}). Use another path, or delete {path} to start over"
            )
        store = cls(path, meta, {})
        plan = store.plan()
        need = plan.buffer_bytes(2 * len(names))
        if limit_given and need > memory_limit:
            t = meta["tiling"]
            raise ValueError(
                f"out: the store at {path} is tiled in blocks of {t['block_rows']} x {t['block_cols']}, whose "
                f"buffers need {need} bytes ({_human(need)}), more than memory_limit={memory_limit}: resume with "
                f"memory_limit >= {need} (or None), or delete {path} to start over with smaller blocks"
            )
        for n in names:
            file = path / f"{n}.npy"
            try:
                arr = np.load(file, mmap_mode="r+")
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"out: the store at {path} is damaged: {file} cannot be opened ({exc})"
                ) from exc
            if arr.shape != tuple(fp["shape"]) or arr.dtype != np.float64:
                raise ValueError(
                    f"out: the store at {path} is damaged: {file} has shape {arr.shape}, {arr.dtype}"
                )
            store.arrays[n] = arr
        store.done_dir.mkdir(exist_ok=True)
        return store

    @classmethod
    def _create(cls, path, fp, names, memory_limit) -> Store:
        ours = {f"{n}.npy" for n in names} | {DONE_DIR, STORE_FILE + ".tmp"}
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"out: {path} exists and is not a directory (a store is a directory)")
            foreign = sorted(p.name for p in path.iterdir() if p.name not in ours)
            if foreign:
                raise ValueError(
                    f"out: {path} exists and is not a fastntk store (it holds {foreign[:3]}); use a new path"
                )
        n1, n2 = fp["shape"]
        plan = make_plan(n1, n2, fp["x2"] == "x1 (symmetric)", 2 * len(names), memory_limit)
        meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "fingerprint": fp,
            "tiling": plan.as_dict(),
            "files": {n: f"{n}.npy" for n in names},
        }
        try:
            path.mkdir(parents=True, exist_ok=True)
            data = len(names) * 8 * n1 * n2
            free = shutil.disk_usage(path).free
            if data > free:
                raise OSError(
                    errno.ENOSPC,
                    f"fastntk: the store at {path} needs {data} bytes ({_human(data)}) for "
                    f"{len(names)} float64 array(s) of shape {(n1, n2)}, but only {free} bytes "
                    f"({_human(free)}) are free there",
                )
            if (path / DONE_DIR).exists():
                shutil.rmtree(path / DONE_DIR)  # from a creation that did not finish
            (path / DONE_DIR).mkdir()
            arrays = {}
            for n in names:
                arr = np.lib.format.open_memmap(
                    path / f"{n}.npy", mode="w+", dtype=np.float64, shape=(n1, n2)
                )
                _reserve(path / f"{n}.npy")
                arrays[n] = arr
            _write_atomic(path / STORE_FILE, json.dumps(meta, indent=1) + "\n")
        except OSError as exc:
            raise _io_error(exc, f"creating the store at {path}", None) from exc
        return cls(path, meta, arrays)


def _reserve(file: Path) -> None:
    """Allocates the file's blocks now, so that a full disk shows as an error here rather
    than as a SIGBUS later (a write into an unbacked page of a memory map cannot fail
    any other way)."""
    if not hasattr(os, "posix_fallocate"):  # pragma: no cover - not Linux
        return
    fd = os.open(file, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
            return  # the file system cannot reserve: writes will tell
        raise
    finally:
        os.close(fd)


def _io_error(exc: OSError, doing: str, store: Store | None, n_done: int = 0) -> OSError:
    """A clear OSError (same errno) for a failed write, saying what stays valid."""
    reason = exc.strerror or str(exc)
    if store is not None:
        after = (
            f" The {n_done} finished blocks are recorded in {store.done_dir} and stay valid: "
            "free space (or fix the target) and repeat the same call to resume"
        )
    else:
        after = ""
    if isinstance(exc.strerror, str) and exc.strerror.startswith("fastntk:"):
        return OSError(exc.errno, exc.strerror + after)
    return OSError(exc.errno, f"fastntk: {doing} failed: {reason}.{after}")


# ---------------------------------------------------------------------------------------
# The computation


def _check_out_targets(targets: dict) -> None:
    """Reserves the disk space of memory-mapped targets: a write into a page of a sparse
    file that a full disk cannot back arrives as SIGBUS, so a full disk must show here,
    as an error before any work."""
    for t in targets.values():
        base = t.array
        while not isinstance(base, np.memmap) and isinstance(getattr(base, "base", None), np.ndarray):
            base = base.base
        filename = getattr(base, "filename", None)
        if isinstance(base, np.memmap) and filename and base.mode in ("r+", "w+"):
            try:
                _reserve(Path(filename))
            except OSError as exc:
                raise _io_error(
                    exc, f"reserving the disk space of out[{t.name!r}] ({filename})", None
                ) from exc


def kernel_into(net, a1, a2, names, out, *, memory_limit=None, progress=None):
    """The kernels ``names`` of net between a1 and a2 (checked inputs; a2 None: symmetric)
    written block by block into ``out`` (arrays, or a path: a resumable store). Returns
    the target arrays, {name: array}."""
    progress = check_progress(progress)
    limit = parse_memory_limit(memory_limit)
    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    prog = _engine.program(net, a1.shape[1])
    if isinstance(out, (str, os.PathLike)):
        fp = fingerprint(net, a1, a2, names)
        store = Store.open(out, fp, names, limit, memory_limit is not None)
        targets = {n: Target(store.arrays[n], n, (n1, n2)) for n in names}
        plan = store.plan()
        done = store.done()
    else:
        targets = targets_from_out(out, names, (n1, n2))
        _check_out_targets(targets)
        store = None
        # zarr takes a mirrored block as a contiguous copy: one more block buffer.
        mirror_copy = a2 is None and any(not t.numpy for t in targets.values())
        plan = make_plan(n1, n2, a2 is None, 2 * len(names) + mirror_copy, limit)
        done = set()
    run_blocks(prog, a1, a2, plan, targets, store, done, progress, net.layers)
    return {n: t.array for n, t in targets.items()}


def run_blocks(
    prog, a1, a2, plan: Plan, targets: dict, store: Store | None, done: set, progress, layers
) -> None:
    """Computes the blocks of plan not in done into targets.

    A pipeline of two stages: the native core computes block k into one set of block
    buffers while a writer thread writes block k - 1 from the other set (and, with a store,
    syncs it to disk and records it), so the copies, page faults and disk waits of the
    writes overlap the computation. At most one write is in flight."""
    blocks = plan.blocks()
    todo = [b for b in blocks if b.key not in done]
    sets = ({}, {})  # name -> flat float64 buffer of the largest block, allocated on first need
    n_done = len(blocks) - len(todo)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastntk-writer")
    pending = None

    def settle(bar):
        nonlocal pending, n_done
        if pending is not None:
            try:
                pending.result()
            finally:
                pending = None
            n_done += 1
            bar.update(1)

    try:
        with progress_bar(len(blocks), "kernel", progress, unit="block", initial=n_done) as bar:
            for k, b in enumerate(todo):
                outs, direct = {}, {}
                for n, t in targets.items():
                    view = t.direct(b)
                    direct[n] = view is not None
                    if view is None:
                        buffers = sets[k % 2]
                        if n not in buffers:
                            buffers[n] = np.empty(plan.buffer_bytes(1) // 8)
                        view = buffers[n][: (b.i1 - b.i0) * (b.j1 - b.j0)].reshape(b.i1 - b.i0, b.j1 - b.j0)
                    outs[n] = view
                rows = a1[b.i0 : b.i1]
                if plan.symmetric:
                    cols = None if b.diagonal else a1[b.j0 : b.j1]
                else:
                    cols = a2[b.j0 : b.j1]
                try:
                    _engine.gram_into(prog, rows, cols, outs, tile=plan.tile, layers=layers)
                except FloatingPointError as exc:
                    raise FloatingPointError(
                        f"{exc} (indices within the block of rows {b.i0}:{b.i1}, columns {b.j0}:{b.j1})"
                    ) from exc
                settle(bar)  # block k - 1 written: its buffers are free for block k + 1
                pending = pool.submit(_finish_block, plan, targets, store, b, outs, direct, n_done)
            settle(bar)
    finally:
        if pending is not None:  # a finished block is written and recorded even when stopping
            try:
                pending.result()
            except OSError:
                pass
        pool.shutdown(wait=True)


def _finish_block(
    plan: Plan, targets: dict, store: Store | None, b: Block, outs: dict, direct: dict, n_done: int
):
    """The writer thread's part of a block: its data into the targets (and the mirror below
    the diagonal), then, with a store, the data synced and the block recorded."""
    try:
        for n, t in targets.items():
            if not direct[n]:
                write_block(t, b, outs[n])
            if plan.symmetric and not b.diagonal:
                write_block(t, b, outs[n], transposed=True)
    except OSError as exc:
        where = store.path if store is not None else "out"
        raise _io_error(exc, f"writing block {b.key} of the kernel to {where}", store, n_done) from exc
    if store is not None:
        try:
            store.mark_done(b.key)
        except OSError as exc:
            raise _io_error(exc, f"recording a finished block in {store.done_dir}", store, n_done) from exc


def write_block(target: Target, b: Block, buf: np.ndarray, transposed: bool = False) -> None:
    """One block into a target (the mirror below the diagonal when transposed). The one
    place data is written, so tests can make it fail like a full disk."""
    if transposed:
        target.write_transposed(b, buf)
    else:
        target.write(b, buf)
