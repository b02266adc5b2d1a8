// fastntk: the layer walk over a row of pairs (i, j0 .. j0 + n) as SIMD loops, the CPU
// instance of walk_impl.hpp's walk.
//
// The layer loop is outside and the pair loop inside, so that each op's loop over the row
// vectorizes (transcendentals through libmvec, vecmath.hpp) while the row stays in L1.
// Include this header before any other (it includes vecmath.hpp first).
#pragma once

#include "vecmath.hpp"  // must precede <cmath> users: gives acos & co. their SIMD variants

#include <algorithm>
#include <cstdint>

#include "fastntk/activations.hpp"
#include "fastntk/config.hpp"
#include "fastntk/op.hpp"
#include "fastntk/walk_impl.hpp"

namespace fastntk::cpu {

// One activation over a row segment: s[j], t[j] <- pair(x, y_j), y_j the Stats of point
// j0 + j in ty's activation a.
template <class Map, bool Ntk, class T>
void activation_row(const Op& op_ref, const double* coef, const StatsT<T> x, const PointTablesT<T>& ty, int a,
                    std::int64_t j0, int n, T* FASTNTK_RESTRICT s, T* FASTNTK_RESTRICT t) {
  const Op op = op_ref;  // a local copy: its loads are then loop invariant
  const T* FASTNTK_RESTRICT qy = ty.field(a, 0) + j0;
  const T* FASTNTK_RESTRICT ay = ty.field(a, 1) + j0;
  const T* FASTNTK_RESTRICT by = ty.field(a, 2) + j0;
  const T* FASTNTK_RESTRICT cy = ty.field(a, 3) + j0;
#pragma omp simd
  for (int j = 0; j < n; ++j) {
    const StatsT<T> y{qy[j], ay[j], by[j], cy[j]};
    T sj = s[j], tj = Ntk ? t[j] : T(0.0);
    Map::template pair<Ntk>(op, coef, x, y, sj, tj);
    s[j] = sj;
    if (Ntk) t[j] = tj;
  }
}

template <bool Ntk, class T, class W>
void dense_row(const DenseOp& op_ref, const DenseParams<W> w, int n, T* FASTNTK_RESTRICT s, T* FASTNTK_RESTRICT t) {
  const DenseOp op = op_ref;
#pragma omp simd
  for (int j = 0; j < n; ++j) {
    T sj = s[j], tj = Ntk ? t[j] : T(0.0);
    dense_apply<Ntk>(op, w, sj, tj);
    s[j] = sj;
    if (Ntk) t[j] = tj;
  }
}

template <bool Ntk, class T, class AfterOp>
struct RowVisitor {
  const double* coef;
  const double* seeds;  // [n_ops, P, 3], or null for T = double
  const PointTablesT<T>& tx;
  std::int64_t i;
  const PointTablesT<T>& ty;
  std::int64_t j0;
  int n;
  T* s;  // [n]
  T* t;  // [n]
  AfterOp& after;

