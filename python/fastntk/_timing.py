"""Wall-clock timing shared by ``fastntk bench`` and the repository's bench/ scripts."""

from __future__ import annotations

import gc
import time


def best_time(fn, repeat: int = 3) -> float:
    """Best wall time over several calls (the machines are noisy; the minimum is the
    least disturbed run). Calls shorter than 50 ms are repeated 7 times instead."""
    times = []
    while len(times) < (repeat if not times or times[0] >= 0.05 else max(repeat, 7)):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        del result
    return min(times)
