#include "parallel/mpi_communicator.h"

#include <climits>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace facet::parallel {
namespace {

int g_thread_level = -1;
MPI_Op g_bf16_ops[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};  // sum, max, min

// bf16 has no MPI type: move it as uint16 and reduce with user ops that
// widen to fp32 and round back (each partial sum is rounded, as NCCL does).
template <int kOp>
void Bf16Reduce(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) {
    float x = Bf16ToF32(a[i]), y = Bf16ToF32(b[i]);
    float r = kOp == 0 ? x + y : kOp == 1 ? (x > y ? x : y) : (x < y ? x : y);
    b[i] = F32ToBf16(r);
  }
}

void FinalizeMpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (MPI_Op& op : g_bf16_ops) {
    if (op != MPI_OP_NULL) MPI_Op_free(&op);
  }
  MPI_Finalize();
}

absl::Status EnsureInit() {
  static std::once_flag once;
  static absl::Status status;
  std::call_once(once, [] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &g_thread_level) != MPI_SUCCESS) {
        status = absl::UnavailableError("MPI_Init_thread failed");
        return;
      }
      std::atexit(FinalizeMpi);
    } else {
      MPI_Query_thread(&g_thread_level);
    }
    MPI_Op_create(&Bf16Reduce<0>, 1, &g_bf16_ops[0]);
    MPI_Op_create(&Bf16Reduce<1>, 1, &g_bf16_ops[1]);
    MPI_Op_create(&Bf16Reduce<2>, 1, &g_bf16_ops[2]);
  });
  return status;
}

absl::Status MpiError(int err, const char* what) {
  if (err == MPI_SUCCESS) return absl::OkStatus();
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(err, msg, &len);
  return absl::InternalError(absl::StrCat("MPI ", what, ": ", absl::string_view(msg, len)));
}

MPI_Datatype MpiType(DType t) {
  switch (t) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kBF16: return MPI_UINT16_T;
    case DType::kI32: return MPI_INT32_T;
    case DType::kI64: return MPI_INT64_T;
    case DType::kBytes: return MPI_BYTE;
    case DType::kF64: return MPI_DOUBLE;
  }
  return MPI_BYTE;
}

MPI_Op MpiOp(DType t, ReduceOp op) {
  const int i = op == ReduceOp::kSum ? 0 : op == ReduceOp::kMax ? 1 : 2;
  if (t == DType::kBF16) return g_bf16_ops[i];
  return i == 0 ? MPI_SUM : i == 1 ? MPI_MAX : MPI_MIN;
}

