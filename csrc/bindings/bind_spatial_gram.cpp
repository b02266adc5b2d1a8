// fastntk._core.SpatialProgram and fastntk._core.spatial_gram: registration, argument
// checks, GIL release, Ctrl-C, errors. No math here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "../cpu/spatial_gram_cpu.hpp"
#include "common.hpp"
#include "fastntk/program.hpp"
#include "fastntk/spatial_program.hpp"

namespace py = pybind11;
using fastntk::Program;
using fastntk::SpatialProgram;
using Array = py::array_t<double, py::array::c_style>;

namespace {

using fastntk::bindings::shape_of;

// An output: C-contiguous, writeable, float64 or float32, of shape (n1, n2, out_size).
void check_output(const std::optional<py::array>& out, const char* name, py::ssize_t n1, py::ssize_t n2,
                  py::ssize_t size) {
  if (!out) return;
  const std::string expected =
      "(" + std::to_string(n1) + ", " + std::to_string(n2) + ", " + std::to_string(size) + ")";
  if (out->ndim() != 3 || out->shape(0) != n1 || out->shape(1) != n2 || out->shape(2) != size)
    throw std::invalid_argument(std::string(name) + " must have shape " + expected + ", got " + shape_of(*out));
  if (!out->dtype().is(py::dtype::of<double>()) && !out->dtype().is(py::dtype::of<float>()))
    throw std::invalid_argument(std::string(name) + " must be float64 or float32, got " +
                                std::string(py::str(out->dtype())));
  if (!(out->flags() & py::array::c_style)) throw std::invalid_argument(std::string(name) + " must be C-contiguous");
  if (!out->writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
}

}  // namespace

void bind_spatial_gram(py::module_& m) {
  py::class_<SpatialProgram>(m, "SpatialProgram",
                             "A compiled spatial (CNN) network: registers of spatial covariances and the ops "
                             "over them (see the CNN contract, cnn_spec.md).")
      .def(py::init<const std::vector<int>&, int, bool, int>(), py::arg("in_dims"), py::arg("channels"),
           py::arg("full"), py::arg("n_registers"))
      .def("add_linear", &SpatialProgram::add_linear, py::arg("src"), py::arg("dst"), py::arg("map"),
           py::arg("in_dims"), py::arg("out_dims"), py::arg("window") = std::vector<int>{},
           py::arg("strides") = std::vector<int>{}, py::arg("pad_lo") = std::vector<int>{},
           py::arg("circular") = false, py::arg("normalize_edges") = false, py::arg("scale") = 1.0,
           py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("gamma") = 0.0, py::arg("delta") = 1.0,
           py::arg("eps") = 0.0, py::return_value_policy::reference,
           "dst = L(src) with L = scale * (window sum) of map 'identity' | 'conv' | 'pool' | 'flatten' | "
           "'global': dst.Sigma = alpha L(Sigma) + beta, dst.Theta = gamma L(Sigma) + delta L(Theta) + eps.")
      .def("add_activation", &SpatialProgram::add_activation, py::arg("src_dst"), py::arg("fc_program"),
           py::arg("op_index"), py::keep_alive<1, 3>(), py::return_value_policy::reference,
           "Apply activation op number op_index of the FC Program fc_program per entry of register src_dst.")
      .def("add_layernorm", &SpatialProgram::add_layernorm, py::arg("src_dst"), py::arg("spatial"), py::arg("eps"),
           py::return_value_policy::reference)
      .def("add_copy", &SpatialProgram::add_copy, py::arg("src"), py::arg("dst"), py::return_value_policy::reference)
      .def("add_axpy", &SpatialProgram::add_axpy, py::arg("src"), py::arg("dst"), py::arg("weight"),
           py::return_value_policy::reference)
      .def("set_layer", &SpatialProgram::set_layer, py::arg("layer"), py::return_value_policy::reference,
           "Tag the ops added from now on with this layer index (used in error messages).")
      .def_property_readonly("n_ops", &SpatialProgram::n_ops)
      .def_property_readonly("n_activations", &SpatialProgram::n_activations)
      .def_property_readonly("n_registers", &SpatialProgram::n_registers)
      .def_property_readonly("channels", &SpatialProgram::channels)
      .def_property_readonly("full", &SpatialProgram::full)
      .def_property_readonly("in_dims", [](const SpatialProgram& p) {
        const auto& s = p.in_shape();
        return std::vector<int>(s.dims, s.dims + s.n_dims);
      })
      .def_property_readonly("out_dims", &SpatialProgram::out_dims)
      .def_property_readonly("out_size", &SpatialProgram::out_size,
                             "Entries of the output per pair: 1 (scalar), S_out (diagonal) or S_out**2 (full).")
      .def_property_readonly("max_entries", &SpatialProgram::max_entries,
                             "Doubles of the largest state a workspace buffer holds.")
      // What the CUDA backend copies to the device (fastntk._cuda.spatial_points / spatial_pairs).
      .def_property_readonly(
          "ops_bytes",
          [](const SpatialProgram& p) {
            return py::bytes(reinterpret_cast<const char*>(p.ops().data()),
                             p.ops().size() * sizeof(fastntk::SpatialOp));
          },
          "The ops as raw bytes (trivially copyable structs).")
      .def_property_readonly("coefficients", &SpatialProgram::coef,
                             "The coefficient pool (polynomial activations, pool edge weights).")
      .def_property_readonly("point_stride", &SpatialProgram::point_stride, "Doubles of one image's point record.")
      .def_property_readonly(
          "op_layers",
          [](const SpatialProgram& p) {
            std::vector<int> layers;
            for (const auto& op : p.ops()) layers.push_back(op.layer);
            return layers;
          },
          "For each op, the index of the layer it came from (see set_layer).");

  m.def(
      "spatial_gram",
      [](const SpatialProgram& prog, const Array& x1, const std::optional<Array>& x2,
         std::optional<py::array> nngp, std::optional<py::array> ntk, int n_threads, const py::object& progress) {
        const py::ssize_t row = prog.in_positions() * prog.channels();
        const std::string want = std::to_string(prog.in_positions()) + " positions * " +
                                 std::to_string(prog.channels()) + " channels = " + std::to_string(row);
        if (x1.ndim() != 2 || x1.shape(1) != row)
          throw std::invalid_argument("x1 must be 2-D (N1, " + want + "), got shape " + shape_of(x1));
        if (x2 && (x2->ndim() != 2 || x2->shape(1) != row))
          throw std::invalid_argument("x2 must be 2-D (N2, " + want + "), got shape " + shape_of(*x2));
        const py::ssize_t n1 = x1.shape(0), n2 = x2 ? x2->shape(0) : n1;
        if (!nngp && !ntk) throw std::invalid_argument("spatial_gram: pass nngp and/or ntk outputs");
        check_output(nngp, "nngp", n1, n2, prog.out_size());
        check_output(ntk, "ntk", n1, n2, prog.out_size());
        const bool f32 = (nngp ? *nngp : *ntk).dtype().is(py::dtype::of<float>());
        if (nngp && ntk && !nngp->dtype().is(ntk->dtype()))
          throw std::invalid_argument("nngp and ntk must have the same dtype, got " + std::string(py::str(nngp->dtype())) +
                                      " and " + std::string(py::str(ntk->dtype())));
        if (n_threads < 0) throw std::invalid_argument("n_threads must be >= 0, got " + std::to_string(n_threads));

        fastntk::cpu::SpatialGramOptions opt;
        opt.n_threads = fastntk::bindings::threads_for(n_threads);
        opt.progress = fastntk::bindings::progress_callback(progress, "fastntk.spatial_gram progress");
        const double* p1 = x1.data();
        const double* p2 = x2 ? x2->data() : nullptr;
        void* pn = nngp ? nngp->mutable_data() : nullptr;
        void* pt = ntk ? ntk->mutable_data() : nullptr;
        bool finite = false;
        fastntk::bindings::run_interruptible([&](const std::function<bool()>& interrupted) {
          opt.interrupted = interrupted;
          if (f32)
            finite = fastntk::cpu::spatial_gram_cpu(prog, p1, n1, p2, n2, static_cast<float*>(pn),
                                                    static_cast<float*>(pt), opt);
          else
            finite = fastntk::cpu::spatial_gram_cpu(prog, p1, n1, p2, n2, static_cast<double*>(pn),
                                                    static_cast<double*>(pt), opt);
        });
        return finite;
      },
      py::arg("sprog"), py::arg("x1").noconvert(), py::arg("x2").noconvert() = py::none(),
      py::arg("nngp") = py::none(), py::arg("ntk") = py::none(), py::arg("n_threads") = 0,
      py::arg("progress") = py::none(),
      "Fill nngp and/or ntk ((N1, N2, out_size), C order, float64 or float32 storage; the walk is float64) with "
      "the spatial program's kernels between the images of x1 and x2 (float64 (N, S_in * C), C order; x2=None: x1 "
      "with itself, upper triangle and mirror, exact diagonal). Returns True when every entry is finite. progress, "
      "if given, is called as progress(done, total). Releases the GIL; Ctrl-C stops it.");
}
