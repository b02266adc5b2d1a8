// fastntk: facts about the native build: OpenMP, BLAS, the SIMD width of the recursion loops.
#include "vecmath.hpp"  // FASTNTK_HAVE_LIBMVEC, FASTNTK_RUNTIME_DISPATCH

#include "build_info.hpp"

#include <omp.h>

#include "blas.hpp"

namespace fastntk::cpu {

BuildInfo build_info() {
  BuildInfo info;
#ifdef _OPENMP
  info.openmp = _OPENMP;
#else
  info.openmp = 0;
#endif
  info.blas = blas::config();
  info.blas_core = blas::core();
  info.simd_dispatch = FASTNTK_RUNTIME_DISPATCH;
#if FASTNTK_RUNTIME_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) {
    info.simd = "AVX-512";
    info.simd_doubles = 8;
  } else if (__builtin_cpu_supports("x86-64-v3")) {
    info.simd = "AVX2";
    info.simd_doubles = 4;
  } else {
    info.simd = "SSE2";
    info.simd_doubles = 2;
  }
#elif defined(__AVX512F__)
  info.simd = "AVX-512";
  info.simd_doubles = 8;
#elif defined(__AVX2__)
  info.simd = "AVX2";
  info.simd_doubles = 4;
#elif defined(__SSE2__)
  info.simd = "SSE2";
  info.simd_doubles = 2;
#elif defined(__ARM_NEON)
  info.simd = "NEON";
  info.simd_doubles = 2;
#else
  info.simd = "scalar";
  info.simd_doubles = 1;
#endif
  info.libmvec = FASTNTK_HAVE_LIBMVEC;
  info.max_threads = omp_get_max_threads();
  return info;
}

}  // namespace fastntk::cpu
