// fastntk: the CPU executor of the spatial walk (spatial_walk_impl.hpp): one thread runs a
// pair's loops, the fast index of each as a SIMD loop (transcendentals through libmvec).
// Include this header before any other (it includes vecmath.hpp first).
#pragma once

#include "vecmath.hpp"  // must precede <cmath> users: gives acos & co. their SIMD variants

#include <cstdint>

#include "fastntk/config.hpp"
#include "fastntk/spatial_walk_impl.hpp"

namespace fastntk::cpu {

struct CpuExec {
  template <class F>
  FASTNTK_ALWAYS_INLINE void each(std::int64_t n, F&& f) {
#pragma omp simd
    for (std::int64_t e = 0; e < n; ++e) f(e);
  }
  template <class F>
  FASTNTK_ALWAYS_INLINE void each_row(std::int64_t rows, std::int64_t cols, F&& f) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto g = f(r);
#pragma omp simd
      for (std::int64_t c = 0; c < cols; ++c) g(c);
    }
  }
  template <class F>
  FASTNTK_ALWAYS_INLINE double sum(std::int64_t n, F&& f) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (std::int64_t e = 0; e < n; ++e) acc += f(e);
    return acc;
  }
  void sync() {}
};

}  // namespace fastntk::cpu
