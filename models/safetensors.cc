#include "models/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace facet {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The reference implementation refuses headers above 100 MB; a length beyond
// that is corruption, and refusing it keeps a hostile file from making us
// parse gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::string_view Av(std::string_view v) { return absl::string_view(v.data(), v.size()); }

template <typename... Parts>
absl::Status Invalid(const std::string& file, const Parts&... parts) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", parts...));
}

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A JSON integer >= 0 that fits in int64 (shape dims and offsets).
bool AsCount(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  uint64_t u = v.get<uint64_t>();
  if (u > uint64_t(std::numeric_limits<int64_t>::max())) return false;
  *out = u;
  return true;
}

bool IsFloatDType(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF64:
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return true;
    default:
      return false;
  }
}

std::string Describe(DType dtype, const Shape& shape) {
  return absl::StrCat(Av(DTypeName(dtype)), " ", shape.ToString());
}

// Parses one header entry; `data_begin`/`data_size` locate the data section.
absl::StatusOr<TensorInfo> ParseEntry(const std::string& file, const std::string& name, const json& v,
                                      uint64_t data_begin, uint64_t data_size) {
  const std::string where = absl::StrCat("tensor \"", name, "\": ");
  if (!v.is_object()) return Invalid(file, where, "header entry is not an object");
  TensorInfo t;
  t.name = name;

  auto dtype_it = v.find("dtype");
  if (dtype_it == v.end() || !dtype_it->is_string()) return Invalid(file, where, "missing or non-string \"dtype\"");
  absl::StatusOr<DType> dtype = DTypeFromSafetensors(dtype_it->get<std::string>());
  if (!dtype.ok()) return Invalid(file, where, dtype.status().message());
  t.dtype = *dtype;

  auto shape_it = v.find("shape");
  if (shape_it == v.end() || !shape_it->is_array()) return Invalid(file, where, "missing or non-list \"shape\"");
  if (shape_it->size() > size_t(Shape::kMaxRank)) {
    return Invalid(file, where, "rank ", shape_it->size(), " exceeds the maximum ", Shape::kMaxRank);
  }
  int64_t dims[Shape::kMaxRank];
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape_it->size(); ++i) {
    uint64_t d;
    if (!AsCount((*shape_it)[i], &d)) {
      return Invalid(file, where, "shape entry ", i, " is not a non-negative integer");
    }
    dims[i] = int64_t(d);
    overflow |= __builtin_mul_overflow(numel, d, &numel);
  }
  ASSIGN_OR_RETURN(t.shape, Shape::FromSpan(dims, shape_it->size()));
  uint64_t nbytes;
  overflow |= __builtin_mul_overflow(numel, uint64_t(DTypeSize(t.dtype)), &nbytes);
  if (overflow) return Invalid(file, where, "shape ", t.shape.ToString(), " is too large");

  auto off_it = v.find("data_offsets");
  uint64_t begin, end;
  if (off_it == v.end() || !off_it->is_array() || off_it->size() != 2 || !AsCount((*off_it)[0], &begin) ||
      !AsCount((*off_it)[1], &end)) {
    return Invalid(file, where, "\"data_offsets\" must be [begin, end] with non-negative integers");
  }
  if (end < begin) return Invalid(file, where, "data_offsets [", begin, ", ", end, "] end before they begin");
  if (end > data_size) {
    return Invalid(file, where, "data_offsets [", begin, ", ", end, "] run past the data section (", data_size,
                   " bytes)");
  }
  if (end - begin != nbytes) {
    return Invalid(file, where, "data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes but ",
                   Describe(t.dtype, t.shape), " needs ", nbytes);
  }
  t.offset = data_begin + begin;
  t.nbytes = nbytes;
  return t;
}

