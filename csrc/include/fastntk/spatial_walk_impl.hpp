// fastntk: the spatial (CNN) walk, written once: every op of a SpatialProgram on one pair of
// images, for a CPU thread and (later) a CUDA block.
//
// What each op computes is spatial_op.hpp's and cnn_spec.md's; this header says it as loops
// over the entries of a register, and leaves how those loops run to an executor `ex`:
//
//   ex.each(n, f)             f(e) for every e in [0, n): independent entries
//   ex.each_row(rows, cols, f) f(r)(c) for every r in [0, rows), c in [0, cols): independent
//                             entries, c the fast (contiguous) index; f(r) does the row's
//                             invariant work and returns the entry function g(c) (a small
//                             functor, by value) -- a CPU thread calls f(r) once per row and
//                             runs g over c as a SIMD loop, a CUDA block may call f(r)(c) for
//                             each r * cols + c of its threads
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
// pass per axis, each input position computed from the output position (stride, padding,
// circular wrap), so that a SIMD loop reads contiguous (masked) vectors. Axes where the
// window is the identity (1 x 1 filters, unit strides) are skipped.
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

// The loop bodies handed to the executor must inline into its SIMD loops (GCC otherwise
// keeps a large one as a call, and the loop stays scalar).
#if defined(__CUDACC__) || !(defined(__GNUC__) || defined(__clang__))
#define FASTNTK_LAMBDA_INLINE
#else
#define FASTNTK_LAMBDA_INLINE __attribute__((always_inline))
#endif

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

// One separable pass of a box sum, over the state viewed as a row-major tensor.
//   paired: [A0, n, A1, n, A2] -> [A0, m, A1, m, A2], both n-axes shifted by the same offset
//           (the two positions of a Conv in the full regime):
//           out[a0, i, a1, j, a2] = sum_u in[a0, P(u, i), a1, P(u, j), a2];
//   single: [A0, n, A2] -> [A0, m, A2]:
//           out[a0, i, a2] = w(i) * sum_u in[a0, P(u, i), a2];
// with P(u, i) = stride * i + u - pad_lo, wrapped into [0, n) if circular (modulo n: a window
// larger than the axis wraps more than once, as Neural Tangents' circular padding does), and a
// term whose P falls outside [0, n) reading 0.
struct Pass {
  bool paired, circular;
  Index a0, a1, a2;
  int n, m, window, stride, pad;
  const double* w;  // [m], or null for weight 1
};

// The input position of offset u of output position i, wrapped modulo n if circular; it reads
// the input where 0 <= p < n (inside(p, n)), else 0.
FASTNTK_HD FASTNTK_ALWAYS_INLINE Index raw_position(Index i, int u, int stride, int pad, int n, bool circular) {
  Index p = stride * i + u - pad;
  if (circular) {
    p %= n;
    p += p < 0 ? n : 0;
  }
  return p;
}
FASTNTK_HD FASTNTK_ALWAYS_INLINE bool inside(Index p, int n) { return p >= 0 && p < n; }
// The same as one number: the position, or -1 outside the input.
FASTNTK_HD FASTNTK_ALWAYS_INLINE Index position(Index i, int u, int stride, int pad, int n, bool circular) {
  const Index p = raw_position(i, u, stride, pad, n, circular);
  return inside(p, n) ? p : -1;
}

// The window terms of one output row, hoisted out of its entry loop: for each offset u the
// offset of the input row it reads and whether that row is inside the input (else the
// term reads 0: the multiplier 0 and a harmless in-range offset).
template <int W>
struct RowTerms {
  Index off[W];
  double mask[W];
};

