"""Long native work releases the GIL and stops on Ctrl-C."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

import fastntk as nt

# About 3.6e9 pair-layers (6000^2 / 2 pairs x 200 Erf layers): several seconds on any
# machine this runs on, so an interrupt after 0.5 s always lands mid-computation.
LONG_JOB = """
import numpy as np, fastntk as nt
layers = [nt.Dense(b_std=0.1)]
for _ in range(200):
    layers += [nt.Erf(), nt.Dense(b_std=0.1)]
net = nt.serial(*layers)
x = np.random.default_rng(0).standard_normal((6000, 8))
"""


def test_ctrl_c_stops_within_a_second():
    script = LONG_JOB + textwrap.dedent(
        """
        import os, signal, threading, time
        sent = []
        def interrupt():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
        threading.Timer(0.5, interrupt).start()
        try:
            net.kernel(x, get="nngp")
            print("FINISHED")
        except KeyboardInterrupt:
            print("INTERRUPTED %.3f" % (time.perf_counter() - sent[0]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "INTERRUPTED", out.stdout
    assert float(words[1]) < 1.0, f"took {words[1]} s after Ctrl-C to stop"


def test_gil_is_released_during_native_work():
    layers = [nt.Dense(b_std=0.1)]
    for _ in range(40):
        layers += [nt.Erf(), nt.Dense(b_std=0.1)]
    net = nt.serial(*layers)
    x = np.random.default_rng(1).standard_normal((4000, 8))
    done = threading.Event()

    def work():
        net.kernel(x, get="nngp")
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.05)  # let the worker enter the native call
    ticks = 0
    while not done.is_set():
        ticks += 1  # pure Python: runs only while the worker does not hold the GIL
        time.sleep(0.001)
    worker.join()
    # With the GIL held for the whole call, this thread could not run at all until it ended.
    assert ticks > 20, f"the main thread ran only {ticks} times during the native call"
