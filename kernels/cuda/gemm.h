// GEMMs through cuBLASLt: y[M, N] = x[M, K] · w[N, K]ᵀ, weights in PyTorch
// [out, in] order, bf16 operands, fp32 accumulation; the same call serves
// prefill (large M) and decode (M = batch). The operation descriptors and the
// heuristic's algorithm are built once per (M, N, K, output type) and cached
// (STYLE.md §4: plan once, reuse for every layer). FP8 (e4m3) weights: a
// fused weight-streaming kernel for M <= kFp8SmallM; above, the weight is
// dequantized to bf16 in the caller's workspace and goes through cuBLASLt.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace facet::cuda {

class Gemm {
 public:
  // workspace_bytes of cuBLASLt scratch (32 MiB is what NVIDIA recommends for Hopper).
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(size_t workspace_bytes = size_t(32) << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x [M, K] bf16, w [N, K] bf16; exactly one of y_f32 / y_bf16 [M, N] non-null.
  // Pointers must be 16-byte aligned; plans are kept per alignment class, so
  // slices of larger buffers work (cuBLASLt otherwise assumes 256 bytes).
  absl::Status MatMulBf16(const bf16* x, int64_t M, const bf16* w, int64_t N, int64_t K,
                          float* y_f32, bf16* y_bf16, cudaStream_t stream);

  // w [N, K] e4m3 with `scales` as Fp8Scaling says. workspace: at least
  // Fp8WorkspaceBytes(M, N, K) bytes (0 for small M).
  static size_t Fp8WorkspaceBytes(int64_t M, int64_t N, int64_t K);
  absl::Status MatMulFp8(const bf16* x, int64_t M, const uint8_t* w, int64_t N, int64_t K,
                         const float* scales, Fp8Scaling scaling, float* y_f32, bf16* y_bf16,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream);

  size_t cached_plans() const;

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // M, N, K, fp32 output, pointer alignment in bytes (16..256)
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, uint32_t>;

  Gemm() = default;
  absl::StatusOr<const Plan*> GetPlan(int64_t M, int64_t N, int64_t K, bool f32_out,
                                      uint32_t align);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  mutable std::mutex mu_;
  std::map<Key, Plan> plans_;
};

}  // namespace facet::cuda
