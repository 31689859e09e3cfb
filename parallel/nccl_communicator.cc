#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet::parallel {
namespace {

ncclDataType_t NcclType(DType t) {
  switch (t) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    case DType::kBytes: return ncclUint8;
    case DType::kF64: return ncclFloat64;
  }
  return ncclUint8;
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

absl::Status CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA ", what, ": ", cudaGetErrorString(e)));
}

// Non-blocking communicators, so a stuck peer surfaces as a timeout.
ncclConfig_t Config() {
  ncclConfig_t c = NCCL_CONFIG_INITIALIZER;
  c.blocking = 0;
  return c;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    Communicator& bootstrap, int device, std::chrono::milliseconds timeout) {
  RETURN_IF_ERROR(CudaError(cudaSetDevice(device), "cudaSetDevice"));
  ncclUniqueId id;
  if (bootstrap.rank() == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
    }
  }
  RETURN_IF_ERROR(bootstrap.Broadcast(&id, sizeof(id), DType::kBytes, 0));
  ncclComm_t comm = nullptr;
  ncclConfig_t config = Config();
  ncclResult_t r = ncclCommInitRankConfig(&comm, bootstrap.size(), id, bootstrap.rank(), &config);
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(comm, device, timeout));
  RETURN_IF_ERROR(c->Wait(int(r), "ncclCommInitRankConfig"));
  ncclCommCount(comm, &c->size_);
  ncclCommUserRank(comm, &c->rank_);
  return c;
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device, std::chrono::milliseconds timeout)
    : comm_(comm), device_(device), timeout_(timeout) {}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  if (failed_) {
    ncclCommAbort(comm_);
  } else {
    ncclCommDestroy(comm_);
  }
}

