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
#include <utility>
#include <vector>

#include "../cpu/ntk_gram_cpu.hpp"
#include "common.hpp"

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style>;

namespace {

using fastntk::bindings::shape_of;

// An output must be (n1, n2) when there is one capture and no derivative, else
// (captures, 1 + directions, n1, n2).
void check_output(const std::optional<Array>& out, const char* name, py::ssize_t captures, py::ssize_t planes,
                  py::ssize_t n1, py::ssize_t n2) {
  if (!out) return;
  const bool plain = captures == 1 && planes == 1;
  const bool ok = plain ? (out->ndim() == 2 && out->shape(0) == n1 && out->shape(1) == n2)
                        : (out->ndim() == 4 && out->shape(0) == captures && out->shape(1) == planes &&
                           out->shape(2) == n1 && out->shape(3) == n2);
  if (!ok) {
    const std::string expected = plain ? "(" + std::to_string(n1) + ", " + std::to_string(n2) + ")"
                                       : "(" + std::to_string(captures) + ", " + std::to_string(planes) + ", " +
                                             std::to_string(n1) + ", " + std::to_string(n2) + ")";
    throw std::invalid_argument(std::string(name) + " must have shape " + expected + ", got " + shape_of(*out));
  }
  if (!out->writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
}

}  // namespace

void bind_ntk_gram(py::module_& m) {
  m.def(
      "ntk_gram",
      [](const fastntk::Program& prog, const Array& x1, const std::optional<Array>& x2, std::optional<Array> nngp,
         std::optional<Array> ntk, int n_threads, int tile, std::vector<int> capture_after,
         const std::optional<Array>& seeds, const py::object& progress) {
        if (x1.ndim() != 2) throw std::invalid_argument("x1 must be 2-D (N1, d), got shape " + shape_of(x1));
        if (x2 && (x2->ndim() != 2 || x2->shape(1) != x1.shape(1)))
          throw std::invalid_argument("x2 must be 2-D (N2, " + std::to_string(x1.shape(1)) + "), got shape " +
                                      shape_of(*x2));
        const py::ssize_t n1 = x1.shape(0), n2 = x2 ? x2->shape(0) : n1, d = x1.shape(1);
        fastntk::cpu::GramRequest req;
        req.capture_after = std::move(capture_after);
        if (seeds) {
          if (seeds->ndim() != 3 || seeds->shape(0) != prog.n_ops() || seeds->shape(2) != 3)
            throw std::invalid_argument("seeds must have shape (n_ops=" + std::to_string(prog.n_ops()) +
                                        ", directions, 3), got " + shape_of(*seeds));
          req.n_directions = static_cast<int>(seeds->shape(1));
          req.seeds.assign(seeds->data(), seeds->data() + seeds->size());
        }
        const py::ssize_t captures = req.capture_after.empty() ? 1 : req.capture_after.size();
        check_output(nngp, "nngp", captures, 1 + req.n_directions, n1, n2);
        check_output(ntk, "ntk", captures, 1 + req.n_directions, n1, n2);
        if (n_threads < 0) throw std::invalid_argument("n_threads must be >= 0, got " + std::to_string(n_threads));

        fastntk::cpu::GramOptions opt;
        opt.n_threads = fastntk::bindings::threads_for(n_threads);
        opt.tile = tile;
        const double* p1 = x1.data();
        const double* p2 = x2 ? x2->data() : nullptr;
        double* pn = nngp ? nngp->mutable_data() : nullptr;
        double* pt = ntk ? ntk->mutable_data() : nullptr;
        opt.progress = fastntk::bindings::progress_callback(progress, "fastntk.ntk_gram progress");
        bool finite = false;
        fastntk::bindings::run_interruptible([&](const std::function<bool()>& interrupted) {
          opt.interrupted = interrupted;
          finite = fastntk::cpu::ntk_gram_cpu(prog, p1, n1, p2, n2, d, pn, pt, opt, req);
        });
        return finite;
      },
      py::arg("program"), py::arg("x1").noconvert(), py::arg("x2").noconvert() = py::none(),
      py::arg("nngp").noconvert() = py::none(), py::arg("ntk").noconvert() = py::none(), py::arg("n_threads") = 0,
      py::arg("tile") = 0, py::arg("capture_after") = std::vector<int>{}, py::arg("seeds") = py::none(),
      py::arg("progress") = py::none(),
      "Fill nngp and/or ntk (float64, C order) with the program's kernels between the rows of x1 and x2 "
      "(x2=None: x1 with itself, using symmetry). Outputs are (N1, N2); with capture_after (op indices after "
      "which to write the kernels) or seeds (n_ops, P, 3: derivatives of each Dense op's W^2, b^2, t0 along P "
      "directions) they are (captures, 1 + P, N1, N2): the kernels, then their derivatives. Returns True when "
      "every entry written is known to be finite (checked in the tiles for the plain kernels), False when one "
      "may not be (scan the outputs then). progress, if given, is called as progress(tiles_done, tiles_total) "
      "every 50 ms or so while it runs. Releases the GIL; Ctrl-C stops it.");

  m.def(
      "ntk_diag",
      [](const fastntk::Program& prog, const Array& x, int n_threads) {
        if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D (N, d), got shape " + shape_of(x));
        const py::ssize_t n = x.shape(0);
        Array nngp(n), ntk(n);
        fastntk::cpu::GramOptions opt;
        opt.n_threads = fastntk::bindings::threads_for(n_threads);
        const double* px = x.data();
        double* pn = nngp.mutable_data();
        double* pt = ntk.mutable_data();
        fastntk::bindings::run_interruptible(
            [&](const std::function<bool()>&) { fastntk::cpu::ntk_diag_cpu(prog, px, n, x.shape(1), pn, pt, opt); });
        return py::make_tuple(nngp, ntk);
      },
      py::arg("program"), py::arg("x").noconvert(), py::arg("n_threads") = 0,
      "(nngp, ntk): the diagonal kernels K(x_i, x_i) of the rows of x (float64 (N, d), C order), from the exact "
      "diagonal maps, O(N (d + layers)).");

  m.def(
      "default_tile",
      [](std::int64_t n1, std::int64_t n2, bool symmetric, int n_threads) {
        const fastntk::cpu::TileShape shape = fastntk::cpu::default_tile(n1, n2, symmetric, n_threads);
        return py::make_tuple(shape.rows, shape.cols);
      },
      py::arg("n1"), py::arg("n2"), py::arg("symmetric"), py::arg("n_threads"),
      "(rows, cols): the tile shape ntk_gram chooses for these sizes and threads.");
}
