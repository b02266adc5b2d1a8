// fastntk._core.Program: registration of the layer-program builder. No math here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "fastntk/program.hpp"

namespace py = pybind11;
using fastntk::Parameterization;
using fastntk::Program;

void bind_program(py::module_& m) {
  py::class_<Program>(m, "Program", "A compiled network: the flat list of ops the native recursion runs.")
      .def(py::init<>())
      .def(
          "add_dense",
          [](Program& p, double W_std, py::object b_std, bool standard, double n_in, double ntk_bias) -> Program& {
            const bool has_bias = !b_std.is_none();
            return p.add_dense(W_std, has_bias ? b_std.cast<double>() : 0.0, has_bias,
                               standard ? Parameterization::Standard : Parameterization::Ntk, n_in, ntk_bias);
          },
          py::arg("W_std"), py::arg("b_std"), py::arg("standard"), py::arg("n_in"), py::arg("ntk_bias") = 0.0,
          py::return_value_policy::reference)
      .def("add_abrelu", &Program::add_abrelu, py::arg("a"), py::arg("b"), py::return_value_policy::reference)
      .def("add_erf", &Program::add_erf, py::arg("a"), py::arg("b"), py::arg("c"), py::return_value_policy::reference)
      .def("add_sign", &Program::add_sign, py::return_value_policy::reference)
      .def("add_gelu", &Program::add_gelu, py::return_value_policy::reference)
      .def("add_sin", &Program::add_sin, py::arg("a"), py::arg("b"), py::arg("c"), py::return_value_policy::reference)
      .def("add_cos", &Program::add_cos, py::arg("a"), py::arg("b"), py::arg("c"), py::return_value_policy::reference)
      .def("add_rbf", &Program::add_rbf, py::arg("gamma"), py::return_value_policy::reference)
      .def("add_exp", &Program::add_exp, py::arg("a"), py::arg("b"), py::return_value_policy::reference)
      .def("add_gaussian", &Program::add_gaussian, py::arg("a"), py::arg("b"), py::return_value_policy::reference)
      .def("add_monomial", &Program::add_monomial, py::arg("degree"), py::return_value_policy::reference)
      .def("add_rectified_monomial", &Program::add_rectified_monomial, py::arg("degree"),
           py::return_value_policy::reference)
      .def("set_layer", &Program::set_layer, py::arg("layer"), py::return_value_policy::reference,
           "Tag the ops added from now on with this layer index (used in error messages).")
      .def_property_readonly("n_ops", &Program::n_ops)
      .def_property_readonly(
          "op_layers",
          [](const Program& p) {
            std::vector<int> layers;
            for (const auto& op : p.ops()) layers.push_back(op.layer);
            return layers;
          },
          "For each op, the index of the layer it came from (see set_layer).")
      .def_property_readonly(
          "dense_ops",
          [](const Program& p) {
            std::vector<bool> dense;
            for (const auto& op : p.ops()) dense.push_back(op.kind == fastntk::OpKind::Dense);
            return dense;
          },
          "For each op, whether it is a Dense layer.")
      .def_property_readonly("n_activations", &Program::n_activations)
      .def_property_readonly(
          "ops_bytes",
          [](const Program& p) {
            return py::bytes(reinterpret_cast<const char*>(p.ops().data()), p.ops().size() * sizeof(fastntk::Op));
          },
          "The ops as raw bytes (trivially copyable structs), what the CUDA backend copies to the device.")
      .def_property_readonly("coefficients", &Program::coef, "The coefficient pool of the polynomial activations.");
}
