// ggml block formats: dequantization, reference quantizers and the
// block-reading matmul. Layouts: ggml/src/ggml-common.h (block_q8_0,
// block_q4_0, block_q4_K, block_q5_K, block_q6_K); values:
// ggml/src/ggml-quants.c dequantize_row_{q8_0,q4_0,q4_K,q5_K,q6_K} and
// get_scale_min_k4. The matmul mirrors ggml's vec_dot_qX_K_q8_K idea
// (int8 activations, integer dot per sub-block, one float multiply per
// block) but is our own Highway code.

#include "kernels/cpu/hwy_targets.h"  // before any Highway header

#ifndef FACET_KERNELS_CPU_QUANT_SHARED_
#define FACET_KERNELS_CPU_QUANT_SHARED_

#include "kernels/cpu/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/half.h"
#include "core/status.h"

namespace facet {
namespace quant_internal {

constexpr int kQK = 256;  // K-quant super-block
constexpr int kQ32 = 32;  // Q8_0 / Q4_0 block

struct BlockQ8_0 {
  uint16_t d;  // fp16
  int8_t qs[32];
};
struct BlockQ4_0 {
  uint16_t d;       // fp16
  uint8_t qs[16];   // value j: low nibble of qs[j]; value j+16: high nibble; minus 8
};
struct BlockQ4_K {
  uint16_t d;            // fp16 scale of the 6-bit scales
  uint16_t dmin;         // fp16 scale of the 6-bit mins
  uint8_t scales[12];    // 8 × (6-bit scale, 6-bit min), see ScaleMinK4
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
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

inline std::string FormatName(WeightFormat f) { return std::string(WeightFormatName(f)); }

inline float H(uint16_t bits) { return Fp16ToF32(fp16{bits}); }

// 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block: the first
// four sit in the low 6 bits of bytes 0-3 / 4-7; the last four keep their low
// 4 bits in bytes 8-11 and their top 2 bits in the spare top bits of bytes
// 0-3 (scales) / 4-7 (mins). Same as ggml's get_scale_min_k4.
inline void ScaleMinK4(int j, const uint8_t* q, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

inline void PackScaleMinK4(const int* sc, const int* mn, uint8_t* q) {
  std::memset(q, 0, 12);
  for (int j = 0; j < 4; ++j) {
    q[j] = uint8_t(sc[j] & 63) | uint8_t((sc[j + 4] >> 4) << 6);
    q[j + 4] = uint8_t(mn[j] & 63) | uint8_t((mn[j + 4] >> 4) << 6);
    q[j + 8] = uint8_t(sc[j + 4] & 0xF) | uint8_t((mn[j + 4] & 0xF) << 4);
  }
}

// Activations quantized for the integer dot products: per token, `cols`
// int16 values (int8 range) in blocks of `qb` with one float scale each, and
// the sums of every 16 and every 32 consecutive values (for the K-quant mins
// and offsets; |sum| <= 32·127 fits int16).
struct QuantActs {
  int64_t cols = 0;
  int qb = 0;
  const int16_t* q = nullptr;       // [tokens, cols]
  const float* d = nullptr;         // [tokens, cols / qb]
  const int16_t* bsum16 = nullptr;  // [tokens, cols / 16]
  const int16_t* bsum32 = nullptr;  // [tokens, cols / 32]
};

}  // namespace quant_internal
}  // namespace facet

#endif  // FACET_KERNELS_CPU_QUANT_SHARED_

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/quant.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace facet {
namespace quant_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Widening int16 multiply-add into int32 lanes. Highway may spread the
// products over two accumulators on some targets; callers add both.
template <class D32, class V16>
HWY_INLINE hn::Vec<D32> MulAcc(D32 d32, V16 a, V16 b, hn::Vec<D32> acc, hn::Vec<D32>& acc1) {
  return hn::ReorderWidenMulAccumulate(d32, a, b, acc, acc1);
}

// fp16 at p (any alignment) to float; one vcvtph2ps on x86 targets.
HWY_INLINE float LoadF16(const uint8_t* p) {
  const hn::CappedTag<hwy::float16_t, 1> dh;
  const hn::Rebind<float, decltype(dh)> df;
  return hn::GetLane(hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p))));
}

