// MatMul for f32/f16/bf16 weights: y[m, N] = x[m, K] · Wᵀ, W [N, K].
//
// Two regimes:
// * Few rows (decode): memory-bound. Each weight row is streamed once and
//   dotted with every row of x while it is in registers; the weight dtype is
//   widened to f32 in registers. Partial sums live in SIMD lanes and are
//   reduced at the end of the row.
// * Many rows (prefill): compute-bound. The classic BLIS scheme: a panel of
//   NR weight rows × KC columns is converted to f32 and transposed (in
//   registers) once into per-thread scratch ([k][NR]), x is packed into
//   MR-row strips, then a register-blocked MR × NR micro-kernel broadcasts
//   x[i, k] and FMAs it with two vectors of the panel. Each y element is one
//   sequential fp32 FMA chain over k.
// Both parallelise over output columns (weight rows), so threads never share
// an output element and the result does not depend on the thread count.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#include "core/logging.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/ops_check.h"
#include "kernels/cpu/hwy_targets.h"
#include "kernels/cpu/quant.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace facet::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr size_t kLanes = hn::MaxLanes(DF());

// Weight element types as Highway sees them.
HWY_INLINE VF LoadWeights(DF df, const float* p) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadWeights(DF df, const hwy::bfloat16_t* p) {
  return hn::PromoteTo(df, hn::LoadU(hn::Rebind<hwy::bfloat16_t, DF>(), p));
}
HWY_INLINE VF LoadWeights(DF df, const hwy::float16_t* p) {
  return hn::PromoteTo(df, hn::LoadU(hn::Rebind<hwy::float16_t, DF>(), p));
}

// ---------------------------------------------------------------------------
// Few rows: dot products.

// Register budget: AVX-512 has 32 vector registers, AVX2 16.
constexpr int kDotRowsW = 4;
constexpr int kDotRowsX = kLanes >= 16 ? 4 : 2;

// Elements of a weight row per 64-byte cache line, and SIMD vectors per line.
template <typename WT>
constexpr int64_t kLineElems = 64 / sizeof(WT);
template <typename WT>
constexpr int64_t kVecsPerLine = std::max<int64_t>(1, kLineElems<WT> / int64_t(kLanes));

// How far DotTile reads ahead in each weight row, in bytes: enough lines in
// flight across the RW row streams to cover DRAM latency at one core's share
// of the bandwidth, little enough to stay in L1.
constexpr int64_t kAheadBytes = 1024;

// Prefetches the line kAheadBytes past column k of each of the RW rows; a row
// that runs out continues into the same row of the next tile, `ahead`.
template <int RW, typename WT>
HWY_INLINE void PrefetchAhead(const WT* w, const WT* ahead, int64_t stride, int64_t K,
                              int64_t k) {
  const int64_t kk = k + kAheadBytes / int64_t(sizeof(WT));
  if (kk < K) {
    for (int j = 0; j < RW; ++j) hwy::Prefetch(w + j * stride + kk);
  } else if (ahead != nullptr) {
    for (int j = 0; j < RW; ++j) hwy::Prefetch(ahead + j * stride + (kk - K));
  }
}

using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using VU = hn::Vec<DU>;

// x rows for bf16 weights, reordered to match how DotTile widens weight
// pairs: in each block of 2·kLanes columns the even columns come first, then
// the odd ones; dst rows are ldx long with zeros past K.
void PairUpRows(const float* x, int64_t m, int64_t K, int64_t ldx, float* HWY_RESTRICT dst) {
  constexpr int64_t kPair = 2 * int64_t(kLanes);
  for (int64_t i = 0; i < m; ++i) {
    float* row = dst + i * ldx;
    std::fill(row + K - K % kPair, row + ldx, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t block = k - k % kPair, lane = (k % kPair) / 2;
      row[block + (k % 2) * int64_t(kLanes) + lane] = x[i * K + k];
    }
  }
}

