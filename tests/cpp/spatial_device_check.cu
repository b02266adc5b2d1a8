// Compile-only check (ctest spatial_device_check): the spatial walk builds as CUDA device
// code, run by a block-wide executor (each thread a stride of the entries, __syncthreads
// between steps, a shared-memory sum), as the CUDA driver will. Compiled with nvcc, warnings
// as errors.
#include "fastntk/spatial_op.hpp"
#include "fastntk/spatial_walk_impl.hpp"

using namespace fastntk;

struct BlockExec {
  double* scratch;  // [blockDim.x] shared memory for sums

  template <class F>
  __device__ void each(long long n, F&& f) {
    for (long long e = threadIdx.x; e < n; e += blockDim.x) f(e);
  }
  template <class F>
  __device__ void each_row(long long rows, long long cols, F&& f) {
    for (long long e = threadIdx.x; e < rows * cols; e += blockDim.x) f(e / cols)(e % cols);
  }
  template <class F>
  __device__ double sum(long long n, F&& f) {
    double acc = 0.0;
    for (long long e = threadIdx.x; e < n; e += blockDim.x) acc += f(e);
    scratch[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned h = blockDim.x / 2; h > 0; h /= 2) {
      if (threadIdx.x < h) scratch[threadIdx.x] += scratch[threadIdx.x + h];
      __syncthreads();
    }
    const double total = scratch[0];
    __syncthreads();
    return total;
  }
  __device__ void sync() { __syncthreads(); }
};

template <bool Ntk>
__global__ void spatial_pair_kernel(SpatialProgramView prog, SpatialWorkspace ws, const double* rx, const double* ry,
                                    int* out_buffer) {
  extern __shared__ double scratch[];
  BlockExec ex{scratch};
  const int b = spatial_walk<Ntk, false>(ex, prog, ws, rx, ry, nullptr);
  if (threadIdx.x == 0) *out_buffer = b;
}

template <bool Ntk>
__global__ void spatial_point_kernel(SpatialProgramView prog, SpatialWorkspace ws, double* record, int* out_buffer) {
  extern __shared__ double scratch[];
  BlockExec ex{scratch};
  const int b = spatial_walk<Ntk, true>(ex, prog, ws, record, record, record);
  if (threadIdx.x == 0) *out_buffer = b;
}

template __global__ void spatial_pair_kernel<true>(SpatialProgramView, SpatialWorkspace, const double*, const double*,
                                                   int*);
template __global__ void spatial_pair_kernel<false>(SpatialProgramView, SpatialWorkspace, const double*, const double*,
                                                    int*);
template __global__ void spatial_point_kernel<true>(SpatialProgramView, SpatialWorkspace, double*, int*);
template __global__ void spatial_point_kernel<false>(SpatialProgramView, SpatialWorkspace, double*, int*);
