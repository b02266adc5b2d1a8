"""Array handling shared by the public functions: input checks, conversion, outputs.

NumPy handling stays here (dtype, contiguity, allocation) so that the native code
receives plain C-contiguous float64 buffers.
"""

from __future__ import annotations

import os

import numpy as np

from ._args import check_finite, real_array


def is_cupy(x) -> bool:
    """True for a CuPy array, checked without importing CuPy."""
    return type(x).__module__.split(".")[0] == "cupy"


def as_input(x, name: str) -> np.ndarray:
    """x as a C-contiguous float64 array of shape (N, d), d >= 1, all finite.

    Integer, boolean, float32 and non-contiguous inputs are accepted and converted;
    complex or non-numeric data, other shapes, NaN and Inf raise.
    """
    a = real_array(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, d), got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature (d >= 1), got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    check_finite(a, name)
    return a


def available_memory() -> int | None:
    """Bytes that can be allocated now (MemAvailable + SwapFree on Linux), or None if unknown."""
    try:
        fields = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) * 1024
        return fields["MemAvailable"] + fields.get("SwapFree", 0)
    except (OSError, KeyError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def empty_arrays(count: int, shape: tuple) -> list:
    """count float64 arrays of the given shape, or MemoryError before any work starts."""
    shape = tuple(int(n) for n in shape)
    needed = count * int(np.prod(shape, dtype=object)) * 8
    plural = "s" if count > 1 else ""
    message = (
        f"fastntk: the requested kernel{plural} need {needed} bytes ({_human(needed)}) "
        f"for {count} float64 array{plural} of shape {shape}"
    )
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(f"{message}, but only {available} bytes ({_human(available)}) are available")
    try:
        return [np.empty(shape, dtype=np.float64) for _ in range(count)]
    except (MemoryError, ValueError) as exc:
        raise MemoryError(f"{message}, which could not be allocated") from exc


def empty_outputs(count: int, n1: int, n2: int) -> list:
    """count float64 arrays of shape (n1, n2), or MemoryError before any work starts."""
    return empty_arrays(count, (n1, n2))


def empty_kernels(names, shape: tuple) -> dict:
    """{name: float64 array of the given shape} for each name, or MemoryError before any work starts."""
    return dict(zip(names, empty_arrays(len(names), shape)))
