#include "parallel/moe.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "kernels/cpu/ops.h"

namespace facet::parallel {

absl::Status ExpertParallelMoe(Communicator& ep, const float* x, int64_t T, int64_t H,
                               const int32_t* expert_ids, const float* expert_weights, int64_t K,
                               int64_t E, const ExpertShard& gate_up, const ExpertShard& down,
                               int64_t F, float* out, ExpertParallelBuffers& b, ThreadPool* pool) {
  const int n = ep.size(), r = ep.rank();
  const int64_t El = gate_up.experts.size;
  if (El * n != E || down.experts.size != El || gate_up.experts.begin != down.experts.begin) {
    return absl::InvalidArgumentError(absl::StrCat("expert parallel: ", El, " local experts x ", n,
                                                   " ranks != ", E, " experts"));
  }
  const int64_t chunk = (T + n - 1) / n;
  const int64_t t0 = std::min<int64_t>(T, r * chunk), t1 = std::min<int64_t>(T, t0 + chunk);
  const int64_t row = H + 2;  // dispatched row: [x_t (H) | local expert id | weight]

  // Dispatch: (token, k) pairs of my chunk grouped by owner rank, in token
  // then k order; slot[(t - t0) * K + k] = its row in the packed buffer.
  std::vector<int64_t> per_dest(n, 0);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = expert_ids[t * K + k];
      if (e < 0 || e >= E) return absl::InvalidArgumentError(absl::StrCat("expert id ", e));
      ++per_dest[e / El];
    }
  std::vector<int64_t> offset(n, 0);
  for (int j = 1; j < n; ++j) offset[j] = offset[j - 1] + per_dest[j - 1];
  const int64_t sent = std::accumulate(per_dest.begin(), per_dest.end(), int64_t(0));
  std::vector<int64_t> slot((t1 - t0) * K);
  b.send.resize(sent * row);
  std::vector<int64_t> fill = offset;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = expert_ids[t * K + k];
      const int64_t s = fill[e / El]++;
      slot[(t - t0) * K + k] = s;
      float* dst = b.send.data() + s * row;
      std::memcpy(dst, x + t * H, sizeof(float) * H);
      dst[H] = float(e % El);  // small integers are exact in fp32
      dst[H + 1] = expert_weights[t * K + k];
    }
  std::vector<size_t> sc(n), rc;
  for (int j = 0; j < n; ++j) sc[j] = size_t(per_dest[j] * row);
  ASSIGN_OR_RETURN(rc, ep.ExchangeCounts(sc));
  const size_t recv_elems = std::accumulate(rc.begin(), rc.end(), size_t(0));
  b.recv.resize(recv_elems);
  RETURN_IF_ERROR(ep.AllToAllV(b.send.data(), sc, b.recv.data(), rc, DType::kF32));

  // Run my experts over what arrived: M rows, one expert each (K = 1).
  const int64_t M = int64_t(recv_elems) / row;
  b.x.resize(M * H);
  b.ids.resize(M);
  b.w.resize(M);
  b.y.resize(M * H);
  for (int64_t m = 0; m < M; ++m) {
    const float* src = b.recv.data() + m * row;
    std::memcpy(b.x.data() + m * H, src, sizeof(float) * H);
    b.ids[m] = int32_t(src[H]);
    b.w[m] = src[H + 1];
  }
  if (M > 0) {
    b.workspace.resize(cpu::MoeExpertsWorkspaceFloats(M, H, F, 1));
    RETURN_IF_ERROR(cpu::MoeExperts(b.x.data(), M, b.ids.data(), b.w.data(), 1, gate_up.w, down.w,
                                    El, b.y.data(), b.workspace.data(), pool));
  }

  // Combine: results travel back along the reverse counts.
  std::vector<size_t> back_send(n), back_recv(n);
  for (int j = 0; j < n; ++j) {
    back_send[j] = rc[j] / row * H;
    back_recv[j] = size_t(per_dest[j] * H);
  }
  b.out.assign(sent * H, 0.0f);
  RETURN_IF_ERROR(ep.AllToAllV(b.y.data(), back_send, b.out.data(), back_recv, DType::kF32));

  // Sum per token in ascending expert id, as the single-rank kernel does.
  b.all.resize(size_t(n) * chunk * H);  // [n, chunk, H]
  float* mine = b.all.data() + size_t(r) * chunk * H;
  std::memset(mine, 0, sizeof(float) * chunk * H);
  std::vector<int64_t> order(K);
  for (int64_t t = t0; t < t1; ++t) {
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t c) {
      return expert_ids[t * K + a] < expert_ids[t * K + c];
    });
    float* o = mine + (t - t0) * H;
    for (int64_t k : order) cpu::AddInPlace(o, b.out.data() + slot[(t - t0) * K + k] * H, H);
  }
  RETURN_IF_ERROR(ep.AllGather(mine, b.all.data(), size_t(chunk * H), DType::kF32));
  std::memcpy(out, b.all.data(), sizeof(float) * T * H);
  return absl::OkStatus();
}

}  // namespace facet::parallel
