// fastntk: the dual maps of each activation, written once for host and device.
//
// For (u, v) ~ N(0, [[qx, s], [s, qy]]) every map gives
//   F(qx, qy, s) = E[phi(u) phi(v)]      (the new NNGP entry)
//   S(qx, qy, s) = E[phi'(u) phi'(v)]    (the factor on the NTK entry)
// and, on the diagonal s = qx = qy = q, the closed forms F(q, q, q) and S(q, q, q).
// The conventions (parameter scalings, fill values) are those of Neural Tangents
// 0.6.5; see DESIGN.md section 2.1.
//
// Per point the driver keeps a few numbers derived from q (a Stats record, filled by
// `stats`), so that the per-pair work holds no division or square root of q:
// which numbers depends on the map and is documented on each `stats`.
//
// The diagonal is computed by `diag`, never by `pair` at s = q: the pair formulas
// go through a correlation that rounds to 1 - 1e-16 and whose arc-cosine then
// carries an error of 1e-8. Drivers write the diagonal of a symmetric Gram from
// `diag`, which is exact.
#pragma once

#include "fastntk/config.hpp"
#include "fastntk/dual.hpp"
#include "fastntk/op.hpp"

namespace fastntk {

template <class T>
struct StatsT {
  T q, a, b, c;
};
using Stats = StatsT<double>;

namespace detail {

// The correlation c = s * (1/sqrt(qx)) * (1/sqrt(qy)), clamped to [-1, 1] and snapped to
// +-1 within 8 ulps of it. Clamped: rounding can step outside [-1, 1], where acos
// and sqrt(1 - c^2) return NaN. Snapped: the three roundings above leave c up to
// ~4 ulps off, so a pair that is exactly parallel (duplicate inputs, two zero
// inputs after a bias, every pair of a deep network that has converged to its
// fixed point) would see c = 1 - 2e-16, whose arc-cosine is 2e-8 instead of 0: an
// error of 1e-8 in every derivative factor. Within 8 ulps a computed c cannot be
// told apart from +-1, and the arc-cosine there is below the 4e-8 that its own
// rounding already allows, so snapping loses nothing and makes parallel pairs exact.
// (A snapped correlation has no tangent: the pair stays parallel whatever the parameters.)
template <class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE T clamp_unit(T c) {
  constexpr double kSnap = 1.0 - 8.0 * 2.220446049250313e-16;
  c = c > kSnap ? T(1.0) : c;
  return c < -kSnap ? T(-1.0) : c;
}

// 1/sqrt(q), or 0 for a zero-variance point, whose correlation with anything is then
// 0: the angle is pi/2, as Neural Tangents fills atan2(0, 0).
template <class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE T inv_sqrt_or_zero(const T& q) {
  return q > 0.0 ? 1.0 / detail::sqrt(q) : T(0.0);
}

// sqrt(1 - c^2) as sqrt((1 - c)(1 + c)): 1 - c is exact for c in [1/2, 1], so the
// sine keeps its relative accuracy for nearly parallel pairs.
template <class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE T sine_of(const T& c) {
  return detail::sqrt((1.0 - c) * (1.0 + c));
}

// Horner evaluation of sum_k p[k] c^k, k = 0..n.
template <class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE T poly(const double* p, int n, const T& c) {
  T acc = p[n];
  for (int k = n - 1; k >= 0; --k) acc = acc * c + p[k];
  return acc;
}

// sum_j coef[j] s^(n-2j) v^j, j = 0..n/2 (see detail::monomial_coefficients).
template <class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE T wick(const double* coef, int n, const T& s, const T& v) {
  const T u = s * s;
  T acc = coef[0];
  T vp = 1.0;
  for (int j = 1; 2 * j <= n; ++j) {
    vp *= v;
    acc = acc * u + coef[j] * vp;
  }
  return (n & 1) ? acc * s : acc;
}

// q^k for a small non-negative integer k, with 0^0 = 1.
template <class T>
FASTNTK_HD FASTNTK_ALWAYS_INLINE T ipow(const T& q, int k) {
  T r = 1.0;
  for (int i = 0; i < k; ++i) r *= q;
  return r;
}

}  // namespace detail

// a min(x, 0) + b max(x, 0).
// Stats: a = sqrt(q), b = 1/sqrt(q) (0 at q = 0).
struct ABReluMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op&, const double*, const T& q) {
    return StatsT<T>{q, detail::sqrt(q), detail::inv_sqrt_or_zero(q), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T c = detail::clamp_unit(s * x.b * y.b);
    const T theta = detail::acos(c);
    const T dot = op.abrelu.mean_slope_sq - op.abrelu.kink_sq_over_two_pi * theta;
    const T r = x.a * y.a * detail::sine_of(c);
    if (Ntk) t *= dot;
    s = op.abrelu.kink_sq_over_two_pi * r + dot * s;
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T& q, T& f, T& dot) {
    f = op.abrelu.mean_slope_sq * q;
    // At q = 0 the kink makes S a convention; take the pair map's (angle pi/2).
    dot = q > 0.0 ? op.abrelu.mean_slope_sq : op.abrelu.mean_slope_sq - op.abrelu.kink_sq_over_two_pi * (0.5 * kPi);
  }
};

