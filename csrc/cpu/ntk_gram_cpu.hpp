// fastntk: the CPU driver of the analytic NNGP / NTK Gram matrices (C++ API).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "fastntk/errors.hpp"  // fastntk::Interrupted, thrown on a stop request
#include "fastntk/program.hpp"
#include "tiles.hpp"

namespace fastntk {
namespace cpu {

struct GramOptions {
  int n_threads = 0;  // 0: OpenMP's default (OMP_NUM_THREADS or the core count)
  int tile = 0;       // rows and columns of a tile; 0: chosen from the sizes and threads
  // Polled by the calling thread between tiles, at most every 50 ms; returning true
  // stops the work (the outputs are then incomplete) and throws Interrupted.
  std::function<bool()> interrupted;
  // If set, called by the calling thread at the same polls with (tiles done, tiles in all).
  std::function<void(std::int64_t, std::int64_t)> progress;
};

// What to compute beyond the final kernels (see ntk_gram_cpu's second form).
struct GramRequest {
  // Ops after which the kernels are written, in increasing order; empty: after the last op.
  std::vector<int> capture_after;
  // Derivatives along P = n_directions (0 to kMaxDirections) directions in the Dense
  // parameters: seeds[(k * P + p) * 3 + m] is the derivative of parameter m of op k
  // (m = 0: W^2, 1: b^2, 2: t0, see walk_impl.hpp) along direction p; entries of non-Dense
  // ops are ignored. Size n_ops * P * 3.
  int n_directions = 0;
  std::vector<double> seeds;
};
constexpr int kMaxDirections = 3;

// The NNGP and/or NTK of `prog` between the rows of x1 and x2.
//   x1:   [n1, d] row-major
//   x2:   [n2, d] row-major, or nullptr for x2 = x1 (symmetric: upper tiles computed, then mirrored;
//         the diagonal is taken from the exact diagonal maps)
//   nngp: [n1, n2] row-major output, or nullptr if not wanted
//   ntk:  [n1, n2] row-major output, or nullptr if not wanted
// Throws std::invalid_argument on bad sizes or where a layer's kernel diverges for the data.
// Returns true when every entry written is known to be finite (checked while the tiles are
// in cache; done for the plain kernels in float64), false when some entry may not be (found,
// or not checked): the caller scans the outputs then.
bool ntk_gram_cpu(const Program& prog, const double* x1, std::int64_t n1, const double* x2, std::int64_t n2,
                  std::int64_t d, double* nngp, double* ntk, const GramOptions& opt = {});

// The general form: nngp and ntk (each optional) are [C, 1 + P, n1, n2] row-major, with
// C = the number of captures and P = the number of directions of `req`: for capture c,
// plane 0 holds the kernel after op req.capture_after[c] and plane 1 + p its derivative
// along direction p.
bool ntk_gram_cpu(const Program& prog, const double* x1, std::int64_t n1, const double* x2, std::int64_t n2,
                  std::int64_t d, double* nngp, double* ntk, const GramOptions& opt, const GramRequest& req);

// The diagonal Sigma(x, x) and Theta(x, x) of each row of x ([n, d]) alone, from the exact
// diagonal maps: O(n (d + layers)). nngp, ntk: [n] outputs, each optional.
void ntk_diag_cpu(const Program& prog, const double* x, std::int64_t n, std::int64_t d, double* nngp, double* ntk,
                  const GramOptions& opt = {});

// The tile shape (rows x columns) the driver would choose; GramOptions::tile > 0 sets square
// tiles of that side instead.
TileShape default_tile(std::int64_t n1, std::int64_t n2, bool symmetric, int n_threads);
}  // namespace cpu
}  // namespace fastntk
