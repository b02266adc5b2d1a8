// fastntk: the spatial (CNN) walk, written once: every op of a SpatialProgram on one pair of
// images, for a CPU thread and (later) a CUDA block.
//
// What each op computes is spatial_op.hpp's and cnn_spec.md's; this header says it as loops
// over the entries of a register, and leaves how those loops run to an executor `ex`:
//
//   ex.each(n, f)             f(e) for every e in [0, n): independent entries
//   ex.each_row(rows, cols, f) f(r, c) for every r in [0, rows), c in [0, cols): independent
//                             entries, c the fast (contiguous) index -- a CPU thread runs c as
//                             a SIMD loop, a CUDA block spreads r * cols + c over its threads
//   ex.sum(n, f)              sum of f(e) over e in [0, n), returned to every caller
//   ex.sync()                 every entry written so far is visible to what follows
//                             (a CPU thread: nothing; a CUDA block: __syncthreads)
//
// The state lives in a workspace of spatial_buffers(R) buffers per kernel (SpatialWorkspace),
// each of prog.max_entries doubles: register r owns one buffer, two are spare. A linear op
// writes its result into the spares (ping-pong over its separable passes), then the
// destination register takes the result and gives back its old buffer. Activations,
// LayerNorm, Copy and Axpy work in place. Per pair this is O(R * S^2) doubles (full regime),
// independent of the number of pairs.
//
// Box sums are separable: a k1 x k2 (x k3) window costs k1 + k2 (+ k3) adds per entry, one
// pass per axis, each pass reading a precomputed index table (padding, strides and circular
// wrap resolved on the host, spatial_program.hpp). Axes where the window is the identity
// (1 x 1 filters, unit strides) are skipped.
//
// Two modes (template parameter Point):
//   pair (Point = false): the walk of (x, y), reading the point records of both;
//   point (Point = true): the walk of (x, x), which writes x's record (the per-position Stats
//     of each activation and the factors of each LayerNorm, from the diagonal of its own
//     state at that op) before applying the op, and applies activations to the diagonal
//     entries through the exact diagonal maps (Map::diag), so that the self pair's result is
//     the exact diagonal of a symmetric Gram.
#pragma once

#include <cstdint>

#include "fastntk/activations.hpp"
#include "fastntk/config.hpp"
#include "fastntk/op.hpp"
#include "fastntk/spatial_op.hpp"
#include "fastntk/walk_impl.hpp"  // visit_activation

