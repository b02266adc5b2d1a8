// fastntk: OpenMP driver of the analytic Gram matrices.
//
// Work is split in tiles of rows x columns (tiles.hpp; the upper triangle's for x2 = None),
// taken by the threads one at a time. Per tile: BLAS gives the input covariances x.y/d
// (dsyrk on the diagonal square of a symmetric Gram, dgemm elsewhere), then every layer of
// the program runs over the tile row by row while the row is in L1, the layer loop
// outside and the pair loop inside so that each activation's pair loop vectorizes
// (transcendentals through libmvec, vecmath.hpp); a symmetric Gram's tile is then
// mirrored into the lower triangle while it is still in cache. The plain kernels are
// computed in the outputs themselves: the GEMM writes the NNGP output and the walk
// overwrites it in place and writes the NTK output, so no entry is copied. Per-point
// variances are computed once for all tiles, O(N * layers). Extra memory: two rows per
// thread (plus a tile per thread for captures and derivatives) and the per-point tables.
#include "row_walk.hpp"  // must precede <cmath> users (vecmath.hpp)

#include "ntk_gram_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
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
#include "tiles.hpp"

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
  // For T = Dual<P>: t1 and t2 by plane ([n_activations, 4, 1 + P, n], PlanePointTables),
  // what the derivative walk reads.
  const double* planes1 = nullptr;
  const double* planes2 = nullptr;
  double* nngp;  // [C, 1 + P, n1, n2] or null
  double* ntk;   // likewise
  bool symmetric;
  // The plain kernels in double: tiles computed in the outputs themselves (see gram).
  bool in_place = false;
  // Set when an in-place tile wrote a non-finite entry (checked while its row is in L1).
  std::atomic<bool>* not_finite = nullptr;

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

// Writes values (plane 0) and derivatives (planes 1..P) of a row segment, whose planes
// lie n apart in v (by plane, as the derivative walk keeps its rows).
template <class T>
void store_row(const Job<T>& job, double* base, int c, Index i, Index j0, int n, const double* v) {
  for (int p = 0; p < Job<T>::kPlanes; ++p)
    std::copy(v + Index(p) * n, v + Index(p + 1) * n, job.plane(base, c, p) + i * job.n2 + j0);
}

template <bool Ntk, class T>
void store_captured(const Job<T>& job, int c, Index i, Index j0, int n, const double* s, const double* t) {
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

// Whether v[0 .. n) are all finite: x * 0 is 0 for finite x and NaN for NaN and +-Inf, so
// one vectorized sum over the row (still in L1) tells.
inline bool all_finite(const double* FASTNTK_RESTRICT v, int n) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int j = 0; j < n; ++j) acc += v[j] * 0.0;
  return acc == 0.0;
}

// Per thread: the tile's input covariances when they cannot be walked in place (see
// Job::in_place), [rows, cols]; rows for the walk, of Job<T>::kPlanes planes of cols
// (one for T = double): s (a copy of a row when it is not walked where it lies) and t
// (the NTK row when it is not written straight out).
template <class T>
struct Scratch {
  std::unique_ptr<double[]> c, s, t;
};

// The tile's input covariances x.y / d into c (leading dimension ldc): dsyrk for the
// square on the diagonal of a diagonal tile (upper triangle only), dgemm for the rest.
template <class T>
void tile_covariances(const Job<T>& job, const Tile& tile, double* c, int ldc) {
  const int d = static_cast<int>(job.d);
  const double inv_d = 1.0 / static_cast<double>(job.d);
  const double* a = job.x1 + tile.i0 * job.d;
  int done = 0;
  if (tile.diagonal) {
    blas::syrk_upper(tile.rows, d, inv_d, a, d, c, ldc);
    done = tile.rows;
  }
  if (tile.cols > done)
    blas::gemm_abt(tile.rows, tile.cols - done, d, inv_d, a, d, job.x2 + (tile.j0 + done) * job.d, d, c + done, ldc);
}

