#include "kernels/cpu/quant.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"

namespace facet {
namespace {

constexpr WeightFormat kBlockFormats[] = {WeightFormat::kQ8_0, WeightFormat::kQ4_0, WeightFormat::kQ5_0,
                                          WeightFormat::kQ4_K, WeightFormat::kQ5_K, WeightFormat::kQ6_K};

std::string Name(WeightFormat f) { return std::string(WeightFormatName(f)); }

// Values with a spread of magnitudes per block, both signs, a few outliers,
// one all-positive and one all-zero stretch, so every scale path is taken.
std::vector<float> TestData(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float block_scale = 0.05f + float((i / 32) % 7) * 0.3f;
    x[i] = normal(rng) * block_scale;
    if (i % 97 == 5) x[i] *= 8.0f;
  }
  for (int64_t i = 0; i < std::min<int64_t>(n, 64); ++i) x[i] = std::fabs(x[i]) + 0.1f;  // all positive
  if (n >= 512) {
    for (int64_t i = 256; i < 288; ++i) x[i] = 0.0f;  // all zero sub-block
  }
  return x;
}

float AbsMax(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// Largest reconstruction error the reference quantizer may make for each
// element, from the format definition: half a quantization step, plus what
// rounding the block scales up to fp16 (2^-10 relative) and to 6/8-bit
// sub-block scales adds. Q4_0/Q5_0 are one full step on the side opposite the
// largest value (ggml maps that one to −8 / −16 and the other side ends at
// +7 / +15).
std::vector<float> ErrorBound(WeightFormat f, const std::vector<float>& x) {
  const float r16 = 1.0f + 1.0f / 512;
  const int64_t n = int64_t(x.size());
  std::vector<float> bound(x.size());
  for (int64_t b0 = 0; b0 < n; b0 += BlockSize(f)) {
    const float* xb = x.data() + b0;
    float* eb = bound.data() + b0;
    switch (f) {
      case WeightFormat::kQ8_0: {
        const float e = 0.5f * AbsMax(xb, 32) / 127 * r16;
        for (int i = 0; i < 32; ++i) eb[i] = e;
        break;
      }
      case WeightFormat::kQ4_0:
      case WeightFormat::kQ5_0: {
        const float e = AbsMax(xb, 32) / (f == WeightFormat::kQ4_0 ? 8 : 16) * r16;
        for (int i = 0; i < 32; ++i) eb[i] = e;
        break;
      }
      case WeightFormat::kQ4_K:
      case WeightFormat::kQ5_K: {
        const float levels = f == WeightFormat::kQ4_K ? 15 : 31;
        float range[8], max_range = 0, max_min = 0;
        for (int j = 0; j < 8; ++j) {
          float lo = 0, hi = -INFINITY;
          for (int i = 0; i < 32; ++i) lo = std::min(lo, xb[32 * j + i]), hi = std::max(hi, xb[32 * j + i]);
          range[j] = std::max(0.0f, hi - lo);
          max_range = std::max(max_range, range[j]);
          max_min = std::max(max_min, -lo);
        }
        const float dmin = max_min / 63 * r16;             // step of the 6-bit mins
        const float d = (max_range + dmin) / (levels * 63) * r16;  // step of the 6-bit scales
        for (int j = 0; j < 8; ++j) {
          const float e = 0.5f * ((range[j] + dmin) / levels + d);
          for (int i = 0; i < 32; ++i) eb[32 * j + i] = e;
        }
        break;
      }
      case WeightFormat::kQ6_K: {
        const float d = AbsMax(xb, 256) / 31 / 127 * r16;  // step of the 8-bit group scales
        for (int g = 0; g < 16; ++g) {
          const float e = 0.5f * (AbsMax(xb + 16 * g, 16) / 31 + d);
          for (int i = 0; i < 16; ++i) eb[16 * g + i] = e;
        }
        break;
      }
      default: break;
    }
  }
  for (auto& e : bound) e = e * 1.0001f + 1e-7f;
  return bound;
}

TEST(QuantBlockBytes, MatchGgmlCommonH) {
  // sizeof(block_*) in ggml-common.h.
  EXPECT_EQ(BlockBytes(WeightFormat::kQ8_0), 2 + 32);
  EXPECT_EQ(BlockBytes(WeightFormat::kQ4_0), 2 + 16);
  EXPECT_EQ(BlockBytes(WeightFormat::kQ5_0), 2 + 4 + 16);
  EXPECT_EQ(BlockBytes(WeightFormat::kQ4_K), 2 * 2 + 12 + 256 / 2);
  EXPECT_EQ(BlockBytes(WeightFormat::kQ5_K), 2 * 2 + 12 + 256 / 2 + 256 / 8);
  EXPECT_EQ(BlockBytes(WeightFormat::kQ6_K), 2 + 256 / 16 + 3 * 256 / 4);
  EXPECT_EQ(BlockSize(WeightFormat::kQ4_0), 32);
  EXPECT_EQ(BlockSize(WeightFormat::kQ5_0), 32);
  EXPECT_EQ(BlockSize(WeightFormat::kQ6_K), 256);
}

TEST(QuantRoundTrip, ErrorWithinStep) {
  const int64_t n = 1024;
  const std::vector<float> x = TestData(n, 7);
  for (WeightFormat f : kBlockFormats) {
    SCOPED_TRACE(Name(f));
    std::vector<uint8_t> bytes(static_cast<size_t>(RowBytes(f, n)));
    ASSERT_TRUE(QuantizeRowRef(f, x.data(), bytes.data(), n).ok());
    std::vector<float> back(static_cast<size_t>(n));
    ASSERT_TRUE(DequantizeRow(f, bytes.data(), back.data(), n).ok());
    const std::vector<float> bound = ErrorBound(f, x);
    double sq_err = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_LE(std::fabs(back[i] - x[i]), bound[i]) << "element " << i << " x=" << x[i];
      sq_err += double(back[i] - x[i]) * (back[i] - x[i]);
      sq += double(x[i]) * x[i];
    }
    // Zeros stay exactly zero (the all-zero sub-block).
    for (int64_t i = 256; i < 288; ++i) EXPECT_EQ(back[i], 0.0f) << i;
    // Not a degenerate encoding: more bits, less error.
    const double rel = std::sqrt(sq_err / sq);
    const bool five_bit = f == WeightFormat::kQ5_0 || f == WeightFormat::kQ5_K;
    const double max_rel = f == WeightFormat::kQ8_0 ? 0.01 : f == WeightFormat::kQ6_K ? 0.03 : five_bit ? 0.07 : 0.12;
    EXPECT_LT(rel, max_rel);
    EXPECT_GT(rel, 0.0);
  }
}

TEST(QuantRoundTrip, FloatRows) {
  const std::vector<float> x = {1.0f, -2.5f, 3.14159f, 65504.0f, -0.0001f, 0.0f};
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kBF16}) {
    std::vector<uint8_t> bytes(static_cast<size_t>(RowBytes(f, 6)));
    ASSERT_TRUE(QuantizeRowRef(f, x.data(), bytes.data(), 6).ok());
    std::vector<float> back(6);
    ASSERT_TRUE(DequantizeRow(f, bytes.data(), back.data(), 6).ok());
    for (int i = 0; i < 6; ++i) {
      const float want = f == WeightFormat::kF32   ? x[i]
                         : f == WeightFormat::kF16 ? Fp16ToF32(F32ToFp16(x[i]))
                                                   : RoundBf16(x[i]);
      EXPECT_EQ(back[i], want) << Name(f) << " " << i;
    }
  }
}

