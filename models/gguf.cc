#include "models/gguf.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "kernels/cpu/quant.h"

namespace facet {
namespace {

constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

struct GgmlTypeTraits {
  const char* name;  // nullptr: id unused or removed from ggml
  int64_t block;     // values per block
  int64_t bytes;     // bytes per block
};

// ggml.h enum ggml_type with block geometry from ggml-common.h (sizeof of
// each block_* struct). Ids 4, 5, 31-33 and 36-38 were removed from ggml.
constexpr GgmlTypeTraits kGgmlTypes[] = {
    {"F32", 1, 4},        {"F16", 1, 2},       {"Q4_0", 32, 18},     {"Q4_1", 32, 20},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {"Q5_0", 32, 22},     {"Q5_1", 32, 24},
    {"Q8_0", 32, 34},     {"Q8_1", 32, 36},    {"Q2_K", 256, 84},    {"Q3_K", 256, 110},
    {"Q4_K", 256, 144},   {"Q5_K", 256, 176},  {"Q6_K", 256, 210},   {"Q8_K", 256, 292},
    {"IQ2_XXS", 256, 66}, {"IQ2_XS", 256, 74}, {"IQ3_XXS", 256, 98}, {"IQ1_S", 256, 50},
    {"IQ4_NL", 32, 18},   {"IQ3_S", 256, 110}, {"IQ2_S", 256, 82},   {"IQ4_XS", 256, 136},
    {"I8", 1, 1},         {"I16", 1, 2},       {"I32", 1, 4},        {"I64", 1, 8},
    {"F64", 1, 8},        {"IQ1_M", 256, 56},  {"BF16", 1, 2},       {nullptr, 0, 0},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {"TQ1_0", 256, 54},   {"TQ2_0", 256, 66},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {nullptr, 0, 0},      {"MXFP4", 32, 17},
};
constexpr uint32_t kNumGgmlTypes = sizeof(kGgmlTypes) / sizeof(kGgmlTypes[0]);

const GgmlTypeTraits* TypeTraits(uint32_t t) {
  if (t >= kNumGgmlTypes || kGgmlTypes[t].name == nullptr) return nullptr;
  return &kGgmlTypes[t];
}

// Bytes of one scalar of a metadata type; 0 for string/array.
uint64_t ScalarBytes(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool: return 1;
    case GgufType::kU16:
    case GgufType::kI16: return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32: return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64: return 8;
    case GgufType::kString:
    case GgufType::kArray: return 0;
  }
  return 0;
}

bool IsInteger(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64: return true;
    default: return false;
  }
}

bool IsFloat(GgufType t) { return t == GgufType::kF32 || t == GgufType::kF64; }

std::string Quote(std::string_view s) { return absl::StrCat("'", std::string(s), "'"); }

