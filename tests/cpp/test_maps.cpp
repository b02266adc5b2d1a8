// C++ tests of the shared math headers (csrc/include/fastntk) and of the layer walk.
//
// 1. Each activation's dual maps F, S and its diagonal map against references computed
//    here, independently of the maps' closed forms: E[phi(u) phi(v)] and E[phi'(u) phi'(v)]
//    for (u, v) ~ N(0, [[qx, s], [s, qy]]) by 2-D Gauss-Legendre quadrature over the normal
//    density (smooth phi), or, for positively homogeneous phi (ReLU family, sign, rectified
//    monomials), by the polar form E = (qx qy)^(m/2) 2^m m! / (2 pi) * integral over the angle.
// 2. The walk's instances agree: the SIMD row walk (csrc/cpu/row_walk.hpp) and the scalar
//    pair walk (what a CUDA thread runs) on every pair, for double and Dual<2>; the point
//    walk's exact diagonal with the pair walk at s = q.
// 3. The mirror of a symmetric output's tile (csrc/cpu/tiles.hpp) against a plain loop, for
//    diagonal and off-diagonal tiles and m x m blocks, and its stop requests: asked once
//    per 64 destination rows, and a stop ends it early with false.
// Prints one line per failed check and a final PASS/FAIL line; exits non-zero on failure.
#include "row_walk.hpp"  // first: vecmath.hpp must precede <cmath>

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fastntk/activations.hpp"
#include "fastntk/program.hpp"
#include "fastntk/walk_impl.hpp"
#include "tiles.hpp"

namespace {

using fastntk::Dual;
using fastntk::Op;
using fastntk::Parameterization;
using fastntk::Program;
using Fn = std::function<double(double)>;

int g_checks = 0, g_failures = 0;

void check_close(const std::string& what, double got, double want, double rtol, double atol) {
  ++g_checks;
  const bool ok = std::fabs(got - want) <= atol + rtol * std::fabs(want);  // false for NaN
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s: got %.17g, want %.17g (diff %.3g)\n", what.c_str(), got, want, got - want);
  }
}

// Gauss-Legendre nodes and weights on [a, b] (Newton on the Legendre polynomial).
void gauss_legendre(int n, double a, double b, std::vector<double>& x, std::vector<double>& w) {
  x.assign(n, 0.0);
  w.assign(n, 0.0);
  for (int i = 0; i < n; ++i) {
    double z = std::cos(M_PI * (i + 0.75) / (n + 0.5)), dp = 0.0;
    for (int it = 0; it < 100; ++it) {
      double p0 = 1.0, p1 = z;
      for (int k = 2; k <= n; ++k) {
        const double p2 = ((2.0 * k - 1.0) * z * p1 - (k - 1.0) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      if (n == 1) p0 = 1.0;
      dp = n * (z * p1 - p0) / (z * z - 1.0);
      const double dz = p1 / dp;
      z -= dz;
      if (std::fabs(dz) < 1e-16) break;
    }
    x[i] = 0.5 * (a + b) + 0.5 * (b - a) * z;
    w[i] = (b - a) / ((1.0 - z * z) * dp * dp);
  }
}

// E[f(u) g(v)] for smooth f, g by quadrature over the standard normal pair (z1, z2) on [-16, 16]^2
// (the heaviest tail here, Gaussian(b = 0.05) at q = 2, still decays as exp(-0.3 z^2)).
double expect_smooth(const Fn& f, const Fn& g, double qx, double qy, double s) {
  static std::vector<double> x, w;
  if (x.empty()) gauss_legendre(320, -16.0, 16.0, x, w);
  const double rho = s / std::sqrt(qx * qy), rc = std::sqrt(std::max(0.0, 1.0 - rho * rho));
  double sum = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double wi = w[i] * std::exp(-0.5 * x[i] * x[i]);
    const double fu = f(std::sqrt(qx) * x[i]);
    for (std::size_t j = 0; j < x.size(); ++j)
      sum += wi * w[j] * std::exp(-0.5 * x[j] * x[j]) * fu * g(std::sqrt(qy) * (rho * x[i] + rc * x[j]));
  }
  return sum / (2.0 * M_PI);
}

// E[f(u) g(v)] for f, g positively homogeneous of degree m (f(r x) = r^m f(x), r > 0):
// with u = sqrt(qx) r cos(a), v = sqrt(qy) r cos(a - theta), cos(theta) = rho, the radial
// integral is 2^m m!, and the angular one is smooth between the kinks at cos = 0.
double expect_homogeneous(const Fn& f, const Fn& g, int m, double qx, double qy, double s) {
  const double rho = s / std::sqrt(qx * qy);
  const double theta = std::acos(std::max(-1.0, std::min(1.0, rho)));
  std::vector<double> cuts = {0.0, 2.0 * M_PI, 0.5 * M_PI, 1.5 * M_PI};
  for (double c : {theta + 0.5 * M_PI, theta + 1.5 * M_PI}) cuts.push_back(std::fmod(c, 2.0 * M_PI));
  std::sort(cuts.begin(), cuts.end());
  std::vector<double> x, w;
  double sum = 0.0;
  for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
    if (cuts[k + 1] - cuts[k] < 1e-15) continue;
    gauss_legendre(40, cuts[k], cuts[k + 1], x, w);
    for (std::size_t i = 0; i < x.size(); ++i) sum += w[i] * f(std::cos(x[i])) * g(std::cos(x[i] - theta));
  }
  double radial = 1.0;
  for (int k = 1; k <= m; ++k) radial *= 2.0 * k;
  return std::pow(qx * qy, 0.5 * m) * radial * sum / (2.0 * M_PI);
}

