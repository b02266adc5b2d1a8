"""Shared helpers of the Python benchmarks: timing, peak memory, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from fastntk._timing import best_time  # noqa: F401 - the bench scripts import it from here

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def peak_extra_bytes(setup: str, call: str, output_bytes: int) -> int | None:
    """Peak resident memory of `call` beyond what the process held before it and
    beyond the call's own outputs (output_bytes), measured in a fresh interpreter so
    that one-time allocations (thread stacks, BLAS buffers, allocator arenas) count.

    `setup` and `call` are Python source; setup runs first (imports, inputs), then the
    kernel's high-water mark is reset through /proc/self/clear_refs and call runs.
    Linux only; None where the mark is unavailable."""
    code = (
        setup
        + "\nimport gc\n"
        + "def _kib(f):\n"
        + "    for line in open('/proc/self/status'):\n"
        + "        if line.startswith(f + ':'):\n"
        + "            return int(line.split()[1])\n"
        + "gc.collect()\n"
        + "open('/proc/self/clear_refs', 'w').write('5')\n"
        + "_base = _kib('VmRSS')\n"
        + f"_result = {call}\n"
        + "print((_kib('VmHWM') - _base) * 1024)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT / "bench"
        )
        return max(int(out.stdout.split()[-1]) - output_bytes, 0)
    except (subprocess.CalledProcessError, ValueError, IndexError, OSError):
        return None


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def markdown_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def counted(cls):
    """A subclass of a scikit-learn kernel class that counts the likelihood evaluations (calls
    with eval_gradient=True). GaussianProcessRegressor clones kernels with type(k)(**params),
    so the count survives the clones; the constructor is the parent's."""

    class Counted(cls):
        calls = 0

        def __call__(self, X, Y=None, eval_gradient=False):
            if eval_gradient:
                type(self).calls += 1
            return super().__call__(X, Y, eval_gradient)

    Counted.__name__ = cls.__name__
    return Counted
