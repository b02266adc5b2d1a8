"""The number of threads of the native drivers."""

from __future__ import annotations

import numbers

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
    from . import _core

    return int(_core.build_info()["max_threads"])