// A shard name from an index must stay inside the checkpoint directory.
bool SafeRelativePath(const std::string& name) {
  if (name.empty()) return false;
  fs::path p(name);
  if (p.is_absolute()) return false;
  for (const fs::path& part : p) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

std::string_view SafetensorsDTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kF64:
      return "F64";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI16:
      return "I16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kBool:
      return "BOOL";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kF8E5M2:
      return "F8_E5M2";
  }
  return "";
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile f;
  ASSIGN_OR_RETURN(f.file_, MappedFile::Open(path));
  const uint8_t* base = f.file_.data();
  const uint64_t size = f.file_.size();
  if (size < 8) return Invalid(path, "file is ", size, " bytes, too short for the 8-byte header length");
  const uint64_t header_len = ReadLe64(base);
  if (header_len > kMaxHeaderBytes) {
    return Invalid(path, "header length ", header_len, " exceeds the ", kMaxHeaderBytes, "-byte limit (corrupt file?)");
  }
  if (header_len > size - 8) {
    return Invalid(path, "header length ", header_len, " runs past the end of the file (", size, " bytes)");
  }
  json header;
  try {
    header = json::parse(base + 8, base + 8 + header_len);
  } catch (const json::exception& e) {
    return Invalid(path, "header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) return Invalid(path, "header is not a JSON object");

  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = size - data_begin;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Invalid(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return Invalid(path, "__metadata__ value for \"", m.key(), "\" is not a string");
        f.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(TensorInfo t, ParseEntry(path, it.key(), *it, data_begin, data_size));
    f.tensors_.push_back(std::move(t));
  }

  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    if (i > 0) {
      const TensorInfo& prev = f.tensors_[i - 1];
      if (prev.offset + prev.nbytes > f.tensors_[i].offset) {
        return Invalid(path, "tensors \"", prev.name, "\" and \"", f.tensors_[i].name, "\" overlap");
      }
    }
    f.by_name_[f.tensors_[i].name] = i;
  }
  return f;
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<WeightCheckpoint> WeightCheckpoint::Open(const std::string& path) {
  std::error_code ec;
  std::string index_path;
  std::vector<std::string> shard_names;  // relative to the index, or one absolute path
  std::vector<std::pair<std::string, std::string>> weight_map;

  std::string single = path;
  if (fs::is_directory(path, ec)) {
    fs::path index = fs::path(path) / "model.safetensors.index.json";
    fs::path file = fs::path(path) / "model.safetensors";
    if (fs::exists(index, ec)) {
      index_path = index.string();
    } else if (fs::exists(file, ec)) {
      single = file.string();
    } else {
      return absl::NotFoundError(
          absl::StrCat(path, ": no model.safetensors or model.safetensors.index.json in this directory"));
    }
  } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    index_path = path;
  }

  WeightCheckpoint ck;
  ck.source_ = single;
  if (index_path.empty()) {
    ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(single));
    ck.files_.push_back(std::move(f));
  } else {
    ck.source_ = index_path;
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    json index;
    try {
      index = json::parse(text);
    } catch (const json::exception& e) {
      return Invalid(index_path, "not valid JSON: ", e.what());
    }
    auto wm = index.is_object() ? index.find("weight_map") : index.end();
    if (!index.is_object() || wm == index.end() || !wm->is_object()) {
      return Invalid(index_path, "expected an object with a \"weight_map\" object");
    }
    std::set<std::string> shards;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string()) return Invalid(index_path, "weight_map entry \"", it.key(), "\" is not a string");
      std::string shard = it->get<std::string>();
      if (!SafeRelativePath(shard)) {
        return Invalid(index_path, "weight_map entry \"", it.key(), "\" names shard \"", shard,
                       "\", which is not a plain relative path");
      }
      shards.insert(shard);
      weight_map.emplace_back(it.key(), std::move(shard));
    }
    if (shards.empty()) return Invalid(index_path, "weight_map is empty");
    const fs::path dir = fs::path(index_path).parent_path();
    for (const std::string& shard : shards) {
      absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open((dir / shard).string());
      if (!f.ok()) return Annotate(f.status(), absl::StrCat(index_path, ": shard \"", shard, "\""));
      ck.files_.push_back(*std::move(f));
      shard_names.push_back(shard);
    }
  }

  for (int fi = 0; fi < int(ck.files_.size()); ++fi) {
    for (const TensorInfo& t : ck.files_[size_t(fi)].tensors()) {
      auto [it, inserted] = ck.by_name_.try_emplace(t.name, ck.tensors_.size());
      if (!inserted) {
        return Invalid(ck.source_, "tensor \"", t.name, "\" appears in both ", ck.FileOf(ck.tensors_[it->second]),
                       " and ", ck.files_[size_t(fi)].path());
      }
      TensorInfo copy = t;
      copy.file_index = fi;
      ck.tensors_.push_back(std::move(copy));
    }
  }
  for (const auto& [name, shard] : weight_map) {
    const TensorInfo* t = ck.Find(name);
    size_t shard_index = size_t(std::lower_bound(shard_names.begin(), shard_names.end(), shard) - shard_names.begin());
    if (t == nullptr || size_t(t->file_index) != shard_index) {
      return Invalid(ck.source_, "weight_map puts tensor \"", name, "\" in shard \"", shard,
                     "\", which has no such tensor");
    }
  }
  return ck;
}

