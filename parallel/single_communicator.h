// A world of one: the embedded engine's communicator. Collectives are copies
// (or nothing, in place), so the single-rank path costs no communication.
#pragma once

#include "parallel/communicator.h"

namespace facet::parallel {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::string_view backend() const override { return "single"; }

  // The typed span overloads of the base class stay visible.
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
  absl::Status AllToAllV(const void* send, std::span<const size_t> send_counts, void* recv,
                         std::span<const size_t> recv_counts, DType dtype) override;
  absl::Status Barrier() override { return absl::OkStatus(); }
  void Abort(int error_code) override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
};

}  // namespace facet::parallel