template <class T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Bounds-checked sequential reads over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Need(uint64_t n, const std::string& what) const {
    if (n > remaining()) {
      return absl::InvalidArgumentError(absl::StrCat("truncated: ", what, " needs ", n, " bytes at offset ",
                                                     pos_, " but only ", remaining(), " remain"));
    }
    return absl::OkStatus();
  }
  template <class T>
  absl::StatusOr<T> Read(const std::string& what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T v = Load<T>(data_ + pos_);
    pos_ += sizeof(T);
    return v;
  }
  absl::Status Skip(uint64_t n, const std::string& what) {
    RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string_view> ReadString(const std::string& what) {
    ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(absl::StrCat(what, " length")));
    RETURN_IF_ERROR(Need(len, absl::StrCat(what, " (", len, " bytes)")));
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

absl::StatusOr<GgufType> CheckType(uint32_t raw, const std::string& what) {
  if (raw > uint32_t(GgufType::kF64)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has unknown value type ", raw));
  }
  return GgufType(raw);
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

std::string GgufTypeName(GgufType t) {
  static constexpr const char* kNames[] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                           "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = uint32_t(t);
  return i < 13 ? kNames[i] : absl::StrCat("type ", i);
}

std::string GgmlTypeName(uint32_t ggml_type) {
  const GgmlTypeTraits* tr = TypeTraits(ggml_type);
  return tr ? tr->name : absl::StrCat("type ", ggml_type);
}

absl::StatusOr<WeightFormat> GgmlTypeToFormat(uint32_t t) {
  switch (t) {
    case ggml_type::kF32: return WeightFormat::kF32;
    case ggml_type::kF16: return WeightFormat::kF16;
    case ggml_type::kBF16: return WeightFormat::kBF16;
    case ggml_type::kQ8_0: return WeightFormat::kQ8_0;
    case ggml_type::kQ4_0: return WeightFormat::kQ4_0;
    case ggml_type::kQ5_0: return WeightFormat::kQ5_0;
    case ggml_type::kQ4_K: return WeightFormat::kQ4_K;
    case ggml_type::kQ5_K: return WeightFormat::kQ5_K;
    case ggml_type::kQ6_K: return WeightFormat::kQ6_K;
  }
  if (TypeTraits(t) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown ggml type id ", t));
  }
  return absl::UnimplementedError(
      absl::StrCat("ggml type ", GgmlTypeName(t),
                   " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K)"));
}

uint32_t FormatToGgmlType(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return ggml_type::kF32;
    case WeightFormat::kF16: return ggml_type::kF16;
    case WeightFormat::kBF16: return ggml_type::kBF16;
    case WeightFormat::kQ8_0: return ggml_type::kQ8_0;
    case WeightFormat::kQ4_0: return ggml_type::kQ4_0;
    case WeightFormat::kQ5_0: return ggml_type::kQ5_0;
    case WeightFormat::kQ4_K: return ggml_type::kQ4_K;
    case WeightFormat::kQ5_K: return ggml_type::kQ5_K;
    case WeightFormat::kQ6_K: return ggml_type::kQ6_K;
  }
  return ggml_type::kF32;
}

absl::StatusOr<uint64_t> GgmlTensorBytes(uint32_t t, const std::vector<int64_t>& ne) {
  const GgmlTypeTraits* tr = TypeTraits(t);
  if (tr == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown ggml type id ", t));
  // No dimensions is a single value (ggml treats missing dims as 1).
  if (ne.empty()) return GgmlTensorBytes(t, std::vector<int64_t>{1});
  // Both the byte size and the element count must fit in int64: callers
  // index with int64 and allocate elements() floats.
  constexpr uint64_t kMax = uint64_t(std::numeric_limits<int64_t>::max());
  uint64_t total = 1, elements = 1;
  for (size_t i = 0; i < ne.size(); ++i) {
    if (ne[i] < 0) return absl::InvalidArgumentError(absl::StrCat("ne[", i, "] = ", ne[i], " is negative"));
    if (i == 0 && ne[0] % tr->block != 0) {
      return absl::InvalidArgumentError(absl::StrCat("ne[0] = ", ne[0], " is not a multiple of the ", tr->name,
                                                     " block size ", tr->block));
    }
    uint64_t dim = uint64_t(ne[i]);
    if (i == 0 && MulOverflows(uint64_t(ne[0] / tr->block), uint64_t(tr->bytes), &dim)) dim = ~0ull;
    if (MulOverflows(total, dim, &total) || total > kMax || MulOverflows(elements, uint64_t(ne[i]), &elements) ||
        elements > kMax) {
      return absl::InvalidArgumentError("tensor size overflows 64 bits");
    }
  }
  return total;
}

int64_t GgufFile::TensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

absl::StatusOr<GgufFile> GgufFile::Open(const std::string& path) {
  GgufFile f;
  ASSIGN_OR_RETURN(f.file_, MappedFile::Open(path));
  RETURN_IF_ERROR(Annotate(f.Parse(), absl::StrCat("GGUF file ", path)));
  return f;
}

absl::Status GgufFile::Parse() {
  const uint64_t size = file_.size();
  const uint8_t* base = file_.data();
  if (size < kHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("too small for a GGUF header (", size, " bytes)"));
  }
  if (std::memcmp(base, "GGUF", 4) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad magic 0x", absl::Hex(Load<uint32_t>(base)),
                                                   " (expected \"GGUF\"): not a GGUF file"));
  }
  Cursor c(base, size);
  RETURN_IF_ERROR(c.Skip(4, "magic"));
  ASSIGN_OR_RETURN(version_, c.Read<uint32_t>("version"));
  if (version_ == 0x02000000u || version_ == 0x03000000u) {
    return absl::UnimplementedError("big-endian GGUF files are not supported");
  }
  if (version_ != 2 && version_ != 3) {
    return absl::UnimplementedError(
        absl::StrCat("unsupported GGUF version ", version_, " (supported: 2 and 3)"));
  }
  ASSIGN_OR_RETURN(const uint64_t n_tensors, c.Read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(const uint64_t n_kv, c.Read<uint64_t>("metadata count"));
  // Smallest possible entries: a metadata entry is an 8-byte key length, a
  // 4-byte type and a 1-byte value; a tensor info an 8-byte name length,
  // n_dims, type and offset. Counts beyond that cannot be real.
  if (n_kv > c.remaining() / 13) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata count ", n_kv, " is impossible for a file of ", size, " bytes"));
  }
  if (n_tensors > c.remaining() / 24) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor count ", n_tensors, " is impossible for a file of ", size, " bytes"));
  }

  keys_.reserve(size_t(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string entry = absl::StrCat("metadata entry ", i);
    ASSIGN_OR_RETURN(std::string_view key_view, c.ReadString(absl::StrCat(entry, " key")));
    std::string key(key_view);
    const std::string what = absl::StrCat("metadata key ", Quote(key));
    ASSIGN_OR_RETURN(uint32_t raw_type, c.Read<uint32_t>(absl::StrCat(what, " type")));
    ASSIGN_OR_RETURN(GgufType type, CheckType(raw_type, what));
    Value v{type, c.pos()};
    if (type == GgufType::kString) {
      RETURN_IF_ERROR(c.ReadString(what).status());
    } else if (type == GgufType::kArray) {
      ASSIGN_OR_RETURN(uint32_t raw_elem, c.Read<uint32_t>(absl::StrCat(what, " array element type")));
      ASSIGN_OR_RETURN(v.elem_type, CheckType(raw_elem, absl::StrCat(what, " array element")));
      ASSIGN_OR_RETURN(v.count, c.Read<uint64_t>(absl::StrCat(what, " array length")));
      v.offset = c.pos();
      if (v.elem_type == GgufType::kArray) {
        return absl::UnimplementedError(absl::StrCat(what, ": arrays of arrays are not supported"));
      }
      if (v.elem_type == GgufType::kString) {
        if (v.count > c.remaining() / 8) {
          return absl::InvalidArgumentError(absl::StrCat("truncated: ", what, " claims ", v.count,
                                                         " strings but only ", c.remaining(), " bytes remain"));
        }
        for (uint64_t j = 0; j < v.count; ++j) {
          RETURN_IF_ERROR(c.ReadString(absl::StrCat(what, " element ", j)).status());
        }
      } else {
        const uint64_t elem = ScalarBytes(v.elem_type);
        if (v.count > c.remaining() / elem) {
          return absl::InvalidArgumentError(absl::StrCat("truncated: ", what, " claims ", v.count, " ",
                                                         GgufTypeName(v.elem_type), " elements but only ",
                                                         c.remaining(), " bytes remain"));
        }
        RETURN_IF_ERROR(c.Skip(v.count * elem, what));
      }
    } else {
      RETURN_IF_ERROR(c.Skip(ScalarBytes(type), what));
    }
    if (!values_.emplace(key, v).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate ", what));
    }
    keys_.push_back(std::move(key));
  }

  if (HasKey("general.alignment")) {
    const Value& v = values_.find("general.alignment")->second;
    if (v.type != GgufType::kU32) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment is ", GgufTypeName(v.type), ", expected u32"));
    }
    alignment_ = Load<uint32_t>(base + v.offset);
    if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment ", alignment_, " is not a power of two"));
    }
  }

  tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    ASSIGN_OR_RETURN(std::string_view name, c.ReadString(absl::StrCat("tensor info ", i, " name")));
    t.name = std::string(name);
    const std::string what = absl::StrCat("tensor ", Quote(t.name));
    ASSIGN_OR_RETURN(uint32_t n_dims, c.Read<uint32_t>(absl::StrCat(what, " n_dims")));
    if (n_dims > kMaxDims) {
      return absl::InvalidArgumentError(absl::StrCat(what, " has ", n_dims, " dimensions (at most 4)"));
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(int64_t ne, c.Read<int64_t>(absl::StrCat(what, " ne[", d, "]")));
      t.ne.push_back(ne);
    }
    ASSIGN_OR_RETURN(t.ggml_type, c.Read<uint32_t>(absl::StrCat(what, " type")));
    ASSIGN_OR_RETURN(t.offset, c.Read<uint64_t>(absl::StrCat(what, " offset")));
    if (TypeTraits(t.ggml_type) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, " has unknown ggml type id ", t.ggml_type));
    }
    auto nbytes = GgmlTensorBytes(t.ggml_type, t.ne);
    if (!nbytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " (", GgmlTypeName(t.ggml_type),
                                                     "): size inconsistent with its type and shape: ",
                                                     std::string(nbytes.status().message())));
    }
    t.nbytes = *nbytes;
    if (t.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " offset ", t.offset, " is not a multiple of the alignment ", alignment_));
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate ", what));
    }
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  for (const TensorInfo& t : tensors_) {
    const uint64_t avail = data_offset_ <= size ? size - data_offset_ : 0;
    if (t.offset > avail || t.nbytes > avail - t.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", Quote(t.name), " data [", data_offset_ + t.offset, ", +", t.nbytes,
          ") runs past the end of the file (", size, " bytes)"));
    }
  }
  // Tensors may appear in any order but must not share bytes; an overlap
  // means a shape or type that does not match the space the writer gave it.
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& a = tensors_[order[k - 1]];
    const TensorInfo& b = tensors_[order[k]];
    if (a.offset + a.nbytes > b.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", Quote(a.name), " (", GgmlTypeName(a.ggml_type), ", ", a.nbytes, " bytes at ", a.offset,
          ") overlaps tensor ", Quote(b.name), " at ", b.offset, ": its size is inconsistent with the layout"));
    }
  }
  return absl::OkStatus();
}

