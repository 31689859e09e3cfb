// One op interface, several backends (STYLE.md §6): the CPU backend is always
// built; the CUDA backend registers itself when the tree is built with
// FACET_CUDA. Callers pick a backend by name or capability and never test
// `#ifdef FACET_CUDA`. Link `facet_kernels` to get every backend built in.
//
// Memory the ops read and write belongs to the backend (Allocate / CopyIn /
// CopyOut): host memory for "cpu", device memory for "cuda". Activations are
// in activation_dtype() (fp32 on the CPU, bf16 on CUDA); the residual stream
// (Embed's output), norm weights and logits are fp32 everywhere. Weights are
// WeightRefs whose data lives in backend memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/weight.h"

namespace facet {

enum class DType : uint8_t { kF32, kBF16 };
size_t DTypeBytes(DType t);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual DType activation_dtype() const = 0;

  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  virtual absl::Status CopyIn(void* dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status CopyOut(void* host_dst, const void* src, size_t bytes) = 0;
  // Waits for every op issued so far.
  virtual absl::Status Synchronize() = 0;

  // Ops with kernels/cpu/ops.h's semantics.
  // x, y [rows, dim] activations (may alias); w [dim] fp32 or null.
  virtual absl::Status RmsNorm(const void* x, const float* w, void* y, int64_t rows, int64_t dim,
                               float eps, bool plus_one) = 0;
  // gate_up [m, 2·inter], out [m, inter] activations.
  virtual absl::Status GeGlu(const void* gate_up, int64_t m, int64_t inter, void* out) = 0;
  // x [n] fp32 in place.
  virtual absl::Status Softcap(float* x, int64_t n, float cap) = 0;
  // ids [n] int32; out [n, table.cols] fp32. A bad id is INVALID_ARGUMENT.
  virtual absl::Status Embed(const WeightRef& table, const int32_t* ids, int64_t n, float scale,
                             float* out) = 0;
  // x [m, w.cols], y [m, w.rows] activations; formats the backend lacks
  // are UNIMPLEMENTED.
  virtual absl::Status MatMul(const void* x, int64_t m, const WeightRef& w, void* y) = 0;
};

using BackendFactory = std::function<absl::StatusOr<std::unique_ptr<Backend>>()>;

// Adds a backend under `name`; returns true so it can initialise a static.
bool RegisterBackend(const std::string& name, BackendFactory factory);
// Names of the backends built into this binary, sorted.
std::vector<std::string> RegisteredBackends();
// NOT_FOUND: not built in; UNAVAILABLE: built, but this machine cannot run
// it (no GPU).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& name);

}  // namespace facet
