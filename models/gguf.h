// GGUF (llama.cpp / ggml) model files: a reader over a memory map and a small
// writer for tests and tools.
//
// Layout (little-endian; ggml/docs/gguf.md, ggml/src/gguf.cpp):
//   "GGUF" u32 version u64 tensor_count u64 kv_count
//   kv_count × { string key, u32 value_type, value }
//   tensor_count × { string name, u32 n_dims, i64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the tensor data; each
//   tensor's offset is relative to the data start and a multiple of the alignment.
// A string is u64 length + bytes (no terminator); an array is u32 element type,
// u64 count, elements. ne[0] is the innermost (contiguous) dimension.
// Versions 2 and 3 share this layout (3 only added big-endian files, which we
// reject); version 1 used 32-bit counts and is not supported.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/mmap.h"
#include "kernels/cpu/weight.h"

namespace facet {

// GGUF metadata value types (gguf.h enum gguf_type).
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string GgufTypeName(GgufType t);

// ggml tensor type ids (ggml.h enum ggml_type) that Facet's kernels read.
namespace ggml_type {
inline constexpr uint32_t kF32 = 0;
inline constexpr uint32_t kF16 = 1;
inline constexpr uint32_t kQ4_0 = 2;
inline constexpr uint32_t kQ5_0 = 6;
inline constexpr uint32_t kQ8_0 = 8;
inline constexpr uint32_t kQ4_K = 12;
inline constexpr uint32_t kQ5_K = 13;
inline constexpr uint32_t kQ6_K = 14;
inline constexpr uint32_t kBF16 = 30;
}  // namespace ggml_type

// "Q4_K", "F32", ... or "type 99" for ids ggml does not define.
std::string GgmlTypeName(uint32_t ggml_type);
// The WeightFormat of a ggml type; UNIMPLEMENTED (naming the type) for types
// the kernels cannot read, INVALID_ARGUMENT for unknown ids.
absl::StatusOr<WeightFormat> GgmlTypeToFormat(uint32_t ggml_type);
uint32_t FormatToGgmlType(WeightFormat f);

class GgufFile {
 public:
  struct TensorInfo {
    std::string name;
    uint32_t ggml_type = 0;
    std::vector<int64_t> ne;  // ggml order: ne[0] innermost
    uint64_t offset = 0;      // from the start of the data section
    uint64_t nbytes = 0;
    int64_t elements() const;
  };

  // Maps and validates the whole header: every metadata value and tensor
  // info is checked against the file size, so the getters below never read
  // out of bounds. Errors name the file and what is wrong.
  static absl::StatusOr<GgufFile> Open(const std::string& path);

  GgufFile(GgufFile&&) = default;
  GgufFile& operator=(GgufFile&&) = default;

  uint32_t version() const { return version_; }
  const std::string& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  // Start of the tensor data section.
  const uint8_t* data() const { return file_.data() + data_offset_; }

  // --- metadata ---
  bool HasKey(std::string_view key) const;
  std::vector<std::string> Keys() const;  // in file order
  // Type of a value (for arrays: kArray; see ArrayInfo). NOT_FOUND if absent.
  absl::StatusOr<GgufType> TypeOf(std::string_view key) const;
  // Element type and length of an array value.
  absl::StatusOr<std::pair<GgufType, uint64_t>> ArrayInfo(std::string_view key) const;
  // Typed getters: NOT_FOUND when the key is absent, INVALID_ARGUMENT when it
  // holds another type or the value does not fit; messages name the key.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<uint32_t> GetU32(std::string_view key) const;  // any integer type in range
  absl::StatusOr<int64_t> GetI64(std::string_view key) const;   // any integer type in range
  absl::StatusOr<float> GetF32(std::string_view key) const;     // f32 or f64
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetF32Array(std::string_view key) const;    // f32/f64 elements
  absl::StatusOr<std::vector<int32_t>> GetI32Array(std::string_view key) const;  // integer elements in range
  absl::StatusOr<std::vector<int64_t>> GetI64Array(std::string_view key) const;  // integer elements in range
  // A short human-readable rendering of any value (arrays: type, length and
  // the first few elements), for dumps and error messages.
  std::string DescribeValue(std::string_view key) const;