// a erf(b x) + c. With q scaled by b^2 and rho = 2 s / sqrt((1 + 2 qx)(1 + 2 qy)):
// F = (2/pi) asin(rho), S = (4/pi) / sqrt((1 + 2 qx)(1 + 2 qy) (1 - rho^2)).
// Stats: a = 1/sqrt(1 + 2 b^2 q).
struct ErfMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op& op, const double*, const T& q) {
    return StatsT<T>{q, 1.0 / detail::sqrt(1.0 + 2.0 * op.erf.b2 * q), T(0.0), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T e = x.a * y.a;
    const T rho = 2.0 * op.erf.b2 * s * e;
    if (Ntk) t *= op.erf.a2 * op.erf.b2 * (4.0 * kInvPi) * e / detail::sine_of(rho);
    s = op.erf.a2 * (2.0 * kInvPi) * detail::asin(rho) + op.erf.c2;
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T& q, T& f, T& dot) {
    const T qb = op.erf.b2 * q;
    f = op.erf.a2 * (2.0 * kInvPi) * detail::atan2(qb, detail::sqrt(qb + 0.25)) + op.erf.c2;
    dot = op.erf.a2 * op.erf.b2 * (4.0 * kInvPi) / detail::sqrt(1.0 + 4.0 * qb);
  }
};

// sign(x): F = 1 - 2 theta / pi = (2/pi) asin(c), the second form exact at c = 0; its
// derivative vanishes almost everywhere, so the NTK entry becomes 0 (as in Neural
// Tangents). Stats: b = 1/sqrt(q) (0 at q = 0).
struct SignMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op&, const double*, const T& q) {
    return StatsT<T>{q, T(0.0), detail::inv_sqrt_or_zero(q), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op&, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T c = detail::clamp_unit(s * x.b * y.b);
    if (Ntk) t = 0.0;
    s = 2.0 * kInvPi * detail::asin(c);
  }
  template <class T>
  FASTNTK_HD static void diag(const Op&, const double*, const T& q, T& f, T& dot) {
    f = T(q == 0.0 ? 0.0 : 1.0);
    dot = 0.0;
  }
};

