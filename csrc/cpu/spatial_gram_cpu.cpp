// fastntk: OpenMP driver of the spatial (CNN) Gram matrices.
//
// Two steps, both over the threads with tile_loop.hpp (errors kept, Ctrl-C, progress):
//  1. Point pass: every image's walk with itself (spatial_walk<.., Point = true>), which
//     writes its record (the per-position Stats of each activation, the factors of each
//     LayerNorm) and, for x2 = None, the exact diagonal entry [i, i] of the outputs.
//  2. Pair pass: tiles of pairs (the upper triangle, i < j, for x2 = None). Per pair the
//     input covariance (a BLAS product (S x C)(C x S) in the full regime, per-position dots
//     in the diagonal one) goes into the thread's workspace, the whole program runs there
//     while its buffers are hot, and register 0 is written out (cast to the output type;
//     transposed into [j, i] for the mirror of a full-regime output).
// Memory: a workspace of spatial_buffers(R) * max_entries doubles per kernel per thread
// (O(R S^2) in the full regime), the records (N * point_stride doubles); never O(N^2 S^2).
// The workspaces are anonymous memory maps: zero pages that become resident only where the
// walk writes (a serial network never touches its spare buffers), returned to the system
// when the call ends (a heap allocation of this size would stay in the process: glibc
// raises its mmap threshold after the first free).
#include "spatial_exec_cpu.hpp"  // must precede <cmath> users (vecmath.hpp)

#include "spatial_gram_cpu.hpp"

#include <omp.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define FASTNTK_HAVE_MMAP 1
#else
#define FASTNTK_HAVE_MMAP 0
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "blas.hpp"
#include "fastntk/spatial_walk_impl.hpp"
#include "tile_loop.hpp"
#include "tiles.hpp"

namespace fastntk::cpu {
namespace {

using Index = std::int64_t;

// n zero doubles whose pages become resident only when written (see Memory above).
class ZeroPages {
 public:
  ZeroPages() = default;
  explicit ZeroPages(Index n) : bytes_(static_cast<std::size_t>(n) * sizeof(double)) {
    if (bytes_ == 0) return;
#if FASTNTK_HAVE_MMAP
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<double*>(p);
#else
    data_ = new double[n]();
#endif
  }
  ~ZeroPages() { release(); }
  ZeroPages(ZeroPages&& o) noexcept : data_(o.data_), bytes_(o.bytes_) { o.data_ = nullptr; }
  ZeroPages& operator=(ZeroPages&& o) noexcept {
    if (this != &o) {
      release();
      data_ = o.data_;
      bytes_ = o.bytes_;
      o.data_ = nullptr;
    }
    return *this;
  }
  ZeroPages(const ZeroPages&) = delete;
  ZeroPages& operator=(const ZeroPages&) = delete;
  double* get() const { return data_; }

