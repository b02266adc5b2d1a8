// C++ tests of the spatial walk (csrc/include/fastntk/spatial_walk_impl.hpp) on the host,
// run by the CPU executor: a few ops on tiny images against values computed by hand from
// the formulas of the CNN contract (/work/notes/cnn_spec.md). No BLAS: the input covariance
// is written here.
// Prints one line per failed check and a final PASS/FAIL line; exits non-zero on failure.
#include "spatial_exec_cpu.hpp"  // first: vecmath.hpp must precede <cmath>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastntk/program.hpp"
#include "fastntk/spatial_program.hpp"
#include "fastntk/spatial_walk_impl.hpp"

namespace {

using fastntk::Parameterization;
using fastntk::Program;
using fastntk::SpatialProgram;

int g_checks = 0, g_failures = 0;

void check_close(const std::string& what, double got, double want, double tol = 1e-14) {
  ++g_checks;
  if (!(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)))) {
    ++g_failures;
    std::printf("FAIL %s: got %.17g, want %.17g\n", what.c_str(), got, want);
  }
}

struct Result {
  std::vector<double> sigma, theta;
};

// Register 0's input covariance of images x, y ([S, C]) into sigma.
void input(const SpatialProgram& p, const std::vector<double>& x, const std::vector<double>& y, double* sigma) {
  const long long s = p.in_positions();
  const int c = p.channels();
  for (long long i = 0; i < s; ++i)
    for (long long j = 0; j < s; ++j) {
      if (!p.full() && i != j) continue;
      double acc = 0.0;
      for (int k = 0; k < c; ++k) acc += x[i * c + k] * y[j * c + k];
      sigma[p.full() ? i * s + j : i] = acc / c;
    }
}

// The pair (x, y): both point walks (their records), then the pair walk; or, with y = x
// and self = true, the point walk's own result.
Result run(const SpatialProgram& p, const std::vector<double>& x, const std::vector<double>& y, bool self = false) {
  const fastntk::SpatialProgramView v = p.view();
  const long long n = fastntk::spatial_buffers(v.n_registers) * v.max_entries;
  std::vector<double> sig(n), the(n), rx(v.point_stride + 1), ry(v.point_stride + 1);
  const fastntk::SpatialWorkspace ws{sig.data(), the.data(), v.max_entries};
  fastntk::cpu::CpuExec ex;
  input(p, x, x, sig.data());
  int b = fastntk::spatial_walk<true, true>(ex, v, ws, rx.data(), rx.data(), rx.data());
  if (!self) {
    input(p, y, y, sig.data());
    fastntk::spatial_walk<true, true>(ex, v, ws, ry.data(), ry.data(), ry.data());
    input(p, x, y, sig.data());
    b = fastntk::spatial_walk<true, false>(ex, v, ws, rx.data(), ry.data(), nullptr);
  }
  const long long m = p.out_size();
  Result r;
  r.sigma.assign(sig.begin() + b * v.max_entries, sig.begin() + b * v.max_entries + m);
  r.theta.assign(the.begin() + b * v.max_entries, the.begin() + b * v.max_entries + m);
  return r;
}

