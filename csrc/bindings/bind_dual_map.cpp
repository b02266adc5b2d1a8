// fastntk._core.dual_map / dual_map_diag: registration only (checks, no math).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "../cpu/dual_map_cpu.hpp"

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

void bind_dual_map(py::module_& m) {
  m.def(
      "dual_map",
      [](const fastntk::Program& prog, int index, const Array& qx, const Array& qy, const Array& s) {
        const py::ssize_t n = s.size();
        if (qx.size() != n || qy.size() != n)
          throw std::invalid_argument("dual_map: qx, qy and s must have the same size");
        Array f(n), dot(n);
        fastntk::cpu::dual_map_cpu(prog, index, qx.data(), qy.data(), s.data(), n, f.mutable_data(),
                                   dot.mutable_data());
        return py::make_tuple(f, dot);
      },
      py::arg("program"), py::arg("index"), py::arg("qx"), py::arg("qy"), py::arg("s"),
      "(F, S) of activation op `index` at each (qx, qy, s): E[phi(u)phi(v)] and E[phi'(u)phi'(v)] for "
      "(u, v) ~ N(0, [[qx, s], [s, qy]]). The same pair code as the Gram drivers, one element at a time.");
  m.def(
      "dual_map_diag",
      [](const fastntk::Program& prog, int index, const Array& q) {
        const py::ssize_t n = q.size();
        Array f(n), dot(n);
        fastntk::cpu::dual_map_diag_cpu(prog, index, q.data(), n, f.mutable_data(), dot.mutable_data());
        return py::make_tuple(f, dot);
      },
      py::arg("program"), py::arg("index"), py::arg("q"),
      "(F(q, q, q), S(q, q, q)) of activation op `index` from the exact diagonal closed forms.");
}
