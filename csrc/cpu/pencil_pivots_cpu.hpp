// fastntk: the pivots of I + (t - 1) T for a symmetric tridiagonal T at many t, for the exact
// one-dimensional likelihood of fastntk.sklearn.NTKGaussianProcessRegressor (_gp_exact.py).
#pragma once

#include <cstdint>

namespace fastntk::cpu {

// M(t) = I + (t - 1) T with T tridiagonal: diagonal d[n], off-diagonal e[n - 1]. Gaussian
// elimination from the last row up gives the pivots
//   r_n = M_nn,  r_i = M_ii - M_i,i+1^2 / r_i+1,
// all > 0 exactly when M is positive definite; then log|M| = sum_i log r_i and
// (M^-1)_11 = 1 / r_1. For each of the m values tm1[g] = t_g - 1 this writes
//   ok[g] (1 when every pivot is > 0), logdet[g] = sum_i log|r_i|, r1[g] = r_1,
// and, when dlogdet and dr1 are not null, their derivatives in t (forward mode: the same
// recurrence differentiated; dM_ii/dt = d_i, dM_i,i+1/dt = e_i).
// O(n m); the loop over the m values is the inner, vectorized one.
void pencil_pivots_cpu(const double* d, const double* e, std::int64_t n, const double* tm1, std::int64_t m,
                       std::uint8_t* ok, double* logdet, double* r1, double* dlogdet, double* dr1);

}  // namespace fastntk::cpu
