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

// A portable x86-64 build (no -march) would vectorize the recursion for SSE2 only, where
// GCC does not even vectorize the arc-cosine loops. So the tile function of the kernels
// (T = double) is cloned for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the
// baseline, each clone with every callee inlined (flatten) and compiled, libmvec calls
// included, for its instruction set; the dynamic loader picks the clone for the running
// CPU once (an ifunc). A native build (-march=...) compiles the one version it needs.
// (Used by ntk_gram_cpu.cpp; build_info.cpp reports which clone runs.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)
#define FASTNTK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#define FASTNTK_RUNTIME_DISPATCH 1
#else
#define FASTNTK_CLONES
#define FASTNTK_RUNTIME_DISPATCH 0
#endif
