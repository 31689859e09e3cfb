#include "coordinator/http_server.h"

#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "coordinator/engine_call.h"
#include "coordinator/http_openai.h"

namespace facet {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void SetError(httplib::Response& res, int status, std::string_view message) {
  res.status = status;
  res.set_content(ErrorJson(status, message).dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

void SetError(httplib::Response& res, const absl::Status& s) {
  SetError(res, HttpStatusOf(s.code()), std::string(s.message()));
}

// Endpoint label of the request counter: known routes only (bounded cardinality).
std::string EndpointLabel(const std::string& path) {
  for (const char* known : {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}) {
    if (path == known) return path;
  }
  return "other";
}

// Debian's compiled cpp-httplib listens with a backlog of 5: a burst of
// clients (200 streams opening at once) overflows it and connections fail.
// Linux lets listen() be called again to raise the backlog, so find our
// listening socket by its port and do that.
void RaiseListenBacklog(int port) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') continue;
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (getsockopt(int(fd), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t addr_len = sizeof(addr);
    if (getsockname(int(fd), reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0) continue;
    int bound = -1;
    if (addr.ss_family == AF_INET) bound = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) bound = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    if (bound == port) listen(int(fd), SOMAXCONN);
  }
  closedir(dir);
}

class ActiveGuard {
 public:
  explicit ActiveGuard(std::shared_ptr<std::atomic<int64_t>> n) : n_(std::move(n)) { ++*n_; }
  ~ActiveGuard() { --*n_; }

 private:
  std::shared_ptr<std::atomic<int64_t>> n_;
};

}  // namespace

struct HttpFront::Impl {
  HttpOptions options;
  std::shared_ptr<const ModelRegistry> registry;
  std::shared_ptr<std::atomic<int64_t>> active;
  HealthChecker health;
  std::atomic<bool> admitting{true};
  std::atomic<bool> cancel_streams{false};  // Shutdown's grace has passed
  Counter* requests = nullptr;
  Counter* prompt_tokens = nullptr;
  Counter* generation_tokens = nullptr;
  Histogram* ttft = nullptr;
  Histogram* itl = nullptr;
  Histogram* e2e = nullptr;

  // One completion request: its n choices, each one engine request.
  struct Completion {
    OpenAiRequest request;
    const ServedModel* model = nullptr;
    std::string id;
    int64_t created = 0;
    Clock::time_point start;
    std::vector<std::unique_ptr<EngineCall>> calls;
    std::vector<std::string> texts;                // per choice (non-streaming)
    std::vector<EngineFinish> finishes;            // per choice
    std::vector<Clock::time_point> last_token;     // per choice; {} before the first
    int64_t prompt_tokens = 0, completion_tokens = 0;
    std::unique_ptr<ActiveGuard> active;
  };

  Impl(const HttpOptions& o, std::shared_ptr<const ModelRegistry> r,
       std::shared_ptr<std::atomic<int64_t>> a)
      : options(o), registry(std::move(r)), active(std::move(a)), health(*registry, o.health) {}