struct Case {
  std::string name;
  std::function<void(Program&)> add;  // adds the activation after a Dense
  Fn phi, dphi;
  int degree;              // -1: smooth (2-D quadrature); m >= 0: homogeneous of degree m (dphi: m - 1)
  bool s_is_zero = false;  // Sign: S = 0 by convention (its derivative vanishes a.e.)
};

std::vector<Case> cases() {
  const double a = 0.7, b = 1.3, c = 0.4;
  const auto relu_pow = [](int n) { return [n](double x) { return x > 0.0 ? std::pow(x, n) : 0.0; }; };
  std::vector<Case> v;
  v.push_back({"ABRelu(0.3,1.2)", [](Program& p) { p.add_abrelu(0.3, 1.2); },
               [](double x) { return x < 0.0 ? 0.3 * x : 1.2 * x; }, [](double x) { return x < 0.0 ? 0.3 : 1.2; }, 1});
  v.push_back({"Erf", [=](Program& p) { p.add_erf(a, b, c); }, [=](double x) { return a * std::erf(b * x) + c; },
               [=](double x) { return a * b * 2.0 / std::sqrt(M_PI) * std::exp(-b * b * x * x); }, -1});
  v.push_back({"Sign", [](Program& p) { p.add_sign(); },
               [](double x) { return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0); }, [](double) { return 0.0; }, 0, true});
  v.push_back({"Gelu", [](Program& p) { p.add_gelu(); },
               [](double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); },
               [](double x) {
                 return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
               },
               -1});
  v.push_back({"Sin", [=](Program& p) { p.add_sin(a, b, c); }, [=](double x) { return a * std::sin(b * x + c); },
               [=](double x) { return a * b * std::cos(b * x + c); }, -1});
  v.push_back({"Cos", [=](Program& p) { p.add_cos(a, b, c); }, [=](double x) { return a * std::cos(b * x + c); },
               [=](double x) { return -a * b * std::sin(b * x + c); }, -1});
  const double gamma = 0.3, k = std::sqrt(2.0 * gamma);
  v.push_back({"Rbf", [=](Program& p) { p.add_rbf(gamma); },
               [=](double x) { return std::sqrt(2.0) * std::sin(k * x + 0.25 * M_PI); },
               [=](double x) { return std::sqrt(2.0) * k * std::cos(k * x + 0.25 * M_PI); }, -1});
  v.push_back({"Exp", [](Program& p) { p.add_exp(0.8, 0.5); }, [](double x) { return 0.8 * std::exp(0.5 * x); },
               [](double x) { return 0.4 * std::exp(0.5 * x); }, -1});
  v.push_back({"Gaussian(b<0)", [](Program& p) { p.add_gaussian(0.9, -0.4); },
               [](double x) { return 0.9 * std::exp(-0.4 * x * x); },
               [](double x) { return -0.72 * x * std::exp(-0.4 * x * x); }, -1});
  v.push_back({"Gaussian(b>0)", [](Program& p) { p.add_gaussian(0.9, 0.05); },
               [](double x) { return 0.9 * std::exp(0.05 * x * x); },
               [](double x) { return 0.09 * x * std::exp(0.05 * x * x); }, -1});
  for (int n : {1, 2, 3}) {
    v.push_back({"Monomial(" + std::to_string(n) + ")", [n](Program& p) { p.add_monomial(n); },
                 [n](double x) { return std::pow(x, n); }, [n](double x) { return n * std::pow(x, n - 1); }, -1});
    v.push_back({"RectifiedMonomial(" + std::to_string(n) + ")", [n](Program& p) { p.add_rectified_monomial(n); },
                 relu_pow(n), [n, relu_pow](double x) { return x > 0.0 ? n * std::pow(x, n - 1) : 0.0; }, n});
  }
  return v;
}

