// fastntk._core.pencil_pivots: registration only (checks, no math).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "../cpu/pencil_pivots_cpu.hpp"

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

void bind_pencil_pivots(py::module_& m) {
  m.def(
      "pencil_pivots",
      [](const Array& d, const Array& e, const Array& tm1, bool derivatives) -> py::tuple {
        const py::ssize_t n = d.size(), g = tm1.size();
        if (d.ndim() != 1 || e.ndim() != 1 || tm1.ndim() != 1)
          throw std::invalid_argument("pencil_pivots: d, e and tm1 must be 1-D");
        if (n < 1 || e.size() != n - 1)
          throw std::invalid_argument("pencil_pivots: d must be non-empty and e one shorter than d");
        py::array_t<std::uint8_t> ok(g);
        Array logdet(g), r1(g), dlogdet(derivatives ? g : 0), dr1(derivatives ? g : 0);
        {
          py::gil_scoped_release release;
          fastntk::cpu::pencil_pivots_cpu(d.data(), e.data(), n, tm1.data(), g, ok.mutable_data(),
                                          logdet.mutable_data(), r1.mutable_data(),
                                          derivatives ? dlogdet.mutable_data() : nullptr,
                                          derivatives ? dr1.mutable_data() : nullptr);
        }
        if (derivatives) return py::make_tuple(ok, logdet, r1, dlogdet, dr1);
        return py::make_tuple(ok, logdet, r1);
      },
      py::arg("d"), py::arg("e"), py::arg("tm1"), py::arg("derivatives") = false,
      "For M(t) = I + (t-1) T, T tridiagonal (diagonal d, off-diagonal e), at each tm1 = t - 1: "
      "(ok, log|M|, r_1[, d log|M|/dt, d r_1/dt]) from the pivots of the elimination from the last row up "
      "(ok: every pivot > 0, M positive definite; (M^-1)_11 = 1 / r_1).");
}
