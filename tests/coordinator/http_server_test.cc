// The OpenAI-compatible HTTP front on loopback in front of a FakeEngine,
// driven by cpp-httplib's client: JSON and SSE completions, every rejected
// input with its status and an OpenAI-style error body, a client that closes
// its stream early (engine request cancelled, no KV block leaked), 200
// concurrent streams, metrics that move, health, and shutdown mid-stream.
#include "coordinator/http_server.h"

#include <atomic>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/coordinator/fake_engine.h"

namespace facet {
namespace {

using ::testing::HasSubstr;
using testing::FakeEngine;
using testing::FakeEngineOptions;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int32_t kVocab = 512;

ModelInfo FakeInfo() {
  ModelInfo info;
  info.name = "fake";
  info.family = ModelFamily::kGemma3;
  info.context_length = 64;
  info.vocab_size = kVocab;
  info.bos_id = 2;
  info.stop_token_ids = {1};
  return info;
}

// The fake engine's text for a prompt ending in `last`: " t<id>" per token.
std::string ExpectedText(int32_t last, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += " t" + std::to_string(FakeEngine::Token(last, i, kVocab));
  return s;
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

// The `data:` payloads of an SSE body, in order ("[DONE]" included).
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(FakeEngineOptions engine_options = {}, HttpOptions options = {}) {
    engine_ = std::make_shared<FakeEngine>(engine_options);
    auto registry = std::make_shared<ModelRegistry>();
    ASSERT_TRUE(registry->Add(ServedModel{FakeInfo(), engine_, nullptr}).ok());
    auto front = HttpFront::Start(options, registry);
    ASSERT_TRUE(front.ok()) << front.status();
    front_ = *std::move(front);
    ASSERT_GT(front_->port(), 0);
  }

  httplib::Client Client() {
    httplib::Client c("127.0.0.1", front_->port());
    c.set_read_timeout(30, 0);
    return c;
  }

  httplib::Result Post(const std::string& path, const std::string& body) {
    return Client().Post(path.c_str(), body, "application/json");
  }

  // A streamed completion: the whole SSE body.
  httplib::Result Stream(const std::string& body) {
    return Client().Post("/v1/completions", body, "application/json");
  }

  double Metric(const std::string& sample) {
    const std::string text = "\n" + front_->metrics().Render();
    const size_t at = text.find("\n" + sample + " ");  // a sample line, not # HELP
    if (at == std::string::npos) return 0;
    return std::stod(text.substr(at + sample.size() + 2));
  }

  // facet_http_requests_total moves once the response is written, which can
  // trail the client's read of it: wait a little for `value`.
  bool CountReaches(const std::string& sample, double value) {
    return WaitFor([&] { return Metric(sample) >= value; }, std::chrono::seconds(5)) && Metric(sample) == value;
  }

  void TearDown() override {
    if (front_) front_->Shutdown(std::chrono::seconds(5));
    if (engine_) {
      EXPECT_TRUE(engine_->WaitIdle(std::chrono::seconds(5))) << "requests leaked in the engine";
      EXPECT_EQ(engine_->Stats().pools.at(0).free_blocks, engine_->Stats().pools.at(0).total_blocks)
          << "KV blocks leaked";
    }
  }

  std::shared_ptr<FakeEngine> engine_;
  std::unique_ptr<HttpFront> front_;
};

TEST_F(HttpServerTest, CompletionReturnsTextAndUsage) {
  Start();
  auto r = Post("/v1/completions", R"({"model": "fake", "prompt": [2, 7], "max_tokens": 5, "seed": 3})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("application/json"));
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "fake");
  EXPECT_THAT(j["id"].get<std::string>(), HasSubstr("cmpl-"));
  EXPECT_EQ(j["choices"][0]["text"], ExpectedText(7, 5));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 2);
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  ASSERT_EQ(engine_->requests().size(), 1u);
  EXPECT_EQ(engine_->requests()[0].sampling.seed, 3u);
  EXPECT_EQ(engine_->requests()[0].sampling.max_tokens, 5);
}

TEST_F(HttpServerTest, SeveralChoicesAreSeparateRequests) {
  Start();
  auto r = Post("/v1/completions", R"({"prompt": [2, 7], "max_tokens": 3, "n": 3, "seed": 10})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], ExpectedText(7, 3));
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 9);
  ASSERT_EQ(engine_->requests().size(), 3u);
  std::set<uint64_t> seeds;
  for (const auto& q : engine_->requests()) seeds.insert(q.sampling.seed);
  EXPECT_EQ(seeds, (std::set<uint64_t>{10, 11, 12}));
}

TEST_F(HttpServerTest, StreamsServerSentEvents) {
  Start({.step_interval = std::chrono::milliseconds(10)});
  auto r = Stream(R"({"prompt": [2, 9], "max_tokens": 6, "stream": true,
                      "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/event-stream"));
  std::vector<std::string> data = SseData(r->body);
  ASSERT_GE(data.size(), 4u) << r->body;  // streamed in pieces, usage, [DONE]
  EXPECT_EQ(data.back(), "[DONE]");
  json usage = json::parse(data[data.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 6);
  std::string text;
  for (size_t i = 0; i + 2 < data.size(); ++i) {
    json chunk = json::parse(data[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    text += chunk["choices"][0]["text"].get<std::string>();
    const bool last = i + 3 == data.size();
    EXPECT_EQ(chunk["choices"][0]["finish_reason"].is_null(), !last) << data[i];
  }
  EXPECT_EQ(text, ExpectedText(9, 6));
}

TEST_F(HttpServerTest, RejectsBadInputWithOpenAiErrors) {
  Start({.max_live = 1});
  struct Case {
    std::string path, body;
    int status;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"/v1/completions", "{\"prompt\": [2, 3", 400, "not valid JSON"},
      {"/v1/completions", R"({"prompt": [2, 3], "max_tokens": "ten"})", 400, "must be an integer"},
      {"/v1/completions", R"({"prompt": [2, 3], "max_tokens": -1})", 400, "must be >= 1"},
      {"/v1/completions", R"({"model": "nope", "prompt": [2, 3]})", 404, "nope"},
      {"/v1/completions", R"({"prompt": [2, 99999]})", 400, "vocabulary"},
      {"/v1/completions", R"({"prompt": [2, 3], "max_tokens": 500})", 400, "exceeds the context"},
      {"/v1/completions", R"({"prompt": "text"})", 400, "tokenizer"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})", 400, "tokenizer"},
      {"/v1/nothing", "{}", 404, "no route"},
  };
  for (const Case& c : cases) {
    auto r = Post(c.path, c.body);
    ASSERT_TRUE(r) << c.body;
    EXPECT_EQ(r->status, c.status) << c.body << " -> " << r->body;
    json j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r->body;
    EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr(c.fragment)) << c.body;
    EXPECT_TRUE(j["error"].contains("type"));
  }
  auto get = Client().Get("/v1/completions");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
  // Oversized body: 413 with an error body, nothing submitted.
  const size_t before = engine_->requests().size();
  std::string big = R"({"prompt": ")" + std::string(9 << 20, 'a') + "\"}";
  auto r = Post("/v1/completions", big);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_THAT(r->body, HasSubstr("exceeds"));
  EXPECT_EQ(engine_->requests().size(), before);
  // The engine's queue is full (max_live 1): 429.
  engine_->SetPaused(true);
  std::thread holder([&] { Post("/v1/completions", R"({"prompt": [2, 3], "max_tokens": 2})"); });
  ASSERT_TRUE(WaitFor([&] { return engine_->live() == 1; }, std::chrono::seconds(5)));
  auto full = Post("/v1/completions", R"({"prompt": [2, 3], "max_tokens": 2})");
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 429) << full->body;
  engine_->SetPaused(false);
  holder.join();
  // Every status was counted.
  EXPECT_TRUE(CountReaches("facet_http_requests_total{endpoint=\"/v1/completions\",status=\"400\"}", 6));
  EXPECT_TRUE(CountReaches("facet_http_requests_total{endpoint=\"/v1/completions\",status=\"404\"}", 1));
  EXPECT_TRUE(CountReaches("facet_http_requests_total{endpoint=\"/v1/completions\",status=\"413\"}", 1));
  EXPECT_TRUE(CountReaches("facet_http_requests_total{endpoint=\"/v1/completions\",status=\"429\"}", 1));
  EXPECT_TRUE(CountReaches("facet_http_requests_total{endpoint=\"other\",status=\"404\"}", 1));
}