// x Phi(x) (exact Gelu). With P = qx qy, P1 = (qx + 1)(qy + 1), d^2 = P1 - s^2 (>= 1):
// F = s/4 + ((s^2 + P d^2) / (P1 d) + s atan2(s, d)) / (2 pi),
// S = 1/4 + atan2(s, d) / (2 pi) + s / (2 pi d) (1/d^2 + (1 - P)/P1 + 1).
// Stats: a = q + 1.
struct GeluMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op&, const double*, const T& q) {
    return StatsT<T>{q, q + 1.0, T(0.0), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op&, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T prod = x.q * y.q;
    const T prod1 = x.a * y.a;
    const T d2 = prod1 - s * s;
    const T d = detail::sqrt(d2);
    const T angle = detail::atan2(s, d);
    if (Ntk) t *= 0.25 + kInvTwoPi * (angle + s / d * (1.0 / d2 + (1.0 - prod) / prod1 + 1.0));
    s = 0.25 * s + kInvTwoPi * ((s * s + prod * d2) / (prod1 * d) + s * angle);
  }
  template <class T>
  FASTNTK_HD static void diag(const Op&, const double*, const T& q, T& f, T& dot) {
    const T d2 = 1.0 + 2.0 * q;
    const T d = detail::sqrt(d2);
    const T angle = detail::atan2(q, d);
    const T q1 = q + 1.0;
    f = q * (0.25 + kInvPi * (q / (q1 * d) + 0.5 * angle));
    dot = 0.25 + kInvTwoPi * (angle + q / d * (1.0 / d2 + (1.0 - q * q) / (q1 * q1) + 1.0));
  }
};

// a sin(b x + c) (Cos shifts c by pi/2). With h = (qx + qy)/2:
// F = a^2/2 (e^{b^2 (s - h)} - e^{-b^2 (s + h)} cos 2c), S = a^2 b^2/2 (e^{b^2 (s - h)} + e^{-b^2 (s + h)} cos 2c).
// Both exponents are <= 0 since |s| <= h. Stats: none beyond q.
struct SinMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op&, const double*, const T& q) {
    return StatsT<T>{q, T(0.0), T(0.0), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T h = 0.5 * (x.q + y.q);
    const T e1 = detail::exp(op.sin.b2 * (s - h));
    const T e2 = detail::exp(-op.sin.b2 * (s + h)) * op.sin.cos2c;
    if (Ntk) t *= op.sin.half_a2 * op.sin.b2 * (e1 + e2);
    s = op.sin.half_a2 * (e1 - e2);
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T& q, T& f, T& dot) {
    const T e2 = detail::exp(-2.0 * op.sin.b2 * q) * op.sin.cos2c;
    f = op.sin.half_a2 * (1.0 - e2);
    dot = op.sin.half_a2 * op.sin.b2 * (1.0 + e2);
  }
};

// sqrt(2) sin(sqrt(2 gamma) x + pi/4): F = exp(-gamma (qx + qy - 2 s)), S = 2 gamma F.
struct RbfMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op&, const double*, const T& q) {
    return StatsT<T>{q, T(0.0), T(0.0), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T f = detail::exp(op.rbf.gamma * (2.0 * s - x.q - y.q));
    if (Ntk) t *= 2.0 * op.rbf.gamma * f;
    s = f;
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T&, T& f, T& dot) {
    f = 1.0;
    dot = 2.0 * op.rbf.gamma;
  }
};

// a exp(b x): F = a^2 e^{b^2 ((qx + qy)/2 + s)}, S = b^2 F.
struct ExpMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op&, const double*, const T& q) {
    return StatsT<T>{q, T(0.0), T(0.0), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T f = op.exp.a2 * detail::exp(op.exp.b2 * (0.5 * (x.q + y.q) + s));
    if (Ntk) t *= op.exp.b2 * f;
    s = f;
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T& q, T& f, T& dot) {
    f = op.exp.a2 * detail::exp(2.0 * op.exp.b2 * q);
    dot = op.exp.b2 * f;
  }
};

// a exp(b x^2): with D = sqrt((1 - 2 b qx)(1 - 2 b qy) - 4 b^2 s^2),
// F = a^2 / D, S = 4 a^2 b^2 s / D^3. Stats: a = 1 - 2 b q.
struct GaussianMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op& op, const double*, const T& q) {
    return StatsT<T>{q, 1.0 - 2.0 * op.gaussian.b * q, T(0.0), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double*, const StatsT<T>& x, const StatsT<T>& y,
                                                    T& s, T& t) {
    const T inv = 1.0 / detail::sqrt(x.a * y.a - op.gaussian.four_b2 * s * s);
    if (Ntk) t *= op.gaussian.a2 * op.gaussian.four_b2 * s * inv * inv * inv;
    s = op.gaussian.a2 * inv;
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T& q, T& f, T& dot) {
    const T inv = 1.0 / detail::sqrt(1.0 - 4.0 * op.gaussian.b * q);
    f = op.gaussian.a2 * inv;
    dot = op.gaussian.a2 * op.gaussian.four_b2 * q * inv * inv * inv;
  }
};