// All eight 6-bit scales and mins of a Q4_K/Q5_K block at once, by 32-bit
// word: the same bit layout ScaleMinK4 reads one sub-block at a time.
HWY_INLINE void UnpackScaleMinK4(const uint8_t* q, uint8_t sc[8], uint8_t mn[8]) {
  uint32_t u[3];
  std::memcpy(u, q, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3fu;
  const uint32_t mn_lo = u[1] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u);
  const uint32_t mn_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(mn, &mn_lo, 4);
  std::memcpy(mn + 4, &mn_hi, 4);
}

float DotQ8_0(const uint8_t* row, int64_t nb, const int16_t* xq, const float* xd) {
  const hn::CappedTag<int16_t, 32> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t N = hn::Lanes(d16);
  auto facc = hn::Zero(df);
  for (int64_t b = 0; b < nb; ++b, xq += kQ32, row += sizeof(BlockQ8_0)) {
    const auto* qs = reinterpret_cast<const int8_t*>(row + 2);
    auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
    for (size_t k = 0; k < size_t(kQ32); k += N) {
      s0 = MulAcc(d32, hn::PromoteTo(d16, hn::LoadU(d8, qs + k)), hn::LoadU(d16, xq + k), s0, s1);
    }
    facc = hn::MulAdd(hn::ConvertTo(df, hn::Add(s0, s1)), hn::Set(df, LoadF16(row) * xd[b]), facc);
  }
  return hn::GetLane(hn::SumOfLanes(df, facc));
}

float DotQ4_0(const uint8_t* row, int64_t nb, const int16_t* xq, const float* xd) {
  const hn::CappedTag<int16_t, 16> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<uint8_t, decltype(d16)> d8;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t N = hn::Lanes(d16);
  const auto m15 = hn::Set(d16, 15);
  const auto eight = hn::Set(d16, 8);
  auto facc = hn::Zero(df);
  for (int64_t b = 0; b < nb; ++b, xq += kQ32, row += sizeof(BlockQ4_0)) {
    const uint8_t* qs = row + 2;
    auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
    for (size_t k = 0; k < 16; k += N) {
      const auto w = hn::PromoteTo(d16, hn::LoadU(d8, qs + k));
      s0 = MulAcc(d32, hn::Sub(hn::And(w, m15), eight), hn::LoadU(d16, xq + k), s0, s1);
      s0 = MulAcc(d32, hn::Sub(hn::ShiftRight<4>(w), eight), hn::LoadU(d16, xq + 16 + k), s0, s1);
    }
    facc = hn::MulAdd(hn::ConvertTo(df, hn::Add(s0, s1)), hn::Set(df, LoadF16(row) * xd[b]), facc);
  }
  return hn::GetLane(hn::SumOfLanes(df, facc));
}

