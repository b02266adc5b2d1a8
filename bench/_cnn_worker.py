"""One measurement of bench_cnn.py in a fresh interpreter: fastntk's or Neural Tangents' kernel
of the benchmark CNN (or an idle process with the same imports and inputs), its wall time and
its peak resident memory.

    python _cnn_worker.py SPEC.json

Run with fastntk's Python for side 'fastntk' and with Neural Tangents' Python (its own venv)
for side 'nt': this file imports neither package at the top and nothing else from bench/, so it
runs under both. SPEC holds: side, mode ('idle' | 'run'), readout ('flatten' | 'gap'), depth,
channels, W_std, b_std, readout_W_std, readout_b_std, inputs (a .npy of NHWC images, float64),
n (the first n images are used), nt_batch (Neural Tangents' batch_size), keep (the leading
keep x keep block of each kernel is saved to `save`, a .npz, for the agreement check).
Prints one JSON line: seconds, peak_rss_bytes (VmHWM: the whole process, nothing subtracted),
rss_bytes (VmRSS when it ends), and side-specific facts.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _layers(api, spec):
    """The benchmark's CNN from ``api``: the module fastntk or neural_tangents.stax (the same
    layer names and arguments)."""
    layers = []
    for _ in range(spec["depth"]):
        layers += [
            api.Conv(spec["channels"], (3, 3), padding="SAME", W_std=spec["W_std"], b_std=spec["b_std"]),
            api.Relu(),
        ]
    layers += [api.Flatten() if spec["readout"] == "flatten" else api.GlobalAvgPool()]
    layers += [api.Dense(1, W_std=spec["readout_W_std"], b_std=spec["readout_b_std"])]
    return layers


def fastntk_network(spec):
    import fastntk as fnt

    return fnt.serial(*_layers(fnt, spec))


def nt_kernel_fn(spec):
    from neural_tangents import stax

    return stax.serial(*_layers(stax, spec))[2]


def run_fastntk(spec, x):
    import fastntk as fnt

    facts = {"threads": fnt.get_num_threads(), "version": fnt.__version__}
    net = fastntk_network(spec)
    if spec["mode"] == "idle":
        return None, None, facts
    t = time.perf_counter()
    k = net.kernel(x, None, get=("nngp", "ntk"))
    seconds = time.perf_counter() - t
    return seconds, (np.asarray(k.nngp), np.asarray(k.ntk)), facts


def run_nt(spec, x):
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt

    facts = {"version": nt.__version__, "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    kernel_fn = nt_kernel_fn(spec)
    if spec["mode"] == "idle":
        return None, None, facts
    b = spec["nt_batch"]
    # nt.batch as NT's maintainers advise for image kernels: batch_size x batch_size blocks of
    # pairs, one after the other (it computes all n^2 pairs, both triangles), results brought
    # back to host memory so that only the blocks' working memory is on the "device".
    batched = nt.batch(kernel_fn, batch_size=b, store_on_device=False)
    # Warm-up on one block: JAX compiles the block's program on its first call (blocks all have
    # the same shape, so the timed call below reuses it); this costs one block's compute too.
    t = time.perf_counter()
    jax.block_until_ready(batched(x[:b], None, ("nngp", "ntk")))
    facts["first_block_s"] = time.perf_counter() - t
    t = time.perf_counter()
    k = batched(x, None, ("nngp", "ntk"))
    jax.block_until_ready(k)
    seconds = time.perf_counter() - t
    facts["blocks"] = (x.shape[0] // b) ** 2
    return seconds, (np.asarray(k.nngp), np.asarray(k.ntk)), facts


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    x = np.load(spec["inputs"])[: spec["n"]]
    seconds, kernels, facts = (run_fastntk if spec["side"] == "fastntk" else run_nt)(spec, x)
    result = dict(
        seconds=seconds,
        peak_rss_bytes=_status_bytes("VmHWM"),
        rss_bytes=_status_bytes("VmRSS"),
        facts=facts,
    )
    if kernels is not None:
        nngp, ntk = (np.asarray(a, dtype=np.float64).reshape(x.shape[0], x.shape[0]) for a in kernels)
        m = spec["keep"]
        np.savez(spec["save"], nngp=nngp[:m, :m], ntk=ntk[:m, :m])
        result["finite"] = bool(np.isfinite(nngp).all() and np.isfinite(ntk).all())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
