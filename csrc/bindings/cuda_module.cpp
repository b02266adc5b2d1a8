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
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../cuda/ntk_gram_cuda.hpp"
#include "../cuda/spatial_gram_cuda.hpp"
#include "fastntk/op.hpp"
#include "fastntk/spatial_op.hpp"

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

// A spatial program on the device, from the tuple the Python side builds out of a
// _core.SpatialProgram: (ops, n_ops, n_registers, n_activations, full, in_dims, out_dims,
// max_entries, point_stride, coef), ops and coef device pointers.
fastntk::SpatialShape spatial_shape(const std::vector<int>& dims, bool allow_scalar, const char* name) {
  if (dims.size() > static_cast<std::size_t>(fastntk::kMaxSpatialDims) || (!allow_scalar && dims.empty()))
    throw std::invalid_argument(std::string("spatial program: ") + name + " must have " + (allow_scalar ? "0" : "1") +
                                " to 3 axes");
  fastntk::SpatialShape s{};
  s.n_dims = static_cast<std::int32_t>(dims.size());
  for (std::size_t k = 0; k < dims.size(); ++k) {
    if (dims[k] < 1) throw std::invalid_argument(std::string("spatial program: ") + name + " must be >= 1 per axis");
    s.dims[k] = dims[k];
  }
  return s;
}

fastntk::SpatialProgramView spatial_view(const py::tuple& t) {
  if (t.size() != 10) throw std::invalid_argument("spatial program: expected a tuple of 10 fields");
  fastntk::SpatialProgramView v{};
  v.ops = ptr<const fastntk::SpatialOp>(t[0].cast<std::uintptr_t>());
  v.n_ops = t[1].cast<int>();
  v.n_registers = t[2].cast<int>();
  v.n_activations = t[3].cast<int>();
  v.full = t[4].cast<bool>() ? 1 : 0;
  v.in_shape = spatial_shape(t[5].cast<std::vector<int>>(), false, "in_dims");
  v.out_shape = spatial_shape(t[6].cast<std::vector<int>>(), true, "out_dims");
  v.max_entries = t[7].cast<std::int64_t>();
  v.point_stride = t[8].cast<std::int64_t>();
  v.coef = ptr<const double>(t[9].cast<std::uintptr_t>());
  if (v.n_ops < 0 || (v.n_ops > 0 && !v.ops)) throw std::invalid_argument("spatial program: bad ops");
  if (v.n_registers < 1 || v.n_registers > fastntk::kMaxSpatialRegisters)
    throw std::invalid_argument("spatial program: n_registers out of range");
  if (v.n_activations < 0 || v.n_activations > v.n_ops)
    throw std::invalid_argument("spatial program: need 0 <= n_activations <= n_ops");
  if (v.max_entries < v.in_shape.entries(v.full) || v.max_entries < v.out_shape.entries(v.full))
    throw std::invalid_argument("spatial program: max_entries below the input's or the output's entries");
  if (v.point_stride < 0) throw std::invalid_argument("spatial program: negative point_stride");
  return v;
}

