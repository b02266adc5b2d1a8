// fastntk: forward-mode dual numbers, so that the recursion carries the derivatives of
// every kernel entry with respect to P hyperparameters through the same code that
// computes the entry (the dual maps are templates on their scalar type).
//
// Where an elementary function is not differentiable (sqrt at 0, acos and asin at +-1,
// atan2 at the origin) the recursion only gets there for pairs that are exactly
// parallel, exactly antiparallel or of zero variance, and stay so whatever the
// hyperparameters (a parallel pair stays parallel): their tangent is then 0, and the
// derivative is taken as 0 rather than 0 * infinity = NaN.
#pragma once

#include <cmath>

#include "fastntk/config.hpp"

namespace fastntk {

namespace detail {

// x * y + z rounded once where the target fuses it (FMA hardware, CUDA devices), else
// rounded twice. Written out so that a derivative's rounding is fixed by the source, not
// by which of two products the compiler happens to contract: then every direction of a
// Dual<P> gets the same bits whatever P and whatever the surrounding code inlines.
FASTNTK_HD FASTNTK_ALWAYS_INLINE double fused_mul_add(double x, double y, double z) {
#if defined(__CUDA_ARCH__)
  return ::fma(x, y, z);
#elif defined(__FMA__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_fma(x, y, z);
#else
  return x * y + z;
#endif
}

}  // namespace detail

template <int P>
struct Dual {
  double v;     // the value
  double d[P];  // its derivatives along the P directions