// Evaluates one activation op's maps at (qx, qy, s) and its diagonal maps at qx; the
// walk's own switch (visit_activation) picks the Map.
struct MapProbe {
  double qx, qy, s;
  const double* coef;
  double f = 0, dot = 0, fd = 0, dotd = 0;
  template <class Map>
  bool activation(const Op& op, int, int) {
    const auto x = Map::stats(op, coef, qx), y = Map::stats(op, coef, qy);
    f = s;
    dot = 1.0;
    Map::template pair<true>(op, coef, x, y, f, dot);
    Map::diag(op, coef, qx, fd, dotd);
    return true;
  }
};

void test_maps() {
  const double points[][3] = {{1.0, 1.0, 0.3}, {0.7, 1.4, -0.5}, {2.0, 0.5, 0.9}, {0.4, 0.9, 0.0}};
  for (const Case& c : cases()) {
    Program p;
    p.add_dense(1.0, 0.0, false, Parameterization::Ntk, 1.0);
    c.add(p);
    const Op& op = p.ops()[1];
    for (const auto& pt : points) {
      const double qx = pt[0], qy = pt[1], s = pt[2];
      MapProbe probe{qx, qy, s, p.view().coef};
      fastntk::visit_activation(op, 1, 0, probe);
      double f, dot, fd, dotd;
      if (c.degree < 0) {
        f = expect_smooth(c.phi, c.phi, qx, qy, s);
        dot = expect_smooth(c.dphi, c.dphi, qx, qy, s);
        fd = expect_smooth(c.phi, c.phi, qx, qx, qx);
        dotd = expect_smooth(c.dphi, c.dphi, qx, qx, qx);
      } else {
        const int m = c.degree;
        f = expect_homogeneous(c.phi, c.phi, m, qx, qy, s);
        fd = expect_homogeneous(c.phi, c.phi, m, qx, qx, qx);
        dot = c.s_is_zero ? 0.0 : expect_homogeneous(c.dphi, c.dphi, m - 1, qx, qy, s);
        dotd = c.s_is_zero ? 0.0 : expect_homogeneous(c.dphi, c.dphi, m - 1, qx, qx, qx);
      }
      const std::string at =
          c.name + " at (" + std::to_string(qx) + ", " + std::to_string(qy) + ", " + std::to_string(s) + ")";
      check_close("F " + at, probe.f, f, 1e-9, 1e-12);
      check_close("S " + at, probe.dot, dot, 1e-9, 1e-12);
      check_close("diag F " + c.name + " q=" + std::to_string(qx), probe.fd, fd, 1e-9, 1e-12);
      check_close("diag S " + c.name + " q=" + std::to_string(qx), probe.dotd, dotd, 1e-9, 1e-12);
    }
  }
}

// ---- walk agreement
template <class T>
double val(const T& x) {
  return fastntk::value(x);
}