// run_pass with the window size W fixed at compile time (W = 0: p.window, terms computed per
// entry), so that the window unrolls into straight-line code inside the executor's entry
// loop, whose reads are then contiguous (masked only where the inner axis is the one summed).
// Unit: stride 1 and no wrap, where an entry's input position is its own plus a constant,
// so that reads along the inner axis are contiguous vectors rather than gathers.
// Weighted: the Pool weights w (normalize_edges); a compile-time choice, since a per-entry
// `w ? w[i] : 1` becomes a masked load from a null pointer, which costs a microcode assist
// per vector on some CPUs.
template <bool Ntk, int W, bool Unit, bool Weighted, class Exec>
FASTNTK_HD FASTNTK_ALWAYS_INLINE void run_pass_w(Exec& ex, const Pass& p, const double* FASTNTK_RESTRICT is,
                                                 const double* FASTNTK_RESTRICT it, double* FASTNTK_RESTRICT os,
                                                 double* FASTNTK_RESTRICT ot, const PassCoef& k) {
  constexpr int kTerms = W > 0 ? W : 1;
  const int n = p.n, m = p.m, window = W > 0 ? W : p.window, stride = Unit ? 1 : p.stride, pad = p.pad;
  const bool circ = Unit ? false : p.circular;
  const double* FASTNTK_RESTRICT w = p.w;
  const Index a1 = p.a1, a2 = p.a2;
  const double sm = k.sm, b = k.b, ts = k.ts, tm = k.tm, e = k.e;
  // Row r's first input entry (term u) and multiplier, for the row index `i` and, when the
  // paired axis is also a row index, `j`.
  auto terms = [&](Index base, Index s_i, Index i, Index s_j, Index j, bool paired_row) {
    RowTerms<kTerms> t;
    for (int u = 0; u < kTerms; ++u) {
      const Index ii = position(i, u, stride, pad, n, circ);
      const Index jj = paired_row ? position(j, u, stride, pad, n, circ) : 0;
      const bool ok = ii >= 0 && jj >= 0;
      t.off[u] = ok ? base + ii * s_i + jj * s_j : base;
      t.mask[u] = ok ? 1.0 : 0.0;
    }
    return t;
  };
  if (p.paired) {
    const Index s_j = a2, s_a1 = Index(n) * a2, s_i = a1 * n * a2, s_a0 = Index(n) * s_i;
    if (a2 > 1) {  // rows (a0, i, a1, j), the contiguous a2 inner
      ex.each_row(p.a0 * m * a1 * m, a2, [&](Index r) FASTNTK_LAMBDA_INLINE {
        const Index j = r % m;
        Index q = r / m;
        const Index aa1 = q % a1;
        q /= a1;
        const Index i = q % m;
        const Index base = (q / m) * s_a0 + aa1 * s_a1;
        const RowTerms<kTerms> t = terms(base, s_i, i, s_j, j, true);
        const Index o = r * a2;
        return [=](Index c) FASTNTK_LAMBDA_INLINE {
          double bs = 0.0, bt = 0.0;
          if (W > 0) {
            for (int u = 0; u < kTerms; ++u) {
              bs += t.mask[u] * is[t.off[u] + c];
              if (Ntk) bt += t.mask[u] * it[t.off[u] + c];
            }
          } else {
            for (int u = 0; u < window; ++u) {
              const Index ii = position(i, u, stride, pad, n, circ), jj = position(j, u, stride, pad, n, circ);
              if (ii >= 0 && jj >= 0) {
                bs += is[base + ii * s_i + jj * s_j + c];
                if (Ntk) bt += it[base + ii * s_i + jj * s_j + c];
              }
            }
          }
          os[o + c] = sm * bs + b;
          if (Ntk) ot[o + c] = ts * bs + tm * bt + e;
        };
      });
    } else {  // rows (a0, i, a1), j inner
      ex.each_row(p.a0 * m * a1, m, [&](Index r) FASTNTK_LAMBDA_INLINE {
        const Index aa1 = r % a1;
        const Index q = r / a1;
        const Index i = q % m;
        const Index base = (q / m) * s_a0 + aa1 * s_a1;
        const RowTerms<kTerms> t = terms(base, s_i, i, 0, 0, false);
        const Index o = r * m;
        return [=](Index j) FASTNTK_LAMBDA_INLINE {
          double bs = 0.0, bt = 0.0;
          for (int u = 0; u < window; ++u) {
            const Index jj = raw_position(j, u, stride, pad, n, circ);
            const Index ii = W > 0 ? 0 : position(i, u, stride, pad, n, circ);
            const Index row = W > 0 ? t.off[u < kTerms ? u : 0] : base + ii * s_i;
            const bool ok = inside(jj, n) && (W > 0 ? t.mask[u < kTerms ? u : 0] != 0.0 : ii >= 0);
            if (ok) {
              bs += is[row + jj];
              if (Ntk) bt += it[row + jj];
            }
          }
          os[o + j] = sm * bs + b;
          if (Ntk) ot[o + j] = ts * bs + tm * bt + e;
        };
      });
    }
  } else {
    const Index s_i = a2, s_a0 = Index(n) * a2;
    if (a2 > 1) {  // rows (a0, i), the contiguous a2 inner
      ex.each_row(p.a0 * m, a2, [&](Index r) FASTNTK_LAMBDA_INLINE {
        const Index i = r % m;
        const Index base = (r / m) * s_a0;
        const RowTerms<kTerms> t = terms(base, s_i, i, 0, 0, false);
        const double wi = Weighted ? w[i] : 1.0;
        const Index o = r * a2;
        return [=](Index c) FASTNTK_LAMBDA_INLINE {
          double bs = 0.0, bt = 0.0;
          if (W > 0) {
            for (int u = 0; u < kTerms; ++u) {
              bs += t.mask[u] * is[t.off[u] + c];
              if (Ntk) bt += t.mask[u] * it[t.off[u] + c];
            }
          } else {
            for (int u = 0; u < window; ++u) {
              const Index ii = position(i, u, stride, pad, n, circ);
              if (ii >= 0) {
                bs += is[base + ii * s_i + c];
                if (Ntk) bt += it[base + ii * s_i + c];
              }
            }
          }
          os[o + c] = sm * (wi * bs) + b;
          if (Ntk) ot[o + c] = ts * (wi * bs) + tm * (wi * bt) + e;
        };
      });
    } else {  // rows a0, i inner
      ex.each_row(p.a0, m, [&](Index r) FASTNTK_LAMBDA_INLINE {
        const Index base = r * s_a0;
        const Index o = r * m;
        return [=](Index i) FASTNTK_LAMBDA_INLINE {
          double bs = 0.0, bt = 0.0;
          for (int u = 0; u < window; ++u) {
            const Index ii = raw_position(i, u, stride, pad, n, circ);
            if (inside(ii, n)) {
              bs += is[base + ii];
              if (Ntk) bt += it[base + ii];
            }
          }
          const double wi = Weighted ? w[i] : 1.0;
          os[o + i] = sm * (wi * bs) + b;
          if (Ntk) ot[o + i] = ts * (wi * bs) + tm * (wi * bt) + e;
        };
      });
    }
  }
}

