#include "models/gguf.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/quant.h"

namespace facet {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return testing::TempDir() + "/facet_gguf_" + std::to_string(::getpid()) + "_" + name + ".gguf";
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

template <class T>
void Patch(std::string* bytes, size_t pos, T v) {
  ASSERT_LE(pos + sizeof(T), bytes->size());
  std::memcpy(bytes->data() + pos, &v, sizeof(T));
}

// Position just after the first occurrence of `needle` (a key or tensor name
// as stored), where that entry's type / value / dims follow.
size_t After(const std::string& bytes, const std::string& needle) {
  const size_t p = bytes.find(needle);
  EXPECT_NE(p, std::string::npos) << needle;
  return p + needle.size();
}

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::string Quantized(WeightFormat f, const std::vector<float>& v, int64_t cols) {
  std::string out(static_cast<size_t>(int64_t(v.size()) / cols * RowBytes(f, cols)), '\0');
  for (int64_t r = 0; r < int64_t(v.size()) / cols; ++r) {
    EXPECT_TRUE(QuantizeRowRef(f, v.data() + r * cols, out.data() + r * RowBytes(f, cols), cols).ok());
  }
  return out;
}

std::vector<float> Ramp(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = std::sin(float(i) * 0.37f) * scale;
  return v;
}

absl::StatusOr<GgufFile> OpenBytes(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  WriteBytes(path, bytes);
  auto f = GgufFile::Open(path);
  std::remove(path.c_str());  // the mapping stays valid
  return f;
}

// A small but complete file: every value type, and tensors of several
// formats and ranks.
GgufWriter SampleWriter() {
  GgufWriter w;
  w.AddString("general.architecture", "gemma3");
  w.AddU8("t.u8", 200);
  w.AddI8("t.i8", -100);
  w.AddU16("t.u16", 60000);
  w.AddI16("t.i16", -30000);
  w.AddU32("t.u32", 4000000000u);
  w.AddI32("t.i32", -2000000000);
  w.AddU64("t.u64", 1ull << 40);
  w.AddI64("t.i64", -(1ll << 40));
  w.AddF32("t.f32", 1.5f);
  w.AddF64("t.f64", 0.25);
  w.AddBool("t.bool", true);
  w.AddStringArray("t.strings", {"<pad>", "", "héllo", std::string("a\0b", 3)});
  w.AddF32Array("t.f32s", {0.5f, -1.0f, 3.0f});
  w.AddI32Array("t.i32s", {1, -2, 2147483647});
  w.AddI64Array("t.i64s", {5, 1ll << 35});
  w.AddU8Array("t.u8s", {});
  w.AddTensor("norm.weight", ggml_type::kF32, {8}, FloatBytes(Ramp(8, 1.0f)));
  w.AddTensor("q4k.weight", ggml_type::kQ4_K, {512, 3}, Quantized(WeightFormat::kQ4_K, Ramp(512 * 3, 0.1f), 512));
  w.AddTensor("q8.weight", ggml_type::kQ8_0, {64, 2, 3}, Quantized(WeightFormat::kQ8_0, Ramp(64 * 6, 2.0f), 64));
  w.AddTensor("q6k.weight", ggml_type::kQ6_K, {256, 1}, Quantized(WeightFormat::kQ6_K, Ramp(256, 0.5f), 256));
  return w;
}

TEST(GgufRead, AllMetadataTypes) {
  auto f = OpenBytes("meta", SampleWriter().Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_EQ(*f->GetString("general.architecture"), "gemma3");
  EXPECT_EQ(*f->GetU32("t.u8"), 200u);
  EXPECT_EQ(*f->GetI64("t.i8"), -100);
  EXPECT_EQ(*f->GetU32("t.u16"), 60000u);
  EXPECT_EQ(*f->GetI64("t.i16"), -30000);
  EXPECT_EQ(*f->GetU32("t.u32"), 4000000000u);
  EXPECT_EQ(*f->GetI64("t.i32"), -2000000000);
  EXPECT_EQ(*f->GetI64("t.u64"), 1ll << 40);
  EXPECT_EQ(*f->GetI64("t.i64"), -(1ll << 40));
  EXPECT_EQ(*f->GetF32("t.f32"), 1.5f);
  EXPECT_EQ(*f->GetF32("t.f64"), 0.25f);
  EXPECT_EQ(*f->GetBool("t.bool"), true);
  EXPECT_THAT(*f->GetStringArray("t.strings"),
              ::testing::ElementsAre("<pad>", "", "héllo", std::string("a\0b", 3)));
  EXPECT_THAT(*f->GetF32Array("t.f32s"), ::testing::ElementsAre(0.5f, -1.0f, 3.0f));
  EXPECT_THAT(*f->GetI32Array("t.i32s"), ::testing::ElementsAre(1, -2, 2147483647));
  EXPECT_THAT(*f->GetI64Array("t.i64s"), ::testing::ElementsAre(5, 1ll << 35));
  EXPECT_TRUE(f->GetI64Array("t.u8s")->empty());
  auto info = f->ArrayInfo("t.strings");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->first, GgufType::kString);
  EXPECT_EQ(info->second, 4u);
  EXPECT_EQ(*f->TypeOf("t.f64"), GgufType::kF64);
  EXPECT_TRUE(f->HasKey("t.bool"));
  EXPECT_FALSE(f->HasKey("t.nope"));
  const std::vector<std::string> keys = f->Keys();
  ASSERT_EQ(keys.size(), 17u);
  EXPECT_EQ(keys.front(), "general.architecture");
  EXPECT_EQ(keys.back(), "t.u8s");
  EXPECT_THAT(f->DescribeValue("t.strings"), HasSubstr("string x 4"));
}

TEST(GgufRead, GetterErrorsNameTheKey) {
  auto f = OpenBytes("errs", SampleWriter().Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  auto missing = f->GetU32("no.such.key");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("no.such.key"));
  auto wrong = f->GetString("t.u32");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("t.u32"));
  EXPECT_EQ(f->GetU32("t.i8").status().code(), absl::StatusCode::kInvalidArgument);    // negative
  EXPECT_EQ(f->GetU32("t.u64").status().code(), absl::StatusCode::kInvalidArgument);   // too big
  EXPECT_EQ(f->GetF32("t.u32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f->GetBool("t.u8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f->GetI32Array("t.i64s").status().code(), absl::StatusCode::kInvalidArgument);  // 2^35
  EXPECT_EQ(f->GetStringArray("t.f32s").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f->GetF32Array("t.str").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufRead, TensorsAndWeights) {
  GgufWriter w = SampleWriter();
  w.SetAlignment(64);
  w.AddTensor("bf16.weight", ggml_type::kBF16, {4, 2}, std::string(16, '\x3f'));
  w.AddTensor("q41.weight", 3 /* Q4_1 */, {32, 1}, std::string(20, '\0'));
  w.AddTensor("q50.weight", ggml_type::kQ5_0, {64, 2}, Quantized(WeightFormat::kQ5_0, Ramp(128, 0.3f), 64));
  auto f = OpenBytes("tensors", w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  ASSERT_EQ(f->tensors().size(), 7u);
  for (const auto& t : f->tensors()) EXPECT_EQ(t.offset % 64, 0u) << t.name;

  const auto* q8 = f->FindTensor("q8.weight");
  ASSERT_NE(q8, nullptr);
  EXPECT_EQ(q8->ggml_type, ggml_type::kQ8_0);
  EXPECT_THAT(q8->ne, ::testing::ElementsAre(64, 2, 3));
  EXPECT_EQ(q8->nbytes, uint64_t(6 * 2 * 34));
  EXPECT_EQ(f->FindTensor("missing"), nullptr);

  auto wq8 = f->Weight("q8.weight");
  ASSERT_TRUE(wq8.ok());
  EXPECT_EQ(wq8->format, WeightFormat::kQ8_0);
  EXPECT_EQ(wq8->cols, 64);
  EXPECT_EQ(wq8->rows, 6);
  EXPECT_EQ(wq8->data, f->TensorData(*q8));

  auto norm = f->Weight("norm.weight");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->rows, 1);
  EXPECT_EQ(norm->cols, 8);

  // Dequantized values are what the quantizer put there, within its step.
  std::vector<float> q4k;
  ASSERT_TRUE(f->DequantizeToF32("q4k.weight", &q4k).ok());
  const std::vector<float> want = Ramp(512 * 3, 0.1f);
  ASSERT_EQ(q4k.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(q4k[i], want[i], 0.2f / 15) << i;
  auto q50 = f->Weight("q50.weight");
  ASSERT_TRUE(q50.ok()) << q50.status();
  EXPECT_EQ(q50->format, WeightFormat::kQ5_0);
  EXPECT_EQ(q50->rows, 2);
  EXPECT_EQ(q50->cols, 64);
  EXPECT_EQ(f->FindTensor("q50.weight")->nbytes, uint64_t(2 * 2 * 22));
  std::vector<float> q5;
  ASSERT_TRUE(f->DequantizeToF32("q50.weight", &q5).ok());
  const std::vector<float> want5 = Ramp(128, 0.3f);
  // One Q5_0 step is at most amax / 16 (the side opposite the largest value).
  for (size_t i = 0; i < want5.size(); ++i) ASSERT_NEAR(q5[i], want5[i], 0.3f / 16 * 1.002f) << i;
  std::vector<float> n;
  ASSERT_TRUE(f->DequantizeToF32("norm.weight", &n).ok());
  EXPECT_EQ(n, Ramp(8, 1.0f));

  auto q41 = f->Weight("q41.weight");
  EXPECT_EQ(q41.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(q41.status().message()), HasSubstr("Q4_1"));
  EXPECT_THAT(std::string(q41.status().message()), HasSubstr("q41.weight"));
  EXPECT_EQ(f->Weight("missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufRead, FormatOfMatchesGgmlIds) {
  // ggml.h enum ggml_type.
  EXPECT_EQ(*GgufFile::FormatOf(0), WeightFormat::kF32);
  EXPECT_EQ(*GgufFile::FormatOf(1), WeightFormat::kF16);
  EXPECT_EQ(*GgufFile::FormatOf(2), WeightFormat::kQ4_0);
  EXPECT_EQ(*GgufFile::FormatOf(6), WeightFormat::kQ5_0);
  EXPECT_EQ(*GgufFile::FormatOf(8), WeightFormat::kQ8_0);
  EXPECT_EQ(*GgufFile::FormatOf(12), WeightFormat::kQ4_K);
  EXPECT_EQ(*GgufFile::FormatOf(13), WeightFormat::kQ5_K);
  EXPECT_EQ(*GgufFile::FormatOf(14), WeightFormat::kQ6_K);
  EXPECT_EQ(*GgufFile::FormatOf(30), WeightFormat::kBF16);
  EXPECT_EQ(GgufFile::FormatOf(11).status().code(), absl::StatusCode::kUnimplemented);  // Q3_K
  EXPECT_EQ(GgufFile::FormatOf(7).status().code(), absl::StatusCode::kUnimplemented);   // Q5_1
  EXPECT_EQ(GgufFile::FormatOf(4).status().code(), absl::StatusCode::kInvalidArgument);  // removed
  EXPECT_EQ(GgufFile::FormatOf(1000).status().code(), absl::StatusCode::kInvalidArgument);
  for (WeightFormat wf : {WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kBF16, WeightFormat::kQ8_0,
                          WeightFormat::kQ4_0, WeightFormat::kQ5_0, WeightFormat::kQ4_K, WeightFormat::kQ5_K,
                          WeightFormat::kQ6_K}) {
    EXPECT_EQ(*GgufFile::FormatOf(FormatToGgmlType(wf)), wf);
    // Our block geometry agrees with the GGUF size table.
    EXPECT_EQ(*GgmlTensorBytes(FormatToGgmlType(wf), {BlockSize(wf) * 3}), uint64_t(3 * BlockBytes(wf)));
  }
}

TEST(GgufRead, Version2) {
  GgufWriter w(2);
  w.AddString("general.name", "v2");
  w.AddTensor("x", ggml_type::kF32, {2}, FloatBytes({1.0f, 2.0f}));
  auto f = OpenBytes("v2", w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), 2u);
  std::vector<float> x;
  ASSERT_TRUE(f->DequantizeToF32("x", &x).ok());
  EXPECT_EQ(x, std::vector<float>({1.0f, 2.0f}));
}

// --- validation: each bad file fails with a message naming the file and the problem ---

void ExpectOpenError(const std::string& name, const std::string& bytes, const std::string& problem) {
  const std::string path = TempPath(name);
  WriteBytes(path, bytes);
  auto f = GgufFile::Open(path);
  std::remove(path.c_str());
  ASSERT_FALSE(f.ok()) << name << ": opened";
  const std::string msg(f.status().message());
  EXPECT_THAT(msg, HasSubstr(path)) << name;
  EXPECT_THAT(msg, HasSubstr(problem)) << name;
}

TEST(GgufValidate, BadMagicAndVersion) {
  const std::string good = SampleWriter().Serialize();
  std::string b = good;
  b[0] = 'X';
  ExpectOpenError("magic", b, "bad magic");
  ExpectOpenError("tiny", "GGUF", "too small");
  ExpectOpenError("empty", "", "too small");
  for (uint32_t v : {0u, 1u, 4u, 99u}) {
    b = good;
    Patch<uint32_t>(&b, 4, v);
    ExpectOpenError("version" + std::to_string(v), b, "unsupported GGUF version " + std::to_string(v));
  }
  b = good;
  Patch<uint32_t>(&b, 4, 0x03000000u);
  ExpectOpenError("bigendian", b, "big-endian");
}

TEST(GgufValidate, AbsurdCounts) {
  const std::string good = SampleWriter().Serialize();
  std::string b = good;
  Patch<uint64_t>(&b, 8, 1ull << 40);
  ExpectOpenError("tensors", b, "tensor count");
  b = good;
  Patch<uint64_t>(&b, 16, ~0ull);
  ExpectOpenError("kvs", b, "metadata count");
  // A count the file size allows but more entries than it holds: parsing
  // runs off the end. (A metadata-only file cut right after its last entry,
  // so the extra entry cannot be read from padding or tensor infos.)
  GgufWriter w;
  w.AddU32("a", 1);
  w.AddString("b", "xyz");
  b = w.Serialize();
  b.resize(b.find("xyz") + 3);
  Patch<uint64_t>(&b, 16, 3);
  ExpectOpenError("kvs2", b, "truncated: metadata entry 2 key length");
}

TEST(GgufValidate, TruncatedStringsAndArrays) {
  const std::string good = SampleWriter().Serialize();
  std::string b = good;
  // String value: key, u32 type, u64 length.
  Patch<uint64_t>(&b, After(b, "general.architecture") + 4, 1ull << 50);
  ExpectOpenError("strlen", b, "general.architecture");
  b = good;
  // A key length past the end.
  Patch<uint64_t>(&b, 24, 1ull << 62);
  ExpectOpenError("keylen", b, "truncated");
  b = good;
  // Array: key, u32 type 9, u32 element type, u64 count.
  Patch<uint64_t>(&b, After(b, "t.f32s") + 8, 1ull << 61);
  ExpectOpenError("arrlen", b, "t.f32s");
  b = good;
  Patch<uint64_t>(&b, After(b, "t.strings") + 8, 1ull << 61);
  ExpectOpenError("strarrlen", b, "t.strings");
  b = good;
  // A string inside a string array claiming to run past the end.
  Patch<uint64_t>(&b, After(b, "t.strings") + 16, 1ull << 40);
  ExpectOpenError("strelem", b, "'t.strings' element 0");
  // Cut inside the metadata.
  ExpectOpenError("cut", good.substr(0, After(good, "t.i64s") + 10), "truncated");
}

TEST(GgufValidate, UnknownValueType) {
  std::string b = SampleWriter().Serialize();
  Patch<uint32_t>(&b, After(b, "t.bool"), 13);
  ExpectOpenError("valtype", b, "unknown value type 13");
  b = SampleWriter().Serialize();
  Patch<uint32_t>(&b, After(b, "t.f32s") + 4, 77);  // array element type
  ExpectOpenError("elemtype", b, "unknown value type 77");
  b = SampleWriter().Serialize();
  Patch<uint32_t>(&b, After(b, "t.f32s") + 4, 9);  // array of arrays
  ExpectOpenError("nested", b, "arrays of arrays");
}

TEST(GgufValidate, TensorProblems) {
  const std::string good = SampleWriter().Serialize();
  // Data past EOF: drop the tail of the last tensor.
  ExpectOpenError("pasteof", good.substr(0, good.size() - 100), "runs past the end");

  // Misaligned offset (tensor info: name, n_dims, ne..., type, offset).
  std::string b = good;
  Patch<uint64_t>(&b, After(b, "q6k.weight") + 4 + 2 * 8 + 4, 33);
  ExpectOpenError("misaligned", b, "not a multiple of the alignment");

  // ne[0] not a multiple of the block size.
  GgufWriter w1;
  w1.AddTensor("bad", ggml_type::kQ4_K, {100, 2}, std::string(288, '\0'));
  ExpectOpenError("blocksize", w1.Serialize(), "inconsistent");

  // A shape bigger than the space it was given overlaps the next tensor
  // (a third tensor keeps it inside the file).
  GgufWriter w2;
  w2.AddTensor("a", ggml_type::kF32, {64}, std::string(64, '\0'));  // claims 256 bytes
  w2.AddTensor("b", ggml_type::kF32, {16}, std::string(64, '\0'));
  w2.AddTensor("c", ggml_type::kF32, {64}, std::string(256, '\0'));
  ExpectOpenError("overlap", w2.Serialize(), "tensor 'a' (F32, 256 bytes at 0) overlaps tensor 'b'");

  // Sizes that overflow 64 bits, in bytes or in elements, even when a zero
  // dimension would make the product small.
  for (const std::vector<int64_t>& ne : std::vector<std::vector<int64_t>>{
           {int64_t(1) << 62, 1}, {int64_t(1) << 40, int64_t(1) << 40}, {int64_t(1) << 62, int64_t(1) << 62, 0}}) {
    GgufWriter w7;
    w7.AddTensor("huge", ggml_type::kF32, ne, std::string(32, '\0'));
    ExpectOpenError("overflow", w7.Serialize(), "overflows 64 bits");
  }

  GgufWriter w3;
  w3.AddTensor("same", ggml_type::kF32, {8}, std::string(32, '\0'));
  w3.AddTensor("same", ggml_type::kF32, {8}, std::string(32, '\0'));
  ExpectOpenError("duptensor", w3.Serialize(), "duplicate tensor 'same'");

  GgufWriter w4;
  w4.AddU32("k", 1);
  w4.AddU32("k", 2);
  ExpectOpenError("dupkey", w4.Serialize(), "duplicate metadata key 'k'");

  b = good;
  Patch<uint32_t>(&b, After(b, "q4k.weight"), 5);  // n_dims
  ExpectOpenError("ndims", b, "5 dimensions");
  b = good;
  Patch<int64_t>(&b, After(b, "q4k.weight") + 4 + 8, -3);  // ne[1]
  ExpectOpenError("negdim", b, "negative");
  b = good;
  Patch<uint32_t>(&b, After(b, "q4k.weight") + 4 + 2 * 8, 99);  // ggml type
  ExpectOpenError("ggmltype", b, "unknown ggml type id 99");

  GgufWriter w5;
  w5.AddU32("general.alignment", 48);
  ExpectOpenError("align", w5.Serialize(), "not a power of two");
  GgufWriter w6;
  w6.AddString("general.alignment", "32");
  ExpectOpenError("aligntype", w6.Serialize(), "general.alignment is string");
}

// Random byte flips and truncations of a valid file must give an error or a
// file whose every accessor works; never a crash or an out-of-bounds read
// (run under the asan preset to check the latter).
TEST(GgufFuzz, MutatedFilesDoNotCrash) {
  const std::string good = SampleWriter().Serialize();
  std::mt19937 rng(1234);
  const std::string path = TempPath("fuzz");
  int opened = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string b = good;
    const int kind = iter % 3;
    if (kind == 0) {
      b.resize(rng() % b.size());
    } else {
      // Mostly hit the header, where the lengths and counts live.
      const size_t header = good.find("norm.weight") + 64;
      const int flips = 1 + int(rng() % 4);
      for (int k = 0; k < flips; ++k) {
        const size_t pos = kind == 1 ? rng() % header : rng() % b.size();
        b[pos] = char(b[pos] ^ (1 << (rng() % 8)));
      }
    }
    WriteBytes(path, b);
    auto f = GgufFile::Open(path);
    if (!f.ok()) {
      EXPECT_FALSE(f.status().message().empty());
      continue;
    }
    ++opened;
    for (const std::string& key : f->Keys()) {
      (void)f->DescribeValue(key);
      (void)f->GetString(key);
      (void)f->GetI64(key);
      (void)f->GetU32(key);
      (void)f->GetF32(key);
      (void)f->GetBool(key);
      (void)f->GetStringArray(key);
      (void)f->GetF32Array(key);
      (void)f->GetI32Array(key);
    }
    for (const auto& t : f->tensors()) {
      std::vector<float> v;
      if (t.nbytes < (1u << 20)) (void)f->DequantizeToF32(t.name, &v);
    }
  }
  std::remove(path.c_str());
  EXPECT_GT(opened, 0);  // some mutations (e.g. inside tensor data) stay valid
}

// --- the real Gemma 3 270M file (scripts/fetch-demo-model.sh); skipped when absent ---

std::string RealModelPath() {
  if (const char* p = std::getenv("FACET_GEMMA3_270M_GGUF")) return p;
  std::string cache;
  if (const char* c = std::getenv("FACET_CACHE")) {
    cache = c;
  } else if (const char* h = std::getenv("HOME")) {
    cache = std::string(h) + "/.cache/facet";
  }
  return cache + "/gemma3-270m/gemma-3-270m-q4_k_m.gguf";
}

TEST(GgufRealModel, Gemma3_270M) {
  const std::string path = RealModelPath();
  if (!std::ifstream(path).good()) {
    GTEST_SKIP() << "no " << path << ": run scripts/fetch-demo-model.sh (or set FACET_GEMMA3_270M_GGUF)";
  }
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::printf("version %u, alignment %u, %zu tensors, %zu keys, %llu bytes\n", f->version(), f->alignment(),
              f->tensors().size(), f->Keys().size(), static_cast<unsigned long long>(f->file_size()));
  for (const std::string& k : f->Keys()) std::printf("  %s = %s\n", k.c_str(), f->DescribeValue(k).c_str());
  std::map<std::string, int> type_counts;
  uint64_t tensor_bytes = 0;
  for (const auto& t : f->tensors()) {
    ++type_counts[GgmlTypeName(t.ggml_type)];
    tensor_bytes += t.nbytes;
    if (t.name.rfind("blk.", 0) != 0 || t.name.rfind("blk.0.", 0) == 0) {
      std::string ne;
      for (int64_t d : t.ne) ne += (ne.empty() ? "" : ", ") + std::to_string(d);
      std::printf("  tensor %-28s %-5s ne=[%s] %llu bytes\n", t.name.c_str(), GgmlTypeName(t.ggml_type).c_str(),
                  ne.c_str(), static_cast<unsigned long long>(t.nbytes));
    }
  }
  for (const auto& [type, n] : type_counts) std::printf("  %d tensors of %s\n", n, type.c_str());
  std::printf("  tensor data: %llu bytes\n", static_cast<unsigned long long>(tensor_bytes));

  EXPECT_EQ(*f->GetString("general.architecture"), "gemma3");
  // Every tensor is in a format the kernels read, and its first and last
  // rows dequantize to finite numbers.
  for (const auto& t : f->tensors()) {
    auto w = f->Weight(t.name);
    ASSERT_TRUE(w.ok()) << t.name << " " << w.status();
    std::vector<float> row(static_cast<size_t>(w->cols));
    for (int64_t r : {int64_t(0), w->rows - 1}) {
      ASSERT_TRUE(DequantizeRow(w->format, w->row(r), row.data(), w->cols).ok()) << t.name;
      for (float v : row) ASSERT_TRUE(std::isfinite(v)) << t.name << " row " << r;
    }
  }

  // The tensor set and shapes follow from the gemma3.* metadata (ggml order:
  // ne[0] is the input dimension), with the output projection tied to the
  // embedding.
  const int64_t layers = *f->GetI64("gemma3.block_count");
  const int64_t hidden = *f->GetI64("gemma3.embedding_length");
  const int64_t ffn = *f->GetI64("gemma3.feed_forward_length");
  const int64_t heads = *f->GetI64("gemma3.attention.head_count");
  const int64_t kv_heads = *f->GetI64("gemma3.attention.head_count_kv");
  const int64_t key_len = *f->GetI64("gemma3.attention.key_length");
  const int64_t value_len = *f->GetI64("gemma3.attention.value_length");
  const auto vocab = f->ArrayInfo("tokenizer.ggml.tokens");
  ASSERT_TRUE(vocab.ok());
  EXPECT_EQ(f->tensors().size(), size_t(2 + 13 * layers));
  EXPECT_EQ(f->FindTensor("output.weight"), nullptr);
  auto expect_shape = [&](const std::string& name, std::vector<int64_t> ne) {
    const auto* t = f->FindTensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->ne, ne) << name;
  };
  expect_shape("token_embd.weight", {hidden, int64_t(vocab->second)});
  expect_shape("output_norm.weight", {hidden});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    expect_shape(p + "attn_q.weight", {hidden, heads * key_len});
    expect_shape(p + "attn_k.weight", {hidden, kv_heads * key_len});
    expect_shape(p + "attn_v.weight", {hidden, kv_heads * value_len});
    expect_shape(p + "attn_output.weight", {heads * value_len, hidden});
    expect_shape(p + "ffn_gate.weight", {hidden, ffn});
    expect_shape(p + "ffn_up.weight", {hidden, ffn});
    expect_shape(p + "ffn_down.weight", {ffn, hidden});
    expect_shape(p + "attn_q_norm.weight", {key_len});
    expect_shape(p + "attn_k_norm.weight", {key_len});
    for (const char* norm : {"attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"}) {
      expect_shape(p + norm + ".weight", {hidden});
    }
  }

  // The block matmul on real weights agrees with the dequantized matrix.
  ThreadPool pool(2);
  for (const auto& t : f->tensors()) {
    if (t.name.rfind("blk.0.", 0) != 0 || t.ne.size() != 2) continue;
    auto w = f->Weight(t.name);
    ASSERT_TRUE(w.ok());
    if (!IsQuantized(w->format)) continue;
    std::vector<float> deq;
    ASSERT_TRUE(f->DequantizeToF32(t.name, &deq).ok());
    std::vector<float> x(static_cast<size_t>(w->cols));
    for (int64_t i = 0; i < w->cols; ++i) x[i] = std::cos(float(i) * 0.11f) * (1.0f + float(i % 7));
    std::vector<float> y(static_cast<size_t>(w->rows));
    ASSERT_TRUE(QuantMatMul(x.data(), 1, *w, y.data(), &pool).ok());
    int64_t bad = 0;
    for (int64_t r = 0; r < w->rows; ++r) {
      double ref = 0, mag = 0, bound = 0;
      for (int64_t i = 0; i < w->cols; ++i) {
        const double wi = deq[r * w->cols + i];
        ref += wi * x[i];
        mag += std::fabs(wi * x[i]);
        bound += std::fabs(wi);
      }
      // Activation amax is at most 7 here, so each int8 step is <= 7/254.
      const double tol = bound * 7.0 / 254 * 1.001 + 2e-5 * mag + 1e-6;
      if (std::fabs(y[r] - ref) > tol) ++bad;
    }
    EXPECT_EQ(bad, 0) << t.name;
  }
}

}  // namespace
}  // namespace facet
