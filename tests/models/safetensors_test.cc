#include "models/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/mmap.h"

namespace facet {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A fresh directory per test.
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir =
      fs::path(::testing::TempDir()) / (std::string("facet_st_") + info->test_suite_name() + "_" + info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Owns the bytes behind a NamedTensor.
struct HostTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
  NamedTensor named() const { return {name, TensorView{const_cast<uint8_t*>(bytes.data()), dtype, shape}}; }
};

HostTensor F32(const std::string& name, Shape shape, float start) {
  HostTensor t{name, DType::kF32, shape, std::vector<uint8_t>(size_t(shape.numel()) * 4)};
  for (int64_t i = 0; i < shape.numel(); ++i) {
    float v = start + float(i) * 0.5f;
    std::memcpy(t.bytes.data() + i * 4, &v, 4);
  }
  return t;
}

HostTensor Bf16(const std::string& name, Shape shape, float start) {
  HostTensor t{name, DType::kBF16, shape, std::vector<uint8_t>(size_t(shape.numel()) * 2)};
  for (int64_t i = 0; i < shape.numel(); ++i) {
    bf16 v = F32ToBf16(start - float(i) * 0.25f);
    std::memcpy(t.bytes.data() + i * 2, &v.bits, 2);
  }
  return t;
}

// Element value = the callback of its multi-index, as int32.
template <typename Fn>
HostTensor I32(const std::string& name, Shape shape, Fn value) {
  HostTensor t{name, DType::kI32, shape, std::vector<uint8_t>(size_t(shape.numel()) * 4)};
  std::vector<int64_t> idx(size_t(shape.rank()), 0);
  for (int64_t i = 0; i < shape.numel(); ++i) {
    int32_t v = value(idx);
    std::memcpy(t.bytes.data() + i * 4, &v, 4);
    for (int d = shape.rank() - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < shape[d]) break;
      idx[size_t(d)] = 0;
    }
  }
  return t;
}

void Write(const std::string& path, const std::vector<HostTensor>& tensors,
           const std::map<std::string, std::string>& metadata = {}) {
  std::vector<NamedTensor> named;
  for (const HostTensor& t : tensors) named.push_back(t.named());
  absl::Status s = WriteSafetensors(path, named, metadata);
  ASSERT_TRUE(s.ok()) << s;
}

// A file from a literal header and data section (little-endian length prefix).
void WriteRaw(const std::string& path, const std::string& header, const std::string& data,
              int64_t length_override = -1) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t n = length_override >= 0 ? uint64_t(length_override) : header.size();
  for (int i = 0; i < 8; ++i) out.put(char(uint8_t(n >> (8 * i))));
  out << header << data;
}

std::vector<uint8_t> Bytes(const TensorView& v) {
  const uint8_t* p = static_cast<const uint8_t*>(v.data);
  return std::vector<uint8_t>(p, p + v.bytes());
}

TEST(SafetensorsTest, RoundTripDtypesAndRanks) {
  const std::string path = TestDir() + "/model.safetensors";
  std::vector<HostTensor> tensors = {
      F32("f32_1d", {5}, 1.0f),
      Bf16("bf16_2d", {3, 4}, 2.0f),
      I32("i32_3d", {2, 3, 4}, [](const std::vector<int64_t>& i) { return int32_t(100 * i[0] + 10 * i[1] + i[2]); }),
      F32("f32_4d", {2, 1, 3, 2}, -3.0f),
      Bf16("bf16_odd", {3}, 0.0f),  // 6 bytes: the next tensor must stay aligned
      F32("scalar", {}, 7.0f),
      F32("empty", {0, 3}, 0.0f),
  };
  Write(path, tensors, {{"format", "pt"}});

  absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(path);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->num_files(), 1);
  std::vector<std::string> names = ck->TensorNames();
  EXPECT_EQ(names, (std::vector<std::string>{"bf16_2d", "bf16_odd", "empty", "f32_1d", "f32_4d", "i32_3d", "scalar"}));
  uint64_t total = 0;
  for (const HostTensor& t : tensors) {
    SCOPED_TRACE(t.name);
    absl::StatusOr<TensorView> v = ck->Get(t.name);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->dtype, t.dtype);
    EXPECT_EQ(v->shape, t.shape);
    EXPECT_EQ(Bytes(*v), t.bytes);
    // Natural alignment of every tensor inside the mapping.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v->data) % DTypeSize(t.dtype), 0u);
    total += t.bytes.size();
  }
  EXPECT_EQ(ck->TotalBytes(), total);
  EXPECT_FALSE(ck->Has("missing"));

  // The header: length prefix, padded so the data section starts 8-aligned,
  // and metadata kept.
  absl::StatusOr<std::string> raw = ReadFileToString(path);
  ASSERT_TRUE(raw.ok());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t((*raw)[size_t(i)]);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  EXPECT_EQ(raw->size(), 8 + header_len + total);  // no holes between tensors
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->metadata().at("format"), "pt");

  // Deterministic: the same tensors in another order give the same bytes.
  std::vector<HostTensor> reversed(tensors.rbegin(), tensors.rend());
  Write(path + ".2", reversed, {{"format", "pt"}});
  EXPECT_EQ(*ReadFileToString(path + ".2"), *raw);
}

