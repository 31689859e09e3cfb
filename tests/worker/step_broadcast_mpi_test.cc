// Under mpirun: the leader's step messages reach every follower intact over
// the real MPI communicator, and what one costs (printed; DESIGN.md §3 wants
// microseconds). Run by ctest as facet_step_mpi_tests_np{2,4}.
#include <chrono>
#include <cstdio>

#include <gtest/gtest.h>

#include "parallel/communicator.h"
#include "worker/leader.h"
#include "worker/step_message.h"

namespace facet {
namespace {

StepMessage Typical(int64_t step, int decodes) {
  // A decode step of `decodes` running sequences plus one finished: the common case.
  StepMessage m;
  m.step = step;
  SchedulerOp done;
  done.kind = SchedulerOp::Kind::kStepDone;
  done.finished = {step % 7};
  m.ops = {done, SchedulerOp{}};
  for (int i = 0; i < decodes; ++i) {
    m.batch.tokens.push_back(int32_t(100 + i + step));
    m.batch.positions.push_back(int32_t(50 + step));
    m.batch.segments.push_back(SeqSegment{i, i, 1, 50 + step});
    m.batch.logit_rows.push_back(i);
  }
  return m;
}

TEST(StepBroadcastMpi, EveryRankGetsEveryStep) {
  auto world = parallel::CreateWorldCommunicator();
  ASSERT_TRUE(world.ok()) << world.status();
  parallel::Communicator& comm = **world;
  const int kSteps = 500;
  for (int decodes : {8, 64}) {
    std::string bytes;
    ASSERT_TRUE(comm.Barrier().ok());
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 1; s <= kSteps; ++s) {
      bytes = comm.rank() == 0 ? EncodeStepMessage(Typical(s, decodes)) : std::string();
      ASSERT_TRUE(BroadcastBytes(comm, &bytes).ok());
      if (comm.rank() != 0) {
        auto m = DecodeStepMessage(bytes);
        ASSERT_TRUE(m.ok()) << m.status();
        ASSERT_EQ(m->step, s);
        ASSERT_EQ(m->batch.tokens, Typical(s, decodes).batch.tokens);
      }
    }
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kSteps;
    if (comm.rank() == 0) {
      std::printf("step message, %d decodes: %zu bytes, %.1f us per step (encode + broadcast + decode), %d ranks\n",
                  decodes, bytes.size(), us, comm.size());
    }
  }
}

}  // namespace
}  // namespace facet
