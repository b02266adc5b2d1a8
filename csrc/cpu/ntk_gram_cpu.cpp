// fastntk: OpenMP driver of the analytic Gram matrices.
//
// Work is split in tiles of rows x columns. Per tile: one BLAS call gives the input
// covariances x.y/d (dsyrk for diagonal tiles of a symmetric Gram, dgemm otherwise),
// then every layer of the program runs over the tile row by row while the row is in
// L1, the layer loop outside and the pair loop inside so that each activation's
// pair loop vectorizes (transcendentals through libmvec, vecmath.hpp). Per-point
// variances are computed once for all tiles, O(N * layers). Extra memory: one tile
// per thread plus the per-point tables.
#include "row_walk.hpp"  // must precede <cmath> users (vecmath.hpp)

#include "ntk_gram_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "blas.hpp"
#include "fastntk/dual.hpp"
#include "fastntk/walk_impl.hpp"
#include "tile_loop.hpp"

namespace fastntk::cpu {
namespace {

using Index = std::int64_t;

// Per-point tables of one input set (see PointTablesT) and its diagonal at each capture.
template <class T>
struct Points {
  std::vector<T> table;  // [n_activations, 4, n]
  std::vector<T> q;      // [C, n] Sigma(x, x) at each capture
  std::vector<T> t;      // [C, n] Theta(x, x) at each capture
  Index n = 0;
  PointTablesT<T> view() const { return PointTablesT<T>{table.data(), static_cast<long long>(n)}; }
};

// What the tiles share: the program, its seeds and captures, the inputs, the point tables
// and where the outputs go.
template <class T>
struct Job {
  ProgramView prog;
  const double* seeds;  // [n_ops, P, 3], or null for T = double
  const int* capture;   // [n_ops]: the capture index written after each op, or -1
  int capture_end;      // the capture index written at the end of the program, or -1
  int n_captures;
  const double* x1;
  const double* x2;
  Index n1, n2, d;
  PointTablesT<T> t1, t2;
  double* nngp;  // [C, 1 + P, n1, n2] or null
  double* ntk;   // likewise
  bool symmetric;