// A file written byte by byte as the format describes it, independent of our
// writer (tensor order in the header differs from data order; no padding).
TEST(SafetensorsTest, ReadsHandWrittenFile) {
  const std::string path = TestDir() + "/hand.safetensors";
  std::string data;
  float a[2] = {1.5f, -2.0f};
  uint16_t b[3] = {0x3f80, 0x4000, 0xc040};  // bf16 1, 2, -3
  data.append(reinterpret_cast<const char*>(b), 6);
  data.append(reinterpret_cast<const char*>(a), 8);
  WriteRaw(path,
           R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},)"
           R"("a":{"dtype":"F32","shape":[1,2],"data_offsets":[6,14]}}  )",
           data);
  absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(path);
  ASSERT_TRUE(ck.ok()) << ck.status();
  absl::StatusOr<TensorView> va = ck->GetChecked("a", DType::kF32, {1, 2});
  ASSERT_TRUE(va.ok()) << va.status();
  float got[2];
  std::memcpy(got, va->data, 8);
  EXPECT_EQ(got[0], 1.5f);
  EXPECT_EQ(got[1], -2.0f);
  absl::StatusOr<TensorView> vb = ck->GetChecked("b", {3});
  ASSERT_TRUE(vb.ok()) << vb.status();
  uint16_t bits[3];
  std::memcpy(bits, vb->data, 6);
  EXPECT_EQ(Bf16ToF32(bf16{bits[2]}), -3.0f);
  const TensorInfo* info = ck->Find("a");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->nbytes, 8u);
}

void WriteIndex(const std::string& path, const std::string& weight_map_json) {
  std::ofstream out(path);
  out << R"({"metadata": {"total_size": 0}, "weight_map": )" << weight_map_json << "}";
}

TEST(SafetensorsTest, ShardedIndexAcrossTwoFiles) {
  const std::string dir = TestDir();
  HostTensor a = F32("model.a", {4}, 1.0f), b = Bf16("model.b", {2, 2}, 3.0f), c = F32("model.c", {3, 2}, 9.0f);
  Write(dir + "/model-00001-of-00002.safetensors", {a, b});
  Write(dir + "/model-00002-of-00002.safetensors", {c});
  WriteIndex(dir + "/model.safetensors.index.json",
             R"({"model.a": "model-00001-of-00002.safetensors", "model.b": "model-00001-of-00002.safetensors",
                 "model.c": "model-00002-of-00002.safetensors"})");
  for (const std::string& open_path : {dir, dir + "/model.safetensors.index.json"}) {
    SCOPED_TRACE(open_path);
    absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(open_path);
    ASSERT_TRUE(ck.ok()) << ck.status();
    EXPECT_EQ(ck->num_files(), 2);
    EXPECT_EQ(ck->TensorNames(), (std::vector<std::string>{"model.a", "model.b", "model.c"}));
    EXPECT_EQ(ck->Find("model.a")->file_index, ck->Find("model.b")->file_index);
    EXPECT_NE(ck->Find("model.a")->file_index, ck->Find("model.c")->file_index);
    EXPECT_THAT(ck->file_path(ck->Find("model.c")->file_index), HasSubstr("model-00002-of-00002"));
    for (const HostTensor* t : {&a, &b, &c}) {
      absl::StatusOr<TensorView> v = ck->Get(t->name);
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_EQ(Bytes(*v), t->bytes);
    }
  }
}

TEST(SafetensorsTest, DirectoryWithSingleFile) {
  const std::string dir = TestDir();
  Write(dir + "/model.safetensors", {F32("w", {2}, 0.0f)});
  absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_TRUE(ck->Has("w"));
  const std::string empty = dir + "/empty";
  fs::create_directory(empty);
  absl::StatusOr<WeightCheckpoint> missing = WeightCheckpoint::Open(empty);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(empty));
}

