// fastntk: one activation's dual maps evaluated elementwise (for tests and tools).
#include "vecmath.hpp"

#include "dual_map_cpu.hpp"

#include <stdexcept>
#include <string>

#include "fastntk/recursion.hpp"

namespace fastntk::cpu {

namespace {
const Op& activation_op(const Program& prog, int index) {
  if (index < 0 || index >= prog.n_ops())
    throw std::invalid_argument("dual_map: op index " + std::to_string(index) + " out of range [0, " +
                                std::to_string(prog.n_ops()) + ")");
  const Op& op = prog.ops()[index];
  if (op.kind == OpKind::Dense) throw std::invalid_argument("dual_map: op " + std::to_string(index) + " is Dense");
  return op;
}
}  // namespace

void dual_map_cpu(const Program& prog, int index, const double* qx, const double* qy, const double* s, std::int64_t n,
                  double* f, double* dot) {
  const Op& op = activation_op(prog, index);
  const double* coef = prog.view().coef;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const Stats x = activation_stats(op, coef, qx[i]);
    const Stats y = activation_stats(op, coef, qy[i]);
    double sv = s[i], tv = 1.0;
    activation_pair<true>(op, coef, x, y, sv, tv);
    f[i] = sv;
    dot[i] = tv;
  }
}

void dual_map_diag_cpu(const Program& prog, int index, const double* q, std::int64_t n, double* f, double* dot) {
  const Op& op = activation_op(prog, index);
  const double* coef = prog.view().coef;
  for (std::int64_t i = 0; i < n; ++i) activation_diag(op, coef, q[i], f[i], dot[i]);
}

}  // namespace fastntk::cpu