// Conv, diagonal regime, 1-D: Sigma0 = x * y (C = 1) = [1, 2, 3]; window 3, SAME (pad 1):
// L = [0 + 1 + 2, 1 + 2 + 3, 2 + 3 + 0] = [3, 6, 5]; Sigma = 2 L + 0.5, Theta = 1 L + 0.25.
void test_conv_diagonal() {
  SpatialProgram p({3}, 1, false, 1);
  p.add_linear(0, 0, "conv", {3}, {3}, {3}, {1}, {1}, false, false, 1.0, 2.0, 0.5, 1.0, 3.0, 0.25);
  const Result r = run(p, {1, 2, 3}, {1, 1, 1});
  const double want[3] = {6.5, 12.5, 10.5}, want_t[3] = {3.25, 6.25, 5.25};
  for (int i = 0; i < 3; ++i) {
    check_close("conv diagonal sigma " + std::to_string(i), r.sigma[i], want[i]);
    check_close("conv diagonal theta " + std::to_string(i), r.theta[i], want_t[i]);
  }
  // CIRCULAR: every window wraps to the whole axis, 1 + 2 + 3 = 6 everywhere (scale 1/3: 2).
  SpatialProgram c({3}, 1, false, 1);
  c.add_linear(0, 0, "conv", {3}, {3}, {3}, {1}, {1}, true, false, 1.0 / 3.0, 1.0, 0.0, 0.0, 1.0, 0.0);
  const Result rc = run(c, {1, 2, 3}, {1, 1, 1});
  for (int i = 0; i < 3; ++i) check_close("conv circular " + std::to_string(i), rc.sigma[i], 2.0);
  // Stride 2, VALID, window 1 on 5 positions: positions 0, 2, 4 of [1..5] * 2.
  SpatialProgram s({5}, 1, false, 1);
  s.add_linear(0, 0, "conv", {5}, {3}, {1}, {2}, {0}, false, false, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0);
  const Result rs = run(s, {1, 2, 3, 4, 5}, {2, 2, 2, 2, 2});
  for (int i = 0; i < 3; ++i) check_close("conv stride " + std::to_string(i), rs.sigma[i], 2.0 * (2 * i + 1));
}

// Full regime, 1-D, 2 positions: Sigma0 = x y^T = [[3, 4], [6, 8]] (x = [1, 2], y = [3, 4]).
// Conv window 2 VALID (one output): A[0, 0] + A[1, 1] = 11. Pool window 2 VALID: the sum of
// all entries, 21, times scale^2 = 1/4. Flatten: the trace 11; Global: 21.
void test_full_maps() {
  const std::vector<double> x{1, 2}, y{3, 4};
  struct Case {
    const char* map;
    std::vector<int> out;
    double scale, want;
  } cases[] = {{"conv", {1}, 1.0, 11.0}, {"pool", {1}, 0.5, 21.0 / 4}, {"flatten", {}, 0.5, 5.5}, {"global", {}, 1.0, 21.0}};
  for (const Case& c : cases) {
    SpatialProgram p({2}, 1, true, 1);
    const bool spatial = c.out.size() == 1;
    p.add_linear(0, 0, c.map, {2}, c.out, spatial ? std::vector<int>{2} : std::vector<int>{},
                 spatial ? std::vector<int>{1} : std::vector<int>{}, spatial ? std::vector<int>{0} : std::vector<int>{},
                 false, false, c.scale, 1.0, 0.0, 1.0, 1.0, 0.0);
    const Result r = run(p, x, y);
    check_close(std::string("full ") + c.map, r.sigma[0], c.want);
    check_close(std::string("full ") + c.map + " theta", r.theta[0], c.want);
  }
  // Pool with normalize_edges, window 2, SAME-like (out 2, pad_lo 0, pad_hi 1): output 0
  // averages positions {0, 1} (weight 1/2), output 1 position {1} (weight 1): entry [0, 1]
  // = 1/2 * 1 * (A[0, 1] + A[1, 1]) = (4 + 8) / 2 = 6, entry [1, 0] = (A[1, 0] + A[1, 1]) / 2
  // = 7, entry [1, 1] = A[1, 1] = 8.
  SpatialProgram p({2}, 1, true, 1);
  p.add_linear(0, 0, "pool", {2}, {2}, {2}, {1}, {0}, false, true, 123.0, 1.0, 0.0, 0.0, 1.0, 0.0);
  const Result r = run(p, x, y);
  check_close("pool normalize_edges [0, 1]", r.sigma[1], 6.0);
  check_close("pool normalize_edges [1, 0]", r.sigma[2], 7.0);
  check_close("pool normalize_edges [1, 1]", r.sigma[3], 8.0);
}

