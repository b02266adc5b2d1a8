// fastntk: the ops of a layer program as plain data, for host and device code.
//
// An Op is trivially copyable and holds no pointers: a driver copies the array of ops
// to wherever it runs (a CPU thread's stack, CUDA constant or global memory) as bytes.
// Every parameter has a name; the host builder (program.hpp) fills them, pre-squared
// where the recursion only needs squares. No STL containers, strings or exceptions here.
#pragma once

#include <cstdint>

#include "fastntk/config.hpp"

namespace fastntk {

// The X-list of activation kinds: X(Kind, DualMapType). Every switch over
// activations is generated from it, so adding an activation touches one line here
// (and its parameters below, its map in activations.hpp, its builder in program.hpp).
#define FASTNTK_FOR_EACH_ACTIVATION(X) \
  X(ABRelu, ABReluMap)                 \
  X(Erf, ErfMap)                       \
  X(Sign, SignMap)                     \
  X(Gelu, GeluMap)                     \
  X(Sin, SinMap)                       \
  X(Rbf, RbfMap)                       \
  X(Exp, ExpMap)                       \
  X(Gaussian, GaussianMap)             \
  X(Monomial, MonomialMap)             \
  X(RectifiedMonomial, RectifiedMonomialMap)

enum class OpKind : std::int32_t {
  Dense = 0,
#define FASTNTK_ENUM_ENTRY(kind, map) kind,
  FASTNTK_FOR_EACH_ACTIVATION(FASTNTK_ENUM_ENTRY)
#undef FASTNTK_ENUM_ENTRY
};

enum class Parameterization : std::int32_t { Ntk = 0, Standard = 1 };

// The largest polynomial degree accepted: the coefficient tables of degree n hold
// numbers up to about (2n-1)!! * 2^n, beyond 2^53 for n > 20, where they stop
// being exact in double precision.
constexpr int kMaxDegree = 20;

// Dense: s <- w_var s + b_var; the NTK update depends on the parameterization
// (walk_impl.hpp, dense_apply).
struct DenseOp {
  double w_var;  // W_std^2
  double b_var;  // b_std^2, 0 without a bias
  Parameterization parameterization;
  double n_in;  // the finite width feeding the layer (enters the standard NTK only)
  double t0;    // the NTK of zero-initialized trainable biases: 1 for a standard-parameterization
                // bias, plus ntk_bias^2 (scikit-ntk's convention), else 0
};

// a min(x, 0) + b max(x, 0).
struct ABReluOp {
  double mean_slope_sq;        // (a^2 + b^2) / 2
  double kink_sq_over_two_pi;  // (a - b)^2 / (2 pi)
};

// a erf(b x) + c.
struct ErfOp {
  double a2, b2, c2;  // a^2, b^2, c^2
};

// a sin(b x + c); Cos(a, b, c) is Sin(a, b, c + pi/2).
struct SinOp {
  double half_a2;  // a^2 / 2
  double b2;       // b^2
  double cos2c;    // cos(2 c)
};

// sqrt(2) sin(sqrt(2 gamma) x + pi/4).
struct RbfOp {
  double gamma;
};

// a exp(b x).
struct ExpOp {
  double a2, b2;  // a^2, b^2
};

// a exp(b x^2).
struct GaussianOp {
  double a2;       // a^2
  double b;        // b (its sign matters)
  double four_b2;  // 4 b^2
};

// x^n (Monomial) and (x >= 0) x^n (RectifiedMonomial), phi_n for short.
struct PowerOp {
  std::int32_t degree;  // n
  std::int32_t coef;    // offset of this op's coefficient tables in ProgramView::coef
  double degree_sq;     // n^2
  double moment;        // E[phi_n(u)^2] / q^n for u ~ N(0, q)
  double moment_prev;   // E[phi_{n-1}(u)^2] / q^(n-1)
};

struct Op {
  OpKind kind;
  std::int32_t layer;  // the index of the layer this op came from, for messages
  union {              // the member named after `kind` (Sign and Gelu have no parameters)
    DenseOp dense;
    ABReluOp abrelu;
    ErfOp erf;
    SinOp sin;
    RbfOp rbf;
    ExpOp exp;
    GaussianOp gaussian;
    PowerOp power;  // Monomial, RectifiedMonomial
  };
};

// What a walk reads: the ops and the coefficient pool of the polynomial activations.
struct ProgramView {
  const Op* ops;  // [n_ops]
  int n_ops;
  int n_activations;
  const double* coef;  // the pool PowerOp::coef points into, or null
};

}  // namespace fastntk
