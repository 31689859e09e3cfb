#include "parallel/single_communicator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet::parallel {
namespace {

void Copy(const void* send, void* recv, size_t count, DType dtype) {
  if (send != recv && count > 0) std::memmove(recv, send, count * DTypeSize(dtype));
}

}  // namespace

absl::Status SingleCommunicator::AllReduce(const void* send, void* recv, size_t count,
                                           DType dtype, ReduceOp op) {
  RETURN_IF_ERROR(CheckReducible(dtype, "AllReduce"));
  Copy(send, recv, count, dtype);
  return absl::OkStatus();
}

absl::Status SingleCommunicator::AllGather(const void* send, void* recv, size_t count,
                                           DType dtype) {
  Copy(send, recv, count, dtype);
  return absl::OkStatus();
}

absl::Status SingleCommunicator::ReduceScatter(const void* send, void* recv, size_t count,
                                               DType dtype, ReduceOp op) {
  RETURN_IF_ERROR(CheckReducible(dtype, "ReduceScatter"));
  Copy(send, recv, count, dtype);
  return absl::OkStatus();
}

absl::Status SingleCommunicator::Broadcast(void* buf, size_t count, DType dtype, int root) {
  return CheckRoot(root);
}

absl::Status SingleCommunicator::AllToAllV(const void* send, std::span<const size_t> send_counts,
                                           void* recv, std::span<const size_t> recv_counts,
                                           DType dtype) {
  RETURN_IF_ERROR(CheckCounts(send_counts, recv_counts));
  if (send_counts[0] != recv_counts[0]) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV: sending ", send_counts[0],
                                                   " to self but expecting ", recv_counts[0]));
  }
  Copy(send, recv, send_counts[0], dtype);
  return absl::OkStatus();
}

void SingleCommunicator::Abort(int error_code) {
  std::fprintf(stderr, "facet: communicator abort (%d)\n", error_code);
  std::fflush(stderr);
  std::_Exit(error_code != 0 ? error_code : 1);
}

absl::StatusOr<std::unique_ptr<Communicator>> SingleCommunicator::Split(int color, int key) {
  if (color < 0) return absl::InvalidArgumentError(absl::StrCat("Split: color ", color, " < 0"));
  return std::unique_ptr<Communicator>(new SingleCommunicator());
}

std::unique_ptr<Communicator> CreateSingleCommunicator() {
  return std::make_unique<SingleCommunicator>();
}

}  // namespace facet::parallel
