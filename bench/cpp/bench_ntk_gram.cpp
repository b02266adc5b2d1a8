// fastntk: C++ benchmark of the CPU Gram driver and of its per-pair recursion.
//
// Everything timed is the library's compiled code (fastntk_cpu), never a copy of it:
//  1. The recursion kernel. ntk_gram_cpu on a cross Gram with d = 16, where the GEMM
//     is negligible, for a depth-L program and for the depth-0 program (the readout
//     Dense alone), in the same process. Both share the GEMM, the tiling, the final
//     Dense and the write-back of the outputs; the difference is L x (Dense +
//     activation) per pair plus an O(N L) point pass, so
//       pair-layers/s = n1 * n2 * L / (t_L - t_0).
//  2. The whole Gram against the BLAS product of the same shape, run the way the
//     driver runs its own (single-threaded BLAS calls spread over the OpenMP team):
//     the part of the work that no recursion speed-up can remove.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "blas.hpp"
#include "build_info.hpp"
#include "fastntk/program.hpp"
#include "ntk_gram_cpu.hpp"

namespace fastntk::bench {
namespace {

using Index = std::int64_t;
using Clock = std::chrono::steady_clock;

// Hidden blocks [Dense, activation] of the benchmarked MLPs (plus a readout Dense).
constexpr int kDepth = 5;
// The recursion benchmark's feature count: x.y / d then costs 16 multiply-adds per
// pair against the hundreds of cycles of five layers of acos/asin.
constexpr Index kKernelD = 16;

struct Options {
  bool quick = false;
  int threads = 0;  // 0: OpenMP's default team size
  int repeat = 5;   // timings are the best of this many runs
  std::string json;
};

void usage(std::FILE* out, const char* argv0) {
  std::fprintf(out,
               "usage: %s [--quick] [--threads N] [--repeat K] [--json FILE]\n"
               "  --quick       small sizes, a smoke test of a few seconds\n"
               "  --threads N   OpenMP threads for the Gram table (default: OpenMP's default, here %d)\n"
               "  --repeat K    report the best of K runs (default 5)\n"
               "  --json FILE   also write the results as JSON to FILE\n"
               "Run as `env -u OPENBLAS_CORETYPE %s` so that OpenBLAS picks its kernels for this CPU.\n",
               argv0, omp_get_max_threads(), argv0);
}

bool parse_positive(const char* text, int& value) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < 1 || v > 4096) return false;
  value = static_cast<int>(v);
  return true;
}

// Returns false (after printing why) on a bad command line.
bool parse_options(int argc, char** argv, Options& opt, bool& help) {
  help = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--quick") {
      opt.quick = true;
    } else if (arg == "-h" || arg == "--help") {
      help = true;
    } else if (arg == "--threads" || arg == "--repeat") {
      int& target = arg == "--threads" ? opt.threads : opt.repeat;
      if (!has_value || !parse_positive(argv[++i], target)) {
        std::fprintf(stderr, "%s: %s needs an integer in [1, 4096]\n", argv[0], arg.c_str());
        return false;
      }
    } else if (arg == "--json") {
      if (!has_value) {
        std::fprintf(stderr, "%s: --json needs a file name\n", argv[0]);
        return false;
      }
      opt.json = argv[++i];
    } else {
      std::fprintf(stderr, "%s: unknown option '%s'\n", argv[0], arg.c_str());
      return false;
    }
  }
  return true;
}

enum class Act { Relu, Erf };

const char* act_name(Act act) { return act == Act::Relu ? "relu" : "erf"; }

// depth x [Dense, act] + Dense, in the NTK parameterization with W_std = 1, b_std = 0.
Program make_mlp(Act act, int depth, Index d) {
  Program prog;
  for (int l = 0; l < depth; ++l) {
    prog.add_dense(1.0, 0.0, true, Parameterization::Ntk, static_cast<double>(d));
    if (act == Act::Relu)
      prog.add_abrelu(0.0, 1.0);
    else
      prog.add_erf(1.0, 1.0, 0.0);
  }
  prog.add_dense(1.0, 0.0, true, Parameterization::Ntk, static_cast<double>(d));
  return prog;
}

