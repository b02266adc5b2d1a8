// fastntk: the CUDA error checks of the drivers in csrc/cuda (CUDA translation units only).
//
// A failed runtime call throws CudaError (ntk_gram_cuda.hpp) with the expression, CUDA's
// name and message for the error, and where it failed; nothing aborts.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "ntk_gram_cuda.hpp"  // CudaError

namespace fastntk {
namespace cuda {
namespace detail {

inline void check(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return;
  throw CudaError(std::string("fastntk CUDA error: ") + expr + " failed: " + cudaGetErrorName(err) + ": " +
                  cudaGetErrorString(err) + " (" + file + ":" + std::to_string(line) + ")");
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace detail
}  // namespace cuda
}  // namespace fastntk

#define FASTNTK_CUDA_CHECK(expr) ::fastntk::cuda::detail::check((expr), #expr, __FILE__, __LINE__)
// After a launch: a bad configuration shows here (an asynchronous fault shows at the next sync).
#define FASTNTK_CUDA_CHECK_LAUNCH(what) ::fastntk::cuda::detail::check(cudaGetLastError(), what, __FILE__, __LINE__)
