// facet-worker: one process per rank, launched by mpirun or srun (DESIGN.md §1).
//
//   mpirun -np 4 facet-worker --coordinator 10.0.0.1:50052
//
// World rank 0 gathers every rank's inventory and asks the coordinator for a
// plan (model, TP/EP, groups); the plan is broadcast, the world splits into
// engine groups, every rank loads its shard. Each group's rank 0 runs the
// engine loop as leader and streams with the coordinator over EngineLink;
// the other ranks follow its step broadcasts. Exit codes: 0 after a drain or
// a clean stop, 1 on errors, 3 when the step watchdog fired.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "facet/internal/engine.grpc.pb.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "parallel/communicator.h"
#include "worker/engine_wire.h"
#include "worker/follower.h"
#include "worker/leader.h"

namespace facet {
namespace {

using namespace std::chrono_literals;

struct WorkerOptions {
  std::string coordinator;
  std::string model;  // which of the coordinator's models (empty: its only one)
  int threads = 1;
  int connect_timeout_s = 60;
  int step_delay_ms = 0;  // testing: slows every step so a test can act mid-generation
};

// Fault-injection aid for the cluster tests: on a fast machine a tiny model
// finishes a 300-token stream in tens of milliseconds, too quickly for a test
// to kill a rank while a stream is provably mid-generation.
class DelayedExecutor : public StepExecutor {
 public:
  DelayedExecutor(std::unique_ptr<StepExecutor> inner, std::chrono::milliseconds delay)
      : inner_(std::move(inner)), delay_(delay) {}
  void OnAdd(SeqId id, int64_t prompt_len, int64_t max_new_tokens) override {
    inner_->OnAdd(id, prompt_len, max_new_tokens);
  }
  void OnAbort(SeqId id) override { inner_->OnAbort(id); }
  void OnSchedule() override { inner_->OnSchedule(); }
  void OnStepDone(const std::vector<SeqId>& finished) override { inner_->OnStepDone(finished); }
  absl::Status Forward(const StepBatch& batch, KvStore* kv, std::vector<float>* logits) override {
    std::this_thread::sleep_for(delay_);
    return inner_->Forward(batch, kv, logits);
  }
  bool samples() const override { return inner_->samples(); }
  absl::Status ForwardAndSample(const StepBatch& batch, KvStore* kv, std::vector<int32_t>* tokens) override {
    std::this_thread::sleep_for(delay_);
    return inner_->ForwardAndSample(batch, kv, tokens);
  }
  void Close() override { inner_->Close(); }

 private:
  std::unique_ptr<StepExecutor> inner_;
  std::chrono::milliseconds delay_;
};

internal::RankInventory Inventory(int rank) {
  internal::RankInventory inv;
  inv.set_rank(rank);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  inv.set_hostname(host);
  inv.set_device("cpu");
  inv.set_device_name("cpu");
  const int64_t pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const int64_t avail = sysconf(_SC_AVPHYS_PAGES);
  inv.set_memory_bytes(pages * page);
  inv.set_free_memory_bytes(avail * page);
  inv.set_cpu_cores(int32_t(std::thread::hardware_concurrency()));
  return inv;
}

// Every rank's serialized inventory, on every rank (an all-gather of padded bytes).
absl::StatusOr<std::vector<internal::RankInventory>> GatherInventory(parallel::Communicator& world) {
  const std::string mine = Inventory(world.rank()).SerializeAsString();
  int64_t len = int64_t(mine.size());
  RETURN_IF_ERROR(world.AllReduce(std::span<int64_t>(&len, 1), parallel::ReduceOp::kMax));
  std::string padded = mine;
  padded.resize(size_t(len) + 8);
  const int64_t n = int64_t(mine.size());
  memcpy(padded.data() + len, &n, 8);  // the real length, after the padding
  std::string all(padded.size() * size_t(world.size()), '\0');
  RETURN_IF_ERROR(world.AllGather(padded.data(), all.data(), padded.size(), parallel::DType::kBytes));
  std::vector<internal::RankInventory> out(world.size());
  for (int r = 0; r < world.size(); ++r) {
    const char* p = all.data() + size_t(r) * padded.size();
    int64_t real = 0;
    memcpy(&real, p + len, 8);
    if (!out[r].ParseFromArray(p, int(real))) return absl::DataLossError(absl::StrCat("rank ", r, "'s inventory"));
  }
  return out;
}

absl::StatusOr<internal::PlanReply> AskForPlan(const WorkerOptions& opt, const internal::PlanRequest& req) {
  auto channel = grpc::CreateChannel(opt.coordinator, grpc::InsecureChannelCredentials());
  auto stub = internal::EngineLink::NewStub(channel);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(opt.connect_timeout_s);
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    internal::PlanReply reply;
    grpc::Status st = stub->Plan(&ctx, req, &reply);
    if (st.ok()) return reply;
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE || std::chrono::steady_clock::now() > until) {
      return absl::Status(absl::StatusCode(st.error_code()),
                          absl::StrCat("coordinator ", opt.coordinator, ": ", st.error_message()));
    }
    std::this_thread::sleep_for(500ms);
  }
}

