// How a weight matrix is stored, as the CPU kernels see it. Weights keep
// PyTorch order [out, in] (row r = output channel r), so y = x · Wᵀ.
#pragma once

#include <cstdint>
#include <string_view>

namespace facet {

// Storage formats a matmul can read directly. Quantized formats are GGUF
// (ggml) block formats: a row of `cols` values is cols / BlockSize(format)
// blocks of BlockBytes(format) bytes.
enum class WeightFormat : uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ8_0,
  kQ4_0,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kQ5_0,  // appended so the values above keep their numbers
};

std::string_view WeightFormatName(WeightFormat f);
// Values per block (1 for the float formats).
int64_t BlockSize(WeightFormat f);
// Bytes per block (bytes per value for the float formats).
int64_t BlockBytes(WeightFormat f);
// Bytes of one row of `cols` values; cols must be a multiple of BlockSize.
inline int64_t RowBytes(WeightFormat f, int64_t cols) { return cols / BlockSize(f) * BlockBytes(f); }

// A 2-D weight [rows, cols], row-major, rows contiguous at `RowBytes` stride.
// A 3-D expert tensor [E, R, C] is a WeightRef with rows = E·R; expert e owns
// rows [e·R, (e+1)·R).
struct WeightRef {
  const void* data = nullptr;
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features

  int64_t row_bytes() const { return RowBytes(format, cols); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes(); }
  // Rows [begin, begin + count) as a WeightRef of their own (zero copy).
  WeightRef Rows(int64_t begin, int64_t count) const { return {row(begin), format, count, cols}; }
};

}  // namespace facet