TEST_F(HttpServerTest, ClientClosingTheStreamCancelsTheRequest) {
  Start({.step_interval = std::chrono::milliseconds(20)});
  httplib::Client client = Client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"prompt": [2, 5], "max_tokens": 50, "stream": true})";
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  client.send(req, res, error);  // returns when the receiver says stop and the client closes
  EXPECT_EQ(error, httplib::Error::Canceled);
  ASSERT_TRUE(WaitFor([&] { return engine_->cancelled_ids().size() == 1; }, std::chrono::seconds(10)))
      << "the engine request was not cancelled";
  ASSERT_TRUE(engine_->WaitIdle(std::chrono::seconds(5)));
  const EngineStats s = engine_->Stats();
  EXPECT_EQ(s.pools.at(0).free_blocks, s.pools.at(0).total_blocks);
  EXPECT_TRUE(WaitFor([&] { return front_->active_requests() == 0; }, std::chrono::seconds(5)));
}

TEST_F(HttpServerTest, TwoHundredConcurrentStreams) {
  Start({.step_interval = std::chrono::milliseconds(2)});
  constexpr int kStreams = 200;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::vector<std::string> failures(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      const int32_t last = 10 + i;
      auto r = Stream(absl::StrCat(R"({"prompt": [2, )", last, R"(], "max_tokens": 8, "stream": true})"));
      if (!r || r->status != 200) {
        failures[i] = r ? r->body : "no response: " + httplib::to_string(r.error());
        return;
      }
      std::string text;
      for (const std::string& d : SseData(r->body)) {
        if (d == "[DONE]") continue;
        text += json::parse(d)["choices"][0]["text"].get<std::string>();
      }
      if (text == ExpectedText(last, 8)) ok++;
      else failures[i] = text;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kStreams);
  for (int i = 0; i < kStreams; ++i) EXPECT_EQ(failures[i], "") << "stream " << i;
  EXPECT_TRUE(CountReaches("facet_http_requests_total{endpoint=\"/v1/completions\",status=\"200\"}", kStreams));
}