// Q4_K and Q5_K share everything but the 5th bit. Per 32-value sub-block j:
// value = d·sc_j·q − dmin·m_j, so Σ value·x = d·dx·Σ (sc_j·q)·xq −
// dmin·dx·Σ_j m_j·Σxq_j; the second sum uses the activation block sums.
// sc_j·q ≤ 63·31 fits int16, so the scale is applied before the int16
// multiply-add and one int32 accumulator serves the whole block.
template <bool kFiveBit>
float DotQ45K(const uint8_t* row, int64_t nb, const int16_t* xq, const float* xd,
              const int16_t* bsum32) {
  using Block = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  const hn::CappedTag<int16_t, 32> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<uint8_t, decltype(d16)> d8;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t N = hn::Lanes(d16);
  const auto m15 = hn::Set(d16, 15);
  const auto one = hn::Set(d16, 1);
  auto facc = hn::Zero(df);
  float mins = 0.0f;
  for (int64_t b = 0; b < nb; ++b, xq += kQK, bsum32 += 8) {
    const auto& blk = reinterpret_cast<const Block*>(row)[b];
    uint8_t sc[8], mn[8];
    UnpackScaleMinK4(blk.scales, sc, mn);
    int32_t msum = 0;
    for (int j = 0; j < 8; ++j) msum += int32_t(mn[j]) * bsum32[j];
    auto acc0 = hn::Zero(d32), acc1 = hn::Zero(d32);
    for (int c = 0; c < 4; ++c) {
      const auto scl = hn::Set(d16, sc[2 * c]);
      const auto sch = hn::Set(d16, sc[2 * c + 1]);
      const int16_t* xl = xq + 64 * c;
      for (size_t k = 0; k < 32; k += N) {
        const auto w = hn::PromoteTo(d16, hn::LoadU(d8, blk.qs + 32 * c + k));
        auto lo = hn::And(w, m15);
        auto hi = hn::ShiftRight<4>(w);
        if constexpr (kFiveBit) {
          const auto h = hn::PromoteTo(d16, hn::LoadU(d8, blk.qh + k));
          lo = hn::Or(lo, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c), one)));
          hi = hn::Or(hi, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c + 1), one)));
        }
        acc0 = MulAcc(d32, hn::Mul(lo, scl), hn::LoadU(d16, xl + k), acc0, acc1);
        acc0 = MulAcc(d32, hn::Mul(hi, sch), hn::LoadU(d16, xl + 32 + k), acc0, acc1);
      }
    }
    const float dx = xd[b];
    facc = hn::MulAdd(hn::ConvertTo(df, hn::Add(acc0, acc1)), hn::Set(df, LoadF16(row + b * sizeof(Block)) * dx),
                      facc);
    mins += LoadF16(row + b * sizeof(Block) + 2) * dx * float(msum);
  }
  return hn::GetLane(hn::SumOfLanes(df, facc)) - mins;
}

// Q6_K: value = d·sc_g·(q − 32) per 16-value group g, q in [0, 64). The −32
// is taken out with the activation group sums; sc_g·q fits int16.
float DotQ6K(const uint8_t* row, int64_t nb, const int16_t* xq, const float* xd,
             const int16_t* bsum16) {
  const hn::CappedTag<int16_t, 16> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<uint8_t, decltype(d16)> d8;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t N = hn::Lanes(d16);
  const auto m15 = hn::Set(d16, 15);
  const auto m3 = hn::Set(d16, 3);
  auto facc = hn::Zero(df);
  float offs = 0.0f;
  const auto* blk = reinterpret_cast<const BlockQ6_K*>(row);
  for (int64_t b = 0; b < nb; ++b, xq += kQK, bsum16 += 16) {
    const int8_t* sc = blk[b].scales;
    int32_t osum = 0;
    for (int g = 0; g < 16; ++g) osum += int32_t(sc[g]) * bsum16[g];
    auto acc0 = hn::Zero(d32), acc1 = hn::Zero(d32);
    for (int n = 0; n < 2; ++n) {
      const uint8_t* ql = blk[b].ql + 64 * n;
      const uint8_t* qh = blk[b].qh + 32 * n;
      const int16_t* x = xq + 128 * n;
      const int8_t* s = sc + 8 * n;
      for (size_t l = 0; l < 32; l += N) {
        const auto a = hn::PromoteTo(d16, hn::LoadU(d8, ql + l));
        const auto c = hn::PromoteTo(d16, hn::LoadU(d8, ql + 32 + l));
        const auto h = hn::PromoteTo(d16, hn::LoadU(d8, qh + l));
        const auto q1 = hn::Or(hn::And(a, m15), hn::ShiftLeft<4>(hn::And(h, m3)));
        const auto q2 = hn::Or(hn::And(c, m15), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(h), m3)));
        const auto q3 = hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(h), m3)));
        const auto q4 = hn::Or(hn::ShiftRight<4>(c), hn::ShiftLeft<4>(hn::ShiftRight<6>(h)));
        const int is = int(l / 16);
        acc0 = MulAcc(d32, hn::Mul(q1, hn::Set(d16, s[is])), hn::LoadU(d16, x + l), acc0, acc1);
        acc0 = MulAcc(d32, hn::Mul(q2, hn::Set(d16, s[is + 2])), hn::LoadU(d16, x + 32 + l), acc0, acc1);
        acc0 = MulAcc(d32, hn::Mul(q3, hn::Set(d16, s[is + 4])), hn::LoadU(d16, x + 64 + l), acc0, acc1);
        acc0 = MulAcc(d32, hn::Mul(q4, hn::Set(d16, s[is + 6])), hn::LoadU(d16, x + 96 + l), acc0, acc1);
      }
    }
    const float dd = LoadF16(reinterpret_cast<const uint8_t*>(&blk[b].d)) * xd[b];
    facc = hn::MulAdd(hn::ConvertTo(df, hn::Add(acc0, acc1)), hn::Set(df, dd), facc);
    offs += dd * 32.0f * float(osum);
  }
  return hn::GetLane(hn::SumOfLanes(df, facc)) - offs;
}

