// The block-reading matmul for ggml formats (QuantMatMul). It mirrors
// ggml's vec_dot_qX_q8_X idea — int8 activations, an integer dot product
// per (sub-)block, one float multiply per block — in our own Highway code.
// Block layouts: quant_blocks.h.

#include "kernels/cpu/hwy_targets.h"  // before any Highway header

#ifndef FACET_KERNELS_CPU_QUANT_MATMUL_SHARED_
#define FACET_KERNELS_CPU_QUANT_MATMUL_SHARED_

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/quant_blocks.h"

namespace facet::quant_internal {

// Activations of a tile for the 32-value block formats, rearranged so that
// one 32-byte vector holds the same 4 bytes (4 int8 or 2 int16 values) of 8
// consecutive tokens: full groups of 8 tokens only, the rest is not packed.
//   x   [groups, cols·elem/4, 8 tokens, 4 bytes]
//   d   [groups, cols/32, 8 tokens]  activation scales
//   ob  [groups, cols/32, 8 tokens]  offset·Σx of each block (Q4_0: 8, Q5_0: 16, Q8_0: 0)
struct TokenLanes {
  int64_t groups = 0;
  const uint8_t* x = nullptr;
  const float* d = nullptr;
  const int32_t* ob = nullptr;
};
constexpr int kLaneTokens = 8;

}  // namespace facet::quant_internal

