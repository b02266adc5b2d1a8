// fastntk: CUDA kernels and launchers of the spatial (CNN) Gram (see spatial_gram_cuda.hpp).
//
// One block per pair: the block's threads run spatial_walk_impl.hpp's walk together through
// BlockExec, the executor below. Every thread follows the walk's scalar control flow (the op
// loop, the buffer map, the pass plans: all uniform across the block, sums broadcast to
// every thread); only the executor's loops split the entries between the threads. The walk
// runs in float64 whatever the storage type; float32 storage rounds the outputs only.
//
// The input covariance x[i, :] . y[j, :] / C is computed by the block itself into its
// workspace (not by a cuBLAS GEMM through CuPy as the FC driver's inner products are): per
// pair it is an (S x C)(C x S) product with C the image's channels (3 for RGB), so a GEMM
// would gain nothing over C fused multiply-adds per entry, and a batched one would need a
// pairs x S^2 buffer written and read back through memory, where here the S^2 entries go
// straight into the workspace the walk starts from. The self pair's entries [i, j] and
// [j, i] are the same sums of the same products in the same order: its state is exactly
// symmetric, as the CPU driver's dsyrk + mirror makes it.
#include "spatial_gram_cuda.hpp"

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.cuh"
#include "fastntk/activations.hpp"
#include "fastntk/op.hpp"
#include "fastntk/spatial_op.hpp"
#include "fastntk/spatial_walk_impl.hpp"

namespace fastntk {
namespace cuda {
namespace {

using Index = std::int64_t;
using detail::as_stream;

// Blocks per SM the kernels are compiled for (__launch_bounds__): 2, i.e. at most 128
// registers per thread. The walk is bound by memory traffic (a full-regime state is S^2
// doubles per buffer, far beyond L1/L2), so latency is hidden by warps in flight: unbounded,
// the NTK pair kernel takes 166 registers and one 8-warp block per SM; bounded, ptxas (CUDA
// 13, sm_90) spills a little (340 bytes of stores, 1 KB of loads in the code; to L1-cached
// local memory) and two blocks (16 warps) run per SM. To be confirmed by measurement.
constexpr int kSpatialMinBlocksPerSM = 2;

// The executor of spatial_walk_impl.hpp for one CUDA block (blockDim.x a power of two,
// 32 .. kSpatialMaxThreads, one dimension).
struct BlockExec {
  double* scratch;  // [32] in shared memory: one partial sum per warp

  // f(e) for e in [0, n), the threads striding over e (consecutive threads, consecutive e:
  // coalesced where f reads and writes at e).
  template <class F>
  __device__ __forceinline__ void each(Index n, F&& f) {
    for (Index e = threadIdx.x; e < n; e += blockDim.x) f(e);
  }

  // f(r)(c) for r in [0, rows), c in [0, cols): the block splits into groups of g lanes (a
  // power of two); each group takes rows r = group, group + groups, ..., does the row's work
  // f(r) once (its lanes together) and strides its lanes over c. g is 32 (a warp per row:
  // the row's work amortized over its entries, reads along c coalesced) unless a row is
  // shorter (then g covers it and a warp takes several rows) or there are too few rows to
  // give every group one (then groups widen, so that no thread idles needlessly).
  template <class F>
  __device__ __forceinline__ void each_row(Index rows, Index cols, F&& f) {
    const int threads = blockDim.x;
    int g = 1;
    while (g < 32 && g < cols) g *= 2;
    while (g < threads && threads / g > rows && g < cols) g *= 2;
    const int lane = threadIdx.x & (g - 1);
    const int groups = threads / g;
    for (Index r = threadIdx.x / g; r < rows; r += groups) {
      const auto row = f(r);
      for (Index c = lane; c < cols; c += g) row(c);
    }
  }

  // The sum of f(e) over e in [0, n), returned to every thread: per-thread partial sums, a
  // warp shuffle, one partial per warp in shared memory, then every thread adds the warps'
  // partials in the same order (so that all agree bit for bit).
  template <class F>
  __device__ __forceinline__ double sum(Index n, F&& f) {
    double acc = 0.0;
    for (Index e = threadIdx.x; e < n; e += blockDim.x) acc += f(e);
    for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x / 32] = acc;
    __syncthreads();
    double total = 0.0;
    const int warps = blockDim.x / 32;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    __syncthreads();  // every thread has read scratch before the next sum writes it
    return total;
  }