// y[t·ldy + r] for rows [r0, r1) and tokens [t0, t1). Rows outermost so a
// weight row stays in L1 while every token reads it.
void MatMulRows(WeightFormat f, const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1,
                const QuantActs& a, int64_t t0, int64_t t1, float* y, int64_t ldy) {
  const int64_t nb = a.cols / a.qb;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t t = t0; t < t1; ++t) {
      const int16_t* xq = a.q + t * a.cols;
      const float* xd = a.d + t * nb;
      const int16_t* bs16 = a.bsum16 + t * (a.cols / 16);
      const int16_t* bs32 = a.bsum32 + t * (a.cols / 32);
      float v = 0.0f;
      switch (f) {
        case WeightFormat::kQ8_0: v = DotQ8_0(row, nb, xq, xd); break;
        case WeightFormat::kQ4_0: v = DotQ4_0(row, nb, xq, xd); break;
        case WeightFormat::kQ4_K: v = DotQ45K<false>(row, nb, xq, xd, bs32); break;
        case WeightFormat::kQ5_K: v = DotQ45K<true>(row, nb, xq, xd, bs32); break;
        case WeightFormat::kQ6_K: v = DotQ6K(row, nb, xq, xd, bs16); break;
        default: break;  // rejected by the caller
      }
      y[t * ldy + r] = v;
    }
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace quant_internal
}  // namespace facet
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace facet {
namespace quant_internal {

HWY_EXPORT(MatMulRows);
HWY_EXPORT(TargetName);

// Smallest fp16 >= v (v >= 0), so a scale computed from a maximum never
// shrinks when stored and no value has to be clipped.
absl::StatusOr<uint16_t> RoundUpFp16(float v) {
  if (!(v >= 0.0f) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat("scale ", v, " is not a finite non-negative number"));
  }
  uint16_t bits = F32ToFp16(v).bits;
  if (H(bits) < v) ++bits;
  if (!std::isfinite(H(bits))) {
    return absl::InvalidArgumentError(absl::StrCat("scale ", v, " does not fit in fp16"));
  }
  return bits;
}

int RoundClamp(float v, int lo, int hi) {
  const float r = std::nearbyint(v);
  if (!(r >= float(lo))) return lo;  // also catches NaN
  if (r > float(hi)) return hi;
  return int(r);
}

float AbsMax(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

absl::Status QuantizeQ8_0(const float* x, BlockQ8_0* y) {
  ASSIGN_OR_RETURN(y->d, RoundUpFp16(AbsMax(x, kQ32) / 127.0f));
  const float d = H(y->d);
  const float id = d > 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQ32; ++i) y->qs[i] = int8_t(RoundClamp(x[i] * id, -127, 127));
  return absl::OkStatus();
}

// Scale = (value of largest magnitude) / −8 as in ggml, so that value lands
// exactly on −8 and the other sign gets up to +7.
absl::Status QuantizeQ4_0(const float* x, BlockQ4_0* y) {
  float vmax = 0.0f;
  for (int i = 0; i < kQ32; ++i) {
    if (std::fabs(x[i]) > std::fabs(vmax)) vmax = x[i];
  }
  ASSIGN_OR_RETURN(uint16_t dbits, RoundUpFp16(std::fabs(vmax) / 8.0f));
  if (vmax > 0.0f) dbits |= 0x8000;  // d = vmax / −8
  y->d = dbits;
  const float d = H(dbits);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int q[kQ32];
  for (int i = 0; i < kQ32; ++i) q[i] = RoundClamp(x[i] * id + 8.0f, 0, 15);
  for (int j = 0; j < 16; ++j) y->qs[j] = uint8_t(q[j] | (q[j + 16] << 4));
  return absl::OkStatus();
}

// Q4_K / Q5_K with `levels` = 15 / 31: per 32-value sub-block the range
// [−min_j, −min_j + levels·scale_j] must contain every value; min and scale
// are rounded up so it always does.
absl::Status QuantizeK45(const float* x, int levels, uint16_t* dbits, uint16_t* dminbits,
                         uint8_t* scales, int* q) {
  float mn[8], top[8];
  float max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float lo = 0.0f, hi = -INFINITY;
    for (int i = 0; i < 32; ++i) {
      lo = std::min(lo, x[32 * j + i]);
      hi = std::max(hi, x[32 * j + i]);
    }
    mn[j] = -lo;
    top[j] = hi;
    max_min = std::max(max_min, mn[j]);
  }
  ASSIGN_OR_RETURN(*dminbits, RoundUpFp16(max_min / 63.0f));
  const float dmin = H(*dminbits);
  int m[8], sc[8];
  float need[8], max_need = 0.0f;
  for (int j = 0; j < 8; ++j) {
    m[j] = dmin > 0.0f ? std::min(63, int(std::ceil(mn[j] / dmin))) : 0;
    need[j] = std::max(0.0f, top[j] + dmin * float(m[j]));
    max_need = std::max(max_need, need[j]);
  }
  ASSIGN_OR_RETURN(*dbits, RoundUpFp16(max_need / float(levels * 63)));
  const float d = H(*dbits);
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0.0f ? std::min(63, int(std::ceil(need[j] / (float(levels) * d)))) : 0;
    const float scale = d * float(sc[j]);
    const float offset = dmin * float(m[j]);
    for (int i = 0; i < 32; ++i) {
      q[32 * j + i] = scale > 0.0f ? RoundClamp((x[32 * j + i] + offset) / scale, 0, levels) : 0;
    }
  }
  PackScaleMinK4(sc, m, scales);
  return absl::OkStatus();
}