// (n_blocks, threads, shared_workspace, workspace) -> SpatialLaunch.
fc::SpatialLaunch spatial_launch(const py::tuple& t) {
  if (t.size() != 4) throw std::invalid_argument("spatial launch: expected (n_blocks, threads, shared, workspace)");
  return fc::SpatialLaunch{t[0].cast<int>(), t[1].cast<int>(), t[2].cast<bool>(),
                           ptr<double>(t[3].cast<std::uintptr_t>())};
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastntk CUDA backend: the analytic NNGP/NTK Gram kernels on device buffers (pointers as integers).";
  py::register_exception<fc::CudaError>(m, "CudaError", PyExc_RuntimeError);

  m.attr("OP_BYTES") = static_cast<int>(sizeof(fastntk::Op));
  m.attr("MAX_DIRECTIONS") = fc::kMaxDirections;
  m.attr("SPATIAL_OP_BYTES") = static_cast<int>(sizeof(fastntk::SpatialOp));
  m.attr("SPATIAL_MAX_THREADS") = fc::kSpatialMaxThreads;
  m.attr("SPATIAL_MAX_SHARED_BYTES") = fc::kSpatialMaxSharedBytes;

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

  // ---- Spatial (CNN) kernels: prog is the tuple of spatial_view, launch that of spatial_launch.

  m.def(
      "spatial_workspace_doubles",
      [](const py::tuple& prog, bool ntk) { return fc::spatial_workspace_doubles(spatial_view(prog), ntk); },
      py::arg("prog"), py::arg("ntk"), "Doubles of one block's workspace (Theta's buffers too with ntk).");

  m.def(
      "spatial_resident_blocks",
      [](bool ntk, int threads, std::int64_t shared_bytes, int device) {
        DeviceScope scope(device);
        return fc::spatial_resident_blocks(ntk, threads, shared_bytes);
      },
      py::arg("ntk"), py::arg("threads"), py::arg("shared_bytes"), py::arg("device"),
      "Blocks of the spatial pair kernel resident at once on the device (occupancy x SMs).");

  m.def(
      "spatial_points",
      [](const py::tuple& prog, int channels, std::uintptr_t x, std::int64_t n, std::uintptr_t records,
         std::int64_t record_stride, bool float32, std::uintptr_t nngp, std::uintptr_t ntk, std::int64_t ld_point,
         std::uintptr_t stopped, std::uintptr_t not_finite, const py::tuple& launch, std::uintptr_t stream,
         int device) {
        if (channels < 1) throw std::invalid_argument("spatial_points: channels must be >= 1");
        if (n < 0 || record_stride < 0 || ld_point < 0)
          throw std::invalid_argument("spatial_points: negative size or stride");
        fc::SpatialPoints a{spatial_view(prog), channels,        ptr<const double>(x), n,
                            ptr<double>(records), record_stride, storage(float32),     ptr<void>(nngp),
                            ptr<void>(ntk),       ld_point,      ptr<int>(stopped),    ptr<int>(not_finite),
                            spatial_launch(launch)};
        DeviceScope scope(device);
        fc::spatial_points_cuda(a, stream);
      },
      py::arg("prog"), py::arg("channels"), py::arg("x"), py::arg("n"), py::arg("records"), py::arg("record_stride"),
      py::arg("float32"), py::arg("nngp"), py::arg("ntk"), py::arg("ld_point"), py::arg("stopped"),
      py::arg("not_finite"), py::arg("launch"), py::arg("stream"), py::arg("device"),
      "Point pass of a spatial program: each image's walk with itself (records, own kernel; see "
      "spatial_gram_cuda.hpp).");

  m.def(
      "spatial_pairs",
      [](const py::tuple& prog, int channels, std::uintptr_t x1, std::uintptr_t x2, std::uintptr_t rec1,
         std::uintptr_t rec2, std::int64_t record_stride, std::int64_t n1, std::int64_t n2, std::int64_t i0,
         std::int64_t rows, std::int64_t j0, std::int64_t cols, bool upper, bool float32, std::uintptr_t nngp,
         std::uintptr_t ntk, std::int64_t out_size, std::int64_t out_i0, std::int64_t out_j0, std::int64_t ld_row,
         bool mirror, std::uintptr_t not_finite, const py::tuple& launch, std::uintptr_t stream, int device) {
        if (channels < 1) throw std::invalid_argument("spatial_pairs: channels must be >= 1");
        if (rows < 0 || cols < 0 || i0 < 0 || j0 < 0 || i0 + rows > n1 || j0 + cols > n2)
          throw std::invalid_argument("spatial_pairs: the band lies outside the (n1, n2) Gram");
        if (out_i0 < 0 || out_j0 < 0 || out_i0 > i0 || out_j0 > j0 || ld_row < cols * out_size)
          throw std::invalid_argument("spatial_pairs: the output origin or its row stride does not cover the band");
        if (mirror && (out_i0 != 0 || out_j0 != 0 || n1 != n2))
          throw std::invalid_argument("spatial_pairs: mirror needs the whole square output (origin 0, 0)");
        fc::SpatialPairs a{spatial_view(prog),
                           channels,
                           ptr<const double>(x1),
                           ptr<const double>(x2),
                           ptr<const double>(rec1),
                           ptr<const double>(rec2),
                           record_stride,
                           i0,
                           rows,
                           j0,
                           cols,
                           upper,
                           storage(float32),
                           ptr<void>(nngp),
                           ptr<void>(ntk),
                           out_size,
                           out_i0,
                           out_j0,
                           ld_row,
                           mirror,
                           ptr<int>(not_finite),
                           spatial_launch(launch)};
        if (a.record_stride < a.prog.point_stride)
          throw std::invalid_argument("spatial_pairs: record_stride below the program's point_stride");
        DeviceScope scope(device);
        fc::spatial_pairs_cuda(a, stream);
      },
      py::arg("prog"), py::arg("channels"), py::arg("x1"), py::arg("x2"), py::arg("rec1"), py::arg("rec2"),
      py::arg("record_stride"), py::arg("n1"), py::arg("n2"), py::arg("i0"), py::arg("rows"), py::arg("j0"),
      py::arg("cols"), py::arg("upper"), py::arg("float32"), py::arg("nngp"), py::arg("ntk"), py::arg("out_size"),
      py::arg("out_i0"), py::arg("out_j0"), py::arg("ld_row"), py::arg("mirror"), py::arg("not_finite"),
      py::arg("launch"), py::arg("stream"), py::arg("device"),
      "Pair pass of a spatial program over a band of pairs, one block per pair (see spatial_gram_cuda.hpp).");
}
