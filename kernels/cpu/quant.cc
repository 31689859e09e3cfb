// ggml block formats: dequantization, reference quantizers and the
// block-reading matmul. Layouts: ggml/src/ggml-common.h (block_q8_0,
// block_q4_0, block_q5_0, block_q4_K, block_q5_K, block_q6_K); values:
// ggml/src/ggml-quants.c dequantize_row_{q8_0,q4_0,q5_0,q4_K,q5_K,q6_K} and
// get_scale_min_k4. The matmul mirrors ggml's vec_dot_qX_q8_X idea
// (int8 activations, integer dot per (sub-)block, one float multiply per
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
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22);
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
// the sums of every 16 and every 32 consecutive values (for the K-quant mins,
// the Q6_K/Q4_0/Q5_0 code offsets; |sum| <= 32·127 fits int16).
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
#include "hwy/cache_control.h"
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

// All eight 6-bit scales (bytes 0-7 of out) and mins (bytes 8-15) of a
// Q4_K/Q5_K block at once, by 32-bit word: the same bit layout ScaleMinK4
// reads one sub-block at a time.
HWY_INLINE void UnpackScaleMinK4(const uint8_t* q, uint32_t out[4]) {
  uint32_t u[3];
  std::memcpy(u, q, 12);
  out[0] = u[0] & 0x3f3f3f3fu;
  out[1] = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u);
  out[2] = u[1] & 0x3f3f3f3fu;
  out[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u);
}

// Int16 lanes filled from a 16-byte table of per-group scales: lane i of
// Get(first) is table[first + i / kLanesPerEntry], sign-extended when kSigned.
// One byte shuffle (plus a shift for the sign) per vector instead of a
// broadcast from a general register per group.
template <int kLanesPerEntry, bool kSigned, class D16>
class ScaleLanes {
 public:
#if HWY_TARGET == HWY_SCALAR
  ScaleLanes(D16 d16, const uint8_t* table) : d16_(d16), table_(table) {}
  hn::Vec<D16> Get(int first) const {
    return hn::Set(d16_, kSigned ? int16_t(int8_t(table_[first])) : int16_t(table_[first]));
  }

 private:
  D16 d16_;
  const uint8_t* table_;
#else
  ScaleLanes(D16 d16, const uint8_t* table) : d16_(d16), table_(hn::LoadDup128(Bytes(), table)) {}
  hn::Vec<D16> Get(int first) const {
    // Indices with the top bit set give zero bytes: the entry goes to the
    // low byte (unsigned) or the high byte, then down with the sign.
    const auto entry = hn::Add(hn::ShiftRight<Log2(kLanesPerEntry)>(hn::Iota(d16_, 0)), hn::Set(d16_, int16_t(first)));
    const auto idx = kSigned ? hn::Or(hn::ShiftLeft<8>(entry), hn::Set(d16_, 0x80))
                             : hn::Or(entry, hn::Set(d16_, int16_t(-0x8000)));
    const auto v = hn::BitCast(d16_, hn::TableLookupBytesOr0(table_, hn::BitCast(Bytes(), idx)));
    return kSigned ? hn::ShiftRight<8>(v) : v;
  }

 private:
  static constexpr int Log2(int n) { return n <= 1 ? 0 : 1 + Log2(n / 2); }
  static hn::Repartition<uint8_t, D16> Bytes() { return {}; }
  D16 d16_;
  hn::Vec<hn::Repartition<uint8_t, D16>> table_;
#endif
};

// Σ a[i]·b[i] over kN int16 values, in int32.
template <size_t kN>
HWY_INLINE int32_t DotI16(const int16_t* a, const int16_t* b) {
  const hn::CappedTag<int16_t, kN> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  for (size_t i = 0; i < kN; i += hn::Lanes(d16)) {
    s0 = MulAcc(d32, hn::LoadU(d16, a + i), hn::LoadU(d16, b + i), s0, s1);
  }
  return hn::GetLane(hn::SumOfLanes(d32, hn::Add(s0, s1)));
}