TEST(SafetensorsTest, ReadSliceAlongEachDim) {
  const std::string path = TestDir() + "/m.safetensors";
  auto v2 = [](const std::vector<int64_t>& i) { return int32_t(10 * i[0] + i[1]); };
  auto v3 = [](const std::vector<int64_t>& i) { return int32_t(100 * i[0] + 10 * i[1] + i[2]); };
  Write(path, {I32("m", {4, 6}, v2), I32("t", {2, 3, 4}, v3)});
  absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(path);
  ASSERT_TRUE(ck.ok()) << ck.status();

  std::vector<int32_t> out(12, -1);
  ASSERT_TRUE(ck->ReadSlice("m", 0, 1, 2, out.data(), out.size() * 4).ok());
  EXPECT_EQ(out, (std::vector<int32_t>{10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 25}));

  std::fill(out.begin(), out.end(), -1);
  ASSERT_TRUE(ck->ReadSlice("m", 1, 2, 3, out.data(), out.size() * 4).ok());
  EXPECT_EQ(out, (std::vector<int32_t>{2, 3, 4, 12, 13, 14, 22, 23, 24, 32, 33, 34}));

  std::vector<int32_t> t1(2 * 2 * 4);
  ASSERT_TRUE(ck->ReadSlice("t", 1, 1, 2, t1.data(), t1.size() * 4).ok());
  EXPECT_EQ(t1, (std::vector<int32_t>{10, 11, 12, 13, 20, 21, 22, 23, 110, 111, 112, 113, 120, 121, 122, 123}));
  std::vector<int32_t> t2(2 * 3 * 1);
  ASSERT_TRUE(ck->ReadSlice("t", 2, 3, 1, t2.data(), t2.size() * 4).ok());
  EXPECT_EQ(t2, (std::vector<int32_t>{3, 13, 23, 103, 113, 123}));
  // An empty slice touches nothing.
  EXPECT_TRUE(ck->ReadSlice("t", 0, 2, 0, nullptr, 0).ok());

  // Bad requests name the tensor and what is wrong.
  absl::Status s = ck->ReadSlice("m", 2, 0, 1, out.data(), out.size() * 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"m\""));
  s = ck->ReadSlice("m", 1, 4, 3, out.data(), out.size() * 4);
  EXPECT_THAT(std::string(s.message()), HasSubstr("outside dimension 1 of size 6"));
  s = ck->ReadSlice("m", 0, -1, 2, out.data(), out.size() * 4);
  EXPECT_FALSE(s.ok());
  s = ck->ReadSlice("m", 0, 0, 3, out.data(), out.size() * 4);  // needs 72 bytes, has 48
  EXPECT_THAT(std::string(s.message()), HasSubstr("destination holds 48 bytes"));
  EXPECT_EQ(ck->ReadSlice("nope", 0, 0, 1, out.data(), 4).code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, SliceRowsIsZeroCopy) {
  const std::string path = TestDir() + "/m.safetensors";
  Write(path, {I32("m", {4, 6}, [](const std::vector<int64_t>& i) { return int32_t(10 * i[0] + i[1]); })});
  absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(path);
  ASSERT_TRUE(ck.ok());
  TensorView whole = *ck->Get("m");
  absl::StatusOr<TensorView> rows = ck->SliceRows("m", 2, 2);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->shape, (Shape{2, 6}));
  EXPECT_EQ(rows->data, static_cast<uint8_t*>(whole.data) + 2 * 6 * 4);
  EXPECT_EQ(rows->as<int32_t>()[0], 20);
  EXPECT_EQ(rows->as<int32_t>()[11], 35);
  EXPECT_FALSE(ck->SliceRows("m", 3, 2).ok());
  EXPECT_TRUE(ck->SliceRows("m", 4, 0).ok());
}

