// fastntk: native work in a child of fork().
//
// libgomp's thread pool does not survive fork(): the child inherits the parent's record of
// its idle pool threads but not the threads, and the first parallel region of more than one
// thread then waits for them forever. That is what multiprocessing's default 'fork' start
// method on Linux does to a child of a process that has used fastntk. A team of one thread
// never touches the pool (checked: a forked child runs num_threads(1) regions fine), so a
// child of such a process runs single-threaded: a pthread_atfork handler records the fork
// and the bindings ask for one thread (fastntk::bindings::threads_for, which also warns).
// OpenBLAS needs nothing: it has its own fork handler, and fastntk calls it single-threaded.
#pragma once

#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <mutex>

namespace fastntk::cpu {

namespace fork_detail {
inline std::atomic<bool> used{false};    // this process has started native parallel work
inline std::atomic<bool> forked{false};  // ... and this is a child forked afterwards
inline std::once_flag installed;

inline void on_fork_child() {
  if (used.load(std::memory_order_relaxed)) {
    forked.store(true, std::memory_order_relaxed);
    omp_set_num_threads(1);  // the default team too (get_num_threads() reports 1 here)
  }
}
}  // namespace fork_detail

// Called before every native job: installs the fork handler once and records the use.
inline void note_parallel_use() {
  std::call_once(fork_detail::installed, [] { pthread_atfork(nullptr, nullptr, fork_detail::on_fork_child); });
  fork_detail::used.store(true, std::memory_order_relaxed);
}

// True in a child forked after this process (or an ancestor) ran native parallel work.
inline bool forked_after_parallel_use() { return fork_detail::forked.load(std::memory_order_relaxed); }

}  // namespace fastntk::cpu