// --- 32-value blocks: Q8_0, Q4_0, Q5_0 -------------------------------------

// Integer dot of one Q8_0 block with 32 activations.
template <class D16>
HWY_INLINE hn::Vec<hn::Repartition<int32_t, D16>> BlockDotQ8_0(D16 d16, const uint8_t* blk, const int16_t* x) {
  const hn::Repartition<int32_t, D16> d32;
  const hn::Rebind<int8_t, D16> d8;
  const auto* qs = reinterpret_cast<const int8_t*>(blk + 2);
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  for (size_t k = 0; k < size_t(kQ32); k += hn::Lanes(d16)) {
    s0 = MulAcc(d32, hn::PromoteTo(d16, hn::LoadU(d8, qs + k)), hn::LoadU(d16, x + k), s0, s1);
  }
  return hn::Add(s0, s1);
}

// Integer dot of one Q4_0 / Q5_0 block with 32 activations. Byte j holds
// the low 4 bits of value j (low nibble) and j + 16 (high nibble); for Q5_0
// bit j of qh is the 5th bit of value j, which LoadMaskBits turns into a lane
// mask directly. Codes are unsigned with value = q − 8 (Q4_0) or q − 16; for
// Q5_0 that is q4 where the 5th bit is set and q4 − 16 where it is not.
template <bool kFiveBit, class D16>
HWY_INLINE hn::Vec<hn::Repartition<int32_t, D16>> BlockDotQ4Q5_0(D16 d16, const uint8_t* blk,
                                                                  const int16_t* x) {
  const hn::Repartition<int32_t, D16> d32;
  const hn::Rebind<uint8_t, D16> d8;
  const hn::RebindToUnsigned<D16> du16;
  const uint8_t* qh = blk + 2;
  const uint8_t* qs = blk + (kFiveBit ? 6 : 2);
  const auto m15 = hn::Set(d16, 15);
  const auto offset = hn::Set(d16, kFiveBit ? 16 : 8);
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  if constexpr (hn::MaxLanes(D16()) >= 32) {
    // Whole block in one vector: both nibble halves from one 16-byte
    // broadcast, the upper 16 lanes shifted down by 4.
    const auto shift = hn::IfThenZeroElse(hn::FirstN(du16, 16), hn::Set(du16, 4));
    const auto w = hn::PromoteTo(du16, hn::LoadDup128(d8, qs));
    auto q = hn::And(hn::BitCast(d16, hn::operator>>(w, shift)), m15);
    if constexpr (kFiveBit) {
      q = hn::IfThenElse(hn::LoadMaskBits(d16, qh), q, hn::Sub(q, offset));
    } else {
      q = hn::Sub(q, offset);
    }
    s0 = MulAcc(d32, q, hn::LoadU(d16, x), s0, s1);
  } else {
    const size_t N = hn::Lanes(d16);
    for (size_t k = 0; k < 16; k += N) {
      const auto w = hn::PromoteTo(d16, hn::LoadU(d8, qs + k));
      auto lo = hn::And(w, m15);
      auto hi = hn::ShiftRight<4>(w);
      if constexpr (kFiveBit) {
        lo = hn::IfThenElse(hn::LoadMaskBits(d16, qh + k / 8), lo, hn::Sub(lo, offset));
        hi = hn::IfThenElse(hn::LoadMaskBits(d16, qh + 2 + k / 8), hi, hn::Sub(hi, offset));
      } else {
        lo = hn::Sub(lo, offset);
        hi = hn::Sub(hi, offset);
      }
      s0 = MulAcc(d32, lo, hn::LoadU(d16, x + k), s0, s1);
      s0 = MulAcc(d32, hi, hn::LoadU(d16, x + 16 + k), s0, s1);
    }
  }
  return hn::Add(s0, s1);
}

constexpr int kGroup = 16;

