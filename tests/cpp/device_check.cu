// Compile-only check (ctest device_check): the math headers build as CUDA device code.
//
// Instantiates, inside __global__ kernels, the point walk and the pair walk for double and
// Dual<3> (so every map's stats, diag and pair for both scalar types), with `using
// namespace fastntk` beside CUDA's math, as a GPU driver will. Compiled with nvcc, warnings
// as errors: a host-only construct in a device-clean header fails here.
#include "fastntk/activations.hpp"
#include "fastntk/dual.hpp"
#include "fastntk/op.hpp"
#include "fastntk/walk_impl.hpp"

using namespace fastntk;

template <class T>
__global__ void point_kernel(ProgramView prog, const double* seeds, const double* q0, T* table, long long n,
                             const int* capture, T* q_cap, T* t_cap, int* stopped) {
  const long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  stopped[i] = point_walk<T>(prog, seeds, q0[i], table, n, i, capture, 0, q_cap, t_cap);
}

template <bool Ntk, class T>
__global__ void pair_kernel(ProgramView prog, const double* seeds, PointTablesT<T> tx, PointTablesT<T> ty, long long n1,
                            long long n2, const double* s0, T* nngp, T* ntk) {
  const long long i = blockIdx.y, j = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (i >= n1 || j >= n2) return;
  T s = s0[i * n2 + j], t;
  pair_walk<Ntk>(prog, seeds, tx, i, ty, j, s, t);
  nngp[i * n2 + j] = s;
  if (Ntk) ntk[i * n2 + j] = t;
}

// The math forwarders must not clash with CUDA's under `using namespace fastntk`.
__global__ void math_kernel(double* out) {
  out[0] = sqrt(out[0]) + exp(out[1]) + acos(out[2]) + asin(out[3]) + atan2(out[4], out[5]);
  out[6] = detail::sqrt(out[6]) + detail::fused_mul_add(out[0], out[1], out[2]);
}

template __global__ void point_kernel<double>(ProgramView, const double*, const double*, double*, long long, const int*,
                                              double*, double*, int*);
template __global__ void point_kernel<Dual<3>>(ProgramView, const double*, const double*, Dual<3>*, long long,
                                               const int*, Dual<3>*, Dual<3>*, int*);
template __global__ void pair_kernel<true, double>(ProgramView, const double*, PointTablesT<double>,
                                                   PointTablesT<double>, long long, long long, const double*, double*,
                                                   double*);
template __global__ void pair_kernel<false, double>(ProgramView, const double*, PointTablesT<double>,
                                                    PointTablesT<double>, long long, long long, const double*, double*,
                                                    double*);
template __global__ void pair_kernel<true, Dual<3>>(ProgramView, const double*, PointTablesT<Dual<3>>,
                                                    PointTablesT<Dual<3>>, long long, long long, const double*,
                                                    Dual<3>*, Dual<3>*);