TEST(SafetensorsTest, GetCheckedMismatches) {
  const std::string path = TestDir() + "/m.safetensors";
  Write(path, {Bf16("w", {3, 4}, 0.0f), I32("ids", {4}, [](const auto&) { return 1; })});
  absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(path);
  ASSERT_TRUE(ck.ok());
  EXPECT_TRUE(ck->GetChecked("w", DType::kBF16, {3, 4}).ok());
  EXPECT_TRUE(ck->GetChecked("w", {3, 4}).ok());

  absl::Status s = ck->GetChecked("w", DType::kF32, {3, 4}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr(path));
  EXPECT_THAT(msg, HasSubstr("\"w\""));
  EXPECT_THAT(msg, HasSubstr("expected f32 [3, 4]"));
  EXPECT_THAT(msg, HasSubstr("found bf16 [3, 4]"));

  msg = std::string(ck->GetChecked("w", DType::kBF16, {4, 3}).status().message());
  EXPECT_THAT(msg, HasSubstr("expected bf16 [4, 3], found bf16 [3, 4]"));
  msg = std::string(ck->GetChecked("ids", {4}).status().message());
  EXPECT_THAT(msg, HasSubstr("floating-point"));
  EXPECT_THAT(msg, HasSubstr("found i32 [4]"));
  absl::Status missing = ck->GetChecked("absent", {1}).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("\"absent\""));
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  const std::string path = TestDir() + "/w.safetensors";
  HostTensor a = F32("a", {2}, 0.0f);
  std::vector<NamedTensor> dup = {a.named(), a.named()};
  EXPECT_THAT(std::string(WriteSafetensors(path, dup).message()), HasSubstr("duplicate"));
  std::vector<NamedTensor> unnamed = {NamedTensor{"", a.named().view}};
  EXPECT_FALSE(WriteSafetensors(path, unnamed).ok());
  std::vector<NamedTensor> meta = {NamedTensor{"__metadata__", a.named().view}};
  EXPECT_FALSE(WriteSafetensors(path, meta).ok());
  EXPECT_FALSE(fs::exists(path));
}

// --- malformed files: one error each, naming the file and the problem ---

void ExpectOpenError(const std::string& path, const std::string& fragment) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok()) << "opened " << path;
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  std::string msg(f.status().message());
  EXPECT_THAT(msg, HasSubstr(path));
  EXPECT_THAT(msg, HasSubstr(fragment));
  // The checkpoint layer reports the same failure.
  EXPECT_FALSE(WeightCheckpoint::Open(path).ok());
}

TEST(SafetensorsErrorTest, MalformedHeaders) {
  const std::string dir = TestDir();
  int n = 0;
  auto file = [&]() { return dir + "/bad" + std::to_string(n++) + ".safetensors"; };
  const std::string eight(8, '\0');
  std::string p;

  p = file();
  { std::ofstream(p, std::ios::binary) << "abc"; }
  ExpectOpenError(p, "too short");

  p = file();
  WriteRaw(p, "{}", "", /*length_override=*/1000);
  ExpectOpenError(p, "runs past the end of the file");

  p = file();
  WriteRaw(p, "{}", "", int64_t(1) << 40);
  ExpectOpenError(p, "exceeds");

  p = file();
  WriteRaw(p, "{\"a\": ", "");
  ExpectOpenError(p, "not valid JSON");

  p = file();
  WriteRaw(p, "[1, 2]", "");
  ExpectOpenError(p, "not a JSON object");

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", "xx");
  ExpectOpenError(p, "unknown dtype \"Q4\"");

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "");
  ExpectOpenError(p, "shape entry 0");

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", "xxxx");
  ExpectOpenError(p, "\"shape\"");

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1],"data_offsets":[0,4]}})", "xxxx");
  ExpectOpenError(p, "rank 7");

  for (const char* offsets : {"[0]", "\"0,4\"", "[0, 4.0]", "[-4, 0]", "[0, 4, 8]"}) {
    p = file();
    WriteRaw(p, std::string(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":)") + offsets + "}}", "xxxx");
    ExpectOpenError(p, "data_offsets");
  }

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "xxxx");
  ExpectOpenError(p, "end before they begin");

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "xxxx");
  ExpectOpenError(p, "run past the data section (4 bytes)");

  p = file();
  WriteRaw(
      p,
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      eight);
  ExpectOpenError(p, "overlap");

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight);
  ExpectOpenError(p, "needs 12");

  p = file();
  WriteRaw(p, R"({"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}})", eight);
  ExpectOpenError(p, "too large");

  p = file();
  WriteRaw(p, R"({"__metadata__":{"n":1}})", "");
  ExpectOpenError(p, "__metadata__");

  p = file();
  WriteRaw(p, R"({"a":[1]})", "");
  ExpectOpenError(p, "not an object");
}

