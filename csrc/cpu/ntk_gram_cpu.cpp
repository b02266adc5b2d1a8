// fastntk: OpenMP driver of the analytic Gram matrices.
//
// Work is split in tiles of rows x columns. Per tile: one BLAS call gives the input
// covariances x.y/d (dsyrk for diagonal tiles of a symmetric Gram, dgemm otherwise),
// then every layer of the program runs over the tile row by row while the row is in
// L1, the layer loop outside and the pair loop inside so that each activation's
// pair loop vectorizes (transcendentals through libmvec, vecmath.hpp). Per-point
// variances are computed once for all tiles, O(N * layers). Extra memory: one tile
// per thread plus the per-point tables.
#include "vecmath.hpp"  // must precede <cmath> users: gives acos & co. their SIMD variants

#include "ntk_gram_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "blas.hpp"
#include "fastntk/activations.hpp"
#include "fastntk/recursion.hpp"
#include "tile_loop.hpp"

namespace fastntk::cpu {
namespace {

using Index = std::int64_t;

// Per-point tables of one input set (see PointTables), and its final diagonal.
struct Points {
  std::vector<double> table;  // [n_activations, 4, n]
  std::vector<double> q;      // [n] final Sigma(x, x)
  std::vector<double> t;      // [n] final Theta(x, x)
  PointTables view() const { return PointTables{table.data(), static_cast<long long>(q.size())}; }
};

Points point_pass(const ProgramView& prog, const double* x, Index n, Index d, int threads, const char* name) {
  Points pts;
  pts.table.assign(static_cast<std::size_t>(4 * prog.n_activations) * n, 0.0);
  pts.q.resize(n);
  pts.t.resize(n);
  Index first_bad = n;
  const double inv_d = 1.0 / static_cast<double>(d);
#pragma omp parallel for num_threads(threads) schedule(static) reduction(min : first_bad)
  for (Index i = 0; i < n; ++i) {
    const double* row = x + i * d;
    const double q0 = blas::dot(static_cast<int>(d), row, row) * inv_d;
    if (!std::isfinite(q0) || point_recursion(prog, q0, pts.table.data(), n, i, pts.q[i], pts.t[i]) >= 0)
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
    double q, t;
    const Op& op = prog.ops[point_recursion(prog, q0, pts.table.data(), n, first_bad, q, t)];
    throw std::invalid_argument("Gaussian(b=" + std::to_string(op.p[1]) + ") at layer " + std::to_string(op.layer) +
                                ": " + where + " reaches the variance q=" + std::to_string(q) +
                                " before this layer, where E[exp(b u^2)^2] diverges (it needs 4*b*q < 1); scale "
                                "the inputs down or use b <= 0");
  }
  return pts;
}

// One activation over a row segment: s[j], t[j] <- pair(x, y_j).
template <class Map, bool Ntk>
void activation_row(const Op& op_ref, const double* coef, const Stats x, const PointTables& ty, int a, Index j0, int n,
                    double* FASTNTK_RESTRICT s, double* FASTNTK_RESTRICT t) {
  const Op op = op_ref;  // a local copy: its loads are then loop invariant
  const double* FASTNTK_RESTRICT qy = ty.field(a, 0) + j0;
  const double* FASTNTK_RESTRICT ay = ty.field(a, 1) + j0;
  const double* FASTNTK_RESTRICT by = ty.field(a, 2) + j0;
  const double* FASTNTK_RESTRICT cy = ty.field(a, 3) + j0;
#pragma omp simd
  for (int j = 0; j < n; ++j) {
    const Stats y{qy[j], ay[j], by[j], cy[j]};
    double sj = s[j], tj = Ntk ? t[j] : 0.0;
    Map::template pair<Ntk>(op, coef, x, y, sj, tj);
    s[j] = sj;
    if (Ntk) t[j] = tj;
  }
}

template <bool Ntk>
void dense_row(const Op& op_ref, int n, double* FASTNTK_RESTRICT s, double* FASTNTK_RESTRICT t) {
  const Op op = op_ref;
#pragma omp simd
  for (int j = 0; j < n; ++j) {
    double sj = s[j], tj = Ntk ? t[j] : 0.0;
    dense_pair<Ntk>(op, sj, tj);
    s[j] = sj;
    if (Ntk) t[j] = tj;
  }
}

// All layers over the pairs (i, j0 .. j0 + n): s holds x.y/d on entry, the NNGP on exit;
// t receives the NTK.
template <bool Ntk>
void run_row(const ProgramView& prog, const PointTables& tx, Index i, const PointTables& ty, Index j0, int n, double* s,
             double* t) {
  if (Ntk) std::fill(t, t + n, 0.0);
  int a = 0;
  for (int k = 0; k < prog.n_ops; ++k) {
    const Op& op = prog.ops[k];
    if (op.kind == OpKind::Dense) {
      dense_row<Ntk>(op, n, s, t);
      continue;
    }
    const Stats x = tx.at(a, i);
    switch (op.kind) {
#define FASTNTK_ROW_CASE(kind, map)                                 \
  case OpKind::kind:                                                \
    activation_row<map, Ntk>(op, prog.coef, x, ty, a, j0, n, s, t); \
    break;
      FASTNTK_FOR_EACH_ACTIVATION(FASTNTK_ROW_CASE)
#undef FASTNTK_ROW_CASE
      default:
        break;
    }
    ++a;
  }
}

struct Tile {
  Index i0, j0;
  int m, n;
  bool diagonal;  // a diagonal tile of a symmetric Gram: only j >= i is computed
};

struct Job {
  ProgramView prog;
  const double* x1;
  const double* x2;
  Index n2, d;
  PointTables t1, t2;
  double* nngp;
  double* ntk;
  bool symmetric;
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

template <bool Ntk>
void run_tile(const Job& job, const Tile& tile, double* c, int ldc, double* t) {
  const int d = static_cast<int>(job.d);
  const double inv_d = 1.0 / static_cast<double>(job.d);
  const double* a = job.x1 + tile.i0 * job.d;
  if (tile.diagonal) {
    blas::syrk_upper(tile.m, d, inv_d, a, d, c, ldc);
  } else {
    const double* b = job.x2 + tile.j0 * job.d;
    blas::gemm_abt(tile.m, tile.n, d, inv_d, a, d, b, d, c, ldc);
  }
  for (int r = 0; r < tile.m; ++r) {
    const int jb = tile.diagonal ? r : 0;
    const int len = tile.n - jb;
    double* s = c + static_cast<Index>(r) * ldc + jb;
    const Index i = tile.i0 + r;
    const Index j0 = tile.j0 + jb;
    run_row<Ntk>(job.prog, job.t1, i, job.t2, j0, len, s, t);
    if (job.nngp) std::copy(s, s + len, job.nngp + i * job.n2 + j0);
    if (Ntk && job.ntk) std::copy(t, t + len, job.ntk + i * job.n2 + j0);
  }
  if (job.symmetric) {
    if (job.nngp) mirror_tile(job.nngp, job.n2, tile);
    if (Ntk && job.ntk) mirror_tile(job.ntk, job.n2, tile);
  }
}

// A portable x86-64 build (no -march) would vectorize the recursion for SSE2 only, where
// GCC does not even vectorize the arc-cosine loops. So the tile function is cloned for
// x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, each clone with every
// callee inlined (flatten) and compiled, libmvec calls included, for its instruction
// set; the dynamic loader picks the clone for the running CPU once (an ifunc).
// A native build (-march=...) compiles the one version it needs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)
#define FASTNTK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#define FASTNTK_RUNTIME_DISPATCH 1
#else
#define FASTNTK_CLONES
#define FASTNTK_RUNTIME_DISPATCH 0
#endif
FASTNTK_CLONES void run_tile_ntk(const Job& job, const Tile& tile, double* c, int ldc, double* t) {
  run_tile<true>(job, tile, c, ldc, t);
}
FASTNTK_CLONES void run_tile_nngp(const Job& job, const Tile& tile, double* c, int ldc, double* t) {
  run_tile<false>(job, tile, c, ldc, t);
}

}  // namespace

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
  const bool symmetric = x2 == nullptr;
  if (symmetric) n2 = n1;
  if (n1 < 0 || n2 < 0) throw std::invalid_argument("ntk_gram_cpu: negative number of rows");
  if (d < 1) throw std::invalid_argument("ntk_gram_cpu: the inputs need at least one feature (d >= 1)");
  if (d > std::numeric_limits<int>::max()) throw std::invalid_argument("ntk_gram_cpu: d exceeds the 32-bit BLAS limit");
  if (!nngp && !ntk) throw std::invalid_argument("ntk_gram_cpu: neither nngp nor ntk requested");
  if (opt.tile < 0 || opt.tile > 4096) throw std::invalid_argument("ntk_gram_cpu: tile must be in [0, 4096]");
  if (n1 == 0 || n2 == 0) return;
  if (!x1) throw std::invalid_argument("ntk_gram_cpu: x1 is null");

