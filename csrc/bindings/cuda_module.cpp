// fastntk._cuda: the CUDA backend's Python module. Argument checks and registration only; no
// math. Separate from fastntk._core so that `import fastntk` never needs a CUDA driver: this
// module links the CUDA runtime statically, and the runtime loads the driver (libcuda) at its
// first call, so importing it works on any machine; without a driver or a GPU,
// device_count() returns 0 with the reason.
//
// Every buffer is a device pointer passed as an integer (CuPy's ndarray.data.ptr), owned by
// CuPy's memory pool on the Python side; every launch goes to the given stream (CuPy's current
// stream handle) of the given device. Launches are asynchronous: this module never
// synchronizes, except in synchronize().
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "../cuda/ntk_gram_cuda.hpp"
#include "fastntk/op.hpp"

namespace py = pybind11;
namespace fc = fastntk::cuda;

#ifndef FASTNTK_VERSION
#define FASTNTK_VERSION "unknown"
#endif
#ifndef FASTNTK_CUDA_ARCHS
#define FASTNTK_CUDA_ARCHS "unknown"
#endif
#ifndef FASTNTK_CUDA_COMPILER
#define FASTNTK_CUDA_COMPILER "unknown"
#endif

namespace {

// Makes `device` current for the scope, then restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : previous_(fc::get_device()) {
    if (device != previous_) fc::set_device(device);
    device_ = device;
  }
  ~DeviceScope() {
    if (device_ != previous_) {
      try {
        fc::set_device(previous_);
      } catch (...) {  // never throw from a destructor; the next call reports the error
      }
    }
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0, device_ = 0;
};

template <class T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

fastntk::ProgramView view(std::uintptr_t ops, int n_ops, int n_activations, std::uintptr_t coef) {
  if (n_ops < 0 || n_activations < 0 || n_activations > n_ops)
    throw std::invalid_argument("program: need 0 <= n_activations <= n_ops");
  if (n_ops > 0 && ops == 0) throw std::invalid_argument("program: ops is a null pointer");
  return fastntk::ProgramView{ptr<const fastntk::Op>(ops), n_ops, n_activations, ptr<const double>(coef)};
}

void check_directions(int p) {
  if (p < 0 || p > fc::kMaxDirections)
    throw std::invalid_argument("n_directions must be in [0, " + std::to_string(fc::kMaxDirections) + "], got " +
                                std::to_string(p));
}