std::vector<double> random_inputs(Index n, Index d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<std::size_t>(n * d));
  for (double& v : x) v = normal(rng);
  return x;
}

double seconds_of(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

template <class F>
double time_once(F&& f) {
  const auto start = Clock::now();
  f();
  return seconds_of(start);
}

// The driver's outputs must be finite: a benchmark of NaNs would time nothing useful.
void check_finite(const std::vector<double>& v, const char* what) {
  for (double e : v)
    if (!std::isfinite(e)) throw std::runtime_error(std::string("non-finite entry in the ") + what + " output");
}

// c[n, n] = x1 x2^T / d (upper triangle only for x2 == nullptr) with the driver's BLAS,
// one row block per call, blocks spread over `threads` OpenMP threads. The driver sets
// OpenBLAS to one thread per call (blas::use_single_thread) and parallelizes over its
// tiles; doing the same here makes this the GEMM the driver itself could at best run.
void blas_product(const double* x1, const double* x2, Index n, Index d, double* c, int threads, int block) {
  const bool symmetric = x2 == nullptr;
  const double inv_d = 1.0 / static_cast<double>(d);
  const int k = static_cast<int>(d), ldc = static_cast<int>(n);
  const Index n_blocks = (n + block - 1) / block;
  // Dynamic: the symmetric blocks shrink towards the bottom of the triangle.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (Index b = 0; b < n_blocks; ++b) {
    const Index i0 = b * block;
    const int m = static_cast<int>(std::min<Index>(block, n - i0));
    const double* a = x1 + i0 * d;
    if (symmetric) {
      cpu::blas::syrk_upper(m, k, inv_d, a, k, c + i0 * n + i0, ldc);
      const Index j0 = i0 + m;
      if (j0 < n)
        cpu::blas::gemm_abt(m, static_cast<int>(n - j0), k, inv_d, a, k, x1 + j0 * d, k, c + i0 * n + j0, ldc);
    } else {
      cpu::blas::gemm_abt(m, static_cast<int>(n), k, inv_d, a, k, x2, k, c + i0 * n, ldc);
    }
  }
}

// ---- 1. The recursion kernel.

struct KernelResult {
  Act act;
  int threads;
  Index n;  // n1 = n2
  double t_depth, t_base;
  double pair_layers_per_s() const {
    return static_cast<double>(n) * static_cast<double>(n) * kDepth / (t_depth - t_base);
  }
};

