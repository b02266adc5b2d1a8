// fastntk: the layer walk, written once: the loop over a program's ops that every driver runs.
//
// State of a pair (x, y): s = Sigma(x, y) (NNGP) and t = Theta(x, y) (NTK), starting from
// s = x.y / d, t = 0. State of a point: its variance q = Sigma(x, x) and the diagonal
// NTK entry. A Dense op maps
//   ntk parameterization:      s <- W^2 s + b^2,  t <- s_new + W^2 t + t0
//   standard parameterization: t <- n_in s + W^2 t + t0,  s <- W^2 s + b^2
// (t0: the NTK of zero-initialized trainable biases, see DenseOp), and an activation maps
// s <- F(qx, qy, s), t <- S(qx, qy, s) t with qx, qy the variances before it
// (activations.hpp).
//
// `walk` is the one loop over the ops; what a step does is supplied by a visitor:
//   v.dense(const DenseOp&, int k)                 a Dense op, the k-th op
//   v.template activation<Map>(const Op&, int k, int a) -> bool
//                                                  the a-th activation, its dual maps in Map;
//                                                  false stops the walk (the map is undefined)
//   v.after_op(int k)                              after every op (captures)
// Instantiated here for one point (PointVisitor: per-point tables and the exact diagonal)
// and one pair (PairVisitor: what a CUDA thread runs), and in csrc/cpu/row_walk.hpp for a
// row of pairs as SIMD loops. The three share every per-op map, so they agree to the
// rounding of the maps (tests/cpp/test_maps.cpp checks it).
//
// Everything is a template on the scalar type T: double for the kernels, Dual<P> for the
// kernels and their derivatives along P directions in the Dense parameters (W^2, b^2,
// t0), seeded per op (seeds: [n_ops, P, 3], the derivatives of (W^2, b^2, t0) of each
// op along each direction; null for T = double).
#pragma once

#include "fastntk/activations.hpp"
#include "fastntk/config.hpp"
#include "fastntk/dual.hpp"
#include "fastntk/op.hpp"

namespace fastntk {

// The Dense parameters (W^2, b^2, t0) as scalars of type W: constants for double, and
// for Dual<P> seeded with their derivatives along each direction.
template <class W>
struct DenseParams {
  W w_var, b_var, t0;
};

FASTNTK_HD FASTNTK_ALWAYS_INLINE DenseParams<double> dense_params(const DenseOp& op) {
  return DenseParams<double>{op.w_var, op.b_var, op.t0};
}

// seeds: [P][3], the derivatives of (W^2, b^2, t0) of this op along each direction.
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE DenseParams<Dual<P>> dense_params(const DenseOp& op, const double* seeds) {
  DenseParams<Dual<P>> r{Dual<P>(op.w_var), Dual<P>(op.b_var), Dual<P>(op.t0)};
  for (int k = 0; k < P; ++k) {
    r.w_var.d[k] = seeds[3 * k];
    r.b_var.d[k] = seeds[3 * k + 1];
    r.t0.d[k] = seeds[3 * k + 2];
  }
  return r;
}

// The parameters of Dense op number k for a walk in scalar type T (seeds: [n_ops, P, 3],
// read only for T = Dual<P>).
template <class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE auto dense_params_for(const DenseOp& op, const double* seeds, int k) {
  constexpr int P = DualSize<T>::value;
  if constexpr (P == 0) {
    return dense_params(op);
  } else {
    return dense_params<P>(op, seeds + 3 * P * k);
  }
}

template <bool Ntk, class T, class W>
FASTNTK_HD FASTNTK_ALWAYS_INLINE void dense_apply(const DenseOp& op, const DenseParams<W>& w, T& s, T& t) {
  if (op.parameterization == Parameterization::Standard) {
    if (Ntk) t = op.n_in * s + w.w_var * t + w.t0;
    s = w.w_var * s + w.b_var;
  } else {
    s = w.w_var * s + w.b_var;
    if (Ntk) t = s + w.w_var * t + w.t0;
  }
}

// The one switch over activation kinds: v.template activation<Map>(op, k, a) with op's Map.
template <class Visitor>
FASTNTK_HD FASTNTK_ALWAYS_INLINE bool visit_activation(const Op& op, int k, int a, Visitor& v) {
  switch (op.kind) {
#define FASTNTK_VISIT_CASE(kind, map) \
  case OpKind::kind:                  \
    return v.template activation<map>(op, k, a);
    FASTNTK_FOR_EACH_ACTIVATION(FASTNTK_VISIT_CASE)
#undef FASTNTK_VISIT_CASE
    default:
      return true;
  }
}

// The layer walk. Returns -1, or the index of the op where the visitor stopped.
template <class Visitor>
FASTNTK_HD FASTNTK_ALWAYS_INLINE int walk(const ProgramView& prog, Visitor& v) {
  int a = 0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const Op& op = prog.ops[k];
    if (op.kind == OpKind::Dense) {
      v.dense(op.dense, k);
    } else {
      if (!visit_activation(op, k, a, v)) return k;
      ++a;
    }
    v.after_op(k);
  }
  return -1;
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

// One point: from q = x.x / d, t = 0, writes the Stats of each activation into column i of
// the tables, and the diagonal Sigma(x, x), Theta(x, x) into q_cap[c * n + i],
// t_cap[c * n + i] after every op k with capture[k] = c >= 0 (capture may be null).
// Stops at an activation whose map is undefined for the point (Gaussian with 4 b q >= 1);
// q is then the variance reaching it.
template <class T>
struct PointVisitor {
  const double* coef;
  const double* seeds;  // [n_ops, P, 3], or null for T = double
  T* table;             // [n_activations, 4, n]
  long long n, i;
  const int* capture;  // [n_ops], or null
  T* q_cap;            // [captures, n]
  T* t_cap;            // [captures, n]
  T q, t;

