// fastntk: how the CPU drivers cut an output into tiles, and how a symmetric output's
// lower triangle is filled from its upper one. One tile-shape rule and one mirror for
// every driver (analytic Gram, empirical Gram, matrix product).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fastntk::cpu {

// Rows [i0, i0 + rows) x columns [j0, j0 + cols) of an output. A diagonal tile of a
// symmetric output starts on the diagonal (j0 == i0, cols >= rows): only its pairs with
// column >= row are computed; the others belong to the lower triangle.
struct Tile {
  std::int64_t i0, j0;
  int rows, cols;
  bool diagonal;
};

struct TileShape {
  int rows, cols;
};

// Tiles a thread should have to take, at least, for the dynamic schedule to balance them
// (their costs differ: diagonal tiles, remainders at the edges).
constexpr int kTilesPerThread = 4;

// The number of tiles of an n1 x n2 output (the upper triangle's when symmetric).
inline std::int64_t tile_count(std::int64_t n1, std::int64_t n2, bool symmetric, TileShape shape) {
  const std::int64_t r = (n1 + shape.rows - 1) / shape.rows;
  if (!symmetric) return r * ((n2 + shape.cols - 1) / shape.cols);
  std::int64_t count = 0;  // per block row: the columns from its diagonal on
  for (std::int64_t i0 = 0; i0 < n1; i0 += shape.rows) count += (n2 - i0 + shape.cols - 1) / shape.cols;
  return count;
}

// The tile shape: `preferred` (what keeps one tile's BLAS call near its peak and its
// working set in cache, chosen by the driver), shrunk only to give every thread
// kTilesPerThread tiles: the longer side is halved first (columns, while wider than
// tall), then both sides, never below min_rows rows. Halving both keeps cols a multiple
// of rows, which a symmetric grid needs (see tile_grid).
inline TileShape tile_shape(std::int64_t n1, std::int64_t n2, bool symmetric, int threads, TileShape preferred,
                            int min_rows) {
  TileShape s = preferred;
  const std::int64_t want = static_cast<std::int64_t>(kTilesPerThread) * std::max(threads, 1);
  while (tile_count(n1, n2, symmetric, s) < want) {
    if (s.cols > s.rows) {
      s.cols /= 2;
    } else if (s.rows > std::max(min_rows, 1)) {
      s.rows /= 2;
      s.cols = std::max(s.cols / 2, 1);
    } else {
      break;
    }
  }
  return s;
}

// The tiles of an n1 x n2 output, row band by row band; for a symmetric output only those
// on or above the diagonal, each band starting with its diagonal tile. cols must be a
// multiple of rows when symmetric (so that no tile straddles the diagonal but the first).
inline std::vector<Tile> tile_grid(std::int64_t n1, std::int64_t n2, bool symmetric, TileShape shape) {
  std::vector<Tile> tiles;
  tiles.reserve(static_cast<std::size_t>(tile_count(n1, n2, symmetric, shape)));
  for (std::int64_t i0 = 0; i0 < n1; i0 += shape.rows)
    for (std::int64_t j0 = symmetric ? i0 : 0; j0 < n2; j0 += shape.cols)
      tiles.push_back(Tile{i0, j0, static_cast<int>(std::min<std::int64_t>(shape.rows, n1 - i0)),
                           static_cast<int>(std::min<std::int64_t>(shape.cols, n2 - j0)), symmetric && j0 == i0});
  return tiles;
}