  const ProgramView prog = program.view();
  const int threads = opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads();
  blas::use_single_thread();

  const Points p1 = point_pass(prog, x1, n1, d, threads, "x1");
  const Points p2 = symmetric ? Points{} : point_pass(prog, x2, n2, d, threads, "x2");

  const int ts = opt.tile > 0 ? opt.tile : default_tile(n1, n2, symmetric, threads);
  std::vector<Tile> tiles;
  for (Index i0 = 0; i0 < n1; i0 += ts)
    for (Index j0 = symmetric ? i0 : 0; j0 < n2; j0 += ts)
      tiles.push_back(Tile{i0, j0, static_cast<int>(std::min<Index>(ts, n1 - i0)),
                           static_cast<int>(std::min<Index>(ts, n2 - j0)), symmetric && i0 == j0});

  const Job job{prog, x1,       symmetric ? x1 : x2, n2, d, p1.view(), symmetric ? p1.view() : p2.view(), nngp,
                ntk,  symmetric};
  // Per thread: the tile's input covariances (ts x ts) and one row of NTK entries.
  struct Scratch {
    std::unique_ptr<double[]> c, t;
  };
  for_each_tile(
      static_cast<Index>(tiles.size()), threads, opt.interrupted,
      [ts] {
        return Scratch{std::make_unique<double[]>(static_cast<std::size_t>(ts) * ts), std::make_unique<double[]>(ts)};
      },
      [&](Index k, Scratch& scratch, StopCheck&) {
        if (ntk)
          run_tile_ntk(job, tiles[k], scratch.c.get(), ts, scratch.t.get());
        else
          run_tile_nngp(job, tiles[k], scratch.c.get(), ts, scratch.t.get());
      });

