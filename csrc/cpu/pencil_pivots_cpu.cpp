// fastntk: pivots of I + (t - 1) T (see pencil_pivots_cpu.hpp).
#include "pencil_pivots_cpu.hpp"

#include <cmath>
#include <vector>

namespace fastntk::cpu {

void pencil_pivots_cpu(const double* d, const double* e, std::int64_t n, const double* tm1, std::int64_t m,
                       std::uint8_t* ok, double* logdet, double* r1, double* dlogdet, double* dr1) {
  if (n <= 0 || m <= 0) return;
  const bool deriv = dlogdet != nullptr && dr1 != nullptr;
  // r (and dr) run over the grid in place; ok collects "every pivot > 0" as a double flag
  // so that the inner loop has no branch.
  std::vector<double> r(m), dr(deriv ? m : 0), good(m), ld(m), dld(deriv ? m : 0);
  for (std::int64_t g = 0; g < m; ++g) {
    r[g] = 1.0 + tm1[g] * d[n - 1];
    good[g] = r[g] > 0.0 ? 1.0 : 0.0;
    ld[g] = std::log(std::fabs(r[g]));
    if (deriv) {
      dr[g] = d[n - 1];
      dld[g] = dr[g] / r[g];
    }
  }
  for (std::int64_t i = n - 2; i >= 0; --i) {
    const double di = d[i], ei = e[i];
    if (deriv) {
#pragma omp simd
      for (std::int64_t g = 0; g < m; ++g) {
        const double a = tm1[g] * ei;  // M_i,i+1
        const double ratio = a / r[g];
        const double rn = (1.0 + tm1[g] * di) - a * ratio;
        const double drn = di - 2.0 * ei * ratio + ratio * ratio * dr[g];
        r[g] = rn;
        dr[g] = drn;
        good[g] = rn > 0.0 ? good[g] : 0.0;
        ld[g] += std::log(std::fabs(rn));
        dld[g] += drn / rn;
      }
    } else {
#pragma omp simd
      for (std::int64_t g = 0; g < m; ++g) {
        const double a = tm1[g] * ei;
        const double rn = (1.0 + tm1[g] * di) - a * (a / r[g]);
        r[g] = rn;
        good[g] = rn > 0.0 ? good[g] : 0.0;
        ld[g] += std::log(std::fabs(rn));
      }
    }
  }
  for (std::int64_t g = 0; g < m; ++g) {
    ok[g] = good[g] > 0.0 ? 1 : 0;
    logdet[g] = ld[g];
    r1[g] = r[g];
    if (deriv) {
      dlogdet[g] = dld[g];
      dr1[g] = dr[g];
    }
  }
}

}  // namespace fastntk::cpu
