// Zero-copy safetensors reading (single file, directory, or sharded via
// model.safetensors.index.json) and a small writer for tests and tools.
//
// Format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
//  "__metadata__": {str: str}}, then the data section; offsets are relative to
// the data section. Every field is validated on open, so a view handed out
// later is always inside the mapped file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/mmap.h"
#include "core/tensor.h"

namespace facet {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t offset = 0;  // absolute byte offset in its file
  uint64_t nbytes = 0;
  int file_index = 0;  // which file of a WeightCheckpoint holds it
};

// One .safetensors file, memory-mapped. Move-only; views into it stay valid
// across moves (the mapping does not move) and die with the object.
class SafetensorsFile {
 public:
  // INVALID_ARGUMENT (naming the file and the tensor/field) for any malformed
  // header; NOT_FOUND etc. from the mmap when the file cannot be opened.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  // In data order (ascending offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Read-only bytes of a tensor (`info` must come from this file).
  const uint8_t* Data(const TensorInfo& info) const { return file_.data() + info.offset; }

 private:
  MappedFile file_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint, possibly spread over several shards.
// Views point into read-only mappings: never write through TensorView::data.
class WeightCheckpoint {
 public:
  // `path` is a .safetensors file, a model.safetensors.index.json, or a
  // directory holding one of those (the index is preferred). Shards are
  // resolved relative to the index; every weight_map entry must exist in its
  // shard and no tensor name may appear in two shards.
  static absl::StatusOr<WeightCheckpoint> Open(const std::string& path);

  std::vector<std::string> TensorNames() const;  // sorted
  const TensorInfo* Find(std::string_view name) const;
  bool Has(std::string_view name) const { return Find(name) != nullptr; }
  int num_files() const { return int(files_.size()); }
  const std::string& file_path(int i) const { return files_[size_t(i)].path(); }
  uint64_t TotalBytes() const;

  // NOT_FOUND (naming the checkpoint and the tensor) when absent.
  absl::StatusOr<TensorView> Get(std::string_view name) const;
  // As Get, plus INVALID_ARGUMENT naming file, tensor, expected and actual
  // dtype/shape on mismatch.
  absl::StatusOr<TensorView> GetChecked(std::string_view name, DType dtype, const Shape& shape) const;
  // Any floating-point dtype (f32, f16, bf16, f64, fp8) with this shape.
  absl::StatusOr<TensorView> GetChecked(std::string_view name, const Shape& shape) const;

  // Copies the slice [begin, begin + len) along `dim` into `dst` (which must
  // hold at least the slice's bytes), so a rank reads only its shard. The
  // result is row-major with shape[dim] = len. For dim 0 it is one memcpy.
  absl::Status ReadSlice(std::string_view name, int dim, int64_t begin, int64_t len, void* dst, size_t dst_bytes) const;
  // Zero-copy view of rows [begin, begin + len) along dim 0.
  absl::StatusOr<TensorView> SliceRows(std::string_view name, int64_t begin, int64_t len) const;

 private:
  // The tensor, or NOT_FOUND naming the checkpoint and the tensor.
  absl::StatusOr<const TensorInfo*> Lookup(std::string_view name) const;
  TensorView View(const TensorInfo& info) const;
  const std::string& FileOf(const TensorInfo& info) const { return files_[size_t(info.file_index)].path(); }

  std::string source_;  // what the user opened, for messages
  std::vector<SafetensorsFile> files_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> by_name_;
};

struct NamedTensor {
  std::string name;
  TensorView view;  // CPU, contiguous
};

// Writes a safetensors file readable by the Python/Rust reference readers:
// tensors laid out without holes, sorted by element size (largest first) then
// name, after a header padded with spaces to a multiple of 8 bytes, so every
// tensor is aligned to its element size. Deterministic for the same input.
// Written to `path + ".tmp"` and renamed into place.
absl::Status WriteSafetensors(const std::string& path, std::span<const NamedTensor> tensors,
                              const std::map<std::string, std::string>& metadata = {});

// "F32", "BF16", ... (the safetensors spelling of a dtype).
std::string_view SafetensorsDTypeName(DType t);

}  // namespace facet