absl::Status NcclCommunicator::Wait(int result, const char* what) {
  ncclResult_t r = ncclResult_t(result);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (r == ncclInProgress && comm_ != nullptr) {
    if (std::chrono::steady_clock::now() > deadline) {
      failed_ = true;
      return absl::DeadlineExceededError(absl::StrCat("NCCL ", what, ": no progress in ",
                                                      timeout_.count(), " ms; communicator aborted"));
    }
    std::this_thread::yield();
    ncclCommGetAsyncError(comm_, &r);
  }
  if (r != ncclSuccess) {
    failed_ = true;
    return absl::InternalError(absl::StrCat("NCCL ", what, ": ", ncclGetErrorString(r)));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Synchronize() {
  cudaStream_t s = static_cast<cudaStream_t>(stream_);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (true) {
    cudaError_t e = cudaStreamQuery(s);
    if (e == cudaSuccess) return absl::OkStatus();
    if (e != cudaErrorNotReady) return CudaError(e, "cudaStreamQuery");
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      failed_ = true;
      return absl::InternalError(absl::StrCat("NCCL async error: ", ncclGetErrorString(async)));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      failed_ = true;
      return absl::DeadlineExceededError("NCCL: stream did not finish in time; communicator aborted");
    }
    std::this_thread::yield();
  }
}

absl::Status NcclCommunicator::AllReduce(const void* send, void* recv, size_t count, DType dtype,
                                         ReduceOp op) {
  RETURN_IF_ERROR(CheckReducible(dtype, "AllReduce"));
  return Wait(ncclAllReduce(send, recv, count, NcclType(dtype), NcclOp(op), comm_,
                            static_cast<cudaStream_t>(stream_)),
              "AllReduce");
}

absl::Status NcclCommunicator::AllGather(const void* send, void* recv, size_t count, DType dtype) {
  return Wait(ncclAllGather(send, recv, count, NcclType(dtype), comm_,
                            static_cast<cudaStream_t>(stream_)),
              "AllGather");
}

absl::Status NcclCommunicator::ReduceScatter(const void* send, void* recv, size_t count,
                                             DType dtype, ReduceOp op) {
  RETURN_IF_ERROR(CheckReducible(dtype, "ReduceScatter"));
  return Wait(ncclReduceScatter(send, recv, count, NcclType(dtype), NcclOp(op), comm_,
                                static_cast<cudaStream_t>(stream_)),
              "ReduceScatter");
}

absl::Status NcclCommunicator::Broadcast(void* buf, size_t count, DType dtype, int root) {
  RETURN_IF_ERROR(CheckRoot(root));
  return Wait(ncclBroadcast(buf, buf, count, NcclType(dtype), root, comm_,
                            static_cast<cudaStream_t>(stream_)),
              "Broadcast");
}

absl::Status NcclCommunicator::AllToAllV(const void* send, std::span<const size_t> send_counts,
                                         void* recv, std::span<const size_t> recv_counts,
                                         DType dtype) {
  RETURN_IF_ERROR(CheckCounts(send_counts, recv_counts));
  const size_t es = DTypeSize(dtype);
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  cudaStream_t st = static_cast<cudaStream_t>(stream_);
  ncclGroupStart();
  size_t so = 0, ro = 0;
  for (int j = 0; j < size_; ++j) {
    if (send_counts[j] > 0) ncclSend(s + so * es, send_counts[j], NcclType(dtype), j, comm_, st);
    if (recv_counts[j] > 0) ncclRecv(r + ro * es, recv_counts[j], NcclType(dtype), j, comm_, st);
    so += send_counts[j];
    ro += recv_counts[j];
  }
  return Wait(ncclGroupEnd(), "AllToAllV");
}

absl::Status NcclCommunicator::Barrier() {
  // A one-element all-reduce, then wait for it: NCCL has no barrier.
  void* d = nullptr;
  RETURN_IF_ERROR(CudaError(cudaMalloc(&d, sizeof(float)), "cudaMalloc"));
  absl::Status s = AllReduce(d, d, 1, DType::kF32, ReduceOp::kSum);
  if (s.ok()) s = Synchronize();
  cudaFree(d);
  return s;
}

void NcclCommunicator::Abort(int error_code) {
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
  std::fprintf(stderr, "facet: NCCL communicator aborted (%d)\n", error_code);
  std::fflush(stderr);
  std::_Exit(error_code != 0 ? error_code : 1);
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Split(int color, int key) {
  if (color < 0) return absl::InvalidArgumentError(absl::StrCat("Split: color ", color, " < 0"));
  ncclComm_t out = nullptr;
  ncclConfig_t config = Config();
  ncclResult_t r = ncclCommSplit(comm_, color, key, &out, &config);
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(out, device_, timeout_));
  c->stream_ = stream_;
  RETURN_IF_ERROR(c->Wait(int(r), "ncclCommSplit"));
  RETURN_IF_ERROR(Wait(int(r), "ncclCommSplit"));
  ncclCommCount(out, &c->size_);
  ncclCommUserRank(out, &c->rank_);
  return std::unique_ptr<Communicator>(std::move(c));
}

absl::StatusOr<std::vector<size_t>> NcclCommunicator::ExchangeCounts(
    std::span<const size_t> send_counts) {
  const int n = size_;
  if (send_counts.size() != size_t(n)) {
    return absl::InvalidArgumentError(absl::StrCat("ExchangeCounts: ", send_counts.size(),
                                                   " counts for a group of ", n));
  }
  std::vector<int64_t> mine(send_counts.begin(), send_counts.end()), all(size_t(n) * n);
  void* d = nullptr;
  RETURN_IF_ERROR(CudaError(cudaMalloc(&d, sizeof(int64_t) * (n + size_t(n) * n)), "cudaMalloc"));
  int64_t* dm = static_cast<int64_t*>(d);
  cudaStream_t st = static_cast<cudaStream_t>(stream_);
  absl::Status s = CudaError(
      cudaMemcpyAsync(dm, mine.data(), sizeof(int64_t) * n, cudaMemcpyHostToDevice, st), "copy");
  if (s.ok()) s = AllGather(dm, dm + n, size_t(n), DType::kI64);
  if (s.ok()) {
    s = CudaError(cudaMemcpyAsync(all.data(), dm + n, sizeof(int64_t) * n * n,
                                  cudaMemcpyDeviceToHost, st),
                  "copy");
  }
  if (s.ok()) s = Synchronize();
  cudaFree(d);
  RETURN_IF_ERROR(s);
  std::vector<size_t> recv(n);
  for (int j = 0; j < n; ++j) recv[j] = size_t(all[size_t(j) * n + rank_]);
  return recv;
}

}  // namespace facet::parallel