// Queues token events from the engine loop and sends them from its own
// thread, as many per LeaderMessage as are waiting (per-request order kept).
class EventBatcher {
 public:
  explicit EventBatcher(std::function<bool(internal::LeaderMessage&)> write)
      : write_(std::move(write)), thread_([this] { Run(); }) {}
  ~EventBatcher() { Close(); }
  void Push(internal::TokenEvent e) {
    std::lock_guard<std::mutex> l(mu_);
    pending_.push_back(std::move(e));
    cv_.notify_one();
  }
  // Sends what is queued, then stops the thread. Idempotent.
  void Close() {
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::vector<internal::TokenEvent> batch;
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [&] { return closed_ || !pending_.empty(); });
      if (pending_.empty()) return;  // closed and flushed
      batch.swap(pending_);
      l.unlock();
      internal::LeaderMessage m;
      for (internal::TokenEvent& e : batch) *m.mutable_events()->add_events() = std::move(e);
      batch.clear();
      write_(m);  // a broken stream: the coordinator fails these requests over
      l.lock();
    }
  }

  std::function<bool(internal::LeaderMessage&)> write_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<internal::TokenEvent> pending_;
  bool closed_ = false;
  std::thread thread_;
};

// The leader's side of EngineLink until the coordinator drains it or leaves.
int ServeLink(const WorkerOptions& opt, Engine& engine, const internal::Register& reg) {
  auto channel = grpc::CreateChannel(opt.coordinator, grpc::InsecureChannelCredentials());
  auto stub = internal::EngineLink::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->Connect(&ctx);
  std::mutex write_mu;
  auto write = [&](const internal::LeaderMessage& m) {
    std::lock_guard<std::mutex> l(write_mu);
    return stream->Write(m);
  };
  internal::LeaderMessage hello;
  *hello.mutable_register_() = reg;
  internal::CoordinatorMessage in;
  if (!write(hello) || !stream->Read(&in) || !in.has_register_ack() || !in.register_ack().accepted()) {
    FACET_LOG(ERROR) << "group " << reg.group_id() << ": the coordinator did not accept the registration: "
                     << (in.has_register_ack() ? in.register_ack().message() : "no answer");
    engine.Shutdown(false);
    return 1;
  }
  const auto interval = std::chrono::milliseconds(std::max(10, in.register_ack().stats_interval_ms()));
  std::atomic<bool> done{false};
  std::thread stats([&] {
    while (!done) {
      std::this_thread::sleep_for(interval);
      internal::LeaderMessage m;
      *m.mutable_stats() = ToStatsProto(engine.Stats());
      if (!write(m)) break;
    }
  });
  // Token events leave through one writer thread: the engine loop never
  // blocks on the network, and every event queued while a write is in flight
  // (a whole step's tokens, for every running request) goes in one message.
  EventBatcher events([&](internal::LeaderMessage& m) { return write(m); });
  int code = 2;  // the coordinator went away
  while (stream->Read(&in)) {
    if (in.has_submit()) {
      EngineRequest req = FromSubmitProto(in.submit());
      const std::string id = req.request_id;
      absl::Status st = engine.Submit(std::move(req), [&events, id](const TokenEvent& e) {
        events.Push(ToEventProto(id, e));
      });
      internal::LeaderMessage r;
      r.mutable_submit_result()->set_request_id(id);
      r.mutable_submit_result()->set_code(int32_t(st.code()));
      r.mutable_submit_result()->set_message(std::string(st.message()));
      write(r);
    } else if (in.has_cancel()) {
      engine.Cancel(in.cancel().request_id());
    } else if (in.has_drain()) {
      engine.Shutdown(in.drain().drain());
      code = 0;
      break;
    }
  }
  done = true;
  engine.Shutdown(false);  // no-op after a drain; else cancels and stops the followers
  events.Close();          // after the engine's last event: flushes them
  stats.join();
  {
    std::lock_guard<std::mutex> l(write_mu);
    stream->WritesDone();
  }
  ctx.TryCancel();
  stream->Finish();
  return code;
}