absl::Status QuantizeQ4_K(const float* x, BlockQ4_K* y) {
  int q[kQK];
  RETURN_IF_ERROR(QuantizeK45(x, 15, &y->d, &y->dmin, y->scales, q));
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) y->qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
  return absl::OkStatus();
}

absl::Status QuantizeQ5_K(const float* x, BlockQ5_K* y) {
  int q[kQK];
  RETURN_IF_ERROR(QuantizeK45(x, 31, &y->d, &y->dmin, y->scales, q));
  std::memset(y->qh, 0, sizeof(y->qh));
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      y->qs[32 * c + l] = uint8_t((lo & 15) | ((hi & 15) << 4));
      y->qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
  return absl::OkStatus();
}

// Symmetric per 16-value group with q in [−31, 31] (the format allows −32).
absl::Status QuantizeQ6_K(const float* x, BlockQ6_K* y) {
  float s[16], max_s = 0.0f;
  for (int g = 0; g < 16; ++g) {
    s[g] = AbsMax(x + 16 * g, 16) / 31.0f;
    max_s = std::max(max_s, s[g]);
  }
  ASSIGN_OR_RETURN(y->d, RoundUpFp16(max_s / 127.0f));
  const float d = H(y->d);
  int q[kQK];
  for (int g = 0; g < 16; ++g) {
    const int sc = d > 0.0f ? std::min(127, int(std::ceil(s[g] / d))) : 0;
    y->scales[g] = int8_t(sc);
    const float scale = d * float(sc);
    for (int i = 0; i < 16; ++i) {
      q[16 * g + i] = (scale > 0.0f ? RoundClamp(x[16 * g + i] / scale, -32, 31) : 0) + 32;
    }
  }
  for (int n = 0; n < 2; ++n) {
    const int* v = q + 128 * n;
    for (int l = 0; l < 32; ++l) {
      y->ql[64 * n + l] = uint8_t((v[l] & 15) | ((v[64 + l] & 15) << 4));
      y->ql[64 * n + 32 + l] = uint8_t((v[32 + l] & 15) | ((v[96 + l] & 15) << 4));
      y->qh[32 * n + l] = uint8_t((v[l] >> 4) | ((v[32 + l] >> 4) << 2) | ((v[64 + l] >> 4) << 4) |
                                  ((v[96 + l] >> 4) << 6));
    }
  }
  return absl::OkStatus();
}

