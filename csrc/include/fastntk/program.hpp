// fastntk: the host builder of the layer program, a flat array of ops that the walk runs.
//
// A network is compiled once into a Program: Dense layers and activations become
// Ops (op.hpp) with their parameters pre-squared (W_std², b_std², a², ...), and the
// polynomial activations carry integer coefficient tables in a shared pool.
// ProgramView (op.hpp) is the plain-old-data view that kernels (CPU or CUDA) read.
// Host only (with errors.hpp): the headers of csrc/include that use the STL and exceptions.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastntk/config.hpp"
#include "fastntk/op.hpp"

namespace fastntk {

namespace detail {

// (2k-1)!! with (-1)!! = 1.
inline double double_factorial_odd(int k) {
  double r = 1.0;
  for (int i = 2 * k - 1; i > 1; i -= 2) r *= i;
  return r;
}

inline double binomial(int n, int k) {
  double r = 1.0;
  for (int i = 1; i <= k; ++i) r = r * (n - k + i) / i;
  return r;
}

inline double factorial(int n) {
  double r = 1.0;
  for (int i = 2; i <= n; ++i) r *= i;
  return r;
}

// E[u^n v^n] for (u, v) centred Gaussian with Var u = qx, Var v = qy, Cov = s, is
// sum_j coef[j] * s^(n-2j) * (qx qy)^j (Wick's theorem: pair k = n-2j of the u's
// with v's in C(n,k)^2 k! ways and the rest among themselves in ((n-k-1)!!)^2 ways).
inline void monomial_coefficients(int n, std::vector<double>& out) {
  for (int j = 0; 2 * j <= n; ++j) {
    const int k = n - 2 * j;
    const double pairings = double_factorial_odd((n - k) / 2);
    out.push_back(binomial(n, k) * binomial(n, k) * factorial(k) * pairings * pairings);
  }
}

// The arc-cosine kernel of order n (Cho & Saul 2009): with c = cos(theta),
//   2 pi E[relu(u)^n relu(v)^n] / (qx qy)^(n/2) = J_n = A_n(c) (pi - theta) + sin(theta) B_n(c).
// Price's theorem gives dJ_n/dc = n^2 J_{n-1}, hence A_n' = n^2 A_{n-1} and
//   (1 - c^2) B_n' - c B_n = n^2 (1 - c^2) B_{n-1} - A_n,
// with A_n(1) = (2n-1)!! from the diagonal E[relu(u)^2n] = (2n-1)!! q^n / 2.
// Coefficients are stored by ascending power, n + 1 of A_n then n + 1 of B_n.
inline void arccos_coefficients(int n, std::vector<double>& a, std::vector<double>& b) {
  a.assign(1, 1.0);  // A_0 = 1
  b.assign(1, 0.0);  // B_0 = 0
  for (int m = 1; m <= n; ++m) {
    std::vector<double> an(m + 1, 0.0), bn(m + 1, 0.0);
    for (int k = 0; k < m; ++k) an[k + 1] = m * m * a[k] / (k + 1);
    if (m % 2 == 0) {  // even A_m: the constant fixes A_m(1) = (2m-1)!!
      double at_one = 0.0;
      for (double v : an) at_one += v;
      an[0] = double_factorial_odd(m) - at_one;
    }
    // r = m^2 (1 - c^2) B_{m-1} - A_m, coefficients up to degree m.
    std::vector<double> r(m + 2, 0.0);
    for (int k = 0; k < m; ++k) {
      r[k] += m * m * b[k];
      r[k + 2] -= m * m * b[k];
    }
    for (int k = 0; k <= m; ++k) r[k] -= an[k];
    // The coefficient of c^k on the left is (k+1) b_{k+1} - k b_{k-1}; solve from the top.
    for (int k = m; k >= 1; --k) {
      const double upper = (k + 1 <= m) ? bn[k + 1] : 0.0;
      bn[k - 1] = ((k + 1) * upper - r[k]) / k;
    }
    a.swap(an);
    b.swap(bn);
  }
}

}  // namespace detail

// The compiled network. Builders validate their arguments (std::invalid_argument)
// and the ordering rule of Neural Tangents: an activation needs a Gaussian input,
// so it must follow a Dense layer.
class Program {
 public:
  // Dense layer; has_bias = false means no bias (b_std is then ignored). n_in is the
  // finite width feeding the layer; it only enters the standard parameterization's NTK.
  // ntk_bias (>= 0) is the variance multiplier of extra zero-initialized trainable biases:
  // it adds ntk_bias^2 to the NTK only (scikit-ntk's convention for its bias).
  Program& add_dense(double W_std, double b_std, bool has_bias, Parameterization param, double n_in,
                     double ntk_bias = 0.0) {
    check_finite_nonneg("W_std", W_std);
    if (has_bias) check_finite_nonneg("b_std", b_std);
    check_finite_nonneg("ntk_bias", ntk_bias);
    if (param == Parameterization::Standard && !(n_in >= 1.0 && std::isfinite(n_in)))
      throw std::invalid_argument("Dense: the standard parameterization needs the input width n_in >= 1, got " +
                                  std::to_string(n_in));
    Op op = make(OpKind::Dense);
    op.dense.w_var = W_std * W_std;
    op.dense.b_var = has_bias ? b_std * b_std : 0.0;
    op.dense.parameterization = param;
    op.dense.n_in = n_in;
    // The NTK of biases that start at zero (a standard-parameterization bias has
    // gradient 1 whatever its b_std; ntk_bias as above).
    op.dense.t0 = ((param == Parameterization::Standard && has_bias) ? 1.0 : 0.0) + ntk_bias * ntk_bias;
    gaussian_ = true;
    return push(op);
  }

