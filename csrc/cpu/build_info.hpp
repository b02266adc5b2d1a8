// fastntk: facts about the native build (C++ API), for fastntk.build_info().
#pragma once

#include <string>

namespace fastntk::cpu {

// Build facts: OpenMP version, BLAS configuration, the SIMD width of the recursion loops.
struct BuildInfo {
  int openmp;             // _OPENMP date, 0 without OpenMP
  std::string blas;       // the BLAS library's own configuration string
  std::string blas_core;  // the BLAS kernel family in use
  std::string simd;       // instruction set the recursion runs with on this CPU
  int simd_doubles;       // doubles per vector register in the recursion loops
  bool simd_dispatch;     // chosen at run time among clones (portable build), else fixed at build time
  bool libmvec;           // transcendental calls vectorized through glibc's libmvec
  int max_threads;        // OpenMP's default team size
};
BuildInfo build_info();

}  // namespace fastntk::cpu