  void AddMetrics(MetricsRegistry& m);
  void Complete(bool chat, const httplib::Request& req, httplib::Response& res);
  absl::StatusOr<std::shared_ptr<Completion>> Submit(bool chat, std::string_view body);
  void Observe(Completion& c, size_t i, const TokenEvent& e);
  void CancelAll(Completion& c);
  void Reply(Completion& c, httplib::Response& res);
  bool Stream(Completion& c, httplib::DataSink& sink);
  void Models(httplib::Response& res);
  void Health(httplib::Response& res);
};

void HttpFront::Impl::AddMetrics(MetricsRegistry& m) {
  requests = &m.AddCounter("facet_http_requests_total", "HTTP requests by endpoint and status code",
                           {"endpoint", "status"});
  prompt_tokens = &m.AddCounter("facet_prompt_tokens_total", "Prompt tokens of finished requests", {"model"});
  generation_tokens =
      &m.AddCounter("facet_generation_tokens_total", "Generated tokens of finished requests", {"model"});
  const std::vector<double> latency = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  ttft = &m.AddHistogram("facet_time_to_first_token_seconds",
                         "From the request's arrival to its first token, at the front", {"model"}, latency);
  itl = &m.AddHistogram("facet_inter_token_latency_seconds",
                        "Gap between successive tokens of a request, at the front", {"model"},
                        {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5});
  e2e = &m.AddHistogram("facet_request_duration_seconds", "From arrival to the last token", {"model"},
                        latency);
  auto each_model = [reg = registry](auto fill) {
    return [reg, fill](std::vector<std::pair<LabelValues, double>>* out) {
      for (const auto& model : reg->models()) fill(*model, model->engine->Stats(), out);
    };
  };
  m.AddGauge("facet_requests_running", "Requests in the engine's running batch", {"model"},
             each_model([](const ServedModel& sm, const EngineStats& s, auto* out) {
               out->push_back({{sm.info.name}, double(s.running)});
             }));
  m.AddGauge("facet_requests_waiting", "Requests queued in the engine", {"model"},
             each_model([](const ServedModel& sm, const EngineStats& s, auto* out) {
               out->push_back({{sm.info.name}, double(s.waiting)});
             }));
  m.AddGauge("facet_kv_blocks_used", "KV cache blocks in use, per pool", {"model", "pool"},
             each_model([](const ServedModel& sm, const EngineStats& s, auto* out) {
               for (const KvPoolStats& p : s.pools) {
                 out->push_back({{sm.info.name, p.name}, double(p.total_blocks - p.free_blocks)});
               }
             }));
  m.AddGauge("facet_kv_blocks_total", "KV cache blocks, per pool", {"model", "pool"},
             each_model([](const ServedModel& sm, const EngineStats& s, auto* out) {
               for (const KvPoolStats& p : s.pools) out->push_back({{sm.info.name, p.name}, double(p.total_blocks)});
             }));
  m.AddGauge("facet_engine_steps_total", "Engine steps since start", {"model"},
             each_model([](const ServedModel& sm, const EngineStats& s, auto* out) {
               out->push_back({{sm.info.name}, double(s.steps)});
             }), "counter");
  m.AddGauge("facet_engine_step_seconds_total",
             "Seconds in the execute phase (forward) of all engine steps; step time = "
             "rate(this) / rate(facet_engine_steps_total)",
             {"model"}, each_model([](const ServedModel& sm, const EngineStats& s, auto* out) {
               out->push_back({{sm.info.name}, s.step_seconds_total});
             }), "counter");
  m.AddGauge("facet_engine_last_step_seconds", "Execute time of the latest engine step", {"model"},
             each_model([](const ServedModel& sm, const EngineStats& s, auto* out) {
               out->push_back({{sm.info.name}, s.last_step_seconds});
             }));
  m.AddGauge("facet_http_active_requests", "Completion requests being served over HTTP", {},
             [a = active](std::vector<std::pair<LabelValues, double>>* out) {
               out->push_back({{}, double(a->load())});
             });
}

absl::StatusOr<std::shared_ptr<HttpFront::Impl::Completion>> HttpFront::Impl::Submit(
    bool chat, std::string_view body) {
  if (!admitting) return absl::UnavailableError("the server is shutting down");
  auto parsed = chat ? ParseChatCompletion(body) : ParseCompletion(body);
  if (!parsed.ok()) return parsed.status();
  auto model = registry->Find(parsed->model);
  if (!model.ok()) return model.status();
  auto built = chat ? BuildChatRequest(parsed->chat_request, **model, options.defaults)
                    : BuildGenerateRequest(parsed->generate_request, **model, options.defaults);
  if (!built.ok()) return built.status();
  if (parsed->ignore_eos) built->sampling.stop_token_ids.clear();

  auto c = std::make_shared<Completion>();
  c->active = std::make_unique<ActiveGuard>(active);
  c->request = *std::move(parsed);
  c->model = *model;
  c->id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", built->request_id);
  c->created = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch()).count();
  const int n = c->request.n;
  c->texts.resize(n);
  c->finishes.assign(n, EngineFinish::kNone);
  c->last_token.resize(n);
  for (int i = 0; i < n; ++i) {
    EngineRequest r = *built;
    if (i > 0) {
      // Choice i: its own engine request, the next seed (distinct samples, reproducible).
      r.request_id = absl::StrCat(built->request_id, "-", i);
      r.sampling.seed = built->sampling.seed + uint64_t(i);
    }
    auto call = EngineCall::Submit(*c->model->engine, std::move(r));
    if (!call.ok()) {
      CancelAll(*c);
      return call.status();
    }
    c->calls.push_back(*std::move(call));
  }
  return c;
}

void HttpFront::Impl::Observe(Completion& c, size_t i, const TokenEvent& e) {
  const auto now = Clock::now();
  const LabelValues model = {c.model->info.name};
  // Latencies of the first choice only: with n > 1, a non-streaming reply
  // reads the choices one after another, so later ones arrive merged.
  if (i == 0 && !e.ids.empty()) {
    if (c.last_token[0] == Clock::time_point{}) {
      ttft->Observe(model, Seconds(now - c.start));
      // Tokens merged into the first event arrived with it: zero gaps, so
      // every request counts completion_tokens - 1 inter-token latencies.
      for (size_t k = 1; k < e.ids.size(); ++k) itl->Observe(model, 0.0);
    } else {
      // Tokens that arrive merged in one event share its gap evenly.
      const double gap = Seconds(now - c.last_token[0]) / double(e.ids.size());
      for (size_t k = 0; k < e.ids.size(); ++k) itl->Observe(model, gap);
    }
    c.last_token[0] = now;
  }
  if (e.finished) {
    prompt_tokens->Inc(model, double(e.prompt_tokens));
    generation_tokens->Inc(model, double(e.completion_tokens));
    if (i == 0) e2e->Observe(model, Seconds(now - c.start));
    if (i == 0 || c.prompt_tokens == 0) c.prompt_tokens = e.prompt_tokens;
    c.completion_tokens += e.completion_tokens;
    c.finishes[i] = e.finish;
  }
}

void HttpFront::Impl::CancelAll(Completion& c) {
  for (auto& call : c.calls) call->CancelAndWait(options.cancel_grace);
}

void HttpFront::Impl::Reply(Completion& c, httplib::Response& res) {
  for (size_t i = 0; i < c.calls.size(); ++i) {
    EngineCall& call = *c.calls[i];
    while (!call.done()) {
      if (cancel_streams) {
        CancelAll(c);
        return SetError(res, 503, "the server is shutting down");
      }
      std::optional<TokenEvent> e = call.Next(options.poll_interval);
      if (!e) continue;
      Observe(c, i, *e);
      c.texts[i] += e->text;
      if (!e->finished) continue;
      const absl::Status status = FinishStatus(*e, call.id());
      if (!status.ok()) {
        CancelAll(c);
        return SetError(res, status);
      }
    }
  }
  json choices = json::array();
  for (size_t i = 0; i < c.calls.size(); ++i) {
    json choice = {{"index", i}, {"finish_reason", OpenAiFinishReason(c.finishes[i])}, {"logprobs", nullptr}};
    if (c.request.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.texts[i]}};
    } else {
      choice["text"] = c.texts[i];
    }
    choices.push_back(choice);
  }
  const json body = {{"id", c.id},
                     {"object", c.request.chat ? "chat.completion" : "text_completion"},
                     {"created", c.created},
                     {"model", c.model->info.name},
                     {"choices", choices},
                     {"usage", UsageJson(c.prompt_tokens, c.completion_tokens)}};
  res.status = 200;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