  void dense(const DenseOp& op, int k) { dense_row<Ntk>(op, dense_params_for<T>(op, seeds, k), n, s, t); }
  template <class Map>
  bool activation(const Op& op, int, int a) {
    activation_row<Map, Ntk>(op, coef, tx.at(a, i), ty, a, j0, n, s, t);
    return true;
  }
  void after_op(int k) { after(k); }
};

// All layers over the pairs (i of tx, j0 .. j0 + n of ty): s ([n]) holds x.y/d on entry
// and the NNGP at the end, t ([n]) the NTK. after_op(k) is called after op k, with s and
// t holding the kernels of the network cut there.
template <bool Ntk, class T, class AfterOp>
void row_walk(const ProgramView& prog, const double* seeds, const PointTablesT<T>& tx, std::int64_t i,
              const PointTablesT<T>& ty, std::int64_t j0, int n, T* s, T* t, AfterOp&& after_op) {
  if (Ntk) std::fill(t, t + n, T(0.0));
  RowVisitor<Ntk, T, AfterOp> v{prog.coef, seeds, tx, i, ty, j0, n, s, t, after_op};
  walk(prog, v);
}

// ---------------------------------------------------------------------------------------
// The same walk for T = Dual<P> (kernels and their derivatives), with rows and point
// tables stored by plane: a value row and P tangent rows, each contiguous. An array of
// Dual<P> structs interleaves value and tangents, which no SIMD loop loads well; by plane,
// each pair loop below loads its Dual<P> numbers from the planes into locals, applies the
// same per-op map as every other walk (Map::pair, dense_apply) and stores them back, and
// vectorizes as the kernels' loop does (the Dual functions of dual.hpp call the plain
// acos & co. on the value, so libmvec's variants are used).

// Dual<P> number j of planes at x, x + stride, ..., x + P * stride.
template <int P>
FASTNTK_ALWAYS_INLINE Dual<P> load_planes(const double* x, std::int64_t stride, std::int64_t j) {
  Dual<P> r(x[j]);
  for (int p = 0; p < P; ++p) r.d[p] = x[(p + 1) * stride + j];
  return r;
}
template <int P>
FASTNTK_ALWAYS_INLINE void store_planes(double* x, std::int64_t stride, std::int64_t j, const Dual<P>& v) {
  x[j] = v.v;
  for (int p = 0; p < P; ++p) x[(p + 1) * stride + j] = v.d[p];
}

// Per-point tables of Dual<P> by plane: [n_activations, 4, 1 + P, n] (PointTablesT's
// layout with each Dual<P> entry split into 1 + P planes of n).
template <int P>
struct PlanePointTables {
  const double* table;
  std::int64_t n;
  // Plane 0 of field k of activation a; plane p lies p * n further.
  const double* field(int a, int k) const { return table + (4 * std::int64_t(a) + k) * (1 + P) * n; }
  StatsT<Dual<P>> at(int a, std::int64_t i) const {
    return StatsT<Dual<P>>{load_planes<P>(field(a, 0), n, i), load_planes<P>(field(a, 1), n, i),
                           load_planes<P>(field(a, 2), n, i), load_planes<P>(field(a, 3), n, i)};
  }
};

// PointTablesT<Dual<P>> (n points) rewritten by plane into out ([n_activations, 4, 1 + P, n]).
template <int P>
void split_planes(const PointTablesT<Dual<P>>& tables, int n_activations, double* out) {
  const std::int64_t n = tables.n;
  for (int f = 0; f < 4 * n_activations; ++f) {
    const Dual<P>* in = tables.table + f * n;
    for (std::int64_t i = 0; i < n; ++i) store_planes<P>(out + f * (1 + P) * n, n, i, in[i]);
  }
}

// Pair j of activation_row_planes. Its Dual<P> locals live here, not in the simd loop's
// body: OpenMP lowering turns the addressable locals of that body (passed by reference to
// the map) into per-lane arrays before inlining, which keeps Dual<P> in memory and the
// loop scalar; locals of an inlined callee are scalarized and the loop vectorizes.
// s and t: 1 + P planes, ss and ts apart.
template <class Map, bool Ntk, int P>
FASTNTK_ALWAYS_INLINE void activation_pair_planes(const Op& op, const double* coef, const StatsT<Dual<P>>& x,
                                                  const double* qy, const double* ay, const double* by,
                                                  const double* cy, std::int64_t ny, double* s, std::int64_t ss,
                                                  double* t, std::int64_t ts, int j) {
  const StatsT<Dual<P>> y{load_planes<P>(qy, ny, j), load_planes<P>(ay, ny, j), load_planes<P>(by, ny, j),
                          load_planes<P>(cy, ny, j)};
  Dual<P> sj = load_planes<P>(s, ss, j), tj = Ntk ? load_planes<P>(t, ts, j) : Dual<P>(0.0);
  Map::template pair<Ntk>(op, coef, x, y, sj, tj);
  store_planes<P>(s, ss, j, sj);
  if (Ntk) store_planes<P>(t, ts, j, tj);
}

// activation_row by plane: s and t hold 1 + P planes of n, ss and ts apart.
template <class Map, bool Ntk, int P>
void activation_row_planes(const Op& op_ref, const double* coef, const StatsT<Dual<P>> x, const PlanePointTables<P>& ty,
                           int a, std::int64_t j0, int n, double* FASTNTK_RESTRICT s, std::int64_t ss,
                           double* FASTNTK_RESTRICT t, std::int64_t ts) {
  const Op op = op_ref;
  const std::int64_t ny = ty.n;
  const double* FASTNTK_RESTRICT qy = ty.field(a, 0) + j0;
  const double* FASTNTK_RESTRICT ay = ty.field(a, 1) + j0;
  const double* FASTNTK_RESTRICT by = ty.field(a, 2) + j0;
  const double* FASTNTK_RESTRICT cy = ty.field(a, 3) + j0;
#pragma omp simd
  for (int j = 0; j < n; ++j) activation_pair_planes<Map, Ntk, P>(op, coef, x, qy, ay, by, cy, ny, s, ss, t, ts, j);
}

template <bool Ntk, int P>
FASTNTK_ALWAYS_INLINE void dense_pair_planes(const DenseOp& op, const DenseParams<Dual<P>>& w, double* s,
                                             std::int64_t ss, double* t, std::int64_t ts, int j) {
  Dual<P> sj = load_planes<P>(s, ss, j), tj = Ntk ? load_planes<P>(t, ts, j) : Dual<P>(0.0);
  dense_apply<Ntk>(op, w, sj, tj);
  store_planes<P>(s, ss, j, sj);
  if (Ntk) store_planes<P>(t, ts, j, tj);
}

template <bool Ntk, int P>
void dense_row_planes(const DenseOp& op_ref, const DenseParams<Dual<P>> w, int n, double* FASTNTK_RESTRICT s,
                      std::int64_t ss, double* FASTNTK_RESTRICT t, std::int64_t ts) {
  const DenseOp op = op_ref;
#pragma omp simd
  for (int j = 0; j < n; ++j) dense_pair_planes<Ntk, P>(op, w, s, ss, t, ts, j);
}

template <bool Ntk, int P, class AfterOp>
struct PlaneRowVisitor {
  const double* coef;
  const double* seeds;  // [n_ops, P, 3]
  const PlanePointTables<P>& tx;
  std::int64_t i;
  const PlanePointTables<P>& ty;
  std::int64_t j0;
  int n;
  double* s;  // 1 + P planes of n, ss apart
  std::int64_t ss;
  double* t;  // likewise, ts apart
  std::int64_t ts;
  AfterOp& after;

