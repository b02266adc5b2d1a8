// fastntk._core.pencil_pivots: registration only (checks, no math).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../cpu/pencil_pivots_cpu.hpp"
#include "common.hpp"

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

void bind_pencil_pivots(py::module_& m) {
  m.def(
      "pencil_pivots",
      [](const Array& band, const Array& tm1, bool derivatives, int n_threads) -> py::tuple {
        if (band.ndim() != 2 || band.shape(0) < 1 || band.shape(1) < 2)
          throw std::invalid_argument("pencil_pivots: band must be 2-D (n, kd + 1) with n >= 1 and kd >= 1, got " +
                                      fastntk::bindings::shape_of(band));
        if (tm1.ndim() != 1) throw std::invalid_argument("pencil_pivots: tm1 must be 1-D");
        if (n_threads < 0) throw std::invalid_argument("n_threads must be >= 0, got " + std::to_string(n_threads));
        const py::ssize_t n = band.shape(0), g = tm1.size();
        const int kd = static_cast<int>(band.shape(1) - 1);
        const int threads = fastntk::bindings::threads_for(n_threads);
        py::array_t<std::uint8_t> ok(g);
        Array logdet(g), r1(g), dlogdet(derivatives ? g : 0), dr1(derivatives ? g : 0);
        fastntk::cpu::note_parallel_use();
        {
          py::gil_scoped_release release;
          fastntk::cpu::pencil_pivots_cpu(band.data(), n, kd, tm1.data(), g, ok.mutable_data(),
                                          logdet.mutable_data(), r1.mutable_data(),
                                          derivatives ? dlogdet.mutable_data() : nullptr,
                                          derivatives ? dr1.mutable_data() : nullptr, threads);
        }
        if (derivatives) return py::make_tuple(ok, logdet, r1, dlogdet, dr1);
        return py::make_tuple(ok, logdet, r1);
      },
      py::arg("band"), py::arg("tm1"), py::arg("derivatives") = false, py::arg("n_threads") = 0,
      "For M(t) = I + (t-1) B, B symmetric band with kd sub-diagonals given as band[j, k] = B[j + k, j] "
      "((n, kd + 1), LAPACK's lower band array read in C order; kd = 1: rows (d_j, e_j)), at each tm1 = t - 1: "
      "(ok, log|M|, r_1[, d log|M|/dt, d r_1/dt]) from the pivots of the symmetric elimination from the last row "
      "up (ok: every pivot > 0, M positive definite; (M^-1)_11 = 1 / r_1).");
}
