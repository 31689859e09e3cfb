#include "core/tensor.h"

#include <gtest/gtest.h>

namespace facet {
namespace {

TEST(TensorTest, ShapeBasics) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.ToString(), "[2, 3, 4]");
  EXPECT_EQ(s, (Shape{2, 3, 4}));
  EXPECT_NE(s, (Shape{2, 3}));
  EXPECT_EQ(Shape{}.numel(), 1);  // scalar
  int64_t dims[7] = {1, 1, 1, 1, 1, 1, 1};
  EXPECT_FALSE(Shape::FromSpan(dims, 7).ok());
  int64_t neg[2] = {3, -1};
  EXPECT_FALSE(Shape::FromSpan(neg, 2).ok());
}

TEST(TensorTest, DTypes) {
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(*DTypeFromSafetensors("BF16"), DType::kBF16);
  EXPECT_EQ(*DTypeFromSafetensors("F8_E4M3"), DType::kF8E4M3);
  EXPECT_EQ(DTypeFromSafetensors("Q4").status().code(), absl::StatusCode::kInvalidArgument);
  float buf[6] = {};
  TensorView v{buf, DType::kF32, Shape{2, 3}, Device::kCpu};
  EXPECT_EQ(v.bytes(), 24u);
  EXPECT_EQ(v.as<float>(), buf);
}

}  // namespace
}  // namespace facet