TEST(QuantRoundTrip, RejectsPartialBlocks) {
  std::vector<float> x(300, 1.0f), y(300);
  std::vector<uint8_t> bytes(4096);
  EXPECT_EQ(DequantizeRow(WeightFormat::kQ4_K, bytes.data(), y.data(), 300).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeRowRef(WeightFormat::kQ8_0, x.data(), bytes.data(), 33).code(),
            absl::StatusCode::kInvalidArgument);
}

// --- Hand-built blocks: bytes laid out from the format definition, expected
// values computed from the same definition, independently of quant.cc. ---

void PutU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

TEST(QuantHandBuilt, Q8_0) {
  uint8_t blk[34];
  PutU16(blk, 0x3800);  // fp16 0.5
  for (int i = 0; i < 32; ++i) blk[2 + i] = uint8_t(int8_t(i * 8 - 128));
  float y[32];
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ8_0, blk, y, 32).ok());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * float(i * 8 - 128)) << i;
}

TEST(QuantHandBuilt, Q4_0) {
  uint8_t blk[18];
  PutU16(blk, 0xB400);  // fp16 −0.25
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = (i * 5 + 3) % 16;
  // Byte j: low nibble = element j, high nibble = element j + 16.
  for (int j = 0; j < 16; ++j) blk[2 + j] = uint8_t(q[j] | (q[j + 16] << 4));
  float y[32];
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ4_0, blk, y, 32).ok());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], -0.25f * float(q[i] - 8)) << i;
}

