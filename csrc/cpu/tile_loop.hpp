// fastntk: the OpenMP loop over independent tiles shared by the empirical-kernel drivers.
//
// Threads take tiles from a shared counter (the tiles' costs differ, e.g. the diagonal
// tiles of a symmetric Gram). Nothing may throw out of an OpenMP region, so any exception
// of a thread is kept and rethrown after it; a stop request ends the loop early and is
// reported as fastntk::Interrupted.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>

#include "fastntk/errors.hpp"  // fastntk::Interrupted

namespace fastntk::cpu {

// Asks whether to stop: every thread sees the shared flag; the polling thread also calls
// the interrupt callback, at most every 50 ms. Cheap enough to call between the steps of a
// tile (a tile of a deep network can take seconds).
class StopCheck {
 public:
  StopCheck(const std::function<bool()>* callback, std::atomic<bool>& stop, std::exception_ptr& error)
      : callback_(callback), stop_(stop), error_(error), last_(std::chrono::steady_clock::now()) {}

  bool stopped() {
    if (callback_ && std::chrono::steady_clock::now() - last_ >= std::chrono::milliseconds(50)) {
      last_ = std::chrono::steady_clock::now();
      try {
        if ((*callback_)()) stop_ = true;
      } catch (...) {
        fail();
      }
    }
    return stop_.load(std::memory_order_relaxed);
  }

  // Records the current exception (the first one wins) and stops every thread.
  void fail() {
#pragma omp critical(fastntk_tile_loop_error)
    if (!error_) error_ = std::current_exception();
    stop_ = true;
  }

 private:
  const std::function<bool()>* callback_;  // null on all threads but the polling one
  std::atomic<bool>& stop_;
  std::exception_ptr& error_;
  std::chrono::steady_clock::time_point last_;
};

// The threads worth waking for `flops` of work: one per 10 MFLOP (about 0.1 ms of BLAS), at
// most `threads`. Waking a thread costs microseconds, but afterwards it spins for up to
// milliseconds (libgomp's default wait policy), taking a core from whatever runs next; for
// the small products of a Monte Carlo loop that costs more than the work itself.
inline int useful_threads(int threads, double flops) {
  constexpr double kFlopsPerThread = 1e7;
  return static_cast<int>(std::max(1.0, std::min<double>(std::max(threads, 1), flops / kFlopsPerThread)));
}

// Reports (tiles done, tiles in all) while the work runs; see for_each_tile.
using ProgressFn = std::function<void(std::int64_t, std::int64_t)>;

// Runs body(k, scratch, check) for k in [0, n_tiles) on up to `threads` threads, where
// scratch = make_scratch() is built once per thread. Never more threads than tiles: an
// idle OpenMP thread keeps spinning for milliseconds after the region (libgomp's default
// wait policy), which slows down whatever runs next -- here often NumPy's BLAS threads.
// `progress`, if set, is called by the calling thread when it polls `interrupted` (at most
// every 50 ms) with the number of tiles finished so far.
// Throws what a thread threw, else Interrupted if `interrupted` asked to stop.
template <class MakeScratch, class Body>
void for_each_tile(std::int64_t n_tiles, int threads, const std::function<bool()>& interrupted,
                   MakeScratch make_scratch, Body body, const ProgressFn& progress = {}) {
  if (n_tiles <= 0) return;
  std::atomic<std::int64_t> next{0}, done{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
  const std::function<bool()> poll = [&]() {
    if (progress) progress(done.load(std::memory_order_relaxed), n_tiles);
    return interrupted ? interrupted() : false;
  };
  const int team = static_cast<int>(std::min<std::int64_t>(std::max(threads, 1), n_tiles));
#pragma omp parallel num_threads(team)
  {
    const bool poller = omp_get_thread_num() == 0 && (static_cast<bool>(interrupted) || static_cast<bool>(progress));
    StopCheck check(poller ? &poll : nullptr, stop, error);
    decltype(make_scratch()) scratch{};
    try {
      scratch = make_scratch();
    } catch (...) {
      check.fail();
    }
    for (std::int64_t k = next++; k < n_tiles && !check.stopped(); k = next++) {
      try {
        body(k, scratch, check);
        done.fetch_add(1, std::memory_order_relaxed);
      } catch (...) {
        check.fail();
      }
    }
  }
  if (error) std::rethrow_exception(error);
  if (stop) throw Interrupted();
}

}  // namespace fastntk::cpu
