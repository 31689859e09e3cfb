#include "core/half.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace facet {
namespace {

TEST(HalfTest, Bf16RoundTripsExactValues) {
  for (float v : {0.0f, 1.0f, -2.5f, 0.15625f, 65504.0f, -1e-20f}) {
    const float r = RoundBf16(v);
    EXPECT_EQ(RoundBf16(r), r) << v;  // idempotent
  }
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f)), 1.0f);
  EXPECT_EQ(F32ToBf16(1.0f).bits, 0x3f80);
}

TEST(HalfTest, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly half way between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(RoundBf16(1.0f + std::ldexp(1.0f, -8)), 1.0f);
  // 1 + 3*2^-8 ties between 1+2^-7 (odd mantissa) and 1+2^-6: goes to 1+2^-6.
  EXPECT_EQ(RoundBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
  // sqrt(3072) = 55.4256 becomes 55.5 in bf16 (spec §1.1).
  EXPECT_EQ(RoundBf16(std::sqrt(3072.0f)), 55.5f);
  EXPECT_EQ(RoundBf16(std::sqrt(5376.0f)), 73.5f);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::nanf("")))));
}

TEST(HalfTest, Fp16MatchesIeee) {
  EXPECT_EQ(F32ToFp16(1.0f).bits, 0x3c00);
  EXPECT_EQ(F32ToFp16(-2.0f).bits, 0xc000);
  EXPECT_EQ(F32ToFp16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(F32ToFp16(1e6f).bits, 0x7c00);                    // overflow to inf
  EXPECT_EQ(F32ToFp16(std::ldexp(1.0f, -24)).bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(Fp16ToF32(fp16{0x0001}), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16ToF32(fp16{0x3555}), 0.333251953125f);
  // Every finite fp16 value survives a round trip through fp32.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    fp16 h{uint16_t(b)};
    float f = Fp16ToF32(h);
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToFp16(f).bits, h.bits) << b;
  }
}

TEST(HalfTest, Fp8E4M3) {
  EXPECT_EQ(Fp8E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4M3ToF32(0x38), 1.0f);
  EXPECT_EQ(Fp8E4M3ToF32(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToF32(0x7f)));
  for (int c = 0; c < 256; ++c) {
    float f = Fp8E4M3ToF32(uint8_t(c));
    if (std::isnan(f) || f == 0.0f) continue;
    EXPECT_EQ(F32ToFp8E4M3(f), c);
  }
  EXPECT_EQ(F32ToFp8E4M3(1e9f), 0x7e);  // saturates
}

}  // namespace
}  // namespace facet