namespace fastntk {

// The buffers of one walk. Register 0's Sigma must hold the input covariance in buffer 0
// (sigma[0 .. S_in^2) full, [0 .. S_in) diagonal) when the walk starts.
struct SpatialWorkspace {
  double* sigma;        // [spatial_buffers(R), stride]
  double* theta;        // [spatial_buffers(R), stride], or null for a walk without NTK
  std::int64_t stride;  // >= prog.max_entries
};

namespace spatial_detail {

using Index = std::int64_t;

// The coefficients a pass applies to its box sums bs (of Sigma) and bt (of Theta):
// Sigma' = sm * bs + b, Theta' = ts * bs + tm * bt + e. Intermediate passes: (1, 0, 0, 1, 0).
struct PassCoef {
  double sm, b, ts, tm, e;
};
constexpr PassCoef kPlainPass{1.0, 0.0, 0.0, 1.0, 0.0};

// One separable pass of a box sum, over the state viewed as a row-major tensor.
//   paired: [A0, n, A1, n, A2] -> [A0, m, A1, m, A2], both n-axes shifted by the same offset
//           (the two positions of a Conv in the full regime):
//           out[a0, i, a1, j, a2] = sum_u in[a0, I(u, i), a1, I(u, j), a2];
//   single: [A0, n, A2] -> [A0, m, A2]:
//           out[a0, i, a2] = w(i) * sum_u in[a0, I(u, i), a2];
// with I(u, i) = idx[u * m + i], a term with I = -1 reading 0.
struct Pass {
  bool paired;
  Index a0, a1, a2;
  int n, m, window;
  const std::int32_t* idx;  // [window, m]
  const double* w;          // [m], or null for weight 1
  Index out_entries() const { return paired ? a0 * m * a1 * m * a2 : a0 * m * a2; }
};

template <bool Ntk, class Exec>
FASTNTK_HD FASTNTK_ALWAYS_INLINE void run_pass(Exec& ex, const Pass& p, const double* FASTNTK_RESTRICT is,
                                               const double* FASTNTK_RESTRICT it, double* FASTNTK_RESTRICT os,
                                               double* FASTNTK_RESTRICT ot, const PassCoef& k) {
  const int n = p.n, m = p.m, window = p.window;
  const std::int32_t* FASTNTK_RESTRICT idx = p.idx;
  const double* FASTNTK_RESTRICT w = p.w;
  const Index a1 = p.a1, a2 = p.a2;
  auto emit = [&](Index o, double bs, double bt) {
    os[o] = k.sm * bs + k.b;
    if (Ntk) ot[o] = k.ts * bs + k.tm * bt + k.e;
  };
  if (p.paired) {
    const Index s_j = a2, s_a1 = Index(n) * a2, s_i = a1 * n * a2, s_a0 = Index(n) * s_i;
    if (a2 > 1) {  // rows (a0, i, a1, j), the contiguous a2 inner
      ex.each_row(p.a0 * m * a1 * m, a2, [&](Index r, Index c) {
        const int j = static_cast<int>(r % m);
        Index q = r / m;
        const Index aa1 = q % a1;
        q /= a1;
        const int i = static_cast<int>(q % m);
        const Index base = (q / m) * s_a0 + aa1 * s_a1 + c;
        double bs = 0.0, bt = 0.0;
        for (int u = 0; u < window; ++u) {
          const std::int32_t ii = idx[u * m + i], jj = idx[u * m + j];
          if (ii >= 0 && jj >= 0) {
            const Index at = base + ii * s_i + jj * s_j;
            bs += is[at];
            if (Ntk) bt += it[at];
          }
        }
        emit(r * a2 + c, bs, bt);
      });
    } else {  // rows (a0, i, a1), j inner
      ex.each_row(p.a0 * m * a1, m, [&](Index r, Index j) {
        const Index aa1 = r % a1;
        const Index q = r / a1;
        const int i = static_cast<int>(q % m);
        const Index base = (q / m) * s_a0 + aa1 * s_a1;
        double bs = 0.0, bt = 0.0;
        for (int u = 0; u < window; ++u) {
          const std::int32_t ii = idx[u * m + i], jj = idx[u * m + j];
          if (ii >= 0 && jj >= 0) {
            const Index at = base + ii * s_i + jj;
            bs += is[at];
            if (Ntk) bt += it[at];
          }
        }
        emit(r * m + j, bs, bt);
      });
    }
  } else {
    const Index s_i = a2, s_a0 = Index(n) * a2;
    if (a2 > 1) {  // rows (a0, i), the contiguous a2 inner
      ex.each_row(p.a0 * m, a2, [&](Index r, Index c) {
        const int i = static_cast<int>(r % m);
        const Index base = (r / m) * s_a0 + c;
        double bs = 0.0, bt = 0.0;
        for (int u = 0; u < window; ++u) {
          const std::int32_t ii = idx[u * m + i];
          if (ii >= 0) {
            bs += is[base + ii * s_i];
            if (Ntk) bt += it[base + ii * s_i];
          }
        }
        const double wi = w ? w[i] : 1.0;
        emit(r * a2 + c, wi * bs, wi * bt);
      });
    } else {  // rows a0, i inner
      ex.each_row(p.a0, m, [&](Index r, Index i) {
        const Index base = r * s_a0;
        double bs = 0.0, bt = 0.0;
        for (int u = 0; u < window; ++u) {
          const std::int32_t ii = idx[u * m + i];
          if (ii >= 0) {
            bs += is[base + ii];
            if (Ntk) bt += it[base + ii];
          }
        }
        const double wi = w ? w[i] : 1.0;
        emit(r * m + i, wi * bs, wi * bt);
      });
    }
  }
}

// Whether axis k of a Conv / Pool leaves the state unchanged (window 1, stride 1, no
// padding, same size): its pass is skipped.
FASTNTK_HD inline bool trivial_axis(const SpatialLinearOp& op, int k) {
  return op.window[k] == 1 && op.strides[k] == 1 && op.pad_lo[k] == 0 && op.in.dims[k] == op.out.dims[k] &&
         op.weights[k] < 0;
}

// The separable passes of a Conv or Pool, in order; returns their number (at most 6).
// The state is a row-major tensor: [x axes, y axes] (full) or [axes] (diagonal), of sizes
// t[]; a Conv pairs axis k with axis d + k in the full regime, a Pool sums every tensor
// axis on its own (x side, then y side).
FASTNTK_HD inline int plan_passes(const SpatialProgramView& prog, const SpatialLinearOp& op, Pass* passes) {
  const int d = op.in.n_dims;
  const bool full = prog.full != 0;
  const int axes = full ? 2 * d : d;
  Index t[2 * kMaxSpatialDims];
  for (int a = 0; a < axes; ++a) t[a] = op.in.dims[a % d];
  auto prod = [&](int lo, int hi) {  // t[lo] * ... * t[hi - 1]
    Index r = 1;
    for (int l = lo; l < hi; ++l) r *= t[l];
    return r;
  };
  int count = 0;
  const bool conv = op.map == SpatialMap::Conv;
  const int n_passes = conv ? d : axes;
  for (int a = 0; a < n_passes; ++a) {
    const int k = a % d;  // the spatial axis
    if (trivial_axis(op, k)) continue;
    Pass& p = passes[count++];
    p.paired = conv && full;
    p.n = op.in.dims[k];
    p.m = op.out.dims[k];
    p.window = op.window[k];
    p.idx = prog.index + op.index[k];
    p.w = op.weights[k] >= 0 ? prog.coef + op.weights[k] : nullptr;
    p.a0 = prod(0, a);
    if (p.paired) {
      p.a1 = prod(a + 1, d + a);
      p.a2 = prod(d + a + 1, axes);
      t[a] = t[d + a] = p.m;
    } else {
      p.a1 = 1;
      p.a2 = prod(a + 1, axes);
      t[a] = p.m;
    }
  }
  return count;
}

// The walk's register -> buffer map and the spares.
struct Buffers {
  int of[kMaxSpatialRegisters];
  int spare[2];
};

template <bool Ntk, class Exec>
FASTNTK_HD void linear(Exec& ex, const SpatialProgramView& prog, const SpatialLinearOp& op, const SpatialWorkspace& ws,
                       Buffers& buf) {
  const Index stride = ws.stride;
  auto sig = [&](int b) { return ws.sigma + b * stride; };
  auto the = [&](int b) { return Ntk ? ws.theta + b * stride : nullptr; };
  const int src = buf.of[op.src];
  const PassCoef final_coef{op.sigma_mul, op.beta, op.theta_from_sigma, op.theta_mul, op.eps};
  const bool full = prog.full != 0;
  const int out_b = buf.spare[0];
  if (op.map == SpatialMap::Flatten || op.map == SpatialMap::Global) {
    const Index s = op.in.positions();
    const double* is = sig(src);
    const double* it = the(src);
    double bs, bt = 0.0;
    if (op.map == SpatialMap::Global) {
      bs = ex.sum(s * s, [&](Index e) { return is[e]; });
      if (Ntk) bt = ex.sum(s * s, [&](Index e) { return it[e]; });
    } else {
      const Index step = full ? s + 1 : 1;  // the diagonal [i, i] of the full state
      bs = ex.sum(s, [&](Index e) { return is[e * step]; });
      if (Ntk) bt = ex.sum(s, [&](Index e) { return it[e * step]; });
    }
    double* os = sig(out_b);
    double* ot = the(out_b);
    ex.each(1, [&](Index) {
      os[0] = final_coef.sm * bs + final_coef.b;
      if (Ntk) ot[0] = final_coef.ts * bs + final_coef.tm * bt + final_coef.e;
    });
  } else {
    Pass passes[2 * kMaxSpatialDims];
    const int count = op.map == SpatialMap::Identity ? 0 : plan_passes(prog, op, passes);
    if (count == 0) {  // elementwise: Identity, or a Conv / Pool whose axes are all trivial
      const Index e_n = op.in.entries(full);
      const double* FASTNTK_RESTRICT is = sig(src);
      const double* FASTNTK_RESTRICT it = the(src);
      double* FASTNTK_RESTRICT os = sig(out_b);
      double* FASTNTK_RESTRICT ot = the(out_b);
      const PassCoef k = final_coef;
      ex.each(e_n, [&](Index e) {
        const double s = is[e];
        os[e] = k.sm * s + k.b;
        if (Ntk) ot[e] = k.ts * s + k.tm * it[e] + k.e;
      });
    } else {
      // Pass q writes spare (count - 1 - q) % 2, so that the last lands in spare 0.
      int in = src;
      for (int q = 0; q < count; ++q) {
        const int out = buf.spare[(count - 1 - q) % 2];
        run_pass<Ntk>(ex, passes[q], sig(in), the(in), sig(out), the(out), q + 1 == count ? final_coef : kPlainPass);
        ex.sync();
        in = out;
      }
    }
  }
  ex.sync();
  const int old = buf.of[op.dst];
  buf.of[op.dst] = out_b;
  buf.spare[0] = old;
}

// Activations: a visitor for visit_activation (walk_impl.hpp), which picks the Map.
template <bool Ntk, bool Point, class Exec>
struct ActivationStep {
  Exec& ex;
  const SpatialProgramView& prog;
  const SpatialActivationOp& act;
  double* s;  // the register's Sigma
  double* t;  // its Theta (Ntk)
  const double* rx;  // x's record
  const double* ry;  // y's record
  double* record;    // Point: x's record, written here