  __device__ __forceinline__ void sync() { __syncthreads(); }
};

// The block's workspace: its slice of the global one, or the dynamic shared memory.
__device__ __forceinline__ SpatialWorkspace block_workspace(const SpatialProgramView& prog, const SpatialLaunch& l,
                                                            bool ntk, double* shared) {
  const Index per = static_cast<Index>(spatial_buffers(prog.n_registers)) * prog.max_entries;
  double* base = l.shared_workspace ? shared : l.workspace + static_cast<Index>(blockIdx.x) * per * (ntk ? 2 : 1);
  return SpatialWorkspace{base, ntk ? base + per : nullptr, prog.max_entries};
}

// Register 0's input covariance of images x and y ([S, C] each) into out: x[i, :] . y[j, :] / C
// at [i, j] (full) or x[i, :] . y[i, :] / C at [i] (diagonal).
__device__ __forceinline__ void input_covariance(BlockExec& ex, const SpatialProgramView& prog, int channels,
                                                 const double* __restrict__ x, const double* __restrict__ y,
                                                 double* __restrict__ out) {
  const Index s = prog.in_shape.positions();
  const int c = channels;
  const double inv_c = 1.0 / static_cast<double>(c);
  if (!prog.full) {
    ex.each(s, [&](Index i) {
      double acc = 0.0;
      for (int k = 0; k < c; ++k) acc = fma(x[i * c + k], y[i * c + k], acc);
      out[i] = acc * inv_c;
    });
  } else {
    ex.each_row(s, s, [&](Index i) {
      const double* xi = x + i * c;
      double* row = out + i * s;
      return [=](Index j) {
        const double* yj = y + j * c;
        double acc = 0.0;
        for (int k = 0; k < c; ++k) acc = fma(xi[k], yj[k], acc);
        row[j] = acc * inv_c;
      };
    });
  }
  ex.sync();
}

// Writes v ([m] doubles, register 0's result) as S at out + at, and with mirror at
// out + mirror_at (transposed as an so x so matrix when transpose). Returns this thread's
// verdict: every value it wrote is finite (a float64 beyond float32's range is Inf as S).
template <class S>
__device__ __forceinline__ bool store_as(BlockExec& ex, S* out, Index at, const double* v, Index m, bool mirror,
                                         Index mirror_at, bool transpose, Index so) {
  bool finite = true;
  ex.each(m, [&](Index e) {
    const S value = static_cast<S>(v[e]);
    out[at + e] = value;
    if (mirror) out[mirror_at + (transpose ? (e % so) * so + e / so : e)] = value;
    finite = finite && isfinite(value);
  });
  return finite;
}

// The storage type is a run-time switch (not a kernel template): the walk, which is most of
// the code and of the compile time, is then compiled once per mode.
__device__ __forceinline__ bool store(BlockExec& ex, Storage storage, void* out, Index at, const double* v, Index m,
                                      bool mirror, Index mirror_at, bool transpose, Index so) {
  if (storage == Storage::Float32)
    return store_as(ex, static_cast<float*>(out), at, v, m, mirror, mirror_at, transpose, so);
  return store_as(ex, static_cast<double*>(out), at, v, m, mirror, mirror_at, transpose, so);
}

// Whether a Gaussian activation's kernel diverges for the point whose record this is: some
// position reaches 4 b q >= 1 before it (the CPU driver's check_point; b > 0 only).
__device__ __forceinline__ bool gaussian_diverges(BlockExec& ex, const SpatialProgramView& prog,
                                                  const double* record) {
  int bad = 0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const SpatialOp& op = prog.ops[k];
    if (op.kind != SpatialOpKind::Activation || op.activation.op.kind != OpKind::Gaussian) continue;
    const double b = op.activation.op.gaussian.b;
    const double* q = record + op.activation.stats;
    ex.each(op.activation.shape.positions(), [&](Index e) {
      if (!(1.0 - 4.0 * b * q[e] > 0.0)) bad = 1;
    });
  }
  return __syncthreads_or(bad) != 0;
}

// ---- The point pass: block b walks images b, b + gridDim.x, ...

template <bool Ntk>
__global__ void __launch_bounds__(kSpatialMaxThreads, kSpatialMinBlocksPerSM)
    spatial_points_kernel(SpatialPoints a) {
  __shared__ double scratch[32];
  extern __shared__ double shared_ws[];
  BlockExec ex{scratch};
  const SpatialProgramView& prog = a.prog;
  const SpatialWorkspace ws = block_workspace(prog, a.launch, Ntk, shared_ws);
  const Index row = prog.in_shape.positions() * a.channels;
  const Index m = prog.out_shape.entries(prog.full != 0);
  for (Index p = blockIdx.x; p < a.n; p += gridDim.x) {
    const double* img = a.x + p * row;
    double* record = a.records + p * a.record_stride;
    input_covariance(ex, prog, a.channels, img, img, ws.sigma);
    const int b = spatial_walk<Ntk, true>(ex, prog, ws, record, record, record);
    if (gaussian_diverges(ex, prog, record) && threadIdx.x == 0) a.stopped[p] = 1;
    bool finite = true;
    const Index at = p * a.ld_point;
    if (a.nngp) finite = store(ex, a.storage, a.nngp, at, ws.sigma + b * ws.stride, m, false, 0, false, 1);
    if (Ntk) finite = store(ex, a.storage, a.ntk, at, ws.theta + b * ws.stride, m, false, 0, false, 1) && finite;
    if (!finite) *a.not_finite = 1;  // a benign race: every writer writes 1
    ex.sync();  // the next image overwrites the workspace
  }
}

// ---- The pair pass: block b walks pairs b, b + gridDim.x, ... of the band, row-major.

template <bool Ntk>
__global__ void __launch_bounds__(kSpatialMaxThreads, kSpatialMinBlocksPerSM)
    spatial_pairs_kernel(SpatialPairs a) {
  __shared__ double scratch[32];
  extern __shared__ double shared_ws[];
  BlockExec ex{scratch};
  const SpatialProgramView& prog = a.prog;
  const SpatialWorkspace ws = block_workspace(prog, a.launch, Ntk, shared_ws);
  const Index row = prog.in_shape.positions() * a.channels;
  const Index m = a.out_size;
  const Index so = prog.out_shape.positions();
  const bool transpose = prog.full != 0 && m > 1;
  const Index total = a.rows * a.cols;
  for (Index k = blockIdx.x; k < total; k += gridDim.x) {
    const Index r = k / a.cols;
    const Index i = a.i0 + r, j = a.j0 + (k - r * a.cols);
    if (a.upper && j <= i) continue;  // the same for every thread of the block
    input_covariance(ex, prog, a.channels, a.x1 + i * row, a.x2 + j * row, ws.sigma);
    const int b = spatial_walk<Ntk, false>(ex, prog, ws, a.rec1 + i * a.record_stride, a.rec2 + j * a.record_stride,
                                           nullptr);
    const Index at = (i - a.out_i0) * a.ld_row + (j - a.out_j0) * m;
    const Index mirror_at = (j - a.out_i0) * a.ld_row + (i - a.out_j0) * m;
    bool finite = true;
    if (a.nngp)
      finite = store(ex, a.storage, a.nngp, at, ws.sigma + b * ws.stride, m, a.mirror, mirror_at, transpose, so);
    if (Ntk)
      finite = store(ex, a.storage, a.ntk, at, ws.theta + b * ws.stride, m, a.mirror, mirror_at, transpose, so) &&
               finite;
    if (!finite) *a.not_finite = 1;
    ex.sync();  // the next pair overwrites the workspace
  }
}

// ---- Launchers.

void check_launch(const SpatialProgramView& prog, const SpatialLaunch& l, bool ntk, const char* what) {
  const std::string w(what);
  if (l.threads < 32 || l.threads > kSpatialMaxThreads || (l.threads & (l.threads - 1)) != 0)
    throw std::invalid_argument(w + ": threads must be a power of two in [32, " + std::to_string(kSpatialMaxThreads) +
                                "], got " + std::to_string(l.threads));
  if (l.n_blocks < 1) throw std::invalid_argument(w + ": n_blocks must be >= 1, got " + std::to_string(l.n_blocks));
  if (l.shared_workspace) {
    if (spatial_workspace_doubles(prog, ntk) * 8 > kSpatialMaxSharedBytes)
      throw std::invalid_argument(w + ": the workspace does not fit in shared memory");
  } else if (!l.workspace) {
    throw std::invalid_argument(w + ": workspace is a null pointer");
  }
  if (prog.n_ops > 0 && !prog.ops) throw std::invalid_argument(w + ": ops is a null pointer");
}

// Dynamic shared memory of a launch, after the kernel's opt-in above the default 48 KiB.
template <class Kernel>
std::size_t shared_bytes(Kernel kernel, const SpatialProgramView& prog, const SpatialLaunch& l, bool ntk) {
  if (!l.shared_workspace) return 0;
  const std::size_t bytes = static_cast<std::size_t>(spatial_workspace_doubles(prog, ntk)) * sizeof(double);
  FASTNTK_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  return bytes;
}

template <bool Ntk>
void launch_points(const SpatialPoints& a, cudaStream_t stream) {
  auto kernel = spatial_points_kernel<Ntk>;
  const std::size_t shared = shared_bytes(kernel, a.prog, a.launch, Ntk);
  const int blocks = static_cast<int>(a.n < a.launch.n_blocks ? a.n : a.launch.n_blocks);
  kernel<<<blocks, a.launch.threads, shared, stream>>>(a);
  FASTNTK_CUDA_CHECK_LAUNCH("spatial_points_kernel launch");
}

template <bool Ntk>
void launch_pairs(const SpatialPairs& a, cudaStream_t stream) {
  auto kernel = spatial_pairs_kernel<Ntk>;
  const std::size_t shared = shared_bytes(kernel, a.prog, a.launch, Ntk);
  const Index total = a.rows * a.cols;
  const int blocks = static_cast<int>(total < a.launch.n_blocks ? total : a.launch.n_blocks);
  kernel<<<blocks, a.launch.threads, shared, stream>>>(a);
  FASTNTK_CUDA_CHECK_LAUNCH("spatial_pairs_kernel launch");
}

}  // namespace