TEST(QuantHandBuilt, Q5_0) {
  uint8_t blk[22] = {};
  PutU16(blk, 0xB400);  // fp16 −0.25
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = (i * 7 + 3) % 32;
  // qh (bytes 2-5) is a little-endian u32 whose bit i is the 5th bit of
  // element i; byte 6 + j holds the low 4 bits of element j (low nibble)
  // and of element j + 16 (high nibble).
  for (int i = 0; i < 32; ++i) blk[2 + i / 8] |= uint8_t((q[i] >> 4) << (i % 8));
  for (int j = 0; j < 16; ++j) blk[6 + j] = uint8_t((q[j] & 15) | ((q[j + 16] & 15) << 4));
  float y[32];
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ5_0, blk, y, 32).ok());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], -0.25f * float(q[i] - 16)) << i;
  // Both halves of qh matter: with only the top 16 bits set, elements
  // 16..31 gain 16 and elements 0..15 do not.
  std::memset(blk + 2, 0, 4);
  blk[4] = blk[5] = 0xFF;
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ5_0, blk, y, 32).ok());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], -0.25f * float((q[i] & 15) + (i >= 16 ? 16 : 0) - 16)) << i;
}

// 12 scale bytes of a Q4_K/Q5_K block: bytes 0-3 hold scale j (low 6 bits)
// and bits 4-5 of scale j+4 (top 2 bits); bytes 4-7 the same for mins;
// bytes 8-11 hold the low 4 bits of scale j+4 (low nibble) and min j+4.
void PackK4Scales(const int sc[8], const int mn[8], uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
    out[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}

const int kSc[8] = {1, 2, 3, 4, 33, 46, 59, 63};
const int kMn[8] = {5, 0, 7, 63, 17, 34, 51, 62};

TEST(QuantHandBuilt, Q4_K) {
  uint8_t blk[144] = {};
  PutU16(blk, 0x3800);      // d = 0.5
  PutU16(blk + 2, 0x3400);  // dmin = 0.25
  PackK4Scales(kSc, kMn, blk + 4);
  int q[256];
  for (int i = 0; i < 256; ++i) q[i] = (i * 7 + i / 16) % 16;
  // 64-value chunk c: byte 32c + l holds element 64c + l (low nibble) and
  // element 64c + 32 + l (high nibble).
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) blk[16 + 32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
  float y[256];
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ4_K, blk, y, 256).ok());
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32;  // sub-block
    EXPECT_FLOAT_EQ(y[i], 0.5f * kSc[j] * q[i] - 0.25f * kMn[j]) << i;
  }
}