// One pass: os, ot = the coefficients k applied to the box sums of is, it (see Pass).
template <bool Ntk, class Exec>
FASTNTK_HD inline void run_pass(Exec& ex, const Pass& p, const double* is, const double* it, double* os, double* ot,
                                const PassCoef& k) {
  if (p.w) return run_pass_w<Ntk, 0, false, true>(ex, p, is, it, os, ot, k);
  if (p.stride == 1 && !p.circular) {
    switch (p.window) {
      case 2:
        return run_pass_w<Ntk, 2, true, false>(ex, p, is, it, os, ot, k);
      case 3:
        return run_pass_w<Ntk, 3, true, false>(ex, p, is, it, os, ot, k);
      case 5:
        return run_pass_w<Ntk, 5, true, false>(ex, p, is, it, os, ot, k);
      default:
        return run_pass_w<Ntk, 0, true, false>(ex, p, is, it, os, ot, k);
    }
  }
  switch (p.window) {
    case 2:
      return run_pass_w<Ntk, 2, false, false>(ex, p, is, it, os, ot, k);
    case 3:
      return run_pass_w<Ntk, 3, false, false>(ex, p, is, it, os, ot, k);
    default:
      return run_pass_w<Ntk, 0, false, false>(ex, p, is, it, os, ot, k);
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
    p.stride = op.strides[k];
    p.pad = op.pad_lo[k];
    p.circular = op.circular != 0;
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
      bs = ex.sum(s * s, [&](Index e) FASTNTK_LAMBDA_INLINE { return is[e]; });
      if (Ntk) bt = ex.sum(s * s, [&](Index e) FASTNTK_LAMBDA_INLINE { return it[e]; });
    } else {
      const Index step = full ? s + 1 : 1;  // the diagonal [i, i] of the full state
      bs = ex.sum(s, [&](Index e) FASTNTK_LAMBDA_INLINE { return is[e * step]; });
      if (Ntk) bt = ex.sum(s, [&](Index e) FASTNTK_LAMBDA_INLINE { return it[e * step]; });
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
      ex.each(e_n, [&](Index e) FASTNTK_LAMBDA_INLINE {
        const double s = is[e];
        os[e] = k.sm * s + k.b;
        if (Ntk) ot[e] = k.ts * s + k.tm * it[e] + k.e;
      });
    } else if (op.src == op.dst) {
      // The op replaces its own source: its passes alternate between spare 0 and the source's
      // buffer (first spare 0: a pass never writes what it reads), so that a serial network
      // touches two buffers, not three; the result lands in either.
      int in = src;
      for (int q = 0; q < count; ++q) {
        const int out = q % 2 == 0 ? buf.spare[0] : src;
        run_pass<Ntk>(ex, passes[q], sig(in), the(in), sig(out), the(out), q + 1 == count ? final_coef : PassCoef{1.0, 0.0, 0.0, 1.0, 0.0});
        ex.sync();
        in = out;
      }
      if (in == src) return;  // the register keeps its buffer
    } else {
      // Pass q writes spare (count - 1 - q) % 2, so that the last lands in spare 0.
      int in = src;
      for (int q = 0; q < count; ++q) {
        const int out = buf.spare[(count - 1 - q) % 2];
        run_pass<Ntk>(ex, passes[q], sig(in), the(in), sig(out), the(out), q + 1 == count ? final_coef : PassCoef{1.0, 0.0, 0.0, 1.0, 0.0});
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
  // Full regime: the entries [row0, row0 + rows) x [col0, col0 + cols) of the S x S state
  // (rows = 0: all of them). Pair mode only (see fused_conv_activation).
  Index row0 = 0, col0 = 0, rows = 0, cols = 0;

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
      ex.each(n, [&](Index e) FASTNTK_LAMBDA_INLINE {
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
      const Index i0 = row0, j0 = col0;
      const double* FASTNTK_RESTRICT yb = yq + j0;  // y's Stats from column j0 on
      ex.each_row(rows > 0 ? rows : n, rows > 0 ? cols : n, [&](Index r) FASTNTK_LAMBDA_INLINE {
        const Index i = i0 + r;
        const StatsT<double> x{xq[i], xq[n + i], xq[2 * n + i], xq[3 * n + i]};
        double* FASTNTK_RESTRICT srow = ss + i * n + j0;
        double* FASTNTK_RESTRICT trow = Ntk ? tt + i * n + j0 : nullptr;
        return [=](Index j) FASTNTK_LAMBDA_INLINE {
          const StatsT<double> y{yb[j], yb[n + j], yb[2 * n + j], yb[3 * n + j]};
          double sv = srow[j], tv = Ntk ? trow[j] : 0.0;
          if (Point && i == j0 + j) {
            double f, dot;
            Map::diag(op, coef, x.q, f, dot);
            sv = f;
            tv *= dot;
          } else {
            Map::template pair<Ntk>(op, coef, x, y, sv, tv);
          }
          srow[j] = sv;
          if (Ntk) trow[j] = tv;
        };
      });
    } else {
      ex.each(n, [&](Index e) FASTNTK_LAMBDA_INLINE {
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
      const double mean = ex.sum(n, [&](Index e) FASTNTK_LAMBDA_INLINE { return sv[e * step]; }) / static_cast<double>(n);
      ex.each(n, [&](Index e) FASTNTK_LAMBDA_INLINE { r[e] = 1.0 / detail::sqrt(mean + eps); });
    } else {
      ex.each(n, [&](Index e) FASTNTK_LAMBDA_INLINE { r[e] = 1.0 / detail::sqrt(sv[e * step] + eps); });
    }
    ex.sync();
  }
  const double* FASTNTK_RESTRICT fx = rx + op.stats;
  const double* FASTNTK_RESTRICT fy = ry + op.stats;
  double* FASTNTK_RESTRICT ss = s;
  double* FASTNTK_RESTRICT tt = t;
  if (full) {
    ex.each_row(n, n, [&](Index i) FASTNTK_LAMBDA_INLINE {
      const double fi = fx[i];
      double* FASTNTK_RESTRICT srow = ss + i * n;
      double* FASTNTK_RESTRICT trow = Ntk ? tt + i * n : nullptr;
      return [=](Index j) FASTNTK_LAMBDA_INLINE {
        const double f = fi * fy[j];
        srow[j] *= f;
        if (Ntk) trow[j] *= f;
      };
    });
  } else {
    ex.each(n, [&](Index e) FASTNTK_LAMBDA_INLINE {
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
    ex.each(e_n, [&](Index e) FASTNTK_LAMBDA_INLINE {
      os[e] = is[e];
      if (Ntk) ot[e] = it[e];
    });
  } else {
    const double w = op.move.weight;
    // src may be dst (dst += w dst): elementwise, each entry read before it is written.
    double* s2 = os;
    double* t2 = ot;
    ex.each(e_n, [&](Index e) FASTNTK_LAMBDA_INLINE {
      s2[e] += w * is[e];
      if (Ntk) t2[e] += w * it[e];
    });
  }
  ex.sync();
}


// Unit: strides 1 and no wrap (compile-time), so that pass 1's reads are contiguous vectors.
template <bool Ntk, int W0, int W1, bool Unit, class Exec, class Step>
FASTNTK_HD void conv2d_activation_blocks(Exec& ex, const SpatialLinearOp& op, const double* FASTNTK_RESTRICT is,
                                         const double* FASTNTK_RESTRICT it, double* FASTNTK_RESTRICT os,
                                         double* FASTNTK_RESTRICT ot, double* FASTNTK_RESTRICT bs_,
                                         double* FASTNTK_RESTRICT bt_, Step& step, const Op& act_op, int k, int a) {
  constexpr int kT0 = W0 > 0 ? W0 : 1, kT1 = W1 > 0 ? W1 : 1;
  const int n0 = op.in.dims[0], n1 = op.in.dims[1], m0 = op.out.dims[0], m1 = op.out.dims[1];
  const int w0 = W0 > 0 ? W0 : op.window[0], w1 = W1 > 0 ? W1 : op.window[1];
  const int s0 = Unit ? 1 : op.strides[0], s1 = Unit ? 1 : op.strides[1], p0 = op.pad_lo[0], p1 = op.pad_lo[1];
  const bool circ = Unit ? false : op.circular != 0;
  const Index s_in = Index(n0) * n1, s_out = Index(m0) * m1;
  const double sm = op.sigma_mul, b = op.beta, tsig = op.theta_from_sigma, tm = op.theta_mul, e = op.eps;
  for (Index i0 = 0; i0 < m0; ++i0) {
    // Pass 0 (axis 0 of both positions) for the whole band of output rows (i0, :):
    // band[j0, bb, d] = sum_u in[(P(u, i0), bb), (P(u, j0), d)]. Row by row of the input this
    // reads W0 rows sequentially; the band (m0 * n1 * n1 entries) then stays in cache, block
    // j0 as one contiguous n1 x n1 piece for pass 1.
    ex.each_row(Index(n1) * m0, n1, [&](Index r) FASTNTK_LAMBDA_INLINE {
      const Index bb = r / m0, j0 = r % m0;
      RowTerms<kT0> t;
      for (int u = 0; u < kT0; ++u) {
        const Index pi = position(i0, u, s0, p0, n0, circ), pj = position(j0, u, s0, p0, n0, circ);
        const bool ok = pi >= 0 && pj >= 0;
        t.off[u] = ok ? (pi * n1 + bb) * s_in + pj * n1 : 0;
        t.mask[u] = ok ? 1.0 : 0.0;
      }
      const Index o = (j0 * n1 + bb) * n1;
      return [=](Index d) FASTNTK_LAMBDA_INLINE {
        double vs = 0.0, vt = 0.0;
        if (W0 > 0) {
          for (int u = 0; u < kT0; ++u) {
            vs += t.mask[u] * is[t.off[u] + d];
            if (Ntk) vt += t.mask[u] * it[t.off[u] + d];
          }
        } else {
          for (int u = 0; u < w0; ++u) {
            const Index pi = position(i0, u, s0, p0, n0, circ), pj = position(j0, u, s0, p0, n0, circ);
            if (pi >= 0 && pj >= 0) {
              vs += is[(pi * n1 + bb) * s_in + pj * n1 + d];
              if (Ntk) vt += it[(pi * n1 + bb) * s_in + pj * n1 + d];
            }
          }
        }
        bs_[o + d] = vs;
        if (Ntk) bt_[o + d] = vt;
      };
    });
    ex.sync();
    const Index band_row = n1;  // band[j0, bb, d] at (j0 * n1 + bb) * n1 + d
    for (Index j0 = 0; j0 < m0; ++j0) {
      // Pass 1 (axis 1 of both positions) with the op's coefficients, into the output block.
      const double* FASTNTK_RESTRICT ps = bs_ + j0 * n1 * n1;
      const double* FASTNTK_RESTRICT pt = Ntk ? bt_ + j0 * n1 * n1 : nullptr;
      ex.each_row(m1, m1, [&](Index r) FASTNTK_LAMBDA_INLINE {
        RowTerms<kT1> t;
        for (int u = 0; u < kT1; ++u) {
          const Index pi = position(r, u, s1, p1, n1, circ);
          t.off[u] = pi >= 0 ? pi * band_row : 0;
          t.mask[u] = pi >= 0 ? 1.0 : 0.0;
        }
        const Index o = (i0 * m1 + r) * s_out + j0 * m1;
        return [=](Index c) FASTNTK_LAMBDA_INLINE {
          double vs = 0.0, vt = 0.0;
          for (int u = 0; u < w1; ++u) {
            const Index pj = raw_position(c, u, s1, p1, n1, circ);
            const Index pi = W1 > 0 ? 0 : position(r, u, s1, p1, n1, circ);
            const Index row = W1 > 0 ? t.off[u < kT1 ? u : 0] : pi * band_row;
            const bool ok = inside(pj, n1) && (W1 > 0 ? t.mask[u < kT1 ? u : 0] != 0.0 : pi >= 0);
            if (ok) {
              vs += ps[row + pj];
              if (Ntk) vt += pt[row + pj];
            }
          }
          os[o + c] = sm * vs + b;
          if (Ntk) ot[o + c] = tsig * vs + tm * vt + e;
        };
      });
      ex.sync();
      step.row0 = i0 * m1;
      step.col0 = j0 * m1;
      step.rows = step.cols = m1;
      visit_activation(act_op, k, a, step);
    }
  }
}

// Whether ops k, k + 1 are a 2-D full-regime Conv (both axes non-trivial) and an activation
// of its destination: conv2d_activation_blocks runs them (pair mode).
FASTNTK_HD inline bool fusable(const SpatialProgramView& prog, int k) {
  if (!prog.full || k + 1 >= prog.n_ops) return false;
  const SpatialOp& op = prog.ops[k];
  const SpatialOp& next = prog.ops[k + 1];
  return op.kind == SpatialOpKind::Linear && op.linear.map == SpatialMap::Conv && op.linear.in.n_dims == 2 &&
         !trivial_axis(op.linear, 0) && !trivial_axis(op.linear, 1) && next.kind == SpatialOpKind::Activation &&
         next.activation.reg == op.linear.dst;
}

template <bool Ntk, class Exec>
FASTNTK_HD void fused_conv_activation(Exec& ex, const SpatialProgramView& prog, int k, int a,
                                      const SpatialWorkspace& ws, Buffers& buf, const double* rx, const double* ry) {
  const SpatialLinearOp& op = prog.ops[k].linear;
  const SpatialActivationOp& act = prog.ops[k + 1].activation;
  const Index stride = ws.stride;
  const int src = buf.of[op.src], out = buf.spare[0], tmp = buf.spare[1];
  const double* is = ws.sigma + src * stride;
  const double* it = Ntk ? ws.theta + src * stride : nullptr;
  double* os = ws.sigma + out * stride;
  double* ot = Ntk ? ws.theta + out * stride : nullptr;
  double* bs = ws.sigma + tmp * stride;
  double* bt = Ntk ? ws.theta + tmp * stride : nullptr;
  ActivationStep<Ntk, false, Exec> step{ex, prog, act, os, ot, rx, ry, nullptr};
  const bool w3 = op.window[0] == 3 && op.window[1] == 3;
  const bool unit = op.strides[0] == 1 && op.strides[1] == 1 && !op.circular;
  if (w3 && unit)
    conv2d_activation_blocks<Ntk, 3, 3, true>(ex, op, is, it, os, ot, bs, bt, step, act.op, k + 1, a);
  else if (w3)
    conv2d_activation_blocks<Ntk, 3, 3, false>(ex, op, is, it, os, ot, bs, bt, step, act.op, k + 1, a);
  else
    conv2d_activation_blocks<Ntk, 0, 0, false>(ex, op, is, it, os, ot, bs, bt, step, act.op, k + 1, a);
  ex.sync();
  const int old = buf.of[op.dst];
  buf.of[op.dst] = out;
  buf.spare[0] = old;
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
    ex.each(prog.in_shape.entries(prog.full != 0), [&](Index e) FASTNTK_LAMBDA_INLINE { t0[e] = 0.0; });
    ex.sync();
  }
  int a = 0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const SpatialOp& op = prog.ops[k];
    if (!Point && fusable(prog, k)) {  // the Conv and its activation, block by block
      fused_conv_activation<Ntk>(ex, prog, k, a, ws, buf, rx, ry);
      ++k;
      ++a;
      continue;
    }
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
