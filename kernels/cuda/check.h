// Check macros for CUDA runtime, cuBLAS and NCCL calls. Each records the file
// and line of the failing call (STYLE.md §12). Two flavours:
//   FACET_CUDA_CHECK(expr)   aborts with a message — for invariants and
//                            destructors, where nobody can react;
//   FACET_CUDA_RETURN(expr)  returns an absl::Status from the enclosing
//                            function — wherever the caller can react.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#if __has_include(<nccl.h>)
#include <nccl.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"

namespace facet::cuda {

inline std::string CudaErrorText(cudaError_t e, const char* expr, const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line) + ": " + expr + " failed: " +
         cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

inline absl::Status CudaStatus(cudaError_t e, const char* expr, const char* file, int line) {
  if (e == cudaSuccess) return absl::OkStatus();
  // Out of memory is a capacity problem the caller can plan around; anything
  // else (illegal address, launch failure) means the device state is suspect.
  if (e == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(CudaErrorText(e, expr, file, line));
  }
  return absl::InternalError(CudaErrorText(e, expr, file, line));
}

inline std::string LibErrorText(const char* lib, int code, const char* name, const char* expr,
                                const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line) + ": " + expr + " failed: " + lib + " " +
         name + " (" + std::to_string(code) + ")";
}

inline absl::Status CublasStatus(cublasStatus_t e, const char* expr, const char* file, int line) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  std::string text = LibErrorText("cuBLAS", int(e), cublasGetStatusName(e), expr, file, line);
  if (e == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(text);
  // NOT_SUPPORTED / INVALID_VALUE: the shape or type combination is refused,
  // which the caller can fix; the rest means the library is in trouble.
  if (e == CUBLAS_STATUS_NOT_SUPPORTED || e == CUBLAS_STATUS_INVALID_VALUE) {
    return absl::InvalidArgumentError(text);
  }
  return absl::InternalError(text);
}

#if __has_include(<nccl.h>)
inline absl::Status NcclStatus(ncclResult_t e, const char* expr, const char* file, int line) {
  if (e == ncclSuccess) return absl::OkStatus();
  std::string text = LibErrorText("NCCL", int(e), ncclGetErrorString(e), expr, file, line);
  // A remote or system error is a peer or network going away: retryable by
  // a higher layer; usage errors are bugs.
  if (e == ncclRemoteError || e == ncclSystemError) return absl::UnavailableError(text);
  if (e == ncclInvalidArgument || e == ncclInvalidUsage) return absl::InvalidArgumentError(text);
  return absl::InternalError(text);
}
#endif

}  // namespace facet::cuda

#define FACET_CUDA_CHECK(expr)                                                              \
  do {                                                                                      \
    cudaError_t facet_cuda_err_ = (expr);                                                   \
    if (facet_cuda_err_ != cudaSuccess) {                                                   \
      std::fprintf(stderr, "%s\n",                                                          \
                   ::facet::cuda::CudaErrorText(facet_cuda_err_, #expr, __FILE__, __LINE__) \
                       .c_str());                                                           \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

#define FACET_CUDA_RETURN(expr)                                                                \
  do {                                                                                         \
    cudaError_t facet_cuda_err_ = (expr);                                                      \
    if (facet_cuda_err_ != cudaSuccess) {                                                      \
      return ::facet::cuda::CudaStatus(facet_cuda_err_, #expr, __FILE__, __LINE__);            \
    }                                                                                          \
  } while (0)

// After a kernel launch: catches bad launch configurations at once.
#define FACET_CUDA_RETURN_LAUNCH() FACET_CUDA_RETURN(cudaGetLastError())

#define FACET_CUBLAS_RETURN(expr)                                                             \
  do {                                                                                        \
    cublasStatus_t facet_cublas_err_ = (expr);                                                \
    if (facet_cublas_err_ != CUBLAS_STATUS_SUCCESS) {                                         \
      return ::facet::cuda::CublasStatus(facet_cublas_err_, #expr, __FILE__, __LINE__);       \
    }                                                                                         \
  } while (0)

#define FACET_CUBLAS_CHECK(expr)                                                              \
  do {                                                                                        \
    cublasStatus_t facet_cublas_err_ = (expr);                                                \
    if (facet_cublas_err_ != CUBLAS_STATUS_SUCCESS) {                                         \
      std::fprintf(stderr, "%s\n",                                                            \
                   ::facet::cuda::CublasStatus(facet_cublas_err_, #expr, __FILE__, __LINE__)  \
                       .ToString()                                                            \
                       .c_str());                                                             \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

#define FACET_NCCL_RETURN(expr)                                                               \
  do {                                                                                        \
    ncclResult_t facet_nccl_err_ = (expr);                                                    \
    if (facet_nccl_err_ != ncclSuccess) {                                                     \
      return ::facet::cuda::NcclStatus(facet_nccl_err_, #expr, __FILE__, __LINE__);           \
    }                                                                                         \
  } while (0)