// The rows of a band mirrored at once in the in-place walk (see run_tile): one 8 x 8 block
// of pairs high, what mirror_tile transposes in registers.
constexpr int kMirrorRows = 8;
// The pairs of a row walked at once in place: their s and t rows (16 KiB) stay in L1 while
// every layer runs over them, however wide the tile is.
constexpr int kWalkCols = 1024;

// The float64 kernels' tile (the dual-number path has its own, run_tile_planes).
template <bool Ntk>
void run_tile(const Job<double>& job, const Tile& tile, Scratch<double>& scratch, StopCheck& check) {
  const auto stopped = [&] { return check.stopped(); };  // also asked within the mirror
  // In place, the covariances go straight into an output (the NNGP's if requested, else
  // the NTK's) and each row is walked where it lies; otherwise into the scratch tile.
  double* c = scratch.c.get();
  Index ldc = tile.cols;
  if (job.in_place) {
    c = (job.nngp ? job.nngp : job.ntk) + tile.i0 * job.n2 + tile.j0;
    ldc = job.n2;
  }
  tile_covariances(job, tile, c, static_cast<int>(ldc));
  for (int r = 0; r < tile.rows; ++r) {
    // A tile of a deep network can take a second: a stop request is also seen between its
    // rows (the outputs are abandoned then, so the tile is left unfinished).
    if (check.stopped()) return;
    const int jb = tile.diagonal ? r : 0;
    const int len = tile.cols - jb;
    const Index i = tile.i0 + r, j0 = tile.j0 + jb;
    double* row = c + r * ldc + jb;
    if (job.in_place) {
      bool finite = true;
      // The row is walked in segments of kWalkCols pairs, each in L1 for all layers.
      for (int a = 0; a < len; a += kWalkCols) {
        const int m = std::min(kWalkCols, len - a);
        double* seg = row + a;
        if (job.nngp) {
          double* t = job.ntk ? job.ntk + i * job.n2 + j0 + a : scratch.t.get();
          run_row<Ntk>(job, i, j0 + a, m, seg, t);
          finite = finite && all_finite(seg, m) && (!Ntk || !job.ntk || all_finite(t, m));
        } else {  // the NTK alone: row is its output, the NNGP walks in a copy
          std::copy(seg, seg + m, scratch.s.get());
          run_row<Ntk>(job, i, j0 + a, m, scratch.s.get(), seg);
          finite = finite && all_finite(seg, m);
        }
      }
      if (!finite) job.not_finite->store(true, std::memory_order_relaxed);
      // A symmetric Gram mirrors each band of kMirrorRows rows as soon as it is done,
      // while its rows (both outputs) are still in L2, rather than the whole tile after.
      if (job.symmetric && ((r + 1) % kMirrorRows == 0 || r + 1 == tile.rows)) {
        const int rb = r - r % kMirrorRows, jb0 = tile.diagonal ? rb : 0;
        const Tile band{tile.i0 + rb, tile.j0 + jb0, r + 1 - rb, tile.cols - jb0, tile.diagonal};
        if (job.nngp && !mirror_tile(job.nngp, job.n2, band, 1, stopped)) return;
        if (Ntk && job.ntk && !mirror_tile(job.ntk, job.n2, band, 1, stopped)) return;
      }
      continue;
    }
    run_row<Ntk>(job, i, j0, len, row, scratch.t.get());  // in place in the scratch tile
  }
  // A symmetric Gram's tile is mirrored here, unless it was in place (by bands, above).
  if (job.symmetric && !job.in_place) {
    for (int cap = 0; cap < job.n_captures; ++cap) {
      if (job.nngp && !mirror_tile(job.plane(job.nngp, cap, 0), job.n2, tile, 1, stopped)) return;
      if (Ntk && job.ntk && !mirror_tile(job.plane(job.ntk, cap, 0), job.n2, tile, 1, stopped)) return;
    }
  }
}