std::vector<std::string> WeightCheckpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) names.push_back(t.name);
  std::sort(names.begin(), names.end());
  return names;
}

const TensorInfo* WeightCheckpoint::Find(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

uint64_t WeightCheckpoint::TotalBytes() const {
  uint64_t n = 0;
  for (const TensorInfo& t : tensors_) n += t.nbytes;
  return n;
}

absl::StatusOr<const TensorInfo*> WeightCheckpoint::Lookup(std::string_view name) const {
  const TensorInfo* t = Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(source_, ": no tensor named \"", Av(name), "\""));
  return t;
}

TensorView WeightCheckpoint::View(const TensorInfo& info) const {
  TensorView v;
  // The mapping is read-only; TensorView has no const flavour (see header).
  v.data = const_cast<uint8_t*>(files_[size_t(info.file_index)].Data(info));
  v.dtype = info.dtype;
  v.shape = info.shape;
  v.device = Device::kCpu;
  return v;
}

absl::StatusOr<TensorView> WeightCheckpoint::Get(std::string_view name) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Lookup(name));
  return View(*t);
}

absl::StatusOr<TensorView> WeightCheckpoint::GetChecked(std::string_view name, DType dtype, const Shape& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Lookup(name));
  if (t->dtype != dtype || t->shape != shape) {
    return Invalid(FileOf(*t), "tensor \"", Av(name), "\": expected ", Describe(dtype, shape), ", found ",
                   Describe(t->dtype, t->shape));
  }
  return View(*t);
}

absl::StatusOr<TensorView> WeightCheckpoint::GetChecked(std::string_view name, const Shape& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Lookup(name));
  if (!IsFloatDType(t->dtype) || t->shape != shape) {
    return Invalid(FileOf(*t), "tensor \"", Av(name), "\": expected a floating-point tensor of shape ",
                   shape.ToString(), ", found ", Describe(t->dtype, t->shape));
  }
  return View(*t);
}

