// fastntk: a matrix product on fastntk's own BLAS and OpenMP team (C++ API).
//
// The forward and backward passes of finite networks alternate matrix products with the
// native empirical-kernel driver. Running the products here rather than through NumPy
// keeps one thread team for both: two teams (OpenMP's and NumPy's BLAS threads), each
// spinning for a while after its work, slow each other down on a few cores, and fastntk's
// OpenBLAS uses the kernels of this CPU.
#pragma once

#include <cstdint>
#include <functional>

namespace fastntk::cpu {

struct MatmulOptions {
  int n_threads = 0;  // 0: OpenMP's default
  // Polled by the calling thread between tiles, at most every 50 ms; returning true stops
  // the work (c is then incomplete) and throws Interrupted.
  std::function<bool()> interrupted;
};

// c = alpha * a @ op(b), all row-major and contiguous:
//   a: [m, k]; b: [k, n], or [n, k] if trans_b (then op(b) = b^T); c: [m, n].
// Throws std::invalid_argument on bad sizes, before any work.
void matmul_cpu(const double* a, const double* b, double* c, std::int64_t m, std::int64_t n, std::int64_t k,
                bool trans_b, double alpha, const MatmulOptions& opt = {});

}  // namespace fastntk::cpu
