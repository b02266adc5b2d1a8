// fastntk._core: module definition, exception registration, build facts. No math here.
#include <pybind11/pybind11.h>

#include "../cpu/build_info.hpp"
#include "fastntk/op.hpp"  // kMaxDegree

namespace py = pybind11;

void bind_program(py::module_& m);
void bind_ntk_gram(py::module_& m);
void bind_dual_map(py::module_& m);
void bind_empirical_gram(py::module_& m);
void bind_matmul(py::module_& m);
void bind_pencil_pivots(py::module_& m);
void bind_spatial_gram(py::module_& m);

#ifndef FASTNTK_VERSION
#define FASTNTK_VERSION "unknown"
#endif
#ifndef FASTNTK_COMPILER
#define FASTNTK_COMPILER "unknown"
#endif
#ifndef FASTNTK_ARCH_FLAGS
#define FASTNTK_ARCH_FLAGS ""
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "fastntk native core: the layer program and the analytic NNGP/NTK Gram drivers, the empirical-kernel driver.";

  bind_program(m);
  bind_ntk_gram(m);
  bind_dual_map(m);
  bind_empirical_gram(m);
  bind_matmul(m);
  bind_pencil_pivots(m);
  bind_spatial_gram(m);
  // The largest polynomial degree the builder accepts (Monomial, RectifiedMonomial).
  m.attr("MAX_DEGREE") = fastntk::kMaxDegree;

  m.def(
      "build_info",
      []() {
        const auto info = fastntk::cpu::build_info();
        py::dict d;
        d["version"] = FASTNTK_VERSION;
        d["compiler"] = FASTNTK_COMPILER;
        d["arch_flags"] = FASTNTK_ARCH_FLAGS;
        d["openmp"] = info.openmp;
        d["max_threads"] = info.max_threads;
        d["blas"] = info.blas;
        d["blas_core"] = info.blas_core;
        d["simd"] = info.simd;
        d["simd_doubles"] = info.simd_doubles;
        d["simd_dispatch"] = info.simd_dispatch;
        d["libmvec"] = info.libmvec;
        d["cuda"] = false;
        return d;
      },
      "Facts about this build: compiler, OpenMP, BLAS, SIMD width, CUDA.");
}