KernelResult bench_kernel(Act act, int threads, Index n, int repeat) {
  const std::vector<double> x1 = random_inputs(n, kKernelD, 1), x2 = random_inputs(n, kKernelD, 2);
  std::vector<double> nngp(static_cast<std::size_t>(n * n)), ntk(nngp.size());
  const Program deep = make_mlp(act, kDepth, kKernelD), base = make_mlp(act, 0, kKernelD);
  cpu::GramOptions gopt;
  gopt.n_threads = threads;
  auto run = [&](const Program& prog) {
    cpu::ntk_gram_cpu(prog, x1.data(), n, x2.data(), n, kKernelD, nngp.data(), ntk.data(), gopt);
  };
  KernelResult r{act, threads, n, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
  run(deep);  // warm-up: page faults, OpenMP team start, libmvec symbol binding
  check_finite(ntk, "kernel benchmark");
  // Alternating the two programs exposes both to the same clock and cache conditions.
  for (int k = 0; k < repeat; ++k) {
    r.t_base = std::min(r.t_base, time_once([&] { run(base); }));
    r.t_depth = std::min(r.t_depth, time_once([&] { run(deep); }));
  }
  return r;
}

// ---- 2. The whole Gram.

struct GramRow {
  Index n, d;
  Act act;
  bool symmetric;
  double seconds, gemm_seconds;
  // Pairs the driver runs the recursion on: the upper triangle with its diagonal
  // for a symmetric Gram (then mirrored), all n^2 for a cross Gram.
  Index pairs() const { return symmetric ? n * (n + 1) / 2 : n * n; }
  double ratio() const { return seconds / gemm_seconds; }
  double pair_layers_per_s() const { return static_cast<double>(pairs()) * kDepth / seconds; }
};

void bench_gram(Index n, Index d, int threads, int repeat, std::vector<GramRow>& rows) {
  const std::vector<double> x1 = random_inputs(n, d, 3), x2 = random_inputs(n, d, 4);
  // The GEMM baseline writes into nngp: each driver run overwrites all of it anyway.
  std::vector<double> nngp(static_cast<std::size_t>(n * n)), ntk(nngp.size());
  cpu::GramOptions gopt;
  gopt.n_threads = threads;
  for (const bool symmetric : {true, false}) {
    const double* y = symmetric ? nullptr : x2.data();
    // The driver's own tile size as the row block: the same split of work over threads.
    const int block = cpu::default_tile(n, n, symmetric, threads).rows;
    cpu::blas::use_single_thread();
    double gemm = std::numeric_limits<double>::infinity();
    blas_product(x1.data(), y, n, d, nngp.data(), threads, block);  // warm-up
    for (int k = 0; k < repeat; ++k)
      gemm = std::min(gemm, time_once([&] { blas_product(x1.data(), y, n, d, nngp.data(), threads, block); }));
    for (const Act act : {Act::Relu, Act::Erf}) {
      const Program prog = make_mlp(act, kDepth, d);
      auto run = [&] { cpu::ntk_gram_cpu(prog, x1.data(), n, y, n, d, nngp.data(), ntk.data(), gopt); };
      run();  // warm-up
      check_finite(nngp, "nngp");
      check_finite(ntk, "ntk");
      double best = std::numeric_limits<double>::infinity();
      for (int k = 0; k < repeat; ++k) best = std::min(best, time_once(run));
      rows.push_back(GramRow{n, d, act, symmetric, best, gemm});
      const GramRow& r = rows.back();
      std::printf("%6lld %5lld  %-4s  %-5s  %10.4g  %10.4g  %6.2f  %13.3e\n", static_cast<long long>(r.n),
                  static_cast<long long>(r.d), act_name(r.act), r.symmetric ? "sym" : "cross", r.seconds,
                  r.gemm_seconds, r.ratio(), r.pair_layers_per_s());
      std::fflush(stdout);
    }
  }
}

// ---- Output.

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", ch);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

void write_json(const std::string& path, const cpu::BuildInfo& info, const Options& opt, int threads,
                const std::vector<KernelResult>& kernel, const std::vector<GramRow>& gram) {
  std::ofstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path + " for writing");
  f.precision(6);
  f << "{\n  \"benchmark\": \"bench_ntk_gram\",\n  \"quick\": " << (opt.quick ? "true" : "false")
    << ",\n  \"threads\": " << threads << ",\n  \"repeat\": " << opt.repeat << ",\n  \"depth\": " << kDepth
    << ",\n  \"build\": {\"openmp\": " << info.openmp << ", \"blas\": " << json_string(info.blas)
    << ", \"blas_core\": " << json_string(info.blas_core) << ", \"simd\": " << json_string(info.simd)
    << ", \"simd_doubles\": " << info.simd_doubles << ", \"libmvec\": " << (info.libmvec ? "true" : "false")
    << "},\n  \"recursion\": [";
  for (std::size_t i = 0; i < kernel.size(); ++i) {
    const KernelResult& r = kernel[i];
    f << (i ? "," : "") << "\n    {\"act\": \"" << act_name(r.act) << "\", \"threads\": " << r.threads
      << ", \"n\": " << r.n << ", \"d\": " << kKernelD << ", \"seconds_depth\": " << r.t_depth
      << ", \"seconds_depth0\": " << r.t_base << ", \"pair_layers_per_s\": " << r.pair_layers_per_s() << "}";
  }
  f << "\n  ],\n  \"gram\": [";
  for (std::size_t i = 0; i < gram.size(); ++i) {
    const GramRow& r = gram[i];
    f << (i ? "," : "") << "\n    {\"n\": " << r.n << ", \"d\": " << r.d << ", \"act\": \"" << act_name(r.act)
      << "\", \"symmetric\": " << (r.symmetric ? "true" : "false") << ", \"seconds\": " << r.seconds
      << ", \"gemm_seconds\": " << r.gemm_seconds << ", \"ratio\": " << r.ratio() << ", \"pairs\": " << r.pairs()
      << ", \"pair_layers_per_s\": " << r.pair_layers_per_s() << "}";
  }
  f << "\n  ]\n}\n";
  if (!f) throw std::runtime_error("error writing " + path);
}

