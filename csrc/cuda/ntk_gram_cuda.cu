// fastntk: CUDA kernels and launchers of the analytic Gram (see ntk_gram_cuda.hpp).
//
// One thread per output entry: it reads the entry's inner product from the tile buffer the
// GEMM wrote, runs every op of the program on the pair in registers (pair walk of
// walk_impl.hpp, the code the CPU tests run) and writes only the requested outputs. The walk
// runs in float64 whatever the storage type; float32 storage rounds the GEMM's inputs and the
// outputs only. Threads of a block take consecutive columns of one row, so reads and writes
// are coalesced.
#include "ntk_gram_cuda.hpp"

#include <cuda_runtime.h>

#include "cuda_check.cuh"

#include <string>

#include "fastntk/activations.hpp"
#include "fastntk/dual.hpp"
#include "fastntk/op.hpp"
#include "fastntk/walk_impl.hpp"

namespace fastntk {
namespace cuda {
namespace {

using detail::as_stream;

// ---- The per-point pass.

template <class T>
__global__ void point_kernel(ProgramView prog, const double* seeds, const double* q0, T* table, long long n,
                             const int* capture, int capture_end, T* q_cap, T* t_cap, int* stopped) {
  const long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  stopped[i] = point_walk<T>(prog, seeds, q0[i], table, n, i, capture, capture_end, q_cap, t_cap);
}

template <class T>
void launch_point(const PointPass& a, cudaStream_t stream) {
  const int block = 128;
  const long long grid = (a.n + block - 1) / block;
  point_kernel<T><<<static_cast<unsigned>(grid), block, 0, stream>>>(
      a.prog, a.seeds, a.q0, static_cast<T*>(a.table), a.n, a.capture, a.capture_end, static_cast<T*>(a.q_cap),
      static_cast<T*>(a.t_cap), a.stopped);
  FASTNTK_CUDA_CHECK_LAUNCH("point_kernel launch");
}

// ---- The pair walk with outputs.

// Where a pair's results go: for capture c and plane p, out[(c * planes + p) * stride + at].
template <class S>
struct Outputs {
  S* nngp;
  S* ntk;
  long long at, stride;
  int* not_finite;