// run_row and run_tile for T = Dual<P>: the walk by plane (row_walk_planes), s and t
// holding 1 + P planes of n.
template <bool Ntk, int P>
void run_row_planes(const Job<Dual<P>>& job, const PlanePointTables<P>& t1, const PlanePointTables<P>& t2, Index i,
                    Index j0, int n, double* s, double* t) {
  row_walk_planes<Ntk, P>(job.prog, job.seeds, t1, i, t2, j0, n, s, n, t, n, [&](int k) {
    if (job.capture[k] >= 0) store_captured<Ntk>(job, job.capture[k], i, j0, n, s, t);
  });
  if (job.capture_end >= 0) store_captured<Ntk>(job, job.capture_end, i, j0, n, s, t);
}

template <bool Ntk, int P>
void run_tile_planes(const Job<Dual<P>>& job, const Tile& tile, Scratch<Dual<P>>& scratch, StopCheck& check) {
  const auto stopped = [&] { return check.stopped(); };  // also asked within the mirror
  const PlanePointTables<P> t1{job.planes1, job.n1}, t2{job.planes2, job.symmetric ? job.n1 : job.n2};
  double* c = scratch.c.get();
  const int ldc = tile.cols;
  tile_covariances(job, tile, c, ldc);
  // The final kernels alone (no captures): each requested kernel is walked in its output
  // planes themselves (n1 * n2 apart), so that nothing is copied out afterwards.
  const bool direct = job.capture_end >= 0 && job.n_captures == 1;
  const Index out_stride = job.n1 * job.n2;
  for (int r = 0; r < tile.rows; ++r) {
    if (check.stopped()) return;  // as in run_tile
    const int jb = tile.diagonal ? r : 0;
    const int len = tile.cols - jb;
    const Index i = tile.i0 + r, j0 = tile.j0 + jb;
    const double* row = c + Index(r) * ldc + jb;
    if (!direct) {
      double* s = scratch.s.get();
      std::copy(row, row + len, s);
      std::fill(s + len, s + (1 + P) * Index(len), 0.0);  // the inputs do not depend on the parameters
      run_row_planes<Ntk, P>(job, t1, t2, i, j0, len, s, scratch.t.get());
      continue;
    }
    double* s = scratch.s.get();
    Index ss = len;
    if (job.nngp) {
      s = job.plane(job.nngp, 0, 0) + i * job.n2 + j0;
      ss = out_stride;
    }
    std::copy(row, row + len, s);
    for (int p = 1; p <= P; ++p) std::fill(s + p * ss, s + p * ss + len, 0.0);
    double* t = scratch.t.get();
    Index ts = len;
    if (Ntk && job.ntk) {
      t = job.plane(job.ntk, 0, 0) + i * job.n2 + j0;
      ts = out_stride;
    }
    row_walk_planes<Ntk, P>(job.prog, job.seeds, t1, i, t2, j0, len, s, ss, t, ts, [](int) {});
  }
  if (job.symmetric) {
    for (int cap = 0; cap < job.n_captures; ++cap)
      for (int p = 0; p <= P; ++p) {
        if (job.nngp && !mirror_tile(job.plane(job.nngp, cap, p), job.n2, tile, 1, stopped)) return;
        if (Ntk && job.ntk && !mirror_tile(job.plane(job.ntk, cap, p), job.n2, tile, 1, stopped)) return;
      }
  }
}

