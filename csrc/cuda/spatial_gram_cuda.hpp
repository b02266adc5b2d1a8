// fastntk: the CUDA driver of the spatial (CNN) NNGP / NTK Gram matrices (host C++ API).
//
// Plain C++ (no CUDA headers), as ntk_gram_cuda.hpp: the module fastntk._cuda includes it;
// the definitions live in spatial_gram_cuda.cu. The same conventions hold: every pointer is a
// device pointer owned by the caller (CuPy's pool), every launch goes to the given stream of
// the current device and returns without synchronizing, CUDA failures throw CudaError, bad
// arguments std::invalid_argument.
//
// The walk is spatial_walk_impl.hpp's, the one the OpenMP driver runs, with a block
// executor: one CUDA block walks one pair, its threads striding over the entries of each
// op (rows of an op's loop to groups of lanes, the contiguous index to the lanes), sums by a
// block reduction, __syncthreads between ops. A block's state (spatial_buffers(R) buffers of
// prog.max_entries doubles for Sigma, and as many for Theta) lives in a workspace of its own:
// global memory (workspace + blockIdx.x * spatial_workspace_doubles), or the block's shared
// memory when it fits (shared_workspace; the diagonal regime). Blocks stride over the pairs
// (the points), so the workspace is O(n_blocks * R * S^2), whatever the number of pairs.
#pragma once

#include <cstdint>

#include "fastntk/spatial_op.hpp"
#include "ntk_gram_cuda.hpp"  // CudaError, Storage

namespace fastntk {
namespace cuda {

// Threads of a block: a multiple of 32, at most this (the kernels' launch bounds).
constexpr int kSpatialMaxThreads = 256;
// The most dynamic shared memory a block's workspace may take (the kernels opt in above
// CUDA's default 48 KiB; an H100 gives a block up to 227 KiB): two blocks per SM still fit.
constexpr std::int64_t kSpatialMaxSharedBytes = 96 * 1024;

// Doubles of one block's workspace: Sigma's buffers, and Theta's when the NTK is walked.
inline std::int64_t spatial_workspace_doubles(const SpatialProgramView& prog, bool ntk) {
  return static_cast<std::int64_t>(spatial_buffers(prog.n_registers)) * prog.max_entries * (ntk ? 2 : 1);
}

// How the blocks run: n_blocks blocks of `threads` threads, each with its own workspace.
struct SpatialLaunch {
  int n_blocks;
  int threads;
  bool shared_workspace;  // the workspace in shared memory (workspace below is then unused)
  double* workspace;      // [n_blocks, spatial_workspace_doubles(prog, ntk)], or null if shared
};

// The point pass: each of the n images' walk with itself (spatial_walk<.., Point = true>),
// writing its record (records + p * record_stride: the per-position Stats of each
// activation, the factors of each LayerNorm) and, when nngp / ntk are not null, its own
// kernel (register 0 at the end, out_size entries) at out + p * ld_point (the diagonal of a
// symmetric Gram). stopped[p] is set to 1 where a Gaussian's kernel diverges for image p
// (4 b q >= 1 at some position; the caller replays the image on the CPU for the message);
// stopped must be zeroed by the caller. not_finite[0] is set to 1 when an entry written is
// NaN or Inf (or overflows float32 storage).
struct SpatialPoints {
  SpatialProgramView prog;  // ops and coef in device memory
  int channels;             // C of the input covariance x . y / C
  const double* x;          // [n, S_in * C]
  std::int64_t n;
  double* records;  // [n, record_stride]
  std::int64_t record_stride;  // >= prog.point_stride
  Storage storage;             // of nngp / ntk
  void* nngp;                  // or null
  void* ntk;                   // or null (Theta is then not walked)
  std::int64_t ld_point;       // elements between two points' outputs
  int* stopped;                // [n]
  int* not_finite;             // [1]
  SpatialLaunch launch;        // workspaces with Theta iff ntk is not null
};
void spatial_points_cuda(const SpatialPoints& a, std::uintptr_t stream);

// The pair pass over a band: pairs (i, j), i in [i0, i0 + rows), j in [j0, j0 + cols) (with
// upper, only j > i), each walked by one block from the input covariance of x1[i] and x2[j]
// and the records of both. Register 0 at the end (out_size entries) goes to
//   out + (i - out_i0) * ld_row + (j - out_j0) * out_size,
// and with mirror also, transposed as an S_out x S_out matrix in the full regime, to
//   out + (j - out_i0) * ld_row + (i - out_j0) * out_size.
// not_finite[0] is set to 1 when an entry written is NaN or Inf (or overflows float32).
struct SpatialPairs {
  SpatialProgramView prog;
  int channels;
  const double* x1;  // [n1, S_in * C]
  const double* x2;  // [n2, S_in * C] (x1 for a symmetric Gram)
  const double* rec1;  // [n1, record_stride]
  const double* rec2;  // [n2, record_stride]
  std::int64_t record_stride;
  std::int64_t i0, rows, j0, cols;
  bool upper;
  Storage storage;
  void* nngp;  // or null
  void* ntk;   // or null (Theta is then not walked)
  std::int64_t out_size;  // prog.out_shape.entries(full)
  std::int64_t out_i0, out_j0, ld_row;
  bool mirror;
  int* not_finite;
  SpatialLaunch launch;  // workspaces with Theta iff ntk is not null
};
void spatial_pairs_cuda(const SpatialPairs& a, std::uintptr_t stream);

// The most blocks of the pair kernel resident on the current device at once (blocks per SM
// by the occupancy calculator, times the SMs), for `threads` threads and `shared_bytes` of
// dynamic shared memory per block: more blocks than this only wait.
int spatial_resident_blocks(bool ntk, int threads, std::int64_t shared_bytes);

}  // namespace cuda
}  // namespace fastntk