#endif  // FACET_KERNELS_CPU_QUANT_MATMUL_SHARED_

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/quant_matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace facet {
namespace quant_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

#if HWY_TARGET == HWY_SCALAR

// One lane cannot pair bytes: dequantize each row and take a float dot
// product with the dequantized activations. Only x86 CPUs without AVX2 get
// here (hwy_targets.h builds no SSE targets).
void MatMulRows(WeightFormat f, const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1,
                const QuantActs& a, const TokenLanes&, int64_t t0, int64_t t1, float* y, int64_t ldy) {
  thread_local std::vector<float> row;
  row.resize(size_t(a.cols));
  const int64_t nb = a.cols / a.qb;
  for (int64_t r = r0; r < r1; ++r) {
    (void)DequantizeRow(f, w + r * row_bytes, row.data(), a.cols);  // format checked by the caller
    for (int64_t t = t0; t < t1; ++t) {
      const float* xd = a.d + t * nb;
      float sum = 0.0f;
      for (int64_t i = 0; i < a.cols; ++i) {
        const int q = a.q16 != nullptr ? a.q16[t * a.cols + i] : a.q8[t * a.cols + i];
        sum += row[size_t(i)] * (float(q) * xd[i / a.qb]);
      }
      y[t * ldy + r] = sum;
    }
  }
}

#else  // HWY_TARGET != HWY_SCALAR

// Widening int16 multiply-add into int32 lanes. Highway may spread the
// products over two accumulators on some targets; callers add both.
template <class D32, class V16>
HWY_INLINE hn::Vec<D32> MulAcc(D32 d32, V16 a, V16 b, hn::Vec<D32> acc, hn::Vec<D32>& acc1) {
  return hn::ReorderWidenMulAccumulate(d32, a, b, acc, acc1);
}

// Int16 lane i = u[2i]·s[2i] + u[2i+1]·s[2i+1] for unsigned bytes u and
// signed bytes s: one pmaddubsw on x86, which saturates; every caller keeps
// |lane| <= 2·63·127 < 2^15, so the result is exact everywhere.
template <class VU8, class VI8>
HWY_INLINE auto SumPairs(VU8 u, VI8 s) {
  const hn::DFromV<VI8> di8;
  using V16 = hn::Vec<hn::RepartitionToWide<decltype(di8)>>;
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
  if constexpr (sizeof(u.raw) == 64) {
    return V16{_mm512_maddubs_epi16(u.raw, s.raw)};
  } else if constexpr (sizeof(u.raw) == 32) {
    return V16{_mm256_maddubs_epi16(u.raw, s.raw)};
  } else {
    return V16{_mm_maddubs_epi16(u.raw, s.raw)};
  }
#else
  const hn::RepartitionToWide<decltype(di8)> d16;
  const hn::RebindToUnsigned<decltype(d16)> du16;
  const auto uw = hn::BitCast(du16, u);
  const auto sw = hn::BitCast(d16, s);
  const auto u_even = hn::BitCast(d16, hn::And(uw, hn::Set(du16, 0xFF)));
  const auto u_odd = hn::BitCast(d16, hn::ShiftRight<8>(uw));
  return hn::Add(hn::Mul(u_even, hn::ShiftRight<8>(hn::ShiftLeft<8>(sw))), hn::Mul(u_odd, hn::ShiftRight<8>(sw)));
#endif
}

// Bytes of v shifted right by `shift`, the shift chosen per 64-bit lane;
// callers mask afterwards, so bits moved in from the next byte do not matter.
template <class D8>
HWY_INLINE hn::Vec<D8> ShiftBytesRight(D8 d8, hn::Vec<D8> v, hn::Vec<hn::Repartition<uint64_t, D8>> shift) {
  const hn::Repartition<uint64_t, D8> d64;
  return hn::BitCast(d8, hn::BitCast(d64, v) >> shift);
}

// Shifts per 64-bit lane: `lo` in the lower half of the vector, `hi` in the
// upper half.
template <class D64>
HWY_INLINE hn::Vec<D64> HalfShifts(D64 d64, uint64_t lo, uint64_t hi) {
  return hn::IfThenElse(hn::FirstN(d64, hn::Lanes(d64) / 2), hn::Set(d64, lo), hn::Set(d64, hi));
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
};

// --- Token groups ------------------------------------------------------------
//
// Each kernel below takes NT tokens at once (NT <= kMaxTokens): a weight
// block is loaded and unpacked once, then dotted with every token's
// activations, so a small batch costs far less than NT single-token calls.
// Each token's arithmetic is the same for every NT (same accumulators, same
// order), so a token's output does not depend on the batch it came in.
constexpr int kMaxTokens = 4;

// Per-token activation pointers of tokens [t, t + NT).
template <int NT>
struct Tokens {
  const int8_t* q8[NT];
  const int16_t* q16[NT];
  const float* d[NT];
  const int16_t* bsum16[NT];
  const int16_t* bsum32[NT];
  Tokens(const QuantActs& a, int64_t t) {
    const int64_t nb = a.cols / a.qb;
    for (int j = 0; j < NT; ++j) {
      q8[j] = a.q8 != nullptr ? a.q8 + (t + j) * a.cols : nullptr;
      q16[j] = a.q16 != nullptr ? a.q16 + (t + j) * a.cols : nullptr;
      d[j] = a.d + (t + j) * nb;
      bsum16[j] = a.bsum16 + (t + j) * (a.cols / 16);
      bsum32[j] = a.bsum32 + (t + j) * (a.cols / 32);
    }
  }
};

#define FACET_FOR_TOKENS _Pragma("GCC unroll 4") for (int j = 0; j < NT; ++j)

// --- Q8_0: signed weights × int16 activations --------------------------------

// Integer dots of one Q8_0 block with 32 activations of each token (at
// offset `off`).
template <int NT, class D16, class V32>
HWY_INLINE void BlockDotQ8_0(D16 d16, const uint8_t* blk, const int16_t* const* x, int64_t off, V32* out) {
  const hn::Repartition<int32_t, D16> d32;
  const hn::Rebind<int8_t, D16> d8;
  const auto* qs = reinterpret_cast<const int8_t*>(blk + 2);
  V32 s0[NT], s1[NT];
  FACET_FOR_TOKENS { s0[j] = s1[j] = hn::Zero(d32); }
  for (size_t k = 0; k < size_t(kQ32); k += hn::Lanes(d16)) {
    const auto wq = hn::PromoteTo(d16, hn::LoadU(d8, qs + k));
    FACET_FOR_TOKENS { s0[j] = MulAcc(d32, wq, hn::LoadU(d16, x[j] + off + k), s0[j], s1[j]); }
  }
  FACET_FOR_TOKENS { out[j] = hn::Add(s0[j], s1[j]); }
}

// --- Q4_0 / Q5_0: unsigned codes × int8 activations --------------------------

// Σ q·x over one block for each token, q the unsigned code (value = q − 8
// or q − 16). Byte j of qs holds the low 4 bits of value j (low nibble) and
// j + 16 (high nibble); for Q5_0 bit j of the little-endian u32 qh is the
// 5th bit of value j, which LoadMaskBits turns into a lane mask directly.
template <bool kFiveBit, int NT, class V32>
HWY_INLINE void BlockDotQ4Q5_0(const uint8_t* blk, const int8_t* const* x, int64_t off, V32* out) {
  const hn::CappedTag<int8_t, 32> di8;
  const hn::RebindToUnsigned<decltype(di8)> d8;
  const hn::RepartitionToWide<decltype(di8)> d16;
  const hn::RepartitionToWide<decltype(d16)> d32;
  const uint8_t* qh = blk + 2;
  const uint8_t* qs = blk + (kFiveBit ? 6 : 2);
  const auto m15 = hn::Set(d8, 15);
  const auto ones = hn::Set(d16, 1);
  V32 s0[NT], s1[NT];
  FACET_FOR_TOKENS { s0[j] = s1[j] = hn::Zero(d32); }
  if constexpr (hn::MaxLanes(d8) >= 32) {
    // Both nibble halves from one 16-byte broadcast, the upper 16 bytes
    // shifted down by 4: lanes in value order.
    const hn::Repartition<uint64_t, decltype(d8)> d64;
    auto q = hn::And(ShiftBytesRight(d8, hn::LoadDup128(d8, qs), HalfShifts(d64, 0, 4)), m15);
    if constexpr (kFiveBit) q = hn::Or(q, hn::IfThenElseZero(hn::LoadMaskBits(d8, qh), hn::Set(d8, 16)));
    FACET_FOR_TOKENS { s0[j] = MulAcc(d32, SumPairs(q, hn::LoadU(di8, x[j] + off)), ones, s0[j], s1[j]); }
  } else {
    const size_t N = hn::Lanes(d8);
    static_assert(hn::MaxLanes(d8) >= 8, "LoadMaskBits reads whole bytes");
    for (size_t k = 0; k < 16; k += N) {
      const auto v = hn::LoadU(d8, qs + k);
      auto lo = hn::And(v, m15);
      auto hi = hn::And(hn::ShiftRight<4>(v), m15);
      if constexpr (kFiveBit) {
        lo = hn::Or(lo, hn::IfThenElseZero(hn::LoadMaskBits(d8, qh + k / 8), hn::Set(d8, 16)));
        hi = hn::Or(hi, hn::IfThenElseZero(hn::LoadMaskBits(d8, qh + 2 + k / 8), hn::Set(d8, 16)));
      }
      FACET_FOR_TOKENS {
        s0[j] = MulAcc(d32, SumPairs(lo, hn::LoadU(di8, x[j] + off + k)), ones, s0[j], s1[j]);
        s0[j] = MulAcc(d32, SumPairs(hi, hn::LoadU(di8, x[j] + off + 16 + k)), ones, s0[j], s1[j]);
      }
    }
  }
  FACET_FOR_TOKENS { out[j] = hn::Add(s0[j], s1[j]); }
}

constexpr int kGroup = 16;

// s[i] = (fp16 scale at blk + i·stride) · xd[i] for kGroup blocks: one vector
// conversion instead of one per block. Returns Σ s[i]·bsum[i].
HWY_INLINE float GroupScales(const uint16_t* h, const float* xd, const int16_t* bsum, float* s) {
  // 8 lanes: wider vectors here would slow the 256-bit block loop that
  // follows (on x86, 512-bit instructions in flight close a vector port).
  const hn::CappedTag<float, 8> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const hn::Rebind<int32_t, decltype(df)> d32;
  const hn::Rebind<int16_t, decltype(df)> d16;
  auto off = hn::Zero(df);
  for (int i = 0; i < kGroup; i += int(hn::Lanes(df))) {
    const auto v = hn::Mul(hn::PromoteTo(df, hn::Load(dh, reinterpret_cast<const hwy::float16_t*>(h) + i)),
                           hn::LoadU(df, xd + i));
    hn::Store(v, df, s + i);
    if (bsum != nullptr) off = hn::MulAdd(v, hn::ConvertTo(df, hn::PromoteTo(d32, hn::LoadU(d16, bsum + i))), off);
  }
  return bsum != nullptr ? hn::GetLane(hn::SumOfLanes(df, off)) : 0.0f;
}

// One row of 32-value blocks, NT tokens: Σ_b d_b·dx_b·(Σ q·x − offset·Σx).
template <WeightFormat kFormat, int NT>
void DotRow32(const uint8_t* row, int64_t nb, const Tokens<NT>& tk, float* out) {
  using Block = std::conditional_t<kFormat == WeightFormat::kQ8_0, BlockQ8_0,
                                   std::conditional_t<kFormat == WeightFormat::kQ4_0, BlockQ4_0, BlockQ5_0>>;
  constexpr int64_t kStride = sizeof(Block);
  constexpr int kOffset = kFormat == WeightFormat::kQ8_0 ? 0 : kFormat == WeightFormat::kQ4_0 ? 8 : 16;
  const hn::CappedTag<int16_t, 32> d16q8;
  const hn::Repartition<int32_t, decltype(d16q8)> d32q8;
  const hn::CappedTag<int32_t, 8> d32q4;
  using D32 = std::conditional_t<kFormat == WeightFormat::kQ8_0, decltype(d32q8), decltype(d32q4)>;
  const D32 d32;
  const hn::Rebind<float, D32> df;
  using VF = hn::Vec<decltype(df)>;
  using V32 = hn::Vec<D32>;
  auto dot = [&](const uint8_t* blk, int64_t off, VF* r) {
    V32 iv[NT];
    if constexpr (kFormat == WeightFormat::kQ8_0) {
      BlockDotQ8_0<NT>(d16q8, blk, tk.q16, off, iv);
    } else {
      BlockDotQ4Q5_0<kFormat == WeightFormat::kQ5_0, NT>(blk, tk.q8, off, iv);
    }
    FACET_FOR_TOKENS { r[j] = hn::ConvertTo(df, iv[j]); }
  };
  (void)d32;
  // With one scale per 32 values the float work per block costs about as
  // much as the integer dot: the scales of kGroup blocks are converted
  // together and the FMAs alternate between two accumulators.
  VF acc0[NT], acc1[NT];
  float offset_sum[NT];
  FACET_FOR_TOKENS {
    acc0[j] = acc1[j] = hn::Zero(df);
    offset_sum[j] = 0.0f;
  }
  HWY_ALIGN float s[NT][kGroup];
  int64_t b = 0;
  for (; b + kGroup <= nb; b += kGroup, row += kGroup * kStride) {
    HWY_ALIGN uint16_t h[kGroup];
    for (int i = 0; i < kGroup; ++i) std::memcpy(&h[i], row + size_t(i) * kStride, 2);
    FACET_FOR_TOKENS {
      offset_sum[j] += GroupScales(h, tk.d[j] + b, kOffset != 0 ? tk.bsum32[j] + b : nullptr, s[j]);
    }
#if HWY_COMPILER_GCC  // also true for clang
    // Make the compiler reload s[i] below: a broadcast from memory is a plain
    // load, while broadcasting a lane of the register it still holds them in
    // takes a shuffle, on the port the block loop is short of.
    asm volatile("" : : "r"(s) : "memory");
#endif
    for (int i = 0; i < kGroup; i += 2) {
      VF r0[NT], r1[NT];
      dot(row + i * kStride, (b + i) * kQ32, r0);
      dot(row + (i + 1) * kStride, (b + i + 1) * kQ32, r1);
      FACET_FOR_TOKENS {
        acc0[j] = hn::MulAdd(r0[j], hn::Set(df, s[j][i]), acc0[j]);
        acc1[j] = hn::MulAdd(r1[j], hn::Set(df, s[j][i + 1]), acc1[j]);
      }
    }
  }
  for (; b < nb; ++b, row += kStride) {
    VF r0[NT];
    dot(row, b * kQ32, r0);
    const float wd = LoadF16(row);
    FACET_FOR_TOKENS {
      const float sb = wd * tk.d[j][b];
      acc0[j] = hn::MulAdd(r0[j], hn::Set(df, sb), acc0[j]);
      if constexpr (kOffset != 0) offset_sum[j] += sb * float(tk.bsum32[j][b]);
    }
  }
  FACET_FOR_TOKENS {
    out[j] = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0[j], acc1[j]))) - float(kOffset) * offset_sum[j];
  }
}

