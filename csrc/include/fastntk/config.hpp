// fastntk: build-wide macros and constants shared by host and device code.
//
// The headers of csrc/include/fastntk split in two:
//   device-clean: config.hpp, op.hpp, dual.hpp, activations.hpp, walk_impl.hpp. They compile
//     as C++17 host code and as CUDA device code (tests/cpp/device_check.cu proves it in CI):
//     no STL containers, strings, exceptions, virtual calls or host-only library calls.
//   host-only: program.hpp (the builder) and errors.hpp (the exceptions drivers throw).
//
// Math convention in device-clean headers: the maps call fastntk::detail::sqrt, exp, acos,
// asin, atan2 (dual.hpp), qualified, for double and Dual alike; those forward to the C
// library's global functions (::sqrt, ...), which the CPU build gives SIMD variants
// (csrc/cpu/vecmath.hpp) and CUDA provides as device functions. Nothing there calls std::
// math or declares a math function in namespace fastntk itself, so `using namespace fastntk`
// next to CUDA's math headers is unambiguous. Host-only code may use std:: freely.
#pragma once

#if defined(__CUDACC__)
#define FASTNTK_HD __host__ __device__
#else
#define FASTNTK_HD
#endif

// Force-inline: the per-pair maps must inline into the SIMD loops and device kernels.
#if defined(__CUDACC__)
#define FASTNTK_ALWAYS_INLINE __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define FASTNTK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTNTK_ALWAYS_INLINE inline
#endif

#if defined(__GNUC__) || defined(__clang__) || defined(__CUDACC__)
#define FASTNTK_RESTRICT __restrict__
#else
#define FASTNTK_RESTRICT
#endif

namespace fastntk {

constexpr double kPi = 3.141592653589793238462643383279502884;
constexpr double kInvPi = 0.318309886183790671537767526745028724;
constexpr double kInvTwoPi = 0.159154943091895335768883763372514362;

}  // namespace fastntk
