// fastntk bindings: what every op's binding needs. Shape strings for error messages, and
// running native work without the GIL so that other Python threads run and Ctrl-C stops it.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "../cpu/fork_guard.hpp"
#include "fastntk/errors.hpp"  // fastntk::Interrupted

namespace fastntk::bindings {

namespace py = pybind11;

// "(3, 4)", "(5,)": an array's shape as Python prints it.
inline std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t k = 0; k < a.ndim(); ++k) s += (k ? ", " : "") + std::to_string(a.shape(k));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// The threads to run with: `n_threads` (0 = OpenMP's default), except in a child forked
// after this process used its OpenMP team, which runs on one thread (fork_guard.hpp) and
// says so once with a RuntimeWarning. Called with the GIL held.
inline int threads_for(int n_threads) {
  if (!fastntk::cpu::forked_after_parallel_use()) return n_threads;
  static bool warned = false;  // guarded by the GIL
  if (!warned) {
    warned = true;
    if (PyErr_WarnEx(PyExc_RuntimeWarning,
                     "fastntk runs single-threaded in this process: it was forked (e.g. by multiprocessing's "
                     "default 'fork' start method) after fastntk had used its OpenMP threads, which do not "
                     "survive fork(). Use the 'spawn' or 'forkserver' start method for parallel workers",
                     1) < 0)
      throw py::error_already_set();
  }
  return 1;
}

// The drivers' progress callback for a Python callable `progress` (None: an empty one, no
// calls). The driver calls it on the calling thread with the GIL released: it takes the GIL
// for the call. An exception of the callable is reported (sys.unraisablehook, naming
// `where`), not propagated: a progress display must not stop the work. It refers to
// `progress` (no copy, whose reference count would change without the GIL), which must
// outlive the work.
inline std::function<void(std::int64_t, std::int64_t)> progress_callback(const py::object& progress,
                                                                         const char* where) {
  if (progress.is_none()) return {};
  return [&progress, where](std::int64_t done, std::int64_t total) {
    py::gil_scoped_acquire gil;
    try {
      progress(done, total);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable(where);
    }
  };
}

// Runs work(interrupted) with the GIL released. `interrupted` is the callback the native
// drivers poll between tiles (on the calling thread): it takes the GIL back briefly and
// asks Python whether a signal is pending. If the driver stops on it (fastntk::Interrupted),
// the pending Python exception (KeyboardInterrupt for Ctrl-C) is raised here, with the GIL
// held again. Other exceptions propagate unchanged (pybind11 translates them).
template <class Work>
void run_interruptible(Work&& work) {
  const std::function<bool()> interrupted = []() {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  };
  fastntk::cpu::note_parallel_use();
  bool stopped = false;
  {
    py::gil_scoped_release release;
    try {
      std::forward<Work>(work)(interrupted);
    } catch (const fastntk::Interrupted&) {
      stopped = true;
    }
  }
  if (stopped) {
    if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
}

}  // namespace fastntk::bindings