// --- 256-value super-blocks: Q4_K, Q5_K, Q6_K --------------------------------
//
// Codes are unsigned, activations int8: byte pairs go through SumPairs into
// int16, then one int16 multiply-add per vector applies the group scales and
// widens to int32. Vectors of 64 bytes hold two adjacent 32-value runs (both
// nibbles of one 32-byte chunk); narrower ones take each run separately.

// Q4_K and Q5_K share everything but the 5th bit. Per 32-value sub-block j:
// value = d·sc_j·q − dmin·m_j, so Σ value·x = d·dx·Σ_j sc_j·Σ q·x −
// dmin·dx·Σ_j m_j·Σx_j; the second sum uses the activation block sums.
template <bool kFiveBit, int NT>
void DotQ45K(const uint8_t* row, int64_t nb, const Tokens<NT>& tk, float* out) {
  using Block = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  const hn::CappedTag<int8_t, 64> di8;
  const hn::RebindToUnsigned<decltype(di8)> d8;
  const hn::RepartitionToWide<decltype(di8)> d16;
  const hn::RepartitionToWide<decltype(d16)> d32;
  const hn::Repartition<uint64_t, decltype(d8)> d64;
  const hn::Rebind<float, decltype(d32)> df;
  const hn::CappedTag<int16_t, 8> d16x8;
  const hn::Repartition<int32_t, decltype(d16x8)> d32x4;
  const hn::Rebind<float, decltype(d32x4)> df4;
  const hn::Rebind<uint8_t, decltype(d16x8)> d8x8;
  using V32 = hn::Vec<decltype(d32)>;
  using V32x4 = hn::Vec<decltype(d32x4)>;
  const auto m15 = hn::Set(d8, 15);
  const auto one = hn::Set(d8, 1);
  hn::Vec<decltype(df)> facc[NT];
  hn::Vec<decltype(df4)> macc[NT];
  FACET_FOR_TOKENS {
    facc[j] = hn::Zero(df);
    macc[j] = hn::Zero(df4);
  }
  for (int64_t b = 0; b < nb; ++b) {
    const auto& blk = reinterpret_cast<const Block*>(row)[b];
    const int64_t xo = b * kQK;
    HWY_ALIGN uint32_t scm[4];
    UnpackScaleMinK4(blk.scales, scm);
    const auto* scm8 = reinterpret_cast<const uint8_t*>(scm);
    // Lane i of the int16 pair sums covers values 2i, 2i+1: sub-block i / 16.
    const ScaleLanes<16, false, decltype(d16)> scales(d16, scm8);
    V32 acc0[NT], acc1[NT];
    FACET_FOR_TOKENS { acc0[j] = acc1[j] = hn::Zero(d32); }
    for (int c = 0; c < 4; ++c) {
      const uint8_t* qs = blk.qs + 32 * c;
      const int64_t xc = xo + 64 * c;
      if constexpr (hn::MaxLanes(d8) >= 64) {
        const hn::Half<decltype(d8)> dh;
        const auto v = hn::LoadU(dh, qs);
        auto q = hn::And(ShiftBytesRight(d8, hn::Combine(d8, v, v), HalfShifts(d64, 0, 4)), m15);
        if constexpr (kFiveBit) {
          const auto h = hn::LoadU(dh, blk.qh);
          const auto bit = hn::And(ShiftBytesRight(d8, hn::Combine(d8, h, h), HalfShifts(d64, 2 * c, 2 * c + 1)), one);
          q = hn::Or(q, hn::ShiftLeft<4>(bit));
        }
        const auto sc = scales.Get(2 * c);
        FACET_FOR_TOKENS { acc0[j] = MulAcc(d32, SumPairs(q, hn::LoadU(di8, tk.q8[j] + xc)), sc, acc0[j], acc1[j]); }
      } else {
        for (size_t k = 0; k < 32; k += hn::Lanes(d8)) {
          const auto v = hn::LoadU(d8, qs + k);
          auto lo = hn::And(v, m15);
          auto hi = hn::And(hn::ShiftRight<4>(v), m15);
          if constexpr (kFiveBit) {
            const auto h = hn::LoadU(d8, blk.qh + k);
            lo = hn::Or(lo, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c), one)));
            hi = hn::Or(hi, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c + 1), one)));
          }
          const auto sc_lo = scales.Get(2 * c), sc_hi = scales.Get(2 * c + 1);
          FACET_FOR_TOKENS {
            acc0[j] = MulAcc(d32, SumPairs(lo, hn::LoadU(di8, tk.q8[j] + xc + k)), sc_lo, acc0[j], acc1[j]);
            acc0[j] = MulAcc(d32, SumPairs(hi, hn::LoadU(di8, tk.q8[j] + xc + 32 + k)), sc_hi, acc0[j], acc1[j]);
          }
        }
      }
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(&blk);
    const float wd = LoadF16(bytes), wmin = LoadF16(bytes + 2);
    // Mins: Σ_j m_j·bsum32_j, kept as a vector across blocks.
    V32x4 m0[NT], m1[NT];
    FACET_FOR_TOKENS { m0[j] = m1[j] = hn::Zero(d32x4); }
    for (size_t g = 0; g < 8; g += hn::Lanes(d16x8)) {
      const auto mins = hn::PromoteTo(d16x8, hn::LoadU(d8x8, scm8 + 8 + g));
      FACET_FOR_TOKENS { m0[j] = MulAcc(d32x4, mins, hn::LoadU(d16x8, tk.bsum32[j] + 8 * b + g), m0[j], m1[j]); }
    }
    FACET_FOR_TOKENS {
      const float dx = tk.d[j][b];
      facc[j] = hn::MulAdd(hn::ConvertTo(df, hn::Add(acc0[j], acc1[j])), hn::Set(df, wd * dx), facc[j]);
      macc[j] = hn::MulAdd(hn::ConvertTo(df4, hn::Add(m0[j], m1[j])), hn::Set(df4, wmin * dx), macc[j]);
    }
  }
  FACET_FOR_TOKENS { out[j] = hn::GetLane(hn::SumOfLanes(df, facc[j])) - hn::GetLane(hn::SumOfLanes(df4, macc[j])); }
}

