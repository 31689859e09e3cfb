// facet.v1.Facet over loopback gRPC in front of a FakeEngine: streaming,
// every rejected input, client cancellation, deadlines, 200 concurrent
// streams, graceful shutdown and health.
#include <atomic>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "coordinator/server.h"
#include "tests/coordinator/fake_engine.h"

namespace facet {
namespace {

using ::testing::Contains;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using testing::FakeEngine;
using testing::FakeEngineOptions;
using Clock = std::chrono::steady_clock;

constexpr int32_t kVocab = 512;
constexpr int64_t kContext = 64;

ModelInfo FakeInfo() {
  ModelInfo info;
  info.name = "fake";
  info.family = ModelFamily::kGemma3;
  info.context_length = kContext;
  info.vocab_size = kVocab;
  info.bos_id = 2;
  info.stop_token_ids = {1};
  return info;
}

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> chunks;
  std::vector<int32_t> ids;
  std::string text;
};

StreamResult Drain(grpc::ClientReader<v1::GenerateResponse>* reader) {
  StreamResult r;
  v1::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
    r.ids.insert(r.ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    r.text += chunk.text();
    r.chunks.push_back(chunk);
  }
  r.status = reader->Finish();
  return r;
}

v1::GenerateRequest IdsRequest(std::vector<int32_t> ids, int max_tokens) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.add_prompt_token_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

std::vector<int32_t> Expected(int32_t last, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(FakeEngine::Token(last, i, kVocab));
  return out;
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

class ServiceTest : public ::testing::Test {
 protected:
  void Start(FakeEngineOptions engine_options = {}, ServerOptions options = {},
             std::shared_ptr<const Tokenizer> tokenizer = nullptr, ModelInfo info = FakeInfo()) {
    engine_ = std::make_shared<FakeEngine>(engine_options);
    auto server = FacetServer::Start(options, engine_, std::move(tokenizer), std::move(info));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Facet::NewStub(channel_);
  }

  StreamResult Generate(const v1::GenerateRequest& request) {
    grpc::ClientContext ctx;
    auto reader = stub_->Generate(&ctx, request);
    return Drain(reader.get());
  }

  StreamResult Chat(const v1::ChatRequest& request) {
    grpc::ClientContext ctx;
    auto reader = stub_->Chat(&ctx, request);
    return Drain(reader.get());
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::seconds(5));
    if (engine_) {
      EXPECT_TRUE(engine_->WaitIdle(std::chrono::seconds(5))) << "requests leaked in the engine";
    }
  }

  std::shared_ptr<FakeEngine> engine_;
  std::unique_ptr<FacetServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Facet::Stub> stub_;
};

TEST_F(ServiceTest, StreamsTokensAndFinishesWithUsage) {
  Start({.step_interval = std::chrono::milliseconds(20)});
  v1::GenerateRequest request = IdsRequest({2, 7}, 5);
  request.mutable_sampling()->set_seed(99);
  StreamResult r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_THAT(r.ids, ElementsAreArray(Expected(7, 5)));
  EXPECT_EQ(r.text, " t8 t9 t10 t11 t12");
  ASSERT_GE(r.chunks.size(), 2u);  // streamed, not one reply
  EXPECT_TRUE(r.chunks.front().has_seed());
  EXPECT_EQ(r.chunks.front().seed(), 99u);
  const v1::GenerateResponse& last = r.chunks.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 2);
  EXPECT_EQ(last.usage().completion_tokens(), 5);
  for (size_t i = 0; i + 1 < r.chunks.size(); ++i) {
    EXPECT_EQ(r.chunks[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_EQ(r.chunks[i].request_id(), last.request_id());
  }
  EXPECT_FALSE(last.request_id().empty());

  ASSERT_EQ(engine_->requests().size(), 1u);
  const EngineRequest seen = engine_->requests()[0];
  EXPECT_EQ(seen.request_id, last.request_id());
  EXPECT_EQ(seen.sampling.seed, 99u);
  EXPECT_EQ(seen.sampling.max_tokens, 5);
  EXPECT_THAT(seen.sampling.stop_token_ids, Contains(1));  // the model's EOS
  EXPECT_EQ(seen.deadline, Clock::time_point::max());      // the client set none
}

TEST_F(ServiceTest, StopTokenFinishesWithStop) {
  Start();
  v1::GenerateRequest request = IdsRequest({2, 7}, 20);
  request.mutable_sampling()->add_stop_token_ids(10);
  request.set_request_id("my-request");
  StreamResult r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_THAT(r.ids, ElementsAreArray({8, 9, 10}));
  EXPECT_EQ(r.chunks.back().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(r.chunks.back().request_id(), "my-request");
}

TEST_F(ServiceTest, BadInputsReturnTheirStatusBeforeReachingTheEngine) {
  Start();
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest*)> change;
    grpc::StatusCode code;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"empty prompt", [](auto* r) { r->clear_prompt_token_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt is empty"},
      {"negative temperature", [](auto* r) { r->mutable_sampling()->set_temperature(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "temperature"},
      {"top_p 0", [](auto* r) { r->mutable_sampling()->set_top_p(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
      {"top_p 1.5", [](auto* r) { r->mutable_sampling()->set_top_p(1.5); },
       grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
      {"max_tokens 0", [](auto* r) { r->mutable_sampling()->set_max_tokens(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"id beyond the vocabulary", [](auto* r) { r->add_prompt_token_ids(kVocab); },
       grpc::StatusCode::INVALID_ARGUMENT, "outside the vocabulary"},
      {"negative id", [](auto* r) { r->add_prompt_token_ids(-3); },
       grpc::StatusCode::INVALID_ARGUMENT, "= -3"},
      {"prompt longer than the context",
       [](auto* r) { for (int i = 0; i < kContext; ++i) r->add_prompt_token_ids(5); },
       grpc::StatusCode::OUT_OF_RANGE, "holds at most 64"},
      {"prompt + max_tokens beyond the context",
       [](auto* r) { r->mutable_sampling()->set_max_tokens(kContext); },
       grpc::StatusCode::OUT_OF_RANGE, "exceeds the context"},
      {"unknown model", [](auto* r) { r->set_model("gemma-9000"); }, grpc::StatusCode::NOT_FOUND,
       "no model named \"gemma-9000\""},
      {"text without a tokenizer",
       [](auto* r) { r->clear_prompt_token_ids(); r->set_prompt("hi"); },
       grpc::StatusCode::FAILED_PRECONDITION, "without a tokenizer"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::GenerateRequest request = IdsRequest({2, 7}, 4);
    c.change(&request);
    StreamResult r = Generate(request);
    EXPECT_EQ(r.status.error_code(), c.code) << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr(c.fragment));
    EXPECT_TRUE(r.chunks.empty());
  }
  v1::ChatRequest chat;
  chat.add_messages()->set_content("hi");
  StreamResult r = Chat(chat);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(engine_->submitted(), 0);
}

TEST_F(ServiceTest, FullQueueIsResourceExhausted) {
  Start({.max_live = 2});
  engine_->SetPaused(true);
  grpc::ClientContext ctx[2];
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < 2; ++i) readers.push_back(stub_->Generate(&ctx[i], IdsRequest({2, 7}, 10)));
  ASSERT_TRUE(WaitFor([&] { return engine_->live() == 2; }, std::chrono::seconds(5)));
  StreamResult r = Generate(IdsRequest({2, 7}, 10));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(r.status.error_message(), HasSubstr("queue is full"));
  for (auto& c : ctx) c.TryCancel();
  for (auto& reader : readers) EXPECT_EQ(Drain(reader.get()).status.error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ServiceTest, ClientCancelMidStreamCancelsTheEngineRequest) {
  Start({.step_interval = std::chrono::milliseconds(5)});
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, IdsRequest({2, 7}, 50));
  v1::GenerateResponse chunk;
  std::string id;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(reader->Read(&chunk));
    id = chunk.request_id();
  }
  EXPECT_EQ(engine_->live(), 1);
  ctx.TryCancel();
  StreamResult r = Drain(reader.get());
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(engine_->WaitIdle(std::chrono::seconds(5)));
  EXPECT_THAT(engine_->cancelled_ids(), Contains(id));
  // The request did not run to its 50 tokens.
  grpc::ClientContext stats_ctx;
  v1::StatsResponse stats;
  ASSERT_TRUE(stub_->Stats(&stats_ctx, v1::StatsRequest{}, &stats).ok());
  EXPECT_LT(stats.generated_tokens(), 50);
  ASSERT_EQ(stats.kv_pools_size(), 1);
  EXPECT_EQ(stats.kv_pools(0).free_blocks(), stats.kv_pools(0).total_blocks());
  EXPECT_EQ(stats.running(), 0);
}

TEST_F(ServiceTest, ClientDeadlineReachesTheEngine) {
  Start({.step_interval = std::chrono::milliseconds(20)});
  grpc::ClientContext ctx;
  const auto start = Clock::now();
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  auto reader = stub_->Generate(&ctx, IdsRequest({2, 7}, 60));  // 60 steps of 20 ms
  StreamResult r = Drain(reader.get());
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(r.ids.size(), 60u);
  ASSERT_EQ(engine_->requests().size(), 1u);
  const auto deadline = engine_->requests()[0].deadline;
  EXPECT_GT(deadline, start + std::chrono::milliseconds(200));
  EXPECT_LT(deadline, start + std::chrono::milliseconds(400));
  EXPECT_TRUE(engine_->WaitIdle(std::chrono::seconds(5)));
}

TEST_F(ServiceTest, TwoHundredConcurrentStreamsAllComplete) {
  Start();
  constexpr int kStreams = 200;
  constexpr int kTokens = 20;
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest request = IdsRequest({2, 10 + i}, kTokens);
      request.set_request_id("stream-" + std::to_string(i));
      results[i] = Generate(request);
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(i);
    const StreamResult& r = results[i];
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_THAT(r.ids, ElementsAreArray(Expected(10 + i, kTokens)));
    EXPECT_EQ(r.chunks.back().request_id(), "stream-" + std::to_string(i));
    EXPECT_EQ(r.chunks.back().finish_reason(), v1::FINISH_REASON_LENGTH);
    ++ok;
  }
  EXPECT_EQ(ok, kStreams);
  EXPECT_EQ(server_->active_streams(), 0);
}

TEST_F(ServiceTest, ShutdownDrainsStreamsInFlight) {
  Start({.step_interval = std::chrono::milliseconds(5)});
  constexpr int kStreams = 5;
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = Generate(IdsRequest({2, 20 + i}, 40)); });
  }
  ASSERT_TRUE(WaitFor([&] { return engine_->live() == kStreams; }, std::chrono::seconds(5)));
  server_->Shutdown(std::chrono::seconds(20));  // blocks until the streams are done
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_THAT(results[i].ids, ElementsAreArray(Expected(20 + i, 40)));
  }
  EXPECT_TRUE(engine_->cancelled_ids().empty());
  // New calls are refused once the server is down.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  auto reader = stub_->Generate(&ctx, IdsRequest({2, 7}, 4));
  EXPECT_FALSE(Drain(reader.get()).status.ok());
}

TEST_F(ServiceTest, ShutdownCancelsStreamsThatOutliveTheGrace) {
  Start();
  engine_->SetPaused(true);  // nothing would ever finish
  constexpr int kStreams = 3;
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = Generate(IdsRequest({2, 30 + i}, 40)); });
  }
  ASSERT_TRUE(WaitFor([&] { return engine_->live() == kStreams; }, std::chrono::seconds(5)));
  const auto start = Clock::now();
  server_->Shutdown(std::chrono::milliseconds(200));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  for (auto& t : threads) t.join();
  for (const StreamResult& r : results) EXPECT_FALSE(r.status.ok());
  EXPECT_TRUE(engine_->WaitIdle(std::chrono::seconds(5)));
  EXPECT_EQ(engine_->cancelled_ids().size(), size_t{kStreams});
}