// s[i] = (fp16 scale at blk + i·stride) · xd[i] for kGroup blocks: one vector
// conversion instead of one per block, and the FMAs below can take their
// scale straight from memory.
HWY_INLINE void GroupScales(const uint8_t* blk, size_t stride, const float* xd, float* s) {
  HWY_ALIGN uint16_t h[kGroup];
  for (int i = 0; i < kGroup; ++i) std::memcpy(&h[i], blk + size_t(i) * stride, 2);
  const hn::CappedTag<float, kGroup> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  for (int i = 0; i < kGroup; i += int(hn::Lanes(df))) {
    hn::Store(hn::Mul(hn::PromoteTo(df, hn::Load(dh, reinterpret_cast<const hwy::float16_t*>(h) + i)),
                      hn::LoadU(df, xd + i)),
              df, s + i);
  }
}

// One row of 32-value blocks: Σ_b d_b·dx_b·(Σ q·x).
template <WeightFormat kFormat>
float DotRow32(const uint8_t* row, int64_t nb, const int16_t* xq, const float* xd) {
  using Block = std::conditional_t<kFormat == WeightFormat::kQ8_0, BlockQ8_0,
                                   std::conditional_t<kFormat == WeightFormat::kQ4_0, BlockQ4_0, BlockQ5_0>>;
  constexpr int64_t kStride = sizeof(Block);
  const hn::CappedTag<int16_t, 32> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<float, decltype(d32)> df;
  auto dot = [&](const uint8_t* blk, const int16_t* x) {
    if constexpr (kFormat == WeightFormat::kQ8_0) {
      return hn::ConvertTo(df, BlockDotQ8_0(d16, blk, x));
    } else {
      return hn::ConvertTo(df, BlockDotQ4Q5_0<kFormat == WeightFormat::kQ5_0>(d16, blk, x));
    }
  };
  // With one scale per 32 values the float work per block costs about as
  // much as the integer dot; the FMAs alternate between two accumulators to
  // hide their latency.
  auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
  HWY_ALIGN float s[kGroup];
  int64_t b = 0;
  for (; b + kGroup <= nb; b += kGroup, row += kGroup * kStride, xq += kGroup * kQ32) {
    GroupScales(row, kStride, xd + b, s);
    for (int i = 0; i < kGroup; i += 2) {
      acc0 = hn::MulAdd(dot(row + i * kStride, xq + i * kQ32), hn::Set(df, s[i]), acc0);
      acc1 = hn::MulAdd(dot(row + (i + 1) * kStride, xq + (i + 1) * kQ32), hn::Set(df, s[i + 1]), acc1);
    }
  }
  for (; b < nb; ++b, row += kStride, xq += kQ32) {
    acc0 = hn::MulAdd(dot(row, xq), hn::Set(df, LoadF16(row) * xd[b]), acc0);
  }
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
}

// --- 256-value super-blocks: Q4_K, Q5_K, Q6_K -------------------------------