// The derivative walk's tile functions, cloned for the instruction sets as the kernels'
// are (see below).
FASTNTK_CLONES void run_tile_dual1(bool ntk, const Job<Dual<1>>& job, const Tile& tile, Scratch<Dual<1>>& scratch,
                                   StopCheck& check) {
  ntk ? run_tile_planes<true, 1>(job, tile, scratch, check) : run_tile_planes<false, 1>(job, tile, scratch, check);
}
FASTNTK_CLONES void run_tile_dual2(bool ntk, const Job<Dual<2>>& job, const Tile& tile, Scratch<Dual<2>>& scratch,
                                   StopCheck& check) {
  ntk ? run_tile_planes<true, 2>(job, tile, scratch, check) : run_tile_planes<false, 2>(job, tile, scratch, check);
}
FASTNTK_CLONES void run_tile_dual3(bool ntk, const Job<Dual<3>>& job, const Tile& tile, Scratch<Dual<3>>& scratch,
                                   StopCheck& check) {
  ntk ? run_tile_planes<true, 3>(job, tile, scratch, check) : run_tile_planes<false, 3>(job, tile, scratch, check);
}

// A portable x86-64 build (no -march) would vectorize the recursion for SSE2 only, where
// GCC does not even vectorize the arc-cosine loops. So the tile function of the kernels
// (T = double) is cloned for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the
// baseline, each clone with every callee inlined (flatten) and compiled, libmvec calls
// included, for its instruction set; the dynamic loader picks the clone for the running
// CPU once (an ifunc). A native build (-march=...) compiles the one version it needs.
FASTNTK_CLONES void run_tile_ntk(const Job<double>& job, const Tile& tile, Scratch<double>& scratch, StopCheck& check) {
  run_tile<true>(job, tile, scratch, check);
}
FASTNTK_CLONES void run_tile_nngp(const Job<double>& job, const Tile& tile, Scratch<double>& scratch,
                                  StopCheck& check) {
  run_tile<false>(job, tile, scratch, check);
}
template <class T>
void dispatch_tile(bool ntk, const Job<T>& job, const Tile& tile, Scratch<T>& scratch, StopCheck& check) {
  if constexpr (std::is_same_v<T, double>) {
    if (ntk)
      run_tile_ntk(job, tile, scratch, check);
    else
      run_tile_nngp(job, tile, scratch, check);
  } else if constexpr (std::is_same_v<T, Dual<1>>) {
    run_tile_dual1(ntk, job, tile, scratch, check);
  } else if constexpr (std::is_same_v<T, Dual<2>>) {
    run_tile_dual2(ntk, job, tile, scratch, check);
  } else {
    run_tile_dual3(ntk, job, tile, scratch, check);
  }
}

// The exact diagonal of a symmetric Gram: the tiles' own diagonal pairs went through a
// correlation that GEMM round-off may put at 1 - 1e-16, which costs ~8 digits after acos.
// Returns whether the diagonal's values are all finite.
template <class T>
bool write_exact_diagonal(const Job<T>& job, const Points<T>& pts) {
  const Index n = job.n1;
  bool finite = true;
  for (int c = 0; c < job.n_captures; ++c)
    for (Index i = 0; i < n; ++i) {
      const T q = pts.q[c * n + i], t = pts.t[c * n + i];
      finite = finite && std::isfinite(value(q)) && std::isfinite(value(t));
      for (int p = 0; p < Job<T>::kPlanes; ++p) {
        if (job.nngp) job.plane(job.nngp, c, p)[i * job.n2 + i] = p == 0 ? value(q) : tangent(q, p - 1);
        if (job.ntk) job.plane(job.ntk, c, p)[i * job.n2 + i] = p == 0 ? value(t) : tangent(t, p - 1);
      }
    }
  return finite;
}

