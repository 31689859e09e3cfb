// The server in front of the real local engine on the golden Gemma 3 model
// (token-id prompts: golden models have no tokenizer): greedy outputs of 8
// concurrent streams equal the same prompts served one at a time and the
// single-sequence generator, and every KV block is free afterwards.
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "coordinator/server.h"
#include "core/thread_pool.h"
#include "models/model.h"
#include "worker/engine.h"
#include "worker/generator.h"

namespace facet {
namespace {

struct Result {
  grpc::Status status;
  std::vector<int32_t> ids;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int64_t completion_tokens = 0;
};

Result Call(v1::Facet::Stub& stub, const std::vector<int32_t>& prompt, int max_tokens) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  v1::GenerateRequest request;
  for (int32_t id : prompt) request.add_prompt_token_ids(id);
  request.mutable_sampling()->set_max_tokens(max_tokens);  // temperature 0: greedy
  auto reader = stub.Generate(&ctx, request);
  Result r;
  v1::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
    r.ids.insert(r.ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      r.finish = chunk.finish_reason();
      r.completion_tokens = chunk.usage().completion_tokens();
    }
  }
  r.status = reader->Finish();
  return r;
}

TEST(LocalEngineServer, ConcurrentGreedyStreamsEqualOneAtATime) {
  ThreadPool pool(2);
  auto loaded = Model::Load(std::string(FACET_SOURCE_DIR) + "/tests/data/golden/gemma3", &pool);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<Model> model = std::move(*loaded);
  const ModelConfig& cfg = model->config();

  EngineOptions eopt;
  eopt.kv_cache_bytes = 8 << 20;
  eopt.max_batch_tokens = 24;  // several steps of chunked prefill for the longer prompts
  auto engine = CreateLocalEngine(model, nullptr, eopt);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::shared_ptr<Engine> shared_engine = std::move(*engine);
  auto server = FacetServer::Start(ServerOptions{}, shared_engine, nullptr,
                                   ModelInfoFromConfig("gemma3-golden", cfg));
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Facet::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));

  constexpr int kStreams = 8;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> max_tokens;
  for (int i = 0; i < kStreams; ++i) {
    std::vector<int32_t> p = {cfg.bos_token_id};
    for (int j = 1; j < 3 + 6 * i; ++j) p.push_back(3 + (i * 97 + j * 31) % (cfg.vocab_size - 3));
    prompts.push_back(p);
    max_tokens.push_back(8 + i);
  }

  std::vector<Result> alone;
  for (int i = 0; i < kStreams; ++i) alone.push_back(Call(*stub, prompts[i], max_tokens[i]));
  std::vector<Result> together(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { together[i] = Call(*stub, prompts[i], max_tokens[i]); });
  }
  for (auto& t : threads) t.join();

  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_FALSE(alone[i].ids.empty());
    EXPECT_EQ(together[i].ids, alone[i].ids);
    EXPECT_EQ(together[i].finish, alone[i].finish);
    EXPECT_EQ(together[i].completion_tokens, static_cast<int64_t>(alone[i].ids.size()));
    // An independent reference: the single-sequence generator.
    SamplingParams sp;
    sp.max_tokens = max_tokens[i];
    sp.stop_token_ids.assign(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end());
    auto reference = Generate(*model, prompts[i], sp);
    ASSERT_TRUE(reference.ok()) << reference.status();
    EXPECT_EQ(alone[i].ids, reference->ids);
  }

  grpc::ClientContext ctx;
  v1::StatsResponse stats;
  ASSERT_TRUE(stub->Stats(&ctx, v1::StatsRequest{}, &stats).ok());
  EXPECT_EQ(stats.running(), 0);
  EXPECT_EQ(stats.waiting(), 0);
  EXPECT_GT(stats.steps(), 0);
  ASSERT_GT(stats.kv_pools_size(), 0);
  for (const v1::KvPool& p : stats.kv_pools()) {
    EXPECT_GT(p.total_blocks(), 0) << p.name();
    EXPECT_EQ(p.free_blocks(), p.total_blocks()) << p.name();
  }

  grpc::ClientContext health_ctx;
  v1::HealthResponse health;
  ASSERT_TRUE(stub->Health(&health_ctx, v1::HealthRequest{}, &health).ok());
  EXPECT_EQ(health.status(), v1::HealthResponse::SERVING) << health.message();

  (*server)->Shutdown(std::chrono::seconds(5));
  shared_engine->Shutdown(/*drain=*/false);
}

// A client that goes away mid-stream frees its sequence's KV blocks.
TEST(LocalEngineServer, CancelledStreamFreesKvBlocks) {
  ThreadPool pool(2);
  auto loaded = Model::Load(std::string(FACET_SOURCE_DIR) + "/tests/data/golden/gemma3", &pool);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<Model> model = std::move(*loaded);
  EngineOptions eopt;
  eopt.kv_cache_bytes = 8 << 20;
  auto engine = CreateLocalEngine(model, nullptr, eopt);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::shared_ptr<Engine> shared_engine = std::move(*engine);
  auto server = FacetServer::Start(ServerOptions{}, shared_engine, nullptr,
                                   ModelInfoFromConfig("gemma3-golden", model->config()));
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Facet::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));

  grpc::ClientContext ctx;
  v1::GenerateRequest request;
  for (int32_t id : {2, 40, 41, 42}) request.add_prompt_token_ids(id);
  request.mutable_sampling()->set_max_tokens(400);
  auto reader = stub->Generate(&ctx, request);
  v1::GenerateResponse chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  // CANCELLED, unless the model happened to finish first (random weights).
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.error_code() == grpc::StatusCode::CANCELLED || status.ok())
      << status.error_message();

  // The client returns at once; the server's call ends when the engine has
  // confirmed the cancel.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*server)->active_streams() > 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*server)->active_streams(), 0);
  const EngineStats s = shared_engine->Stats();
  EXPECT_EQ(s.running + s.waiting, 0);
  ASSERT_FALSE(s.pools.empty());
  for (const KvPoolStats& p : s.pools) EXPECT_EQ(p.free_blocks, p.total_blocks) << p.name;
  (*server)->Shutdown(std::chrono::seconds(5));
  shared_engine->Shutdown(/*drain=*/false);
}

}  // namespace
}  // namespace facet