bool HttpFront::Impl::Stream(Completion& c, httplib::DataSink& sink) {
  auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
  auto gone = [&] {  // the client left: free the engine's work before the connection goes
    CancelAll(c);
    return false;
  };
  const size_t n = c.calls.size();
  std::vector<bool> first(n, true);
  const auto poll = n == 1 ? options.poll_interval : std::chrono::milliseconds(2);
  auto last_write = Clock::now();
  for (size_t remaining = n; remaining > 0;) {
    if (cancel_streams) {
      CancelAll(c);
      write(SseEvent(ErrorJson(503, "the server is shutting down")));
      write("data: [DONE]\n\n");
      sink.done();
      return true;
    }
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
      EngineCall& call = *c.calls[i];
      if (call.done()) continue;
      std::optional<TokenEvent> e = call.Next(poll);
      if (!e) continue;
      any = true;
      Observe(c, i, *e);
      if (e->finished) {
        --remaining;
        const absl::Status status = FinishStatus(*e, call.id());
        if (!status.ok()) {
          CancelAll(c);
          write(SseEvent(ErrorJson(HttpStatusOf(status.code()), std::string(status.message()))));
          write("data: [DONE]\n\n");
          sink.done();
          return true;
        }
      }
      if (e->text.empty() && !e->finished && !first[i]) continue;
      if (!write(SseEvent(StreamChunk(c.request, c.id, c.created, c.model->info.name, int(i), e->text,
                                      first[i], e->finished ? e->finish : EngineFinish::kNone)))) {
        return gone();
      }
      first[i] = false;
      last_write = Clock::now();
    }
    if (!any && Clock::now() - last_write > options.keepalive) {
      if (!write(": keep-alive\n\n")) return gone();
      last_write = Clock::now();
    }
  }
  if (c.request.include_usage) {
    const json usage = {{"id", c.id},
                        {"object", c.request.chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", c.created},
                        {"model", c.model->info.name},
                        {"choices", json::array()},
                        {"usage", UsageJson(c.prompt_tokens, c.completion_tokens)}};
    if (!write(SseEvent(usage))) return false;
  }
  if (!write("data: [DONE]\n\n")) return false;
  sink.done();
  return true;
}

