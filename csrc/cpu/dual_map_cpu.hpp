// fastntk: one activation's dual maps evaluated elementwise (C++ API, used by tests).
#pragma once

#include <cstdint>

#include "fastntk/program.hpp"

namespace fastntk::cpu {

// For op `index` of prog (an activation) and each i < n:
//   f[i] = F(qx[i], qy[i], s[i]) = E[phi(u) phi(v)],  dot[i] = S(qx[i], qy[i], s[i]) = E[phi'(u) phi'(v)].
void dual_map_cpu(const Program& prog, int index, const double* qx, const double* qy, const double* s, std::int64_t n,
                  double* f, double* dot);

// The diagonal maps: f[i] = F(q, q, q), dot[i] = S(q, q, q) from their exact closed forms.
void dual_map_diag_cpu(const Program& prog, int index, const double* q, std::int64_t n, double* f, double* dot);

}  // namespace fastntk::cpu