void spatial_points_cuda(const SpatialPoints& a, std::uintptr_t stream) {
  const bool ntk = a.ntk != nullptr;
  if (a.n < 0) throw std::invalid_argument("spatial_points_cuda: negative number of images");
  if (a.n == 0) return;
  check_launch(a.prog, a.launch, ntk, "spatial_points_cuda");
  if (!a.x || !a.records || !a.stopped || !a.not_finite)
    throw std::invalid_argument("spatial_points_cuda: a buffer is a null pointer");
  if (a.record_stride < a.prog.point_stride)
    throw std::invalid_argument("spatial_points_cuda: record_stride too small");
  const cudaStream_t s = as_stream(stream);
  return ntk ? launch_points<true>(a, s) : launch_points<false>(a, s);
}

void spatial_pairs_cuda(const SpatialPairs& a, std::uintptr_t stream) {
  const bool ntk = a.ntk != nullptr;
  if (a.rows < 0 || a.cols < 0) throw std::invalid_argument("spatial_pairs_cuda: negative band size");
  if (!a.nngp && !ntk) throw std::invalid_argument("spatial_pairs_cuda: neither nngp nor ntk requested");
  if (a.rows == 0 || a.cols == 0) return;
  check_launch(a.prog, a.launch, ntk, "spatial_pairs_cuda");
  if (!a.x1 || !a.x2 || !a.rec1 || !a.rec2 || !a.not_finite)
    throw std::invalid_argument("spatial_pairs_cuda: a buffer is a null pointer");
  if (a.out_size != a.prog.out_shape.entries(a.prog.full != 0))
    throw std::invalid_argument("spatial_pairs_cuda: out_size differs from the program's output entries");
  const cudaStream_t s = as_stream(stream);
  return ntk ? launch_pairs<true>(a, s) : launch_pairs<false>(a, s);
}

int spatial_resident_blocks(bool ntk, int threads, std::int64_t shared_bytes_per_block) {
  if (threads < 32 || threads > kSpatialMaxThreads)
    throw std::invalid_argument("spatial_resident_blocks: threads must be in [32, " +
                                std::to_string(kSpatialMaxThreads) + "]");
  if (shared_bytes_per_block < 0 || shared_bytes_per_block > kSpatialMaxSharedBytes)
    throw std::invalid_argument("spatial_resident_blocks: shared_bytes out of range");
  auto kernel = ntk ? spatial_pairs_kernel<true> : spatial_pairs_kernel<false>;
  const std::size_t shared = static_cast<std::size_t>(shared_bytes_per_block);
  if (shared > 48 * 1024)
    FASTNTK_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
  int per_sm = 0;
  FASTNTK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared));
  int device = 0, sms = 0;
  FASTNTK_CUDA_CHECK(cudaGetDevice(&device));
  FASTNTK_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return per_sm * sms;
}

}  // namespace cuda
}  // namespace fastntk
