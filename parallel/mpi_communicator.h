// MPI collectives on host buffers (CPU workers, tests under mpirun, the
// control plane's step broadcast). MPI_Init_thread runs once per process,
// MPI_Finalize at exit; each communicator owns a duplicated MPI_Comm
// (RAII, move-only) with MPI_ERRORS_RETURN so failures become Status.
#pragma once

#include <mpi.h>

#include "parallel/communicator.h"

namespace facet::parallel {

class MpiCommunicator final : public Communicator {
 public:
  // Initializes MPI if needed (MPI_THREAD_MULTIPLE requested) and wraps a
  // duplicate of MPI_COMM_WORLD.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> World();
  // The thread level MPI granted (MPI_THREAD_*); valid after World().
  static int ThreadLevel();

  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::string_view backend() const override { return "mpi"; }

  // When on (the default), every collective first agrees on its count, dtype
  // and root with one small all-reduce, so mismatched calls return
  // InvalidArgument on every rank instead of hanging or truncating. A few
  // microseconds per call on shared memory.
  void set_validate(bool on) { validate_ = on; }
  bool validate() const { return validate_; }

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
  absl::Status Barrier() override;
  void Abort(int error_code) override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;

  MPI_Comm comm() const { return comm_; }

 private:
  explicit MpiCommunicator(MPI_Comm comm);
  // Collective agreement on (what, a, b): InvalidArgument on every rank when
  // any rank passed different values.
  absl::Status Agree(const char* what, int64_t a, int64_t b);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  bool validate_ = true;
};

}  // namespace facet::parallel