// Q4_K and Q5_K share everything but the 5th bit. Per 32-value sub-block j:
// value = d·sc_j·q − dmin·m_j, so Σ value·x = d·dx·Σ (sc_j·q)·xq −
// dmin·dx·Σ_j m_j·Σxq_j; the second sum uses the activation block sums.
// sc_j·q ≤ 63·31 fits int16, so the scale is applied before the int16
// multiply-add and one int32 accumulator serves the whole block. The scale
// vectors come from one 16-byte table per block by byte shuffles.
template <bool kFiveBit>
float DotQ45K(const uint8_t* row, int64_t nb, const int16_t* xq, const float* xd, const int16_t* bsum32) {
  using Block = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  const hn::CappedTag<int16_t, 32> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<uint8_t, decltype(d16)> d8;
  const hn::Rebind<float, decltype(d32)> df;
  const hn::CappedTag<int16_t, 8> d16x8;
  const hn::Repartition<int32_t, decltype(d16x8)> d32x4;
  const hn::Rebind<float, decltype(d32x4)> df4;
  const hn::Rebind<uint8_t, decltype(d16x8)> d8x8;
  const size_t N = hn::Lanes(d16);
  const auto m15 = hn::Set(d16, 15);
  const auto one = hn::Set(d16, 1);
  auto facc = hn::Zero(df);
  auto macc = hn::Zero(df4);
  for (int64_t b = 0; b < nb; ++b, xq += kQK, bsum32 += 8) {
    const auto& blk = reinterpret_cast<const Block*>(row)[b];
    HWY_ALIGN uint32_t scm[4];
    UnpackScaleMinK4(blk.scales, scm);
    const auto* scm8 = reinterpret_cast<const uint8_t*>(scm);
    const ScaleLanes<32, false, decltype(d16)> scales(d16, scm8);
    auto acc0 = hn::Zero(d32), acc1 = hn::Zero(d32);
    for (int c = 0; c < 4; ++c) {
      const auto scl = scales.Get(2 * c);
      const auto sch = scales.Get(2 * c + 1);
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
    const auto* bytes = reinterpret_cast<const uint8_t*>(&blk);
    facc = hn::MulAdd(hn::ConvertTo(df, hn::Add(acc0, acc1)), hn::Set(df, LoadF16(bytes) * dx), facc);
    // Mins: Σ_j m_j·bsum32_j, kept as a vector across blocks.
    auto m1 = hn::Zero(d32x4);
    const auto m0 = MulAcc(d32x4, hn::PromoteTo(d16x8, hn::LoadU(d8x8, scm8 + 8)), hn::LoadU(d16x8, bsum32),
                           hn::Zero(d32x4), m1);
    macc = hn::MulAdd(hn::ConvertTo(df4, hn::Add(m0, m1)), hn::Set(df4, LoadF16(bytes + 2) * dx), macc);
  }
  return hn::GetLane(hn::SumOfLanes(df, facc)) - hn::GetLane(hn::SumOfLanes(df4, macc));
}

// Q6_K: value = d·sc_g·(q − 32) per 16-value group g, q in [0, 64). The −32
// is taken out with the activation group sums; sc_g·q fits int16. A vector
// of 32 values spans two groups; its scale vector is a byte shuffle of the
// block's 16 int8 scales into the high byte of each lane, then an arithmetic
// shift for the sign.
float DotQ6K(const uint8_t* row, int64_t nb, const int16_t* xq, const float* xd, const int16_t* bsum16) {
  const hn::CappedTag<int16_t, 32> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<uint8_t, decltype(d16)> d8;
  const hn::Rebind<float, decltype(d32)> df;
  const hn::CappedTag<int16_t, 16> d16x16;
  const hn::Repartition<int32_t, decltype(d16x16)> d32x8;
  const hn::Rebind<float, decltype(d32x8)> df8;
  const hn::Rebind<int8_t, decltype(d16x16)> ds8;
  const size_t N = hn::Lanes(d16);
  const auto m15 = hn::Set(d16, 15);
  const auto m3 = hn::Set(d16, 3);
  auto facc = hn::Zero(df);
  auto oacc = hn::Zero(df8);
  const auto* blk = reinterpret_cast<const BlockQ6_K*>(row);
  for (int64_t b = 0; b < nb; ++b, xq += kQK, bsum16 += 16) {
    const ScaleLanes<16, true, decltype(d16)> scales(d16, reinterpret_cast<const uint8_t*>(blk[b].scales));
    auto scale = [&](int g, size_t l) { return scales.Get(g + int(l / 16)); };
    auto acc0 = hn::Zero(d32), acc1 = hn::Zero(d32);
    for (int n = 0; n < 2; ++n) {
      const uint8_t* ql = blk[b].ql + 64 * n;
      const uint8_t* qh = blk[b].qh + 32 * n;
      const int16_t* x = xq + 128 * n;
      for (size_t l = 0; l < 32; l += N) {
        const auto a = hn::PromoteTo(d16, hn::LoadU(d8, ql + l));
        const auto c = hn::PromoteTo(d16, hn::LoadU(d8, ql + 32 + l));
        const auto h = hn::PromoteTo(d16, hn::LoadU(d8, qh + l));
        const auto q1 = hn::Or(hn::And(a, m15), hn::ShiftLeft<4>(hn::And(h, m3)));
        const auto q2 = hn::Or(hn::And(c, m15), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(h), m3)));
        const auto q3 = hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(h), m3)));
        const auto q4 = hn::Or(hn::ShiftRight<4>(c), hn::ShiftLeft<4>(hn::ShiftRight<6>(h)));
        acc0 = MulAcc(d32, hn::Mul(q1, scale(8 * n + 0, l)), hn::LoadU(d16, x + l), acc0, acc1);
        acc0 = MulAcc(d32, hn::Mul(q2, scale(8 * n + 2, l)), hn::LoadU(d16, x + 32 + l), acc0, acc1);
        acc0 = MulAcc(d32, hn::Mul(q3, scale(8 * n + 4, l)), hn::LoadU(d16, x + 64 + l), acc0, acc1);
        acc0 = MulAcc(d32, hn::Mul(q4, scale(8 * n + 6, l)), hn::LoadU(d16, x + 96 + l), acc0, acc1);
      }
    }
    const float dd = LoadF16(reinterpret_cast<const uint8_t*>(&blk[b].d)) * xd[b];
    facc = hn::MulAdd(hn::ConvertTo(df, hn::Add(acc0, acc1)), hn::Set(df, dd), facc);
    // Offsets: 32·Σ_g sc_g·bsum16_g, kept as a vector across blocks.
    auto o1 = hn::Zero(d32x8);
    const auto o0 = MulAcc(d32x8, hn::PromoteTo(d16x16, hn::LoadU(ds8, blk[b].scales)), hn::LoadU(d16x16, bsum16),
                           hn::Zero(d32x8), o1);
    oacc = hn::MulAdd(hn::ConvertTo(df8, hn::Add(o0, o1)), hn::Set(df8, dd * 32.0f), oacc);
  }
  return hn::GetLane(hn::SumOfLanes(df, facc)) - hn::GetLane(hn::SumOfLanes(df8, oacc));
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
        case WeightFormat::kQ8_0: v = DotRow32<WeightFormat::kQ8_0>(row, nb, xq, xd); break;
        case WeightFormat::kQ4_0: v = DotRow32<WeightFormat::kQ4_0>(row, nb, xq, xd); break;
        case WeightFormat::kQ5_0: v = DotRow32<WeightFormat::kQ5_0>(row, nb, xq, xd); break;
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
// Q4_0 / Q5_0 with `half` = 8 / 16: scale = (value of largest magnitude) /
// −half as in ggml, so that value lands exactly on code 0 and the other sign
// gets up to code 2·half − 1.
absl::Status QuantizeSymmetric32(const float* x, int half, uint16_t* dbits, int* q) {
  float vmax = 0.0f;
  for (int i = 0; i < kQ32; ++i) {
    if (std::fabs(x[i]) > std::fabs(vmax)) vmax = x[i];
  }
  ASSIGN_OR_RETURN(*dbits, RoundUpFp16(std::fabs(vmax) / float(half)));
  if (vmax > 0.0f) *dbits |= 0x8000;  // d = vmax / −half
  const float d = H(*dbits);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQ32; ++i) q[i] = RoundClamp(x[i] * id + float(half), 0, 2 * half - 1);
  return absl::OkStatus();
}