void HttpFront::Impl::Complete(bool chat, const httplib::Request& req, httplib::Response& res) {
  const auto start = Clock::now();
  auto submitted = Submit(chat, req.body);
  if (!submitted.ok()) return SetError(res, submitted.status());
  std::shared_ptr<Completion> c = *std::move(submitted);
  c->start = start;
  if (!c->request.stream) return Reply(*c, res);
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [this, c](size_t, httplib::DataSink& sink) { return Stream(*c, sink); },
      // Runs whether or not the provider ran (e.g. the headers could not be sent).
      [this, c](bool) { CancelAll(*c); });
}

void HttpFront::Impl::Models(httplib::Response& res) {
  json data = json::array();
  for (const auto& m : registry->models()) {
    data.push_back({{"id", m->info.name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "facet"},
                    {"family", std::string(ModelFamilyName(m->info.family))},
                    {"context_length", m->info.context_length}});
  }
  res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
}

void HttpFront::Impl::Health(httplib::Response& res) {
  std::vector<const ServedModel*> models;
  for (const auto& m : registry->models()) models.push_back(m.get());
  HealthVerdict v;
  if (!admitting) {
    v.message = "shutting down";
  } else {
    v = health.CheckAll(models);
  }
  res.status = v.serving ? 200 : 503;
  json body = {{"status", v.serving ? "ok" : "unavailable"}, {"message", v.message}};
  if (v.seconds_since_last_step >= 0) body["seconds_since_last_step"] = v.seconds_since_last_step;
  res.set_content(body.dump(), "application/json");
}