// Q6_K: value = d·sc_g·(q − 32) per 16-value group g, q in [0, 64). The −32
// is taken out with the activation group sums. Per 128-value half n and
// l < 32: ql[l] holds the low 4 bits of values l (low nibble) and l + 64,
// ql[l + 32] those of l + 32 and l + 96, and qh[l] the top 2 bits of l,
// l + 32, l + 64, l + 96 at bits 0, 2, 4, 6.
template <int NT>
void DotQ6K(const uint8_t* row, int64_t nb, const Tokens<NT>& tk, float* out) {
  const hn::CappedTag<int8_t, 64> di8;
  const hn::RebindToUnsigned<decltype(di8)> d8;
  const hn::RepartitionToWide<decltype(di8)> d16;
  const hn::RepartitionToWide<decltype(d16)> d32;
  const hn::Repartition<uint64_t, decltype(d8)> d64;
  const hn::RebindToUnsigned<decltype(d16)> du16;
  const hn::Rebind<float, decltype(d32)> df;
  const hn::CappedTag<int16_t, 16> d16x16;
  const hn::Repartition<int32_t, decltype(d16x16)> d32x8;
  const hn::Rebind<float, decltype(d32x8)> df8;
  const hn::Rebind<int8_t, decltype(d16x16)> ds8;
  using V32 = hn::Vec<decltype(d32)>;
  using V32x8 = hn::Vec<decltype(d32x8)>;
  const auto m15 = hn::Set(d8, 15);
  const auto m48 = hn::Set(d8, 0x30);
  // The byte shifts below go through 16-bit lanes; the masks keep each
  // byte's own bits.
  auto shl = [&](auto v, auto bits) { return hn::BitCast(d8, hn::ShiftLeft<decltype(bits)::value>(hn::BitCast(du16, v))); };
  auto shr = [&](auto v, auto bits) { return hn::BitCast(d8, hn::ShiftRight<decltype(bits)::value>(hn::BitCast(du16, v))); };
  using Two = std::integral_constant<int, 2>;
  using Four = std::integral_constant<int, 4>;
  hn::Vec<decltype(df)> facc[NT];
  hn::Vec<decltype(df8)> oacc[NT];
  FACET_FOR_TOKENS {
    facc[j] = hn::Zero(df);
    oacc[j] = hn::Zero(df8);
  }
  const auto* blk = reinterpret_cast<const BlockQ6_K*>(row);
  for (int64_t b = 0; b < nb; ++b) {
    // Lane i of the int16 pair sums covers values 2i, 2i+1: group i / 8.
    const ScaleLanes<8, true, decltype(d16)> scales(d16, reinterpret_cast<const uint8_t*>(blk[b].scales));
    V32 acc0[NT], acc1[NT];
    FACET_FOR_TOKENS { acc0[j] = acc1[j] = hn::Zero(d32); }
    for (int n = 0; n < 2; ++n) {
      const uint8_t* ql = blk[b].ql + 64 * n;
      const uint8_t* qh = blk[b].qh + 32 * n;
      const int64_t xo = b * kQK + 128 * n;
      if constexpr (hn::MaxLanes(d8) >= 64) {
        // [ql[0..32) | ql[32..64)] gives values [l | l + 32] from its low
        // nibbles and [l + 64 | l + 96] from its high nibbles; qh shifted by
        // 0 | 2 puts their top bits at bits 0-1 (low) and 4-5 (high).
        const hn::Half<decltype(d8)> dh;
        const auto a = hn::LoadU(d8, ql);
        const auto h = hn::LoadU(dh, qh);
        const auto t = ShiftBytesRight(d8, hn::Combine(d8, h, h), HalfShifts(d64, 0, 2));
        const auto q_lo = hn::OrAnd(hn::And(a, m15), shl(t, Four()), m48);
        const auto q_hi = hn::OrAnd(hn::And(shr(a, Four()), m15), t, m48);
        const auto sc_lo = scales.Get(8 * n), sc_hi = scales.Get(8 * n + 4);
        FACET_FOR_TOKENS {
          acc0[j] = MulAcc(d32, SumPairs(q_lo, hn::LoadU(di8, tk.q8[j] + xo)), sc_lo, acc0[j], acc1[j]);
          acc0[j] = MulAcc(d32, SumPairs(q_hi, hn::LoadU(di8, tk.q8[j] + xo + 64)), sc_hi, acc0[j], acc1[j]);
        }
      } else {
        for (size_t l = 0; l < 32; l += hn::Lanes(d8)) {
          const auto a = hn::LoadU(d8, ql + l);
          const auto c = hn::LoadU(d8, ql + 32 + l);
          const auto h = hn::LoadU(d8, qh + l);
          const auto q1 = hn::OrAnd(hn::And(a, m15), shl(h, Four()), m48);
          const auto q2 = hn::OrAnd(hn::And(c, m15), shl(h, Two()), m48);
          const auto q3 = hn::OrAnd(hn::And(shr(a, Four()), m15), h, m48);
          const auto q4 = hn::OrAnd(hn::And(shr(c, Four()), m15), shr(h, Two()), m48);
          const int g = 8 * n + int(l / 16);
          FACET_FOR_TOKENS {
            const int8_t* x = tk.q8[j] + xo;
            acc0[j] = MulAcc(d32, SumPairs(q1, hn::LoadU(di8, x + l)), scales.Get(g), acc0[j], acc1[j]);
            acc0[j] = MulAcc(d32, SumPairs(q2, hn::LoadU(di8, x + 32 + l)), scales.Get(g + 2), acc0[j], acc1[j]);
            acc0[j] = MulAcc(d32, SumPairs(q3, hn::LoadU(di8, x + 64 + l)), scales.Get(g + 4), acc0[j], acc1[j]);
            acc0[j] = MulAcc(d32, SumPairs(q4, hn::LoadU(di8, x + 96 + l)), scales.Get(g + 6), acc0[j], acc1[j]);
          }
        }
      }
    }
    const float wd = LoadF16(reinterpret_cast<const uint8_t*>(&blk[b].d));
    // Offsets: 32·Σ_g sc_g·bsum16_g, kept as a vector across blocks.
    V32x8 o0[NT], o1[NT];
    FACET_FOR_TOKENS { o0[j] = o1[j] = hn::Zero(d32x8); }
    for (size_t g = 0; g < 16; g += hn::Lanes(d16x16)) {
      const auto sc = hn::PromoteTo(d16x16, hn::LoadU(ds8, blk[b].scales + g));
      FACET_FOR_TOKENS { o0[j] = MulAcc(d32x8, sc, hn::LoadU(d16x16, tk.bsum16[j] + 16 * b + g), o0[j], o1[j]); }
    }
    FACET_FOR_TOKENS {
      const float dd = wd * tk.d[j][b];
      facc[j] = hn::MulAdd(hn::ConvertTo(df, hn::Add(acc0[j], acc1[j])), hn::Set(df, dd), facc[j]);
      oacc[j] = hn::MulAdd(hn::ConvertTo(df8, hn::Add(o0[j], o1[j])), hn::Set(df8, dd * 32.0f), oacc[j]);
    }
  }
  FACET_FOR_TOKENS { out[j] = hn::GetLane(hn::SumOfLanes(df, facc[j])) - hn::GetLane(hn::SumOfLanes(df8, oacc[j])); }
}