  void dense(const DenseOp& op, int k) {
    dense_row_planes<Ntk, P>(op, dense_params<P>(op, seeds + 3 * P * k), n, s, ss, t, ts);
  }
  template <class Map>
  bool activation(const Op& op, int, int a) {
    activation_row_planes<Map, Ntk, P>(op, coef, tx.at(a, i), ty, a, j0, n, s, ss, t, ts);
    return true;
  }
  void after_op(int k) { after(k); }
};

// row_walk for Dual<P> by plane: s (1 + P planes of n, ss apart) holds x.y/d (plane 0)
// and zero tangents on entry, the NNGP and its derivatives at the end; t (ts apart) the
// NTK's. The planes are a scratch row (stride n) or the output's own planes.
template <bool Ntk, int P, class AfterOp>
void row_walk_planes(const ProgramView& prog, const double* seeds, const PlanePointTables<P>& tx, std::int64_t i,
                     const PlanePointTables<P>& ty, std::int64_t j0, int n, double* s, std::int64_t ss, double* t,
                     std::int64_t ts, AfterOp&& after_op) {
  if (Ntk)
    for (int p = 0; p <= P; ++p) std::fill(t + p * ts, t + p * ts + n, 0.0);
  PlaneRowVisitor<Ntk, P, AfterOp> v{prog.coef, seeds, tx, i, ty, j0, n, s, ss, t, ts, after_op};
  walk(prog, v);
}

}  // namespace fastntk::cpu