TEST(QuantHandBuilt, Q5_K) {
  uint8_t blk[176] = {};
  PutU16(blk, 0x3C00);      // d = 1
  PutU16(blk + 2, 0x3800);  // dmin = 0.5
  PackK4Scales(kSc, kMn, blk + 4);
  uint8_t* qh = blk + 16;
  uint8_t* qs = blk + 48;
  int q[256];
  for (int i = 0; i < 256; ++i) q[i] = (i * 11 + i / 64) % 32;
  // Low 4 bits as in Q4_K; the 5th bit of element 64c + l is bit 2c of
  // qh[l], of element 64c + 32 + l bit 2c + 1.
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      qs[32 * c + l] = uint8_t((lo & 15) | ((hi & 15) << 4));
      qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
  float y[256];
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ5_K, blk, y, 256).ok());
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32;
    EXPECT_FLOAT_EQ(y[i], 1.0f * kSc[j] * q[i] - 0.5f * kMn[j]) << i;
  }
}

TEST(QuantHandBuilt, Q6_K) {
  uint8_t blk[210] = {};
  uint8_t* ql = blk;
  uint8_t* qh = blk + 128;
  auto* sc = reinterpret_cast<int8_t*>(blk + 192);
  PutU16(blk + 208, 0x3000);  // d = 0.125
  for (int g = 0; g < 16; ++g) sc[g] = int8_t(g * 17 - 128);
  int q[256];
  for (int i = 0; i < 256; ++i) q[i] = (i * 13 + 5) % 64;
  // Per 128-value half n, l in [0, 32): ql[64n + l] = low bits of elements
  // l (low nibble) and l + 64 (high); ql[64n + 32 + l] = elements l + 32 and
  // l + 96; qh[32n + l] has the top 2 bits of l, l+32, l+64, l+96 at bit 0, 2, 4, 6.
  for (int n = 0; n < 2; ++n) {
    const int* v = q + 128 * n;
    for (int l = 0; l < 32; ++l) {
      ql[64 * n + l] = uint8_t((v[l] & 15) | ((v[l + 64] & 15) << 4));
      ql[64 * n + 32 + l] = uint8_t((v[l + 32] & 15) | ((v[l + 96] & 15) << 4));
      qh[32 * n + l] = uint8_t((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) |
                               ((v[l + 96] >> 4) << 6));
    }
  }
  float y[256];
  ASSERT_TRUE(DequantizeRow(WeightFormat::kQ6_K, blk, y, 256).ok());
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], 0.125f * float(sc[i / 16]) * float(q[i] - 32)) << i;
}

// --- QuantMatMul ---

struct QuantMatrix {
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // [rows, cols] what the bytes stand for
  WeightRef ref;
};

QuantMatrix MakeMatrix(WeightFormat f, int64_t rows, int64_t cols, uint32_t seed) {
  QuantMatrix m;
  const std::vector<float> w = TestData(rows * cols, seed);
  m.bytes.resize(static_cast<size_t>(rows * RowBytes(f, cols)));
  m.deq.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = m.bytes.data() + r * RowBytes(f, cols);
    EXPECT_TRUE(QuantizeRowRef(f, w.data() + r * cols, row, cols).ok());
    EXPECT_TRUE(DequantizeRow(f, row, m.deq.data() + r * cols, cols).ok());
  }
  m.ref = WeightRef{m.bytes.data(), f, rows, cols};
  return m;
}

