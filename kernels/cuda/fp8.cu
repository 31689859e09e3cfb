// FP8 (e4m3) weights with per-channel or 128×128 block scales. Decode is
// bound by streaming the weight, so the small-M kernel reads each weight byte
// once, dequantizes in registers and multiplies against all M rows of x.
#include <cuda_fp8.h>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace facet::cuda {
namespace {

constexpr int kBlock = 128;  // block-scale granularity

__device__ __forceinline__ float Fp8ToF32(uint8_t raw) {
  __nv_fp8_e4m3 v;
  v.__x = raw;
  return float(v);
}

__device__ __forceinline__ float ScaleAt(const float* scales, Fp8Scaling scaling, int64_t n,
                                         int64_t k, int64_t K) {
  if (scaling == Fp8Scaling::kPerChannel) return scales[n];
  const int64_t kb = (K + kBlock - 1) / kBlock;
  return scales[(n / kBlock) * kb + k / kBlock];
}

__global__ void DequantizeKernel(const uint8_t* w, int64_t N, int64_t K, const float* scales,
                                 Fp8Scaling scaling, bf16* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * K) return;
  const int64_t n = i / K, k = i % K;
  out[i] = __float2bfloat16(Fp8ToF32(w[i]) * ScaleAt(scales, scaling, n, k, K));
}

constexpr int kWarps = 4;

// One warp per output column n; lane l takes 16 consecutive k at a time.
__global__ void Fp8SmallMKernel(const bf16* x, int M, const uint8_t* w, int64_t N, int64_t K,
                                const float* scales, Fp8Scaling scaling, float* y_f32,
                                bf16* y_bf16) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  float acc[kFp8SmallM];
#pragma unroll
  for (int m = 0; m < kFp8SmallM; ++m) acc[m] = 0.0f;
  const uint8_t* wr = w + n * K;
  for (int64_t k = int64_t(lane) * 16; k < K; k += 32 * 16) {
    const uint4 packed = *reinterpret_cast<const uint4*>(wr + k);
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&packed);
    // 16 | 128, so the chunk lies in one scale block.
    const float s = ScaleAt(scales, scaling, n, k, K);
    float wv[16];
#pragma unroll
    for (int q = 0; q < 16; ++q) wv[q] = Fp8ToF32(bytes[q]) * s;
#pragma unroll
    for (int m = 0; m < kFp8SmallM; ++m) {
      if (m < M) {
        const uint4* xp = reinterpret_cast<const uint4*>(x + int64_t(m) * K + k);
        const uint4 x0 = xp[0], x1 = xp[1];
        const bf16* xa = reinterpret_cast<const bf16*>(&x0);
        const bf16* xb = reinterpret_cast<const bf16*>(&x1);
        float sum = 0.0f;
#pragma unroll
        for (int q = 0; q < 8; ++q) sum += __bfloat162float(xa[q]) * wv[q];
#pragma unroll
        for (int q = 0; q < 8; ++q) sum += __bfloat162float(xb[q]) * wv[8 + q];
        acc[m] += sum;
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kFp8SmallM; ++m) {
    if (m < M) {
      const float v = WarpSum(acc[m]);
      if (lane == 0) {
        if (y_f32 != nullptr) {
          y_f32[int64_t(m) * N + n] = v;
        } else {
          y_bf16[int64_t(m) * N + n] = __float2bfloat16(v);
        }
      }
    }
  }
}

absl::Status CheckFp8(const char* op, const uint8_t* w, int64_t N, int64_t K,
                      const float* scales) {
  RETURN_IF_ERROR(CheckPositive(op, "N", N));
  RETURN_IF_ERROR(CheckPositive(op, "K", K));
  RETURN_IF_ERROR(CheckNonNull(op, "w", w));
  RETURN_IF_ERROR(CheckNonNull(op, "scales", scales));
  return absl::OkStatus();
}

}  // namespace

absl::Status DequantizeFp8(const uint8_t* w, int64_t N, int64_t K, const float* scales,
                           Fp8Scaling scaling, bf16* w_out, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckFp8("DequantizeFp8", w, N, K, scales));
  RETURN_IF_ERROR(CheckNonNull("DequantizeFp8", "w_out", w_out));
  DequantizeKernel<<<unsigned(CeilDiv(N * K, 256)), 256, 0, stream>>>(w, N, K, scales, scaling,
                                                                     w_out);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

absl::Status Fp8MatMulSmallM(const bf16* x, int64_t M, const uint8_t* w, int64_t N, int64_t K,
                             const float* scales, Fp8Scaling scaling, float* y_f32, bf16* y_bf16,
                             cudaStream_t stream) {
  RETURN_IF_ERROR(CheckFp8("Fp8MatMulSmallM", w, N, K, scales));
  RETURN_IF_ERROR(CheckNonNull("Fp8MatMulSmallM", "x", x));
  if (M <= 0 || M > kFp8SmallM) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fp8MatMulSmallM: M must be in [1, ", kFp8SmallM, "], got ", M));
  }
  if (K % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fp8MatMulSmallM: K must be a multiple of 16, got ", K));
  }
  if ((y_f32 == nullptr) == (y_bf16 == nullptr)) {
    return absl::InvalidArgumentError("Fp8MatMulSmallM: exactly one of y_f32 / y_bf16");
  }
  Fp8SmallMKernel<<<unsigned(CeilDiv(N, kWarps)), 32 * kWarps, 0, stream>>>(
      x, int(M), w, N, K, scales, scaling, y_f32, y_bf16);
  FACET_CUDA_RETURN_LAUNCH();
  return absl::OkStatus();
}

}  // namespace facet::cuda
