// RemoteEngine over a scripted leader, and the EngineLink server end to end
// over loopback gRPC with a hand-driven leader stream: registration adds a
// replica, submits and token events cross the link, a closed stream marks
// the group down and fails its requests with UNAVAILABLE; Plan answers with
// the shard plan or says why not; with several models, jobs and leaders are
// planned and routed by the model they name.
#include "coordinator/remote_engine.h"

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "coordinator/engine_link.h"
#include "worker/engine_wire.h"

namespace facet {
namespace {

using namespace std::chrono_literals;

struct Sunk {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<TokenEvent> events;
  EventSink Sink() {
    return [this](const TokenEvent& e) {
      std::lock_guard<std::mutex> l(mu);
      events.push_back(e);
      cv.notify_all();
    };
  }
  bool WaitFinished(std::chrono::milliseconds t = 10s) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, t, [&] { return !events.empty() && events.back().finished; });
  }
};

TEST(RemoteEngine, SubmitEventsAndLinkDown) {
  RemoteEngine* self = nullptr;
  std::vector<internal::CoordinatorMessage> sent;
  int32_t reply_code = 0;
  // The "leader" answers synchronously from inside Send, the way a fast one might.
  RemoteEngine engine("g0", "m", [&](const internal::CoordinatorMessage& m) {
    sent.push_back(m);
    if (m.has_submit()) {
      internal::LeaderMessage ev;
      internal::TokenEvent* e = ev.mutable_events()->add_events();
      e->set_request_id(m.submit().request_id());
      e->add_token_ids(7);
      self->OnMessage(ev);  // an event before the SubmitResult is kept
      internal::LeaderMessage r;
      r.mutable_submit_result()->set_request_id(m.submit().request_id());
      r.mutable_submit_result()->set_code(reply_code);
      r.mutable_submit_result()->set_message(reply_code ? "bad prompt" : "");
      self->OnMessage(r);
    }
    return true;
  }, 500ms);
  self = &engine;
  EngineRequest req;
  req.request_id = "a";
  req.prompt = {2, 3};
  req.sampling.seed = 9;
  req.resume_tokens = {5};
  Sunk a;
  ASSERT_TRUE(engine.Submit(req, a.Sink()).ok());
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].submit().sampling().seed(), 9u);
  EXPECT_EQ(sent[0].submit().resume_tokens_size(), 1);
  ASSERT_EQ(a.events.size(), 1u);
  EXPECT_EQ(a.events[0].ids, std::vector<int32_t>{7});

  reply_code = int32_t(absl::StatusCode::kInvalidArgument);
  req.request_id = "b";
  Sunk b;
  absl::Status st = engine.Submit(req, b.Sink());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "bad prompt");

  internal::LeaderMessage stats;
  stats.mutable_stats()->set_running(3);
  stats.mutable_stats()->set_steps(5);
  engine.OnMessage(stats);
  EXPECT_EQ(engine.Stats().running, 3);
  EXPECT_GT(engine.Stats().last_step_end.time_since_epoch().count(), 0);

  engine.OnLinkDown(absl::UnavailableError("gone"));
  ASSERT_TRUE(a.WaitFinished());
  EXPECT_EQ(a.events.back().finish, EngineFinish::kError);
  EXPECT_EQ(a.events.back().error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine.Submit(req, b.Sink()).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(engine.alive());
}

TEST(RemoteEngine, SilentLeaderTimesOut) {
  RemoteEngine engine("g1", "m", [](const internal::CoordinatorMessage&) { return true; }, 100ms);
  EngineRequest req;
  req.request_id = "x";
  req.prompt = {2};
  EXPECT_EQ(engine.Submit(req, [](const TokenEvent&) {}).code(), absl::StatusCode::kUnavailable);
  RemoteEngine broken("g2", "m", [](const internal::CoordinatorMessage&) { return false; });
  EXPECT_EQ(broken.Submit(req, [](const TokenEvent&) {}).code(), absl::StatusCode::kUnavailable);
}