// Checks y against Σ w'·x in double. The kernel rounds each activation to
// int8 within its block (256 values for K-quants, else 32): |x − x'| ≤
// amax(block)/254, so |Δy| ≤ Σ|w'|·amax/254; float accumulation adds a
// small relative error of Σ|w'·x|.
void CheckMatMul(const QuantMatrix& m, const std::vector<float>& x, int64_t tokens,
                 const std::vector<float>& y, bool exact_acts) {
  const int64_t rows = m.ref.rows, cols = m.ref.cols;
  const int qb = BlockSize(m.ref.format) == 256 ? 256 : 32;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * cols;
    std::vector<float> amax(static_cast<size_t>(cols / qb));
    for (int64_t b = 0; b < cols / qb; ++b) amax[b] = AbsMax(xt + b * qb, qb);
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = m.deq.data() + r * cols;
      double ref = 0, mag = 0, act_err = 0;
      for (int64_t i = 0; i < cols; ++i) {
        ref += double(wr[i]) * xt[i];
        mag += std::fabs(double(wr[i]) * xt[i]);
        act_err += std::fabs(wr[i]) * amax[i / qb] / 254.0;
      }
      const double tol = (exact_acts ? 0.0 : act_err * 1.001) + 2e-5 * mag + 1e-6;
      ASSERT_NEAR(y[t * rows + r], ref, tol) << Name(m.ref.format) << " token " << t << " row " << r;
    }
  }
}

TEST(QuantMatMul, MatchesDequantizedReference) {
  ThreadPool pool(2);
  struct Shape {
    int64_t m, rows, cols;
  };
  for (WeightFormat f : kBlockFormats) {
    const int64_t unit = BlockSize(f);
    for (Shape s : {Shape{1, 37, 4 * unit}, Shape{3, 5, unit}, Shape{70, 13, 2 * unit}, Shape{1, 1, 8 * unit}}) {
      SCOPED_TRACE(Name(f) + " m=" + std::to_string(s.m) + " rows=" + std::to_string(s.rows) +
                   " cols=" + std::to_string(s.cols));
      const QuantMatrix w = MakeMatrix(f, s.rows, s.cols, uint32_t(s.rows * 31 + s.cols));
      const std::vector<float> x = TestData(s.m * s.cols, uint32_t(s.m + 100));
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        std::vector<float> y(size_t(s.m * s.rows), NAN);
        ASSERT_TRUE(QuantMatMul(x.data(), s.m, w.ref, y.data(), p).ok());
        CheckMatMul(w, x, s.m, y, /*exact_acts=*/false);
      }
    }
  }
}

// Small batches go through the kernels in groups of tokens plus a
// remainder: every group size and remainder must match the reference, and a
// token's output must not depend on the batch it came in.
TEST(QuantMatMul, SmallBatchesMatchReference) {
  for (WeightFormat f : kBlockFormats) {
    const int64_t rows = 11, cols = 2 * BlockSize(f) * (BlockSize(f) == 32 ? 9 : 1);
    const QuantMatrix w = MakeMatrix(f, rows, cols, 17);
    for (int64_t m : {2, 3, 5, 16, 33}) {
      SCOPED_TRACE(Name(f) + " m=" + std::to_string(m));
      const std::vector<float> x = TestData(m * cols, uint32_t(m + 7));
      std::vector<float> y(size_t(m * rows), NAN);
      ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), nullptr).ok());
      CheckMatMul(w, x, m, y, /*exact_acts=*/false);
      for (int64_t t : {int64_t{0}, m - 1}) {
        std::vector<float> y1(static_cast<size_t>(rows));
        ASSERT_TRUE(QuantMatMul(x.data() + t * cols, 1, w.ref, y1.data(), nullptr).ok());
        for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(y[t * rows + r], y1[r]) << "token " << t << " row " << r;
      }
    }
  }
}

// Prefill-sized batches take the same int8 path as decode (one path keeps
// QuantMatMul batch invariant): the int8 bound applies; 130 rows leave a
// ragged run of 16 rows per thread; with and without the pool.
TEST(QuantMatMul, PrefillBatchesMatchReference) {
  ThreadPool pool(2);
  for (WeightFormat f : kBlockFormats) {
    const int64_t rows = 130, cols = BlockSize(f) * (BlockSize(f) == 32 ? 5 : 1);
    const QuantMatrix w = MakeMatrix(f, rows, cols, 23);
    for (int64_t m : {64, 70}) {
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        SCOPED_TRACE(Name(f) + " m=" + std::to_string(m) + (p ? " pool" : " serial"));
        const std::vector<float> x = TestData(m * cols, uint32_t(m + 3));
        std::vector<float> y(size_t(m * rows), NAN);
        ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), p).ok());
        CheckMatMul(w, x, m, y, /*exact_acts=*/false);
      }
    }
  }
}

