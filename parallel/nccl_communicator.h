// NCCL collectives on device buffers (FACET_NCCL builds only). Bootstrapped
// over any host communicator (MPI): rank 0 makes the unique id and
// broadcasts it; one NCCL communicator per group (Split = ncclCommSplit).
// Non-blocking communicators: every call polls ncclCommGetAsyncError until
// the operation is enqueued or `timeout` passes, then aborts the
// communicator and returns DeadlineExceeded, so a dead peer becomes a Status
// the engine's watchdog can act on (DESIGN.md §5). RAII: destroyed
// (ncclCommDestroy) or, after an error, aborted (ncclCommAbort).
#pragma once

#include <chrono>

#include "parallel/communicator.h"

typedef struct ncclComm* ncclComm_t;

namespace facet::parallel {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (the same ranks, host memory). `device` is
  // this rank's CUDA device.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(
      Communicator& bootstrap, int device,
      std::chrono::milliseconds timeout = std::chrono::seconds(300));
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::string_view backend() const override { return "nccl"; }

  // The cudaStream_t collectives are enqueued on (default stream when null).
  void set_stream(void* stream) { stream_ = stream; }
  void* stream() const { return stream_; }
  // Waits for the stream while polling for asynchronous NCCL errors.
  absl::Status Synchronize();

  using Communicator::AllGather;
  using Communicator::AllReduce;
  using Communicator::Broadcast;
  using Communicator::ReduceScatter;

  absl::Status AllReduce(const void* send, void* recv, size_t count, DType dtype,
                         ReduceOp op) override;
  absl::Status AllGather(const void* send, void* recv, size_t count, DType dtype) override;
  absl::Status ReduceScatter(const void* send, void* recv, size_t count, DType dtype,
                             ReduceOp op) override;
  absl::Status Broadcast(void* buf, size_t count, DType dtype, int root) override;
  // Grouped ncclSend/ncclRecv pairs (NCCL has no v-variant).
  absl::Status AllToAllV(const void* send, std::span<const size_t> send_counts, void* recv,
                         std::span<const size_t> recv_counts, DType dtype) override;
  absl::Status Barrier() override;
  void Abort(int error_code) override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
  // Counts are host vectors: staged through a device buffer.
  absl::StatusOr<std::vector<size_t>> ExchangeCounts(std::span<const size_t> send_counts) override;

 private:
  NcclCommunicator(ncclComm_t comm, int device, std::chrono::milliseconds timeout);
  // Polls until the last call left ncclInProgress; aborts on error/timeout.
  absl::Status Wait(int result, const char* what);

  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  int rank_ = 0;
  int size_ = 1;
  void* stream_ = nullptr;
  bool failed_ = false;
  std::chrono::milliseconds timeout_;
};

}  // namespace facet::parallel