TEST_F(HttpServerTest, MetricsMoveAsRequestsRun) {
  Start({.step_interval = std::chrono::milliseconds(5)});
  auto scrape = Client().Get("/metrics");
  ASSERT_TRUE(scrape);
  EXPECT_EQ(scrape->status, 200);
  EXPECT_THAT(scrape->get_header_value("Content-Type"), HasSubstr("text/plain"));
  EXPECT_THAT(scrape->body, HasSubstr("# TYPE facet_time_to_first_token_seconds histogram"));
  EXPECT_THAT(scrape->body, HasSubstr("facet_kv_blocks_used{model=\"fake\",pool=\"global\"} 0"));
  const double ttft_before = Metric("facet_time_to_first_token_seconds_count{model=\"fake\"}");
  for (int i = 0; i < 3; ++i) {
    auto r = Post("/v1/completions", R"({"prompt": [2, 3, 4], "max_tokens": 4})");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  EXPECT_EQ(Metric("facet_time_to_first_token_seconds_count{model=\"fake\"}"), ttft_before + 3);
  EXPECT_EQ(Metric("facet_inter_token_latency_seconds_count{model=\"fake\"}"), 9);  // 3 gaps each
  EXPECT_EQ(Metric("facet_prompt_tokens_total{model=\"fake\"}"), 9);
  EXPECT_EQ(Metric("facet_generation_tokens_total{model=\"fake\"}"), 12);
  EXPECT_TRUE(CountReaches("facet_http_requests_total{endpoint=\"/v1/completions\",status=\"200\"}", 3));
  EXPECT_GT(Metric("facet_engine_steps_total{model=\"fake\"}"), 0);
  // While a request holds KV blocks, the gauge shows them.
  engine_->SetPaused(true);
  std::thread t([&] { Post("/v1/completions", R"({"prompt": [2, 3], "max_tokens": 2})"); });
  EXPECT_TRUE(WaitFor([&] { return Metric("facet_requests_running{model=\"fake\"}") +
                                   Metric("facet_requests_waiting{model=\"fake\"}") >= 1; },
                      std::chrono::seconds(5)));
  EXPECT_EQ(Metric("facet_http_active_requests"), 1);
  engine_->SetPaused(false);
  t.join();
}

// With no step delay the engine outruns the reader and several tokens reach
// the front in one event, the first one included (the CI flake that the
// previous test hit): each request still counts completion_tokens - 1 gaps.
TEST_F(HttpServerTest, InterTokenCountHoldsWhenTokensArriveMerged) {
  Start({.step_interval = std::chrono::microseconds(0)});
  for (int i = 0; i < 4; ++i) {
    auto r = Post("/v1/completions", R"({"prompt": [2, 3, 4], "max_tokens": 16})");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  EXPECT_EQ(Metric("facet_time_to_first_token_seconds_count{model=\"fake\"}"), 4);
  EXPECT_EQ(Metric("facet_inter_token_latency_seconds_count{model=\"fake\"}"), 4 * 15);
  EXPECT_EQ(Metric("facet_generation_tokens_total{model=\"fake\"}"), 4 * 16);
}

TEST_F(HttpServerTest, ModelsAndHealth) {
  HttpOptions options;
  options.health.probe_reuse = std::chrono::milliseconds(0);
  options.health.probe_timeout = std::chrono::milliseconds(200);
  Start({}, options);
  auto models = Client().Get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "fake");
  auto health = Client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200) << health->body;
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  // A stuck engine: no step round trip, so not healthy.
  engine_->SetPaused(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  HttpOptions strict = options;
  strict.health.window = std::chrono::milliseconds(1);
  front_->Shutdown(std::chrono::seconds(1));
  auto registry = std::make_shared<ModelRegistry>();
  ASSERT_TRUE(registry->Add(ServedModel{FakeInfo(), engine_, nullptr}).ok());
  auto front = HttpFront::Start(strict, registry);
  ASSERT_TRUE(front.ok());
  front_ = *std::move(front);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  health = Client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503) << health->body;
  EXPECT_THAT(health->body, HasSubstr("probe"));
  engine_->SetPaused(false);
}

TEST_F(HttpServerTest, ShutdownEndsStreamsAndRefusesNewRequests) {
  Start({.step_interval = std::chrono::milliseconds(50)});
  std::string body;
  std::thread t([&] {
    auto r = Stream(R"({"prompt": [2, 3], "max_tokens": 60, "stream": true})");
    if (r) body = r->body;
  });
  ASSERT_TRUE(WaitFor([&] { return front_->active_requests() == 1; }, std::chrono::seconds(5)));
  std::thread down([&] { front_->Shutdown(std::chrono::milliseconds(300)); });
  // During the grace period new completions are refused; the stream goes on.
  ASSERT_TRUE(WaitFor([&] {
    auto r = Post("/v1/completions", R"({"prompt": [2, 3], "max_tokens": 2})");
    return r && r->status == 503 && r->body.find("shutting down") != std::string::npos;
  }, std::chrono::seconds(5)));
  down.join();
  t.join();
  EXPECT_THAT(body, HasSubstr("shutting down"));
  EXPECT_TRUE(engine_->WaitIdle(std::chrono::seconds(5)));
  EXPECT_EQ(engine_->cancelled_ids().size(), 1u);
}

}  // namespace
}  // namespace facet