// Batch invariance: every output row is bitwise the row computed alone
// (m = 1, no pool), whatever m is (token groups of 1-4, tiles, row blocks),
// wherever the row sits, whatever its neighbours hold and whatever the pool
// size. 150 rows (not a multiple of the 16-row runs); 640 columns for the
// 32-value formats reach both the 16-block scale groups and the tail.
void ExpectRowsMatchAlone(const QuantMatrix& w, const std::vector<float>& x, int64_t m, const std::vector<float>& y,
                          const std::string& what) {
  const int64_t rows = w.ref.rows, cols = w.ref.cols;
  std::vector<float> alone(static_cast<size_t>(rows));
  for (int64_t t = 0; t < m; ++t) {
    ASSERT_TRUE(QuantMatMul(x.data() + t * cols, 1, w.ref, alone.data(), nullptr).ok());
    ASSERT_EQ(std::memcmp(y.data() + t * rows, alone.data(), sizeof(float) * rows), 0)
        << what << ": token " << t << " of " << m << " differs from the same token alone";
  }
}

TEST(QuantMatMul, BatchInvariant) {
  ThreadPool pool1(1), pool2(2);
  for (WeightFormat f : kBlockFormats) {
    const int64_t rows = 150, cols = BlockSize(f) == 32 ? 640 : 512;
    const QuantMatrix w = MakeMatrix(f, rows, cols, 61);
    for (int64_t m : {1, 2, 3, 5, 17, 63, 64, 65, 130, 300}) {
      SCOPED_TRACE(Name(f) + " m=" + std::to_string(m));
      const std::vector<float> x = TestData(m * cols, uint32_t(m + 11));
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool1, &pool2}) {
        std::vector<float> y(size_t(m * rows), NAN);
        ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), p).ok());
        ExpectRowsMatchAlone(w, x, m, y, p == nullptr ? "no pool" : p == &pool1 ? "pool of 1" : "pool of 2");
      }
    }
  }
}

// One probe token placed first, in the middle and last among neighbours
// drawn from different seeds: its outputs must not move by a bit.
TEST(QuantMatMul, RowPositionAndNeighboursDoNotMatter) {
  ThreadPool pool(2);
  for (WeightFormat f : kBlockFormats) {
    const int64_t rows = 150, cols = BlockSize(f) == 32 ? 640 : 512;
    const QuantMatrix w = MakeMatrix(f, rows, cols, 67);
    const std::vector<float> probe = TestData(cols, 5);
    std::vector<float> alone(static_cast<size_t>(rows));
    ASSERT_TRUE(QuantMatMul(probe.data(), 1, w.ref, alone.data(), nullptr).ok());
    for (int64_t m : {2, 7, 65, 130}) {
      for (int64_t pos : {int64_t{0}, m / 2, m - 1}) {
        for (uint32_t seed : {1u, 2u}) {
          SCOPED_TRACE(Name(f) + " m=" + std::to_string(m) + " pos=" + std::to_string(pos) + " seed=" +
                       std::to_string(seed));
          std::vector<float> x = TestData(m * cols, seed * 1000 + uint32_t(m));
          std::copy(probe.begin(), probe.end(), x.begin() + pos * cols);
          std::vector<float> y(size_t(m * rows), NAN);
          ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), &pool).ok());
          EXPECT_EQ(std::memcmp(y.data() + pos * rows, alone.data(), sizeof(float) * rows), 0);
        }
      }
    }
  }
}