template <class T>
void walk_agreement(const std::string& name, const Program& prog, int n, int d, std::mt19937& rng) {
  constexpr int P = fastntk::DualSize<T>::value;
  const fastntk::ProgramView view = prog.view();
  std::normal_distribution<double> normal;
  std::vector<double> x(n * d);
  for (double& v : x) v = normal(rng);
  for (int k = 0; k < d; ++k) x[d + k] = x[k];  // rows 0 and 1 equal: an exactly parallel pair
  std::vector<double> seeds(static_cast<std::size_t>(view.n_ops) * P * 3);
  for (double& v : seeds) v = normal(rng);
  const double* sp = P ? seeds.data() : nullptr;
  std::vector<T> table(4 * view.n_activations * n), qd(n), td(n);
  std::vector<double> s0(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int k = 0; k < d; ++k) acc += x[i * d + k] * x[j * d + k];
      s0[i * n + j] = acc / d;
    }
  for (int i = 0; i < n; ++i)
    if (fastntk::point_walk<T>(view, sp, s0[i * n + i], table.data(), n, i, nullptr, 0, qd.data(), td.data()) >= 0)
      check_close(name + ": point walk stopped", 1.0, 0.0, 0.0, 0.0);
  const fastntk::PointTablesT<T> tables{table.data(), n};
  std::vector<T> s(n), t(n);
  // For Dual<P>, also the walk by plane (what the Gram driver runs for derivatives), its
  // s planes ss apart as in an output (ss > n), its t planes n apart as in a scratch row.
  const std::int64_t ss = n + 3;
  std::vector<double> planes(static_cast<std::size_t>(4 * view.n_activations) * (1 + P) * n);
  std::vector<double> s_planes((1 + P) * ss), t_planes((1 + P) * n);
  if constexpr (P > 0) fastntk::cpu::split_planes<P>(tables, view.n_activations, planes.data());
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) s[j] = T(s0[i * n + j]);
    fastntk::cpu::row_walk<true>(view, sp, tables, i, tables, 0, n, s.data(), t.data(), [](int) {});
    if constexpr (P > 0) {
      std::fill(s_planes.begin(), s_planes.end(), 0.0);
      std::copy(s0.begin() + i * n, s0.begin() + (i + 1) * n, s_planes.begin());
      const fastntk::cpu::PlanePointTables<P> by_plane{planes.data(), n};
      fastntk::cpu::row_walk_planes<true, P>(view, sp, by_plane, i, by_plane, 0, n, s_planes.data(), ss,
                                             t_planes.data(), n, [](int) {});
    }
    for (int j = 0; j < n; ++j) {
      T ps = T(s0[i * n + j]), pt;
      fastntk::pair_walk<true>(view, sp, tables, i, tables, j, ps, pt);
      const std::string at = name + " pair (" + std::to_string(i) + ", " + std::to_string(j) + ")";
      const double scale_s = std::fabs(val(ps)) + 1.0, scale_t = std::fabs(val(pt)) + 1.0;
      check_close("row vs pair NNGP " + at, val(s[j]), val(ps), 0.0, 1e-12 * scale_s);
      check_close("row vs pair NTK " + at, val(t[j]), val(pt), 0.0, 1e-12 * scale_t);
      for (int k = 0; k < P; ++k) {
        check_close("row vs pair dNNGP " + at, fastntk::tangent(s[j], k), fastntk::tangent(ps, k), 0.0,
                    1e-11 * scale_s);
        check_close("row vs pair dNTK " + at, fastntk::tangent(t[j], k), fastntk::tangent(pt, k), 0.0, 1e-11 * scale_t);
      }
      if constexpr (P > 0) {
        check_close("planes vs pair NNGP " + at, s_planes[j], val(ps), 0.0, 1e-12 * scale_s);
        check_close("planes vs pair NTK " + at, t_planes[j], val(pt), 0.0, 1e-12 * scale_t);
        for (int k = 0; k < P; ++k) {
          check_close("planes vs pair dNNGP " + at, s_planes[(k + 1) * ss + j], fastntk::tangent(ps, k), 0.0,
                      1e-11 * scale_s);
          check_close("planes vs pair dNTK " + at, t_planes[(k + 1) * n + j], fastntk::tangent(pt, k), 0.0,
                      1e-11 * scale_t);
        }
      }
      if (i == j) {  // the exact diagonal vs the pair walk at s = q (correlation exactly 1)
        check_close("diag vs pair NNGP " + at, val(qd[i]), val(ps), 1e-7, 1e-12);
        check_close("diag vs pair NTK " + at, val(td[i]), val(pt), 1e-7, 1e-12);
      }
    }
  }
}

