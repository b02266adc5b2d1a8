// fastntk: C++ benchmark of the CPU spatial (CNN) Gram driver, spatial_gram_cpu.
//
// The architecture: a depth-8 CNN of 3x3 SAME convolutions (W_std^2 = 2, b_std = 0,
// NTK parameterization), each followed by ReLU, on random 32x32x3 images, then
//   (a) Flatten and a Dense readout: the diagonal regime (O(HW) per pair and layer);
//   (b) GlobalAvgPool and a Dense readout: the full regime ((HW)^2 per pair and layer,
//       in the thread's workspace).
// Symmetric Grams (x2 = None), NNGP and NTK, float64; prints pairs per second (the N(N+1)/2
// pairs of the upper triangle, the point pass included).
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fastntk/program.hpp"
#include "fastntk/spatial_program.hpp"
#include "spatial_gram_cpu.hpp"

namespace {

using fastntk::Parameterization;
using fastntk::Program;
using fastntk::SpatialProgram;
using Clock = std::chrono::steady_clock;

constexpr int kSide = 32, kChannels = 3, kDepth = 8;

// The program of the benchmarked CNN in the front end's compilation (cnn_spec.md): Conv ->
// linear 'conv' (scale 1/9: the NTK parameterization's 1 / (fan-in) per input channel,
// alpha = gamma = delta = W_std^2, beta = eps = b_std^2), ReLU -> activation, readout.
SpatialProgram cnn(bool global_pool, const Program& relu) {
  SpatialProgram p({kSide, kSide}, kChannels, global_pool, 1);
  const double w_var = 2.0, k2 = 9.0;
  for (int l = 0; l < kDepth; ++l) {
    p.set_layer(2 * l);
    p.add_linear(0, 0, "conv", {kSide, kSide}, {kSide, kSide}, {3, 3}, {1, 1}, {1, 1}, false, false, 1.0 / k2, w_var,
                 0.0, w_var, w_var, 0.0);
    p.set_layer(2 * l + 1);
    p.add_activation(0, relu, 1);
  }
  p.set_layer(2 * kDepth);
  const double positions = double(kSide) * kSide;
  if (global_pool)
    p.add_linear(0, 0, "global", {kSide, kSide}, {}, {}, {}, {}, false, false, 1.0 / (positions * positions), 1.0, 0.0,
                 1.0, 1.0, 0.0);
  else
    p.add_linear(0, 0, "flatten", {kSide, kSide}, {}, {}, {}, {}, false, false, 1.0 / positions, 1.0, 0.0, 1.0, 1.0,
                 0.0);
  // The readout Dense on the pooled / flattened features.
  p.add_linear(0, 0, "identity", {}, {}, {}, {}, {}, false, false, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0);
  return p;
}

double run(const SpatialProgram& prog, int n, int threads, double& check) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<std::size_t>(n) * kSide * kSide * kChannels);
  for (double& v : x) v = normal(rng);
  std::vector<double> nngp(static_cast<std::size_t>(n) * n * prog.out_size());
  std::vector<double> ntk(nngp.size());
  fastntk::cpu::SpatialGramOptions opt;
  opt.n_threads = threads;
  const auto t0 = Clock::now();
  const bool finite = fastntk::cpu::spatial_gram_cpu(prog, x.data(), n, nullptr, n, nngp.data(), ntk.data(), opt);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!finite) std::printf("  (non-finite entries!)\n");
  check = nngp[1] + ntk[1];
  return secs;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, n_gap = 16, n_flat = 256;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "--threads" && a + 1 < argc) {
      threads = std::atoi(argv[++a]);
    } else if (arg == "--n-gap" && a + 1 < argc) {
      n_gap = std::atoi(argv[++a]);
    } else if (arg == "--n-flatten" && a + 1 < argc) {
      n_flat = std::atoi(argv[++a]);
    } else {
      std::fprintf(stderr, "usage: %s [--threads N] [--n-gap N] [--n-flatten N]\n", argv[0]);
      return arg == "--help" ? 0 : 2;
    }
  }
  const int team = threads > 0 ? threads : omp_get_max_threads();
  Program relu;
  relu.add_dense(1.0, 0.0, true, Parameterization::Ntk, 1.0).add_abrelu(0.0, 1.0);
  std::printf("spatial_gram_cpu: depth-%d CNN, 3x3 SAME convs + ReLU, %dx%dx%d random images, NNGP + NTK, "
              "float64, x2 = None, %d threads\n",
              kDepth, kSide, kSide, kChannels, team);
  std::printf("%-26s %6s %10s %12s %14s\n", "readout", "N", "pairs", "seconds", "pairs/s");
  const struct {
    const char* name;
    bool gap;
    int n;
  } cases[] = {{"Flatten (diagonal regime)", false, n_flat}, {"GlobalAvgPool (full)", true, n_gap}};
  for (const auto& c : cases) {
    const SpatialProgram prog = cnn(c.gap, relu);
    double check = 0.0;
    const double secs = run(prog, c.n, threads, check);
    const double pairs = 0.5 * double(c.n) * (c.n + 1);
    std::printf("%-26s %6d %10.0f %12.4f %14.1f   (k[0,1] nngp+ntk = %.6g)\n", c.name, c.n, pairs, secs, pairs / secs,
                check);
  }
  return 0;
}