bool GgufFile::HasKey(std::string_view key) const {
  return values_.contains(absl::string_view(key.data(), key.size()));
}

std::vector<std::string> GgufFile::Keys() const { return keys_; }

absl::StatusOr<const GgufFile::Value*> GgufFile::Find(std::string_view key) const {
  auto it = values_.find(absl::string_view(key.data(), key.size()));
  if (it == values_.end()) {
    return absl::NotFoundError(absl::StrCat("GGUF file ", path(), ": no metadata key ", Quote(key)));
  }
  return &it->second;
}

absl::StatusOr<GgufType> GgufFile::TypeOf(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  return v->type;
}

absl::StatusOr<std::pair<GgufType, uint64_t>> GgufFile::ArrayInfo(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  if (v->type != GgufType::kArray) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF file ", path(), ": key ", Quote(key), " is ", GgufTypeName(v->type), ", not an array"));
  }
  return std::make_pair(v->elem_type, v->count);
}

namespace {
absl::Status WrongType(const std::string& path, std::string_view key, GgufType got, const char* want) {
  return absl::InvalidArgumentError(
      absl::StrCat("GGUF file ", path, ": key ", Quote(key), " is ", GgufTypeName(got), ", expected ", want));
}
}  // namespace

absl::StatusOr<int64_t> GgufFile::ReadInteger(GgufType t, uint64_t off, std::string_view key) const {
  const uint8_t* p = file_.data() + off;
  switch (t) {
    case GgufType::kU8: return int64_t(Load<uint8_t>(p));
    case GgufType::kI8: return int64_t(Load<int8_t>(p));
    case GgufType::kU16: return int64_t(Load<uint16_t>(p));
    case GgufType::kI16: return int64_t(Load<int16_t>(p));
    case GgufType::kU32: return int64_t(Load<uint32_t>(p));
    case GgufType::kI32: return int64_t(Load<int32_t>(p));
    case GgufType::kI64: return Load<int64_t>(p);
    case GgufType::kU64: {
      const uint64_t v = Load<uint64_t>(p);
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(
            absl::StrCat("GGUF file ", path(), ": key ", Quote(key), " value ", v, " does not fit in int64"));
      }
      return int64_t(v);
    }
    default: return WrongType(path(), key, t, "an integer");
  }
}

