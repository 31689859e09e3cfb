// ggml block layouts shared by the reference code (quant.cc) and the
// matmul kernels (quant_matmul.cc). Internal to kernels/cpu. Layouts:
// ggml/src/ggml-common.h (block_q8_0, block_q4_0, block_q5_0, block_q4_K,
// block_q5_K, block_q6_K).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/weight.h"

namespace facet::quant_internal {

constexpr int kQK = 256;  // K-quant super-block
constexpr int kQ32 = 32;  // Q8_0 / Q4_0 / Q5_0 block

struct BlockQ8_0 {
  uint16_t d;  // fp16
  int8_t qs[32];
};
struct BlockQ4_0 {
  uint16_t d;       // fp16
  uint8_t qs[16];   // value j: low nibble of qs[j]; value j+16: high nibble; minus 8
};
struct BlockQ5_0 {
  uint16_t d;      // fp16
  uint8_t qh[4];   // bit j of the little-endian u32: 5th bit of value j
  uint8_t qs[16];  // low 4 bits as in Q4_0; value = d·(q − 16)
};
struct BlockQ4_K {
  uint16_t d;            // fp16 scale of the 6-bit scales
  uint16_t dmin;         // fp16 scale of the 6-bit mins
  uint8_t scales[12];    // 8 × (6-bit scale, 6-bit min), see ScaleMinK4 (quant.cc)
  uint8_t qs[128];       // 64-value chunk c: qs[32c + l] low = value 64c+l, high = 64c+32+l
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];   // bit 2c of qh[l]: 5th bit of value 64c+l; bit 2c+1: of 64c+32+l
  uint8_t qs[128];  // low 4 bits, as in Q4_K
};
struct BlockQ6_K {
  uint8_t ql[128];    // low 4 bits
  uint8_t qh[64];     // high 2 bits
  int8_t scales[16];  // one per 16 values
  uint16_t d;         // fp16
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// Activations quantized for the integer dot products: per token, `cols`
// values in the int8 range with one float scale per block of `qb`, and the
// sums of every 16 and every 32 consecutive values (for the K-quant mins and
// the Q6_K/Q4_0/Q5_0 code offsets; |sum| <= 32·127 fits int16). The values
// are int8 for the formats whose dot products pair unsigned weight codes
// with signed activations (pmaddubsw), int16 for Q8_0, whose weights are
// signed too.
struct QuantActs {
  int64_t cols = 0;
  int qb = 0;
  const int8_t* q8 = nullptr;       // [tokens, cols], all formats but Q8_0
  const int16_t* q16 = nullptr;     // [tokens, cols], Q8_0
  const float* d = nullptr;         // [tokens, cols / qb]
  const int16_t* bsum16 = nullptr;  // [tokens, cols / 16]
  const int16_t* bsum32 = nullptr;  // [tokens, cols / 32]
};

inline bool WideActs(WeightFormat f) { return f == WeightFormat::kQ8_0; }

// Round to nearest (ties to even) and clamp to [lo, hi]; NaN gives lo.
inline int RoundClamp(float v, int lo, int hi) {
  const float r = std::nearbyint(v);
  if (!(r >= float(lo))) return lo;
  if (r > float(hi)) return hi;
  return int(r);
}

// max |x_i| over n values (0 for n = 0).
inline float AbsMax(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

}  // namespace facet::quant_internal
