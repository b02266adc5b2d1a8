// fastntk: the layer-wise recursion over a program, per pair and per point.
//
// State of a pair (x, y): s = Sigma(x, y) (NNGP) and t = Theta(x, y) (NTK), starting from
// s = x.y / d, t = 0. State of a point: its variance q = Sigma(x, x) and the diagonal
// NTK entry. A Dense op maps
//   ntk parameterization:      s <- W^2 s + b^2,  t <- s_new + W^2 t + t0
//   standard parameterization: t <- n_in s + W^2 t + t0,  s <- W^2 s + b^2
// (t0: the NTK of zero-initialized trainable biases; 1 for a standard-parameterization
// bias, beta^2 for scikit-ntk's convention, else 0), and an activation maps
// s <- F(qx, qy, s), t <- S(qx, qy, s) t with qx, qy the variances before it
// (activations.hpp).
//
// Everything is a template on the scalar type T: double for the kernels, Dual<P> for the
// kernels and their derivatives along P directions in the Dense parameters (W^2, b^2,
// t0), seeded per op by DenseSeeds.
#pragma once

#include <type_traits>

#include "fastntk/activations.hpp"
#include "fastntk/config.hpp"
#include "fastntk/dual.hpp"
#include "fastntk/program.hpp"

namespace fastntk {

// The Dense parameters (W^2, b^2, t0) as scalars of type W: constants for double, and
// for Dual<P> seeded with their derivatives along each direction.
template <class W>
struct DenseParams {
  W w2, b2, t0;
};

FASTNTK_HD FASTNTK_ALWAYS_INLINE DenseParams<double> dense_params(const Op& op) {
  return DenseParams<double>{op.p[0], op.p[1], op.p[4]};
}

// seeds: [P][3], the derivatives of (W^2, b^2, t0) of this op along each direction.
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE DenseParams<Dual<P>> dense_params(const Op& op, const double* seeds) {
  DenseParams<Dual<P>> r{Dual<P>(op.p[0]), Dual<P>(op.p[1]), Dual<P>(op.p[4])};
  for (int k = 0; k < P; ++k) {
    r.w2.d[k] = seeds[3 * k];
    r.b2.d[k] = seeds[3 * k + 1];
    r.t0.d[k] = seeds[3 * k + 2];
  }
  return r;
}

// p = [W^2, b^2, standard?, n_in, t0]
template <bool Ntk, class T, class W>
FASTNTK_HD FASTNTK_ALWAYS_INLINE void dense_apply(const Op& op, const DenseParams<W>& w, T& s, T& t) {
  if (op.p[2] != 0.0) {
    if (Ntk) t = op.p[3] * s + w.w2 * t + w.t0;
    s = w.w2 * s + w.b2;
  } else {
    s = w.w2 * s + w.b2;
    if (Ntk) t = s + w.w2 * t + w.t0;
  }
}

template <bool Ntk, class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE void dense_pair(const Op& op, T& s, T& t) {
  dense_apply<Ntk>(op, dense_params(op), s, t);
}

// One activation op on one pair, dispatched on the kind.
template <bool Ntk, class T>
FASTNTK_HD inline void activation_pair(const Op& op, const double* coef, const StatsT<T>& x, const StatsT<T>& y, T& s,
                                       T& t) {
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

template <class T>
FASTNTK_HD inline StatsT<T> activation_stats(const Op& op, const double* coef, const T& q) {
  switch (op.kind) {
#define FASTNTK_STATS_CASE(kind, map) \
  case OpKind::kind:                  \
    return map::stats(op, coef, q);
    FASTNTK_FOR_EACH_ACTIVATION(FASTNTK_STATS_CASE)
#undef FASTNTK_STATS_CASE
    default:
      return StatsT<T>{q, T(0.0), T(0.0), T(0.0)};
  }
}

template <class T>
FASTNTK_HD inline void activation_diag(const Op& op, const double* coef, const T& q, T& f, T& dot) {
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
template <class T>
struct PointTablesT {
  const T* table;  // [n_activations, 4, n]
  long long n;
  FASTNTK_HD const T* field(int activation, int k) const { return table + (4LL * activation + k) * n; }
  FASTNTK_HD StatsT<T> at(int activation, long long i) const {
    return StatsT<T>{field(activation, 0)[i], field(activation, 1)[i], field(activation, 2)[i],
                     field(activation, 3)[i]};
  }
};
using PointTables = PointTablesT<double>;

// Runs the program over one point starting from q0 = x.x / d: writes the Stats of each
// activation into the tables (column i), and the diagonal Sigma(x, x), Theta(x, x) into
// q_cap[c * n + i], t_cap[c * n + i] after every op k with capture[k] = c >= 0 (capture
// may be null) and, if capture_end = c >= 0, at the end. seeds, n_seeds_per_op: as for
// the pair recursion (unused for T = double). Returns -1, or the index of the first op
// whose map is undefined for this point (Gaussian with 4 b q >= 1).
template <class T>
FASTNTK_HD inline int point_recursion(const ProgramView& prog, const double* seeds, int n_seeds_per_op, double q0,
                                      T* table, long long n, long long i, const int* capture, int capture_end, T* q_cap,
                                      T* t_cap) {
  T q = q0, t = 0.0;
  int a = 0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const Op& op = prog.ops[k];
    if (op.kind == OpKind::Dense) {
      if constexpr (std::is_same_v<T, double>) {
        dense_pair<true>(op, q, t);
      } else {
        dense_apply<true>(op, dense_params<DualSize<T>::value>(op, seeds + k * n_seeds_per_op), q, t);
      }
    } else {
      if (op.kind == OpKind::Gaussian && !(1.0 - 4.0 * op.p[1] * value(q) > 0.0)) return k;
      const StatsT<T> st = activation_stats(op, prog.coef, q);
      T* col = table + 4LL * a * n + i;
      col[0] = st.q;
      col[n] = st.a;
      col[2 * n] = st.b;
      col[3 * n] = st.c;
      T f, dot;
      activation_diag(op, prog.coef, q, f, dot);
      q = f;
      t *= dot;
      ++a;
    }
    if (capture && capture[k] >= 0) {
      q_cap[capture[k] * n + i] = q;
      t_cap[capture[k] * n + i] = t;
    }
  }
  if (capture_end >= 0) {
    q_cap[capture_end * n + i] = q;
    t_cap[capture_end * n + i] = t;
  }
  return -1;
}

// The whole recursion for one pair (double), given the point tables of both sides.
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
