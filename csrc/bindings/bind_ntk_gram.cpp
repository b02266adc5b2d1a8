// fastntk._core.ntk_gram: argument checks, GIL release, Ctrl-C, errors. No math here.
//
// NumPy handling (dtype, contiguity, allocation of the outputs) stays in Python; this
// binding receives C-contiguous float64 buffers and refuses anything else.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <functional>
#include <optional>
#include <string>

#include "../cpu/ntk_gram_cpu.hpp"
#include "common.hpp"

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style>;

namespace {

using fastntk::bindings::shape_of;

void check_output(const std::optional<Array>& out, const char* name, py::ssize_t n1, py::ssize_t n2) {
  if (!out) return;
  if (out->ndim() != 2 || out->shape(0) != n1 || out->shape(1) != n2)
    throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(n1) + ", " +
                                std::to_string(n2) + "), got " + shape_of(*out));
  if (!out->writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
}

}  // namespace

void bind_ntk_gram(py::module_& m) {
  m.def(
      "ntk_gram",
      [](const fastntk::Program& prog, const Array& x1, const std::optional<Array>& x2, std::optional<Array> nngp,
         std::optional<Array> ntk, int n_threads, int tile) {
        if (x1.ndim() != 2) throw std::invalid_argument("x1 must be 2-D (N1, d), got shape " + shape_of(x1));
        if (x2 && (x2->ndim() != 2 || x2->shape(1) != x1.shape(1)))
          throw std::invalid_argument("x2 must be 2-D (N2, " + std::to_string(x1.shape(1)) + "), got shape " +
                                      shape_of(*x2));
        const py::ssize_t n1 = x1.shape(0), n2 = x2 ? x2->shape(0) : n1, d = x1.shape(1);
        check_output(nngp, "nngp", n1, n2);
        check_output(ntk, "ntk", n1, n2);
        if (n_threads < 0) throw std::invalid_argument("n_threads must be >= 0, got " + std::to_string(n_threads));

        fastntk::cpu::GramOptions opt;
        opt.n_threads = n_threads;
        opt.tile = tile;
        const double* p1 = x1.data();
        const double* p2 = x2 ? x2->data() : nullptr;
        double* pn = nngp ? nngp->mutable_data() : nullptr;
        double* pt = ntk ? ntk->mutable_data() : nullptr;
        fastntk::bindings::run_interruptible([&](const std::function<bool()>& interrupted) {
          opt.interrupted = interrupted;
          fastntk::cpu::ntk_gram_cpu(prog, p1, n1, p2, n2, d, pn, pt, opt);
        });
      },
      py::arg("program"), py::arg("x1").noconvert(), py::arg("x2").noconvert() = py::none(),
      py::arg("nngp").noconvert() = py::none(), py::arg("ntk").noconvert() = py::none(), py::arg("n_threads") = 0,
      py::arg("tile") = 0,
      "Fill nngp and/or ntk (float64 (N1, N2), C order) with the program's kernels between the rows of x1 and x2 "
      "(x2=None: x1 with itself, using symmetry). Releases the GIL; Ctrl-C stops it.");

  m.def(
      "default_tile",
      [](std::int64_t n1, std::int64_t n2, bool symmetric, int n_threads) {
        return fastntk::cpu::default_tile(n1, n2, symmetric, n_threads);
      },
      py::arg("n1"), py::arg("n2"), py::arg("symmetric"), py::arg("n_threads"));
}