  FASTNTK_HD FASTNTK_ALWAYS_INLINE void dense(const DenseOp& op, int k) {
    dense_apply<true>(op, dense_params_for<T>(op, seeds, k), q, t);
  }
  template <class Map>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE bool activation(const Op& op, int, int a) {
    if (op.kind == OpKind::Gaussian && !(1.0 - 4.0 * op.gaussian.b * value(q) > 0.0)) return false;
    const StatsT<T> st = Map::stats(op, coef, q);
    T* col = table + 4LL * a * n + i;
    col[0] = st.q;
    col[n] = st.a;
    col[2 * n] = st.b;
    col[3 * n] = st.c;
    T f, dot;
    Map::diag(op, coef, q, f, dot);
    q = f;
    t *= dot;
    return true;
  }
  FASTNTK_HD FASTNTK_ALWAYS_INLINE void after_op(int k) {
    if (capture && capture[k] >= 0) store(capture[k]);
  }
  FASTNTK_HD FASTNTK_ALWAYS_INLINE void store(int c) {
    q_cap[c * n + i] = q;
    t_cap[c * n + i] = t;
  }
};

// Runs the program over point i of n starting from q0 = x.x / d (see PointVisitor), and,
// if capture_end = c >= 0, writes the diagonal at the end into capture c. Returns -1, or
// the index of the first op whose map is undefined for this point.
template <class T>
FASTNTK_HD inline int point_walk(const ProgramView& prog, const double* seeds, double q0, T* table, long long n,
                                 long long i, const int* capture, int capture_end, T* q_cap, T* t_cap) {
  PointVisitor<T> v{prog.coef, seeds, table, n, i, capture, q_cap, t_cap, T(q0), T(0.0)};
  const int stopped = walk(prog, v);
  if (stopped < 0 && capture_end >= 0) v.store(capture_end);
  return stopped;
}

// One pair (i of tx, j of ty): s holds x.y / d on entry and the NNGP at the end, t the NTK.
// The scalar walk a device thread (or a test) runs per output entry.
template <bool Ntk, class T>
struct PairVisitor {
  const double* coef;
  const double* seeds;  // [n_ops, P, 3], or null for T = double
  const PointTablesT<T>* tx;
  long long i;
  const PointTablesT<T>* ty;
  long long j;
  T s, t;

  FASTNTK_HD FASTNTK_ALWAYS_INLINE void dense(const DenseOp& op, int k) {
    dense_apply<Ntk>(op, dense_params_for<T>(op, seeds, k), s, t);
  }
  template <class Map>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE bool activation(const Op& op, int, int a) {
    Map::template pair<Ntk>(op, coef, tx->at(a, i), ty->at(a, j), s, t);
    return true;
  }
  FASTNTK_HD FASTNTK_ALWAYS_INLINE void after_op(int) {}
};

template <bool Ntk, class T>
FASTNTK_HD inline void pair_walk(const ProgramView& prog, const double* seeds, const PointTablesT<T>& tx, long long i,
                                 const PointTablesT<T>& ty, long long j, T& s, T& t) {
  PairVisitor<Ntk, T> v{prog.coef, seeds, &tx, i, &ty, j, s, T(0.0)};
  walk(prog, v);
  s = v.s;
  t = v.t;
}

}  // namespace fastntk