#undef FACET_FOR_TOKENS

// Outputs of one weight row for tokens [t, t + NT). (The 32-value block
// formats go through MatMulRows32 on x86; DotRow32 serves other targets.)
template <int NT>
HWY_INLINE void DotTokens(WeightFormat f, const uint8_t* row, const QuantActs& a, int64_t t, float* y, int64_t ldy) {
  const int64_t nb = a.cols / a.qb;
  const Tokens<NT> tk(a, t);
  float v[NT] = {};
  switch (f) {
    case WeightFormat::kQ8_0: DotRow32<WeightFormat::kQ8_0, NT>(row, nb, tk, v); break;
    case WeightFormat::kQ4_0: DotRow32<WeightFormat::kQ4_0, NT>(row, nb, tk, v); break;
    case WeightFormat::kQ5_0: DotRow32<WeightFormat::kQ5_0, NT>(row, nb, tk, v); break;
    case WeightFormat::kQ4_K: DotQ45K<false, NT>(row, nb, tk, v); break;
    case WeightFormat::kQ5_K: DotQ45K<true, NT>(row, nb, tk, v); break;
    case WeightFormat::kQ6_K: DotQ6K<NT>(row, nb, tk, v); break;
    default: break;  // rejected by the caller
  }
  for (int j = 0; j < NT; ++j) y[(t + j) * ldy] = v[j];
}

// --- 32-value blocks on x86: exact block sums, two layouts -------------------
//
// For Q8_0/Q4_0/Q5_0 one output is y[t, r] = E + O, where E (O) is the fma
// chain acc = fma(float(S_b), d_b·dx_b, acc) from 0 over the even (odd)
// blocks b in order, and S_b = Σ q·x − offset·Σx is the exact integer dot of
// block b (|S_b| < 2^24, so the conversion is exact too; the offset leaves in
// integers, without the cancellation a float Σx term would bring). An integer sum is the same however
// it is added up, so two kernels give the same bits for every (row, token):
// RowLanes puts 8 weight rows in the lanes of one float vector (few tokens:
// decode), TokenLanes puts 8 tokens in the lanes (prefill; each 4-byte weight
// group is broadcast against 8 tokens' activations, no reductions). Which
// kernel a token meets depends on the batch; its output does not.
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3

template <WeightFormat kFormat>
constexpr int64_t kStride32 = kFormat == WeightFormat::kQ8_0 ? int64_t(sizeof(BlockQ8_0))
                              : kFormat == WeightFormat::kQ4_0 ? int64_t(sizeof(BlockQ4_0))
                                                                : int64_t(sizeof(BlockQ5_0));
template <WeightFormat kFormat>
constexpr int kOffset32 = kFormat == WeightFormat::kQ4_0 ? 8 : kFormat == WeightFormat::kQ5_0 ? 16 : 0;

// Unsigned codes (value + offset) of a Q4_0/Q5_0 block, 32 bytes in value order.
template <WeightFormat kFormat>
HWY_INLINE __m256i Codes32(const uint8_t* blk) {
  const hn::CappedTag<uint8_t, 32> d8;
  const hn::Repartition<uint64_t, decltype(d8)> d64;
  constexpr bool kFive = kFormat == WeightFormat::kQ5_0;
  auto q = hn::And(ShiftBytesRight(d8, hn::LoadDup128(d8, blk + (kFive ? 6 : 2)), HalfShifts(d64, 0, 4)), hn::Set(d8, 15));
  if constexpr (kFive) q = hn::Or(q, hn::IfThenElseZero(hn::LoadMaskBits(d8, blk + 2), hn::Set(d8, 16)));
  return q.raw;
}

