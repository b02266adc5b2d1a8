// fastntk: the pivots of I + (t - 1) B for a symmetric band matrix B at many t, for the exact
// one-dimensional likelihood of fastntk.sklearn.NTKGaussianProcessRegressor (_gp_exact.py).
#pragma once

#include <cstdint>

namespace fastntk::cpu {

// M(t) = I + (t - 1) B, B symmetric with kd >= 1 sub-diagonals, given in LAPACK's lower band
// layout read row by row: band[j * (kd + 1) + k] = B[j + k, j] (k = 0..kd; entries past the
// matrix are ignored). This is the memory of LAPACK's (kd + 1, n) Fortran band array, and
// for a tridiagonal B (kd = 1) the rows are (d_j, e_j).
//
// Symmetric Gaussian elimination from the last row up, M = U D U^T (U unit upper triangular,
// band width kd): the pivots D_i are all > 0 exactly when M is positive definite; then
// log|M| = sum_i log D_i and, since U^-1 e_1 = e_1, (M^-1)_11 = 1 / D_1. For kd = 1 this is
// the recurrence r_n = M_nn, r_i = M_ii - M_i,i+1^2 / r_i+1. For each of the m values
// tm1[g] = t_g - 1 it writes
//   ok[g] (1 when every pivot is > 0), logdet[g] = sum_i log|D_i|, r1[g] = D_1,
// and, when dlogdet and dr1 are not null, their derivatives in t (forward mode: the same
// elimination differentiated, dM/dt = B).
// O(n kd^2 m) work, O(kd^2) memory per thread: each block of grid values keeps only the
// kd + 1 columns that the elimination still updates, and the values of a block are the
// inner, vectorized loop; blocks run on `threads` OpenMP threads. Bit-identical results for
// any thread count.
void pencil_pivots_cpu(const double* band, std::int64_t n, int kd, const double* tm1, std::int64_t m,
                       std::uint8_t* ok, double* logdet, double* r1, double* dlogdet, double* dr1, int threads);

}  // namespace fastntk::cpu