// Returns true when every entry written is known to be finite (the plain kernels, checked
// per row in the tiles; see Job::not_finite), false when some may not be (not checked, or
// one found): the caller then scans the outputs.
template <class T>
bool gram(const ProgramView& prog, const double* x1, Index n1, const double* x2, Index n2, Index d, double* nngp,
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
  std::vector<double> planes1, planes2;  // the tables by plane, for T = Dual<P>
  if constexpr (Job<T>::kPlanes > 1) {
    constexpr int P = Job<T>::kPlanes - 1;
    planes1.resize(static_cast<std::size_t>(4 * prog.n_activations) * (1 + P) * n1);
    split_planes<P>(job.t1, prog.n_activations, planes1.data());
    job.planes1 = job.planes2 = planes1.data();
    if (!symmetric) {
      planes2.resize(static_cast<std::size_t>(4 * prog.n_activations) * (1 + P) * n2);
      split_planes<P>(job.t2, prog.n_activations, planes2.data());
      job.planes2 = planes2.data();
    }
  }

  // The plain kernels in double (one capture, at the end) are computed in the outputs
  // themselves: no tile buffer, no copy; the walk then writes nothing at the end.
  job.in_place =
      std::is_same_v<T, double> && capture_end >= 0 && n_captures == 1 && n2 <= std::numeric_limits<int>::max();
  std::atomic<bool> not_finite{false};
  Job<T> walk = job;
  if (job.in_place) walk.capture_end = -1;
  walk.not_finite = &not_finite;

  const TileShape shape = opt.tile > 0 ? TileShape{opt.tile, opt.tile} : default_tile(n1, n2, symmetric, threads);
  const std::vector<Tile> tiles = tile_grid(n1, n2, symmetric, shape);
  for_each_tile(
      static_cast<Index>(tiles.size()), threads, opt.interrupted,
      [&] {
        Scratch<T> scratch;
        if (!job.in_place) scratch.c = std::make_unique<double[]>(static_cast<std::size_t>(shape.rows) * shape.cols);
        scratch.s = std::make_unique<double[]>(static_cast<std::size_t>(Job<T>::kPlanes) * shape.cols);
        scratch.t = std::make_unique<double[]>(static_cast<std::size_t>(Job<T>::kPlanes) * shape.cols);
        return scratch;
      },
      [&](Index k, Scratch<T>& scratch, StopCheck& check) {
        dispatch_tile(ntk != nullptr, walk, tiles[k], scratch, check);
      },
      opt.progress);

  const bool diagonal_finite = !symmetric || write_exact_diagonal(job, p1);
  return job.in_place && diagonal_finite && !not_finite.load();
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

TileShape default_tile(std::int64_t n1, std::int64_t n2, bool symmetric, int n_threads) {
  // 256 rows x 2048 columns: one dgemm of that shape packs its operands once for 256 x 2048
  // pairs (a 256 x 256 tile packs four times as much per pair; at d = 784 on a SkylakeX
  // OpenBLAS, 2048 columns measured ~10 % faster in all than 1024), while the in-place walk
  // takes a row 1024 pairs at a time, all layers in L1 (kWalkCols). Narrower, then smaller,
  // tiles only to give every thread work (tile_shape).
  return tile_shape(n1, n2, symmetric, n_threads, TileShape{256, 2048}, 32);
}

bool ntk_gram_cpu(const Program& program, const double* x1, std::int64_t n1, const double* x2, std::int64_t n2,
                  std::int64_t d, double* nngp, double* ntk, const GramOptions& opt) {
  return ntk_gram_cpu(program, x1, n1, x2, n2, d, nngp, ntk, opt, GramRequest{});
}

bool ntk_gram_cpu(const Program& program, const double* x1, std::int64_t n1, const double* x2, std::int64_t n2,
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
  if (n1 == 0 || n2 == 0) return true;
  if (!x1) throw std::invalid_argument("ntk_gram_cpu: x1 is null");

  const ProgramView prog = program.view();
  blas::use_single_thread();
  switch (P) {
    case 0:
      return gram<double>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
    case 1:
      return gram<Dual<1>>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
    case 2:
      return gram<Dual<2>>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
    default:
      return gram<Dual<3>>(prog, x1, n1, x2, n2, d, nngp, ntk, opt, capture, capture_end, n_captures, req.seeds);
  }
}

}  // namespace fastntk::cpu
