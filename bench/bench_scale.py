"""Benchmarks of fastntk at scale (issue "Scale"), by section:

    python bench/bench_scale.py [--section memmap] [--quick] [--n 60000] [--dir DIR] [--json FILE]

memmap: the MNIST-sized kernel that runs out of memory elsewhere: x2=None, N=60,000, d=784,
  a depth-3 ReLU MLP's NTK (float64) written by ``net.kernel(x, get='ntk', out=DIR/store)``
  into a resumable store (a 28.8 GB .npy memmap) with the default ``memory_limit`` (1 GiB).
  Three runs, each in a fresh interpreter that samples its own ``RssAnon`` (anonymous
  resident memory; the memmap's page cache is file-backed and does not count) every 20 ms:
    1. uninterrupted: wall time and peak RssAnon;
    2. the same call, killed with SIGKILL once half of the blocks are recorded;
    3. the same call again: it resumes, computing only the blocks without a record (wall
       time, blocks computed, peak RssAnon), and its result is checked bit for bit against
       run 1 on row strips from both halves (the whole 28.8 GB is not kept twice).
  The store is deleted at the end (the disk must have room for one store; the script
  refuses to start otherwise). ``--quick`` (N=4000, 36 blocks) is a smoke test of a few seconds. The
  60k case takes ~30 minutes on 2 heavily loaded cores (three runs); see the targets below.

The JSON goes to bench/results/scale.json under the section's key (other sections kept).
Targets (issue): under 5 minutes and peak anonymous memory under 2 GB for the 60k kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine, markdown_table, write_json

JSON_NAME = "scale.json"

# The child computing the kernel: samples its own RssAnon while it works, prints a JSON line.
_CHILD = r"""
import hashlib, json, sys, threading, time
import numpy as np
import fastntk as nt

n, d, path, limit = {n}, {d}, {path!r}, {limit!r}

def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0

peak = [rss_anon()]
stop = threading.Event()

def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.02)

