// fastntk._core.matmul: argument checks, GIL release, Ctrl-C, errors. No math here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <functional>
#include <string>

#include "../cpu/matmul_cpu.hpp"
#include "common.hpp"

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style>;
using fastntk::bindings::shape_of;

void bind_matmul(py::module_& m) {
  m.def(
      "matmul",
      [](const Array& a, const Array& b, Array& out, bool trans_b, double alpha, int n_threads) {
        if (a.ndim() != 2) throw std::invalid_argument("a must be 2-D, got shape " + shape_of(a));
        if (b.ndim() != 2) throw std::invalid_argument("b must be 2-D, got shape " + shape_of(b));
        const py::ssize_t rows = a.shape(0), inner = a.shape(1);
        const py::ssize_t cols = trans_b ? b.shape(0) : b.shape(1);
        if ((trans_b ? b.shape(1) : b.shape(0)) != inner)
          throw std::invalid_argument("a of shape " + shape_of(a) + " and b of shape " + shape_of(b) +
                                      (trans_b ? " (transposed)" : "") + " do not chain");
        if (out.ndim() != 2 || out.shape(0) != rows || out.shape(1) != cols)
          throw std::invalid_argument("out must have shape (" + std::to_string(rows) + ", " + std::to_string(cols) +
                                      "), got " + shape_of(out));
        if (!out.writeable()) throw std::invalid_argument("out must be writeable");
        if (n_threads < 0) throw std::invalid_argument("n_threads must be >= 0, got " + std::to_string(n_threads));
        fastntk::cpu::MatmulOptions opt;
        opt.n_threads = fastntk::bindings::threads_for(n_threads);
        const double* pa = a.data();
        const double* pb = b.data();
        double* pc = out.mutable_data();
        fastntk::bindings::run_interruptible([&](const std::function<bool()>& interrupted) {
          opt.interrupted = interrupted;
          fastntk::cpu::matmul_cpu(pa, pb, pc, rows, cols, inner, trans_b, alpha, opt);
        });
      },
      py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("out").noconvert(), py::kw_only(),
      py::arg("trans_b") = false, py::arg("alpha") = 1.0, py::arg("n_threads") = 0,
      "out = alpha * a @ b (b.T if trans_b), float64 C-contiguous buffers, on fastntk's BLAS and OpenMP team. "
      "Releases the GIL; Ctrl-C stops it.");
}