absl::StatusOr<double> GgufFile::ReadFloat(GgufType t, uint64_t off, std::string_view key) const {
  const uint8_t* p = file_.data() + off;
  if (t == GgufType::kF32) return double(Load<float>(p));
  if (t == GgufType::kF64) return Load<double>(p);
  return WrongType(path(), key, t, "f32 or f64");
}

std::string GgufFile::ReadStringAt(uint64_t off, uint64_t* next) const {
  const uint64_t len = Load<uint64_t>(file_.data() + off);
  if (next) *next = off + 8 + len;
  return std::string(reinterpret_cast<const char*>(file_.data() + off + 8), size_t(len));
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  if (v->type != GgufType::kString) return WrongType(path(), key, v->type, "string");
  return ReadStringAt(v->offset, nullptr);
}

absl::StatusOr<int64_t> GgufFile::GetI64(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  return ReadInteger(v->type, v->offset, key);
}

absl::StatusOr<uint32_t> GgufFile::GetU32(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  if (v->type == GgufType::kU64) {
    const uint64_t u = Load<uint64_t>(file_.data() + v->offset);
    if (u > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF file ", path(), ": key ", Quote(key), " value ", u, " does not fit in u32"));
    }
    return uint32_t(u);
  }
  ASSIGN_OR_RETURN(int64_t i, ReadInteger(v->type, v->offset, key));
  if (i < 0 || i > int64_t(std::numeric_limits<uint32_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF file ", path(), ": key ", Quote(key), " value ", i, " does not fit in u32"));
  }
  return uint32_t(i);
}

absl::StatusOr<float> GgufFile::GetF32(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  ASSIGN_OR_RETURN(double d, ReadFloat(v->type, v->offset, key));
  return float(d);
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  if (v->type != GgufType::kBool) return WrongType(path(), key, v->type, "bool");
  return file_.data()[v->offset] != 0;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  if (v->type != GgufType::kArray || v->elem_type != GgufType::kString) {
    return WrongType(path(), key, v->type == GgufType::kArray ? v->elem_type : v->type, "an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(size_t(v->count));
  uint64_t off = v->offset;
  for (uint64_t i = 0; i < v->count; ++i) out.push_back(ReadStringAt(off, &off));
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetF32Array(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  if (v->type != GgufType::kArray || !IsFloat(v->elem_type)) {
    return WrongType(path(), key, v->type == GgufType::kArray ? v->elem_type : v->type,
                     "an array of f32 or f64");
  }
  std::vector<float> out(size_t(v->count));
  const uint64_t step = ScalarBytes(v->elem_type);
  for (uint64_t i = 0; i < v->count; ++i) {
    ASSIGN_OR_RETURN(double d, ReadFloat(v->elem_type, v->offset + i * step, key));
    out[i] = float(d);
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetI64Array(std::string_view key) const {
  ASSIGN_OR_RETURN(const Value* v, Find(key));
  if (v->type != GgufType::kArray || !IsInteger(v->elem_type)) {
    return WrongType(path(), key, v->type == GgufType::kArray ? v->elem_type : v->type,
                     "an array of integers");
  }
  std::vector<int64_t> out(size_t(v->count));
  const uint64_t step = ScalarBytes(v->elem_type);
  for (uint64_t i = 0; i < v->count; ++i) {
    ASSIGN_OR_RETURN(out[i], ReadInteger(v->elem_type, v->offset + i * step, key));
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> GgufFile::GetI32Array(std::string_view key) const {
  ASSIGN_OR_RETURN(std::vector<int64_t> wide, GetI64Array(key));
  std::vector<int32_t> out(wide.size());
  for (size_t i = 0; i < wide.size(); ++i) {
    if (wide[i] < std::numeric_limits<int32_t>::min() || wide[i] > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF file ", path(), ": key ", Quote(key), " element ", i,
                                                     " = ", wide[i], " does not fit in int32"));
    }
    out[i] = int32_t(wide[i]);
  }
  return out;
}

std::string GgufFile::DescribeValue(std::string_view key) const {
  auto found = Find(key);
  if (!found.ok()) return "<absent>";
  const Value& v = **found;
  auto scalar = [&](GgufType t, uint64_t off) -> std::string {
    if (t == GgufType::kString) {
      std::string s = ReadStringAt(off, nullptr);
      if (s.size() > 60) s = s.substr(0, 60) + "...";
      return Quote(s);
    }
    if (t == GgufType::kBool) return file_.data()[off] ? "true" : "false";
    if (IsFloat(t)) return absl::StrCat(*ReadFloat(t, off, key));
    if (t == GgufType::kU64) return absl::StrCat(Load<uint64_t>(file_.data() + off));
    auto i = ReadInteger(t, off, key);
    return i.ok() ? absl::StrCat(*i) : "?";
  };
  if (v.type != GgufType::kArray) return absl::StrCat(GgufTypeName(v.type), " ", scalar(v.type, v.offset));
  std::string out = absl::StrCat("[", GgufTypeName(v.elem_type), " x ", v.count, "]");
  uint64_t off = v.offset;
  for (uint64_t i = 0; i < std::min<uint64_t>(v.count, 5); ++i) {
    absl::StrAppend(&out, i == 0 ? " " : ", ", scalar(v.elem_type, off));
    off += v.elem_type == GgufType::kString ? 8 + Load<uint64_t>(file_.data() + off) : ScalarBytes(v.elem_type);
  }
  if (v.count > 5) absl::StrAppend(&out, ", ...");
  return out;
}

const GgufFile::TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(absl::string_view(name.data(), name.size()));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<WeightRef> GgufFile::Weight(std::string_view name) const {
  const TensorInfo* t = FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("GGUF file ", path(), ": no tensor ", Quote(name)));
  }
  auto format = GgmlTypeToFormat(t->ggml_type);
  if (!format.ok()) {
    return Annotate(format.status(), absl::StrCat("GGUF file ", path(), ": tensor ", Quote(name)));
  }
  WeightRef w;
  w.data = TensorData(*t);
  w.format = *format;
  w.cols = t->ne.empty() ? 1 : t->ne[0];
  w.rows = t->ne.empty() ? 1 : t->elements() / std::max<int64_t>(1, t->ne[0]);
  if (w.cols == 0) w.rows = 0;
  return w;
}

absl::Status GgufFile::DequantizeToF32(std::string_view name, std::vector<float>* out) const {
  ASSIGN_OR_RETURN(WeightRef w, Weight(name));
  out->resize(size_t(w.rows * w.cols));
  return Annotate(DequantizeRow(w.format, w.data, out->data(), w.rows * w.cols),
                  absl::StrCat("GGUF file ", path(), ": tensor ", Quote(name)));
}

// --- writer ---

namespace {
template <class T>
void Append(std::string* s, T v) {
  s->append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void AppendString(std::string* s, const std::string& v) {
  Append<uint64_t>(s, v.size());
  s->append(v);
}
template <class T>
std::string ArrayPayload(GgufType elem, const std::vector<T>& v) {
  std::string p;
  Append<uint32_t>(&p, uint32_t(elem));
  Append<uint64_t>(&p, v.size());
  for (const T& x : v) Append<T>(&p, x);
  return p;
}
}  // namespace

void GgufWriter::AddRaw(const std::string& key, GgufType type, std::string payload) {
  AppendString(&kv_bytes_, key);
  Append<uint32_t>(&kv_bytes_, uint32_t(type));
  kv_bytes_ += payload;
  ++kv_count_;
}

#define FACET_GGUF_SCALAR(Name, T, Type)                         \
  void GgufWriter::Name(const std::string& key, T v) {           \
    std::string p;                                               \
    Append<T>(&p, v);                                            \
    AddRaw(key, Type, std::move(p));                             \
  }
FACET_GGUF_SCALAR(AddU8, uint8_t, GgufType::kU8)
FACET_GGUF_SCALAR(AddI8, int8_t, GgufType::kI8)
FACET_GGUF_SCALAR(AddU16, uint16_t, GgufType::kU16)
FACET_GGUF_SCALAR(AddI16, int16_t, GgufType::kI16)
FACET_GGUF_SCALAR(AddU32, uint32_t, GgufType::kU32)
FACET_GGUF_SCALAR(AddI32, int32_t, GgufType::kI32)
FACET_GGUF_SCALAR(AddU64, uint64_t, GgufType::kU64)
FACET_GGUF_SCALAR(AddI64, int64_t, GgufType::kI64)
FACET_GGUF_SCALAR(AddF32, float, GgufType::kF32)
FACET_GGUF_SCALAR(AddF64, double, GgufType::kF64)
#undef FACET_GGUF_SCALAR

void GgufWriter::AddBool(const std::string& key, bool v) { AddRaw(key, GgufType::kBool, std::string(1, v ? 1 : 0)); }

void GgufWriter::AddString(const std::string& key, const std::string& v) {
  std::string p;
  AppendString(&p, v);
  AddRaw(key, GgufType::kString, std::move(p));
}

void GgufWriter::AddStringArray(const std::string& key, const std::vector<std::string>& v) {
  std::string p;
  Append<uint32_t>(&p, uint32_t(GgufType::kString));
  Append<uint64_t>(&p, v.size());
  for (const auto& s : v) AppendString(&p, s);
  AddRaw(key, GgufType::kArray, std::move(p));
}

void GgufWriter::AddF32Array(const std::string& key, const std::vector<float>& v) {
  AddRaw(key, GgufType::kArray, ArrayPayload(GgufType::kF32, v));
}
void GgufWriter::AddI32Array(const std::string& key, const std::vector<int32_t>& v) {
  AddRaw(key, GgufType::kArray, ArrayPayload(GgufType::kI32, v));
}
void GgufWriter::AddI64Array(const std::string& key, const std::vector<int64_t>& v) {
  AddRaw(key, GgufType::kArray, ArrayPayload(GgufType::kI64, v));
}
void GgufWriter::AddU8Array(const std::string& key, const std::vector<uint8_t>& v) {
  AddRaw(key, GgufType::kArray, ArrayPayload(GgufType::kU8, v));
}

void GgufWriter::SetAlignment(uint32_t alignment) {
  alignment_ = alignment;
  AddU32("general.alignment", alignment);
}

void GgufWriter::AddTensor(const std::string& name, uint32_t ggml_type, const std::vector<int64_t>& ne,
                           std::string data) {
  tensors_.push_back({name, ggml_type, ne, std::move(data)});
}

std::string GgufWriter::Serialize() const {
  const uint64_t align = std::max<uint32_t>(alignment_, 1);
  auto pad = [&](std::string* s) { s->append((align - s->size() % align) % align, '\0'); };
  std::string out = "GGUF";
  Append<uint32_t>(&out, version_);
  Append<uint64_t>(&out, tensors_.size());
  Append<uint64_t>(&out, kv_count_);
  out += kv_bytes_;
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    AppendString(&out, t.name);
    Append<uint32_t>(&out, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) Append<int64_t>(&out, d);
    Append<uint32_t>(&out, t.ggml_type);
    Append<uint64_t>(&out, offset);
    offset += (t.data.size() + align - 1) / align * align;
  }
  pad(&out);
  for (const Tensor& t : tensors_) {
    out += t.data;
    pad(&out);
  }
  return out;
}

absl::Status GgufWriter::Write(const std::string& path) const {
  const std::string bytes = Serialize();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, " for writing"));
  f.write(bytes.data(), std::streamsize(bytes.size()));
  f.close();
  if (!f) return absl::DataLossError(absl::StrCat("failed writing ", path));
  return absl::OkStatus();
}

}  // namespace facet