// y[i * ldy + j] = x[i, :] · w[j, :] for i < RX, j < RW.
//
// Decode is bound by DRAM reads, and one core alone does not keep enough
// lines in flight: the hardware streamer stops at every 4 KiB page and
// restarts slowly on the many short rows (2-14 KiB) of a transformer.
// So each line read here is matched by a software prefetch kAheadBytes
// further along its row, which crosses pages; near the end of the rows it
// moves on to `ahead` (or null), the next tile the caller will run. Measured
// on a 2-core Cascade Lake: 6.4 -> 8.9 GB/s on one core, with the L1 hint
// a little ahead of the L2 one.
template <int RW, int RX, typename WT>
HWY_NOINLINE void DotTile(const float* HWY_RESTRICT x, int64_t ldx, int64_t K,
                          const WT* HWY_RESTRICT w, int64_t w_stride, float* HWY_RESTRICT y,
                          int64_t ldy, const WT* ahead) {
  const DF df;
  VF acc[RX][RW];
  for (int i = 0; i < RX; ++i) {
    for (int j = 0; j < RW; ++j) acc[i][j] = hn::Zero(df);
  }
  if constexpr (std::is_same_v<WT, hwy::bfloat16_t>) {
    // x comes from PairUpRows. A 32-bit lane holds two bf16 weights, and each
    // is the top half of its f32: a shift and a mask widen a whole vector of
    // pairs, half the work of a widening load per vector.
    const DU du;
    const VU high = hn::Set(du, 0xFFFF0000u);
    constexpr int64_t kPair = 2 * int64_t(kLanes);
    const int64_t K_pairs = K - K % kPair;
    auto step = [&](const uint32_t* const* wp, int64_t k) HWY_ATTR {
      VF even[RW], odd[RW];
      for (int j = 0; j < RW; ++j) {
        const VU v = hn::LoadU(du, wp[j]);
        even[j] = hn::BitCast(df, hn::ShiftLeft<16>(v));
        odd[j] = hn::BitCast(df, hn::And(v, high));
      }
      for (int i = 0; i < RX; ++i) {
        const VF xe = hn::LoadU(df, x + i * ldx + k);
        const VF xo = hn::LoadU(df, x + i * ldx + k + kLanes);
        for (int j = 0; j < RW; ++j) {
          acc[i][j] = hn::MulAdd(xe, even[j], acc[i][j]);
          acc[i][j] = hn::MulAdd(xo, odd[j], acc[i][j]);
        }
      }
    };
    int64_t k = 0;
    for (; k < K_pairs; k += kPair) {
      if (k % kLineElems<WT> == 0) PrefetchAhead<RW>(w, ahead, w_stride, K, k);
      const uint32_t* wp[RW];
      for (int j = 0; j < RW; ++j) wp[j] = reinterpret_cast<const uint32_t*>(w + j * w_stride + k);
      step(wp, k);
    }
    if (k < K) {
      // Ragged end: zero-padded copies rather than reads past the rows (x is
      // zero-padded already).
      HWY_ALIGN uint32_t tail[RW][kLanes];
      const uint32_t* wp[RW];
      for (int j = 0; j < RW; ++j) {
        std::memset(tail[j], 0, sizeof(tail[j]));
        std::memcpy(tail[j], w + j * w_stride + k, (K - k) * sizeof(WT));
        wp[j] = tail[j];
      }
      step(wp, k);
    }
    for (int i = 0; i < RX; ++i) {
      for (int j = 0; j < RW; ++j) y[i * ldy + j] = hn::GetLane(hn::SumOfLanes(df, acc[i][j]));
    }
    return;
  }
  constexpr int64_t kStep = int64_t(kLanes) * kVecsPerLine<WT>;
  const int64_t K_lines = K - K % kStep;
  int64_t k = 0;
  for (; k < K_lines; k += kStep) {
    PrefetchAhead<RW>(w, ahead, w_stride, K, k);
    for (int64_t u = 0; u < kVecsPerLine<WT>; ++u) {
      const int64_t ku = k + u * int64_t(kLanes);
      VF wv[RW];
      for (int j = 0; j < RW; ++j) wv[j] = LoadWeights(df, w + j * w_stride + ku);
      for (int i = 0; i < RX; ++i) {
        const VF xv = hn::LoadU(df, x + i * ldx + ku);
        for (int j = 0; j < RW; ++j) acc[i][j] = hn::MulAdd(xv, wv[j], acc[i][j]);
      }
    }
  }
  if (k < K) PrefetchAhead<RW>(w, ahead, w_stride, K, k);
  const int64_t K_full = K - K % int64_t(kLanes);
  for (; k < K_full; k += kLanes) {
    VF wv[RW];
    for (int j = 0; j < RW; ++j) wv[j] = LoadWeights(df, w + j * w_stride + k);
    for (int i = 0; i < RX; ++i) {
      const VF xv = hn::LoadU(df, x + i * ldx + k);
      for (int j = 0; j < RW; ++j) acc[i][j] = hn::MulAdd(xv, wv[j], acc[i][j]);
    }
  }
  if (K_full < K) {
    // Ragged end: copy into zero-padded lanes rather than reading past the rows.
    const int64_t rem = K - K_full;
    HWY_ALIGN float xt[kLanes];
    HWY_ALIGN WT wt[kLanes];
    VF wv[RW];
    for (int j = 0; j < RW; ++j) {
      std::memset(static_cast<void*>(wt), 0, sizeof(wt));
      std::memcpy(static_cast<void*>(wt), w + j * w_stride + K_full, rem * sizeof(WT));
      wv[j] = LoadWeights(df, wt);
    }
    for (int i = 0; i < RX; ++i) {
      std::memset(xt, 0, sizeof(xt));
      std::memcpy(xt, x + i * ldx + K_full, rem * sizeof(float));
      const VF xv = hn::Load(df, xt);
      for (int j = 0; j < RW; ++j) acc[i][j] = hn::MulAdd(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < RX; ++i) {
    for (int j = 0; j < RW; ++j) y[i * ldy + j] = hn::GetLane(hn::SumOfLanes(df, acc[i][j]));
  }
}

// The weight tile is read from memory by the first group of x rows only; the
// later groups find it in L1, so only the first prefetches.
template <int RW, typename WT>
void DotRows(const float* x, int64_t ldx, int64_t m, int64_t K, const WT* w, int64_t w_stride,
             float* y, int64_t ldy, const WT* ahead) {
  int64_t i = 0;
  for (; i + kDotRowsX <= m; i += kDotRowsX) {
    DotTile<RW, kDotRowsX>(x + i * ldx, ldx, K, w, w_stride, y + i * ldy, ldy,
                           i == 0 ? ahead : nullptr);
  }
  if (i > 0) ahead = nullptr;
  switch (m - i) {
    case 0: break;
    case 1: DotTile<RW, 1>(x + i * ldx, ldx, K, w, w_stride, y + i * ldy, ldy, ahead); break;
    case 2: DotTile<RW, 2>(x + i * ldx, ldx, K, w, w_stride, y + i * ldy, ldy, ahead); break;
    case 3: DotTile<RW, 3>(x + i * ldx, ldx, K, w, w_stride, y + i * ldy, ldy, ahead); break;
  }
}

// Weight rows [n0, n1).
template <typename WT>
void DotRange(const float* x, int64_t ldx, int64_t m, const WT* w, int64_t N, int64_t K, float* y,
              int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + kDotRowsW <= n1; n += kDotRowsW) {
    const WT* ahead = n + 2 * kDotRowsW <= n1 ? w + (n + kDotRowsW) * K : nullptr;
    DotRows<kDotRowsW>(x, ldx, m, K, w + n * K, K, y + n, N, ahead);
  }
  for (; n < n1; ++n) DotRows<1>(x, ldx, m, K, w + n * K, K, y + n, N, static_cast<const WT*>(nullptr));
}

// ---------------------------------------------------------------------------
// Many rows: packed panels and a register-blocked micro-kernel.
//
// Loop nest (BLIS): rows of x in blocks of MC, k in blocks of KC; per block
// x is packed once into MR-row micro-panels [k][MR] (contiguous broadcasts,
// and no 4 KiB cache-set aliasing between rows of a power-of-two K), then
// column blocks of NB are processed in parallel: each thread packs its NB × KC
// weight block as f32 [k][NR] panels (L2) and runs MR × NR micro-tiles.

constexpr int64_t kNR = 2 * kLanes;             // panel width (output columns)
constexpr int kMR = kLanes >= 16 ? 12 : 6;      // x rows per micro-tile: 2·MR accumulators
constexpr int64_t kKC = 256;                    // k depth of a packed block
constexpr int64_t kMC = kMR * 32;               // x rows packed at once (MC·KC·4 B in L2)
constexpr int64_t kPanelsPerBlock = 4;          // weight panels packed per work item
constexpr int64_t kNB = kNR * kPanelsPerBlock;  // output columns per parallel work item

// In-register transpose of a kLanes × kLanes block of 32-bit lanes: on entry
// v[r] lane c = M[r][c], on exit v[c] lane r = M[r][c]. Each round pairs
// vectors 2i, 2i+1 and splits them into even and odd lanes (full-width
// ConcatEven/ConcatOdd); that rotates both the vector index and the lane
// index right by one bit while swapping their low bits, so after log2(kLanes)
// rounds the two indices have traded places.
HWY_INLINE void TransposeSquare(VU* v) {
#if HWY_TARGET == HWY_SCALAR
  (void)v;  // one lane: nothing to move
#else
  const DU du;
  for (size_t round = 1; round < kLanes; round *= 2) {
    VU nv[kLanes];
    for (size_t i = 0; i < kLanes / 2; ++i) {
      nv[i] = hn::ConcatEven(du, v[2 * i + 1], v[2 * i]);
      nv[i + kLanes / 2] = hn::ConcatOdd(du, v[2 * i + 1], v[2 * i]);
    }
    for (size_t i = 0; i < kLanes; ++i) v[i] = nv[i];
  }
#endif
}

// Number of weight columns one transpose covers: 32-bit lanes hold one f32
// or two 16-bit weights.
template <typename WT>
constexpr int64_t kColsPerLane = 4 / sizeof(WT);

// Widens the 32-bit lanes of a transposed block to f32 columns and stores
// them at dst[col * kNR] for the kColsPerLane columns a lane holds.
HWY_INLINE void StoreColumns(const float*, VU lane, float* dst) {
  hn::Store(hn::BitCast(DF(), lane), DF(), dst);
}

// bf16 is the top half of an f32: the low element of a pair shifts up, the
// high one is masked in place.
HWY_INLINE void StoreColumns(const hwy::bfloat16_t*, VU pair, float* dst) {
  const DU du;
  hn::Store(hn::BitCast(DF(), hn::ShiftLeft<16>(pair)), DF(), dst);
  hn::Store(hn::BitCast(DF(), hn::And(pair, hn::Set(du, 0xFFFF0000u))), DF(), dst + kNR);
}

HWY_INLINE void StoreColumns(const hwy::float16_t*, VU pair, float* dst) {
  const DU du;
  const DI di;
  const hn::Rebind<uint16_t, DI> du16;
  const hn::Rebind<hwy::float16_t, DI> df16;
  const auto lo = hn::BitCast(di, hn::And(pair, hn::Set(du, 0xFFFFu)));
  const auto hi = hn::BitCast(di, hn::ShiftRight<16>(pair));
  hn::Store(hn::PromoteTo(DF(), hn::BitCast(df16, hn::DemoteTo(du16, lo))), DF(), dst);
  hn::Store(hn::PromoteTo(DF(), hn::BitCast(df16, hn::DemoteTo(du16, hi))), DF(), dst + kNR);
}

// Packs W[n0 + j, k0 + k] for j < NR, k < kc into bp[k * NR + j] as f32;
// rows at or beyond N are zero. Rows are read sequentially (prefetch
// friendly), kLanes rows × (kLanes · kColsPerLane) columns at a time, and
// transposed in registers.
template <typename WT>
void PackPanel(const WT* w, int64_t N, int64_t K, int64_t n0, int64_t k0, int64_t kc,
               float* HWY_RESTRICT bp) {
  const DU du;
  constexpr int64_t kCols = int64_t(kLanes) * kColsPerLane<WT>;
  for (int64_t g = 0; g < kNR; g += kLanes) {
    const int64_t rows = std::clamp<int64_t>(N - n0 - g, 0, kLanes);
    const WT* base = w + (n0 + g) * K + k0;
    for (int64_t k = 0; k < kc; k += kCols) {
      const int64_t cols = std::min(kCols, kc - k);
      VU v[kLanes];
      if (cols == kCols && rows == int64_t(kLanes)) {
        // A block row is only kc long, too short for the hardware prefetcher
        // to pick up; fetch the same line of the next row group.
        const bool prefetch = n0 + g + 2 * int64_t(kLanes) <= N;
        for (int64_t r = 0; r < int64_t(kLanes); ++r) {
          const WT* src = base + r * K + k;
          if (prefetch) hwy::Prefetch(src + int64_t(kLanes) * K);
          v[r] = hn::LoadU(du, reinterpret_cast<const uint32_t*>(src));
        }
      } else if (cols == kCols) {
        for (int64_t r = 0; r < int64_t(kLanes); ++r) {
          v[r] = r < rows ? hn::LoadU(du, reinterpret_cast<const uint32_t*>(base + r * K + k))
                          : hn::Zero(du);
        }
      } else {
        // Ragged end of the block: zero-padded copies of the row ends.
        HWY_ALIGN WT tail[kCols];
        for (int64_t r = 0; r < int64_t(kLanes); ++r) {
          std::memset(static_cast<void*>(tail), 0, sizeof(tail));
          if (r < rows) std::memcpy(static_cast<void*>(tail), base + r * K + k, cols * sizeof(WT));
          v[r] = hn::Load(du, reinterpret_cast<const uint32_t*>(tail));
        }
      }
      TransposeSquare(v);
      float* dst = bp + k * kNR + g;
      for (int64_t j = 0; j * kColsPerLane<WT> < cols; ++j) {
        if ((j + 1) * kColsPerLane<WT> <= cols) {
          StoreColumns(w, v[j], dst + j * kColsPerLane<WT> * kNR);
        } else {  // last column of an odd-width block: its pair partner is padding
          HWY_ALIGN float two[kNR + kLanes];
          StoreColumns(w, v[j], two);
          std::memcpy(dst + j * kColsPerLane<WT> * kNR, two, kLanes * sizeof(float));
        }
      }
    }
  }
}

// x rows [r0, r0 + mc), columns [k0, k0 + kc) into MR-row micro-panels:
// ap[(i / MR) * kc * MR + k * MR + i % MR].
void PackRows(const float* x, int64_t K, int64_t r0, int64_t mc, int64_t k0, int64_t kc,
              float* HWY_RESTRICT ap) {
  for (int64_t i = 0; i < mc; ++i) {
    const float* src = x + (r0 + i) * K + k0;
    float* dst = ap + (i / kMR) * kc * kMR + i % kMR;
    for (int64_t k = 0; k < kc; ++k) dst[k * kMR] = src[k];
  }
}

// c[r, 0:NR] (+)= Σ_k ap[k, r] · bp[k, 0:NR] for r < MR.
template <int MR>
HWY_NOINLINE void MicroKernel(const float* HWY_RESTRICT ap, const float* HWY_RESTRICT bp,
                              int64_t kc, float* HWY_RESTRICT c, int64_t ldc, bool first) {
  const DF df;
  VF c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    if (first) {
      c0[r] = hn::Zero(df);
      c1[r] = hn::Zero(df);
    } else {
      c0[r] = hn::LoadU(df, c + r * ldc);
      c1[r] = hn::LoadU(df, c + r * ldc + kLanes);
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    const VF b0 = hn::Load(df, bp + k * kNR);
    const VF b1 = hn::Load(df, bp + k * kNR + kLanes);
    for (int r = 0; r < MR; ++r) {
      const VF av = hn::Set(df, ap[k * kMR + r]);
      c0[r] = hn::MulAdd(av, b0, c0[r]);
      c1[r] = hn::MulAdd(av, b1, c1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    hn::StoreU(c0[r], df, c + r * ldc);
    hn::StoreU(c1[r], df, c + r * ldc + kLanes);
  }
}

template <int MR = kMR>
void MicroKernelRows(int mr, const float* ap, const float* bp, int64_t kc, float* c, int64_t ldc,
                     bool first) {
  if constexpr (MR > 0) {
    if (mr == MR) return MicroKernel<MR>(ap, bp, kc, c, ldc, first);
    return MicroKernelRows<MR - 1>(mr, ap, bp, kc, c, ldc, first);
  }
}

// Output columns [nb0, nb0 + kNB) ∩ [0, N) of rows [r0, r0 + mc), k block
// [k0, k0 + kc) with x already packed in ap.
template <typename WT>
void GemmBlock(const float* ap, int64_t r0, int64_t mc, const WT* w, int64_t N, int64_t K,
               int64_t k0, int64_t kc, float* y, int64_t nb0) {
  thread_local internal::ScratchFloats pack_scratch;
  float* bp = pack_scratch.Get(kNB * kKC + kMR * kNR);
  float* tile = bp + kNB * kKC;  // [MR, NR] for a panel that overhangs N
  const int64_t panels = std::min<int64_t>(kPanelsPerBlock, (N - nb0 + kNR - 1) / kNR);
  const bool first = k0 == 0;
  for (int64_t p = 0; p < panels; ++p) PackPanel(w, N, K, nb0 + p * kNR, k0, kc, bp + p * kNR * kc);
  // Panel-outer: one NR × kc weight panel stays in L1 while the packed x
  // micro-panels stream past it from L2 in address order.
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = nb0 + p * kNR;
    const float* b = bp + p * kNR * kc;
    const int64_t valid = std::min(kNR, N - n0);
    for (int64_t i0 = 0; i0 < mc; i0 += kMR) {
      const int mr = int(std::min<int64_t>(kMR, mc - i0));
      const float* a = ap + i0 * kc;  // micro-panel i0 / MR
      float* c = y + (r0 + i0) * N + n0;
      if (valid == kNR) {
        MicroKernelRows(mr, a, b, kc, c, N, first);
        continue;
      }
      if (!first) {
        for (int r = 0; r < mr; ++r) std::memcpy(tile + r * kNR, c + r * N, valid * sizeof(float));
      }
      MicroKernelRows(mr, a, b, kc, tile, kNR, first);
      for (int r = 0; r < mr; ++r) std::memcpy(c + r * N, tile + r * kNR, valid * sizeof(float));
    }
  }
}

template <typename WT>
void Gemm(const float* x, int64_t m, const WT* w, int64_t N, int64_t K, float* y,
          ThreadPool* pool) {
  // The caller's thread packs x; pool threads read it while the caller waits
  // in ParallelFor, so its thread_local buffer outlives every reader.
  thread_local internal::ScratchFloats rows_scratch;
  float* ap = rows_scratch.Get(kMC * kKC);
  const int64_t blocks = (N + kNB - 1) / kNB;
  for (int64_t r0 = 0; r0 < m; r0 += kMC) {
    const int64_t mc = std::min(kMC, m - r0);
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t kc = std::min(kKC, K - k0);
      PackRows(x, K, r0, mc, k0, kc, ap);
      auto run = [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) GemmBlock(ap, r0, mc, w, N, K, k0, kc, y, b * kNB);
      };
      if (pool == nullptr) {
        run(0, blocks);
      } else {
        pool->ParallelFor(blocks, 1, run);
      }
    }
  }
}