x = np.random.default_rng(0).standard_normal((n, d))  # the same bytes in every run
net = nt.mlp("relu", depth=3)
before = rss_anon()
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
k = net.kernel(x, get="ntk", out=path, memory_limit=limit, progress=False)
wall = time.perf_counter() - t
stop.set()
peak[0] = max(peak[0], rss_anon())
strips = {{}}
for i0 in (0, n // 4, n // 2 + 1, n - 64):  # rows from the first and the second half
    strips[i0] = hashlib.blake2b(np.ascontiguousarray(k[i0 : i0 + 64]).tobytes()).hexdigest()
print(json.dumps(dict(wall_s=wall, peak_rss_anon=peak[0], rss_anon_before=before, inputs_bytes=x.nbytes, strips=strips)))
"""


def _child(n, d, path, limit):
    return [sys.executable, "-c", _CHILD.format(n=n, d=d, path=str(path), limit=limit)]


def _blocks(store: Path) -> int:
    done = store / "done"
    return sum(1 for _ in done.iterdir()) if done.exists() else 0


def _total_blocks(n: int, limit) -> int:
    from fastntk import _store

    # One kernel: two block buffers (one computed while the other is written).
    return len(_store.make_plan(n, n, True, 2, _store.parse_memory_limit(limit)).blocks())


def memmap(args) -> dict:
    n, d = args.n, args.d
    need = 8 * n * n
    work = Path(tempfile.mkdtemp(prefix="fastntk-bench-scale-", dir=args.dir))
    store = work / "store"
    try:
        free = shutil.disk_usage(work).free
        if free < need * 1.05:
            raise SystemExit(
                f"bench_scale memmap: needs {need / 1e9:.1f} GB free in {work}, has {free / 1e9:.1f}"
            )
        total = _total_blocks(n, args.memory_limit)
        print(
            f"memmap: N={n}, d={d}, NTK of a depth-3 ReLU MLP, {need / 1e9:.1f} GB, {total} blocks",
            flush=True,
        )

        # 1. Uninterrupted.
        full = json.loads(
            subprocess.run(
                _child(n, d, store, args.memory_limit), check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        print(
            f"  uninterrupted: {full['wall_s']:.1f} s, peak RssAnon {full['peak_rss_anon'] / 2**30:.2f} GiB",
            flush=True,
        )
        shutil.rmtree(store)

        # 2. Killed with SIGKILL once half of the blocks are recorded.
        t = time.perf_counter()
        child = subprocess.Popen(_child(n, d, store, args.memory_limit), stdout=subprocess.DEVNULL)
        while _blocks(store) < total // 2 and child.poll() is None:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_after = time.perf_counter() - t
        recorded = _blocks(store)
        print(f"  killed after {killed_after:.1f} s with {recorded}/{total} blocks recorded", flush=True)

        # 3. Resumed.
        resumed = json.loads(
            subprocess.run(
                _child(n, d, store, args.memory_limit), check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        identical = resumed["strips"] == full["strips"]
        print(
            f"  resumed: {resumed['wall_s']:.1f} s for {total - recorded} blocks, peak RssAnon "
            f"{resumed['peak_rss_anon'] / 2**30:.2f} GiB; strips bit-identical to the uninterrupted run: "
            f"{identical}",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "n": n,
        "d": d,
        "network": "mlp('relu', depth=3), NTK only, x2=None",
        "bytes_on_disk": need,
        "memory_limit": args.memory_limit or "default (1 GiB)",
        "blocks": total,
        "uninterrupted_s": full["wall_s"],
        "uninterrupted_peak_rss_anon": full["peak_rss_anon"],
        "inputs_bytes": full["inputs_bytes"],
        "killed_after_s": killed_after,
        "blocks_recorded_at_kill": recorded,
        "resumed_s": resumed["wall_s"],
        "resumed_blocks_computed": total - recorded,
        "resumed_peak_rss_anon": resumed["peak_rss_anon"],
        "resumed_bit_identical_strips": identical,
        "targets": {"wall_s": 300, "peak_rss_anon": 2 * 10**9},
        "load_average_at_end": os.getloadavg(),  # the machine's other work: timings scale with it
    }


def memmap_table(r: dict) -> str:
    gib = 2**30
    return markdown_table(
        ["run", "wall s", "blocks computed", "peak RssAnon"],
        [
            [
                "uninterrupted",
                f"{r['uninterrupted_s']:.1f}",
                r["blocks"],
                f"{r['uninterrupted_peak_rss_anon'] / gib:.2f} GiB",
            ],
            ["killed (SIGKILL) at half", f"{r['killed_after_s']:.1f}", r["blocks_recorded_at_kill"], ""],
            [
                "resumed",
                f"{r['resumed_s']:.1f}",
                r["resumed_blocks_computed"],
                f"{r['resumed_peak_rss_anon'] / gib:.2f} GiB",
            ],
        ],
    )


# name -> (run(args) -> dict, table(dict) -> str)
SECTIONS = {"memmap": (memmap, memmap_table)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--section", action="append", choices=sorted(SECTIONS), help="sections to run (default: all)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test of a few seconds (memmap: N=4000, memory_limit 8MiB); no JSON unless --json",
    )
    p.add_argument("--n", type=int, default=None, help="memmap: the number of points (default 60000)")
    p.add_argument("--d", type=int, default=784, help="memmap: the input dimension (default 784)")
    p.add_argument("--memory-limit", default=None, help="memmap: net.kernel's memory_limit (default: 1 GiB)")
    p.add_argument(
        "--dir", default=None, help="memmap: where the store goes (default: the temporary directory)"
    )
    p.add_argument("--json", default=None, help=f"file in bench/results (default {JSON_NAME})")
    args = p.parse_args()
    if args.n is None:
        args.n = 4000 if args.quick else 60000
    if args.quick and args.memory_limit is None:
        args.memory_limit = "8MiB"  # blocks of 512: enough of them to kill the run halfway
    json_name = args.json or (None if args.quick else JSON_NAME)
    path = RESULTS / (json_name or JSON_NAME)
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload["machine"] = machine()
    for name in args.section or sorted(SECTIONS):
        run, table = SECTIONS[name]
        result = run(args)
        payload[name] = result
        print(table(result))
    if json_name:
        print(f"\nJSON: {write_json(json_name, payload)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