fc::Storage storage(bool float32) { return float32 ? fc::Storage::Float32 : fc::Storage::Float64; }

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastntk CUDA backend: the analytic NNGP/NTK Gram kernels on device buffers (pointers as integers).";
  py::register_exception<fc::CudaError>(m, "CudaError", PyExc_RuntimeError);

  m.attr("OP_BYTES") = static_cast<int>(sizeof(fastntk::Op));
  m.attr("MAX_DIRECTIONS") = fc::kMaxDirections;

  m.def(
      "build_info",
      []() {
        py::dict d;
        d["cuda"] = true;  // this module exists only in a build with FASTNTK_WITH_CUDA
        d["version"] = FASTNTK_VERSION;
        d["cuda_architectures"] = FASTNTK_CUDA_ARCHS;
        d["cuda_compiler"] = FASTNTK_CUDA_COMPILER;
        return d;
      },
      "Facts about the CUDA part of this build (no device needed).");

  m.def(
      "device_count",
      []() {
        std::string why;
        const int n = fc::device_count(&why);
        return py::make_tuple(n, why);
      },
      "(count, reason): the number of CUDA devices, and why it is 0 (no driver, no GPU), never raising.");

  m.def(
      "device_info",
      [](int device) {
        const fc::DeviceFacts f = fc::device_facts(device);
        py::dict d;
        d["name"] = f.name;
        d["compute_capability"] = std::to_string(f.major) + "." + std::to_string(f.minor);
        d["multiprocessors"] = f.multiprocessors;
        d["total_memory"] = f.total_memory;
        d["runtime_version"] = fc::runtime_version();
        d["driver_version"] = fc::driver_version();
        return d;
      },
      py::arg("device"), "Name, compute capability, multiprocessors and memory of a device.");

  m.def(
      "mem_get_info",
      [](int device) {
        DeviceScope scope(device);
        std::size_t free_bytes = 0, total = 0;
        fc::mem_get_info(&free_bytes, &total);
        return py::make_tuple(free_bytes, total);
      },
      py::arg("device"), "(free, total) bytes of device memory, as cudaMemGetInfo.");

  m.def(
      "synchronize",
      [](std::uintptr_t stream, int device) {
        DeviceScope scope(device);
        py::gil_scoped_release release;
        fc::synchronize_stream(stream);
      },
      py::arg("stream"), py::arg("device"), "Wait for the stream; raises CudaError for a failure on it.");

  m.def(
      "point_pass",
      [](std::uintptr_t ops, int n_ops, int n_activations, std::uintptr_t coef, std::uintptr_t seeds, int n_directions,
         std::uintptr_t q0, std::int64_t n, std::uintptr_t table, std::uintptr_t capture, int capture_end,
         std::uintptr_t q_cap, std::uintptr_t t_cap, std::uintptr_t stopped, std::uintptr_t stream, int device) {
        check_directions(n_directions);
        if (n_directions > 0 && seeds == 0) throw std::invalid_argument("point_pass: seeds needed for derivatives");
        if (n > 0 && (!q0 || !stopped || !q_cap || !t_cap || (n_activations > 0 && !table)))
          throw std::invalid_argument("point_pass: a buffer is a null pointer");
        DeviceScope scope(device);
        fc::PointPass a{view(ops, n_ops, n_activations, coef),
                        ptr<const double>(seeds),
                        n_directions,
                        ptr<const double>(q0),
                        n,
                        ptr<void>(table),
                        ptr<const int>(capture),
                        capture_end,
                        ptr<void>(q_cap),
                        ptr<void>(t_cap),
                        ptr<int>(stopped)};
        fc::point_pass_cuda(a, stream);
      },
      py::arg("ops"), py::arg("n_ops"), py::arg("n_activations"), py::arg("coef"), py::arg("seeds"),
      py::arg("n_directions"), py::arg("q0"), py::arg("n"), py::arg("table"), py::arg("capture"),
      py::arg("capture_end"), py::arg("q_cap"), py::arg("t_cap"), py::arg("stopped"), py::arg("stream"),
      py::arg("device"),
      "Per-point pass: point tables and diagonal kernels at each capture from q0 = |x|^2/d (see ntk_gram_cuda.hpp).");

  m.def(
      "gram_tile",
      [](std::uintptr_t ops, int n_ops, int n_activations, std::uintptr_t coef, std::uintptr_t seeds, int n_directions,
         bool float32, std::uintptr_t s, std::int64_t ld_s, double scale, std::uintptr_t table1, std::int64_t n1,
         std::uintptr_t table2, std::int64_t n2, std::int64_t i0, std::int64_t j0, std::int64_t rows, std::int64_t cols,
         bool upper, std::uintptr_t nngp, std::uintptr_t ntk, std::int64_t ld_out, std::int64_t plane_stride,
         std::uintptr_t capture, int capture_end, std::uintptr_t not_finite, std::uintptr_t stream, int device) {
        check_directions(n_directions);
        if (n_directions > 0 && seeds == 0) throw std::invalid_argument("gram_tile: seeds needed for derivatives");
        if (rows < 0 || cols < 0 || i0 < 0 || j0 < 0 || i0 + rows > n1 || j0 + cols > n2)
          throw std::invalid_argument("gram_tile: the tile lies outside the (n1, n2) Gram");
        if (ld_s < cols || ld_out < cols) throw std::invalid_argument("gram_tile: leading dimensions below cols");
        if (!s || !not_finite || (n_activations > 0 && (!table1 || !table2)))
          throw std::invalid_argument("gram_tile: a buffer is a null pointer");
        if (capture == 0 && capture_end < 0) throw std::invalid_argument("gram_tile: nothing to capture");
        DeviceScope scope(device);
        fc::GramTile a{view(ops, n_ops, n_activations, coef),
                       ptr<const double>(seeds),
                       n_directions,
                       storage(float32),
                       ptr<const void>(s),
                       ld_s,
                       scale,
                       ptr<const void>(table1),
                       n1,
                       ptr<const void>(table2),
                       n2,
                       i0,
                       j0,
                       rows,
                       cols,
                       upper,
                       ptr<void>(nngp),
                       ptr<void>(ntk),
                       ld_out,
                       plane_stride,
                       ptr<const int>(capture),
                       capture_end,
                       ptr<int>(not_finite)};
        fc::gram_tile_cuda(a, stream);
      },
      py::arg("ops"), py::arg("n_ops"), py::arg("n_activations"), py::arg("coef"), py::arg("seeds"),
      py::arg("n_directions"), py::arg("float32"), py::arg("s"), py::arg("ld_s"), py::arg("scale"), py::arg("table1"),
      py::arg("n1"), py::arg("table2"), py::arg("n2"), py::arg("i0"), py::arg("j0"), py::arg("rows"), py::arg("cols"),
      py::arg("upper"), py::arg("nngp"), py::arg("ntk"), py::arg("ld_out"), py::arg("plane_stride"), py::arg("capture"),
      py::arg("capture_end"), py::arg("not_finite"), py::arg("stream"), py::arg("device"),
      "One tile of the Gram: the layer walk per entry over the inner products in s (see ntk_gram_cuda.hpp).");

  m.def(
      "mirror",
      [](std::uintptr_t a, bool float32, std::int64_t n, std::int64_t ld, std::uintptr_t stream, int device) {
        if (n > 0 && !a) throw std::invalid_argument("mirror: null pointer");
        DeviceScope scope(device);
        fc::mirror_cuda(ptr<void>(a), storage(float32), n, ld, stream);
      },
      py::arg("a"), py::arg("float32"), py::arg("n"), py::arg("ld"), py::arg("stream"), py::arg("device"),
      "Copy the upper triangle of an n x n matrix (leading dimension ld) onto its lower triangle.");

  m.def(
      "row_norms",
      [](std::uintptr_t x, bool float32, std::int64_t n, std::int64_t d, std::int64_t ld, double scale,
         std::uintptr_t q0, std::uintptr_t stream, int device) {
        if (n > 0 && (!x || !q0)) throw std::invalid_argument("row_norms: null pointer");
        DeviceScope scope(device);
        fc::row_norms_cuda(ptr<const void>(x), storage(float32), n, d, ld, scale, ptr<double>(q0), stream);
      },
      py::arg("x"), py::arg("float32"), py::arg("n"), py::arg("d"), py::arg("ld"), py::arg("scale"), py::arg("q0"),
      py::arg("stream"), py::arg("device"), "q0[i] = scale * |x_i|^2, accumulated in float64.");
}