  if (symmetric) {
    // The exact diagonal: the tiles' own diagonal pairs went through a correlation
    // that GEMM round-off may put at 1 - 1e-16, which costs ~8 digits after acos.
    for (Index i = 0; i < n1; ++i) {
      if (nngp) nngp[i * n2 + i] = p1.q[i];
      if (ntk) ntk[i * n2 + i] = p1.t[i];
    }
  }
}

BuildInfo build_info() {
  BuildInfo info;
#ifdef _OPENMP
  info.openmp = _OPENMP;
#else
  info.openmp = 0;
#endif
  info.blas = blas::config();
  info.blas_core = blas::core();
  info.simd_dispatch = FASTNTK_RUNTIME_DISPATCH;
#if FASTNTK_RUNTIME_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) {
    info.simd = "AVX-512";
    info.simd_doubles = 8;
  } else if (__builtin_cpu_supports("x86-64-v3")) {
    info.simd = "AVX2";
    info.simd_doubles = 4;
  } else {
    info.simd = "SSE2";
    info.simd_doubles = 2;
  }
#elif defined(__AVX512F__)
  info.simd = "AVX-512";
  info.simd_doubles = 8;
#elif defined(__AVX2__)
  info.simd = "AVX2";
  info.simd_doubles = 4;
#elif defined(__SSE2__)
  info.simd = "SSE2";
  info.simd_doubles = 2;
#elif defined(__ARM_NEON)
  info.simd = "NEON";
  info.simd_doubles = 2;
#else
  info.simd = "scalar";
  info.simd_doubles = 1;
#endif
  info.libmvec = FASTNTK_HAVE_LIBMVEC;
  info.max_threads = omp_get_max_threads();
  return info;
}

}  // namespace fastntk::cpu
