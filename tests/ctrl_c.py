"""Native calls and Python: how long a call takes to stop after Ctrl-C (in a fresh
interpreter), and whether other Python threads run while it works (the GIL released).

The jobs are sized on the machine that runs the tests (`size_for`): a fixed size that
takes seconds on 2 cores finishes before the interrupt on 16, and then tests nothing."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import time

_HARNESS = """
import os, signal, threading, time
_sent = []


def _send_sigint():
    _sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)


threading.Timer({delay}, _send_sigint).start()
try:
    {call}
    print("FINISHED")
except KeyboardInterrupt:
    print("INTERRUPTED", time.perf_counter() - _sent[0])
"""


def seconds_to_stop(
    setup: str, call: str, delay: float = 0.5, timeout: float = 300, after: str = ""
) -> float:
    """Runs `setup`, then `call` (one statement) with SIGINT sent `delay` seconds in; returns
    the seconds from the signal to KeyboardInterrupt. Fails if the call finished first (the
    job was too short to test anything) or the interpreter failed.

    `after`, if given, is code run once the call was interrupted (the process must still be
    usable): it fails by raising (an assert), and the test fails with it."""
    code = textwrap.dedent(setup) + _HARNESS.format(delay=delay, call=call)
    if after:
        code += textwrap.dedent(after) + '\nprint("AFTER_OK")\n'
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words and words[0] == "INTERRUPTED", f"the call was not interrupted: {out.stdout!r}"
    if after:
        assert "AFTER_OK" in words, f"the process was not usable after the interrupt: {out.stdout!r}"
    return float(words[1])


def python_ticks_during(fn) -> int:
    """Runs fn() in a thread and counts how often this thread gets to run Python meanwhile
    (once per millisecond at most). A call that holds the GIL throughout allows ~0 ticks."""
    runner = threading.Thread(target=fn)
    runner.start()
    time.sleep(0.05)  # let the call start
    ticks = 0
    while runner.is_alive():
        time.sleep(0.001)
        ticks += 1
    runner.join()
    return ticks


def size_for(seconds: float, run, size: int, power: float = 1.0) -> int:
    """The size at which ``run(size)`` takes about `seconds` on this machine, assuming its
    time grows as size**power: ``run`` is timed once at `size` after one warm-up call
    (threads, pages), then scaled. Never smaller than `size`."""
    run(size)
    t0 = time.perf_counter()
    run(size)
    elapsed = max(time.perf_counter() - t0, 1e-4)
    return max(size, math.ceil(size * (seconds / elapsed) ** (1.0 / power)))
