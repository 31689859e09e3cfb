// Collective communication behind one interface (DESIGN.md §5, STYLE.md §6):
// MPI on CPUs, NCCL on GPUs, and a world of one for the embedded engine. The
// model and the engine call these; they never include mpi.h or nccl.h.
//
// Buffers are raw pointers plus an element count and a DType (f32, bf16,
// i32, i64, f64, bytes). On an MPI or
// single-rank communicator they are host pointers; on NCCL they are device
// pointers and the call is enqueued on the communicator's stream
// (NcclCommunicator::set_stream). Every call is collective: all ranks of the
// group must make it, in the same order, with matching counts. Where a
// mismatch can be detected cheaply (MPI with validation on) it comes back as
// InvalidArgument instead of a hang or a truncated message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/half.h"

namespace facet::parallel {

enum class DType { kF32, kBF16, kI32, kI64, kBytes, kF64 };
enum class ReduceOp { kSum, kMax, kMin };

size_t DTypeSize(DType t);
const char* DTypeName(DType t);
const char* ReduceOpName(ReduceOp op);

// DTypeOf<T>() maps a C++ element type to its DType (compile error otherwise).
template <typename T>
constexpr DType DTypeOf() {
  if constexpr (std::is_same_v<T, float>) return DType::kF32;
  else if constexpr (std::is_same_v<T, double>) return DType::kF64;
  else if constexpr (std::is_same_v<T, bf16>) return DType::kBF16;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::kI32;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::kI64;
  else {
    static_assert(sizeof(T) == 1, "DTypeOf: float, bf16, int32_t, int64_t or a byte type");
    return DType::kBytes;
  }
}

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "single", "mpi" or "nccl": for logs and capability checks, not dispatch.
  virtual absl::string_view backend() const = 0;

  // recv[i] = op over ranks of send[i]; `count` elements on every rank.
  // send == recv is allowed (in place). kBytes cannot be reduced.
  virtual absl::Status AllReduce(const void* send, void* recv, size_t count, DType dtype,
                                 ReduceOp op) = 0;
  // recv = concat over ranks (rank order) of send; send holds `count` elements,
  // recv holds size() * count.
  virtual absl::Status AllGather(const void* send, void* recv, size_t count, DType dtype) = 0;
  // send holds size() * count elements; rank r receives the reduction of
  // block r ([r*count, (r+1)*count)) into recv (`count` elements).
  virtual absl::Status ReduceScatter(const void* send, void* recv, size_t count, DType dtype,
                                     ReduceOp op) = 0;
  // buf on `root` is copied to every rank's buf (`count` elements).
  virtual absl::Status Broadcast(void* buf, size_t count, DType dtype, int root) = 0;
  // Rank r sends send_counts[j] elements to rank j (blocks laid out in rank
  // order in `send`, packed) and receives recv_counts[j] from rank j (packed
  // in rank order in `recv`). recv_counts[j] must equal rank j's
  // send_counts[r]; ExchangeCounts computes it.
  virtual absl::Status AllToAllV(const void* send, std::span<const size_t> send_counts,
                                 void* recv, std::span<const size_t> recv_counts,
                                 DType dtype) = 0;
  virtual absl::Status Barrier() = 0;
  // Tears down the whole job (MPI_Abort / ncclCommAbort + exit): for a
  // watchdog that found a peer stuck. Does not return on MPI.
  virtual void Abort(int error_code) = 0;
  // MPI_Comm_split semantics: ranks with the same color form a group, ordered
  // by (key, old rank). Collective over this communicator. color >= 0.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) = 0;

  // --- conveniences on top of the virtual calls (host or device spans) ---

  // recv_counts[j] = what rank j will send to this rank (an all-to-all of the
  // counts, host memory on every backend).
  // Virtual so NCCL can stage the counts through device memory.
  virtual absl::StatusOr<std::vector<size_t>> ExchangeCounts(std::span<const size_t> send_counts);

  template <typename T>
  absl::Status AllReduce(std::span<T> buf, ReduceOp op = ReduceOp::kSum) {
    return AllReduce(buf.data(), buf.data(), buf.size(), DTypeOf<std::remove_const_t<T>>(), op);
  }
  template <typename T>
  absl::Status AllGather(std::span<const T> send, std::span<T> recv) {
    if (recv.size() != send.size() * size_t(size())) return SizeError("AllGather", send.size(), recv.size());
    return AllGather(send.data(), recv.data(), send.size(), DTypeOf<T>());
  }
  template <typename T>
  absl::Status ReduceScatter(std::span<const T> send, std::span<T> recv, ReduceOp op = ReduceOp::kSum) {
    if (send.size() != recv.size() * size_t(size())) return SizeError("ReduceScatter", recv.size(), send.size());
    return ReduceScatter(send.data(), recv.data(), recv.size(), DTypeOf<T>(), op);
  }
  template <typename T>
  absl::Status Broadcast(std::span<T> buf, int root) {
    return Broadcast(buf.data(), buf.size(), DTypeOf<T>(), root);
  }

 protected:
  // Local argument checks shared by the implementations.
  absl::Status CheckRoot(int root) const;
  absl::Status CheckReducible(DType dtype, const char* what) const;
  absl::Status CheckCounts(std::span<const size_t> send_counts,
                           std::span<const size_t> recv_counts) const;
  absl::Status SizeError(const char* what, size_t local, size_t total) const;
};

// Whether this process was started by a launcher (mpirun / srun / PMI) and the
// world size it announced (1 when not launched). Launch detection only; no
// configuration is read from the environment.
int LaunchedWorldSize();

// The world communicator: MPI when launched by mpirun/srun with more than one
// rank (or any launch when MPI is built), else a world of one. Errors when the
// launcher announces several ranks but this build has no MPI.
absl::StatusOr<std::unique_ptr<Communicator>> CreateWorldCommunicator();

// A world of one (always available).
std::unique_ptr<Communicator> CreateSingleCommunicator();

// Process groups split from the world: rank = dp_index * model_size + model
// rank, where model_size = max(tp, ep) ranks serve one model replica. The TP
// and EP groups are made of the replica's consecutive ranks (tp == ep, or one
// of them is 1); DP joins the same model rank across replicas.
struct ProcessGroups {
  std::unique_ptr<Communicator> tp;  // size tp
  std::unique_ptr<Communicator> ep;  // size ep
  std::unique_ptr<Communicator> dp;  // size world / max(tp, ep)
};
absl::StatusOr<ProcessGroups> MakeProcessGroups(Communicator& world, int tp, int ep);

}  // namespace facet::parallel