TEST_F(ServiceTest, HealthProbesAnIdleEngineAndFlagsAStuckOne) {
  ServerOptions options;
  options.service.health_window = std::chrono::milliseconds(200);
  options.service.probe_reuse = std::chrono::milliseconds(0);
  Start({}, options);
  auto health = [&] {
    grpc::ClientContext ctx;
    v1::HealthResponse response;
    EXPECT_TRUE(stub_->Health(&ctx, v1::HealthRequest{}, &response).ok());
    return response;
  };
  // Idle and never stepped: only a probe step can prove health.
  v1::HealthResponse h = health();
  EXPECT_EQ(h.status(), v1::HealthResponse::SERVING) << h.message();
  EXPECT_THAT(h.message(), HasSubstr("probe"));
  EXPECT_EQ(engine_->submitted(), 1);
  EXPECT_GE(h.seconds_since_last_step(), 0);

  // Work waiting and no step within the window: stuck.
  engine_->SetPaused(true);
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, IdsRequest({2, 7}, 10));
  ASSERT_TRUE(WaitFor([&] { return engine_->live() == 1; }, std::chrono::seconds(5)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  h = health();
  EXPECT_EQ(h.status(), v1::HealthResponse::NOT_SERVING) << h.message();
  EXPECT_THAT(h.message(), HasSubstr("1 running"));
  EXPECT_GT(h.seconds_since_last_step(), 0.2);
  // It recovers once steps complete again.
  engine_->SetPaused(false);
  ASSERT_TRUE(Drain(reader.get()).status.ok());
  h = health();  // a recent step, or (on a slow machine) a new probe
  EXPECT_EQ(h.status(), v1::HealthResponse::SERVING) << h.message();
}

TEST_F(ServiceTest, HealthFailsWhenTheProbeCannotRun) {
  ServerOptions options;
  options.service.probe_timeout = std::chrono::milliseconds(100);
  options.service.probe_reuse = std::chrono::milliseconds(0);
  Start({}, options);
  engine_->SetPaused(true);  // the probe's step never completes; its deadline ends it
  grpc::ClientContext ctx;
  v1::HealthResponse h;
  ASSERT_TRUE(stub_->Health(&ctx, v1::HealthRequest{}, &h).ok());
  EXPECT_EQ(h.status(), v1::HealthResponse::NOT_SERVING) << h.message();
  EXPECT_THAT(h.message(), HasSubstr("probe"));
}

TEST_F(ServiceTest, StatsListModelsAndTokenize) {
  Start();
  ASSERT_TRUE(Generate(IdsRequest({2, 7}, 5)).status.ok());
  grpc::ClientContext c1, c2, c3, c4;
  v1::StatsResponse stats;
  ASSERT_TRUE(stub_->Stats(&c1, v1::StatsRequest{}, &stats).ok());
  EXPECT_EQ(stats.model(), "fake");
  EXPECT_EQ(stats.generated_tokens(), 5);
  EXPECT_EQ(stats.prompt_tokens(), 2);
  EXPECT_GE(stats.steps(), 5);
  EXPECT_EQ(stats.running(), 0);
  ASSERT_EQ(stats.kv_pools_size(), 1);
  EXPECT_EQ(stats.kv_pools(0).free_blocks(), stats.kv_pools(0).total_blocks());
  EXPECT_EQ(stats.kv_pools(0).total_bytes(),
            stats.kv_pools(0).total_blocks() * stats.kv_pools(0).bytes_per_block());

  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&c2, v1::ListModelsRequest{}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), "fake");
  EXPECT_EQ(models.models(0).family(), "gemma3");
  EXPECT_EQ(models.models(0).context_length(), kContext);
  EXPECT_EQ(models.models(0).vocab_size(), kVocab);
  EXPECT_FALSE(models.models(0).has_tokenizer());

  v1::TokenizeRequest tokenize;
  tokenize.set_text("hello");
  v1::TokenizeResponse ids;
  EXPECT_EQ(stub_->Tokenize(&c3, tokenize, &ids).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::StatsRequest unknown;
  unknown.set_model("other");
  EXPECT_EQ(stub_->Stats(&c4, unknown, &stats).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Text in and out with the real Gemma 3 tokenizer (skipped when absent).
TEST_F(ServiceTest, ChatAndTokenizeWithATokenizer) {
  const std::string path = std::string(FACET_SHARED_DIR) + "/data/tokenizers/gemma3/tokenizer.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no tokenizer at " << path;
  auto tok = Tokenizer::FromJsonFile(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto tokenizer = std::make_shared<const Tokenizer>(*std::move(tok));
  ModelInfo info = FakeInfo();
  info.context_length = 4096;
  info.vocab_size = tokenizer->vocab_size();
  Start({.vocab_size = tokenizer->vocab_size()}, {}, tokenizer, info);

  grpc::ClientContext c1;
  v1::TokenizeRequest tokenize;
  tokenize.set_text("Hello world");
  v1::TokenizeResponse ids;
  ASSERT_TRUE(stub_->Tokenize(&c1, tokenize, &ids).ok());
  EXPECT_THAT(ids.token_ids(), ElementsAreArray(tokenizer->Encode("Hello world", true)));
  ASSERT_EQ(ids.pieces_size(), ids.token_ids_size());
  EXPECT_EQ(ids.pieces(0), "<bos>");

  v1::ChatRequest chat;
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content("Hi!");
  chat.mutable_sampling()->set_max_tokens(3);
  StreamResult r = Chat(chat);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.ids.size(), 3u);
  const std::vector<int32_t> prompt = engine_->requests().back().prompt;
  EXPECT_EQ(tokenizer->Decode(prompt, false),
            "<bos><start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n");

  chat.add_messages()->set_role("user");  // user twice in a row
  r = Chat(chat);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r.status.error_message(), HasSubstr("alternate"));

  v1::GenerateRequest text;
  text.set_prompt("Once upon a time");
  text.mutable_sampling()->set_max_tokens(2);
  text.mutable_sampling()->add_stop("never");
  r = Generate(text);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const EngineRequest seen = engine_->requests().back();
  EXPECT_EQ(seen.prompt, tokenizer->Encode("Once upon a time", true));
  EXPECT_THAT(seen.stop_strings, ElementsAreArray({"never"}));
}

}  // namespace
}  // namespace facet
