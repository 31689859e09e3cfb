// Under mpirun -np N (N = 2, 4): an engine group whose model is tensor
// parallel over the whole world (rank 0 leads, the others follow) samples
// on the group with Sampler::SampleSharded. Its tokens must equal a TP=1
// local engine's, request for request, for greedy and for seeded
// temperature / top-k / top-p / min-p / repetition-penalty requests batched
// together, and no rank may ever gather the logits. Also prints what the
// sampling collectives cost per step against the old logits gather.
// Run by ctest as facet_engine_group_mpi_tests_np{2,4}.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/thread_pool.h"
#include "models/model.h"
#include "parallel/communicator.h"
#include "tests/parallel/test_world.h"
#include "worker/engine.h"
#include "worker/follower.h"
#include "worker/leader.h"

namespace facet {
namespace {

using namespace std::chrono_literals;

std::string Golden(const std::string& name) { return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name; }

// Delegates to `inner` and counts each collective's calls and output bytes
// on this rank (AllGather: size() x the input; the others: their buffer).
class CountingComm : public parallel::Communicator {
 public:
  struct Tally {
    int64_t calls = 0;
    int64_t bytes = 0;
  };
  explicit CountingComm(parallel::Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::string_view backend() const override { return inner_->backend(); }
  absl::Status AllReduce(const void* s, void* r, size_t n, parallel::DType t, parallel::ReduceOp op) override {
    Count("allreduce", n * parallel::DTypeSize(t));
    return inner_->AllReduce(s, r, n, t, op);
  }
  absl::Status AllGather(const void* s, void* r, size_t n, parallel::DType t) override {
    Count("allgather", size_t(size()) * n * parallel::DTypeSize(t));
    return inner_->AllGather(s, r, n, t);
  }
  absl::Status ReduceScatter(const void* s, void* r, size_t n, parallel::DType t, parallel::ReduceOp op) override {
    Count("reducescatter", n * parallel::DTypeSize(t));
    return inner_->ReduceScatter(s, r, n, t, op);
  }
  absl::Status Broadcast(void* b, size_t n, parallel::DType t, int root) override {
    Count("broadcast", n * parallel::DTypeSize(t));
    return inner_->Broadcast(b, n, t, root);
  }
  absl::Status AllToAllV(const void* s, std::span<const size_t> sc, void* r, std::span<const size_t> rc,
                         parallel::DType t) override {
    size_t n = 0;
    for (size_t c : rc) n += c;
    Count("alltoallv", n * parallel::DTypeSize(t));
    return inner_->AllToAllV(s, sc, r, rc, t);
  }
  absl::Status Barrier() override { return inner_->Barrier(); }
  void Abort(int code) override { inner_->Abort(code); }
  absl::StatusOr<std::unique_ptr<parallel::Communicator>> Split(int color, int key) override {
    return inner_->Split(color, key);
  }

  std::map<std::string, Tally> tallies() {
    std::lock_guard<std::mutex> l(mu_);
    return tallies_;
  }
  int64_t total_bytes() {
    int64_t b = 0;
    for (const auto& [op, t] : tallies()) b += t.bytes;
    return b;
  }
  void Reset() {
    std::lock_guard<std::mutex> l(mu_);
    tallies_.clear();
  }

 private:
  void Count(const char* op, size_t bytes) {
    std::lock_guard<std::mutex> l(mu_);
    Tally& t = tallies_[op];
    t.calls++;
    t.bytes += int64_t(bytes);
  }
  parallel::Communicator* inner_;
  std::mutex mu_;
  std::map<std::string, Tally> tallies_;
};

struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> ids;
  EngineFinish finish = EngineFinish::kNone;
  bool finished = false;
  EventSink Sink() {
    return [this](const TokenEvent& e) {
      std::lock_guard<std::mutex> l(mu);
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
      if (e.finished) {
        finished = true;
        finish = e.finish;
        cv.notify_all();
      }
    };
  }
  bool Wait() {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, 120s, [&] { return finished; });
  }
};

std::vector<int32_t> Prompt(int seed, int len, int vocab) {
  std::vector<int32_t> p(len);
  for (int i = 0; i < len; ++i) p[i] = 3 + (seed * 131 + i * 37) % (vocab - 3);
  p[0] = 2;
  return p;
}

SamplingParams Params(float t, int k, float top_p, float min_p, float rep, uint64_t seed, int max_tokens) {
  SamplingParams p;
  p.temperature = t;
  p.top_k = k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.repetition_penalty = rep;
  p.seed = seed;
  p.max_tokens = max_tokens;
  return p;
}

// Several concurrent requests with different filters; 0 and 1 share a
// prompt, so a sampler that ignored its parameters would show.
std::vector<EngineRequest> Requests(int vocab) {
  const std::vector<SamplingParams> params = {
      Params(0, 0, 1, 0, 1, 0, 14),          Params(1.0f, 0, 1, 0, 1, 7, 14),
      Params(0.8f, 5, 1, 0, 1, 8, 12),       Params(1.2f, 0, 0.7f, 0, 1, 9, 16),
      Params(1.0f, 0, 1, 0.1f, 1, 10, 12),   Params(0.9f, 20, 0.9f, 0.02f, 1.3f, 11, 15),
      Params(0, 0, 1, 0, 1.5f, 0, 13),       Params(1.5f, 50, 0.95f, 0, 1.1f, 12, 10),
      Params(0, 0, 1, 0, 1, 0, 13)};
  const int prompt_of[] = {0, 0, 1, 2, 1, 0, 2, 3, 2};
  const int prompt_len[] = {9, 5, 13, 4};
  std::vector<EngineRequest> out;
  for (size_t i = 0; i < params.size(); ++i) {
    EngineRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt = Prompt(prompt_of[i], prompt_len[prompt_of[i]], vocab);
    r.sampling = params[i];
    out.push_back(std::move(r));
  }
  return out;
}

// Submits every request at once and waits for all.
std::vector<std::unique_ptr<Collector>> RunAll(Engine& engine, const std::vector<EngineRequest>& reqs) {
  std::vector<std::unique_ptr<Collector>> out;
  for (const EngineRequest& r : reqs) {
    out.push_back(std::make_unique<Collector>());
    absl::Status st = engine.Submit(r, out.back()->Sink());
    EXPECT_TRUE(st.ok()) << r.request_id << ": " << st;
  }
  for (size_t i = 0; i < out.size(); ++i) EXPECT_TRUE(out[i]->Wait()) << reqs[i].request_id;
  return out;
}

EngineOptions Options() {
  EngineOptions opt;
  opt.block_size = 4;
  opt.num_blocks_global = 64;
  opt.num_blocks_sliding = 64;
  opt.max_batch_tokens = 16;  // the longer prompts prefill over several steps
  opt.max_running = 8;
  opt.kv_cache_bytes = 1 << 20;
  return opt;
}

TEST(EngineGroupMpi, TpTokensEqualSingleRankWithoutGathering) {
  parallel::Communicator& world = parallel::TestWorld();
  ASSERT_GE(world.size(), 2) << "run under mpirun -np 2 or 4";
  CountingComm group(&world);
  ThreadPool pool(1);
  Model::LoadOptions lo;
  lo.tp = &group;
  auto loaded = Model::Load(Golden("gemma3"), &pool, lo);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<Model> model = std::move(*loaded);
  ASSERT_NE(model->tp(), nullptr);
  const int V = int(model->config().vocab_size);
  ASSERT_EQ(model->vocab_shard().size * world.size(), V);
  const EngineOptions opt = Options();
  const std::vector<EngineRequest> reqs = Requests(V);

  if (world.rank() != 0) {
    Follower follower(model, opt, &group);
    absl::Status st = follower.Run();
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_GT(follower.steps(), 0);
  } else {
    auto exec = MakeLeaderExecutor(model, &group, {});
    ASSERT_TRUE(exec->samples()) << "a TP leader must sample on its group";
    auto engine = CreateEngine(model, nullptr, opt, std::move(exec));
    ASSERT_TRUE(engine.ok()) << engine.status();
    auto got = RunAll(**engine, reqs);
    const int64_t steps = (*engine)->Stats().steps;
    (*engine)->Shutdown(true);  // the followers' Run() returns

    // TP=1 reference: a plain local engine on the unsharded model.
    auto ref_model = Model::Load(Golden("gemma3"), &pool);
    ASSERT_TRUE(ref_model.ok()) << ref_model.status();
    std::shared_ptr<Model> ref = std::move(*ref_model);
    auto ref_engine = CreateLocalEngine(ref, nullptr, opt);
    ASSERT_TRUE(ref_engine.ok());
    auto want = RunAll(**ref_engine, reqs);
    (*ref_engine)->Shutdown(true);
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(got[i]->ids, want[i]->ids) << reqs[i].request_id << " tp=" << world.size();
      EXPECT_EQ(got[i]->finish, want[i]->finish) << reqs[i].request_id;
      EXPECT_EQ(int(got[i]->ids.size()), reqs[i].sampling.max_tokens) << reqs[i].request_id;
    }
    // The sampled requests really sample: same prompt, other tokens than greedy.
    EXPECT_NE(want[1]->ids, want[0]->ids);
    EXPECT_NE(want[5]->ids, want[0]->ids);
    // ... and the penalty changes greedy output, so the equality above needs
    // the history to reach every rank.
    EXPECT_NE(want[6]->ids, want[8]->ids);

    std::printf("[ measured ] engine group tp=%d: %lld steps, collective output bytes per step on the leader:",
                world.size(), (long long)steps);
    for (const auto& [op, t] : group.tallies()) {
      std::printf(" %s %.0f B (%.1f calls)", op.c_str(), double(t.bytes) / steps, double(t.calls) / steps);
    }
    std::printf("\n");
  }
  // No rank ever gathered logits: the gather is off and its counter untouched.
  EXPECT_FALSE(model->gather_logits());
  EXPECT_EQ(model->gathered_logit_bytes(), 0);
  ASSERT_TRUE(world.Barrier().ok());
}