// Below this many rows the dot-product path wins: packing costs about as much
// as streaming the weights, and only pays off when reused over many rows.
constexpr int64_t kGemmMinRows = 32;

template <typename WT>
void MatMulTyped(const float* x, int64_t m, const WT* w, int64_t N, int64_t K, float* y,
                 ThreadPool* pool) {
  if (m < kGemmMinRows) {
    // ~64 KiB of weights per work item keeps the pool's overhead negligible.
    const int64_t grain = std::max<int64_t>(kDotRowsW, (int64_t(1) << 16) / (K * sizeof(WT) + 1));
    const float* xs = x;
    int64_t ldx = K;
    if constexpr (std::is_same_v<WT, hwy::bfloat16_t>) {
      // The caller's scratch: pool threads read it while this thread waits.
      thread_local internal::ScratchFloats pairs_scratch;
      ldx = (K + 2 * int64_t(kLanes) - 1) / (2 * int64_t(kLanes)) * (2 * int64_t(kLanes));
      float* xp = pairs_scratch.Get(size_t(m * ldx));
      PairUpRows(x, m, K, ldx, xp);
      xs = xp;
    }
    auto run = [&](int64_t n0, int64_t n1) { DotRange(xs, ldx, m, w, N, K, y, n0, n1); };
    if (pool == nullptr) return run(0, N);
    // Work is handed out in groups of kDotRowsW rows, which keeps the 4-row
    // tiles intact. Chunks shrink as the work runs out (guided scheduling):
    // large contiguous ranges first, so each thread streams long runs of rows,
    // and small ones at the end, so neither thread idles long waiting for the
    // other's last chunk. Every row's sum is the same whoever computes it.
    const int64_t groups = (N + kDotRowsW - 1) / kDotRowsW;
    const int64_t grain_groups = (grain + kDotRowsW - 1) / kDotRowsW;
    const int64_t threads = pool->num_threads();
    if (threads == 1 || groups <= grain_groups) return run(0, N);
    std::atomic<int64_t> next{0};
    pool->RunOnAll([&](int) {
      int64_t g0 = next.load(std::memory_order_relaxed);
      for (;;) {
        if (g0 >= groups) return;
        const int64_t size = std::max(grain_groups, (groups - g0) / (2 * threads));
        if (!next.compare_exchange_weak(g0, g0 + size, std::memory_order_relaxed)) continue;
        run(g0 * kDotRowsW, std::min(N, (g0 + size) * kDotRowsW));
        g0 = next.load(std::memory_order_relaxed);
      }
    });
    return;
  }
  Gemm(x, m, w, N, K, y, pool);
}