  // --- tensors ---
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;
  const uint8_t* TensorData(const TensorInfo& t) const { return data() + t.offset; }
  // The tensor as a matrix the kernels read: rows = ne[1]·ne[2]·ne[3],
  // cols = ne[0]. NOT_FOUND for a missing name, UNIMPLEMENTED for a ggml type
  // the kernels do not read (the message names the type).
  absl::StatusOr<WeightRef> Weight(std::string_view name) const;
  static absl::StatusOr<WeightFormat> FormatOf(uint32_t ggml_type) { return GgmlTypeToFormat(ggml_type); }
  // All elements as f32, for small tensors (norms) and tests.
  absl::Status DequantizeToF32(std::string_view name, std::vector<float>* out) const;

 private:
  struct Value {
    GgufType type;
    uint64_t offset;            // of the payload in the file
    GgufType elem_type{};       // arrays only
    uint64_t count = 0;         // arrays only
  };

  GgufFile() = default;
  absl::Status Parse();
  absl::StatusOr<const Value*> Find(std::string_view key) const;
  absl::StatusOr<int64_t> ReadInteger(GgufType t, uint64_t offset, std::string_view key) const;
  absl::StatusOr<double> ReadFloat(GgufType t, uint64_t offset, std::string_view key) const;
  std::string ReadStringAt(uint64_t offset, uint64_t* next) const;

  MappedFile file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  absl::flat_hash_map<std::string, Value> values_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

// Builds GGUF files in memory, for tests and tools. Values and tensors are
// written in the order added; tensor data is padded to the alignment. The
// writer does not validate (tests use it to make bad files too).
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3) : version_(version) {}

  void AddU8(const std::string& key, uint8_t v);
  void AddI8(const std::string& key, int8_t v);
  void AddU16(const std::string& key, uint16_t v);
  void AddI16(const std::string& key, int16_t v);
  void AddU32(const std::string& key, uint32_t v);
  void AddI32(const std::string& key, int32_t v);
  void AddU64(const std::string& key, uint64_t v);
  void AddI64(const std::string& key, int64_t v);
  void AddF32(const std::string& key, float v);
  void AddF64(const std::string& key, double v);
  void AddBool(const std::string& key, bool v);
  void AddString(const std::string& key, const std::string& v);
  void AddStringArray(const std::string& key, const std::vector<std::string>& v);
  void AddF32Array(const std::string& key, const std::vector<float>& v);
  void AddI32Array(const std::string& key, const std::vector<int32_t>& v);
  void AddI64Array(const std::string& key, const std::vector<int64_t>& v);
  void AddU8Array(const std::string& key, const std::vector<uint8_t>& v);
  // Writes general.alignment too; call before Serialize.
  void SetAlignment(uint32_t alignment);

  // `data` holds the tensor's bytes (normally its exact size for the type and
  // shape). ne in ggml order.
  void AddTensor(const std::string& name, uint32_t ggml_type, const std::vector<int64_t>& ne,
                 std::string data);

  std::string Serialize() const;
  absl::Status Write(const std::string& path) const;

 private:
  void AddRaw(const std::string& key, GgufType type, std::string payload);

  struct Tensor {
    std::string name;
    uint32_t ggml_type;
    std::vector<int64_t> ne;
    std::string data;
  };
  uint32_t version_;
  uint32_t alignment_ = 32;
  uint64_t kv_count_ = 0;
  std::string kv_bytes_;
  std::vector<Tensor> tensors_;
};

// Bytes a ggml tensor of `ggml_type` and `ne` occupies; INVALID_ARGUMENT for
// unknown types or an ne[0] that is not a multiple of the type's block size.
absl::StatusOr<uint64_t> GgmlTensorBytes(uint32_t ggml_type, const std::vector<int64_t>& ne);

}  // namespace facet