absl::Status CheckInt(size_t n, const char* what) {
  if (n > size_t(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", n, " elements exceed MPI's int count; split the call"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::World() {
  RETURN_IF_ERROR(EnsureInit());
  MPI_Comm dup;
  RETURN_IF_ERROR(MpiError(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "Comm_dup"));
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(dup));
}

int MpiCommunicator::ThreadLevel() { return g_thread_level; }

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

absl::Status MpiCommunicator::Agree(const char* what, int64_t a, int64_t b) {
  if (!validate_) return absl::OkStatus();
  // max of (a, -a, b, -b) gives max and -min of each in one reduction.
  int64_t v[4] = {a, -a, b, -b};
  RETURN_IF_ERROR(MpiError(MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT64_T, MPI_MAX, comm_), what));
  if (v[0] != -v[1] || v[2] != -v[3]) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ranks disagree (count/dtype in [", -v[1], ", ", v[0], "], root/op in [", -v[3],
        ", ", v[2], "]); this rank passed ", a, " and ", b));
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllReduce(const void* send, void* recv, size_t count, DType dtype,
                                        ReduceOp op) {
  RETURN_IF_ERROR(CheckReducible(dtype, "AllReduce"));
  RETURN_IF_ERROR(CheckInt(count, "AllReduce"));
  RETURN_IF_ERROR(Agree("AllReduce", int64_t(count) * 8 + int(dtype), int(op)));
  const void* s = send == recv ? MPI_IN_PLACE : send;
  return MpiError(MPI_Allreduce(s, recv, int(count), MpiType(dtype), MpiOp(dtype, op), comm_),
                  "Allreduce");
}

absl::Status MpiCommunicator::AllGather(const void* send, void* recv, size_t count, DType dtype) {
  RETURN_IF_ERROR(CheckInt(count * size_t(size_), "AllGather"));
  RETURN_IF_ERROR(Agree("AllGather", int64_t(count) * 8 + int(dtype), 0));
  const size_t bytes = count * DTypeSize(dtype);
  const bool in_place = send == static_cast<const char*>(recv) + bytes * size_t(rank_);
  return MpiError(MPI_Allgather(in_place ? MPI_IN_PLACE : send, int(count), MpiType(dtype), recv,
                                int(count), MpiType(dtype), comm_),
                  "Allgather");
}

absl::Status MpiCommunicator::ReduceScatter(const void* send, void* recv, size_t count,
                                            DType dtype, ReduceOp op) {
  RETURN_IF_ERROR(CheckReducible(dtype, "ReduceScatter"));
  RETURN_IF_ERROR(CheckInt(count * size_t(size_), "ReduceScatter"));
  RETURN_IF_ERROR(Agree("ReduceScatter", int64_t(count) * 8 + int(dtype), int(op)));
  return MpiError(MPI_Reduce_scatter_block(send, recv, int(count), MpiType(dtype),
                                           MpiOp(dtype, op), comm_),
                  "Reduce_scatter_block");
}

absl::Status MpiCommunicator::Broadcast(void* buf, size_t count, DType dtype, int root) {
  RETURN_IF_ERROR(CheckRoot(root));
  RETURN_IF_ERROR(CheckInt(count, "Broadcast"));
  RETURN_IF_ERROR(Agree("Broadcast", int64_t(count) * 8 + int(dtype), root));
  return MpiError(MPI_Bcast(buf, int(count), MpiType(dtype), root, comm_), "Bcast");
}

absl::Status MpiCommunicator::AllToAllV(const void* send, std::span<const size_t> send_counts,
                                        void* recv, std::span<const size_t> recv_counts,
                                        DType dtype) {
  RETURN_IF_ERROR(CheckCounts(send_counts, recv_counts));
  std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
  size_t soff = 0, roff = 0;
  for (int j = 0; j < size_; ++j) {
    sc[j] = int(send_counts[j]);
    rc[j] = int(recv_counts[j]);
    sd[j] = int(soff);
    rd[j] = int(roff);
    soff += send_counts[j];
    roff += recv_counts[j];
  }
  RETURN_IF_ERROR(CheckInt(std::max(soff, roff), "AllToAllV"));
  if (validate_) {
    // Each rank learns what its peers will send and compares with what it
    // expects; then all agree on whether anyone found a mismatch.
    std::vector<int> expect(size_);
    RETURN_IF_ERROR(MpiError(
        MPI_Alltoall(sc.data(), 1, MPI_INT, expect.data(), 1, MPI_INT, comm_), "Alltoall"));
    int bad = 0;
    for (int j = 0; j < size_; ++j) bad |= expect[j] != rc[j];
    RETURN_IF_ERROR(Agree("AllToAllV", int(dtype), 0));
    RETURN_IF_ERROR(
        MpiError(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm_), "Allreduce"));
    if (bad) {
      return absl::InvalidArgumentError(
          "AllToAllV: receive counts do not match what the peers send (see ExchangeCounts)");
    }
  }
  return MpiError(MPI_Alltoallv(send, sc.data(), sd.data(), MpiType(dtype), recv, rc.data(),
                                rd.data(), MpiType(dtype), comm_),
                  "Alltoallv");
}

absl::Status MpiCommunicator::Barrier() { return MpiError(MPI_Barrier(comm_), "Barrier"); }

void MpiCommunicator::Abort(int error_code) { MPI_Abort(comm_, error_code != 0 ? error_code : 1); }

absl::StatusOr<std::unique_ptr<Communicator>> MpiCommunicator::Split(int color, int key) {
  // A negative color would be MPI_UNDEFINED territory: reject it on every rank
  // after agreeing, so no rank is left waiting in MPI_Comm_split.
  int bad = color < 0;
  RETURN_IF_ERROR(
      MpiError(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm_), "Allreduce"));
  if (bad) return absl::InvalidArgumentError(absl::StrCat("Split: a rank passed color < 0 (this rank: ", color, ")"));
  MPI_Comm out;
  RETURN_IF_ERROR(MpiError(MPI_Comm_split(comm_, color, key, &out), "Comm_split"));
  return std::unique_ptr<Communicator>(new MpiCommunicator(out));
}

}  // namespace facet::parallel