absl::Status WeightCheckpoint::ReadSlice(std::string_view name, int dim, int64_t begin, int64_t len, void* dst,
                                         size_t dst_bytes) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Lookup(name));
  const std::string where = absl::StrCat("tensor \"", Av(name), "\" ", t->shape.ToString(), ": ");
  const int rank = t->shape.rank();
  if (dim < 0 || dim >= rank) return Invalid(FileOf(*t), where, "cannot slice dimension ", dim);
  const int64_t extent = t->shape[dim];
  if (begin < 0 || len < 0 || begin > extent || len > extent - begin) {
    return Invalid(FileOf(*t), where, "slice [", begin, ", ", begin, " + ", len, ") is outside dimension ", dim,
                   " of size ", extent);
  }
  // Sizes below are bounded by the tensor's byte count, which fits in memory.
  int64_t outer = 1;
  for (int i = 0; i < dim; ++i) outer *= t->shape[i];
  int64_t inner_bytes = int64_t(DTypeSize(t->dtype));
  for (int i = dim + 1; i < rank; ++i) inner_bytes *= t->shape[i];
  const size_t chunk = size_t(len * inner_bytes);
  const size_t slice_bytes = size_t(outer) * chunk;
  if (dst_bytes < slice_bytes) {
    return Invalid(FileOf(*t), where, "destination holds ", dst_bytes, " bytes, the slice needs ", slice_bytes);
  }
  if (slice_bytes == 0) return absl::OkStatus();
  if (dst == nullptr) return absl::InvalidArgumentError("ReadSlice: null destination");
  const uint8_t* src = files_[size_t(t->file_index)].Data(*t);
  uint8_t* out = static_cast<uint8_t*>(dst);
  const size_t stride = size_t(extent * inner_bytes);
  const size_t start = size_t(begin * inner_bytes);
  for (int64_t o = 0; o < outer; ++o) {
    std::memcpy(out + size_t(o) * chunk, src + size_t(o) * stride + start, chunk);
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorView> WeightCheckpoint::SliceRows(std::string_view name, int64_t begin, int64_t len) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Lookup(name));
  if (t->shape.rank() < 1) return Invalid(FileOf(*t), "tensor \"", Av(name), "\" is a scalar; it has no rows");
  const int64_t rows = t->shape[0];
  if (begin < 0 || len < 0 || begin > rows || len > rows - begin) {
    return Invalid(FileOf(*t), "tensor \"", Av(name), "\" ", t->shape.ToString(), ": rows [", begin, ", ", begin, " + ",
                   len, ") are outside [0, ", rows, ")");
  }
  TensorView v = View(*t);
  const size_t row_bytes = rows == 0 ? 0 : size_t(t->nbytes / uint64_t(rows));
  v.data = static_cast<uint8_t*>(v.data) + size_t(begin) * row_bytes;
  v.shape[0] = len;
  return v;
}

absl::Status WriteSafetensors(const std::string& path, std::span<const NamedTensor> tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const NamedTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") return Invalid(path, "invalid tensor name \"", t.name, "\"");
    if (!seen.insert(t.name).second) return Invalid(path, "duplicate tensor name \"", t.name, "\"");
    if (t.view.device != Device::kCpu) return Invalid(path, "tensor \"", t.name, "\" is not in host memory");
    if (t.view.data == nullptr && t.view.bytes() > 0) return Invalid(path, "tensor \"", t.name, "\" has no data");
    for (int64_t d : t.view.shape) {
      if (d < 0) return Invalid(path, "tensor \"", t.name, "\" has a negative dimension");
    }
  }
  // Largest elements first keeps every tensor aligned to its element size
  // without padding between tensors (the reference readers reject holes).
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    size_t sa = DTypeSize(tensors[a].view.dtype), sb = DTypeSize(tensors[b].view.dtype);
    return sa != sb ? sa > sb : tensors[a].name < tensors[b].name;
  });

  json header = json::object();
  uint64_t offset = 0;
  for (size_t i : order) {
    const NamedTensor& t = tensors[i];
    json shape = json::array();
    for (int64_t d : t.view.shape) shape.push_back(d);
    const uint64_t n = t.view.bytes();
    header[t.name] = {{"dtype", std::string(SafetensorsDTypeName(t.view.dtype))},
                      {"shape", std::move(shape)},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    return Invalid(path, "cannot encode header: ", e.what());
  }
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot open for writing"));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (size_t i : order) {
      const TensorView& v = tensors[i].view;
      out.write(static_cast<const char*>(v.data), std::streamsize(v.bytes()));
    }
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace facet