// Serves `service` on a free loopback port (null when it cannot) and points
// `*stub` at it.
std::unique_ptr<grpc::Server> ServeOnLoopback(EngineLinkService* service,
                                              std::unique_ptr<internal::EngineLink::Stub>* stub) {
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(service);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (server == nullptr || port == 0) return nullptr;
  *stub = internal::EngineLink::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  return server;
}

class LinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cfg = LoadModelConfig(std::string(FACET_SOURCE_DIR) + "/tests/data/golden/gemma3");
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    EngineLinkOptions lo;
    lo.model_name = "gemma3";
    lo.model_path = "/models/gemma3";
    lo.config = *cfg;
    lo.engine.set_kv_cache_bytes(1 << 20);
    lo.stats_interval_ms = 50;
    lo.link_timeout_ms = link_timeout_ms_;
    replicas_ = std::make_shared<ReplicaSet>(ReplicaSetOptions{200ms});
    service_ = std::make_unique<EngineLinkService>(lo, replicas_);
    server_ = ServeOnLoopback(service_.get(), &stub_);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    replicas_->Shutdown(false);
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }
  std::shared_ptr<ReplicaSet> replicas_;
  std::unique_ptr<EngineLinkService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<internal::EngineLink::Stub> stub_;
  int32_t link_timeout_ms_ = 0;  // never, unless a test says otherwise
};

class SilentLinkTest : public LinkTest {
 protected:
  void SetUp() override {
    link_timeout_ms_ = 400;
    LinkTest::SetUp();
  }
};