absl::Status QuantizeQ4_0(const float* x, BlockQ4_0* y) {
  int q[kQ32];
  RETURN_IF_ERROR(QuantizeSymmetric32(x, 8, &y->d, q));
  for (int j = 0; j < 16; ++j) y->qs[j] = uint8_t(q[j] | (q[j + 16] << 4));
  return absl::OkStatus();
}

absl::Status QuantizeQ5_0(const float* x, BlockQ5_0* y) {
  int q[kQ32];
  RETURN_IF_ERROR(QuantizeSymmetric32(x, 16, &y->d, q));
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    y->qs[j] = uint8_t((q[j] & 15) | ((q[j + 16] & 15) << 4));
    qh |= uint32_t(q[j] >> 4) << j;
    qh |= uint32_t(q[j + 16] >> 4) << (j + 16);
  }
  std::memcpy(y->qh, &qh, 4);  // little-endian, as ggml stores it
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

void DequantQ5_0(const BlockQ5_0& b, float* y) {
  const float d = H(b.d);
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; ++j) {
    const int lo = (b.qs[j] & 15) | int(((qh >> j) & 1) << 4);
    const int hi = (b.qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
    y[j] = d * float(lo - 16);
    y[j + 16] = d * float(hi - 16);
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

// Per-thread activation buffers for QuantMatMul; they only grow.
struct ActScratch {
  std::vector<int16_t> q, bsum16, bsum32;
  std::vector<float> d;
  void Reserve(int64_t tokens, int64_t cols, int64_t blocks) {
    auto grow = [](auto& v, int64_t n) {
      if (v.size() < size_t(n)) v.resize(size_t(n));
    };
    grow(q, tokens * cols);
    grow(d, tokens * blocks);
    grow(bsum16, tokens * cols / 16);
    grow(bsum32, tokens * cols / 32);
  }
};

}  // namespace quant_internal

using namespace quant_internal;  // NOLINT: this file's own helpers

bool IsQuantized(WeightFormat f) {
  switch (f) {
    case WeightFormat::kQ8_0:
    case WeightFormat::kQ4_0:
    case WeightFormat::kQ5_0:
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
    case WeightFormat::kQ5_0:
      for (int64_t b = 0; b < nb; ++b) DequantQ5_0(reinterpret_cast<const BlockQ5_0*>(p)[b], dst + b * kQ32);
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
    case WeightFormat::kQ5_0:
      for (int64_t b = 0; b < nb && s.ok(); ++b) s = QuantizeQ5_0(src + b * kQ32, reinterpret_cast<BlockQ5_0*>(p) + b);
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
  const int64_t tn_max = std::min(m, tile);
  // Kept per calling thread: decode calls this a few hundred times per token
  // with the same shapes, and a fresh allocation each time showed up.
  thread_local ActScratch scratch;
  scratch.Reserve(tn_max, cols, nb);
  const auto* wbytes = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = w.row_bytes();
  // Waking the pool costs ~10 us; below this much weight traffic per tile
  // (~10-25 us of work on one core) one thread finishes sooner.
  constexpr int64_t kMinParallelBytes = 192 << 10;
  // Output rows go to threads in runs of 16 so no two threads write the same
  // 64-byte line of y (for m = 1).
  constexpr int64_t kRowRun = 16;
  const int64_t runs = (w.rows + kRowRun - 1) / kRowRun;
  for (int64_t t0 = 0; t0 < m; t0 += tile) {
    const int64_t tn = std::min(tile, m - t0);
    int16_t* q = scratch.q.data();
    float* d = scratch.d.data();
    int16_t* bs16 = scratch.bsum16.data();
    int16_t* bs32 = scratch.bsum32.data();
    auto quantize = [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        QuantizeActRow(x + (t0 + t) * cols, cols, qb, q + t * cols, d + t * nb, bs16 + t * (cols / 16),
                       bs32 + t * (cols / 32));
      }
    };
    const QuantActs acts{cols, qb, q, d, bs16, bs32};
    auto rows = [&](int64_t run0, int64_t run1) {
      HWY_DYNAMIC_DISPATCH(MatMulRows)(w.format, wbytes, row_bytes, run0 * kRowRun,
                                       std::min(w.rows, run1 * kRowRun), acts, 0, tn, y + t0 * w.rows, w.rows);
    };
    const bool parallel = pool != nullptr && pool->num_threads() > 1 && w.rows * row_bytes * tn >= kMinParallelBytes;
    if (!parallel) {
      quantize(0, tn);
      rows(0, runs);
    } else {
      pool->ParallelFor(tn, 8, quantize);
      pool->ParallelFor(runs, 1, rows);
    }
  }
  return absl::OkStatus();
}

const char* QuantSimdTarget() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace facet
#endif  // HWY_ONCE