void DequantQ8_0(const BlockQ8_0& b, float* y) {
  const float d = H(b.d);
  for (int i = 0; i < kQ32; ++i) y[i] = d * float(b.qs[i]);
}

void DequantQ4_0(const BlockQ4_0& b, float* y) {
  const float d = H(b.d);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float((b.qs[j] & 15) - 8);
    y[j + 16] = d * float((b.qs[j] >> 4) - 8);
  }
}

template <class Block>
void DequantQ45K(const Block& b, const uint8_t* qh, float* y) {
  const float d = H(b.d), dmin = H(b.dmin);
  for (int c = 0; c < 4; ++c) {
    int sc0, m0, sc1, m1;
    ScaleMinK4(2 * c, b.scales, &sc0, &m0);
    ScaleMinK4(2 * c + 1, b.scales, &sc1, &m1);
    for (int l = 0; l < 32; ++l) {
      int lo = b.qs[32 * c + l] & 15, hi = b.qs[32 * c + l] >> 4;
      if (qh != nullptr) {
        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
      }
      y[64 * c + l] = d * float(sc0) * float(lo) - dmin * float(m0);
      y[64 * c + 32 + l] = d * float(sc1) * float(hi) - dmin * float(m1);
    }
  }
}

void DequantQ6_K(const BlockQ6_K& b, float* y) {
  const float d = H(b.d);
  for (int n = 0; n < 2; ++n) {
    const uint8_t* ql = b.ql + 64 * n;
    const uint8_t* qh = b.qh + 32 * n;
    const int8_t* sc = b.scales + 8 * n;
    float* out = y + 128 * n;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      out[l] = d * float(sc[is]) * float(q1);
      out[l + 32] = d * float(sc[is + 2]) * float(q2);
      out[l + 64] = d * float(sc[is + 4]) * float(q3);
      out[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

absl::Status CheckCount(WeightFormat f, int64_t n, const char* what) {
  if (n < 0 || n % BlockSize(f) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", n, " values is not a multiple of the ",
                                                   FormatName(f), " block size ",
                                                   BlockSize(f)));
  }
  return absl::OkStatus();
}

// Int8 activations of one token: blocks of qb values, scale amax/127.
void QuantizeActRow(const float* x, int64_t cols, int qb, int16_t* q, float* d, int16_t* bsum16,
                    int16_t* bsum32) {
  for (int64_t b = 0; b < cols / qb; ++b) {
    const float* xb = x + b * qb;
    const float amax = AbsMax(xb, qb);
    d[b] = amax / 127.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < qb; ++i) q[b * qb + i] = int16_t(RoundClamp(xb[i] * id, -127, 127));
  }
  for (int64_t g = 0; g < cols / 16; ++g) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += q[16 * g + i];
    bsum16[g] = int16_t(s);
  }
  for (int64_t g = 0; g < cols / 32; ++g) bsum32[g] = int16_t(bsum16[2 * g] + bsum16[2 * g + 1]);
}

}  // namespace quant_internal

