// fastntk: OpenMP matrix product over tiles of the output, one single-threaded BLAS call each.
#include "matmul_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "blas.hpp"
#include "tile_loop.hpp"
#include "tiles.hpp"

namespace fastntk::cpu {

void matmul_cpu(const double* a, const double* b, double* c, std::int64_t m, std::int64_t n, std::int64_t k,
                bool trans_b, double alpha, const MatmulOptions& opt) {
  using Index = std::int64_t;
  if (m < 0 || n < 0 || k < 0) throw std::invalid_argument("matmul_cpu: negative size");
  const Index int_max = std::numeric_limits<int>::max();
  if (n > int_max || k > int_max)
    throw std::invalid_argument("matmul_cpu: n = " + std::to_string(n) + " or k = " + std::to_string(k) +
                                " exceeds the 32-bit BLAS limit");
  if (m == 0 || n == 0) return;
  if (!c || (k > 0 && (!a || !b))) throw std::invalid_argument("matmul_cpu: null buffer");
  if (k == 0) {  // an empty sum (BLAS would refuse the leading dimension 0)
    std::fill(c, c + m * n, 0.0);
    return;
  }

  // Tiles of up to 256 rows x 1024 columns keep each BLAS call near its peak; smaller ones
  // only to give every thread several tiles.
  const int threads = useful_threads(opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads(),
                                     2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k));
  const std::vector<Tile> tiles = tile_grid(m, n, false, tile_shape(m, n, false, threads, TileShape{256, 1024}, 32));

  blas::use_single_thread();
  for_each_tile(
      static_cast<Index>(tiles.size()), threads, opt.interrupted, [] { return 0; },
      [&](Index t, int, StopCheck&) {
        const Index i0 = tiles[t].i0, j0 = tiles[t].j0;
        const int tm = tiles[t].rows, tn = tiles[t].cols;
        const double* at = a + i0 * k;
        double* ct = c + i0 * n + j0;
        if (trans_b)
          blas::gemm_abt(tm, tn, static_cast<int>(k), alpha, at, static_cast<int>(k), b + j0 * k, static_cast<int>(k),
                         ct, static_cast<int>(n));
        else
          blas::gemm_ab(tm, tn, static_cast<int>(k), alpha, at, static_cast<int>(k), b + j0, static_cast<int>(n), ct,
                        static_cast<int>(n));
      });
}

}  // namespace fastntk::cpu
