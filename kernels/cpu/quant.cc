// ggml block formats: reference dequantization and quantization. Values
// follow ggml/src/ggml-quants.c dequantize_row_{q8_0,q4_0,q5_0,q4_K,q5_K,q6_K}
// and get_scale_min_k4; layouts are in quant_blocks.h. The block-reading
// matmul is in quant_matmul.cc.

#include "kernels/cpu/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/half.h"
#include "core/status.h"
#include "kernels/cpu/quant_blocks.h"

namespace facet {
namespace quant_internal {
namespace {

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

}  // namespace
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
  if (n == 0) return absl::OkStatus();  // dst may be null then (an empty vector's data())
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
  if (n == 0) return absl::OkStatus();  // dst may be null then (an empty vector's data())
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

}  // namespace facet