// 8 int32 lanes whose sum is the integer dot of one block with 32
// activations (int8 for Q4_0/Q5_0, int16 for Q8_0), offset not taken out.
template <WeightFormat kFormat>
HWY_INLINE __m256i BlockPartials(const uint8_t* blk, const void* x) {
  if constexpr (kFormat == WeightFormat::kQ8_0) {
    const auto* qs = reinterpret_cast<const __m128i*>(blk + 2);
    const auto* xv = static_cast<const __m256i*>(x);
    const __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(qs)), _mm256_loadu_si256(xv));
    const __m256i hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(qs + 1)), _mm256_loadu_si256(xv + 1));
    return _mm256_add_epi32(lo, hi);
  } else {
    // Codes <= 31 and |x| <= 127: pmaddubsw never saturates (2·31·127).
    const __m256i p = _mm256_maddubs_epi16(Codes32<kFormat>(blk), _mm256_loadu_si256(static_cast<const __m256i*>(x)));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
  }
}

// Lane i = the sum of the 8 lanes of p[i].
HWY_INLINE __m256i SumEach8(const __m256i* p) {
  const __m256i g0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
  const __m256i g1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20), _mm256_permute2x128_si256(g0, g1, 0x31));
}

// RowLanes: rows [r0, r0 + n) (n <= 8) for tokens [t, t + NT).
template <WeightFormat kFormat, int NT>
void RowLanes32(const uint8_t* w, int64_t row_bytes, int64_t r0, int n, const QuantActs& a, int64_t t, float* y,
                int64_t ldy) {
  constexpr int64_t kStride = kStride32<kFormat>;
  constexpr bool kWide = kFormat == WeightFormat::kQ8_0;
  const int64_t nb = a.cols / kQ32;
  const uint8_t* rows[8];
  for (int i = 0; i < 8; ++i) rows[i] = w + (r0 + std::min(i, n - 1)) * row_bytes;
  __m256 acc[NT][2];
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    HWY_ALIGN uint16_t h[8];
    for (int i = 0; i < 8; ++i) std::memcpy(&h[i], rows[i] + b * kStride, 2);
    const __m256 dw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
    for (int j = 0; j < NT; ++j) {
      const int64_t tj = t + j;
      const void* x = kWide ? static_cast<const void*>(a.q16 + tj * a.cols + b * kQ32)
                            : static_cast<const void*>(a.q8 + tj * a.cols + b * kQ32);
      __m256i p[8];
      for (int i = 0; i < 8; ++i) p[i] = BlockPartials<kFormat>(rows[i] + b * kStride, x);
      __m256i s = SumEach8(p);
      if constexpr (kOffset32<kFormat> != 0) {
        s = _mm256_sub_epi32(s, _mm256_set1_epi32(kOffset32<kFormat> * int32_t(a.bsum32[tj * nb + b])));
      }
      const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[tj * nb + b]));
      acc[j][b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[j][b & 1]);
    }
  }
  for (int j = 0; j < NT; ++j) {
    HWY_ALIGN float o[8];
    _mm256_store_ps(o, _mm256_add_ps(acc[j][0], acc[j][1]));
    for (int i = 0; i < n; ++i) y[(t + j) * ldy + r0 + i] = o[i];
  }
}

// TokenLanes: one weight row for the NG token groups starting at group g
// (tokens [8g, 8g + 8·NG)).
template <WeightFormat kFormat, int NG>
void TokenLanes32(const uint8_t* row, const TokenLanes& lanes, int64_t nb, int64_t g, float* y, int64_t ldy) {
  constexpr int64_t kStride = kStride32<kFormat>;
  constexpr bool kWide = kFormat == WeightFormat::kQ8_0;
  constexpr int kUnits = kWide ? 16 : 8;  // 4-byte groups per block
  __m256 acc[NG][2];
  for (int k = 0; k < NG; ++k) acc[k][0] = acc[k][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + b * kStride;
    // The block's values as 4-byte groups in memory, each broadcast below
    // straight from there (a load, not a shuffle).
    HWY_ALIGN uint8_t c[64];
    if constexpr (kWide) {
      const auto* qs = reinterpret_cast<const __m128i*>(blk + 2);
      _mm256_store_si256(reinterpret_cast<__m256i*>(c), _mm256_cvtepi8_epi16(_mm_loadu_si128(qs)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(c + 32), _mm256_cvtepi8_epi16(_mm_loadu_si128(qs + 1)));
    } else {
      _mm256_store_si256(reinterpret_cast<__m256i*>(c), Codes32<kFormat>(blk));
    }
    const __m256 dw = _mm256_set1_ps(LoadF16(blk));
    for (int k = 0; k < NG; ++k) {
      const int64_t gb = (g + k) * nb + b;
      const auto* xv = reinterpret_cast<const __m256i*>(lanes.x + gb * kUnits * 32);
      __m256i s;
      if constexpr (kWide) {
        s = _mm256_setzero_si256();
        for (int u = 0; u < kUnits; ++u) {
          int32_t wu;
          std::memcpy(&wu, c + 4 * u, 4);
          s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_set1_epi32(wu), _mm256_load_si256(xv + u)));
        }
      } else {
        // Four pmaddubsw results per int16 lane stay below 4·2·31·127 < 2^15.
        __m256i h[2];
        for (int half = 0; half < 2; ++half) {
          __m256i p = _mm256_setzero_si256();
          for (int u = 4 * half; u < 4 * half + 4; ++u) {
            int32_t wu;
            std::memcpy(&wu, c + 4 * u, 4);
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi32(wu), _mm256_load_si256(xv + u)));
          }
          h[half] = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
        }
        s = _mm256_add_epi32(h[0], h[1]);
      }
      if constexpr (kOffset32<kFormat> != 0) {
        s = _mm256_sub_epi32(s, _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes.ob + gb * kLaneTokens)));
      }
      const __m256 scale = _mm256_mul_ps(dw, _mm256_load_ps(lanes.d + gb * kLaneTokens));
      acc[k][b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[k][b & 1]);
    }
  }
  for (int k = 0; k < NG; ++k) {
    HWY_ALIGN float o[8];
    _mm256_store_ps(o, _mm256_add_ps(acc[k][0], acc[k][1]));
    for (int l = 0; l < kLaneTokens; ++l) y[((g + k) * kLaneTokens + l) * ldy] = o[l];
  }
}

