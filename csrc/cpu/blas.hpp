// fastntk: the few BLAS calls of the CPU driver, behind one small interface.
//
// The default BLAS is OpenBLAS from the PyPI package scipy-openblas32, whose symbols
// carry the prefix `scipy_` so that it never clashes with NumPy's or SciPy's copy.
// FASTNTK_BLAS_PREFIX is set by CMake to that prefix (empty for a system CBLAS).
#pragma once

#include <cstdint>

#ifndef FASTNTK_BLAS_PREFIX
#define FASTNTK_BLAS_PREFIX
#endif
#define FASTNTK_BLAS_CAT2(a, b) a##b
#define FASTNTK_BLAS_CAT(a, b) FASTNTK_BLAS_CAT2(a, b)
#define FASTNTK_BLAS(name) FASTNTK_BLAS_CAT(FASTNTK_BLAS_PREFIX, name)

extern "C" {
// Declared here rather than through cblas.h so that any CBLAS works; the enums are
// the reference CBLAS values (RowMajor = 101, NoTrans = 111, Trans = 112, Upper = 121).
void FASTNTK_BLAS(cblas_dgemm)(int order, int transa, int transb, int m, int n, int k, double alpha, const double* a,
                               int lda, const double* b, int ldb, double beta, double* c, int ldc);
void FASTNTK_BLAS(cblas_dsyrk)(int order, int uplo, int trans, int n, int k, double alpha, const double* a, int lda,
                               double beta, double* c, int ldc);
double FASTNTK_BLAS(cblas_ddot)(int n, const double* x, int incx, const double* y, int incy);
#if FASTNTK_BLAS_OPENBLAS
void FASTNTK_BLAS(openblas_set_num_threads)(int n);
char* FASTNTK_BLAS(openblas_get_config)(void);
char* FASTNTK_BLAS(openblas_get_corename)(void);
#endif
}

namespace fastntk::cpu::blas {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kUpper = 121;

// c[m, n] (leading dimension ldc) = alpha * a[m, k] b[n, k]^T, row-major.
inline void gemm_abt(int m, int n, int k, double alpha, const double* a, int lda, const double* b, int ldb, double* c,
                     int ldc) {
  FASTNTK_BLAS(cblas_dgemm)(kRowMajor, kNoTrans, kTrans, m, n, k, alpha, a, lda, b, ldb, 0.0, c, ldc);
}

// c[m, n] (leading dimension ldc) = alpha * a[m, k] b[k, n], row-major.
inline void gemm_ab(int m, int n, int k, double alpha, const double* a, int lda, const double* b, int ldb, double* c,
                    int ldc) {
  FASTNTK_BLAS(cblas_dgemm)(kRowMajor, kNoTrans, kNoTrans, m, n, k, alpha, a, lda, b, ldb, 0.0, c, ldc);
}

// Upper triangle of c[n, n] = alpha * a[n, k] a[n, k]^T, row-major.
inline void syrk_upper(int n, int k, double alpha, const double* a, int lda, double* c, int ldc) {
  FASTNTK_BLAS(cblas_dsyrk)(kRowMajor, kUpper, kNoTrans, n, k, alpha, a, lda, 0.0, c, ldc);
}

inline double dot(int n, const double* x, const double* y) { return FASTNTK_BLAS(cblas_ddot)(n, x, 1, y, 1); }

// The driver calls BLAS from inside its own OpenMP threads, one tile per thread, so
// the BLAS must not start threads of its own (they would fight the OpenMP team).
inline void use_single_thread() {
#if FASTNTK_BLAS_OPENBLAS
  FASTNTK_BLAS(openblas_set_num_threads)(1);
#endif
}

inline const char* config() {
#if FASTNTK_BLAS_OPENBLAS
  return FASTNTK_BLAS(openblas_get_config)();
#else
  return "CBLAS";
#endif
}

// The kernel family in use (OpenBLAS picks it per CPU at load time).
inline const char* core() {
#if FASTNTK_BLAS_OPENBLAS
  return FASTNTK_BLAS(openblas_get_corename)();
#else
  return "unknown";
#endif
}

}  // namespace fastntk::cpu::blas
