#include "kernels/cpu/weight.h"

namespace facet {

std::string_view WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return "f32";
    case WeightFormat::kF16: return "f16";
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kQ8_0: return "q8_0";
    case WeightFormat::kQ4_0: return "q4_0";
    case WeightFormat::kQ4_K: return "q4_k";
    case WeightFormat::kQ5_K: return "q5_k";
    case WeightFormat::kQ6_K: return "q6_k";
    case WeightFormat::kQ5_0: return "q5_0";
  }
  return "?";
}

// Block geometry as ggml defines it (ggml-common.h): Q8_0/Q4_0/Q5_0 blocks hold 32
// values, the K-quants 256 (a "super-block").
int64_t BlockSize(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32:
    case WeightFormat::kF16:
    case WeightFormat::kBF16: return 1;
    case WeightFormat::kQ8_0:
    case WeightFormat::kQ4_0:
    case WeightFormat::kQ5_0: return 32;
    case WeightFormat::kQ4_K:
    case WeightFormat::kQ5_K:
    case WeightFormat::kQ6_K: return 256;
  }
  return 1;
}

int64_t BlockBytes(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return 4;
    case WeightFormat::kF16:
    case WeightFormat::kBF16: return 2;
    case WeightFormat::kQ8_0: return 2 + 32;             // fp16 d, 32 × int8
    case WeightFormat::kQ4_0: return 2 + 16;             // fp16 d, 32 × 4 bit
    case WeightFormat::kQ4_K: return 2 + 2 + 12 + 128;   // d, dmin, 8×(6-bit scale, min), 256 × 4 bit
    case WeightFormat::kQ5_K: return 2 + 2 + 12 + 32 + 128;  // + 256 high bits
    case WeightFormat::kQ6_K: return 128 + 64 + 16 + 2;  // ql, qh, int8 scales, d
    case WeightFormat::kQ5_0: return 2 + 4 + 16;         // fp16 d, 32 high bits, 32 × 4 low bits
  }
  return 4;
}

}  // namespace facet
