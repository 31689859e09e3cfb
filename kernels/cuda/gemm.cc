#include "kernels/cuda/gemm.h"

#include "kernels/cuda/check.h"

namespace facet::cuda {

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(size_t workspace_bytes) {
  std::unique_ptr<Gemm> g(new Gemm());
  FACET_CUBLAS_RETURN(cublasLtCreate(&g->handle_));
  ASSIGN_OR_RETURN(g->workspace_, DeviceBuffer::Allocate(workspace_bytes));
  return g;
}

Gemm::~Gemm() {
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.op);
  }
  if (handle_ != nullptr) FACET_CUBLAS_CHECK(cublasLtDestroy(handle_));
}

size_t Gemm::cached_plans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plans_.size();
}

absl::StatusOr<const Gemm::Plan*> Gemm::GetPlan(int64_t M, int64_t N, int64_t K, bool f32_out,
                                                uint32_t align) {
  std::lock_guard<std::mutex> lock(mu_);
  const Key key{M, N, K, f32_out, align};
  auto it = plans_.find(key);
  if (it != plans_.end()) return &it->second;
  // Row-major y[M, N] = x · wᵀ is column-major yᵀ[N, M] = w_cm[K, N]ᵀ · x_cm[K, M]:
  // A = w (transposed), B = x, C = D = y, the "TN" form cuBLASLt prefers.
  Plan p;
  auto cleanup = [&] {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.op) cublasLtMatmulDescDestroy(p.op);
  };
  absl::Status s = [&]() -> absl::Status {
    FACET_CUBLAS_RETURN(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    FACET_CUBLAS_RETURN(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    FACET_CUBLAS_RETURN(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    FACET_CUBLAS_RETURN(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(K), uint64_t(N), K));
    FACET_CUBLAS_RETURN(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(K), uint64_t(M), K));
    FACET_CUBLAS_RETURN(cublasLtMatrixLayoutCreate(&p.c, f32_out ? CUDA_R_32F : CUDA_R_16BF,
                                                   uint64_t(N), uint64_t(M), N));
    cublasLtMatmulPreference_t pref = nullptr;
    FACET_CUBLAS_RETURN(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace_.bytes();
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      if (st == CUBLAS_STATUS_SUCCESS) {
        st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
      }
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result,
                                          &found);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    FACET_CUBLAS_RETURN(st);
    if (found == 0) {
      return absl::UnimplementedError(absl::StrCat("Gemm: cuBLASLt has no algorithm for M ", M,
                                                   ", N ", N, ", K ", K));
    }
    p.algo = result.algo;
    return absl::OkStatus();
  }();
  if (!s.ok()) {
    cleanup();
    return s;
  }
  return &plans_.emplace(key, p).first->second;
}

absl::Status Gemm::MatMulBf16(const bf16* x, int64_t M, const bf16* w, int64_t N, int64_t K,
                              float* y_f32, bf16* y_bf16, cudaStream_t stream) {
  if (M <= 0 || N <= 0 || K <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulBf16: M, N, K must be > 0, got ", M,
                                                   ", ", N, ", ", K));
  }
  if (x == nullptr || w == nullptr || (y_f32 == nullptr) == (y_bf16 == nullptr)) {
    return absl::InvalidArgumentError(
        "MatMulBf16: x and w must be set and exactly one of y_f32 / y_bf16");
  }
  if (K % 8 != 0 || N % 8 != 0) {
    // cuBLASLt needs 16-byte aligned leading dimensions for bf16 tensor cores.
    return absl::InvalidArgumentError(
        absl::StrCat("MatMulBf16: N and K must be multiples of 8, got N ", N, ", K ", K));
  }
  const bool f32 = y_f32 != nullptr;
  void* y = f32 ? static_cast<void*>(y_f32) : static_cast<void*>(y_bf16);
  // The largest power of two (<= 256) dividing every address.
  const uintptr_t bits = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) |
                         reinterpret_cast<uintptr_t>(y) | 256;
  const uint32_t align = uint32_t(bits & (~bits + 1));
  if (align < 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMulBf16: x, w and y must be 16-byte aligned (got ", align, ")"));
  }
  ASSIGN_OR_RETURN(const Plan* plan, GetPlan(M, N, K, f32, align));
  const float alpha = 1.0f, beta = 0.0f;
  FACET_CUBLAS_RETURN(cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, x, plan->b, &beta, y,
                                     plan->c, y, plan->c, &plan->algo, workspace_.data(),
                                     workspace_.bytes(), stream));
  return absl::OkStatus();
}

size_t Gemm::Fp8WorkspaceBytes(int64_t M, int64_t N, int64_t K) {
  return M <= kFp8SmallM ? 0 : sizeof(bf16) * size_t(N) * size_t(K);
}

absl::Status Gemm::MatMulFp8(const bf16* x, int64_t M, const uint8_t* w, int64_t N, int64_t K,
                             const float* scales, Fp8Scaling scaling, float* y_f32, bf16* y_bf16,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (M <= kFp8SmallM) {
    return Fp8MatMulSmallM(x, M, w, N, K, scales, scaling, y_f32, y_bf16, stream);
  }
  const size_t need = Fp8WorkspaceBytes(M, N, K);
  if (workspace == nullptr || workspace_bytes < need) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulFp8: workspace of ", workspace_bytes,
                                                   " bytes, need ", need));
  }
  bf16* wd = static_cast<bf16*>(workspace);
  RETURN_IF_ERROR(DequantizeFp8(w, N, K, scales, scaling, wd, stream));
  return MatMulBf16(x, M, wd, N, K, y_f32, y_bf16, stream);
}

}  // namespace facet::cuda