TEST(SafetensorsErrorTest, BadIndexes) {
  const std::string dir = TestDir();
  Write(dir + "/s1.safetensors", {F32("a", {1}, 0.0f), F32("shared", {1}, 0.0f)});
  Write(dir + "/s2.safetensors", {F32("b", {1}, 0.0f), F32("shared", {1}, 0.0f)});
  Write(dir + "/s3.safetensors", {F32("c", {1}, 0.0f)});
  const std::string index = dir + "/model.safetensors.index.json";

  WriteIndex(index, R"({"a": "s1.safetensors", "b": "s2.safetensors"})");
  absl::Status s = WeightCheckpoint::Open(index).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"shared\" appears in both"));

  WriteIndex(index, R"({"a": "s1.safetensors", "c": "missing.safetensors"})");
  s = WeightCheckpoint::Open(index).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing.safetensors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(index));

  WriteIndex(index, R"({"a": "s1.safetensors", "c": "s1.safetensors"})");
  s = WeightCheckpoint::Open(index).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("puts tensor \"c\" in shard \"s1.safetensors\""));

  WriteIndex(index, R"({"a": "../s1.safetensors"})");
  EXPECT_THAT(std::string(WeightCheckpoint::Open(index).status().message()), HasSubstr("plain relative path"));
  WriteIndex(index, R"({"a": 3})");
  EXPECT_THAT(std::string(WeightCheckpoint::Open(index).status().message()), HasSubstr("not a string"));
  WriteIndex(index, R"({})");
  EXPECT_THAT(std::string(WeightCheckpoint::Open(index).status().message()), HasSubstr("empty"));
  { std::ofstream(index) << R"({"metadata": {}})"; }
  EXPECT_THAT(std::string(WeightCheckpoint::Open(index).status().message()), HasSubstr("weight_map"));
  { std::ofstream(index) << "{not json"; }
  EXPECT_THAT(std::string(WeightCheckpoint::Open(index).status().message()), HasSubstr("not valid JSON"));

  // A good index next to the same shards opens.
  WriteIndex(index, R"({"a": "s1.safetensors", "c": "s3.safetensors"})");
  absl::StatusOr<WeightCheckpoint> ok = WeightCheckpoint::Open(dir);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->Has("shared"));  // in a shard, though not in weight_map
}

// Truncations and single-bit flips of a valid file must each give OK or an
// error, never a crash; when OK, every view must be readable.
TEST(SafetensorsErrorTest, CorruptedFilesNeverCrash) {
  const std::string dir = TestDir();
  const std::string good = dir + "/good.safetensors";
  Write(good, {F32("a.weight", {3, 5}, 1.0f), Bf16("b", {4}, 2.0f), I32("c", {2, 2, 2}, [](const auto&) { return 7; })},
        {{"format", "pt"}});
  absl::StatusOr<std::string> bytes = ReadFileToString(good);
  ASSERT_TRUE(bytes.ok());
  const std::string& original = *bytes;
  const std::string path = dir + "/mutant.safetensors";

  int opened = 0, rejected = 0;
  auto attempt = [&](const std::string& contents) {
    { std::ofstream(path, std::ios::binary | std::ios::trunc) << contents; }
    absl::StatusOr<WeightCheckpoint> ck = WeightCheckpoint::Open(path);
    if (!ck.ok()) {
      ++rejected;
      EXPECT_THAT(std::string(ck.status().message()), HasSubstr(path));
      return;
    }
    ++opened;
    for (const std::string& name : ck->TensorNames()) {
      absl::StatusOr<TensorView> v = ck->Get(name);
      ASSERT_TRUE(v.ok());
      uint64_t sum = 0;
      for (uint8_t b : Bytes(*v)) sum += b;
      (void)sum;
      if (v->shape.rank() > 0 && v->shape[0] > 0) {
        std::vector<uint8_t> row(v->bytes() / size_t(v->shape[0]));
        EXPECT_TRUE(ck->ReadSlice(name, 0, v->shape[0] - 1, 1, row.data(), row.size()).ok());
      }
    }
  };
  for (size_t len = 0; len < original.size(); ++len) attempt(original.substr(0, len));
  for (size_t i = 0; i < original.size(); ++i) {
    for (int bit : {0, 3, 7}) {
      std::string m = original;
      m[i] = char(uint8_t(m[i]) ^ (1u << bit));
      attempt(m);
    }
  }
  EXPECT_GT(opened, 0);                       // data-section flips leave a valid file
  EXPECT_GT(rejected, int(original.size()));  // every truncation is rejected
}

}  // namespace
}  // namespace facet