int run(const Options& opt) {
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const cpu::BuildInfo info = cpu::build_info();
  std::printf("fastntk bench_ntk_gram: %d thread(s), best of %d, depth %d%s\n", threads, opt.repeat, kDepth,
              opt.quick ? ", quick" : "");
  std::printf("recursion SIMD: %s (%d doubles), libmvec: %s; OpenMP %d\n", info.simd.c_str(), info.simd_doubles,
              info.libmvec ? "yes" : "no", info.openmp);
  std::printf("BLAS: %s\nBLAS core: %s\n", info.blas.c_str(), info.blas_core.c_str());
  // OpenBLAS reads the variable when the library loads, before main: it can only be
  // warned about here, not undone.
  if (const char* forced = std::getenv("OPENBLAS_CORETYPE"))
    std::printf(
        "note: OPENBLAS_CORETYPE=%s forces that BLAS core; the Python package unsets it, so run as "
        "`env -u OPENBLAS_CORETYPE ...` to compare like with like\n",
        forced);

  std::vector<KernelResult> kernel;
  const Index kernel_n = opt.quick ? 256 : 4096;
  std::printf("\n1. Recursion kernel: cross Gram %lld x %lld, d = %lld, (t[depth %d] - t[depth 0]) / (pairs x %d)\n",
              static_cast<long long>(kernel_n), static_cast<long long>(kernel_n), static_cast<long long>(kKernelD),
              kDepth, kDepth);
  std::printf("%-4s  %7s  %10s  %10s  %14s  %18s\n", "act", "threads", "t_depth s", "t_depth0 s", "pair-layers/s",
              "ns/pair-layer/thr");
  std::vector<int> team = {1};
  if (threads > 1) team.push_back(threads);
  for (const Act act : {Act::Relu, Act::Erf}) {
    for (const int th : team) {
      kernel.push_back(bench_kernel(act, th, kernel_n, opt.repeat));
      const KernelResult& r = kernel.back();
      std::printf("%-4s  %7d  %10.4g  %10.4g  %14.3e  %18.2f\n", act_name(act), th, r.t_depth, r.t_base,
                  r.pair_layers_per_s(), 1e9 * th / r.pair_layers_per_s());
      std::fflush(stdout);
    }
  }

  std::vector<GramRow> gram;
  std::printf("\n2. Whole Gram (nngp + ntk), %d thread(s); gemm = the BLAS product of the same shape\n", threads);
  std::printf("%6s %5s  %-4s  %-5s  %10s  %10s  %6s  %13s\n", "N", "d", "act", "sym", "seconds", "gemm s", "ratio",
              "pair-layers/s");
  const std::vector<Index> sizes = opt.quick ? std::vector<Index>{256, 512} : std::vector<Index>{1000, 4000};
  for (const Index n : sizes)
    for (const Index d : {Index{16}, Index{784}}) bench_gram(n, d, threads, opt.repeat, gram);

  if (!opt.json.empty()) {
    write_json(opt.json, info, opt, threads, kernel, gram);
    std::printf("\nwrote %s\n", opt.json.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace fastntk::bench

int main(int argc, char** argv) {
  fastntk::bench::Options opt;
  bool help = false;
  if (!fastntk::bench::parse_options(argc, argv, opt, help)) {
    fastntk::bench::usage(stderr, argv[0]);
    return 2;
  }
  if (help) {
    fastntk::bench::usage(stdout, argv[0]);
    return 0;
  }
  try {
    return fastntk::bench::run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 1;
  }
}
