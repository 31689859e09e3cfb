// The CPU backend behind kernels/backend.h: host memory, fp32 activations,
// the kernels of kernels/cpu/ops.h (single-threaded here; the engine's
// thread pool is the forward pass's business).
#include <cstdlib>
#include <cstring>

#include "kernels/backend.h"
#include "kernels/cpu/ops.h"

namespace facet {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p == nullptr && bytes != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("cpu backend: out of memory for ", bytes));
    }
    return p;
  }
  void Free(void* p) override { std::free(p); }
  absl::Status CopyIn(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyOut(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status RmsNorm(const void* x, const float* w, void* y, int64_t rows, int64_t dim, float eps,
                       bool plus_one) override {
    if (rows <= 0 || dim <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("RmsNorm: rows ", rows, ", dim ", dim));
    }
    cpu::RmsNorm(static_cast<const float*>(x), w, static_cast<float*>(y), rows, dim, eps, plus_one);
    return absl::OkStatus();
  }
  absl::Status GeGlu(const void* gate_up, int64_t m, int64_t inter, void* out) override {
    if (m <= 0 || inter <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("GeGlu: m ", m, ", inter ", inter));
    }
    cpu::GeGlu(static_cast<const float*>(gate_up), m, inter, static_cast<float*>(out));
    return absl::OkStatus();
  }
  absl::Status Softcap(float* x, int64_t n, float cap) override {
    if (!(cap > 0)) return absl::InvalidArgumentError(absl::StrCat("Softcap: cap ", cap));
    cpu::Softcap(x, n, cap);
    return absl::OkStatus();
  }
  absl::Status Embed(const WeightRef& table, const int32_t* ids, int64_t n, float scale,
                     float* out) override {
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= table.rows) {
        return absl::InvalidArgumentError(absl::StrCat("Embed: token id ", ids[i], " at ", i,
                                                       " outside [0, ", table.rows, ")"));
      }
    }
    cpu::Embed(table, ids, n, scale, out);
    return absl::OkStatus();
  }
  absl::Status MatMul(const void* x, int64_t m, const WeightRef& w, void* y) override {
    return cpu::MatMul(static_cast<const float*>(x), m, w, static_cast<float*>(y), nullptr);
  }
};

const bool kRegistered = RegisterBackend(
    "cpu", []() -> absl::StatusOr<std::unique_ptr<Backend>> { return std::make_unique<CpuBackend>(); });

}  // namespace
}  // namespace facet
