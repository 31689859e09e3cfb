// A non-owning, contiguous, row-major view of a tensor: dtype, shape, device
// and a pointer. Ownership lives elsewhere (an mmap, an arena, a device buffer).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace facet {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF64,
  kI8,
  kU8,
  kI16,
  kI32,
  kI64,
  kBool,
  kF8E4M3,
  kF8E5M2,
};

// Bytes per element.
size_t DTypeSize(DType t);
// Lower-case name, e.g. "bf16".
std::string_view DTypeName(DType t);
// Parses the safetensors spelling ("F32", "BF16", "F8_E4M3", ...).
absl::StatusOr<DType> DTypeFromSafetensors(std::string_view s);

enum class Device : uint8_t { kCpu, kCuda };

// Up to kMaxRank dimensions, stored inline (no allocation).
class Shape {
 public:
  static constexpr int kMaxRank = 6;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  static absl::StatusOr<Shape> FromSpan(const int64_t* dims, size_t rank);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t& operator[](int i) { return dims_[i]; }
  int64_t numel() const;
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + rank_; }
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string ToString() const;  // "[4, 128]"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;
  Device device = Device::kCpu;

  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return size_t(numel()) * DTypeSize(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

}  // namespace facet
