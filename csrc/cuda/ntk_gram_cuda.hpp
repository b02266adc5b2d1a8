// fastntk: the CUDA driver of the analytic NNGP / NTK Gram matrices (host C++ API).
//
// Plain C++ (no CUDA headers): the pybind11 module fastntk._cuda includes it and is
// compiled by the host compiler; the definitions live in ntk_gram_cuda.cu.
//
// Memory belongs to the caller (CuPy's pool, from Python): every pointer here is a device
// pointer, every function launches on the given stream (a cudaStream_t, 0 for the legacy
// default stream) of the current device and returns without synchronizing. CUDA failures
// throw fastntk::cuda::CudaError carrying CUDA's message; bad arguments throw
// std::invalid_argument. Nothing aborts.
//
// The inner products x1.x2^T come from cuBLAS through CuPy (a GEMM into a tile buffer); these
// functions then run the whole layer walk per entry, one thread per entry, all layers fused,
// from the same headers as the OpenMP driver (walk_impl.hpp).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastntk/op.hpp"

namespace fastntk {
namespace cuda {

// A CUDA runtime failure: "<what>: <cudaGetErrorName>: <cudaGetErrorString> (file:line)".
struct CudaError : std::runtime_error {
  explicit CudaError(const std::string& what) : std::runtime_error(what) {}
};

// The largest number of derivative directions (Dual<P>), as the CPU driver's kMaxDirections.
constexpr int kMaxDirections = 3;

// Storage type of the tile buffer and the outputs: the walk itself always runs in float64.
enum class Storage : int { Float64 = 0, Float32 = 1 };

// The per-point pass: for each of n points, from q0[i] = |x_i|^2 / d, the point tables
// ([n_activations, 4, n] of T = double or Dual<P>, P = n_directions) and the diagonal
// kernels at each capture (q_cap, t_cap: [n_captures, n] of T). stopped[i] receives -1, or
// the index of the op whose map is undefined for point i (see point_walk).
struct PointPass {
  ProgramView prog;     // ops and coef in device memory
  const double* seeds;  // [n_ops, P, 3] device, or null when P == 0
  int n_directions;     // P
  const double* q0;     // [n]
  std::int64_t n;
  void* table;         // [n_activations, 4, n] of T
  const int* capture;  // [n_ops] capture index after each op or -1; null: none
  int capture_end;     // capture index at the end of the program, or -1
  void* q_cap;         // [n_captures, n] of T
  void* t_cap;         // [n_captures, n] of T
  int* stopped;        // [n]
};
void point_pass_cuda(const PointPass& a, std::uintptr_t stream);

// One tile of a Gram: rows i0 .. i0 + rows of x1 against columns j0 .. j0 + cols of x2.
// s holds the raw inner products x1_i . x2_j (scaled by `scale` = 1/d on reading),
// s[r * ld_s + c]. Each thread walks one pair and writes, for every capture c and plane p
// (0: the kernel, 1 + k: its derivative along direction k), the NNGP and/or NTK at
//   out[(c * (1 + P) + p) * plane_stride + r * ld_out + c]
// (out already offset to the tile's origin). With upper, only pairs with j > i are walked
// (the rest of a symmetric Gram is the exact diagonal and the mirror image). not_finite
// is set to 1 when an entry written is NaN or Inf.
struct GramTile {
  ProgramView prog;
  const double* seeds;  // [n_ops, P, 3] or null
  int n_directions;     // P, 0 .. kMaxDirections; P > 0 needs Storage::Float64
  Storage storage;      // type of s and of the outputs
  const void* s;        // [rows, ld_s]
  std::int64_t ld_s;
  double scale;
  const void* table1;  // point tables of x1 ([n_activations, 4, n1] of T)
  std::int64_t n1;
  const void* table2;  // of x2 (n2 points); the same as table1 for a symmetric Gram
  std::int64_t n2;
  std::int64_t i0, j0, rows, cols;
  bool upper;
  void* nngp;  // null when not wanted
  void* ntk;   // null when not wanted
  std::int64_t ld_out;
  std::int64_t plane_stride;
  const int* capture;  // [n_ops] capture index after each op or -1; null: none
  int capture_end;     // capture index at the end, or -1
  int* not_finite;     // [1]
};
void gram_tile_cuda(const GramTile& a, std::uintptr_t stream);

// The lower triangle of an n x n matrix (leading dimension ld) from its upper triangle.
void mirror_cuda(void* a, Storage storage, std::int64_t n, std::int64_t ld, std::uintptr_t stream);

// q0[i] = scale * sum_k x[i, k]^2 (accumulated in float64) for x [n, d] row-major with
// leading dimension ld.
void row_norms_cuda(const void* x, Storage storage, std::int64_t n, std::int64_t d, std::int64_t ld, double scale,
                    double* q0, std::uintptr_t stream);

// Device selection and facts. device_count returns 0 (and the reason in *why) where the
// runtime finds no usable device (no driver, no GPU), instead of throwing.
int device_count(std::string* why);
void set_device(int device);
int get_device();
struct DeviceFacts {
  std::string name;
  int major = 0, minor = 0, multiprocessors = 0;
  std::size_t total_memory = 0;
};
DeviceFacts device_facts(int device);
void mem_get_info(std::size_t* free_bytes, std::size_t* total_bytes);
int runtime_version();
int driver_version();
void synchronize_stream(std::uintptr_t stream);

}  // namespace cuda
}  // namespace fastntk
