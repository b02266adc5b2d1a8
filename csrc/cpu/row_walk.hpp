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

}  // namespace fastntk::cpu