absl::StatusOr<std::unique_ptr<HttpFront>> HttpFront::Start(
    const HttpOptions& options, std::shared_ptr<const ModelRegistry> registry) {
  if (!registry || registry->models().empty()) return absl::InvalidArgumentError("no model to serve");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP port ", options.port, " is outside [0, 65535]"));
  }
  if (options.threads < 1) return absl::InvalidArgumentError("HTTP threads must be >= 1");
  // A client that leaves makes the next write fail with EPIPE; without this
  // the process would die of SIGPIPE (cpp-httplib sends without MSG_NOSIGNAL).
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<HttpFront> front(new HttpFront());
  front->impl_ = std::make_unique<Impl>(options, std::move(registry), front->active_);
  front->metrics_ = std::make_unique<MetricsRegistry>();
  Impl* impl = front->impl_.get();
  impl->AddMetrics(*front->metrics_);
  front->host_ = options.host;
  front->server_ = std::make_unique<httplib::Server>();
  httplib::Server& s = *front->server_;
  const int threads = options.threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  s.set_tcp_nodelay(true);  // SSE chunks are small; Nagle would hold them back
  s.set_payload_max_length(options.max_body_bytes);
  s.set_keep_alive_max_count(1000);

  s.Post("/v1/chat/completions", [impl](const httplib::Request& q, httplib::Response& r) {
    impl->Complete(/*chat=*/true, q, r);
  });
  s.Post("/v1/completions", [impl](const httplib::Request& q, httplib::Response& r) {
    impl->Complete(/*chat=*/false, q, r);
  });
  for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
    s.Get(path, [](const httplib::Request& q, httplib::Response& r) {
      SetError(r, 405, absl::StrCat("use POST for ", q.path));
    });
  }
  s.Get("/v1/models", [impl](const httplib::Request&, httplib::Response& r) { impl->Models(r); });
  s.Get("/health", [impl](const httplib::Request&, httplib::Response& r) { impl->Health(r); });
  MetricsRegistry* metrics = front->metrics_.get();
  s.Get("/metrics", [metrics](const httplib::Request&, httplib::Response& r) {
    r.set_content(metrics->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const size_t max_body = options.max_body_bytes;
  s.set_error_handler([max_body](const httplib::Request& q, httplib::Response& r) {
    if (!r.body.empty()) return;  // our own error body already
    if (r.status == 404) return SetError(r, 404, absl::StrCat("no route for ", q.method, " ", q.path));
    if (r.status == 413) {
      return SetError(r, 413, absl::StrCat("the request body exceeds ", max_body, " bytes"));
    }
    SetError(r, r.status, absl::StrCat("HTTP error ", r.status));
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& r, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    SetError(r, 500, absl::StrCat("internal error: ", what));
  });
  s.set_logger([impl](const httplib::Request& q, const httplib::Response& r) {
    impl->requests->Inc({EndpointLabel(q.path), std::to_string(r.status)});
  });

  if (options.port == 0) {
    front->port_ = s.bind_to_any_port(options.host);
  } else {
    front->port_ = s.bind_to_port(options.host, options.port) ? options.port : -1;
  }
  if (front->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", options.host, ":",
                                               options.port, " (address in use or not local?)"));
  }
  RaiseListenBacklog(front->port_);
  front->listener_ = std::thread([&s] { s.listen_after_bind(); });
  return front;
}

std::string HttpFront::address() const {
  const bool ipv6 = host_.find(':') != std::string::npos && host_.front() != '[';
  return ipv6 ? absl::StrCat("[", host_, "]:", port_) : absl::StrCat(host_, ":", port_);
}

void HttpFront::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_.exchange(true)) return;
  impl_->admitting = false;
  const auto end = Clock::now() + grace;
  while (active_->load() > 0 && Clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->cancel_streams = true;
  server_->stop();  // joins the connection threads: every handler has returned
  if (listener_.joinable()) listener_.join();
}

HttpFront::~HttpFront() {
  if (server_) Shutdown(std::chrono::milliseconds(0));
}

}  // namespace facet
