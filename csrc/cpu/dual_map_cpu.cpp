// fastntk: one activation's dual maps evaluated elementwise (for tests and tools).
#include "vecmath.hpp"

#include "dual_map_cpu.hpp"

#include <stdexcept>
#include <string>

#include "fastntk/walk_impl.hpp"

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

// The maps of one activation at n points, as the walk's switch picks them.
struct PairMaps {
  const double* qx;  // [n]
  const double* qy;  // [n]
  const double* s;   // [n]
  std::int64_t n;
  double* f;    // [n]
  double* dot;  // [n]
  const double* coef;
  template <class Map>
  bool activation(const Op& op, int, int) {
    for (std::int64_t i = 0; i < n; ++i) {
      const Stats x = Map::stats(op, coef, qx[i]);
      const Stats y = Map::stats(op, coef, qy[i]);
      double sv = s[i], tv = 1.0;
      Map::template pair<true>(op, coef, x, y, sv, tv);
      f[i] = sv;
      dot[i] = tv;
    }
    return true;
  }
};

struct DiagMaps {
  const double* q;  // [n]
  std::int64_t n;
  double* f;    // [n]
  double* dot;  // [n]
  const double* coef;
  template <class Map>
  bool activation(const Op& op, int, int) {
    for (std::int64_t i = 0; i < n; ++i) Map::diag(op, coef, q[i], f[i], dot[i]);
    return true;
  }
};

}  // namespace

void dual_map_cpu(const Program& prog, int index, const double* qx, const double* qy, const double* s, std::int64_t n,
                  double* f, double* dot) {
  const Op& op = activation_op(prog, index);
  PairMaps maps{qx, qy, s, n, f, dot, prog.view().coef};
  visit_activation(op, index, 0, maps);
}

void dual_map_diag_cpu(const Program& prog, int index, const double* q, std::int64_t n, double* f, double* dot) {
  const Op& op = activation_op(prog, index);
  DiagMaps maps{q, n, f, dot, prog.view().coef};
  visit_activation(op, index, 0, maps);
}

}  // namespace fastntk::cpu
