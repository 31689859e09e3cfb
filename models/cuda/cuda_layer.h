// One decoder layer's weights on the device (internal to models/cuda/).
// Matrices bf16 in PyTorch [out, in] order, vectors fp32 with Gemma 2/3's
// "1 + w" already folded (models/weights.h), so every norm is plus_one=false.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/runtime.h"
#include "models/config.h"
#include "models/weights.h"

namespace facet {

struct CudaLayer {
  cuda::DeviceBuffer qkv;      // [(Nq + 2·Nkv)·D, H]; K = V layers: [(Nq + Nkv)·D, H]
  cuda::DeviceBuffer o;        // [H, Nq·D]
  cuda::DeviceBuffer gate_up;  // [2·I, H]: gate rows, then up rows
  cuda::DeviceBuffer down;     // [H, I]
  cuda::DeviceBuffer attn_norm, post_attn_norm, ffn_norm, post_ffn_norm;  // [H] f32
  cuda::DeviceBuffer q_norm, k_norm;  // [D] f32; empty without QK-norm (Gemma 2)
  cuda::DeviceBuffer inv_freq;        // [D/2] f32 rotary frequencies (0: unrotated pair)
  float layer_scalar = 1.0f;          // Gemma 4; 1 elsewhere

  // Gemma 4 mixture of experts (empty otherwise).
  cuda::DeviceBuffer ffn_norm_2, post_ffn_norm_1, post_ffn_norm_2, router_scale;  // [H] f32
  cuda::DeviceBuffer per_expert_scale;  // [E] f32
  cuda::DeviceBuffer router;            // [E, H]
  cuda::DeviceBuffer experts_gate_up;   // [E·2F, H]
  cuda::DeviceBuffer experts_down;      // [E·H, F]
};

// Uploads layer `index`; adds the matrices' bytes to *weight_bytes.
absl::StatusOr<std::unique_ptr<CudaLayer>> UploadLayer(const ModelConfig& config, int index,
                                                       const LayerWeights& w,
                                                       int64_t* weight_bytes);
absl::StatusOr<cuda::DeviceBuffer> UploadEmbedding(const WeightRef& w, int64_t* weight_bytes);
absl::StatusOr<cuda::DeviceBuffer> UploadNorm(const std::vector<float>& v, size_t n);

}  // namespace facet