// Rows [r0, r1) × tokens [0, t1) of a 32-value block format: token groups
// from the pack through TokenLanes, the remaining tokens through RowLanes.
template <WeightFormat kFormat>
void MatMulRows32(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const QuantActs& a,
                  const TokenLanes& lanes, int64_t t1, float* y, int64_t ldy) {
  const int64_t nb = a.cols / kQ32;
  const int64_t groups = lanes.groups;
  // Blocks of rows that stay in L1 (with two token groups' activations,
  // 8·cols or 16·cols bytes each) while every token group passes.
  constexpr int64_t kBlockBytes = 8 << 10;
  const int64_t block = std::max<int64_t>(8, kBlockBytes / row_bytes / 8 * 8);
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = std::min(r1, rb + block);
    int64_t g = 0;
    for (; g + 2 <= groups; g += 2) {
      for (int64_t r = rb; r < re; ++r) TokenLanes32<kFormat, 2>(w + r * row_bytes, lanes, nb, g, y + r, ldy);
    }
    if (g < groups) {
      for (int64_t r = rb; r < re; ++r) TokenLanes32<kFormat, 1>(w + r * row_bytes, lanes, nb, g, y + r, ldy);
    }
    for (int64_t t = groups * kLaneTokens; t < t1; t += kMaxTokens) {
      for (int64_t r = rb; r < re; r += 8) {
        // Decode streams each weight once from DRAM: fetch the next 8 rows
        // while these are computed.
        if (t1 <= kMaxTokens) {
          const uint8_t* next = w + (r + 8) * row_bytes;
          const int64_t bytes = std::min<int64_t>(8, r1 - r - 8) * row_bytes;
          for (int64_t off = 0; off < bytes; off += 64) hwy::Prefetch(next + off);
        }
        const int n = int(std::min<int64_t>(8, re - r));
        switch (std::min<int64_t>(kMaxTokens, t1 - t)) {
          case 4: RowLanes32<kFormat, 4>(w, row_bytes, r, n, a, t, y, ldy); break;
          case 3: RowLanes32<kFormat, 3>(w, row_bytes, r, n, a, t, y, ldy); break;
          case 2: RowLanes32<kFormat, 2>(w, row_bytes, r, n, a, t, y, ldy); break;
          default: RowLanes32<kFormat, 1>(w, row_bytes, r, n, a, t, y, ldy); break;
        }
      }
    }
  }
}
#endif  // HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3

// Tokens [t, t1), at most kMaxTokens of them, for weight rows [r0, r1).
HWY_INLINE void DotRowsTokens(WeightFormat f, const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1,
                              const QuantActs& a, int64_t t, int64_t t1, float* y, int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w + r * row_bytes;
    switch (t1 - t) {
      case 4: DotTokens<4>(f, row, a, t, y + r, ldy); break;
      case 3: DotTokens<3>(f, row, a, t, y + r, ldy); break;
      case 2: DotTokens<2>(f, row, a, t, y + r, ldy); break;
      case 1: DotTokens<1>(f, row, a, t, y + r, ldy); break;
      default: break;
    }
  }
}

// y[t·ldy + r] for rows [r0, r1) and tokens [t0, t1), in blocks of rows
// that fit L1 beside one group's activations: each block of rows is read
// from memory once and then stays in L1 while every group of tokens passes,
// and each group's activations stay in L1 across the block's rows.
void MatMulRows(WeightFormat f, const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1,
                const QuantActs& a, const TokenLanes& lanes, int64_t t0, int64_t t1, float* y, int64_t ldy) {
  static_assert(kMaxTokens == 4, "DotRowsTokens dispatches 1..4 tokens");
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
  switch (f) {  // the token-lane pack covers tokens from 0
    case WeightFormat::kQ8_0: return MatMulRows32<WeightFormat::kQ8_0>(w, row_bytes, r0, r1, a, lanes, t1, y, ldy);
    case WeightFormat::kQ4_0: return MatMulRows32<WeightFormat::kQ4_0>(w, row_bytes, r0, r1, a, lanes, t1, y, ldy);
    case WeightFormat::kQ5_0: return MatMulRows32<WeightFormat::kQ5_0>(w, row_bytes, r0, r1, a, lanes, t1, y, ldy);
    default: break;
  }
#endif
  if (t1 - t0 <= kMaxTokens) {
    // Decode reads each weight once, from DRAM: ask for the row after next
    // now, so its lines are on their way while this one is computed.
    for (int64_t r = r0; r < r1; ++r) {
      if (r + 2 < r1) {
        const uint8_t* next = w + (r + 2) * row_bytes;
        for (int64_t off = 0; off < row_bytes; off += 64) hwy::Prefetch(next + off);
      }
      DotRowsTokens(f, w, row_bytes, r, r + 1, a, t0, t1, y, ldy);
    }
    return;
  }
  constexpr int64_t kBlockBytes = 16 << 10;
  const int64_t block = std::max<int64_t>(1, kBlockBytes / row_bytes);
  for (int64_t rb = r0; rb < r1; rb += block) {
    const int64_t re = std::min(r1, rb + block);
    for (int64_t t = t0; t < t1; t += kMaxTokens) {
      DotRowsTokens(f, w, row_bytes, rb, re, a, t, std::min(t1, t + kMaxTokens), y, ldy);
    }
  }
}

