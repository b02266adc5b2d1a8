// fastntk: C++ benchmark of the CUDA Gram driver (csrc/cuda/ntk_gram_cuda.cu), no Python.
//
//  1. Recursion throughput: gram_tile_cuda over an n x n tile of synthetic inner products
//     (correlations spread over (-0.9, 0.9), unit variances), for a depth-L ReLU program and
//     for the depth-0 program (the readout Dense alone), in the same process: the
//     difference is L x (Dense + ReLU) per pair, so pair-layers/s = n^2 L / (t_L - t_0).
//     Needs the CUDA runtime only.
//  2. Whole Gram vs the GEMM alone (only where cuBLAS was found at configure time,
//     FASTNTK_BENCH_CUBLAS): cublasDgemm of x x^T (N x d) into the tile, then the walk
//     (upper triangle) and the mirror, against cublasDgemm alone.
// Times are CUDA events around the launches, best of --repeat runs.
#include <cuda_runtime.h>
#ifdef FASTNTK_BENCH_CUBLAS
#include <cublas_v2.h>
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/ntk_gram_cuda.hpp"
#include "fastntk/program.hpp"

namespace {

using fastntk::Program;
namespace fc = fastntk::cuda;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// c_ij = 0.9 * sin(i * 0.61 + j * 1.37): deterministic, spread over (-0.9, 0.9).
__global__ void fill_correlations(double* s, long long n) {
  const long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (k < n * n) s[k] = 0.9 * sin(0.61 * static_cast<double>(k / n) + 1.37 * static_cast<double>(k % n));
}

#ifdef FASTNTK_BENCH_CUBLAS
__global__ void fill_inputs(double* x, long long count) {
  const long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (k < count) x[k] = sin(0.7 * static_cast<double>(k)) + 0.1 * cos(3.1 * static_cast<double>(k));
}
#endif

Program relu_mlp(int depth) {
  Program p;
  for (int l = 0; l < depth; ++l) {
    p.add_dense(1.5, 0.1, true, fastntk::Parameterization::Ntk, 1.0, 0.0);
    p.add_abrelu(0.0, 1.0);
  }
  p.add_dense(1.5, 0.1, true, fastntk::Parameterization::Ntk, 1.0, 0.0);
  return p;
}

// A program on the device; freed by the caller.
struct DeviceProgram {
  fastntk::ProgramView view{};
  void* ops = nullptr;
  void* coef = nullptr;
  explicit DeviceProgram(const Program& p) {
    const std::size_t ob = p.ops().size() * sizeof(fastntk::Op);
    check(cudaMalloc(&ops, ob > 0 ? ob : 1), "cudaMalloc ops");
    check(cudaMemcpy(ops, p.ops().data(), ob, cudaMemcpyHostToDevice), "copy ops");
    if (!p.coef().empty()) {
      check(cudaMalloc(&coef, p.coef().size() * sizeof(double)), "cudaMalloc coef");
      check(cudaMemcpy(coef, p.coef().data(), p.coef().size() * sizeof(double), cudaMemcpyHostToDevice), "coef");
    }
    view = fastntk::ProgramView{static_cast<const fastntk::Op*>(ops), p.n_ops(), p.n_activations(),
                                static_cast<const double*>(coef)};
  }
  ~DeviceProgram() {
    cudaFree(ops);
    cudaFree(coef);
  }
};

template <class F>
float best_ms(int repeat, F&& fn) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  float best = 1e30f;
  fn();  // warm-up
  for (int r = 0; r < repeat; ++r) {
    check(cudaEventRecord(a), "record");
    fn();
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    best = ms < best ? ms : best;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}

// Per-point tables and the tile's walk for program p over an n x n tile s (device buffers).
struct Walk {
  DeviceProgram prog;
  double *q0 = nullptr, *table = nullptr, *qcap = nullptr, *tcap = nullptr;
  int* stopped = nullptr;
  long long n;
  Walk(const Program& p, long long n_) : prog(p), n(n_) {
    check(cudaMalloc(&q0, n * sizeof(double)), "q0");
    check(cudaMalloc(&table, (4 * p.n_activations() * n + 1) * sizeof(double)), "table");
    check(cudaMalloc(&qcap, n * sizeof(double)), "qcap");
    check(cudaMalloc(&tcap, n * sizeof(double)), "tcap");
    check(cudaMalloc(&stopped, n * sizeof(int)), "stopped");
    std::vector<double> ones(n, 1.0);
    check(cudaMemcpy(q0, ones.data(), n * sizeof(double), cudaMemcpyHostToDevice), "q0");
    fc::point_pass_cuda(fc::PointPass{prog.view, nullptr, 0, q0, n, table, nullptr, 0, qcap, tcap, stopped}, 0);
  }
  ~Walk() {
    cudaFree(q0);
    cudaFree(table);
    cudaFree(qcap);
    cudaFree(tcap);
    cudaFree(stopped);
  }
  void run(const double* s, double scale, double* nngp, double* ntk, bool upper, int* flag) const {
    fc::gram_tile_cuda(fc::GramTile{prog.view, nullptr, 0,     fc::Storage::Float64,
                                    s,         n,       scale, table,
                                    n,         table,   n,     0,
                                    0,         n,       n,     upper,
                                    nngp,      ntk,     n,     n * n,
                                    nullptr,   0,       flag},
                       0);
  }
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int repeat = 5;
  for (int k = 1; k < argc; ++k) {
    if (!std::strcmp(argv[k], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[k], "--repeat") && k + 1 < argc) {
      repeat = std::atoi(argv[++k]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--repeat K]\n", argv[0]);
      return 2;
    }
  }
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "device");
    std::printf("fastntk CUDA benchmark on %s\n", prop.name);
    const int depth = 10;
    const long long n = quick ? 2048 : 16384;
    double *s, *work, *nngp, *ntk;
    int* flag;
    check(cudaMalloc(&s, n * n * sizeof(double)), "s");
    check(cudaMalloc(&work, n * n * sizeof(double)), "work");
    check(cudaMalloc(&nngp, n * n * sizeof(double)), "nngp");
    check(cudaMalloc(&ntk, n * n * sizeof(double)), "ntk");
    check(cudaMalloc(&flag, sizeof(int)), "flag");
    fill_correlations<<<static_cast<unsigned>((n * n + 255) / 256), 256>>>(s, n);
    check(cudaGetLastError(), "fill");
    const Walk deep(relu_mlp(depth), n), flat(relu_mlp(0), n);
    const float t_deep = best_ms(repeat, [&] { deep.run(s, 1.0, nngp, ntk, false, flag); });
    const float t_flat = best_ms(repeat, [&] { flat.run(s, 1.0, nngp, ntk, false, flag); });
    const double pl = static_cast<double>(n) * n * depth / ((t_deep - t_flat) * 1e-3);
    std::printf("recursion: %lld x %lld pairs, ReLU depth %d: %.3f ms (depth 0: %.3f ms): %.1f G pair-layers/s\n", n, n,
                depth, t_deep, t_flat, pl / 1e9);
#ifdef FASTNTK_BENCH_CUBLAS
    const long long d = quick ? 784 : 3072;
    double* x;
    check(cudaMalloc(&x, n * d * sizeof(double)), "x");
    fill_inputs<<<static_cast<unsigned>((n * d + 255) / 256), 256>>>(x, n * d);
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate failed");
    const double one = 1.0, zero = 0.0;
    // Row-major x (n x d) is column-major x^T (d x n): C^T = x x^T, so op(A) = A^T.
    auto gemm = [&] { cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, d, &one, x, d, x, d, &zero, work, n); };
    const float t_gemm = best_ms(repeat, gemm);
    const float t_gram = best_ms(repeat, [&] {
      gemm();
      deep.run(work, 1.0 / d, nngp, ntk, true, flag);
      fc::mirror_cuda(nngp, fc::Storage::Float64, n, n, 0);
      fc::mirror_cuda(ntk, fc::Storage::Float64, n, n, 0);
    });
    std::printf("whole Gram: N=%lld d=%lld nngp+ntk: %.3f ms, cublasDgemm alone %.3f ms: %.2fx the GEMM\n", n, d,
                t_gram, t_gemm, t_gram / t_gemm);
    cublasDestroy(h);
    cudaFree(x);
#else
    std::printf("whole Gram vs GEMM: skipped (built without cuBLAS)\n");
#endif
    cudaFree(s);
    cudaFree(work);
    cudaFree(nngp);
    cudaFree(ntk);
    cudaFree(flag);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