// What sampling costs in collectives per step, before (all-gather the
// [rows, V] logits, then Sample on every rank) and after (SampleSharded on
// each rank's slice), on one forward of `kRows` rows; the tokens agree.
TEST(EngineGroupMpi, SamplingTrafficBeforeAndAfter) {
  parallel::Communicator& world = parallel::TestWorld();
  ASSERT_GE(world.size(), 2);
  CountingComm group(&world);
  ThreadPool pool(1);
  Model::LoadOptions lo;
  lo.tp = &group;
  auto loaded = Model::Load(Golden("gemma3"), &pool, lo);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Model& m = **loaded;
  const int64_t V = m.config().vocab_size;
  const parallel::Range vocab = m.vocab_shard();
  constexpr int kRows = 8;
  const std::vector<int32_t> tokens = Prompt(5, kRows, int(V));
  // Expected bytes per row from SampleSharded's collectives (worker/sampler.cc):
  // the global maximum is an all-gather of one 8-byte (value, id) per rank;
  // a full-vocabulary draw adds one more for the winners; top-k gathers an
  // 8-byte count and k 12-byte entries per rank. Independent of V. Top-p
  // sends a 257-double histogram plus the candidates above its cut, which
  // depends on the distribution (the whole slice when it is flat, as in
  // this random tiny model: then more than the gather): printed, not checked.
  const int64_t n = world.size();
  struct Mode {
    const char* name;
    SamplingParams p;
    int64_t bytes_per_row;  // -1: data-dependent
  };
  const std::vector<Mode> modes = {
      {"greedy", Params(0, 0, 1, 0, 1, 1, 1), 8 * n},
      {"temperature", Params(1, 0, 1, 0, 1, 2, 1), 16 * n},
      {"top-k 40", Params(1, 40, 1, 0, 1, 3, 1), (8 + 8 + 12 * std::min<int64_t>(40, vocab.size)) * n},
      {"top-p 0.9", Params(1, 0, 0.9f, 0, 1, 4, 1), -1},
      {"min-p + rep 1.3", Params(1, 0, 1, 0.05f, 1.3f, 5, 1), 16 * n}};

  // Forward with and without the gather: the difference is the gather.
  auto forward = [&](bool gather, std::vector<float>* logits) -> int64_t {
    m.set_gather_logits(gather);
    KvCache cache(m.config(), kRows);
    group.Reset();
    EXPECT_TRUE(m.Forward(tokens, &cache, /*all_logits=*/true, logits).ok());
    return group.total_bytes();
  };
  std::vector<float> full, local;
  const int64_t with_gather = forward(true, &full);
  const int64_t without = forward(false, &local);
  ASSERT_EQ(int64_t(full.size()), kRows * V);
  ASSERT_EQ(int64_t(local.size()), kRows * vocab.size);
  EXPECT_EQ(with_gather - without, kRows * V * int64_t(sizeof(float)));
  for (const Mode& mode : modes) {
    group.Reset();
    for (int r = 0; r < kRows; ++r) {
      Sampler single(mode.p), sharded(mode.p);
      const std::span<const int32_t> hist(tokens.data(), size_t(r + 1));
      const int32_t want = single.Sample(full.data() + r * V, V, hist, r);
      auto got = sharded.SampleSharded(group, local.data() + r * vocab.size, vocab, V, hist, r);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, want) << mode.name << " row " << r;
    }
    const int64_t after = group.total_bytes();
    if (mode.bytes_per_row >= 0) EXPECT_EQ(after, kRows * mode.bytes_per_row) << mode.name;
    if (world.rank() == 0) {
      std::printf("[ measured ] tp=%d V=%lld, %s: sampling collectives per sampled row: before %lld B "
                  "(all-gather of the logits row), after %.0f B\n",
                  world.size(), (long long)V, mode.name, (long long)(V * int64_t(sizeof(float))),
                  double(after) / kRows);
    }
  }
}

}  // namespace
}  // namespace facet
