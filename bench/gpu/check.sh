#!/usr/bin/env bash
# The one prepared device check: build offline with CUDA, run the GPU tests and the
# GPU benchmark tables, within the timeouts below (~10 minutes) on the lent machine (an H200 with the
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

# Offline build with the CUDA backend required (FASTNTK_CUDA=ON: a missing nvcc fails here
# rather than building a CPU-only module); architectures as CMakeLists.txt's default (sm_90 +
# compute_90 PTX) unless FASTNTK_CUDA_ARCHITECTURES is set.
time python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/site \
  -Ccmake.define.FASTNTK_CUDA=ON -Cbuild-dir=/tmp/fastntk-build .
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import fastntk, json; print(json.dumps(fastntk.build_info(), indent=1)); print('has_cuda', fastntk.has_cuda())"

# 1. The CUDA backend's tests first, verbosely (each GPU result against the CPU driver: the FC
#    kernels, then the CNN kernels of test_cuda_cnn.py), with the skip reasons: nothing else
#    may hide them. Their log comes back in $OUT.
cd /tmp
python3 -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceCount(), 'device(s)')" || true
set +e
timeout 210 python3 -m pytest "$OLDPWD/tests/test_cuda.py" "$OLDPWD/tests/test_cuda_dispatch.py" \
  "$OLDPWD/tests/test_cuda_cnn.py" -v -rs \
  -p no:cacheprovider --rootdir "$OLDPWD" 2>&1 | tee "$OUT/gpu_tests.log" | tail -120
# The other CuPy paths (fastntk.predict on CuPy arrays).
timeout 60 python3 -m pytest "$OLDPWD/tests" -q -rs -p no:cacheprovider --rootdir "$OLDPWD" -k "cupy" 2>&1 | tail -8
set -e
cd "$OLDPWD"

# 2. The issue's GPU table: ReLU depth 10, nngp+ntk, x2=None, N=50,000, d=3,072, float64 and
#    float32, against CuPy's x @ x.T in the same run.
timeout 150 python3 bench/bench_kernels.py --device cuda --json gpu_kernels.json 2>&1 | tee "$OUT/gpu_kernels.md" || true
cp bench/results/gpu_kernels.json "$OUT/" || true

# 2b. The issue's GPU CNN rows: depth-8 ReLU CNN, 3x3 SAME, GlobalAvgPool, N=1024, float32 and
#     float64, and the hours the full CIFAR-10 (60,000) CNTK-GAP kernel would take on this GPU.
timeout 180 python3 bench/bench_cnn.py --device cuda --json gpu_cnn.json 2>&1 | tee "$OUT/gpu_cnn.md" || true
cp bench/results/gpu_cnn.json "$OUT/" || true

# 3. What time is left: the whole suite (the CPU paths on this machine), bounded.
cd /tmp
timeout 90 python3 -m pytest "$OLDPWD/tests" -q -x -p no:cacheprovider --rootdir "$OLDPWD" 2>&1 | tail -15 || true
cd "$OLDPWD"