  template <class T>
  __device__ __forceinline__ void store(int c, const T& s, const T& t) const {
    constexpr int P = DualSize<T>::value;
    bool finite = true;
    for (int p = 0; p <= P; ++p) {
      const long long k = (static_cast<long long>(c) * (P + 1) + p) * stride + at;
      if (nngp) {
        const S v = static_cast<S>(p == 0 ? value(s) : tangent(s, p - 1));
        nngp[k] = v;
        finite = finite && isfinite(v);
      }
      if (ntk) {
        const S v = static_cast<S>(p == 0 ? value(t) : tangent(t, p - 1));
        ntk[k] = v;
        finite = finite && isfinite(v);
      }
    }
    if (!finite) *not_finite = 1;  // a benign race: every writer writes 1
  }
};

// The pair walk (PairVisitor) writing its kernels after the captured ops.
template <bool Ntk, class T, class S>
struct CaptureVisitor : PairVisitor<Ntk, T> {
  const int* capture;
  const Outputs<S>* out;
  __device__ __forceinline__ void after_op(int k) {
    if (capture && capture[k] >= 0) out->store(capture[k], this->s, this->t);
  }
};

template <bool Ntk, class T, class S>
__global__ void gram_kernel(ProgramView prog, const double* seeds, const S* s_tile, long long ld_s, double scale,
                            PointTablesT<T> t1, PointTablesT<T> t2, long long i0, long long j0, long long cols,
                            bool upper, Outputs<S> out, long long ld_out, const int* capture, int capture_end) {
  const long long r = blockIdx.y;
  const long long c = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const long long i = i0 + r, j = j0 + c;
  if (upper && j <= i) return;
  out.at = r * ld_out + c;
  CaptureVisitor<Ntk, T, S> v{
      {prog.coef, seeds, &t1, i, &t2, j, T(scale * static_cast<double>(s_tile[r * ld_s + c])), T(0.0)}, capture, &out};
  walk(prog, v);
  if (capture_end >= 0) out.store(capture_end, v.s, v.t);
}

template <bool Ntk, class T, class S>
void launch_gram(const GramTile& a, cudaStream_t stream) {
  const int block = 128;
  const long long gx = (a.cols + block - 1) / block;
  if (a.rows > 65535) throw std::invalid_argument("gram_tile_cuda: at most 65535 rows per tile");
  if (gx > 0x7fffffffLL) throw std::invalid_argument("gram_tile_cuda: too many columns in one tile");
  const PointTablesT<T> t1{static_cast<const T*>(a.table1), a.n1};
  const PointTablesT<T> t2{static_cast<const T*>(a.table2), a.n2};
  const Outputs<S> out{static_cast<S*>(a.nngp), static_cast<S*>(a.ntk), 0, a.plane_stride, a.not_finite};
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(a.rows));
  gram_kernel<Ntk, T, S><<<grid, block, 0, stream>>>(a.prog, a.seeds, static_cast<const S*>(a.s), a.ld_s, a.scale, t1,
                                                     t2, a.i0, a.j0, a.cols, a.upper, out, a.ld_out, a.capture,
                                                     a.capture_end);
  FASTNTK_CUDA_CHECK_LAUNCH("gram_kernel launch");
}

template <class T, class S>
void dispatch_ntk(const GramTile& a, cudaStream_t stream) {
  if (a.ntk)
    launch_gram<true, T, S>(a, stream);
  else
    launch_gram<false, T, S>(a, stream);
}

// ---- Mirror and row norms.

// Lower triangle from the upper one, through a 32 x 33 shared tile (the extra column keeps
// the transposed reads free of bank conflicts), so both the reads and the writes are
// coalesced. Block (bx, by) writes the destination block of rows by, columns bx (by >= bx).
template <class S>
__global__ void mirror_kernel(S* a, long long n, long long ld) {
  __shared__ S tile[32][33];
  const long long bx = blockIdx.x, by = blockIdx.y;
  if (bx > by) return;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const long long r = bx * 32 + k, c = by * 32 + threadIdx.x;
    if (r < n && c < n && c > r) tile[k][threadIdx.x] = a[r * ld + c];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const long long r = by * 32 + k, c = bx * 32 + threadIdx.x;
    if (r < n && c < n && c < r) a[r * ld + c] = tile[threadIdx.x][k];
  }
}

// One warp per row; the sum of squares in float64 whatever the storage.
template <class S>
__global__ void row_norms_kernel(const S* x, long long n, long long d, long long ld, double scale, double* q0) {
  const long long row = (blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  double acc = 0.0;
  for (long long k = lane; k < d; k += 32) {
    const double v = static_cast<double>(x[row * ld + k]);
    acc = fma(v, v, acc);
  }
  for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffffu, acc, off);
  if (lane == 0) q0[row] = acc * scale;
}

}  // namespace

void point_pass_cuda(const PointPass& a, std::uintptr_t stream) {
  if (a.n < 0) throw std::invalid_argument("point_pass_cuda: negative number of points");
  if (a.n_directions < 0 || a.n_directions > kMaxDirections)
    throw std::invalid_argument("point_pass_cuda: n_directions must be in [0, 3]");
  if (a.n == 0) return;
  const cudaStream_t s = as_stream(stream);
  switch (a.n_directions) {
    case 0:
      return launch_point<double>(a, s);
    case 1:
      return launch_point<Dual<1>>(a, s);
    case 2:
      return launch_point<Dual<2>>(a, s);
    default:
      return launch_point<Dual<3>>(a, s);
  }
}