int Run(const WorkerOptions& opt) {
  auto world_or = parallel::CreateWorldCommunicator();
  if (!world_or.ok()) {
    std::cerr << "facet-worker: " << world_or.status() << "\n";
    return 1;
  }
  parallel::Communicator& world = **world_or;
  const int rank = world.rank();
  auto inv = GatherInventory(world);
  if (!inv.ok()) {
    std::cerr << "facet-worker rank " << rank << ": inventory: " << inv.status() << "\n";
    return 1;
  }

  // Rank 0 asks for the plan; everyone gets it, or the reason there is none.
  std::string plan_bytes;
  if (rank == 0) {
    internal::PlanRequest req;
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    req.set_job_id(absl::StrCat(host, ":", getpid()));
    req.set_protocol_version(1);
    req.set_model(opt.model);
    for (const auto& r : *inv) *req.add_ranks() = r;
    auto reply = AskForPlan(opt, req);
    if (reply.ok()) {
      plan_bytes = "1" + reply->SerializeAsString();
      std::cerr << "facet-worker: plan from " << opt.coordinator << ":\n" << reply->plan_text();
    } else {
      plan_bytes = "0" + reply.status().ToString();
    }
  }
  if (absl::Status st = BroadcastBytes(world, &plan_bytes); !st.ok()) {
    std::cerr << "facet-worker rank " << rank << ": plan broadcast: " << st << "\n";
    return 1;
  }
  if (plan_bytes.empty() || plan_bytes[0] != '1') {
    std::cerr << "facet-worker rank " << rank << ": no plan: " << plan_bytes.substr(1) << "\n";
    return 1;
  }
  internal::PlanReply plan;
  plan.ParseFromString(plan_bytes.substr(1));
  const std::string job_id = plan.job_id();

  int color = 1 << 20, key = rank, group_id = -1;
  for (const internal::GroupAssignment& g : plan.groups()) {
    for (int i = 0; i < g.ranks_size(); ++i) {
      if (g.ranks(i) == rank) {
        color = g.id();
        key = i;
        group_id = g.id();
      }
    }
  }
  auto group_or = world.Split(color, key);
  if (!group_or.ok()) {
    std::cerr << "facet-worker rank " << rank << ": split: " << group_or.status() << "\n";
    return 1;
  }
  if (group_id < 0) {
    std::cerr << "facet-worker rank " << rank << ": not in any group (unused rank); exiting\n";
    return 0;
  }
  parallel::Communicator* group = group_or->get();

  ThreadPool pool(opt.threads);
  Model::LoadOptions lo;
  if (plan.tp() > 1) lo.tp = group;
  if (plan.ep() > 1) lo.ep = group;
  auto model_or = Model::Load(plan.model_path(), &pool, lo);
  if (!model_or.ok()) {
    std::cerr << "facet-worker rank " << rank << ": " << model_or.status() << "\n";
    group->Abort(1);
    return 1;
  }
  std::shared_ptr<Model> model = std::move(*model_or);
  EngineOptions eo;
  const internal::EngineConfig& ec = plan.engine();
  if (ec.block_size() > 0) eo.block_size = ec.block_size();
  if (ec.kv_cache_bytes() > 0) eo.kv_cache_bytes = ec.kv_cache_bytes();
  if (ec.max_batch_tokens() > 0) eo.max_batch_tokens = ec.max_batch_tokens();
  if (ec.max_running() > 0) eo.max_running = ec.max_running();
  if (ec.max_waiting() > 0) eo.max_waiting = ec.max_waiting();
  eo.max_context = ec.max_context();

  if (group->rank() != 0) {
    Follower follower(model, eo, group);
    absl::Status st = follower.Run();
    if (!st.ok()) {
      std::cerr << "facet-worker rank " << rank << ": follower: " << st << "\n";
      group->Abort(1);
      return 1;
    }
    return 0;
  }

  std::shared_ptr<const Tokenizer> tok;
  if (!plan.tokenizer_path().empty()) {
    auto t = Tokenizer::FromJsonFile(plan.tokenizer_path());
    if (!t.ok()) {
      std::cerr << "facet-worker rank " << rank << ": tokenizer: " << t.status() << "\n";
      group->Abort(1);
      return 1;
    }
    tok = std::make_shared<Tokenizer>(std::move(*t));
  }
  LeaderOptions leader;
  leader.step_timeout = std::chrono::milliseconds(plan.step_timeout_ms());
  std::unique_ptr<StepExecutor> executor = MakeLeaderExecutor(model, group, leader);
  if (opt.step_delay_ms > 0) {
    executor = std::make_unique<DelayedExecutor>(std::move(executor),
                                                 std::chrono::milliseconds(opt.step_delay_ms));
  }
  auto engine = CreateEngine(model, tok, eo, std::move(executor));
  if (!engine.ok()) {
    std::cerr << "facet-worker rank " << rank << ": engine: " << engine.status() << "\n";
    group->Abort(1);
    return 1;
  }
  internal::Register reg;
  reg.set_group_id(absl::StrCat(job_id, "/g", group_id));
  reg.set_world_size(group->size());
  reg.set_protocol_version(1);
  reg.add_models()->set_name(plan.model());
  for (const internal::GroupAssignment& g : plan.groups()) {
    if (g.id() != group_id) continue;
    for (int r : g.ranks()) *reg.add_ranks() = (*inv)[r];
  }
  std::cerr << "facet-worker rank " << rank << ": leading group " << reg.group_id() << " (" << group->size()
            << " ranks, tp " << plan.tp() << ", ep " << plan.ep() << ")\n";
  return ServeLink(opt, **engine, reg);
}

}  // namespace
}  // namespace facet

int main(int argc, char** argv) {
  CLI::App app{"facet-worker — one rank of an engine group, launched by mpirun or srun"};
  facet::WorkerOptions opt;
  app.add_option("--coordinator", opt.coordinator, "coordinator's EngineLink address HOST:PORT")->required();
  app.add_option("--model", opt.model, "the coordinator's model this job serves (needed when it serves several)");
  app.add_option("--threads", opt.threads, "compute threads per rank")->capture_default_str();
  app.add_option("--connect-timeout", opt.connect_timeout_s, "seconds to wait for the coordinator")
      ->capture_default_str();
  app.add_option("--test-step-delay-ms", opt.step_delay_ms,
                 "testing only: sleep this long before every step on the leader");
  CLI11_PARSE(app, argc, argv);
  return facet::Run(opt);
}