  static constexpr int kPlanes = 1 + DualSize<T>::value;
  double* plane(double* base, int c, int p) const { return base + (Index(c) * kPlanes + p) * n1 * n2; }
};

template <class T>
Points<T> point_pass(const Job<T>& job, const double* x, Index n, int threads, const char* name) {
  const ProgramView& prog = job.prog;
  Points<T> pts;
  pts.n = n;
  pts.table.assign(static_cast<std::size_t>(4 * prog.n_activations) * n, T(0.0));
  pts.q.resize(static_cast<std::size_t>(job.n_captures) * n);
  pts.t.resize(static_cast<std::size_t>(job.n_captures) * n);
  const Index d = job.d;
  const double inv_d = 1.0 / static_cast<double>(d);
  Index first_bad = n;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(min : first_bad)
  for (Index i = 0; i < n; ++i) {
    const double* row = x + i * d;
    const double q0 = blas::dot(static_cast<int>(d), row, row) * inv_d;
    if (!std::isfinite(q0) || point_walk<T>(prog, job.seeds, q0, pts.table.data(), n, i, job.capture, job.capture_end,
                                            pts.q.data(), pts.t.data()) >= 0)
      first_bad = std::min(first_bad, i);
  }
  if (first_bad < n) {
    const double* row = x + first_bad * d;
    const double q0 = blas::dot(static_cast<int>(d), row, row) * inv_d;
    const std::string where = "row " + std::to_string(first_bad) + " of " + name;
    if (!std::isfinite(q0))
      throw std::invalid_argument(where +
                                  ": its squared norm overflows float64 (|x|^2 > 1.8e308); scale the "
                                  "inputs down");
    // A Gaussian(b > 0) layer diverges: rerun the point in double to name the layer and
    // the variance q reaching it.
    std::vector<double> table(4 * prog.n_activations);
    PointVisitor<double> replay{prog.coef, nullptr, table.data(), 1, 0, nullptr, nullptr, nullptr, q0, 0.0};
    const Op& op = prog.ops[walk(prog, replay)];
    throw std::invalid_argument("Gaussian(b=" + std::to_string(op.gaussian.b) + ") at layer " +
                                std::to_string(op.layer) + ": " + where +
                                " reaches the variance q=" + std::to_string(replay.q) +
                                " before this layer, where E[exp(b u^2)^2] diverges (it needs 4*b*q < 1); scale "
                                "the inputs down or use b <= 0");
  }
  return pts;
}

// Writes values (plane 0) and derivatives (planes 1..P) of a row segment.
template <class T>
void store_row(const Job<T>& job, double* base, int c, Index i, Index j0, int n, const T* v) {
  if constexpr (std::is_same_v<T, double>) {
    std::copy(v, v + n, job.plane(base, c, 0) + i * job.n2 + j0);
  } else {
    double* out = job.plane(base, c, 0) + i * job.n2 + j0;
    const Index stride = job.n1 * job.n2;
    for (int j = 0; j < n; ++j) {
      out[j] = v[j].v;
      for (int p = 0; p < DualSize<T>::value; ++p) out[(p + 1) * stride + j] = v[j].d[p];
    }
  }
}

template <bool Ntk, class T>
void store_captured(const Job<T>& job, int c, Index i, Index j0, int n, const T* s, const T* t) {
  if (job.nngp) store_row(job, job.nngp, c, i, j0, n, s);
  if (Ntk && job.ntk) store_row(job, job.ntk, c, i, j0, n, t);
}

// All layers over the pairs (i, j0 .. j0 + n): s holds x.y/d on entry; after each
// captured op the NNGP (s) and NTK (t) are written out.
template <bool Ntk, class T>
void run_row(const Job<T>& job, Index i, Index j0, int n, T* s, T* t) {
  row_walk<Ntk>(job.prog, job.seeds, job.t1, i, job.t2, j0, n, s, t, [&](int k) {
    if (job.capture[k] >= 0) store_captured<Ntk>(job, job.capture[k], i, j0, n, s, t);
  });
  if (job.capture_end >= 0) store_captured<Ntk>(job, job.capture_end, i, j0, n, s, t);
}

struct Tile {
  Index i0, j0;
  int m, n;
  bool diagonal;  // a diagonal tile of a symmetric Gram: only j >= i is computed
};

// out[j, i] = out[i, j] over the tile (its strict upper triangle for a diagonal tile),
// in 16 x 16 blocks: each block's source rows stay in L1 while its destination rows
// are written contiguously (a plain column scatter costs a cache miss per entry).
void mirror_tile(double* out, Index ld, const Tile& tile) {
  constexpr int kBlock = 16;
  for (int rb = 0; rb < tile.m; rb += kBlock) {
    const int re = std::min(rb + kBlock, tile.m);
    for (int cb = tile.diagonal ? rb : 0; cb < tile.n; cb += kBlock) {
      const int ce = std::min(cb + kBlock, tile.n);
      for (int c = cb; c < ce; ++c) {
        double* dst = out + (tile.j0 + c) * ld + tile.i0;
        const double* src = out + tile.i0 * ld + tile.j0 + c;
        const int r_end = tile.diagonal ? std::min(re, c) : re;
        for (int r = rb; r < r_end; ++r) dst[r] = src[r * ld];
      }
    }
  }
}

// Per thread: the tile's input covariances (ts x ts, double), and for T != double a row
// of them as T; one row of NTK entries.
template <class T>
struct Scratch {
  std::unique_ptr<double[]> c;
  std::unique_ptr<T[]> s, t;
};

template <bool Ntk, class T>
void run_tile(const Job<T>& job, const Tile& tile, Scratch<T>& scratch, int ldc) {
  const int d = static_cast<int>(job.d);
  const double inv_d = 1.0 / static_cast<double>(job.d);
  const double* a = job.x1 + tile.i0 * job.d;
  double* c = scratch.c.get();
  if (tile.diagonal) {
    blas::syrk_upper(tile.m, d, inv_d, a, d, c, ldc);
  } else {
    const double* b = job.x2 + tile.j0 * job.d;
    blas::gemm_abt(tile.m, tile.n, d, inv_d, a, d, b, d, c, ldc);
  }
  for (int r = 0; r < tile.m; ++r) {
    const int jb = tile.diagonal ? r : 0;
    const int len = tile.n - jb;
    double* row = c + static_cast<Index>(r) * ldc + jb;
    T* s;
    if constexpr (std::is_same_v<T, double>) {
      s = row;  // in place
    } else {
      s = scratch.s.get();
      std::copy(row, row + len, s);  // zero tangents: the inputs do not depend on the parameters
    }
    run_row<Ntk>(job, tile.i0 + r, tile.j0 + jb, len, s, scratch.t.get());
  }
  if (job.symmetric) {
    for (int cap = 0; cap < job.n_captures; ++cap)
      for (int p = 0; p < Job<T>::kPlanes; ++p) {
        if (job.nngp) mirror_tile(job.plane(job.nngp, cap, p), job.n2, tile);
        if (Ntk && job.ntk) mirror_tile(job.plane(job.ntk, cap, p), job.n2, tile);
      }
  }
}

// A portable x86-64 build (no -march) would vectorize the recursion for SSE2 only, where
// GCC does not even vectorize the arc-cosine loops. So the tile function of the kernels
// (T = double) is cloned for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the
// baseline, each clone with every callee inlined (flatten) and compiled, libmvec calls
// included, for its instruction set; the dynamic loader picks the clone for the running
// CPU once (an ifunc). A native build (-march=...) compiles the one version it needs.
FASTNTK_CLONES void run_tile_ntk(const Job<double>& job, const Tile& tile, Scratch<double>& scratch, int ldc) {
  run_tile<true>(job, tile, scratch, ldc);
}
FASTNTK_CLONES void run_tile_nngp(const Job<double>& job, const Tile& tile, Scratch<double>& scratch, int ldc) {
  run_tile<false>(job, tile, scratch, ldc);
}
template <class T>
void dispatch_tile(bool ntk, const Job<T>& job, const Tile& tile, Scratch<T>& scratch, int ldc) {
  if constexpr (std::is_same_v<T, double>) {
    if (ntk)
      run_tile_ntk(job, tile, scratch, ldc);
    else
      run_tile_nngp(job, tile, scratch, ldc);
  } else {
    if (ntk)
      run_tile<true>(job, tile, scratch, ldc);
    else
      run_tile<false>(job, tile, scratch, ldc);
  }
}

template <class T>
void gram(const ProgramView& prog, const double* x1, Index n1, const double* x2, Index n2, Index d, double* nngp,
          double* ntk, const GramOptions& opt, const std::vector<int>& capture, int capture_end, int n_captures,
          const std::vector<double>& seeds) {
  const bool symmetric = x2 == nullptr;
  const int threads = opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads();
  Job<T> job;
  job.prog = prog;
  job.seeds = seeds.empty() ? nullptr : seeds.data();
  job.capture = capture.data();
  job.capture_end = capture_end;
  job.n_captures = n_captures;
  job.x1 = x1;
  job.x2 = symmetric ? x1 : x2;
  job.n1 = n1;
  job.n2 = n2;
  job.d = d;
  job.nngp = nngp;
  job.ntk = ntk;
  job.symmetric = symmetric;
  const Points<T> p1 = point_pass(job, x1, n1, threads, "x1");
  const Points<T> p2 = symmetric ? Points<T>{} : point_pass(job, x2, n2, threads, "x2");
  job.t1 = p1.view();
  job.t2 = symmetric ? p1.view() : p2.view();

  const int ts = opt.tile > 0 ? opt.tile : default_tile(n1, n2, symmetric, threads);
  std::vector<Tile> tiles;
  for (Index i0 = 0; i0 < n1; i0 += ts)
    for (Index j0 = symmetric ? i0 : 0; j0 < n2; j0 += ts)
      tiles.push_back(Tile{i0, j0, static_cast<int>(std::min<Index>(ts, n1 - i0)),
                           static_cast<int>(std::min<Index>(ts, n2 - j0)), symmetric && i0 == j0});

  for_each_tile(
      static_cast<Index>(tiles.size()), threads, opt.interrupted,
      [ts] {
        Scratch<T> scratch;
        scratch.c = std::make_unique<double[]>(static_cast<std::size_t>(ts) * ts);
        if constexpr (!std::is_same_v<T, double>) scratch.s = std::make_unique<T[]>(ts);
        scratch.t = std::make_unique<T[]>(ts);
        return scratch;
      },
      [&](Index k, Scratch<T>& scratch, StopCheck&) { dispatch_tile(ntk != nullptr, job, tiles[k], scratch, ts); });

  if (symmetric) {
    // The exact diagonal: the tiles' own diagonal pairs went through a correlation
    // that GEMM round-off may put at 1 - 1e-16, which costs ~8 digits after acos.
    for (int c = 0; c < n_captures; ++c)
      for (Index i = 0; i < n1; ++i) {
        const T q = p1.q[c * n1 + i], t = p1.t[c * n1 + i];
        for (int p = 0; p < Job<T>::kPlanes; ++p) {
          const double qp = p == 0 ? value(q) : tangent(q, p - 1);
          const double tp = p == 0 ? value(t) : tangent(t, p - 1);
          if (nngp) job.plane(nngp, c, p)[i * n2 + i] = qp;
          if (ntk) job.plane(ntk, c, p)[i * n2 + i] = tp;
        }
      }
  }
}

}  // namespace

void ntk_diag_cpu(const Program& program, const double* x, std::int64_t n, std::int64_t d, double* nngp, double* ntk,
                  const GramOptions& opt) {
  if (n < 0) throw std::invalid_argument("ntk_diag_cpu: negative number of rows");
  if (d < 1) throw std::invalid_argument("ntk_diag_cpu: the inputs need at least one feature (d >= 1)");
  if (d > std::numeric_limits<int>::max()) throw std::invalid_argument("ntk_diag_cpu: d exceeds the 32-bit BLAS limit");
  if (n == 0) return;
  const std::vector<int> capture(std::max(program.n_ops(), 1), -1);
  Job<double> job{};
  job.prog = program.view();
  job.capture = capture.data();
  job.capture_end = 0;
  job.n_captures = 1;
  job.d = d;
  blas::use_single_thread();
  const Points<double> pts = point_pass(job, x, n, opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads(), "x");
  if (nngp) std::copy(pts.q.begin(), pts.q.end(), nngp);
  if (ntk) std::copy(pts.t.begin(), pts.t.end(), ntk);
}

int default_tile(std::int64_t n1, std::int64_t n2, bool symmetric, int n_threads) {
  // 256 x 256 keeps a tile's GEMM near BLAS peak for d in the hundreds while its
  // output (512 KiB) stays in L2; smaller tiles only to give every thread work.
  int tile = 256;
  auto count = [&](int t) {
    const Index b1 = (n1 + t - 1) / t, b2 = (n2 + t - 1) / t;
    return symmetric ? b1 * (b1 + 1) / 2 : b1 * b2;
  };
  while (tile > 32 && count(tile) < 4 * static_cast<Index>(std::max(n_threads, 1))) tile /= 2;
  return tile;
}

void ntk_gram_cpu(const Program& program, const double* x1, std::int64_t n1, const double* x2, std::int64_t n2,
                  std::int64_t d, double* nngp, double* ntk, const GramOptions& opt) {
  ntk_gram_cpu(program, x1, n1, x2, n2, d, nngp, ntk, opt, GramRequest{});
}

void ntk_gram_cpu(const Program& program, const double* x1, std::int64_t n1, const double* x2, std::int64_t n2,
                  std::int64_t d, double* nngp, double* ntk, const GramOptions& opt, const GramRequest& req) {
  const bool symmetric = x2 == nullptr;
  if (symmetric) n2 = n1;
  if (n1 < 0 || n2 < 0) throw std::invalid_argument("ntk_gram_cpu: negative number of rows");
  if (d < 1) throw std::invalid_argument("ntk_gram_cpu: the inputs need at least one feature (d >= 1)");
  if (d > std::numeric_limits<int>::max()) throw std::invalid_argument("ntk_gram_cpu: d exceeds the 32-bit BLAS limit");
  if (!nngp && !ntk) throw std::invalid_argument("ntk_gram_cpu: neither nngp nor ntk requested");
  if (opt.tile < 0 || opt.tile > 4096) throw std::invalid_argument("ntk_gram_cpu: tile must be in [0, 4096]");
  const int n_ops = program.n_ops();
  const int P = req.n_directions;
  if (P < 0 || P > kMaxDirections)
    throw std::invalid_argument("ntk_gram_cpu: n_directions must be in [0, " + std::to_string(kMaxDirections) +
                                "], got " + std::to_string(P));
  if (req.seeds.size() != static_cast<std::size_t>(n_ops) * P * 3)
    throw std::invalid_argument(
        "ntk_gram_cpu: seeds must hold n_ops * n_directions * 3 = " + std::to_string(std::size_t(n_ops) * P * 3) +
        " values, got " + std::to_string(req.seeds.size()));
  // capture[k]: the index of the capture written after op k, or -1; capture_end: at the end.
  std::vector<int> capture(std::max(n_ops, 1), -1);
  int capture_end = -1, n_captures = 0;
  if (req.capture_after.empty()) {
    capture_end = 0;
    n_captures = 1;
  } else {
    int last = -1;
    for (int k : req.capture_after) {
      if (k <= last || k >= n_ops)
        throw std::invalid_argument("ntk_gram_cpu: capture_after must be increasing op indices in [0, " +
                                    std::to_string(n_ops) + "), got " + std::to_string(k) + " after " +
                                    std::to_string(last));
      capture[k] = n_captures++;
      last = k;
    }
  }
  if (n1 == 0 || n2 == 0) return;
  if (!x1) throw std::invalid_argument("ntk_gram_cpu: x1 is null");

  const ProgramView prog = program.view();
  blas::use_single_thread();
  switch (P) {
    case 0:
      gram<double>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
      break;
    case 1:
      gram<Dual<1>>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
      break;
    case 2:
      gram<Dual<2>>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
      break;
    default:
      gram<Dual<3>>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
      break;
  }
}

}  // namespace fastntk::cpu
