// fastntk._core.empirical_gram: argument checks, GIL release, Ctrl-C, errors. No math here.
//
// NumPy handling stays in Python; this binding takes C-contiguous float64 buffers (no
// conversion: anything else is refused) and checks every shape against n1, n2 and m.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../cpu/empirical_gram_cpu.hpp"
#include "common.hpp"

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style>;
using fastntk::bindings::shape_of;

namespace {

std::string dims(std::initializer_list<py::ssize_t> shape) {
  std::string s = "(";
  bool first = true;
  for (py::ssize_t v : shape) {
    s += (first ? "" : ", ") + std::to_string(v);
    first = false;
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

// obj as a C-contiguous float64 array of the given ndim, or an exception naming it.
Array as_array(const py::handle& obj, const std::string& name, int ndim) {
  if (!py::isinstance<Array>(obj))
    throw std::invalid_argument(name + " must be a C-contiguous float64 array, got " +
                                std::string(py::str(py::type::of(obj))));
  Array a = py::reinterpret_borrow<Array>(obj);
  if (a.ndim() != ndim)
    throw std::invalid_argument(name + " must be " + std::to_string(ndim) + "-D, got shape " + shape_of(a));
  return a;
}

void expect_shape(const Array& a, const std::string& name, std::initializer_list<py::ssize_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  py::ssize_t k = 0;
  for (py::ssize_t v : shape) ok = ok && a.shape(k++) == v;
  if (!ok) throw std::invalid_argument(name + " must have shape " + dims(shape) + ", got " + shape_of(a));
}

}  // namespace

void bind_empirical_gram(py::module_& m) {
  m.def(
      "empirical_gram",
      [](const py::list& terms, py::ssize_t n1, py::object n2_obj, py::ssize_t n_out, const py::object& out_obj,
         bool trace, double scale, bool accumulate, py::ssize_t row0, py::ssize_t col0, int n_threads, int tile) {
        const bool symmetric = n2_obj.is_none();
        const py::ssize_t n2 = symmetric ? n1 : n2_obj.cast<py::ssize_t>();
        if (n1 < 0 || n2 < 0) throw std::invalid_argument("n1 and n2 must be >= 0");
        if (n_out < 1) throw std::invalid_argument("m must be >= 1, got " + std::to_string(n_out));
        if (n_threads < 0) throw std::invalid_argument("n_threads must be >= 0, got " + std::to_string(n_threads));

        // Keeps the arrays referenced while the GIL is released.
        std::vector<Array> keep;
        std::vector<fastntk::cpu::GramTerm> native;
        for (py::ssize_t k = 0; k < static_cast<py::ssize_t>(terms.size()); ++k) {
          const std::string name = "term " + std::to_string(k);
          const py::tuple t = py::cast<py::tuple>(terms[k]);
          if (t.size() != 6) throw std::invalid_argument(name + " must be (a1, a2, b1, b2, weight, bias)");
          fastntk::cpu::GramTerm g;
          g.weight = t[4].cast<double>();
          g.bias = t[5].cast<double>();
          if (!t[0].is_none()) {
            Array a1 = as_array(t[0], name + " a1", 2);
            expect_shape(a1, name + " a1", {n1, a1.shape(1)});
            g.p = a1.shape(1);
            g.a1 = a1.data();
            keep.push_back(a1);
            if (!symmetric) {
              Array a2 = as_array(t[1], name + " a2", 2);
              expect_shape(a2, name + " a2", {n2, g.p});
              g.a2 = a2.data();
              keep.push_back(a2);
            }
          }
          if (t[0].is_none() && !t[1].is_none()) throw std::invalid_argument(name + ": a2 given without a1");
          if (symmetric && !(t[1].is_none() && t[3].is_none()))
            throw std::invalid_argument(name + ": a symmetric call (n2=None) takes no a2 or b2");
          if (t[2].is_none()) {
            if (!t[3].is_none()) throw std::invalid_argument(name + ": b2 given without b1");
            g.q = n_out;  // the identity
          } else {
            Array b1 = as_array(t[2], name + " b1", 3);
            expect_shape(b1, name + " b1", {n1, n_out, b1.shape(2)});
            g.q = b1.shape(2);
            g.b1 = b1.data();
            keep.push_back(b1);
            if (!symmetric) {
              Array b2 = as_array(t[3], name + " b2", 3);
              expect_shape(b2, name + " b2", {n2, n_out, g.q});
              g.b2 = b2.data();
              keep.push_back(b2);
            }
          }
          native.push_back(g);
        }

        Array out = as_array(out_obj, "out", trace ? 2 : 4);
        if (!out.writeable()) throw std::invalid_argument("out must be writeable");
        if (!trace && (out.shape(2) != n_out || out.shape(3) != n_out))
          throw std::invalid_argument("out must have shape (R, C, " + std::to_string(n_out) + ", " +
                                      std::to_string(n_out) + "), got " + shape_of(out));
        if (row0 < 0 || col0 < 0 || row0 + n1 > out.shape(0) || col0 + n2 > out.shape(1))
          throw std::invalid_argument("the block out[" + std::to_string(row0) + ":" + std::to_string(row0 + n1) + ", " +
                                      std::to_string(col0) + ":" + std::to_string(col0 + n2) +
                                      "] does not fit in out of shape " + shape_of(out));

        fastntk::cpu::EmpiricalOptions opt;
        opt.trace = trace;
        opt.scale = scale;
        opt.accumulate = accumulate;
        opt.ld = out.shape(1);
        opt.n_threads = fastntk::bindings::threads_for(n_threads);
        opt.tile = tile;
        const std::int64_t per_pair = trace ? 1 : static_cast<std::int64_t>(n_out) * n_out;
        double* dst = out.mutable_data() + (static_cast<std::int64_t>(row0) * out.shape(1) + col0) * per_pair;
        fastntk::bindings::run_interruptible([&](const std::function<bool()>& interrupted) {
          opt.interrupted = interrupted;
          fastntk::cpu::empirical_gram_cpu(native.data(), static_cast<int>(native.size()), n1, n2, n_out, symmetric,
                                           dst, opt);
        });
      },
      py::arg("terms"), py::arg("n1"), py::arg("n2"), py::arg("m"), py::arg("out"), py::kw_only(),
      py::arg("trace") = true, py::arg("scale") = 1.0, py::arg("accumulate") = false, py::arg("row0") = 0,
      py::arg("col0") = 0, py::arg("n_threads") = 0, py::arg("tile") = 0,
      "Fill the block out[row0:row0+n1, col0:col0+n2] with scale * sum over terms (a1, a2, b1, b2, weight, bias) of "
      "(weight <a1_i, a2_j> + bias) <b1_i^o, b2_j^o'>: summed over o = o' into out (R, C) if trace, else into out "
      "(R, C, m, m). a: (n, p) or None (the constant bias); b: (n, m, q) or None (the identity, q = m). n2=None: "
      "symmetric (a2, b2 None; upper tiles computed and mirrored within the block). accumulate adds to out. Releases "
      "the GIL; Ctrl-C stops it.");

  m.def(
      "empirical_default_tile",
      [](std::int64_t n1, std::int64_t n2, std::int64_t n_out, bool trace, bool symmetric, int n_threads) {
        return fastntk::cpu::empirical_default_tile(n1, n2, n_out, trace, symmetric, n_threads);
      },
      py::arg("n1"), py::arg("n2"), py::arg("m"), py::arg("trace"), py::arg("symmetric"), py::arg("n_threads"));
}