TEST_F(LinkTest, PlanAnswersOrExplains) {
  internal::PlanRequest req;
  req.set_job_id("job1");
  req.set_protocol_version(1);
  for (int r = 0; r < 4; ++r) {
    internal::RankInventory* inv = req.add_ranks();
    inv->set_rank(r);
    inv->set_memory_bytes(int64_t(8) << 30);
  }
  grpc::ClientContext ctx;
  internal::PlanReply reply;
  ASSERT_TRUE(stub_->Plan(&ctx, req, &reply).ok());
  EXPECT_EQ(reply.model_path(), "/models/gemma3");
  EXPECT_EQ(reply.groups_size(), 4);  // a tiny model: four single-rank replicas
  EXPECT_EQ(reply.job_id(), "job1");
  EXPECT_EQ(reply.engine().kv_cache_bytes(), 1 << 20);

  req.mutable_ranks(2)->set_memory_bytes(0);
  grpc::ClientContext ctx2;
  grpc::Status st = stub_->Plan(&ctx2, req, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("rank 2"), std::string::npos) << st.error_message();
  req.set_protocol_version(7);
  grpc::ClientContext ctx3;
  EXPECT_EQ(stub_->Plan(&ctx3, req, &reply).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(LinkTest, LeaderStreamServesAndItsLossMarksTheGroupDown) {
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  internal::LeaderMessage hello;
  hello.mutable_register_()->set_group_id("job/g0");
  hello.mutable_register_()->set_protocol_version(1);
  ASSERT_TRUE(stream->Write(hello));
  internal::CoordinatorMessage in;
  ASSERT_TRUE(stream->Read(&in));
  ASSERT_TRUE(in.register_ack().accepted());
  for (int i = 0; i < 100 && replicas_->live_replicas() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(replicas_->live_replicas(), 1);

  // A client request through the ReplicaSet reaches this "leader".
  Sunk client;
  absl::Status submitted;
  std::thread submit([&] {
    EngineRequest req;
    req.request_id = "c1";
    req.prompt = {2, 5, 6};
    req.sampling.max_tokens = 10;
    submitted = replicas_->Submit(req, client.Sink());
  });
  ASSERT_TRUE(stream->Read(&in));
  ASSERT_TRUE(in.has_submit());
  EXPECT_EQ(in.submit().request_id(), "c1");
  EXPECT_EQ(in.submit().prompt_size(), 3);
  internal::LeaderMessage out;
  out.mutable_submit_result()->set_request_id("c1");
  ASSERT_TRUE(stream->Write(out));
  submit.join();
  ASSERT_TRUE(submitted.ok()) << submitted;
  out.Clear();
  internal::TokenEvent* e = out.mutable_events()->add_events();
  e->set_request_id("c1");
  e->add_token_ids(42);
  e->add_token_ids(43);
  ASSERT_TRUE(stream->Write(out));
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> l(client.mu);
      if (!client.events.empty()) break;
    }
    std::this_thread::sleep_for(5ms);
  }
  {
    std::lock_guard<std::mutex> l(client.mu);
    ASSERT_EQ(client.events.size(), 1u);
    EXPECT_EQ(client.events[0].ids, (std::vector<int32_t>{42, 43}));
  }

  // The leader dies: no other group, so after the failover wait the client
  // gets UNAVAILABLE (with another group it would continue, failover_test).
  ctx.TryCancel();
  ASSERT_TRUE(client.WaitFinished());
  EXPECT_EQ(client.events.back().error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(replicas_->live_replicas(), 0);
}

TEST_F(SilentLinkTest, SilentLeaderIsDropped) {
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  internal::LeaderMessage hello;
  hello.mutable_register_()->set_group_id("job/g1");
  hello.mutable_register_()->set_protocol_version(1);
  ASSERT_TRUE(stream->Write(hello));
  internal::CoordinatorMessage in;
  ASSERT_TRUE(stream->Read(&in));
  ASSERT_TRUE(in.register_ack().accepted());
  EXPECT_EQ(in.register_ack().stats_interval_ms(), 50);
  // Alive while it reports; then it stops (a SIGSTOPped leader keeps its socket open).
  for (int i = 0; i < 12; ++i) {
    internal::LeaderMessage s;
    s.mutable_stats()->set_steps(i);
    ASSERT_TRUE(stream->Write(s));
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(replicas_->live_replicas(), 1) << "a reporting leader is healthy";
  const auto t0 = std::chrono::steady_clock::now();
  while (replicas_->live_replicas() != 0 && std::chrono::steady_clock::now() - t0 < 5s) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(replicas_->live_replicas(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_FALSE(stream->Read(&in)) << "the coordinator closed the stream";
}

TEST_F(LinkTest, FirstMessageMustRegister) {
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  internal::LeaderMessage m;
  m.mutable_stats()->set_running(1);
  ASSERT_TRUE(stream->Write(m));
  stream->WritesDone();
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(replicas_->live_replicas(), 0);
}

// One service, two models: Plan and Register pick the model the job names.
class MultiModelLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<ModelLink> links;
    for (const char* name : {"gemma3", "gemma2"}) {
      auto cfg = LoadModelConfig(std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name);
      ASSERT_TRUE(cfg.ok()) << cfg.status();
      EngineLinkOptions lo;
      lo.model_name = name;
      lo.model_path = std::string("/models/") + name;
      lo.config = *cfg;
      lo.stats_interval_ms = 50;
      lo.link_timeout_ms = 0;
      links.push_back(ModelLink{lo, std::make_shared<ReplicaSet>(ReplicaSetOptions{200ms})});
    }
    links_ = links;
    service_ = std::make_unique<EngineLinkService>(std::move(links));
    server_ = ServeOnLoopback(service_.get(), &stub_);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    for (ModelLink& m : links_) m.replicas->Shutdown(false);
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }
  grpc::Status Plan(const std::string& model, internal::PlanReply* reply) {
    internal::PlanRequest req;
    req.set_job_id("job-" + model);
    req.set_protocol_version(1);
    req.set_model(model);
    internal::RankInventory* inv = req.add_ranks();
    inv->set_rank(0);
    inv->set_memory_bytes(int64_t(8) << 30);
    grpc::ClientContext ctx;
    return stub_->Plan(&ctx, req, reply);
  }
  std::vector<ModelLink> links_;
  std::unique_ptr<EngineLinkService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<internal::EngineLink::Stub> stub_;
};

TEST_F(MultiModelLinkTest, PlanIsForTheNamedModel) {
  internal::PlanReply reply;
  ASSERT_TRUE(Plan("gemma2", &reply).ok());
  EXPECT_EQ(reply.model(), "gemma2");
  EXPECT_EQ(reply.model_path(), "/models/gemma2");
  ASSERT_TRUE(Plan("gemma3", &reply).ok());
  EXPECT_EQ(reply.model_path(), "/models/gemma3");
  grpc::Status st = Plan("", &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("--model"), std::string::npos) << st.error_message();
  st = Plan("gemma9", &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("\"gemma3\", \"gemma2\""), std::string::npos) << st.error_message();
}

TEST_F(MultiModelLinkTest, LeadersJoinTheirModelsReplicas) {
  auto connect = [&](const std::string& group, const std::string& model, grpc::ClientContext* ctx,
                     bool* accepted) {
    auto stream = stub_->Connect(ctx);
    internal::LeaderMessage hello;
    hello.mutable_register_()->set_group_id(group);
    hello.mutable_register_()->set_protocol_version(1);
    if (!model.empty()) hello.mutable_register_()->add_models()->set_name(model);
    EXPECT_TRUE(stream->Write(hello));
    internal::CoordinatorMessage in;
    *accepted = stream->Read(&in) && in.register_ack().accepted();
    return stream;
  };
  grpc::ClientContext c2, c3, c_unknown, c_none;
  bool ok2 = false, ok3 = false, ok_unknown = true, ok_none = true;
  auto s2 = connect("job/g0", "gemma2", &c2, &ok2);
  auto s3 = connect("job/g1", "gemma3", &c3, &ok3);
  auto su = connect("job/g2", "gemma9", &c_unknown, &ok_unknown);
  auto sn = connect("job/g3", "", &c_none, &ok_none);
  EXPECT_TRUE(ok2);
  EXPECT_TRUE(ok3);
  EXPECT_FALSE(ok_unknown);
  EXPECT_FALSE(ok_none) << "several models: a leader must say which";
  EXPECT_EQ(su->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(sn->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  for (int i = 0; i < 200 && (links_[0].replicas->live_replicas() == 0 || links_[1].replicas->live_replicas() == 0);
       ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(links_[0].replicas->live_replicas(), 1);  // gemma3
  EXPECT_EQ(links_[1].replicas->live_replicas(), 1);  // gemma2
  // A gemma2 request reaches the gemma2 leader only.
  Sunk client;
  absl::Status submitted;
  std::thread submit([&] {
    EngineRequest req;
    req.request_id = "r2";
    req.prompt = {2, 5};
    req.sampling.max_tokens = 4;
    submitted = links_[1].replicas->Submit(req, client.Sink());
  });
  internal::CoordinatorMessage in;
  ASSERT_TRUE(s2->Read(&in));
  ASSERT_TRUE(in.has_submit());
  EXPECT_EQ(in.submit().request_id(), "r2");
  EXPECT_EQ(in.submit().model(), "gemma2");
  internal::LeaderMessage out;
  out.mutable_submit_result()->set_request_id("r2");
  ASSERT_TRUE(s2->Write(out));
  submit.join();
  EXPECT_TRUE(submitted.ok()) << submitted;
  out.Clear();
  internal::TokenEvent* e = out.mutable_events()->add_events();
  e->set_request_id("r2");
  e->add_token_ids(9);
  e->set_finished(true);
  e->set_finish_reason(v1::FINISH_REASON_LENGTH);
  ASSERT_TRUE(s2->Write(out));
  ASSERT_TRUE(client.WaitFinished());
  EXPECT_EQ(client.events.back().ids, std::vector<int32_t>{9});
  c2.TryCancel();
  c3.TryCancel();
}

}  // namespace
}  // namespace facet
