"""Benchmark of the CNN kernels (issue 11): fastntk vs Neural Tangents, side by side in one run.

    python bench/bench_cnn.py [--quick] [--sections a,b] [--json FILE]
                              [--nt-python /work/venvs/nt/bin/python]
    python bench/bench_cnn.py --device cuda [--quick] [--json FILE]

The network: depth 8 x [Conv(32, (3, 3), padding='SAME', W_std=sqrt(2), b_std=0.1), Relu],
then the readout and Dense(1, W_std=1, b_std=0.1), NTK parameterization; inputs CIFAR-shaped
random images (N, 32, 32, 3), standard normal, seed 0; x2=None; NNGP and NTK; float64 on both
sides (Neural Tangents with jax_enable_x64).
  (a) readout Flatten, N = 1000 (--quick: 200): the diagonal regime;
  (b) readout GlobalAvgPool, N = 64 (--quick: 16): the full (HW)^2 covariance regime.

Pairs per second count the N (N + 1) / 2 distinct pairs of the symmetric N x N kernel, for both
libraries (what x2=None delivers; Neural Tangents computes all N^2 pairs to deliver them).

Each measurement runs in a fresh interpreter (bench/_cnn_worker.py) that reports its wall time
and its peak resident memory (VmHWM, the whole process, nothing subtracted); an idle process
with the same imports and inputs gives each side's baseline, so the increments are visible.
fastntk computes all N images once. Neural Tangents runs in its own venv (--nt-python; skipped
with a message where it is absent) through ``nt.batch(kernel_fn, batch_size=B,
store_on_device=False)``, its maintainers' advice for image kernels, with B its fastest batch
that fits this machine's memory (GAP: 16, 15.3 GiB peak, 1.58 pairs/s; 8 peaks at 4.4 GiB and
gives 1.43 pairs/s; 32 would need ~4x 16's memory; Flatten: 250, ~4.5 GiB, as fast per pair as
100). Where all N would take Neural Tangents more than a few minutes it
computes the first M images only (M a multiple of B; --nt-images-a/--nt-images-b): it then
computes (M/B)^2 blocks of B x B pairs, each at the same cost, so its time for all N is
extrapolated as t_M (N/M)^2 (the table says so) and its rate is N (N + 1) / 2 over that time.
The rate is what is compared. Both sides' kernels on the first M images are compared (largest
absolute difference over the largest entry, NNGP and NTK; also over the pairs of distinct images
alone, since Neural Tangents' NTK of an image with itself is off by ~sqrt(machine epsilon)).
The NT batch and image counts are options (--nt-batch-a/-b, --nt-images-a/-b). The machine's
load (1-minute average, CPU pressure) is recorded before each side's measurement.
Timings measured on this 2-CPU machine while it was shared: expect a full run of ~25 minutes.

With --device cuda (fastntk only; run by bench/gpu/check.sh): (b) at N = 1024 (--quick: 128) in
float32 and float64 on CuPy arrays, one warm-up call on 32 images first, each timed once with the
device synchronized; the GPU's kernel on the first 8 images against the CPU's (float64); and the
hours the full CIFAR-10 CNTK-GAP kernel of this depth would take on that GPU:
60,000 x 60,001 / 2 pairs over the measured pairs per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fastntk as fnt

from _common import ROOT, machine, markdown_table, write_json

WORKER = ROOT / "bench" / "_cnn_worker.py"
ARCH = dict(depth=8, channels=32, W_std=2**0.5, b_std=0.1, readout_W_std=1.0, readout_b_std=0.1)
IMAGE = (32, 32, 3)
SEED = 0
CIFAR10 = 60_000

# section: (readout, N, NT batch, NT images) for the full run and for --quick.
SECTIONS = {
    "a": dict(readout="flatten", full=(1000, 250, 500), quick=(200, 100, 100)),
    "b": dict(readout="gap", full=(64, 16, 16), quick=(16, 4, 4)),
}


def images(n: int, seed: int = SEED) -> np.ndarray:
    """CIFAR-shaped random inputs, NHWC float64, standard normal."""
    return np.random.default_rng(seed).standard_normal((n,) + IMAGE)


def worker(python: str, spec: dict, tmp: Path, timeout: float | None = None) -> dict:
    """One measurement in a fresh interpreter; its JSON line."""
    path = tmp / f"spec_{spec['side']}_{spec['mode']}_{spec['readout']}.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [python, str(WORKER), str(path)], capture_output=True, text=True, cwd=tmp, env=env, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{spec['side']} {spec['mode']} worker failed (exit {out.returncode}):\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def nt_available(python: str | None) -> str | None:
    """None where Neural Tangents can be run with `python`, otherwise why not."""
    if not python:
        return "no --nt-python given"
    if not Path(python).exists():
        return f"--nt-python {python} does not exist"
    probe = subprocess.run(
        [python, "-c", "import neural_tangents, jax; print(neural_tangents.__version__, jax.__version__)"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"neural_tangents does not import with {python}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def machine_load() -> dict:
    """The 1-minute load average and the share of the last 10 s in which runnable tasks waited
    for a CPU (Linux PSI 'some avg10', %): how much other work shared the machine."""
    load = {"loadavg_1min": os.getloadavg()[0]}
    try:
        with open("/proc/pressure/cpu") as f:
            load["cpu_pressure_avg10"] = float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return load


def max_rel(a: np.ndarray, b: np.ndarray, offdiag: bool = False) -> float:
    """Largest entrywise difference of a and b, relative to b's largest entry; offdiag: over the
    pairs of distinct images only. (Neural Tangents' ReLU NTK of an image with itself carries an
    error of ~sqrt(machine epsilon): its angle at correlation 1 is arctan2(sqrt(q q - c c), c),
    and the rounding of q q - c c leaves ~1e-8 under the root; fastntk's self pairs are exact, so
    the two differ by ~5e-9 there, and to round-off elsewhere.)"""
    d = np.abs(a - b)
    if offdiag:
        if d.shape[0] < 2:
            return float("nan")
        d = d[~np.eye(d.shape[0], dtype=bool)]
    return float(np.max(d) / np.max(np.abs(b)))


def run_section(name: str, quick: bool, nt_python: str | None, nt_skip: str | None, nt_batch, nt_images, tmp):
    cfg = SECTIONS[name]
    n, batch, m = cfg["quick" if quick else "full"]
    batch = nt_batch or batch
    m = min(nt_images or m, n)
    if m % batch or n % batch:
        raise SystemExit(
            f"section {name}: N={n} and the NT images M={m} must be multiples of the NT batch {batch}"
        )
    inputs = tmp / f"x_{name}.npy"
    np.save(inputs, images(n))
    base = dict(ARCH, readout=cfg["readout"], inputs=str(inputs), n=n, nt_batch=batch, keep=m)
    pairs = n * (n + 1) // 2
    row = dict(section=name, readout=cfg["readout"], N=n, pairs=pairs, pairs_counted="N(N+1)/2")

    print(f"({name}) {cfg['readout']}, N={n}: fastntk ...", flush=True)
    row["load_before_fastntk"] = machine_load()
    idle = worker(sys.executable, dict(base, side="fastntk", mode="idle"), tmp)
    ours = worker(sys.executable, dict(base, side="fastntk", mode="run", save=str(tmp / "fastntk.npz")), tmp)
    row.update(
        fastntk_s=ours["seconds"], fastntk_pairs_per_s=pairs / ours["seconds"],
        fastntk_peak_rss=ours["peak_rss_bytes"], fastntk_idle_rss=idle["rss_bytes"],
        fastntk_threads=ours["facts"]["threads"], fastntk_finite=ours["finite"],
    )  # fmt: skip
    print(f"    {ours['seconds']:.2f} s, {row['fastntk_pairs_per_s']:.1f} pairs/s, peak RSS "
          f"{_mib(ours['peak_rss_bytes'])} (idle {_mib(idle['rss_bytes'])})", flush=True)  # fmt: skip
    if nt_skip:
        row["nt_skipped"] = nt_skip
        return row

    print(f"({name}) Neural Tangents on the first {m} images, nt.batch(batch_size={batch}): "
          f"{(m // batch) ** 2} block(s) + 1 warm-up block ...", flush=True)  # fmt: skip
    row["load_before_nt"] = machine_load()
    nt_idle = worker(nt_python, dict(base, side="nt", mode="idle", n=m), tmp)
    theirs = worker(nt_python, dict(base, side="nt", mode="run", n=m, save=str(tmp / "nt.npz")), tmp)
    t_full = theirs["seconds"] * (n / m) ** 2  # (N/B)^2 blocks instead of (M/B)^2, each the same cost
    a, b = np.load(tmp / "fastntk.npz"), np.load(tmp / "nt.npz")
    row.update(
        nt_images=m, nt_batch=batch, nt_blocks=theirs["facts"]["blocks"], nt_measured_s=theirs["seconds"],
        nt_s_per_block=theirs["seconds"] / theirs["facts"]["blocks"], nt_first_block_s=theirs["facts"]["first_block_s"],
        nt_full_s=t_full, nt_full_extrapolated=m < n, nt_pairs_per_s=pairs / t_full,
        nt_peak_rss=theirs["peak_rss_bytes"], nt_idle_rss=nt_idle["rss_bytes"], nt_finite=theirs["finite"],
        nt_versions=dict(neural_tangents=theirs["facts"]["version"], jax=theirs["facts"]["jax"]),
        speedup=(pairs / ours["seconds"]) / (pairs / t_full),
        peak_ratio=ours["peak_rss_bytes"] / theirs["peak_rss_bytes"],
        increment_ratio=(ours["peak_rss_bytes"] - idle["rss_bytes"]) / (theirs["peak_rss_bytes"] - nt_idle["rss_bytes"]),
        nngp_max_rel_diff=max_rel(a["nngp"], b["nngp"]), ntk_max_rel_diff=max_rel(a["ntk"], b["ntk"]),
        nngp_offdiag_max_rel_diff=max_rel(a["nngp"], b["nngp"], offdiag=True),
        ntk_offdiag_max_rel_diff=max_rel(a["ntk"], b["ntk"], offdiag=True),
    )  # fmt: skip
    print(f"    {theirs['seconds']:.1f} s for {m} images ({row['nt_s_per_block']:.1f} s/block; first block with "
          f"compile {row['nt_first_block_s']:.1f} s), {row['nt_pairs_per_s']:.2f} pairs/s, peak RSS "
          f"{_mib(theirs['peak_rss_bytes'])} (idle {_mib(nt_idle['rss_bytes'])}); max rel diff nngp "
          f"{row['nngp_max_rel_diff']:.1e} ntk {row['ntk_max_rel_diff']:.1e} (off-diagonal "
          f"{row['nngp_offdiag_max_rel_diff']:.1e} / {row['ntk_offdiag_max_rel_diff']:.1e})", flush=True)  # fmt: skip
    return row


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:.0f} MiB"


def table(rows) -> str:
    headers = ["", "readout", "N", "fastntk s", "NT s", "fastntk pairs/s", "NT pairs/s", "speed ratio",
               "fastntk peak RSS (idle)", "NT peak RSS (idle)", "peak ratio", "increment ratio",
               "max rel diff nngp / ntk (off-diagonal)"]  # fmt: skip
    body = []
    for r in rows:
        if "nt_skipped" in r:
            body.append([r["section"], r["readout"], r["N"], f"{r['fastntk_s']:.2f}", "skipped",
                         f"{r['fastntk_pairs_per_s']:.1f}", "-", "-",
                         f"{_mib(r['fastntk_peak_rss'])} ({_mib(r['fastntk_idle_rss'])})", "-", "-", "-", "-"])  # fmt: skip
            continue
        nt_s = f"{r['nt_full_s']:.0f}"
        if r["nt_full_extrapolated"]:
            nt_s += (f" (extrapolated from {r['nt_measured_s']:.0f} s on {r['nt_images']} images: "
                     f"{r['nt_blocks']} block(s) of {r['nt_batch']}x{r['nt_batch']})")  # fmt: skip
        else:
            nt_s += f" ({r['nt_blocks']} block(s) of {r['nt_batch']}x{r['nt_batch']})"
        body.append([
            r["section"], r["readout"], r["N"], f"{r['fastntk_s']:.2f}", nt_s, f"{r['fastntk_pairs_per_s']:.1f}",
            f"{r['nt_pairs_per_s']:.2f}", f"{r['speedup']:.1f}x",
            f"{_mib(r['fastntk_peak_rss'])} ({_mib(r['fastntk_idle_rss'])})",
            f"{_mib(r['nt_peak_rss'])} ({_mib(r['nt_idle_rss'])})", f"{r['peak_ratio']:.1%}",
            f"{r['increment_ratio']:.1%}", f"{r['nngp_max_rel_diff']:.1e} / {r['ntk_max_rel_diff']:.1e} "
            f"({r['nngp_offdiag_max_rel_diff']:.1e} / {r['ntk_offdiag_max_rel_diff']:.1e})",
        ])  # fmt: skip
    return markdown_table(headers, body)


def run_cuda(n: int):
    """Section (b) on the GPU: float32 and float64, CuPy arrays in and out."""
    import cupy as cp

    sys.path.insert(0, str(WORKER.parent))
    from _cnn_worker import fastntk_network

    net = fastntk_network(dict(ARCH, readout="gap"))
    x_host = images(n)
    check = 8
    cpu = net.kernel(x_host[:check], None, get=("nngp", "ntk"))  # float64 on the CPU, the agreement reference
    pairs = n * (n + 1) // 2
    rows = []
    for dtype in (np.float32, np.float64):
        x = cp.asarray(x_host, dtype=dtype)
        net.kernel(x[:32], None, get=("nngp", "ntk"))  # warm-up: modules loaded, CuPy's pool filled
        cp.cuda.get_current_stream().synchronize()
        t = time.perf_counter()
        k = net.kernel(x, None, get=("nngp", "ntk"))
        cp.cuda.get_current_stream().synchronize()
        seconds = time.perf_counter() - t
        got = [cp.asnumpy(a).reshape(n, n)[:check, :check].astype(np.float64) for a in (k.nngp, k.ntk)]
        rate = pairs / seconds
        rows.append(dict(
            readout="gap", N=n, dtype=np.dtype(dtype).name, out_dtype=str(k.ntk.dtype), seconds=seconds,
            pairs=pairs, pairs_counted="N(N+1)/2", pairs_per_s=rate,
            cifar10_pairs=CIFAR10 * (CIFAR10 + 1) // 2, cifar10_hours=CIFAR10 * (CIFAR10 + 1) / 2 / rate / 3600,
            nngp_max_rel_diff_vs_cpu=max_rel(got[0], np.asarray(cpu.nngp).reshape(check, check)),
            ntk_max_rel_diff_vs_cpu=max_rel(got[1], np.asarray(cpu.ntk).reshape(check, check)),
            finite=bool(cp.isfinite(k.nngp).all() and cp.isfinite(k.ntk).all()),
        ))  # fmt: skip
        r = rows[-1]
        print(f"GAP N={n} {r['dtype']}: {seconds:.2f} s, {rate:.0f} pairs/s, CIFAR-10 {r['cifar10_hours']:.1f} h; "
              f"vs CPU (first {check} images) nngp {r['nngp_max_rel_diff_vs_cpu']:.1e} "
              f"ntk {r['ntk_max_rel_diff_vs_cpu']:.1e}", flush=True)  # fmt: skip
        del x, k
        cp.get_default_memory_pool().free_all_blocks()
    return rows


def cuda_table(rows) -> str:
    headers = ["readout", "N", "dtype", "seconds", "pairs/s", "CIFAR-10 (60,000) kernel, hours",
               "max rel diff vs CPU nngp / ntk"]  # fmt: skip
    body = [[r["readout"], r["N"], r["dtype"], f"{r['seconds']:.2f}", f"{r['pairs_per_s']:.0f}",
             f"{r['cifar10_hours']:.1f}", f"{r['nngp_max_rel_diff_vs_cpu']:.1e} / {r['ntk_max_rel_diff_vs_cpu']:.1e}"]
            for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def _sections(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names or any(s not in SECTIONS for s in names):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {sorted(SECTIONS)}, got {text!r}"
        )
    return names


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    p.add_argument("--sections", type=_sections, default=["a", "b"], help="a,b (default both)")
    p.add_argument("--json", default="cnn.json", help="file name under bench/results (default cnn.json)")
    p.add_argument("--nt-python", help="the Python of a venv with neural_tangents 0.6.5 (skipped without)")
    p.add_argument("--nt-batch-a", type=_positive, help="NT's batch_size for (a) (default 250; --quick 100)")
    p.add_argument("--nt-batch-b", type=_positive, help="NT's batch_size for (b) (default 16; --quick 4)")
    p.add_argument(
        "--nt-images-a", type=_positive, help="images NT computes for (a) (default 500; --quick 100)"
    )
    p.add_argument("--nt-images-b", type=_positive, help="images NT computes for (b) (default 16; --quick 4)")
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the GPU rows of (b) instead"
    )
    args = p.parse_args(argv)
    info = {"machine": machine(), "build": fnt.build_info(), "threads": fnt.get_num_threads(), "arch": ARCH,
            "image": IMAGE, "seed": SEED}  # fmt: skip

    if args.device == "cuda":
        if not fnt.has_cuda():
            sys.exit(f"--device cuda: no CUDA backend or device ({fnt.build_info().get('cuda_note', '')})")
        try:
            rows = run_cuda(128 if args.quick else 1024)
        except NotImplementedError as e:  # the GPU driver of the spatial kernels is not in this build
            sys.exit(f"--device cuda: {e}")
        print()
        print(f"fastntk {fnt.__version__} on {', '.join(info['build'].get('cuda_devices', []))}; depth-{ARCH['depth']} "
              "ReLU CNN, 3x3 SAME, GlobalAvgPool + Dense(1), nngp+ntk, x2=None; pairs = N(N+1)/2")  # fmt: skip
        print(cuda_table(rows))
        name = "gpu_cnn.json" if args.json == "cnn.json" else args.json
        print(f"\nJSON: {write_json(name, {'info': info, 'rows': rows})}")
        return

    nt_skip = nt_available(args.nt_python)
    if nt_skip:
        print(f"Neural Tangents skipped: {nt_skip}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_cnn_") as tmp:
        for name in args.sections:
            batch = args.nt_batch_a if name == "a" else args.nt_batch_b
            count = args.nt_images_a if name == "a" else args.nt_images_b
            rows.append(run_section(name, args.quick, args.nt_python, nt_skip, batch, count, Path(tmp)))
    print()
    print(f"fastntk {fnt.__version__} ({info['threads']} threads) vs Neural Tangents "
          f"{rows[0].get('nt_versions', {}).get('neural_tangents', '-')} (JAX on the CPU) on "
          f"{info['machine'].get('cpu', '?')} ({info['machine']['cpus']} CPUs); depth-{ARCH['depth']} ReLU CNN, "
          f"Conv(3x3, SAME, W_std=sqrt(2), b_std={ARCH['b_std']}), readout + Dense(1), 32x32x3 inputs, float64, "
          "nngp+ntk, x2=None. Pairs counted: N(N+1)/2 for both. Peak RSS: the whole fresh process (idle: same "
          "imports and inputs, no kernel); ratios fastntk / NT.")  # fmt: skip
    print(table(rows))
    loads = {r["section"]: {k: v for k, v in r.items() if k.startswith("load_before")} for r in rows}
    print(f"\nMachine load before each side's measurement: {loads}")
    print(f"\nJSON: {write_json(args.json, {'info': info, 'rows': rows})}")


if __name__ == "__main__":
    main()
