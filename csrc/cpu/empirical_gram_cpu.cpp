// fastntk: OpenMP driver of the empirical kernels (sums of Hadamard products of Grams).
//
// The output is cut into blocks of points (x rows by y columns). Per block and term, two
// BLAS calls give the Gram of the A rows and the Gram of the B rows (dsyrk on diagonal
// blocks of a symmetric call, dgemm otherwise); their Hadamard product is added to a
// per-thread accumulator while both are still in cache, and the accumulator is written
// to the output once, after the last term. Traced and full kernels read the same B
// buffer [n, m, q] two ways:
//   traced: one row per point, of length m*q, so one GEMM sums over the outputs o as
//           well as over the units: G[i, j] = sum_o <b^o(x_i), b^o(y_j)>;
//   full:   one row per (point, output), of length q: G[(i, o), (j, o')], which the
//           accumulation reorders into the output layout [i, j, o, o'].
// Extra memory: the accumulator and two Gram buffers per thread, O(tile^2) (times m^2
// for the full kernel); nothing that grows with the number of parameters.
#include "empirical_gram_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "blas.hpp"
#include "fastntk/config.hpp"
#include "tile_loop.hpp"
#include "tiles.hpp"

namespace fastntk::cpu {
namespace {

using Index = std::int64_t;

struct Problem {
  const GramTerm* terms;
  int n_terms;
  Index m;
  bool symmetric, trace, accumulate;
  double scale;
  Index ld;
  double* out;
  Index block_size() const { return trace ? 1 : m * m; }  // output entries per pair of points
};

// c[r, c'] = alpha * <x_r, y_c'> for panels of k-vectors (upper triangle only if diagonal,
// where y == x and rows == cols).
void panel_gram(bool diagonal, int rows, int cols, int k, double alpha, const double* x, const double* y, double* c,
                int ldc) {
  if (diagonal)
    blas::syrk_upper(rows, k, alpha, x, k, c, ldc);
  else
    blas::gemm_abt(rows, cols, k, alpha, x, k, y, k, c, ldc);
}

// Per-thread buffers: ga [rows, cols], gb and acc [rows * cols * block_size].
struct Scratch {
  std::unique_ptr<double[]> ga, gb, acc;
};

// acc[r, c] += (ga[r, c] + bias) * gb[r, c]: one term of a traced block.
void add_traced_term(const Problem& pb, const GramTerm& t, const Tile& b, const double* ga, const double* gb,
                     double* acc) {
  const bool identity = t.b1 == nullptr;
  const double trace_identity = static_cast<double>(pb.m);  // sum_o <e_o, e_o>
  const double bias = t.bias;
  for (int r = 0; r < b.rows; ++r) {
    const int c0 = b.diagonal ? r : 0;
    double* FASTNTK_RESTRICT dst = acc + static_cast<Index>(r) * b.cols;
    const double* FASTNTK_RESTRICT gar = ga ? ga + static_cast<Index>(r) * b.cols : nullptr;
    const double* FASTNTK_RESTRICT gbr = gb + static_cast<Index>(r) * b.cols;
    if (gar && !identity) {
#pragma omp simd
      for (int c = c0; c < b.cols; ++c) dst[c] += (gar[c] + bias) * gbr[c];
    } else if (gar) {
#pragma omp simd
      for (int c = c0; c < b.cols; ++c) dst[c] += (gar[c] + bias) * trace_identity;
    } else if (!identity) {
#pragma omp simd
      for (int c = c0; c < b.cols; ++c) dst[c] += bias * gbr[c];
    } else {
      for (int c = c0; c < b.cols; ++c) dst[c] += bias * trace_identity;
    }
  }
}

// acc[r, c, o, o'] += (ga[r, c] + bias) * gb[(r, o), (c, o')]: one term of a full block.
void add_full_term(const Problem& pb, const GramTerm& t, const Tile& b, const double* ga, double* gb, double* acc) {
  const int m = static_cast<int>(pb.m);
  const Index ldb = static_cast<Index>(b.cols) * m;
  const bool identity = t.b1 == nullptr;
  if (b.diagonal && !identity) {
    // dsyrk filled the upper triangle of the (point, output) Gram; the pairs (i, i)
    // also need its lower part within the m x m diagonal blocks.
    for (int r = 0; r < b.rows; ++r) {
      double* blk = gb + static_cast<Index>(r) * m * ldb + static_cast<Index>(r) * m;
      for (int o = 1; o < m; ++o)
        for (int o2 = 0; o2 < o; ++o2) blk[o * ldb + o2] = blk[o2 * ldb + o];
    }
  }
  for (int r = 0; r < b.rows; ++r) {
    for (int c = b.diagonal ? r : 0; c < b.cols; ++c) {
      const double g = (ga ? ga[static_cast<Index>(r) * b.cols + c] : 0.0) + t.bias;
      double* FASTNTK_RESTRICT dst = acc + (static_cast<Index>(r) * b.cols + c) * m * m;
      if (identity) {
        for (int o = 0; o < m; ++o) dst[o * m + o] += g;
        continue;
      }
      const double* src = gb + static_cast<Index>(r) * m * ldb + static_cast<Index>(c) * m;
      for (int o = 0; o < m; ++o) {
        const double* FASTNTK_RESTRICT row = src + o * ldb;
        double* FASTNTK_RESTRICT d = dst + o * m;
#pragma omp simd
        for (int o2 = 0; o2 < m; ++o2) d[o2] += g * row[o2];
      }
    }
  }
}

void run_block(const Problem& pb, const Tile& b, Scratch& s, StopCheck& check) {
  const Index bs = pb.block_size();
  const int m = static_cast<int>(pb.m);
  std::fill(s.acc.get(), s.acc.get() + static_cast<Index>(b.rows) * b.cols * bs, 0.0);
  for (int k = 0; k < pb.n_terms; ++k) {
    if (check.stopped()) return;  // the output is abandoned anyway
    const GramTerm& t = pb.terms[k];
    const bool identity = t.b1 == nullptr;
    if (!identity && t.q == 0) continue;  // <b, b'> = 0: the term vanishes
    const double* ga = nullptr;
    if (t.p > 0) {
      const double* y = pb.symmetric ? t.a1 : t.a2;
      panel_gram(b.diagonal, b.rows, b.cols, static_cast<int>(t.p), t.weight, t.a1 + b.i0 * t.p, y + b.j0 * t.p,
                 s.ga.get(), b.cols);
      ga = s.ga.get();
    }
    if (!identity) {
      const double* y = pb.symmetric ? t.b1 : t.b2;
      const Index point = pb.m * t.q;  // doubles per point in b
      if (pb.trace)
        panel_gram(b.diagonal, b.rows, b.cols, static_cast<int>(point), 1.0, t.b1 + b.i0 * point, y + b.j0 * point,
                   s.gb.get(), b.cols);
      else
        panel_gram(b.diagonal, b.rows * m, b.cols * m, static_cast<int>(t.q), 1.0, t.b1 + b.i0 * point,
                   y + b.j0 * point, s.gb.get(), b.cols * m);
    }
    if (pb.trace)
      add_traced_term(pb, t, b, ga, s.gb.get(), s.acc.get());
    else
      add_full_term(pb, t, b, ga, s.gb.get(), s.acc.get());
  }

  // Write the block: rows of the output are contiguous over (j, o, o').
  for (int r = 0; r < b.rows; ++r) {
    const int c0 = b.diagonal ? r : 0;
    const Index len = (b.cols - c0) * bs;
    double* FASTNTK_RESTRICT dst = pb.out + ((b.i0 + r) * pb.ld + b.j0 + c0) * bs;
    const double* FASTNTK_RESTRICT src = s.acc.get() + (static_cast<Index>(r) * b.cols + c0) * bs;
    const double scale = pb.scale;
    if (pb.accumulate) {
#pragma omp simd
      for (Index e = 0; e < len; ++e) dst[e] += scale * src[e];
    } else {
#pragma omp simd
      for (Index e = 0; e < len; ++e) dst[e] = scale * src[e];
    }
  }

  // Mirror: out[j, i] = out[i, j]^T (the final values, so accumulating calls stay
  // symmetric too), while the block is still in cache.
  if (pb.symmetric) mirror_tile(pb.out, pb.ld, b, pb.trace ? 1 : m, [&] { return check.stopped(); });
}

void check_int(Index v, const std::string& what) {
  if (v > std::numeric_limits<int>::max())
    throw std::invalid_argument("empirical_gram_cpu: " + what + " = " + std::to_string(v) +
                                " exceeds the 32-bit BLAS limit");
}

}  // namespace

int empirical_default_tile(std::int64_t n1, std::int64_t n2, std::int64_t m, bool trace, bool symmetric,
                           int n_threads) {
  // A block's Gram buffers have (side * rows_per_point)^2 entries; 256 rows keep them
  // (512 KiB each) in L2 while the GEMMs run near BLAS peak. Square blocks of points, never
  // below 32 rows (BLAS efficiency) or one point; smaller only to give every thread work.
  const Index per_point = trace ? 1 : std::max<Index>(m, 1);
  const int side = static_cast<int>(std::max<Index>(256 / per_point, 1));
  const int min_side = static_cast<int>(std::max<Index>(32 / per_point, 1));
  return tile_shape(n1, n2, symmetric, n_threads, TileShape{side, side}, min_side).rows;
}

void empirical_gram_cpu(const GramTerm* terms, int n_terms, std::int64_t n1, std::int64_t n2, std::int64_t m,
                        bool symmetric, double* out, const EmpiricalOptions& opt) {
  // ---- Validation, all before the parallel region.
  if (symmetric && n2 != n1) throw std::invalid_argument("empirical_gram_cpu: a symmetric call needs n2 == n1");
  if (n1 < 0 || n2 < 0) throw std::invalid_argument("empirical_gram_cpu: negative number of points");
  if (m < 1) throw std::invalid_argument("empirical_gram_cpu: m (outputs) must be >= 1");
  if (n_terms < 0 || (n_terms > 0 && !terms)) throw std::invalid_argument("empirical_gram_cpu: bad term list");
  const Index ld = opt.ld > 0 ? opt.ld : n2;
  if (ld < n2) throw std::invalid_argument("empirical_gram_cpu: ld must be >= n2");
  if (opt.tile < 0 || opt.tile > 4096) throw std::invalid_argument("empirical_gram_cpu: tile must be in [0, 4096]");
  if (n1 == 0 || n2 == 0) return;
  if (!out) throw std::invalid_argument("empirical_gram_cpu: out is null");
  for (int k = 0; k < n_terms; ++k) {
    const GramTerm& t = terms[k];
    const std::string name = "term " + std::to_string(k);
    if (t.p < 0 || t.q < 0) throw std::invalid_argument("empirical_gram_cpu: " + name + " has a negative size");
    if (t.p > 0 && (!t.a1 || (!symmetric && !t.a2)))
      throw std::invalid_argument("empirical_gram_cpu: " + name + " has p > 0 but no A rows");
    if (!t.b1 && t.q != m)
      throw std::invalid_argument("empirical_gram_cpu: " + name + " is an identity B, which needs q == m");
    if (t.b1 && !symmetric && !t.b2) throw std::invalid_argument("empirical_gram_cpu: " + name + " has no b2");
    check_int(t.p, name + " p");
    check_int(m * t.q, name + " m*q");
  }

  // Work: two multiply-adds per pair of points and entry of the rows of A and B.
  double row_entries = 0.0;
  for (int k = 0; k < n_terms; ++k)
    row_entries += static_cast<double>(terms[k].p) +
                   static_cast<double>(terms[k].b1 ? terms[k].q * m : 1) * (opt.trace ? 1.0 : static_cast<double>(m));
  const double pairs = static_cast<double>(n1) * static_cast<double>(n2) * (symmetric ? 0.5 : 1.0);
  const int threads =
      useful_threads(opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads(), 2.0 * pairs * row_entries);
  const int side = opt.tile > 0 ? opt.tile : empirical_default_tile(n1, n2, m, opt.trace, symmetric, threads);
  check_int(static_cast<Index>(side) * m, "tile * m");
  const Problem pb{terms, n_terms, m, symmetric, opt.trace, opt.accumulate, opt.scale, ld, out};

  const std::vector<Tile> blocks = tile_grid(n1, n2, symmetric, TileShape{side, side});

  // ---- The parallel part.
  blas::use_single_thread();
  const std::size_t pair_entries = static_cast<std::size_t>(side) * side;
  const std::size_t gram_entries = pair_entries * static_cast<std::size_t>(pb.block_size());
  for_each_tile(
      static_cast<Index>(blocks.size()), threads, opt.interrupted,
      [&] {
        Scratch s;
        s.ga.reset(new double[pair_entries]);
        s.gb.reset(new double[gram_entries]);
        s.acc.reset(new double[gram_entries]);
        return s;
      },
      [&](Index k, Scratch& s, StopCheck& check) { run_block(pb, blocks[k], s, check); });
}

}  // namespace fastntk::cpu
