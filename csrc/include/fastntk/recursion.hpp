// fastntk: the layer-wise recursion over a program, per pair and per point.
//
// State of a pair (x, y): s = Sigma(x, y) (NNGP) and t = Theta(x, y) (NTK), starting from
// s = x.y / d, t = 0. State of a point: its variance q = Sigma(x, x) and the diagonal
// NTK entry. A Dense op maps
//   ntk parameterization:      s <- W^2 s + b^2,  t <- s_new + W^2 t
//   standard parameterization: t <- n_in s + W^2 t + [bias],  s <- W^2 s + b^2
// and an activation maps s <- F(qx, qy, s), t <- S(qx, qy, s) t with qx, qy the
// variances before it (activations.hpp).
#pragma once

#include "fastntk/activations.hpp"
#include "fastntk/config.hpp"
#include "fastntk/program.hpp"

namespace fastntk {

template <bool Ntk>
FASTNTK_HD FASTNTK_ALWAYS_INLINE void dense_pair(const Op& op, double& s, double& t) {
  // p = [W^2, b^2, standard?, n_in, standard with bias?]
  if (op.p[2] != 0.0) {
    if (Ntk) t = op.p[3] * s + op.p[0] * t + op.p[4];
    s = op.p[0] * s + op.p[1];
  } else {
    s = op.p[0] * s + op.p[1];
    if (Ntk) t = s + op.p[0] * t;
  }
}

// One activation op on one pair, dispatched on the kind.
template <bool Ntk>
FASTNTK_HD inline void activation_pair(const Op& op, const double* coef, const Stats& x, const Stats& y, double& s,
                                       double& t) {
  switch (op.kind) {
#define FASTNTK_PAIR_CASE(kind, map)               \
  case OpKind::kind:                               \
    map::template pair<Ntk>(op, coef, x, y, s, t); \
    break;
    FASTNTK_FOR_EACH_ACTIVATION(FASTNTK_PAIR_CASE)
#undef FASTNTK_PAIR_CASE
    default:
      break;
  }
}

FASTNTK_HD inline Stats activation_stats(const Op& op, const double* coef, double q) {
  switch (op.kind) {
#define FASTNTK_STATS_CASE(kind, map) \
  case OpKind::kind:                  \
    return map::stats(op, coef, q);
    FASTNTK_FOR_EACH_ACTIVATION(FASTNTK_STATS_CASE)
#undef FASTNTK_STATS_CASE
    default:
      return Stats{q, 0.0, 0.0, 0.0};
  }
}

FASTNTK_HD inline void activation_diag(const Op& op, const double* coef, double q, double& f, double& dot) {
  switch (op.kind) {
#define FASTNTK_DIAG_CASE(kind, map) \
  case OpKind::kind:                 \
    map::diag(op, coef, q, f, dot);  \
    break;
    FASTNTK_FOR_EACH_ACTIVATION(FASTNTK_DIAG_CASE)
#undef FASTNTK_DIAG_CASE
    default:
      f = q;
      dot = 1.0;
      break;
  }
}

// Layout of the per-point tables: for activation number a (0-based, in program
// order) and field k in {q, a, b, c}, the values of all n points are contiguous at
// table + (4 * a + k) * n, so a tile reads its columns as unit-stride vectors.
struct PointTables {
  const double* table;  // [n_activations, 4, n]
  long long n;
  FASTNTK_HD const double* field(int activation, int k) const { return table + (4LL * activation + k) * n; }
  FASTNTK_HD Stats at(int activation, long long i) const {
    return Stats{field(activation, 0)[i], field(activation, 1)[i], field(activation, 2)[i], field(activation, 3)[i]};
  }
};

// Runs the program over one point starting from q0 = x.x / d: writes the Stats of
// each activation into the tables (column i) and the final diagonal Sigma(x, x) and
// Theta(x, x) into q_out, t_out. Returns -1, or the index of the first op whose map
// is undefined for this point (Gaussian with 4 b q >= 1), with q_out then the
// variance that reached it.
FASTNTK_HD inline int point_recursion(const ProgramView& prog, double q0, double* table, long long n, long long i,
                                      double& q_out, double& t_out) {
  double q = q0, t = 0.0;
  int a = 0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const Op& op = prog.ops[k];
    if (op.kind == OpKind::Dense) {
      dense_pair<true>(op, q, t);
      continue;
    }
    if (op.kind == OpKind::Gaussian && !(1.0 - 4.0 * op.p[1] * q > 0.0)) {
      q_out = q;
      t_out = t;
      return k;
    }
    const Stats st = activation_stats(op, prog.coef, q);
    double* col = table + 4LL * a * n + i;
    col[0] = st.q;
    col[n] = st.a;
    col[2 * n] = st.b;
    col[3 * n] = st.c;
    double f, dot;
    activation_diag(op, prog.coef, q, f, dot);
    q = f;
    t *= dot;
    ++a;
  }
  q_out = q;
  t_out = t;
  return -1;
}

// The whole recursion for one pair, given the point tables of both sides.
// Used by device kernels and as the scalar path on the host.
template <bool Ntk>
FASTNTK_HD inline void pair_recursion(const ProgramView& prog, const PointTables& tx, long long i,
                                      const PointTables& ty, long long j, double& s, double& t) {
  int a = 0;
  t = 0.0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const Op& op = prog.ops[k];
    if (op.kind == OpKind::Dense) {
      dense_pair<Ntk>(op, s, t);
    } else {
      activation_pair<Ntk>(op, prog.coef, tx.at(a, i), ty.at(a, j), s, t);
      ++a;
    }
  }
}

}  // namespace fastntk
