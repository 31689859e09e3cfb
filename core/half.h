// bf16 / fp16 / fp8 <-> fp32 conversions. Round-to-nearest-even, NaN kept
// quiet; these match torch's `.to(torch.bfloat16)` / `.half()` bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

namespace facet {

struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float Bf16ToF32(bf16 h) { return BitsFloat(uint32_t(h.bits) << 16); }

inline bf16 F32ToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

// Rounds an fp32 value to the nearest bf16 and back (emulates bf16 storage).
inline float RoundBf16(float f) { return Bf16ToF32(F32ToBf16(f)); }

float Fp16ToF32(fp16 h);
fp16 F32ToFp16(float f);
// OCP FP8 E4M3 (fn variant: no infinities, 0x7f/0xff are NaN), as on sm_90.
float Fp8E4M3ToF32(uint8_t v);
uint8_t F32ToFp8E4M3(float f);

}  // namespace facet