using namespace quant_internal;  // NOLINT: this file's own helpers

bool IsQuantized(WeightFormat f) {
  switch (f) {
    case WeightFormat::kQ8_0:
    case WeightFormat::kQ4_0:
    case WeightFormat::kQ4_K:
    case WeightFormat::kQ5_K:
    case WeightFormat::kQ6_K: return true;
    default: return false;
  }
}

absl::Status DequantizeRow(WeightFormat f, const void* src, float* dst, int64_t n) {
  RETURN_IF_ERROR(CheckCount(f, n, "DequantizeRow"));
  const auto* p = static_cast<const uint8_t*>(src);
  const int64_t nb = n / BlockSize(f);
  switch (f) {
    case WeightFormat::kF32: std::memcpy(dst, src, size_t(n) * sizeof(float)); break;
    case WeightFormat::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = Fp16ToF32(fp16{h});
      }
      break;
    case WeightFormat::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = Bf16ToF32(bf16{h});
      }
      break;
    case WeightFormat::kQ8_0:
      for (int64_t b = 0; b < nb; ++b) DequantQ8_0(reinterpret_cast<const BlockQ8_0*>(p)[b], dst + b * kQ32);
      break;
    case WeightFormat::kQ4_0:
      for (int64_t b = 0; b < nb; ++b) DequantQ4_0(reinterpret_cast<const BlockQ4_0*>(p)[b], dst + b * kQ32);
      break;
    case WeightFormat::kQ4_K:
      for (int64_t b = 0; b < nb; ++b) {
        DequantQ45K(reinterpret_cast<const BlockQ4_K*>(p)[b], nullptr, dst + b * kQK);
      }
      break;
    case WeightFormat::kQ5_K:
      for (int64_t b = 0; b < nb; ++b) {
        const auto& blk = reinterpret_cast<const BlockQ5_K*>(p)[b];
        DequantQ45K(blk, blk.qh, dst + b * kQK);
      }
      break;
    case WeightFormat::kQ6_K:
      for (int64_t b = 0; b < nb; ++b) DequantQ6_K(reinterpret_cast<const BlockQ6_K*>(p)[b], dst + b * kQK);
      break;
  }
  return absl::OkStatus();
}

