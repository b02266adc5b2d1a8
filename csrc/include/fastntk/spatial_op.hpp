// fastntk: the ops of a spatial (CNN) program as plain data, for host and device code.
//
// A spatial program runs on the state of a pair of images (x, y): registers r = 0..R-1,
// each holding Sigma and Theta over the register's spatial shape (0 to 3 axes; no axes = a
// scalar), in one of two regimes fixed per program (see /work/notes/cnn_spec.md):
//   full:     a register holds the S x S covariance, entry [i, j] at i * S + j, i and j
//             positions in row-major order over the shape;
//   diagonal: a register holds the spatial diagonal, entry i = positions (i, i).
// A scalar register has one entry in both regimes.
//
// Like op.hpp: every struct is trivially copyable and holds no pointers (offsets into the
// program's pools instead), so a driver copies the ops to wherever it runs as bytes. The
// host builder (spatial_program.hpp) fills and validates them; the walk
// (spatial_walk_impl.hpp) runs them. No STL containers, strings or exceptions here.
#pragma once

#include <cstdint>

#include "fastntk/config.hpp"
#include "fastntk/op.hpp"

namespace fastntk {

constexpr int kMaxSpatialDims = 3;
// Registers of one program: enough for any residual network (a register per open branch).
constexpr int kMaxSpatialRegisters = 32;
// Buffers a walk needs per kernel (Sigma, Theta): one per register plus two spares, which
// every linear op writes into (its passes ping-pong between them) before the destination
// register takes the result and gives its old buffer back as a spare.
FASTNTK_HD constexpr int spatial_buffers(int n_registers) { return n_registers + 2; }

// A spatial shape: n_dims axes (0 = a scalar) of sizes dims[0..n_dims).
struct SpatialShape {
  std::int32_t n_dims;
  std::int32_t dims[kMaxSpatialDims];

  FASTNTK_HD std::int64_t positions() const {
    std::int64_t s = 1;
    for (int k = 0; k < n_dims; ++k) s *= dims[k];
    return s;
  }
  // The entries of a register of this shape: S * S (full) or S (diagonal).
  FASTNTK_HD std::int64_t entries(bool full) const {
    const std::int64_t s = positions();
    return full ? s * s : s;
  }
};

enum class SpatialOpKind : std::int32_t { Linear = 0, Activation = 1, LayerNorm = 2, Copy = 3, Axpy = 4 };

// The linear maps L of add_linear (cnn_spec.md): Identity (elementwise), Conv (window
// offsets shared by both positions), Pool (independent offsets; full regime only),
// Flatten (trace, or sum of the diagonal, to a scalar), Global (sum of all entries to a
// scalar; full regime only).
enum class SpatialMap : std::int32_t { Identity = 0, Conv = 1, Pool = 2, Flatten = 3, Global = 4 };

// dst.Sigma = sigma_mul * B(Sigma) + beta,
// dst.Theta = theta_from_sigma * B(Sigma) + theta_mul * B(Theta) + eps,
// where B is the plain box sum of the map (windows summed with weight 1, or with the
// per-axis 1 / count weights of a Pool with normalize_edges), and the builder folded the
// map's scale into the multipliers: sigma_mul = alpha * f, theta_from_sigma = gamma * f,
// theta_mul = delta * f, with f = scale (scale^2 for a Pool without normalize_edges, one
// factor per position; 1 for a Pool with normalize_edges).
struct SpatialLinearOp {
  SpatialMap map;
  std::int32_t src, dst;
  // Conv, Pool: out-of-range positions wrap modulo the axis size (else they read 0); the
  // builder ensures that one wrap suffices (window <= axis size).
  std::int32_t circular;
  std::int32_t normalize_edges;  // Pool: weights 1 / (in-range window positions), per axis
  SpatialShape in, out;
  std::int32_t window[kMaxSpatialDims];
  std::int32_t strides[kMaxSpatialDims];
  std::int32_t pad_lo[kMaxSpatialDims];
  // Per axis k of a Pool with normalize_edges: offset in the coefficient pool of the
  // out.dims[k] weights 1 / (in-range window positions of i'); else -1.
  std::int32_t weights[kMaxSpatialDims];
  double sigma_mul, beta, theta_from_sigma, theta_mul, eps;
};

// An activation applied per entry; entry [i, j] (entry i) uses the per-position Stats of
// x at i and of y at j (at i), which the point pass records at `stats`.
struct SpatialActivationOp {
  std::int32_t reg;
  std::int32_t index;  // 0-based among the program's activations
  std::int64_t stats;  // offset in a point's record of this op's Stats, [4, S]: q, a, b, c
  SpatialShape shape;
  Op op;  // the FC activation op; a PowerOp's coef offset points into this program's pool
};

// Sigma[i, j] *= r_x[i] r_y[j] (entry i: r_x[i] r_y[i]), Theta likewise, with
// r = 1 / sqrt(v + eps), v = the point's own Sigma diagonal at this op (per position), or
// its mean over positions when `spatial`. The point pass records r per position at `stats`.
struct SpatialLayerNormOp {
  std::int32_t reg;
  std::int32_t spatial;
  std::int64_t stats;  // offset in a point's record of this op's [S] values r
  SpatialShape shape;
  double eps;
};

// Copy: dst = src (Sigma, Theta, shape). Axpy: dst += weight * src (Sigma and Theta).
struct SpatialMoveOp {
  std::int32_t src, dst;
  SpatialShape shape;
  double weight;
};

struct SpatialOp {
  SpatialOpKind kind;
  std::int32_t layer;  // the layer this op came from, for messages
  union {              // the member named after `kind` (Copy and Axpy: move)
    SpatialLinearOp linear;
    SpatialActivationOp activation;
    SpatialLayerNormOp layernorm;
    SpatialMoveOp move;
  };
};

// What a walk reads.
struct SpatialProgramView {
  const SpatialOp* ops;  // [n_ops]
  int n_ops;
  int n_registers;
  int n_activations;
  int full;                   // 1: full regime, 0: diagonal
  SpatialShape in_shape;      // register 0 at the start
  SpatialShape out_shape;     // register 0 at the end
  std::int64_t max_entries;   // the largest state a buffer holds (registers and intermediate passes)
  std::int64_t point_stride;  // doubles in one point's record (Stats of activations, layernorm factors)
  const double* coef;         // coefficient pool (polynomial activations, pool weights), or null
};

}  // namespace fastntk