// The same on every compiled SIMD target: each has its own token-group code
// (vector widths, half-block loops), so each must keep NT = 1..4 alike.
TEST(QuantMatMul, BatchInvariantOnEveryCompiledTarget) {
  ThreadPool pool(2);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (WeightFormat f : kBlockFormats) {
      const int64_t rows = 40, cols = BlockSize(f) == 32 ? 640 : 512;
      const QuantMatrix w = MakeMatrix(f, rows, cols, 71);
      for (int64_t m : {3, 6, 70}) {
        SCOPED_TRACE(std::string(QuantSimdTarget()) + " " + Name(f) + " m=" + std::to_string(m));
        const std::vector<float> x = TestData(m * cols, uint32_t(m + 13));
        std::vector<float> y(size_t(m * rows), NAN);
        ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), &pool).ok());
        ExpectRowsMatchAlone(w, x, m, y, QuantSimdTarget());
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Activations that are exact multiples of amax/127 survive the int8 step
// unchanged, so the only error left is float rounding: catches a wrong
// sub-block scale or min that the looser bound above could hide.
TEST(QuantMatMul, ExactWhenActivationsAreInt8) {
  for (WeightFormat f : kBlockFormats) {
    const int64_t cols = 2 * BlockSize(f) * (BlockSize(f) == 32 ? 8 : 1), rows = 9, m = 2;
    const QuantMatrix w = MakeMatrix(f, rows, cols, 99);
    std::vector<float> x(static_cast<size_t>(m * cols));
    std::mt19937 rng(3);
    for (int64_t i = 0; i < m * cols; ++i) {
      int k = int(rng() % 255) - 127;
      if (i % 32 == 0) k = 127;  // every activation block reaches amax = 127 · 2^-6
      x[i] = float(k) * (1.0f / 64);
    }
    std::vector<float> y(static_cast<size_t>(m * rows));
    ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), nullptr).ok());
    CheckMatMul(w, x, m, y, /*exact_acts=*/true);
  }
}

// Every SIMD target compiled into the library (AVX-512, AVX2, the portable
// fallback) computes the same products within the same bound: each target
// has its own code paths (one vector per block vs. half blocks, byte
// shuffles vs. broadcasts), and the test machine would otherwise only run
// its best one.
TEST(QuantMatMul, EveryCompiledTarget) {
  ThreadPool pool(2);
  std::set<std::string> seen;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    seen.insert(QuantSimdTarget());
    for (WeightFormat f : kBlockFormats) {
      SCOPED_TRACE(std::string(QuantSimdTarget()) + " " + Name(f));
      const int64_t rows = 21, cols = 3 * BlockSize(f) * (BlockSize(f) == 32 ? 6 : 1), m = 3;
      const QuantMatrix w = MakeMatrix(f, rows, cols, 41);
      const std::vector<float> x = TestData(m * cols, 43);
      std::vector<float> y(static_cast<size_t>(m * rows), NAN);
      ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), &pool).ok());
      CheckMatMul(w, x, m, y, /*exact_acts=*/false);
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  std::string names;
  for (const auto& n : seen) names += n + " ";
  std::printf("[ QuantMatMul ] targets checked: %s\n", names.c_str());
  EXPECT_GE(seen.size(), 1u);
}

