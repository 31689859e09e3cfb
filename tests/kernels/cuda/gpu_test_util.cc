#include "tests/kernels/cuda/gpu_test_util.h"

#include <algorithm>

namespace facet::cuda::testing {

std::vector<float> Random(size_t n, uint32_t seed, float scale, bool bf16_exact) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_exact ? RoundBf16(dist(rng)) : dist(rng);
  return v;
}

std::vector<uint16_t> ToBf16Bits(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = F32ToBf16(v[i]).bits;
  return out;
}

std::vector<float> FromBf16Bits(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    facet::bf16 h;
    h.bits = v[i];
    out[i] = Bf16ToF32(h);
  }
  return out;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double rel_tol,
                double abs_tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t worst = 0, bad = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double tol = abs_tol + rel_tol * std::fabs(double(want[i]));
    if (!(err <= tol)) ++bad;
    const double excess = std::isnan(err) ? 1e30 : err - tol;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " elements out of tolerance; worst at " << worst << ": got " << got[worst]
                     << ", want " << want[worst] << " (rel " << rel_tol << ", abs " << abs_tol << ")";
}

}  // namespace facet::cuda::testing