absl::Status QuantizeRowRef(WeightFormat f, const float* src, void* dst, int64_t n) {
  RETURN_IF_ERROR(CheckCount(f, n, "QuantizeRowRef"));
  auto* p = static_cast<uint8_t*>(dst);
  const int64_t nb = n / BlockSize(f);
  absl::Status s;
  switch (f) {
    case WeightFormat::kF32: std::memcpy(dst, src, size_t(n) * sizeof(float)); break;
    case WeightFormat::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = F32ToFp16(src[i]).bits;
        std::memcpy(p + 2 * i, &h, 2);
      }
      break;
    case WeightFormat::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = F32ToBf16(src[i]).bits;
        std::memcpy(p + 2 * i, &h, 2);
      }
      break;
    case WeightFormat::kQ8_0:
      for (int64_t b = 0; b < nb && s.ok(); ++b) s = QuantizeQ8_0(src + b * kQ32, reinterpret_cast<BlockQ8_0*>(p) + b);
      break;
    case WeightFormat::kQ4_0:
      for (int64_t b = 0; b < nb && s.ok(); ++b) s = QuantizeQ4_0(src + b * kQ32, reinterpret_cast<BlockQ4_0*>(p) + b);
      break;
    case WeightFormat::kQ4_K:
      for (int64_t b = 0; b < nb && s.ok(); ++b) s = QuantizeQ4_K(src + b * kQK, reinterpret_cast<BlockQ4_K*>(p) + b);
      break;
    case WeightFormat::kQ5_K:
      for (int64_t b = 0; b < nb && s.ok(); ++b) s = QuantizeQ5_K(src + b * kQK, reinterpret_cast<BlockQ5_K*>(p) + b);
      break;
    case WeightFormat::kQ6_K:
      for (int64_t b = 0; b < nb && s.ok(); ++b) s = QuantizeQ6_K(src + b * kQK, reinterpret_cast<BlockQ6_K*>(p) + b);
      break;
  }
  return Annotate(s, absl::StrCat("QuantizeRowRef(", FormatName(f), ")"));
}

absl::Status QuantMatMul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool) {
  if (!IsQuantized(w.format)) {
    return absl::InvalidArgumentError(absl::StrCat("QuantMatMul: weight format ", FormatName(w.format),
                                                   " is not a block format"));
  }
  if (m < 0 || w.rows < 0 || w.cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantMatMul: bad shape m=", m, " rows=", w.rows, " cols=", w.cols));
  }
  RETURN_IF_ERROR(CheckCount(w.format, w.cols, "QuantMatMul cols"));
  if (m == 0 || w.rows == 0) return absl::OkStatus();
  if (x == nullptr || y == nullptr || w.data == nullptr) {
    return absl::InvalidArgumentError("QuantMatMul: null pointer");
  }
  if (reinterpret_cast<uintptr_t>(w.data) % 2 != 0) {
    return absl::InvalidArgumentError("QuantMatMul: weight data must be 2-byte aligned (fp16 scales)");
  }
  const int qb = BlockSize(w.format) == kQK ? kQK : kQ32;
  const int64_t cols = w.cols;
  const int64_t nb = cols / qb;
  // Enough tokens per tile to reuse each weight row from L1, few enough that
  // the tile's activations stay in L2.
  const int64_t tile = std::max<int64_t>(1, std::min<int64_t>(64, (256 << 10) / (2 * cols)));
  std::vector<int16_t> q(size_t(std::min(m, tile) * cols));
  std::vector<float> d(size_t(std::min(m, tile) * nb));
  std::vector<int16_t> bsum16(size_t(std::min(m, tile) * cols / 16));
  std::vector<int16_t> bsum32(size_t(std::min(m, tile) * cols / 32));
  const auto* wbytes = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = w.row_bytes();
  for (int64_t t0 = 0; t0 < m; t0 += tile) {
    const int64_t tn = std::min(tile, m - t0);
    auto quantize = [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        QuantizeActRow(x + (t0 + t) * cols, cols, qb, q.data() + t * cols, d.data() + t * nb,
                       bsum16.data() + t * (cols / 16), bsum32.data() + t * (cols / 32));
      }
    };
    const QuantActs acts{cols, qb, q.data(), d.data(), bsum16.data(), bsum32.data()};
    auto rows = [&](int64_t r0, int64_t r1) {
      HWY_DYNAMIC_DISPATCH(MatMulRows)(w.format, wbytes, row_bytes, r0, r1, acts, 0, tn,
                                       y + t0 * w.rows, w.rows);
    };
    if (pool == nullptr) {
      quantize(0, tn);
      rows(0, w.rows);
    } else {
      pool->ParallelFor(tn, 8, quantize);
      pool->ParallelFor(w.rows, 4, rows);
    }
  }
  return absl::OkStatus();
}

const char* QuantSimdTarget() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace facet
#endif  // HWY_ONCE