void MatMulF32(const float* x, int64_t m, const void* w, int64_t N, int64_t K, float* y,
               ThreadPool* pool) {
  MatMulTyped(x, m, static_cast<const float*>(w), N, K, y, pool);
}
void MatMulBF16(const float* x, int64_t m, const void* w, int64_t N, int64_t K, float* y,
                ThreadPool* pool) {
  MatMulTyped(x, m, static_cast<const hwy::bfloat16_t*>(w), N, K, y, pool);
}
void MatMulF16(const float* x, int64_t m, const void* w, int64_t N, int64_t K, float* y,
               ThreadPool* pool) {
  MatMulTyped(x, m, static_cast<const hwy::float16_t*>(w), N, K, y, pool);
}

}  // namespace HWY_NAMESPACE
}  // namespace facet::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace facet::cpu {

HWY_EXPORT(MatMulF32);
HWY_EXPORT(MatMulBF16);
HWY_EXPORT(MatMulF16);

absl::Status MatMul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool) {
  RETURN_IF_ERROR(internal::CheckMatMul(x, m, w, y));
  if (m == 0 || w.rows == 0) return absl::OkStatus();
  if (w.cols == 0) {
    std::fill(y, y + m * w.rows, 0.0f);
    return absl::OkStatus();
  }
  switch (w.format) {
    case WeightFormat::kF32:
      HWY_DYNAMIC_DISPATCH(MatMulF32)(x, m, w.data, w.rows, w.cols, y, pool);
      return absl::OkStatus();
    case WeightFormat::kBF16:
      HWY_DYNAMIC_DISPATCH(MatMulBF16)(x, m, w.data, w.rows, w.cols, y, pool);
      return absl::OkStatus();
    case WeightFormat::kF16:
      HWY_DYNAMIC_DISPATCH(MatMulF16)(x, m, w.data, w.rows, w.cols, y, pool);
      return absl::OkStatus();
    default:
      break;
  }
  return QuantMatMul(x, m, w, y, pool);
}

}  // namespace facet::cpu
#endif  // HWY_ONCE