 private:
  void release() {
    if (!data_) return;
#if FASTNTK_HAVE_MMAP
    munmap(data_, bytes_);
#else
    delete[] data_;
#endif
    data_ = nullptr;
  }
  double* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// One thread's buffers: the walk's workspace, Sigma and (if the NTK is wanted) Theta.
struct Workspace {
  ZeroPages sigma, theta;
  SpatialWorkspace view{};
};

Workspace make_workspace(const SpatialProgramView& prog, bool ntk) {
  const Index n = static_cast<Index>(spatial_buffers(prog.n_registers)) * prog.max_entries;
  Workspace w{ZeroPages(n), ZeroPages(ntk ? n : 0)};
  w.view = SpatialWorkspace{w.sigma.get(), w.theta.get(), prog.max_entries};
  return w;
}

// Register 0's input covariance Sigma0 of images x and y ([S, C] each) into buffer 0:
// x[i, :] . y[j, :] / C at [i, j] (full) or x[i, :] . y[i, :] / C at [i] (diagonal). The
// self pair (y == x, full) uses dsyrk and a mirror, so that its state is exactly symmetric.
void input_covariance(const SpatialProgramView& prog, int channels, const double* x, const double* y, double* out) {
  const Index s = prog.in_shape.positions();
  const int c = channels;
  const double inv_c = 1.0 / static_cast<double>(c);
  if (!prog.full) {
    for (Index i = 0; i < s; ++i) {
      double acc = 0.0;
      for (int k = 0; k < c; ++k) acc += x[i * c + k] * y[i * c + k];
      out[i] = acc * inv_c;
    }
    return;
  }
  const int si = static_cast<int>(s);
  if (x == y) {
    blas::syrk_upper(si, c, inv_c, x, c, out, si);
    for (Index i = 0; i < s; ++i)
      for (Index j = 0; j < i; ++j) out[i * s + j] = out[j * s + i];
  } else {
    blas::gemm_abt(si, si, c, inv_c, x, c, y, c, out, si);
  }
}

// The walks, cloned per instruction set in a portable build as ntk_gram_cpu's tiles are
// (vecmath.hpp, FASTNTK_CLONES): each clone inlines the whole walk.
FASTNTK_CLONES int walk_pair_ntk(const SpatialProgramView& prog, const SpatialWorkspace& ws, const double* rx,
                                 const double* ry) {
  CpuExec ex;
  return spatial_walk<true, false>(ex, prog, ws, rx, ry, nullptr);
}
FASTNTK_CLONES int walk_pair_nngp(const SpatialProgramView& prog, const SpatialWorkspace& ws, const double* rx,
                                  const double* ry) {
  CpuExec ex;
  return spatial_walk<false, false>(ex, prog, ws, rx, ry, nullptr);
}
FASTNTK_CLONES int walk_point_ntk(const SpatialProgramView& prog, const SpatialWorkspace& ws, double* record) {
  CpuExec ex;
  return spatial_walk<true, true>(ex, prog, ws, record, record, record);
}
FASTNTK_CLONES int walk_point_nngp(const SpatialProgramView& prog, const SpatialWorkspace& ws, double* record) {
  CpuExec ex;
  return spatial_walk<false, true>(ex, prog, ws, record, record, record);
}

// x * 0 is 0 for finite x and NaN for NaN and +-Inf.
inline bool all_finite(const double* FASTNTK_RESTRICT v, Index n) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (Index j = 0; j < n; ++j) acc += v[j] * 0.0;
  return acc == 0.0;
}

// What the work shares.
template <class Out>
struct Job {
  const SpatialProgram* program;
  SpatialProgramView prog;
  const double* x1;
  const double* x2;  // x1 when symmetric
  Index n1, n2, row;  // row: S_in * C doubles per image
  Out* nngp;          // [n1, n2, out_size] or null
  Out* ntk;
  Index out_size;
  Index out_positions;  // S_out (the side of a full-regime output)
  bool symmetric;
  std::vector<double> rec1, rec2;  // [n, point_stride] records
  std::atomic<bool> not_finite{false};
};

// Register 0's result (sigma, theta) of pair (i, j) into the outputs at [i, j], and for a
// symmetric Gram the mirror [j, i] (transposed in the full regime).
template <class Out>
void store(Job<Out>& job, Index i, Index j, const double* sigma, const double* theta, bool mirror) {
  const Index m = job.out_size;
  const Index so = job.out_positions;
  const bool transpose = mirror && job.prog.full && m > 1;
  auto put = [&](Out* out, const double* v) {
    Out* a = out + (i * job.n2 + j) * m;
    for (Index e = 0; e < m; ++e) a[e] = static_cast<Out>(v[e]);
    if (!mirror) return;
    Out* b = out + (j * job.n2 + i) * m;
    if (transpose) {
      for (Index r = 0; r < so; ++r)
        for (Index c = 0; c < so; ++c) b[c * so + r] = static_cast<Out>(v[r * so + c]);
    } else {
      for (Index e = 0; e < m; ++e) b[e] = static_cast<Out>(v[e]);
    }
  };
  bool finite = true;
  if (job.nngp) {
    put(job.nngp, sigma);
    finite = all_finite(sigma, m);
  }
  if (job.ntk) {
    put(job.ntk, theta);
    finite = finite && all_finite(theta, m);
  }
  // float32 storage: a finite float64 beyond float32's range becomes Inf.
  if constexpr (sizeof(Out) == sizeof(float)) {
    constexpr double kMax = static_cast<double>(std::numeric_limits<float>::max());
    for (Index e = 0; e < m && finite; ++e)
      finite = !(job.nngp && std::fabs(sigma[e]) > kMax) && !(job.ntk && std::fabs(theta[e]) > kMax);
  }
  if (!finite) job.not_finite.store(true, std::memory_order_relaxed);
}

// Gaussian(b > 0) diverges where 4 b q >= 1: checked on the point's recorded variances.
void check_point(const SpatialProgram& program, const double* record, Index p, const char* name) {
  for (const SpatialOp& op : program.ops()) {
    if (op.kind != SpatialOpKind::Activation || op.activation.op.kind != OpKind::Gaussian) continue;
    const double b = op.activation.op.gaussian.b;
    const Index s = op.activation.shape.positions();
    for (Index e = 0; e < s; ++e) {
      const double q = record[op.activation.stats + e];
      if (!(1.0 - 4.0 * b * q > 0.0))
        throw std::invalid_argument("Gaussian(b=" + std::to_string(b) + ") at layer " + std::to_string(op.layer) +
                                    ": image " + std::to_string(p) + " of " + name + " reaches the variance q=" +
                                    std::to_string(q) + " at position " + std::to_string(e) +
                                    " before this layer, where E[exp(b u^2)^2] diverges (it needs 4*b*q < 1); "
                                    "scale the inputs down or use b <= 0");
    }
  }
}

// Chunks of points of the point pass: one point of a full-regime program is already a pair's
// work.
inline Index point_chunk(const SpatialProgramView& prog) { return prog.full ? 1 : 16; }

// A full-regime pair is milliseconds of work: small tiles balance the threads; a
// diagonal-regime pair is microseconds: tiles of a few hundred pairs.
template <class Out>
std::vector<Tile> pair_tiles(const Job<Out>& job, int threads) {
  const TileShape preferred = job.prog.full ? TileShape{1, 4} : TileShape{8, 64};
  const TileShape shape = tile_shape(job.n1, job.n2, job.symmetric, threads, preferred, 1);
  return tile_grid(job.n1, job.n2, job.symmetric, shape);
}

// The progress of one phase as part of the whole: (offset + done, total).
inline ProgressFn phase_progress(const SpatialGramOptions& opt, Index offset, Index total) {
  if (!opt.progress) return {};
  return [&opt, offset, total](std::int64_t done, std::int64_t) { opt.progress(offset + done, total); };
}

template <class Out>
void point_pass(Job<Out>& job, const double* x, Index n, std::vector<double>& rec, bool write_diagonal,
                const char* name, int threads, const SpatialGramOptions& opt, const ProgressFn& progress) {
  const SpatialProgramView& prog = job.prog;
  const Index stride = std::max<Index>(prog.point_stride, 1);
  rec.assign(static_cast<std::size_t>(n * stride), 0.0);
  const bool ntk = write_diagonal && job.ntk != nullptr;
  const int channels = job.program->channels();
  const Index chunk = point_chunk(prog);
  const Index n_chunks = (n + chunk - 1) / chunk;
  for_each_tile(
      n_chunks, threads, opt.interrupted, [&] { return make_workspace(prog, ntk); },
      [&](Index k, Workspace& w, StopCheck&) {
        for (Index p = k * chunk; p < std::min(n, (k + 1) * chunk); ++p) {
          const double* img = x + p * job.row;
          double* record = rec.data() + p * stride;
          input_covariance(prog, channels, img, img, w.view.sigma);
          const int b = ntk ? walk_point_ntk(prog, w.view, record) : walk_point_nngp(prog, w.view, record);
          check_point(*job.program, record, p, name);
          if (write_diagonal)
            store(job, p, p, w.view.sigma + b * w.view.stride, ntk ? w.view.theta + b * w.view.stride : nullptr,
                  false);
        }
      },
      progress);
}

template <class Out>
void pair_pass(Job<Out>& job, const std::vector<Tile>& tiles, int threads, const SpatialGramOptions& opt,
               const ProgressFn& progress) {
  const SpatialProgramView& prog = job.prog;
  const Index stride = std::max<Index>(prog.point_stride, 1);
  const bool ntk = job.ntk != nullptr;
  const int channels = job.program->channels();
  for_each_tile(
      static_cast<Index>(tiles.size()), threads, opt.interrupted, [&] { return make_workspace(prog, ntk); },
      [&](Index k, Workspace& w, StopCheck& check) {
        const Tile& tile = tiles[k];
        for (int r = 0; r < tile.rows; ++r)
          for (int c = 0; c < tile.cols; ++c) {
            const Index i = tile.i0 + r, j = tile.j0 + c;
            if (job.symmetric && j <= i) continue;  // the lower triangle, and the point pass's diagonal
            if (prog.full && check.stopped()) return;
            const double* rx = job.rec1.data() + i * stride;
            const double* ry = (job.symmetric ? job.rec1 : job.rec2).data() + j * stride;
            input_covariance(prog, channels, job.x1 + i * job.row, job.x2 + j * job.row, w.view.sigma);
            const int b = ntk ? walk_pair_ntk(prog, w.view, rx, ry) : walk_pair_nngp(prog, w.view, rx, ry);
            store(job, i, j, w.view.sigma + b * w.view.stride, ntk ? w.view.theta + b * w.view.stride : nullptr,
                  job.symmetric);
          }
      },
      progress);
}

template <class Out>
bool gram(const SpatialProgram& program, const double* x1, Index n1, const double* x2, Index n2, Out* nngp, Out* ntk,
          const SpatialGramOptions& opt) {
  const bool symmetric = x2 == nullptr;
  if (symmetric) n2 = n1;
  if (n1 < 0 || n2 < 0) throw std::invalid_argument("spatial_gram_cpu: negative number of images");
  if (!nngp && !ntk) throw std::invalid_argument("spatial_gram_cpu: neither nngp nor ntk requested");
  const Index s_in = program.in_positions();
  if (s_in > std::numeric_limits<int>::max() / 2)
    throw std::invalid_argument("spatial_gram_cpu: the input has too many positions for a 32-bit BLAS");
  if (n1 == 0 || n2 == 0) return true;
  if (!x1) throw std::invalid_argument("spatial_gram_cpu: x1 is null");
  Job<Out> job;
  job.program = &program;
  job.prog = program.view();
  job.x1 = x1;
  job.x2 = symmetric ? x1 : x2;
  job.n1 = n1;
  job.n2 = n2;
  job.row = s_in * program.channels();
  job.nngp = nngp;
  job.ntk = ntk;
  job.out_size = program.out_size();
  job.out_positions = program.out_shape().positions();
  job.symmetric = symmetric;
  const int threads = opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads();
  blas::use_single_thread();
  const Index chunk = point_chunk(job.prog);
  const Index c1 = (n1 + chunk - 1) / chunk, c2 = symmetric ? 0 : (n2 + chunk - 1) / chunk;
  const std::vector<Tile> tiles = pair_tiles(job, threads);
  const Index total = c1 + c2 + static_cast<Index>(tiles.size());
  point_pass(job, x1, n1, job.rec1, symmetric, "x1", threads, opt, phase_progress(opt, 0, total));
  if (!symmetric) point_pass(job, x2, n2, job.rec2, false, "x2", threads, opt, phase_progress(opt, c1, total));
  pair_pass(job, tiles, threads, opt, phase_progress(opt, c1 + c2, total));
  return !job.not_finite.load();
}

}  // namespace

bool spatial_gram_cpu(const SpatialProgram& prog, const double* x1, std::int64_t n1, const double* x2,
                      std::int64_t n2, double* nngp, double* ntk, const SpatialGramOptions& opt) {
  return gram<double>(prog, x1, n1, x2, n2, nngp, ntk, opt);
}

bool spatial_gram_cpu(const SpatialProgram& prog, const double* x1, std::int64_t n1, const double* x2,
                      std::int64_t n2, float* nngp, float* ntk, const SpatialGramOptions& opt) {
  return gram<float>(prog, x1, n1, x2, n2, nngp, ntk, opt);
}

}  // namespace fastntk::cpu
