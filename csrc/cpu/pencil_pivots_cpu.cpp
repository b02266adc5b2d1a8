// fastntk: pivots of I + (t - 1) B for a symmetric band B (see pencil_pivots_cpu.hpp).
#include "pencil_pivots_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace fastntk::cpu {

namespace {

constexpr int kLanes = 8;  // grid values per block: one AVX-512 vector of doubles

// One block of up to kLanes grid values. The window holds the kd + 1 columns i - kd .. i of
// the partly eliminated M in upper band form, column c in slot c mod (kd + 1), entry k of a
// column being M[c - k, c]; every entry is kLanes values (and as many derivatives).
template <bool Deriv>
void eliminate_block(const double* band, std::int64_t n, int kd, const double* tm1_block, int lanes,
                     std::uint8_t* ok, double* logdet, double* r1, double* dlogdet, double* dr1, double* win,
                     double* dwin) {
  const int w = kd + 1;
  alignas(64) double t1[kLanes], good[kLanes], ld[kLanes], dld[kLanes], inv[kLanes], pivot[kLanes],
      dpivot[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    t1[l] = l < lanes ? tm1_block[l] : 0.0;  // padding lanes factor I
    good[l] = 1.0;
    ld[l] = dld[l] = 0.0;
  }
  auto column = [&](double* base, std::int64_t c) { return base + static_cast<std::size_t>(c % w) * w * kLanes; };
  // M[c - k, c] = delta_k0 + (t - 1) B[c, c - k], B[c, c - k] = band[(c - k) * w + k].
  auto load = [&](std::int64_t c) {
    double* col = column(win, c);
    double* dcol = Deriv ? column(dwin, c) : nullptr;
    for (int k = 0; k <= kd; ++k) {
      const double b = c - k >= 0 ? band[static_cast<std::size_t>(c - k) * w + k] : 0.0;
      const double one = k == 0 ? 1.0 : 0.0;
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) col[k * kLanes + l] = one + t1[l] * b;
      if constexpr (Deriv) {
        for (int l = 0; l < kLanes; ++l) dcol[k * kLanes + l] = b;
      }
    }
  };
  for (std::int64_t c = n - 1; c >= std::max<std::int64_t>(n - 1 - kd, 0); --c) load(c);
  for (std::int64_t i = n - 1; i >= 0; --i) {
    const double* col = column(win, i);
    const double* dcol = Deriv ? column(dwin, i) : nullptr;
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      pivot[l] = col[l];
      good[l] = pivot[l] > 0.0 ? good[l] : 0.0;
      ld[l] += std::log(std::fabs(pivot[l]));
      inv[l] = 1.0 / pivot[l];
    }
    if constexpr (Deriv) {
      for (int l = 0; l < kLanes; ++l) {
        dpivot[l] = dcol[l];
        dld[l] += dpivot[l] * inv[l];
      }
    }
    if (i == 0) break;
    const int amax = static_cast<int>(std::min<std::int64_t>(kd, i));
    for (int a = 1; a <= amax; ++a) {
      // Row i - a loses l_a times row i: M[i - b, i - a] -= l_a M[i - b, i] for b >= a,
      // l_a = M[i - a, i] / D_i (entry b - a of column i - a).
      alignas(64) double la[kLanes], dla[kLanes];
      double* tgt = column(win, i - a);
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) la[l] = col[a * kLanes + l] * inv[l];
      if constexpr (Deriv) {
        for (int l = 0; l < kLanes; ++l) dla[l] = (dcol[a * kLanes + l] - la[l] * dpivot[l]) * inv[l];
        double* dtgt = column(dwin, i - a);
        for (int b = a; b <= amax; ++b) {
#pragma omp simd
          for (int l = 0; l < kLanes; ++l)
            dtgt[(b - a) * kLanes + l] -= dla[l] * col[b * kLanes + l] + la[l] * dcol[b * kLanes + l];
        }
      }
      for (int b = a; b <= amax; ++b) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) tgt[(b - a) * kLanes + l] -= la[l] * col[b * kLanes + l];
      }
    }
    // Column i is done; column i - 1 - kd (the same slot) enters the window.
    if (i - 1 - kd >= 0) load(i - 1 - kd);
  }
  for (int l = 0; l < lanes; ++l) {
    ok[l] = good[l] > 0.0 ? 1 : 0;
    logdet[l] = ld[l];
    r1[l] = pivot[l];
    if constexpr (Deriv) {
      dlogdet[l] = dld[l];
      dr1[l] = dpivot[l];
    }
  }
}

}  // namespace

void pencil_pivots_cpu(const double* band, std::int64_t n, int kd, const double* tm1, std::int64_t m,
                       std::uint8_t* ok, double* logdet, double* r1, double* dlogdet, double* dr1, int threads) {
  if (n <= 0 || m <= 0 || kd < 1) return;
  const bool deriv = dlogdet != nullptr && dr1 != nullptr;
  const std::int64_t blocks = (m + kLanes - 1) / kLanes;
  if (threads <= 0) threads = omp_get_max_threads();
  // A block costs n kd^2 / 2 fused multiply-adds per value: one thread below ~1e6 of them.
  const double work = static_cast<double>(n) * kd * kd * static_cast<double>(m);
  threads = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>({threads, blocks,
                                                                                static_cast<std::int64_t>(work / 2e6) + 1})));
  const std::size_t win_size = static_cast<std::size_t>(kd + 1) * (kd + 1) * kLanes;
  // Allocated before the parallel region (no exception can leave it).
  std::vector<double> win(win_size * threads), dwin(deriv ? win_size * threads : 0);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const int me = omp_get_thread_num();
    const std::int64_t g0 = blk * kLanes;
    const int lanes = static_cast<int>(std::min<std::int64_t>(kLanes, m - g0));
    double* w = win.data() + win_size * me;
    if (deriv) {
      eliminate_block<true>(band, n, kd, tm1 + g0, lanes, ok + g0, logdet + g0, r1 + g0, dlogdet + g0, dr1 + g0, w,
                            dwin.data() + win_size * me);
    } else {
      eliminate_block<false>(band, n, kd, tm1 + g0, lanes, ok + g0, logdet + g0, r1 + g0, nullptr, nullptr, w,
                             nullptr);
    }
  }
}

}  // namespace fastntk::cpu
