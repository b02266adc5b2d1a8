// fastntk: the CPU driver of empirical (finite-network) kernels (C++ API).
//
// The empirical NTK of a finite network is a sum over its Dense layers: the parameter
// gradient of output o at x through layer k is s_k * outer(h_{k-1}(x), delta_k^o(x)) for
// the weights and beta_k * delta_k^o(x) for the bias, and the inner product of two outer
// products is the product of the inner products. So
//   Theta_oo'(x, y) = sum_k (s_k^2 <h_{k-1}(x), h_{k-1}(y)> + beta_k^2) <delta_k^o(x), delta_k^o'(y)>,
// a sum of terms "(Gram of A_k) (.) (Gram of B_k)" that never forms a Jacobian. The empirical
// NNGP f(x) f(y)^T is the same with one term (A empty, bias 1, B = f).
#pragma once

#include <cstdint>
#include <functional>

#include "fastntk/errors.hpp"  // fastntk::Interrupted

namespace fastntk::cpu {

// One term: (weight * <a(x), a(y)> + bias) * <b^o(x), b^o'(y)>.
struct GramTerm {
  const double* a1 = nullptr;  // [n1, p] row-major; unused when p == 0
  const double* a2 = nullptr;  // [n2, p]; unused in symmetric calls
  std::int64_t p = 0;          // 0: the first factor is the constant `bias`
  const double* b1 = nullptr;  // [n1, m, q] row-major; nullptr: the identity (q == m, b^o = e_o for every point)
  const double* b2 = nullptr;  // [n2, m, q]; unused in symmetric calls or for the identity
  std::int64_t q = 0;
  double weight = 1.0;
  double bias = 0.0;
};

struct EmpiricalOptions {
  // true:  out[i, j]        = scale * sum_k (...) sum_o <b^o(x_i), b^o(y_j)>      (out: [.., ld])
  // false: out[i, j, o, o'] = scale * sum_k (...) <b^o(x_i), b^o'(y_j)>          (out: [.., ld, m, m])
  bool trace = true;
  double scale = 1.0;
  bool accumulate = false;  // add to out instead of overwriting it
  std::int64_t ld = 0;      // points per row of out (its second dimension); 0: n2
  int n_threads = 0;        // 0: OpenMP's default
  int tile = 0;             // points per tile side; 0: chosen from the sizes and threads
  // Polled by the calling thread between tiles, at most every 50 ms; returning true stops
  // the work (out is then incomplete) and throws Interrupted.
  std::function<bool()> interrupted;
};

// Fills the block out[0:n1, 0:n2] (row stride opt.ld points) with the sum of the terms.
//   symmetric: y = x (n2 == n1; a2, b2 unused): the upper triangle of tiles is computed and
//              mirrored, out[j, i] = out[i, j] (the m x m blocks transposed).
// Throws std::invalid_argument on inconsistent sizes, before any work.
void empirical_gram_cpu(const GramTerm* terms, int n_terms, std::int64_t n1, std::int64_t n2, std::int64_t m,
                        bool symmetric, double* out, const EmpiricalOptions& opt = {});

// The tile side (in points) the driver would choose.
int empirical_default_tile(std::int64_t n1, std::int64_t n2, std::int64_t m, bool trace, bool symmetric, int n_threads);

}  // namespace fastntk::cpu