TEST(QuantMatMul, RejectsBadArguments) {
  std::vector<float> x(256), y(4);
  std::vector<uint8_t> bytes(4096);
  WeightRef w{bytes.data(), WeightFormat::kF32, 1, 256};
  EXPECT_EQ(QuantMatMul(x.data(), 1, w, y.data(), nullptr).code(), absl::StatusCode::kInvalidArgument);
  w.format = WeightFormat::kQ4_K;
  w.cols = 100;
  EXPECT_EQ(QuantMatMul(x.data(), 1, w, y.data(), nullptr).code(), absl::StatusCode::kInvalidArgument);
  w.cols = 256;
  EXPECT_TRUE(QuantMatMul(x.data(), 0, w, y.data(), nullptr).ok());  // nothing to do
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Decode speed: m = 1, 2048 × 2048, weight bytes streamed per second.
// Prints only; no assertion on timing. "warm" reads one matrix over and over
// (it stays in L2/L3: the kernel's own speed); "cold" cycles through copies
// totalling more than the last-level cache, as decode does. Besides wall
// time it prints CPU seconds (this thread for 1 thread, the whole process
// for 2), which stay meaningful when other jobs share the machine: for 2
// threads, GB per CPU-second close to the 1-thread figure means the split
// itself costs little.
TEST(QuantBench, DecodeThroughput) {
  const int64_t n = 2048;
  ThreadPool pool(2);
  std::vector<float> x = TestData(n, 1), y(n);
  for (WeightFormat f : {WeightFormat::kQ4_K, WeightFormat::kQ5_0, WeightFormat::kQ6_K, WeightFormat::kQ8_0}) {
    const QuantMatrix w = MakeMatrix(f, n, n, 5);
    const size_t bytes = w.bytes.size();
    for (int copies : {1, 16}) {
      std::vector<uint8_t> all(bytes * size_t(copies));
      for (int c = 0; c < copies; ++c) std::memcpy(all.data() + c * bytes, w.bytes.data(), bytes);
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        auto run = [&](int iters) {
          for (int i = 0; i < iters; ++i) {
            for (int c = 0; c < copies; ++c) {
              const WeightRef ref{all.data() + c * bytes, f, n, n};
              ASSERT_TRUE(QuantMatMul(x.data(), 1, ref, y.data(), p).ok());
            }
          }
        };
        run(1);  // warm up
        double best_wall = 1e9, best_cpu = 1e9;
        const int iters = copies == 1 ? 20 : 2;
        for (int rep = 0; rep < 3; ++rep) {
          const double c0 = p ? ProcessCpuSeconds() : ThreadCpuSeconds();
          const auto t0 = std::chrono::steady_clock::now();
          run(iters);
          const double calls = double(iters * copies);
          best_wall = std::min(best_wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls);
          best_cpu = std::min(best_cpu, ((p ? ProcessCpuSeconds() : ThreadCpuSeconds()) - c0) / calls);
        }
        std::printf("[ QuantBench ] %s %-4s %s m=1 threads=%d: %6.0f us wall %6.2f GB/s | %6.0f us cpu %6.2f GB/s per core\n",
                    QuantSimdTarget(), Name(f).c_str(), copies == 1 ? "warm" : "cold", p ? p->num_threads() : 1,
                    best_wall * 1e6, double(bytes) / best_wall / 1e9, best_cpu * 1e6, double(bytes) / best_cpu / 1e9);
      }
    }
  }
}

// Small batches (continuous batching): every weight block is unpacked once
// per group of tokens, so m tokens should cost well under m× one token.
// Prints only; no assertion on timing.
TEST(QuantBench, SmallBatch) {
  ThreadPool pool(2);
  struct Shape {
    int64_t rows, cols;
  };
  for (WeightFormat f : {WeightFormat::kQ5_0, WeightFormat::kQ4_K, WeightFormat::kQ6_K, WeightFormat::kQ8_0}) {
    for (Shape s : {Shape{2048, 640}, Shape{640, 2048}}) {
      if (s.cols % BlockSize(f) != 0) continue;
      const QuantMatrix w = MakeMatrix(f, s.rows, s.cols, 5);
      for (int64_t m : {1, 4, 16}) {
        const std::vector<float> x = TestData(m * s.cols, 7);
        std::vector<float> y(size_t(m * s.rows));
        for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
          ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), p).ok());  // warm up
          double best = 1e9;
          for (int rep = 0; rep < 5; ++rep) {
            const int iters = 10;
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < iters; ++i) ASSERT_TRUE(QuantMatMul(x.data(), m, w.ref, y.data(), p).ok());
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters);
          }
          std::printf("[ QuantBench ] %s %-4s %4lldx%-4lld m=%2lld threads=%d: %8.3f ms\n", QuantSimdTarget(),
                      Name(f).c_str(), (long long)s.rows, (long long)s.cols, (long long)m, p ? p->num_threads() : 1,
                      best * 1e3);
        }
      }
    }
  }
}

}  // namespace
}  // namespace facet