  // a * min(x, 0) + b * max(x, 0): Relu = (0, 1), LeakyRelu(alpha) = (alpha, 1), Abs = (-1, 1).
  Program& add_abrelu(double a, double b) {
    check_finite("a", a);
    check_finite("b", b);
    Op op = activation(OpKind::ABRelu, "ABRelu");
    op.abrelu.mean_slope_sq = 0.5 * (a * a + b * b);
    op.abrelu.kink_sq_over_two_pi = (a - b) * (a - b) * kInvTwoPi;
    return push(op);
  }

  // a * erf(b x) + c
  Program& add_erf(double a, double b, double c) {
    check_finite("a", a);
    check_finite("b", b);
    check_finite("c", c);
    Op op = activation(OpKind::Erf, "Erf");
    op.erf.a2 = a * a;
    op.erf.b2 = b * b;
    op.erf.c2 = c * c;
    return push(op);
  }

  Program& add_sign() { return push(activation(OpKind::Sign, "Sign")); }

  Program& add_gelu() { return push(activation(OpKind::Gelu, "Gelu")); }

  // a * sin(b x + c); Cos(a, b, c) = Sin(a, b, c + pi/2), passed as cos(2c) directly.
  Program& add_sin(double a, double b, double c) { return add_sin_cos2c(a, b, c, std::cos(2.0 * c), "Sin"); }
  Program& add_cos(double a, double b, double c) { return add_sin_cos2c(a, b, c, -std::cos(2.0 * c), "Cos"); }

  // sqrt(2) sin(sqrt(2 gamma) x + pi/4), whose NNGP is exp(-gamma (qx + qy - 2 s)).
  Program& add_rbf(double gamma) {
    check_finite_nonneg("gamma", gamma);
    Op op = activation(OpKind::Rbf, "Rbf");
    op.rbf.gamma = gamma;
    return push(op);
  }

  // a * exp(b x)
  Program& add_exp(double a, double b) {
    check_finite("a", a);
    check_finite("b", b);
    Op op = activation(OpKind::Exp, "Exp");
    op.exp.a2 = a * a;
    op.exp.b2 = b * b;
    return push(op);
  }

  // a * exp(b x^2); finite only where 4 b q < 1 (checked against the data at run time).
  Program& add_gaussian(double a, double b) {
    check_finite("a", a);
    check_finite("b", b);
    Op op = activation(OpKind::Gaussian, "Gaussian");
    op.gaussian.a2 = a * a;
    op.gaussian.b = b;
    op.gaussian.four_b2 = 4.0 * b * b;
    return push(op);
  }