void test_walks() {
  std::mt19937 rng(7);
  for (const Case& c : cases()) {
    for (bool standard : {false, true}) {
      Program p;
      const Parameterization par = standard ? Parameterization::Standard : Parameterization::Ntk;
      p.add_dense(1.1, 0.3, true, par, 4.0, 0.2);
      c.add(p);
      p.add_dense(0.8, 0.1, true, par, 5.0);
      c.add(p);
      p.add_dense(1.2, 0.0, false, par, 3.0);
      const std::string name = c.name + (standard ? " standard" : " ntk");
      walk_agreement<double>(name, p, 9, 4, rng);
      walk_agreement<Dual<2>>(name + " Dual<2>", p, 9, 4, rng);
    }
  }
}

// 3. mirror_tile: out[j, i] = out[i, j]^T for the tile's pairs with j > i (all of an
// off-diagonal tile's), nothing else written; the stop requests.
void test_mirror() {
  using fastntk::cpu::mirror_tile;
  using fastntk::cpu::Tile;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const std::int64_t n = 150;
  for (const int m : {1, 2}) {
    for (const Tile tile : {Tile{0, 0, 40, 150, true}, Tile{16, 16, 37, 80, true}, Tile{3, 70, 29, 77, false},
                            Tile{0, 9, 8, 141, false}}) {
      const std::int64_t bs = static_cast<std::int64_t>(m) * m;
      std::vector<double> out(static_cast<std::size_t>(n * n * bs));
      for (double& v : out) v = u(rng);
      std::vector<double> want = out;
      for (int r = 0; r < tile.rows; ++r)
        for (int c = 0; c < tile.cols; ++c) {
          const std::int64_t i = tile.i0 + r, j = tile.j0 + c;
          if (tile.diagonal && j <= i) continue;
          for (int o = 0; o < m; ++o)
            for (int o2 = 0; o2 < m; ++o2) want[((j * n + i) * m + o2) * m + o] = out[((i * n + j) * m + o) * m + o2];
        }
      const std::string name = "mirror m=" + std::to_string(m) + " tile " + std::to_string(tile.i0) + "," +
                               std::to_string(tile.j0) + " " + std::to_string(tile.rows) + "x" +
                               std::to_string(tile.cols);
      std::vector<double> got = out;
      int asked = 0;
      const bool done = mirror_tile(got.data(), n, tile, m, [&] { return ++asked < 0; });
      int wrong = 0;
      for (std::size_t e = 0; e < got.size(); ++e) wrong += got[e] != want[e];
      check_close(name + ": entries unlike the plain loop's", wrong, 0, 0, 0);
      check_close(name + ": finished", done, 1, 0, 0);
      check_close(name + ": stop requests (one per 64 rows)", asked, (tile.cols + 63) / 64, 0, 0);
      if (tile.cols > 64) {  // stopped at the second request: only the first 64 columns mirrored
        std::vector<double> part = out;
        asked = 0;
        const bool finished = mirror_tile(part.data(), n, tile, m, [&] { return ++asked == 2; });
        check_close(name + ": stopped", finished, 0, 0, 0);
        wrong = 0;
        for (std::int64_t j = 0; j < n; ++j)
          for (std::int64_t e = 0; e < n * bs; ++e) {
            const std::size_t k = static_cast<std::size_t>(j * n * bs + e);
            const bool early = j >= tile.j0 && j < tile.j0 + 64;  // rows the first 64 columns write
            wrong += part[k] != (early ? want[k] : out[k]);
          }
        check_close(name + ": stopped after 64 rows", wrong, 0, 0, 0);
      }
    }
  }
}

}  // namespace

int main() {
  test_maps();
  test_walks();
  test_mirror();
  std::printf("%s: %d checks, %d failed\n", g_failures ? "FAIL" : "PASS", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