  FASTNTK_HD Dual() : v(0.0) {
    for (int k = 0; k < P; ++k) d[k] = 0.0;
  }
  FASTNTK_HD Dual(double x) : v(x) {  // NOLINT: constants convert implicitly
    for (int k = 0; k < P; ++k) d[k] = 0.0;
  }
};

// The number of directions of a scalar type: 0 for double.
template <class T>
struct DualSize {
  static constexpr int value = 0;
};
template <int P>
struct DualSize<Dual<P>> {
  static constexpr int value = P;
};

template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE double value(const Dual<P>& x) {
  return x.v;
}
FASTNTK_HD FASTNTK_ALWAYS_INLINE double value(double x) { return x; }

// The derivative along direction k (0 for a plain double).
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE double tangent(const Dual<P>& x, int k) {
  return x.d[k];
}
FASTNTK_HD FASTNTK_ALWAYS_INLINE double tangent(double, int) { return 0.0; }

// A Dual with value v and derivatives g * x.d: the chain rule for a function of one argument.
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> chain(double v, double g, const Dual<P>& x) {
  Dual<P> r(v);
  for (int k = 0; k < P; ++k) r.d[k] = g * x.d[k];
  return r;
}

template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE bool has_tangent(const Dual<P>& x) {
  for (int k = 0; k < P; ++k)
    if (x.d[k] != 0.0) return true;
  return false;
}

template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator-(const Dual<P>& a) {
  return chain(-a.v, -1.0, a);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator+(const Dual<P>& a, const Dual<P>& b) {
  Dual<P> r(a.v + b.v);
  for (int k = 0; k < P; ++k) r.d[k] = a.d[k] + b.d[k];
  return r;
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator-(const Dual<P>& a, const Dual<P>& b) {
  Dual<P> r(a.v - b.v);
  for (int k = 0; k < P; ++k) r.d[k] = a.d[k] - b.d[k];
  return r;
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator*(const Dual<P>& a, const Dual<P>& b) {
  Dual<P> r(a.v * b.v);
  for (int k = 0; k < P; ++k) r.d[k] = detail::fused_mul_add(a.d[k], b.v, a.v * b.d[k]);
  return r;
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator/(const Dual<P>& a, const Dual<P>& b) {
  const double inv = 1.0 / b.v;
  Dual<P> r(a.v * inv);
  for (int k = 0; k < P; ++k) r.d[k] = (a.d[k] - r.v * b.d[k]) * inv;
  return r;
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator+(const Dual<P>& a, double b) {
  Dual<P> r = a;
  r.v += b;
  return r;
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator+(double a, const Dual<P>& b) {
  return b + a;
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator-(const Dual<P>& a, double b) {
  return a + (-b);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator-(double a, const Dual<P>& b) {
  return chain(a - b.v, -1.0, b);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator*(const Dual<P>& a, double b) {
  return chain(a.v * b, b, a);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator*(double a, const Dual<P>& b) {
  return chain(a * b.v, a, b);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator/(const Dual<P>& a, double b) {
  return a * (1.0 / b);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> operator/(double a, const Dual<P>& b) {
  const double v = a / b.v;
  return chain(v, -v / b.v, b);
}
template <int P, class U>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P>& operator+=(Dual<P>& a, const U& b) {
  return a = a + b;
}
template <int P, class U>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P>& operator*=(Dual<P>& a, const U& b) {
  return a = a * b;
}

// Comparisons look at values only.
#define FASTNTK_DUAL_COMPARE(op)                                                          \
  template <int P>                                                                        \
  FASTNTK_HD FASTNTK_ALWAYS_INLINE bool operator op(const Dual<P>& a, const Dual<P>& b) { \
    return a.v op b.v;                                                                    \
  }                                                                                       \
  template <int P>                                                                        \
  FASTNTK_HD FASTNTK_ALWAYS_INLINE bool operator op(const Dual<P>& a, double b) {         \
    return a.v op b;                                                                      \
  }                                                                                       \
  template <int P>                                                                        \
  FASTNTK_HD FASTNTK_ALWAYS_INLINE bool operator op(double a, const Dual<P>& b) {         \
    return a op b.v;                                                                      \
  }
FASTNTK_DUAL_COMPARE(<)
FASTNTK_DUAL_COMPARE(>)
FASTNTK_DUAL_COMPARE(<=)
FASTNTK_DUAL_COMPARE(>=)
FASTNTK_DUAL_COMPARE(==)
#undef FASTNTK_DUAL_COMPARE

// Elementary functions, in fastntk::detail so that they never meet the C library's or
// CUDA's ::sqrt & co. under a `using namespace fastntk`. The maps call them qualified
// (detail::sqrt(x)) for both scalar types: the double overloads forward to the C
// library's global functions (the ones vecmath.hpp gives SIMD variants on the CPU and
// CUDA provides as device functions), the Dual ones apply the chain rule. See config.hpp
// for the convention.
namespace detail {

FASTNTK_HD FASTNTK_ALWAYS_INLINE double sqrt(double x) { return ::sqrt(x); }
FASTNTK_HD FASTNTK_ALWAYS_INLINE double exp(double x) { return ::exp(x); }
FASTNTK_HD FASTNTK_ALWAYS_INLINE double acos(double x) { return ::acos(x); }
FASTNTK_HD FASTNTK_ALWAYS_INLINE double asin(double x) { return ::asin(x); }
FASTNTK_HD FASTNTK_ALWAYS_INLINE double atan2(double y, double x) { return ::atan2(y, x); }

template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> sqrt(const Dual<P>& x) {
  const double v = ::sqrt(x.v);
  return chain(v, v > 0.0 ? 0.5 / v : 0.0, x);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> exp(const Dual<P>& x) {
  const double v = ::exp(x.v);
  return chain(v, v, x);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> acos(const Dual<P>& x) {
  const double w = (1.0 - x.v) * (1.0 + x.v);
  return chain(::acos(x.v), w > 0.0 ? -1.0 / ::sqrt(w) : 0.0, x);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> asin(const Dual<P>& x) {
  const double w = (1.0 - x.v) * (1.0 + x.v);
  return chain(::asin(x.v), w > 0.0 ? 1.0 / ::sqrt(w) : 0.0, x);
}
template <int P>
FASTNTK_HD FASTNTK_ALWAYS_INLINE Dual<P> atan2(const Dual<P>& y, const Dual<P>& x) {
  Dual<P> r(::atan2(y.v, x.v));
  const double n = x.v * x.v + y.v * y.v;
  const double inv = n > 0.0 ? 1.0 / n : 0.0;
  for (int k = 0; k < P; ++k) r.d[k] = (x.v * y.d[k] - y.v * x.d[k]) * inv;
  return r;
}

}  // namespace detail

}  // namespace fastntk