  // x^n: coefficient tables of E[u^n v^n] and of E[u^(n-1) v^(n-1)].
  Program& add_monomial(int degree) {
    check_degree("Monomial", degree);
    Op op = activation(OpKind::Monomial, "Monomial");
    op.power.degree = degree;
    op.power.coef = static_cast<std::int32_t>(coef_.size());
    detail::monomial_coefficients(degree, coef_);
    detail::monomial_coefficients(degree - 1, coef_);
    op.power.degree_sq = double(degree) * degree;
    op.power.moment = detail::double_factorial_odd(degree);  // E[u^2n] = (2n-1)!! q^n
    op.power.moment_prev = detail::double_factorial_odd(degree - 1);
    return push(op);
  }

  // (x >= 0) x^n: A_n, B_n, A_{n-1}, B_{n-1} of the arc-cosine kernel, n + 1 entries each.
  Program& add_rectified_monomial(int degree) {
    check_degree("RectifiedMonomial", degree);
    Op op = activation(OpKind::RectifiedMonomial, "RectifiedMonomial");
    op.power.degree = degree;
    op.power.coef = static_cast<std::int32_t>(coef_.size());
    std::vector<double> a, b;
    detail::arccos_coefficients(degree, a, b);
    coef_.insert(coef_.end(), a.begin(), a.end());
    coef_.insert(coef_.end(), b.begin(), b.end());
    detail::arccos_coefficients(degree - 1, a, b);
    a.resize(degree + 1, 0.0);
    b.resize(degree + 1, 0.0);
    coef_.insert(coef_.end(), a.begin(), a.end());
    coef_.insert(coef_.end(), b.begin(), b.end());
    op.power.degree_sq = double(degree) * degree;
    op.power.moment = 0.5 * detail::double_factorial_odd(degree);  // E[relu(u)^2n] = (2n-1)!! q^n / 2
    op.power.moment_prev = 0.5 * detail::double_factorial_odd(degree - 1);
    return push(op);
  }

  // Ops added from now on report `layer` as their origin in error messages (default: the
  // op's own index). The Python front end sets it to the index of the layer in serial().
  Program& set_layer(int layer) {
    layer_ = layer;
    return *this;
  }

  int n_ops() const { return static_cast<int>(ops_.size()); }
  int n_activations() const { return n_act_; }
  const std::vector<Op>& ops() const { return ops_; }
  const std::vector<double>& coef() const { return coef_; }

  ProgramView view() const { return ProgramView{ops_.data(), n_ops(), n_act_, coef_.empty() ? nullptr : coef_.data()}; }

 private:
  static Op make(OpKind kind) {
    Op op{};
    op.kind = kind;
    return op;
  }

  Op activation(OpKind kind, const char* name) {
    if (!gaussian_)
      throw std::invalid_argument(std::string(name) +
                                  ": an activation needs a Gaussian input, so it must follow a Dense layer "
                                  "(it is the first layer or follows another activation)");
    gaussian_ = false;
    ++n_act_;
    return make(kind);
  }

  Program& add_sin_cos2c(double a, double b, double c, double cos2c, const char* name) {
    check_finite("a", a);
    check_finite("b", b);
    check_finite("c", c);
    Op op = activation(OpKind::Sin, name);
    op.sin.half_a2 = 0.5 * a * a;
    op.sin.b2 = b * b;
    op.sin.cos2c = cos2c;
    return push(op);
  }

  Program& push(Op op) {
    op.layer = layer_ >= 0 ? layer_ : n_ops();
    ops_.push_back(op);
    return *this;
  }

  static void check_finite(const char* what, double v) {
    if (!std::isfinite(v)) throw std::invalid_argument(std::string(what) + " must be finite, got " + std::to_string(v));
  }
  static void check_finite_nonneg(const char* what, double v) {
    if (!(std::isfinite(v) && v >= 0.0))
      throw std::invalid_argument(std::string(what) + " must be finite and >= 0, got " + std::to_string(v));
  }
  static void check_degree(const char* what, int degree) {
    if (degree < 1 || degree > kMaxDegree)
      throw std::invalid_argument(std::string(what) + ": degree must be an integer in [1, " +
                                  std::to_string(kMaxDegree) + "], got " + std::to_string(degree));
  }

  std::vector<Op> ops_;
  std::vector<double> coef_;
  int n_act_ = 0;
  int layer_ = -1;
  bool gaussian_ = false;
};

}  // namespace fastntk
