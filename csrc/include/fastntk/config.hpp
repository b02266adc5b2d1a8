// fastntk: build-wide macros and constants shared by host and device code.
#pragma once

#if defined(__CUDACC__)
#define FASTNTK_HD __host__ __device__
#else
#define FASTNTK_HD
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FASTNTK_RESTRICT __restrict__
#define FASTNTK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTNTK_RESTRICT
#define FASTNTK_ALWAYS_INLINE inline
#endif

namespace fastntk {

constexpr double kPi = 3.141592653589793238462643383279502884;
constexpr double kInvPi = 0.318309886183790671537767526745028724;
constexpr double kInvTwoPi = 0.159154943091895335768883763372514362;

}  // namespace fastntk
