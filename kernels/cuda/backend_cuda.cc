// The CUDA backend behind kernels/backend.h: device memory from a caching
// allocator, bf16 activations, one stream per backend, cuBLASLt GEMMs.
// Registered as "cuda" whenever facet_cuda is linked (whole-archive, see
// kernels/CMakeLists.txt); creating it on a machine without a GPU is
// UNAVAILABLE.
#include <unordered_map>

#include "kernels/backend.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace facet::cuda {
namespace {

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create() {
    if (DeviceCount() == 0) {
      return absl::UnavailableError("cuda backend: " + DeviceDescription(0));
    }
    std::unique_ptr<CudaBackend> b(new CudaBackend());
    ASSIGN_OR_RETURN(b->stream_, Stream::Create());
    ASSIGN_OR_RETURN(b->gemm_, Gemm::Create());
    ASSIGN_OR_RETURN(b->counter_, b->allocator_.Allocate(sizeof(int32_t)));
    return std::unique_ptr<Backend>(std::move(b));
  }

  ~CudaBackend() override {
    (void)stream_.Synchronize();
    buffers_.clear();
    counter_.Reset();
  }

  std::string name() const override { return "cuda"; }
  DType activation_dtype() const override { return DType::kBF16; }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    ASSIGN_OR_RETURN(DeviceBuffer b, allocator_.Allocate(bytes));
    void* p = b.data();
    if (p != nullptr) buffers_.emplace(p, std::move(b));
    return p;
  }
  void Free(void* p) override {
    if (p == nullptr) return;
    // The allocator reuses blocks without stream ordering: finish first.
    FACET_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    buffers_.erase(p);
  }
  absl::Status CopyIn(void* dst, const void* src, size_t bytes) override {
    return CopyToDevice(dst, src, bytes, stream_.get());
  }
  absl::Status CopyOut(void* dst, const void* src, size_t bytes) override {
    return CopyToHost(dst, src, bytes, stream_.get());
  }
  absl::Status Synchronize() override { return stream_.Synchronize(); }

  absl::Status RmsNorm(const void* x, const float* w, void* y, int64_t rows, int64_t dim, float eps,
                       bool plus_one) override {
    return cuda::RmsNorm(static_cast<const bf16*>(x), w, static_cast<bf16*>(y), rows, dim, eps,
                         plus_one, stream_.get());
  }
  absl::Status GeGlu(const void* gate_up, int64_t m, int64_t inter, void* out) override {
    return cuda::GeGlu(static_cast<const bf16*>(gate_up), m, inter, static_cast<bf16*>(out),
                       stream_.get());
  }
  absl::Status Softcap(float* x, int64_t n, float cap) override {
    return cuda::Softcap(x, n, cap, stream_.get());
  }
  absl::Status Embed(const WeightRef& table, const int32_t* ids, int64_t n, float scale,
                     float* out) override {
    if (table.format != WeightFormat::kBF16) {
      return absl::UnimplementedError(absl::StrCat("cuda Embed: table format ",
                                                   std::string(WeightFormatName(table.format)),
                                                   " (bf16 only)"));
    }
    FACET_CUDA_RETURN(cudaMemsetAsync(counter_.data(), 0, sizeof(int32_t), stream_.get()));
    RETURN_IF_ERROR(cuda::Embed(static_cast<const bf16*>(table.data), table.rows, table.cols, ids,
                                n, scale, out, counter_.as<int32_t>(), stream_.get()));
    int32_t bad = 0;
    RETURN_IF_ERROR(CopyToHost(&bad, counter_.data(), sizeof(bad), stream_.get()));
    if (bad != 0) {
      return absl::InvalidArgumentError(absl::StrCat("cuda Embed: ", bad, " token ids outside [0, ",
                                                     table.rows, ")"));
    }
    return absl::OkStatus();
  }
  absl::Status MatMul(const void* x, int64_t m, const WeightRef& w, void* y) override {
    if (w.format != WeightFormat::kBF16) {
      return absl::UnimplementedError(absl::StrCat(
          "cuda MatMul: weight format ", std::string(WeightFormatName(w.format)), " (bf16 only)"));
    }
    return gemm_->MatMulBf16(static_cast<const bf16*>(x), m, static_cast<const bf16*>(w.data),
                             w.rows, w.cols, nullptr, static_cast<bf16*>(y), stream_.get());
  }

 private:
  CudaBackend() = default;
  CachingAllocator allocator_;  // declared first: destroyed after the buffers
  Stream stream_;
  std::unique_ptr<Gemm> gemm_;
  DeviceBuffer counter_;  // [1] int32: bad ids of the last Embed
  std::unordered_map<void*, DeviceBuffer> buffers_;
};

const bool kRegistered = RegisterBackend("cuda", &CudaBackend::Create);

}  // namespace
}  // namespace facet::cuda
