"""Long native work releases the GIL and stops on Ctrl-C."""

from __future__ import annotations

import numpy as np

from ctrl_c import python_ticks_during, seconds_to_stop, size_for

# An Erf MLP: depth fixed (the work of one tile, hence the time to notice a stop, stays
# that of 256^2 pairs x depth layers), the number of points sized to this machine.
NET = """
import numpy as np, fastntk as nt
net = nt.mlp("erf", {depth}, W_std=1.0, b_std=0.1)
x = np.random.default_rng(0).standard_normal(({n}, 8))
"""


def _points_for(seconds, depth):
    """Points whose NNGP Gram takes about `seconds` here (time ~ n^2)."""
    scope = {}
    exec(NET.format(depth=depth, n=1), scope)
    net = scope["net"]
    x = np.random.default_rng(0).standard_normal((1000, 8))
    return size_for(seconds, lambda n: net.kernel(x[:n], get="nngp"), 1000, power=2)


def test_ctrl_c_stops_within_a_second():
    setup = NET.format(depth=200, n=_points_for(4.0, 200))
    seconds = seconds_to_stop(setup, 'net.kernel(x, get="nngp")')
    assert seconds < 1.0, f"took {seconds:.2f} s after Ctrl-C to stop"


def test_gil_is_released_during_native_work():
    scope = {}
    exec(NET.format(depth=40, n=_points_for(0.5, 40)), scope)
    net, x = scope["net"], scope["x"]
    ticks = python_ticks_during(lambda: net.kernel(x, get="nngp"))
    # With the GIL held for the whole call, this thread could not run at all until it ended.
    assert ticks > 20, f"the main thread ran only {ticks} times during the native call"