void gram_tile_cuda(const GramTile& a, std::uintptr_t stream) {
  if (a.rows < 0 || a.cols < 0) throw std::invalid_argument("gram_tile_cuda: negative tile size");
  if (!a.nngp && !a.ntk) throw std::invalid_argument("gram_tile_cuda: neither nngp nor ntk requested");
  if (a.n_directions < 0 || a.n_directions > kMaxDirections)
    throw std::invalid_argument("gram_tile_cuda: n_directions must be in [0, 3]");
  if (a.n_directions > 0 && a.storage != Storage::Float64)
    throw std::invalid_argument("gram_tile_cuda: derivatives are computed in float64 only");
  if (a.rows == 0 || a.cols == 0) return;
  const cudaStream_t s = as_stream(stream);
  if (a.storage == Storage::Float32) return dispatch_ntk<double, float>(a, s);
  switch (a.n_directions) {
    case 0:
      return dispatch_ntk<double, double>(a, s);
    case 1:
      return dispatch_ntk<Dual<1>, double>(a, s);
    case 2:
      return dispatch_ntk<Dual<2>, double>(a, s);
    default:
      return dispatch_ntk<Dual<3>, double>(a, s);
  }
}

void mirror_cuda(void* a, Storage storage, std::int64_t n, std::int64_t ld, std::uintptr_t stream) {
  if (n < 0 || ld < n) throw std::invalid_argument("mirror_cuda: need 0 <= n <= ld");
  if (n <= 1) return;
  const long long blocks = (n + 31) / 32;
  if (blocks > 65535) throw std::invalid_argument("mirror_cuda: n too large for one launch");
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(blocks)), block(32, 8);
  if (storage == Storage::Float64)
    mirror_kernel<double><<<grid, block, 0, as_stream(stream)>>>(static_cast<double*>(a), n, ld);
  else
    mirror_kernel<float><<<grid, block, 0, as_stream(stream)>>>(static_cast<float*>(a), n, ld);
  FASTNTK_CUDA_CHECK_LAUNCH("mirror_kernel launch");
}

void row_norms_cuda(const void* x, Storage storage, std::int64_t n, std::int64_t d, std::int64_t ld, double scale,
                    double* q0, std::uintptr_t stream) {
  if (n < 0 || d < 1 || ld < d) throw std::invalid_argument("row_norms_cuda: need n >= 0, 1 <= d <= ld");
  if (n == 0) return;
  const int block = 256;  // 8 rows per block
  const long long grid = (n * 32 + block - 1) / block;
  if (storage == Storage::Float64)
    row_norms_kernel<double><<<static_cast<unsigned>(grid), block, 0, as_stream(stream)>>>(
        static_cast<const double*>(x), n, d, ld, scale, q0);
  else
    row_norms_kernel<float><<<static_cast<unsigned>(grid), block, 0, as_stream(stream)>>>(static_cast<const float*>(x),
                                                                                          n, d, ld, scale, q0);
  FASTNTK_CUDA_CHECK_LAUNCH("row_norms_kernel launch");
}

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device found";
  return n;
}

void set_device(int device) { FASTNTK_CUDA_CHECK(cudaSetDevice(device)); }

int get_device() {
  int d = 0;
  FASTNTK_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

DeviceFacts device_facts(int device) {
  cudaDeviceProp p{};
  FASTNTK_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceFacts f;
  f.name = p.name;
  f.major = p.major;
  f.minor = p.minor;
  f.multiprocessors = p.multiProcessorCount;
  f.total_memory = p.totalGlobalMem;
  return f;
}

void mem_get_info(std::size_t* free_bytes, std::size_t* total_bytes) {
  FASTNTK_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

int runtime_version() {
  int v = 0;
  FASTNTK_CUDA_CHECK(cudaRuntimeGetVersion(&v));
  return v;
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

void synchronize_stream(std::uintptr_t stream) { FASTNTK_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream))); }

}  // namespace cuda
}  // namespace fastntk