  template <class Map>
  FASTNTK_HD bool activation(const Op& op_ref, int, int) {
    const Op op = op_ref;
    const double* coef = prog.coef;
    const bool full = prog.full != 0;
    const Index n = act.shape.positions();
    if (Point) {  // the Stats of each position, from the self pair's diagonal
      double* st = record + act.stats;
      const double* sv = s;
      const Index step = full ? n + 1 : 1;
      ex.each(n, [&](Index e) {
        const StatsT<double> r = Map::stats(op, coef, sv[e * step]);
        st[e] = r.q;
        st[n + e] = r.a;
        st[2 * n + e] = r.b;
        st[3 * n + e] = r.c;
      });
      ex.sync();
    }
    const double* FASTNTK_RESTRICT xq = rx + act.stats;
    const double* FASTNTK_RESTRICT yq = ry + act.stats;
    double* FASTNTK_RESTRICT ss = s;
    double* FASTNTK_RESTRICT tt = t;
    if (full) {
      ex.each_row(n, n, [&](Index i, Index j) {
        const StatsT<double> x{xq[i], xq[n + i], xq[2 * n + i], xq[3 * n + i]};
        const StatsT<double> y{yq[j], yq[n + j], yq[2 * n + j], yq[3 * n + j]};
        const Index e = i * n + j;
        double sv = ss[e], tv = Ntk ? tt[e] : 0.0;
        if (Point && i == j) {
          double f, dot;
          Map::diag(op, coef, x.q, f, dot);
          sv = f;
          tv *= dot;
        } else {
          Map::template pair<Ntk>(op, coef, x, y, sv, tv);
        }
        ss[e] = sv;
        if (Ntk) tt[e] = tv;
      });
    } else {
      ex.each(n, [&](Index e) {
        double sv = ss[e], tv = Ntk ? tt[e] : 0.0;
        if (Point) {
          double f, dot;
          Map::diag(op, coef, xq[e], f, dot);
          sv = f;
          tv *= dot;
        } else {
          const StatsT<double> x{xq[e], xq[n + e], xq[2 * n + e], xq[3 * n + e]};
          const StatsT<double> y{yq[e], yq[n + e], yq[2 * n + e], yq[3 * n + e]};
          Map::template pair<Ntk>(op, coef, x, y, sv, tv);
        }
        ss[e] = sv;
        if (Ntk) tt[e] = tv;
      });
    }
    ex.sync();
    return true;
  }
};

template <bool Ntk, bool Point, class Exec>
FASTNTK_HD void layernorm(Exec& ex, const SpatialProgramView& prog, const SpatialLayerNormOp& op, double* s, double* t,
                          const double* rx, const double* ry, double* record) {
  const bool full = prog.full != 0;
  const Index n = op.shape.positions();
  if (Point) {  // r = 1 / sqrt(v + eps) per position from the self pair's diagonal
    double* r = record + op.stats;
    const double* sv = s;
    const Index step = full ? n + 1 : 1;
    const double eps = op.eps;
    if (op.spatial) {
      const double mean = ex.sum(n, [&](Index e) { return sv[e * step]; }) / static_cast<double>(n);
      ex.each(n, [&](Index e) { r[e] = 1.0 / detail::sqrt(mean + eps); });
    } else {
      ex.each(n, [&](Index e) { r[e] = 1.0 / detail::sqrt(sv[e * step] + eps); });
    }
    ex.sync();
  }
  const double* FASTNTK_RESTRICT fx = rx + op.stats;
  const double* FASTNTK_RESTRICT fy = ry + op.stats;
  double* FASTNTK_RESTRICT ss = s;
  double* FASTNTK_RESTRICT tt = t;
  if (full) {
    ex.each_row(n, n, [&](Index i, Index j) {
      const double f = fx[i] * fy[j];
      ss[i * n + j] *= f;
      if (Ntk) tt[i * n + j] *= f;
    });
  } else {
    ex.each(n, [&](Index e) {
      const double f = fx[e] * fy[e];
      ss[e] *= f;
      if (Ntk) tt[e] *= f;
    });
  }
  ex.sync();
}

template <bool Ntk, class Exec>
FASTNTK_HD void move(Exec& ex, const SpatialProgramView& prog, const SpatialOp& op, const SpatialWorkspace& ws,
                     const Buffers& buf) {
  const Index e_n = op.move.shape.entries(prog.full != 0);
  const Index stride = ws.stride;
  const double* FASTNTK_RESTRICT is = ws.sigma + buf.of[op.move.src] * stride;
  double* FASTNTK_RESTRICT os = ws.sigma + buf.of[op.move.dst] * stride;
  const double* it = Ntk ? ws.theta + buf.of[op.move.src] * stride : nullptr;
  double* ot = Ntk ? ws.theta + buf.of[op.move.dst] * stride : nullptr;
  if (op.kind == SpatialOpKind::Copy) {
    if (op.move.src == op.move.dst) return;
    ex.each(e_n, [&](Index e) {
      os[e] = is[e];
      if (Ntk) ot[e] = it[e];
    });
  } else {
    const double w = op.move.weight;
    // src may be dst (dst += w dst): elementwise, each entry read before it is written.
    double* s2 = os;
    double* t2 = ot;
    ex.each(e_n, [&](Index e) {
      s2[e] += w * is[e];
      if (Ntk) t2[e] += w * it[e];
    });
  }
  ex.sync();
}

}  // namespace spatial_detail

// Runs the program on one pair. On entry buffer 0 of ws.sigma holds register 0's input
// covariance (Theta is zeroed here). Pair mode: rx, ry are the records of x and y (from
// their point walks), record is unused. Point mode: the walk of (x, x) writes x's record
// (rx = ry = record). Returns the buffer holding register 0 at the end: its Sigma is
// ws.sigma + b * ws.stride (Theta likewise), prog.out_shape.entries(full) entries.
template <bool Ntk, bool Point, class Exec>
FASTNTK_HD int spatial_walk(Exec& ex, const SpatialProgramView& prog, const SpatialWorkspace& ws, const double* rx,
                            const double* ry, double* record) {
  using namespace spatial_detail;
  Buffers buf;
  for (int r = 0; r < prog.n_registers; ++r) buf.of[r] = r;
  buf.spare[0] = prog.n_registers;
  buf.spare[1] = prog.n_registers + 1;
  if (Ntk) {
    double* t0 = ws.theta;
    ex.each(prog.in_shape.entries(prog.full != 0), [&](Index e) { t0[e] = 0.0; });
    ex.sync();
  }
  int a = 0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const SpatialOp& op = prog.ops[k];
    switch (op.kind) {
      case SpatialOpKind::Linear:
        linear<Ntk>(ex, prog, op.linear, ws, buf);
        break;
      case SpatialOpKind::Activation: {
        const int b = buf.of[op.activation.reg];
        ActivationStep<Ntk, Point, Exec> step{ex,
                                              prog,
                                              op.activation,
                                              ws.sigma + b * ws.stride,
                                              Ntk ? ws.theta + b * ws.stride : nullptr,
                                              rx,
                                              ry,
                                              record};
        visit_activation(op.activation.op, k, a, step);
        ++a;
        break;
      }
      case SpatialOpKind::LayerNorm: {
        const int b = buf.of[op.layernorm.reg];
        layernorm<Ntk, Point>(ex, prog, op.layernorm, ws.sigma + b * ws.stride,
                              Ntk ? ws.theta + b * ws.stride : nullptr, rx, ry, record);
        break;
      }
      case SpatialOpKind::Copy:
      case SpatialOpKind::Axpy:
        move<Ntk>(ex, prog, op, ws, buf);
        break;
    }
  }
  return buf.of[0];
}

}  // namespace fastntk
