#include "core/half.h"

#include <cmath>

namespace facet {

float Fp16ToF32(fp16 h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t man = h.bits & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return BitsFloat(sign);
    // Subnormal: value = man * 2^-24.
    float v = std::ldexp(float(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return BitsFloat(sign | 0x7f800000u | (man << 13));
  return BitsFloat(sign | ((exp + 112) << 23) | (man << 13));
}

fp16 F32ToFp16(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return fp16{uint16_t(sign | 0x7e00u)};  // NaN
  if (absu >= 0x477ff000u) return fp16{uint16_t(sign | 0x7c00u)};  // overflow -> inf
  if (absu < 0x38800000u) {
    // Result is subnormal or zero: round |f| * 2^24 to an integer (RNE).
    const float a = BitsFloat(absu);
    const float scaled = a * 16777216.0f;  // exact: power of two
    const uint32_t m = uint32_t(std::nearbyint(scaled));
    return fp16{uint16_t(sign | m)};
  }
  uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);  // RNE at bit 13
  r -= 112u << 23;
  return fp16{uint16_t(sign | (r >> 13))};
}

float Fp8E4M3ToF32(uint8_t v) {
  const bool neg = v & 0x80;
  const int exp = (v >> 3) & 0xf;
  const int man = v & 0x7;
  float out;
  if (exp == 0xf && man == 0x7) {
    out = std::nanf("");
  } else if (exp == 0) {
    out = std::ldexp(float(man), -9);  // subnormal: man/8 * 2^-6
  } else {
    out = std::ldexp(1.0f + man / 8.0f, exp - 7);
  }
  return neg ? -out : out;
}

uint8_t F32ToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;  // saturate to max finite, as cuda's satfinite
  // Search the 127 finite magnitudes for the nearest (ties to even code).
  uint8_t best = 0;
  float best_err = a;
  for (uint8_t c = 1; c < 0x7f; ++c) {
    const float err = std::fabs(Fp8E4M3ToF32(c) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  return sign | best;
}

}  // namespace facet