// ReLU per entry with the point variances: two channels, x = [1, 0], y = [1/2, sqrt(3)/2]:
// s = x.y / 2 = 1/4, qx = qy = 1/2, correlation 1/2, angle pi/3:
// F = (sqrt(qx qy - s^2) + (pi - pi/3) s) / (2 pi), S = (pi - pi/3) / (2 pi) = 1/3.
// The self pair (x, x) takes the exact diagonal map: F = q / 2 = 1/4.
void test_relu() {
  Program fc;
  fc.add_dense(1.0, 0.0, false, Parameterization::Ntk, 1.0).add_abrelu(0.0, 1.0);
  SpatialProgram p({1}, 2, false, 1);
  p.add_linear(0, 0, "identity", {1}, {1}, {}, {}, {}, false, false, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0);  // Theta = Sigma
  p.add_activation(0, fc, 1);
  const double r3 = std::sqrt(3.0);
  const Result r = run(p, {1, 0}, {0.5, r3 / 2});
  const double s = 0.25, pi = 3.141592653589793;
  check_close("relu F", r.sigma[0], (std::sqrt(0.25 - s * s) + (2 * pi / 3) * s) / (2 * pi));
  check_close("relu theta", r.theta[0], s / 3.0);
  const Result self = run(p, {1, 0}, {1, 0}, true);
  check_close("relu self F", self.sigma[0], 0.25);
  check_close("relu self theta", self.theta[0], 0.25);
}

// LayerNorm, diagonal regime, per position: x = [1, 2], y = [3, 1] (C = 1): Sigma0 = [3, 2],
// v_x = [1, 4], v_y = [9, 1] (eps 0): Sigma = [3 / 3, 2 / 2] = [1, 1]. spatial=True:
// v_x = 5/2, v_y = 5: Sigma = [3, 2] / sqrt(12.5).
void test_layernorm() {
  for (bool spatial : {false, true}) {
    SpatialProgram p({2}, 1, false, 1);
    p.add_layernorm(0, spatial, 0.0);
    const Result r = run(p, {1, 2}, {3, 1});
    const double f = spatial ? 1.0 / std::sqrt(12.5) : 0.0;
    check_close(std::string("layernorm 0 spatial=") + (spatial ? "1" : "0"), r.sigma[0], spatial ? 3 * f : 1.0);
    check_close(std::string("layernorm 1 spatial=") + (spatial ? "1" : "0"), r.sigma[1], spatial ? 2 * f : 1.0);
  }
}

// Registers: r1 = r0, r0 = 3 r0 (identity), r0 += 0.5 r1: 3.5 * Sigma0.
void test_registers() {
  SpatialProgram p({2}, 1, false, 2);
  p.add_copy(0, 1);
  p.add_linear(0, 0, "identity", {2}, {2}, {}, {}, {}, false, false, 3.0, 1.0, 0.0, 0.0, 1.0, 0.0);
  p.add_axpy(1, 0, 0.5);
  const Result r = run(p, {1, 2}, {3, 1});
  check_close("registers 0", r.sigma[0], 3.5 * 3.0);
  check_close("registers 1", r.sigma[1], 3.5 * 2.0);
}

void test_builder_errors() {
  auto expect_throw = [](const char* what, auto&& f) {
    ++g_checks;
    try {
      f();
      ++g_failures;
      std::printf("FAIL %s: no std::invalid_argument\n", what);
    } catch (const std::invalid_argument&) {
    }
  };
  expect_throw("pool in the diagonal regime", [] {
    SpatialProgram p({4}, 1, false, 1);
    p.add_linear(0, 0, "pool", {4}, {2}, {2}, {2}, {0}, false, false, 1, 1, 0, 0, 1, 0);
  });
  expect_throw("undefined register", [] {
    SpatialProgram p({4}, 1, false, 2);
    p.add_copy(1, 0);
  });
  expect_throw("inconsistent out size", [] {
    SpatialProgram p({4}, 1, true, 1);
    p.add_linear(0, 0, "conv", {4}, {7}, {3}, {1}, {1}, false, false, 1, 1, 0, 0, 1, 0);
  });
}

}  // namespace

int main() {
  test_conv_diagonal();
  test_full_maps();
  test_relu();
  test_layernorm();
  test_registers();
  test_builder_errors();
  std::printf("%s: %d checks, %d failed\n", g_failures ? "FAIL" : "PASS", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
