// fastntk: the CPU driver of the spatial (CNN) NNGP / NTK Gram matrices (C++ API).
#pragma once

#include <cstdint>
#include <functional>

#include "fastntk/errors.hpp"  // fastntk::Interrupted, thrown on a stop request
#include "fastntk/spatial_program.hpp"

namespace fastntk {
namespace cpu {

struct SpatialGramOptions {
  int n_threads = 0;  // 0: OpenMP's default
  // Polled by the calling thread between pairs, at most every 50 ms; returning true stops
  // the work (the outputs are then incomplete) and throws Interrupted.
  std::function<bool()> interrupted;
  // If set, called at the same polls with (work units done, work units in all): the point
  // passes' chunks, then the pairs' tiles.
  std::function<void(std::int64_t, std::int64_t)> progress;
};

// The kernels of `prog` between the images of x1 and x2.
//   x1:   [n1, S_in * C] row-major, each row an image of S_in positions (row-major over
//         prog.in_shape()) by C = prog.channels() channels (NHWC flattened)
//   x2:   [n2, S_in * C], or nullptr for x2 = x1 (symmetric: pairs i < j computed and
//         mirrored; the diagonal pairs are the point pass's own walks, exact)
//   nngp: [n1, n2, out_size] output (out_size = prog.out_size()), or nullptr
//   ntk:  [n1, n2, out_size] output, or nullptr (Theta is then not computed)
// For a full-regime output (out_size = S_out^2) the mirrored entry [j, i] is the transpose
// of [i, j]. Walks in float64 whatever the output type. Throws std::invalid_argument on bad
// sizes or where an activation's kernel diverges for the data (Gaussian with 4 b q >= 1).
// Returns true when every entry written is finite.
bool spatial_gram_cpu(const SpatialProgram& prog, const double* x1, std::int64_t n1, const double* x2,
                      std::int64_t n2, double* nngp, double* ntk, const SpatialGramOptions& opt = {});
bool spatial_gram_cpu(const SpatialProgram& prog, const double* x1, std::int64_t n1, const double* x2,
                      std::int64_t n2, float* nngp, float* ntk, const SpatialGramOptions& opt = {});

}  // namespace cpu
}  // namespace fastntk