namespace detail {

// dst[c * ldd + r] = src[r * lds + c] for an 8 x 8 block, in registers: three rounds of
// two-vector shuffles (pairs of rows, pairs of pairs, halves) instead of 64 strided
// scalar moves. GCC's vector extensions lower this to the running target's shuffles
// (AVX-512, AVX2 or SSE2), so the portable build's clones need no intrinsics.
__attribute__((always_inline)) inline void transpose8x8(const double* src, std::int64_t lds, double* dst,
                                                        std::int64_t ldd) {
#if defined(__GNUC__) && !defined(__clang__)
  typedef double V __attribute__((vector_size(64)));
  typedef long long M __attribute__((vector_size(64)));
  V a[8], t[8], u[8];
  for (int r = 0; r < 8; ++r) std::memcpy(&a[r], src + r * lds, sizeof(V));
  const M even{0, 8, 2, 10, 4, 12, 6, 14}, odd{1, 9, 3, 11, 5, 13, 7, 15};
  for (int k = 0; k < 8; k += 2) {
    t[k] = __builtin_shuffle(a[k], a[k + 1], even);     // rows k, k+1 at columns 0, 2, 4, 6
    t[k + 1] = __builtin_shuffle(a[k], a[k + 1], odd);  // ... at columns 1, 3, 5, 7
  }
  const M lo2{0, 1, 8, 9, 4, 5, 12, 13}, hi2{2, 3, 10, 11, 6, 7, 14, 15};
  for (int k = 0; k < 8; k += 4) {
    u[k] = __builtin_shuffle(t[k], t[k + 2], lo2);          // rows k..k+3 at columns 0, 4
    u[k + 2] = __builtin_shuffle(t[k], t[k + 2], hi2);      // columns 2, 6
    u[k + 1] = __builtin_shuffle(t[k + 1], t[k + 3], lo2);  // columns 1, 5
    u[k + 3] = __builtin_shuffle(t[k + 1], t[k + 3], hi2);  // columns 3, 7
  }
  const M lo4{0, 1, 2, 3, 8, 9, 10, 11}, hi4{4, 5, 6, 7, 12, 13, 14, 15};
  for (int c = 0; c < 4; ++c) {
    const V col = __builtin_shuffle(u[c], u[c + 4], lo4), col4 = __builtin_shuffle(u[c], u[c + 4], hi4);
    std::memcpy(dst + c * ldd, &col, sizeof(V));
    std::memcpy(dst + (c + 4) * ldd, &col4, sizeof(V));
  }
#else
  for (int c = 0; c < 8; ++c)
    for (int r = 0; r < 8; ++r) dst[c * ldd + r] = src[r * lds + c];
#endif
}

}  // namespace detail

// Fills the lower triangle from a tile of the upper one: out[j, i] = out[i, j]^T for the
// tile's computed pairs (i, j) with j > i, where each pair holds an m x m block (m = 1:
// one number; the block is transposed too, so out[j, i, o', o] = out[i, j, o, o']).
//   out: [.., ld, m, m] row-major (ld pairs per row)
// Works in 8 x 8 blocks of pairs (m = 1): the source rows of a block stay in L1 while its
// destination rows are written contiguously; a plain column scatter would cost a cache
// miss per entry.
// `stopped()` is asked before every 64 destination rows (8 block columns): the first write
// to a fresh output's rows faults their pages in, and the mirror of one 8-row band of a
// large Gram touches a page per destination row (a 2 MiB huge page for NumPy's large
// arrays): 2048 rows took up to a second on a VM, where fresh memory faults in at 0.4 GB/s.
// A stop request ends the mirror there (returns false: the caller abandons the output, as
// after a stop inside a tile). The polling thread reads the clock at each ask (29 ns
// here): every 8 rows would be ~16k reads in a 256 x 2048 tile, an estimated ~8 % of a
// 6 ms tile; every 64, ~1 % (measured kernel times: within noise).
template <class Stopped>
inline bool mirror_tile(double* out, std::int64_t ld, const Tile& tile, int m, Stopped&& stopped) {
  using Index = std::int64_t;
  const Index bs = static_cast<Index>(m) * m;
  auto pair_at = [&](Index i, Index j) { return out + (i * ld + j) * bs; };
  // Pairs (r, c) of the tile to mirror: c > r - (j0 - i0) on a diagonal tile (j0 == i0:
  // c > r), all of them elsewhere.
  auto copy_pair = [&](int r, int c) {
    const double* src = pair_at(tile.i0 + r, tile.j0 + c);
    double* dst = pair_at(tile.j0 + c, tile.i0 + r);
    if (m == 1) {
      *dst = *src;
      return;
    }
    for (int o = 0; o < m; ++o)
      for (int o2 = 0; o2 < m; ++o2) dst[o2 * m + o] = src[o * m + o2];
  };
  constexpr int kB = 8;
  for (int cb = 0; cb < tile.cols; cb += kB) {
    if (cb % (8 * kB) == 0 && stopped()) return false;
    const int ce = std::min(cb + kB, tile.cols);
    for (int rb = 0; rb < tile.rows; rb += kB) {
      const int re = std::min(rb + kB, tile.rows);
      if (tile.diagonal && rb >= ce) break;  // below the diagonal from here on
      const bool full = m == 1 && re - rb == kB && ce - cb == kB && !(tile.diagonal && cb < re);
      if (full) {
        detail::transpose8x8(pair_at(tile.i0 + rb, tile.j0 + cb), ld, pair_at(tile.j0 + cb, tile.i0 + rb), ld);
        continue;
      }
      for (int c = cb; c < ce; ++c)
        for (int r = rb; r < re && !(tile.diagonal && r >= c); ++r) copy_pair(r, c);
    }
  }
  return true;
}

}  // namespace fastntk::cpu
