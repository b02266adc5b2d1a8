// fastntk: let GCC vectorize the transcendental calls of the recursion.
//
// glibc >= 2.35 ships libmvec with SSE/AVX2/AVX-512 versions of acos, asin, atan2,
// exp (max error 4 ulp). Its headers only announce them under -ffast-math, which
// would also drop NaN/Inf semantics everywhere, so instead this header re-declares
// the few functions the recursion uses with the `simd` attribute. The vectorizer
// then calls e.g. _ZGVeN8v_acos in the AVX-512 loop body (resolved through libm's
// linker script, which pulls in libmvec). Include it before any fastntk header in
// CPU translation units only; elsewhere the plain scalar libm is used.
#pragma once

#include <cmath>

#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#define FASTNTK_HAVE_LIBMVEC 1
extern "C" {
__attribute__((simd("notinbranch"))) double acos(double) noexcept;
__attribute__((simd("notinbranch"))) double asin(double) noexcept;
__attribute__((simd("notinbranch"))) double atan2(double, double) noexcept;
__attribute__((simd("notinbranch"))) double exp(double) noexcept;
}
#else
#define FASTNTK_HAVE_LIBMVEC 0
#endif