// x^n: F = E[u^n v^n], S = n^2 E[u^(n-1) v^(n-1)], both by Wick's theorem.
// coef = the two Wick tables.
struct MonomialMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op&, const double*, const T& q) {
    return StatsT<T>{q, T(0.0), T(0.0), T(0.0)};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double* coef, const StatsT<T>& x,
                                                    const StatsT<T>& y, T& s, T& t) {
    const int n = op.power.degree;
    const double* cf = coef + op.power.coef;
    const T v = x.q * y.q;
    if (Ntk) t *= op.power.degree_sq * detail::wick(cf + n / 2 + 1, n - 1, s, v);
    s = detail::wick(cf, n, s, v);
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T& q, T& f, T& dot) {
    f = op.power.moment * detail::ipow(q, op.power.degree);
    dot = op.power.degree_sq * op.power.moment_prev * detail::ipow(q, op.power.degree - 1);
  }
};

// (x >= 0) x^n, the arc-cosine kernel of order n:
// F = (qx qy)^(n/2) J_n(theta) / (2 pi), S = n^2 (qx qy)^((n-1)/2) J_{n-1}(theta) / (2 pi),
// J_n = A_n(c) (pi - theta) + sin(theta) B_n(c). At c = 1 this is the exact limit
// (2n-1)!! q^n / 2, where Neural Tangents' formula divides 0 by 0.
// Stats: a = q^(n/2), b = 1/sqrt(q) (0 at q = 0), c = q^((n-1)/2).
struct RectifiedMonomialMap {
  template <class T>
  FASTNTK_HD static StatsT<T> stats(const Op& op, const double*, const T& q) {
    const T r = detail::sqrt(q);
    const int n = op.power.degree;
    // q^(n/2) = q^floor(n/2) * sqrt(q)^(n mod 2), exact powers where possible.
    const T an = detail::ipow(q, n / 2) * ((n & 1) ? r : T(1.0));
    const T an1 = detail::ipow(q, (n - 1) / 2) * (((n - 1) & 1) ? r : T(1.0));
    return StatsT<T>{q, an, detail::inv_sqrt_or_zero(q), an1};
  }
  template <bool Ntk, class T>
  FASTNTK_HD FASTNTK_ALWAYS_INLINE static void pair(const Op& op, const double* coef, const StatsT<T>& x,
                                                    const StatsT<T>& y, T& s, T& t) {
    const int n = op.power.degree;
    const double* table = coef + op.power.coef;  // A_n, B_n, A_{n-1}, B_{n-1}, n + 1 each
    const T c = detail::clamp_unit(s * x.b * y.b);
    const T rest = kPi - detail::acos(c);
    const T sine = detail::sine_of(c);
    if (Ntk) {
      const T j1 = detail::poly(table + 2 * (n + 1), n, c) * rest + sine * detail::poly(table + 3 * (n + 1), n, c);
      t *= op.power.degree_sq * x.c * y.c * kInvTwoPi * j1;
    }
    const T j = detail::poly(table, n, c) * rest + sine * detail::poly(table + (n + 1), n, c);
    s = x.a * y.a * kInvTwoPi * j;
  }
  template <class T>
  FASTNTK_HD static void diag(const Op& op, const double*, const T& q, T& f, T& dot) {
    f = op.power.moment * detail::ipow(q, op.power.degree);
    dot = op.power.degree_sq * op.power.moment_prev * detail::ipow(q, op.power.degree - 1);
    // Degree 1 at q = 0: S = (pi - theta) / (2 pi) at the conventional angle pi/2, as the pair map.
    if (q == 0.0 && op.power.degree == 1) dot = 0.25;
  }
};

}  // namespace fastntk
