#include "parallel/communicator.h"

#include <cstdlib>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet::parallel {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kBytes: return 1;
    case DType::kF64: return 8;
  }
  return 1;
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kBytes: return "bytes";
    case DType::kF64: return "f64";
  }
  return "?";
}

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

absl::Status Communicator::CheckRoot(int root) const {
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Broadcast: root ", root, " outside a group of ", size()));
  }
  return absl::OkStatus();
}

absl::Status Communicator::CheckReducible(DType dtype, const char* what) const {
  if (dtype == DType::kBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": bytes cannot be reduced"));
  }
  return absl::OkStatus();
}

absl::Status Communicator::CheckCounts(std::span<const size_t> send_counts,
                                       std::span<const size_t> recv_counts) const {
  if (send_counts.size() != size_t(size()) || recv_counts.size() != size_t(size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AllToAllV: ", send_counts.size(), " send counts and ", recv_counts.size(),
        " receive counts for a group of ", size()));
  }
  return absl::OkStatus();
}

absl::Status Communicator::SizeError(const char* what, size_t local, size_t total) const {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", local, " elements per rank x ", size(),
                                                 " ranks does not match a buffer of ", total));
}

absl::StatusOr<std::vector<size_t>> Communicator::ExchangeCounts(
    std::span<const size_t> send_counts) {
  const int n = size();
  if (send_counts.size() != size_t(n)) {
    return absl::InvalidArgumentError(absl::StrCat("ExchangeCounts: ", send_counts.size(),
                                                   " counts for a group of ", n));
  }
  // All-gather every rank's count row ([n, n] i64), then read column `rank`.
  // Host memory on MPI/single; NCCL overrides AllGather on device buffers, so
  // the engine exchanges counts over the MPI group there.
  std::vector<int64_t> mine(send_counts.begin(), send_counts.end());  // [n]
  std::vector<int64_t> all(size_t(n) * n);                            // [n, n]
  RETURN_IF_ERROR(AllGather(mine.data(), all.data(), size_t(n), DType::kI64));
  std::vector<size_t> recv(n);
  for (int j = 0; j < n; ++j) recv[j] = size_t(all[size_t(j) * n + rank()]);
  return recv;
}

int LaunchedWorldSize() {
  // Open MPI's mpirun, PMI/PMIx launchers (MPICH, srun --mpi=pmix), Slurm.
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"}) {
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') {
      int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 1;
}

absl::StatusOr<ProcessGroups> MakeProcessGroups(Communicator& world, int tp, int ep) {
  if (tp < 1 || ep < 1 || (tp > 1 && ep > 1 && tp != ep)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "process groups: tp=", tp, " ep=", ep, " (each >= 1; when both exceed 1 they must match)"));
  }
  const int model = std::max(tp, ep);
  if (world.size() % model != 0) {
    return absl::InvalidArgumentError(absl::StrCat("process groups: world of ", world.size(),
                                                   " ranks is not a multiple of ", model));
  }
  const int replica = world.rank() / model;
  const int model_rank = world.rank() % model;
  ProcessGroups g;
  // Every rank makes all three splits in the same order (they are collective).
  ASSIGN_OR_RETURN(g.tp, world.Split(tp > 1 ? replica : world.rank(), model_rank));
  ASSIGN_OR_RETURN(g.ep, world.Split(ep > 1 ? replica : world.rank(), model_rank));
  ASSIGN_OR_RETURN(g.dp, world.Split(model_rank, replica));
  return g;
}

}  // namespace facet::parallel