#endif  // HWY_TARGET == HWY_SCALAR

}  // namespace HWY_NAMESPACE
}  // namespace quant_internal
}  // namespace facet
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace facet {
namespace quant_internal {
namespace {

HWY_EXPORT(MatMulRows);
HWY_EXPORT(TargetName);


// Int8 activations of one token: blocks of qb values, scale amax/127,
// stored as int8 (q8) or int16 (q16, the other null).
void QuantizeActRow(const float* x, int64_t cols, int qb, int8_t* q8, int16_t* q16, float* d, int16_t* bsum16,
                    int16_t* bsum32) {
  for (int64_t b = 0; b < cols / qb; ++b) {
    const float* xb = x + b * qb;
    const float amax = AbsMax(xb, qb);
    d[b] = amax / 127.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < qb; ++i) {
      const int v = RoundClamp(xb[i] * id, -127, 127);
      if (q16 != nullptr) {
        q16[b * qb + i] = int16_t(v);
      } else {
        q8[b * qb + i] = int8_t(v);
      }
    }
  }
  for (int64_t g = 0; g < cols / 16; ++g) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += q16 != nullptr ? q16[16 * g + i] : q8[16 * g + i];
    bsum16[g] = int16_t(s);
  }
  for (int64_t g = 0; g < cols / 32; ++g) bsum32[g] = int16_t(bsum16[2 * g] + bsum16[2 * g + 1]);
}

// Per-thread activation buffers for QuantMatMul; they only grow. 64-byte
// aligned: the kernels read the activations in whole vectors, and a 64-byte
// load that straddles two cache lines costs two.
template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { ::operator delete(data_, std::align_val_t{64}); }
  T* data() { return data_; }
  void Reserve(int64_t n) {
    if (size_t(n) <= size_) return;
    ::operator delete(data_, std::align_val_t{64});
    data_ = static_cast<T*>(::operator new(size_t(n) * sizeof(T), std::align_val_t{64}));
    size_ = size_t(n);
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

struct ActScratch {
  AlignedBuffer<int8_t> q8;
  AlignedBuffer<int16_t> q16, bsum16, bsum32;
  AlignedBuffer<float> d;
  // TokenLanes of the 32-value block formats.
  AlignedBuffer<uint8_t> lane_x;
  AlignedBuffer<float> lane_d;
  AlignedBuffer<int32_t> lane_ob;
  void Reserve(int64_t tokens, int64_t cols, int64_t blocks, bool wide, bool lanes) {
    (wide ? q16.Reserve(tokens * cols) : q8.Reserve(tokens * cols));
    d.Reserve(tokens * blocks);
    bsum16.Reserve(tokens * cols / 16);
    bsum32.Reserve(tokens * cols / 32);
    if (lanes) {
      lane_x.Reserve(tokens * cols * (wide ? 2 : 1));
      lane_d.Reserve(tokens * blocks);
      lane_ob.Reserve(tokens * blocks);
    }
  }
};

// Token group g of `a` into the TokenLanes layout (see TokenLanes).
void PackTokenLanes(const QuantActs& a, int64_t g, int32_t offset, uint8_t* lx, float* ld, int32_t* lob) {
  const int64_t nb = a.cols / kQ32;
  const int64_t units = a.cols * (a.q16 != nullptr ? 2 : 1) / 4;
  for (int l = 0; l < kLaneTokens; ++l) {
    const int64_t t = g * kLaneTokens + l;
    const auto* src = a.q16 != nullptr ? reinterpret_cast<const uint8_t*>(a.q16 + t * a.cols)
                                       : reinterpret_cast<const uint8_t*>(a.q8 + t * a.cols);
    uint8_t* dst = lx + g * units * 32 + l * 4;
    for (int64_t v = 0; v < units; ++v) std::memcpy(dst + v * 32, src + 4 * v, 4);
    for (int64_t b = 0; b < nb; ++b) {
      ld[(g * nb + b) * kLaneTokens + l] = a.d[t * nb + b];
      lob[(g * nb + b) * kLaneTokens + l] = offset * int32_t(a.bsum32[t * nb + b]);
    }
  }
}

}  // namespace
}  // namespace quant_internal

using namespace quant_internal;  // NOLINT: this file's own helpers

absl::Status QuantMatMul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool) {
  if (!IsQuantized(w.format)) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantMatMul: weight format ", std::string(WeightFormatName(w.format)), " is not a block format"));
  }
  if (m < 0 || w.rows < 0 || w.cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantMatMul: bad shape m=", m, " rows=", w.rows, " cols=", w.cols));
  }
  if (w.cols % BlockSize(w.format) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("QuantMatMul: cols = ", w.cols, " is not a multiple of the ",
                                                   std::string(WeightFormatName(w.format)), " block size ",
                                                   BlockSize(w.format)));
  }
  if (m == 0 || w.rows == 0) return absl::OkStatus();
  if (x == nullptr || y == nullptr || w.data == nullptr) {
    return absl::InvalidArgumentError("QuantMatMul: null pointer");
  }
  if (reinterpret_cast<uintptr_t>(w.data) % 2 != 0) {
    return absl::InvalidArgumentError("QuantMatMul: weight data must be 2-byte aligned (fp16 scales)");
  }
  // One arithmetic for every m (batch invariance): a token's outputs come
  // from the same int8 quantization and the same float operations whatever
  // the batch, the token's place in it and the thread count, so a decode row
  // batched with a prefill chunk gets the bits it would get alone. (An fp32
  // panel path for m >= 64 made outputs depend on m.) The kernels may differ
  // by batch size only where they compute the same bits: DotTokens<1..4>, and
  // RowLanes32 / TokenLanes32 (exact integer block sums).
  const int qb = BlockSize(w.format) == kQK ? kQK : kQ32;
  const int64_t cols = w.cols;
  const int64_t nb = cols / qb;
  // Enough tokens per tile to reuse each weight row from L1, few enough that
  // the tile's activations stay in L2.
  const int64_t tile = std::max<int64_t>(1, std::min<int64_t>(64, (256 << 10) / (2 * cols)));
  const int64_t tn_max = std::min(m, tile);
  // Kept per calling thread, so that decode (a few hundred calls per token
  // with the same few shapes) does not allocate.
  thread_local ActScratch scratch;
  const bool wide = WideActs(w.format);
  const bool lanes32 = qb == kQ32;
  scratch.Reserve(tn_max, cols, nb, wide, lanes32);
  const int32_t offset = w.format == WeightFormat::kQ4_0 ? 8 : w.format == WeightFormat::kQ5_0 ? 16 : 0;
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
    int8_t* q8 = wide ? nullptr : scratch.q8.data();
    int16_t* q16 = wide ? scratch.q16.data() : nullptr;
    float* d = scratch.d.data();
    int16_t* bs16 = scratch.bsum16.data();
    int16_t* bs32 = scratch.bsum32.data();
    const QuantActs acts{cols, qb, q8, q16, d, bs16, bs32};
    // The caller's thread_local scratch, read by the pool threads through
    // these pointers while the caller waits.
    uint8_t* lx = scratch.lane_x.data();
    float* ld = scratch.lane_d.data();
    int32_t* lob = scratch.lane_ob.data();
    const TokenLanes lanes{lanes32 ? tn / kLaneTokens : 0, lx, ld, lob};
    // By groups of kLaneTokens tokens: each full group is packed as soon as
    // its tokens are quantized.
    const int64_t groups = (tn + kLaneTokens - 1) / kLaneTokens;
    auto quantize = [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        for (int64_t t = g * kLaneTokens; t < std::min(tn, (g + 1) * kLaneTokens); ++t) {
          QuantizeActRow(x + (t0 + t) * cols, cols, qb, wide ? nullptr : q8 + t * cols,
                         wide ? q16 + t * cols : nullptr, d + t * nb, bs16 + t * (cols / 16), bs32 + t * (cols / 32));
        }
        if (g < lanes.groups) {
          PackTokenLanes(acts, g, offset, lx, ld, lob);
        }
      }
    };
    auto rows = [&](int64_t run0, int64_t run1) {
      HWY_DYNAMIC_DISPATCH(MatMulRows)(w.format, wbytes, row_bytes, run0 * kRowRun, std::min(w.rows, run1 * kRowRun),
                                       acts, lanes, 0, tn, y + t0 * w.rows, w.rows);
    };
    const bool parallel = pool != nullptr && pool->num_threads() > 1 && w.rows * row_bytes * tn >= kMinParallelBytes;
    if (!parallel) {
      quantize(0, groups);
      rows(0, runs);
    } else {
      pool->ParallelFor(groups, 1, quantize);
      pool->ParallelFor(runs, 1, rows);
    }
  }
  return absl::OkStatus();
}

const char* QuantSimdTarget() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace facet
#endif  // HWY_ONCE
