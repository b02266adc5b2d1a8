#!/usr/bin/env bash
# The one prepared device check: build offline with CUDA, run the GPU tests and the
# benchmarks, in well under 5 minutes on the lent machine (an H200 with the
# workplace's CUDA image: nvcc, CuPy, NumPy, pybind11, scikit-build-core, CMake).
#
# The device has no network. The one build/run dependency its image lacks,
# scipy-openblas32, travels as a wheel. Prepare once, here, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     -d .whl scipy-openblas32==0.3.34.481.3
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl scikit-ntk==1.2.1   # optional
# then run it through the device tool with carry [".whl"]:
#   bash bench/gpu/check.sh
# Results land in $OUT (log, benchmark JSON).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/fastntk-gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
nvcc --version | tail -2

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# Offline build: no isolation (the image has the build tools), CUDA when sources exist.
time python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/site \
  -Ccmake.define.FASTNTK_CUDA=AUTO -Cbuild-dir=/tmp/fastntk-build .
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import fastntk, json; print(json.dumps(fastntk.build_info(), indent=1))"

# The CuPy paths first (fastntk.predict on CuPy arrays), verbosely, so that a failure
# elsewhere cannot hide them; then the whole suite (the CuPy tests run here instead of skipping).
cd /tmp
python3 -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceCount(), 'device(s)')" || true
python3 -m pytest "$OLDPWD/tests" -q -rs -p no:cacheprovider --rootdir "$OLDPWD" -k "cupy or cuda" 2>&1 | tail -15 || true
timeout 180 python3 -m pytest "$OLDPWD/tests" -q -p no:cacheprovider --rootdir "$OLDPWD" 2>&1 | tail -25 || true
cd "$OLDPWD"

# Benchmarks (the NumPy reference is skipped: it measures nothing about the GPU).
python3 bench/bench_kernels.py --no-reference --json gpu-machine-kernels.json
cp bench/results/gpu-machine-kernels.json "$OUT/" || true

# fastntk.predict on CuPy vs NumPy arrays (cuSOLVER vs LAPACK), same call, one run.
python3 bench/gpu/bench_predict_cupy.py --n 8000 2>&1 | tee "$OUT/predict_cupy.md"
