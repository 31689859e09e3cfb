// CPU twins of the fused CUDA kernels that have no single counterpart in
// kernels/cpu/ops_ref.h: plain C++ (no CUDA, no SIMD), composed from the
// reference ops so their semantics are the CPU engine's by construction.
// Built into the CPU suite (tests/kernels/cuda/twins_test.cc checks them
// today) and into facet_gpu_tests, which compares each kernel against its twin.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace facet::cuda::twin {

// AddRmsNorm (kernels/cuda/ops.h) on fp32 host rows: resid = (resid +
// RmsNorm(branch, w_post)) · resid_scale; next = RmsNorm(resid, w_next)
// (next may be null; w_post null = plain add).
void AddRmsNorm(const float* branch, const float* w_post, float* resid, float resid_scale,
                const float* w_next, float* next, int64_t rows, int64_t dim, float eps,
                bool plus_one);

// MoeBlockEnd (Gemma 4 MoE block end) on fp32 host rows: f =
// RmsNorm(RmsNorm(dense, w1) + RmsNorm(experts, w2), w_post); resid =
// (resid + f) · resid_scale; next = RmsNorm(resid, w_next) when non-null.
void MoeBlockEnd(const float* dense, const float* w1, const float* experts, const float* w2,
                 const float* w_post, float* resid, float resid_scale, const float* w_next,
                 float* next, int64_t rows, int64_t dim, float eps);

// cpu::RopeInvFreq (kernels/cpu/ops.cc, which the GPU binary cannot link:
// it is Highway code), restated in plain C++; twins_test checks the two agree
// bit for bit. INVALID_ARGUMENT where the CPU version CHECK-fails.
absl::StatusOr<std::vector<float>> RopeInvFreq(int64_t head_dim, float theta, float linear_factor,
                                               float partial_rotary_factor, bool proportional);

// QkNormRopeKv on host buffers, same layout and meaning as QkvRopeParams.
struct QkvRope {
  int64_t tokens = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  const float* qkv = nullptr;  // [T, (Nq + 2·Nkv)·D], or [T, (Nq + Nkv)·D] when k_eq_v
  bool k_eq_v = false;
  const float* q_norm = nullptr;  // [D] or null
  const float* k_norm = nullptr;
  bool v_norm = false;
  bool plus_one = false;
  float eps = 1e-6f;
  const int32_t* positions = nullptr;     // [T]
  const float* inv_freq = nullptr;        // [D/2]
  const int64_t* slot_mapping = nullptr;  // [T]
  int64_t num_slots = 0;
  float* q_out = nullptr;    // [T, Nq, D]
  float* k_cache = nullptr;  // [num_slots, Nkv·D]
  float* v_cache = nullptr;
};
// INVALID_ARGUMENT for a slot outside [0, num_slots) other than negative
// (skip), after writing every valid token.
absl::Status QkNormRopeKv(const QkvRope& p);

// The MoE permutation (MoePermute) as plain vectors.
struct MoePermutation {
  std::vector<int32_t> offsets;      // [E + 1]
  std::vector<int32_t> row_src;      // [max_rows], -1 padding
  std::vector<int32_t> pair_row;     // [T·k]
  std::vector<int32_t> tile_expert;  // [max_tiles], -1 past the end
};
absl::StatusOr<MoePermutation> MoePermute(const int32_t* ids, int64_t T, int64_t k, int64_t E,
                                          int64_t tile_rows, int64_t max_tiles);

// Dequantized e4m3 weight [N, K] in fp32: per-channel scales [N] or
// 128×128 block scales [ceil(N/128), ceil(K/128)].
std::vector<float> DequantizeFp8(const uint8_t* w, int64_t N, int64_t K, const float* scales,
                                 bool block128);

// The CPU sampler's semantics (worker/sampler.h) without its speed tricks:
// argmax when temperature is 0 (or the maximum is not finite), else the
// Gumbel-max over tokens kept by top-k (ties kept), top-p (in best-first
// order, a token is kept while the mass before it is < top_p · z) and min-p,
// with the noise of kernels/cuda/sample_hash.h. No repetition penalty.
// twins_test checks it against facet::Sampler; the GPU test checks the device
// sampler against it.
struct SampleArgs {
  float temperature = 0;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  int64_t step = 0;
};
int32_t Sample(const float* logits, int64_t vocab, const SampleArgs& a);

}  // namespace facet::cuda::twin
