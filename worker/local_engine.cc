// CreateLocalEngine: one model replica in this process. A loop thread runs
// schedule (Scheduler, pure) → execute (one Model::ForwardBatch over every
// scheduled sequence) → sample → update (stream events, finish, free).
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "worker/engine.h"
#include "worker/executor.h"
#include "worker/kv_blocks.h"
#include "worker/paged_kv.h"
#include "worker/scheduler.h"

namespace facet {

const char* EngineFinishName(EngineFinish f) {
  switch (f) {
    case EngineFinish::kNone: return "";
    case EngineFinish::kStop: return "stop";
    case EngineFinish::kLength: return "length";
    case EngineFinish::kCancelled: return "cancelled";
    case EngineFinish::kDeadline: return "deadline";
    case EngineFinish::kError: return "error";
  }
  return "";
}

namespace {

using Clock = std::chrono::steady_clock;

// Text that is safe to stream: stop strings are cut out, and a tail that
// could still become a stop string is held back until it cannot.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `piece`; returns the newly safe text. *stopped when a stop string
  // appeared (the text before it is returned, the rest dropped).
  std::string Push(const std::string& piece, bool* stopped) {
    text_ += piece;
    size_t cut = std::string::npos;
    for (const std::string& s : stops_) {
      if (s.empty()) continue;
      const size_t from = emitted_ > s.size() ? emitted_ - s.size() : 0;
      const size_t at = text_.find(s, from);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      *stopped = true;
      return Take(std::max(cut, emitted_));
    }
    // Hold back the longest suffix that is a proper prefix of a stop string.
    size_t hold = 0;
    for (const std::string& s : stops_) {
      for (size_t n = std::min(s.size() - 1, text_.size()); n > hold; --n) {
        if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
          hold = n;
          break;
        }
      }
    }
    return Take(std::max(text_.size() - hold, emitted_));
  }
  std::string Flush() { return Take(text_.size()); }

 private:
  std::string Take(size_t end) {
    std::string out = text_.substr(emitted_, end - emitted_);
    emitted_ = end;
    return out;
  }
  std::vector<std::string> stops_;
  std::string text_;
  size_t emitted_ = 0;
};

struct Sequence {
  SeqId id;
  EngineRequest req;
  EventSink sink;
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_len;
  int64_t generated = 0;
  Sampler sampler;
  std::unique_ptr<IncrementalDetokenizer> detok;
  StopStringFilter stops;
  bool cancel = false;
};

int64_t MaxContext(const ModelConfig& cfg, const EngineOptions& opt) {
  return opt.max_context > 0 ? std::min<int64_t>(opt.max_context, cfg.max_position_embeddings)
                             : cfg.max_position_embeddings;
}

class LocalExecutor : public StepExecutor {
 public:
  explicit LocalExecutor(std::shared_ptr<Model> model) : model_(std::move(model)) {}
  absl::Status Forward(const StepBatch& b, KvStore* kv, std::vector<float>* logits) override {
    return model_->ForwardBatch(b.tokens, b.positions, b.segments, kv, b.logit_rows, logits);
  }

 private:
  std::shared_ptr<Model> model_;
};

class LocalEngine : public Engine {
 public:
  LocalEngine(std::shared_ptr<Model> model, std::shared_ptr<const Tokenizer> tok,
              const EngineOptions& opt, std::unique_ptr<StepExecutor> executor)
      : model_(std::move(model)),
        tok_(std::move(tok)),
        opt_(opt),
        max_context_(MaxContext(model_->config(), opt)),
        blocks_(opt.block_size, EnginePools(model_->config(), opt)),
        kv_(model_->config(), &blocks_),
        scheduler_(EngineSchedulerConfig(model_->config(), opt), &blocks_),
        exec_(std::move(executor)) {
    thread_ = std::thread([this] { Loop(); });
  }

  ~LocalEngine() override { Shutdown(false); }

  absl::Status Submit(EngineRequest req, EventSink sink) override {
    const ModelConfig& cfg = model_->config();
    if (req.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
    for (size_t i = 0; i < req.prompt.size(); ++i) {
      if (req.prompt[i] < 0 || req.prompt[i] >= cfg.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prompt token ", req.prompt[i], " at index ", i,
                                                       " is outside the vocabulary of ", cfg.vocab_size));
      }
    }
    RETURN_IF_ERROR(ValidateSamplingParams(req.sampling, cfg.vocab_size));
    for (size_t i = 0; i < req.resume_tokens.size(); ++i) {
      if (req.resume_tokens[i] < 0 || req.resume_tokens[i] >= cfg.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("resume token ", req.resume_tokens[i], " at index ", i,
                                                       " is outside the vocabulary of ", cfg.vocab_size));
      }
    }
    const int64_t resumed = int64_t(req.resume_tokens.size());
    if (resumed >= req.sampling.max_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("resume_tokens has ", resumed, " tokens; max_tokens is ",
                                                     req.sampling.max_tokens, " (nothing left to generate)"));
    }
    const int64_t prompt_len = int64_t(req.prompt.size());
    // The scheduler sees a resumed request as a longer prompt with fewer new tokens.
    const int64_t len = prompt_len + resumed;
    if (len >= max_context_) {
      return absl::OutOfRangeError(absl::StrCat("the prompt has ", len, " tokens; the context is ",
                                                max_context_, " (room is needed for at least one new token)"));
    }
    // Generation stops at the context limit rather than being refused.
    req.sampling.max_tokens = int32_t(std::min<int64_t>(req.sampling.max_tokens, max_context_ - prompt_len));

    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the engine is shutting down");
    if (by_request_.contains(req.request_id)) {
      return absl::InvalidArgumentError(absl::StrCat("request id \"", req.request_id, "\" is already in use"));
    }
    const SeqId id = next_id_++;
    const int64_t max_new = req.sampling.max_tokens - resumed;
    RETURN_IF_ERROR(scheduler_.Add(id, len, max_new));
    exec_->OnAdd(id, len, max_new);
    std::vector<int32_t> tokens = req.prompt;
    tokens.insert(tokens.end(), req.resume_tokens.begin(), req.resume_tokens.end());
    auto seq = std::make_unique<Sequence>(Sequence{id, req, std::move(sink), std::move(tokens), prompt_len,
                                                   resumed, Sampler(req.sampling), nullptr,
                                                   StopStringFilter(req.stop_strings)});
    if (tok_) {
      seq->detok = std::make_unique<IncrementalDetokenizer>(*tok_);
      // Replays what the failed group streamed, so the text continues exactly
      // where it stopped (held-back UTF-8 bytes and stop-string prefixes).
      bool stopped = false;
      for (int32_t t : req.resume_tokens) seq->stops.Push(seq->detok->Push(t), &stopped);
    }
    by_request_[req.request_id] = id;
    seqs_[id] = std::move(seq);
    wake_.notify_one();
    return absl::OkStatus();
  }

  void Cancel(const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_request_.find(request_id);
    if (it == by_request_.end()) return;
    seqs_[it->second]->cancel = true;
    wake_.notify_one();
  }

  EngineStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats s = stats_;
    s.running = scheduler_.num_running();
    s.waiting = scheduler_.num_waiting();
    for (int p = 0; p < blocks_.num_pools(); ++p) {
      const bool sliding = blocks_.pool(p).window > 0;
      s.pools.push_back(KvPoolStats{blocks_.pool(p).name, blocks_.total_blocks(p), blocks_.free_blocks(p),
                                    blocks_.block_size(),
                                    PagedKvStore::BytesPerBlock(model_->config(), blocks_.block_size(), sliding)});
    }
    return s;
  }

  void Shutdown(bool drain) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stopping_) {
        stopping_ = true;
        if (!drain) {
          for (auto& [id, seq] : seqs_) seq->cancel = true;
        }
      }
      wake_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  // Ends a sequence: last event to its sink, scheduler and maps forgotten.
  // Called with mu_ held.
  void Finish(Sequence& seq, EngineFinish why, absl::Status error, std::string text,
              std::vector<int32_t> ids) {
    TokenEvent ev;
    ev.ids = std::move(ids);
    ev.text = std::move(text);
    if (seq.detok && why != EngineFinish::kError) {
      bool stopped = false;
      ev.text += seq.stops.Push(seq.detok->Flush(), &stopped);
      if (!stopped) ev.text += seq.stops.Flush();
    }
    ev.finished = true;
    ev.finish = why;
    ev.error = std::move(error);
    ev.prompt_tokens = seq.prompt_len;
    ev.completion_tokens = seq.generated;
    seq.sink(ev);
    by_request_.erase(seq.req.request_id);
  }

  // The inputs of the draw seq.sampler.Sample would make for `seq`'s next
  // token; the history travels only when the repetition penalty reads it.
  static RowSampling RowSamplingOf(const Sequence& seq) {
    const SamplingParams& p = seq.req.sampling;
    RowSampling rs;
    rs.params.temperature = p.temperature;
    rs.params.top_k = p.top_k;
    rs.params.top_p = p.top_p;
    rs.params.min_p = p.min_p;
    rs.params.repetition_penalty = p.repetition_penalty;
    rs.params.seed = p.seed;
    rs.step = seq.generated;
    if (p.repetition_penalty != 1.0f) rs.history = seq.tokens;
    return rs;
  }

  void DropFinished(const std::vector<SeqId>& ids) {
    for (SeqId id : ids) seqs_.erase(id);
  }

  void Loop() {
    StepBatch batch;
    std::vector<int32_t>& tokens = batch.tokens;
    std::vector<int32_t>& positions = batch.positions;
    std::vector<SeqSegment>& segments = batch.segments;
    std::vector<int64_t>& logit_rows = batch.logit_rows;
    std::vector<SeqId> sampled;
    std::vector<float> logits;            // [num_sampled, V] when the loop samples
    std::vector<int32_t> drawn;           // [num_sampled] when the executor samples
    const int64_t V = model_->config().vocab_size;
    // A tensor-parallel group samples on its ranks (no full logits row
    // exists anywhere); it needs each row's sampling inputs in the batch.
    const bool exec_samples = exec_->samples();
    for (;;) {
      StepPlan plan;
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Cancellations and deadlines free their blocks before scheduling.
        const auto now = Clock::now();
        std::vector<SeqId> gone;
        for (auto& [id, seq] : seqs_) {
          const bool expired = now >= seq->req.deadline;
          if (seq->cancel || expired) {
            scheduler_.Abort(id);
            exec_->OnAbort(id);
            Finish(*seq, seq->cancel ? EngineFinish::kCancelled : EngineFinish::kDeadline, absl::OkStatus(), "", {});
            gone.push_back(id);
          }
        }
        DropFinished(gone);
        if (stopping_ && seqs_.empty()) {
          exec_->Close();
          return;
        }
        plan = scheduler_.Schedule();
        exec_->OnSchedule();
        if (plan.empty()) {
          // Idle: sleep until a request arrives, or the nearest deadline.
          auto until = Clock::now() + std::chrono::milliseconds(200);
          for (auto& [id, seq] : seqs_) until = std::min(until, seq->req.deadline);
          wake_.wait_until(lock, until);
          continue;
        }
        tokens.clear();
        positions.clear();
        segments.clear();
        logit_rows.clear();
        batch.sampling.clear();
        sampled.clear();
        for (const ScheduledSeq& s : plan.seqs) {
          Sequence& seq = *seqs_[s.id];
          segments.push_back(SeqSegment{s.id, int64_t(tokens.size()), s.num_tokens, s.begin});
          for (int64_t i = 0; i < s.num_tokens; ++i) {
            tokens.push_back(seq.tokens[s.begin + i]);
            positions.push_back(int32_t(s.begin + i));
          }
          if (s.samples) {
            logit_rows.push_back(int64_t(tokens.size()) - 1);
            sampled.push_back(s.id);
            if (exec_samples) batch.sampling.push_back(RowSamplingOf(seq));
          }
        }
        stats_.preemptions += int64_t(plan.preempted.size());
      }

      // The forward runs without the lock: Submit/Cancel/Stats stay responsive.
      const auto forward_start = Clock::now();
      absl::Status st = exec_samples ? exec_->ForwardAndSample(batch, &kv_, &drawn)
                                     : exec_->Forward(batch, &kv_, &logits);
      // A short answer (say, a wrapping executor that forgot samples() and
      // returned a vocabulary slice) fails the step instead of reading past
      // the buffer.
      if (st.ok() && (exec_samples ? drawn.size() != sampled.size() : logits.size() < sampled.size() * size_t(V))) {
        st = absl::InternalError(absl::StrCat("executor returned ", exec_samples ? drawn.size() : logits.size(),
                                              exec_samples ? " tokens" : " logits", " for ", sampled.size(),
                                              " sampled rows of a ", V, "-token vocabulary"));
      }

      std::lock_guard<std::mutex> lock(mu_);
      stats_.steps++;
      stats_.last_step_end = Clock::now();
      stats_.last_step_seconds = std::chrono::duration<double>(stats_.last_step_end - forward_start).count();
      stats_.step_seconds_total += stats_.last_step_seconds;
      std::vector<SeqId> finished;
      if (!st.ok()) {
        // A failed step fails every sequence in it; the engine keeps serving.
        for (const ScheduledSeq& s : plan.seqs) {
          Finish(*seqs_[s.id], EngineFinish::kError, st, "", {});
          finished.push_back(s.id);
        }
        scheduler_.OnStepDone(plan, finished);
        exec_->OnStepDone(finished);
        DropFinished(finished);
        continue;
      }
      for (const ScheduledSeq& s : plan.seqs) {
        if (seqs_[s.id]->generated == 0) stats_.prompt_tokens += s.num_tokens;
      }
      for (size_t r = 0; r < sampled.size(); ++r) {
        Sequence& seq = *seqs_[sampled[r]];
        const int32_t next =
            exec_samples ? drawn[r] : seq.sampler.Sample(&logits[r * V], V, seq.tokens, seq.generated);
        seq.tokens.push_back(next);
        seq.generated++;
        stats_.generated_tokens++;
        EngineFinish why = EngineFinish::kNone;
        std::string text;
        if (seq.sampler.IsStop(next)) {
          why = EngineFinish::kStop;
        } else if (seq.detok) {
          bool stopped = false;
          text = seq.stops.Push(seq.detok->Push(next), &stopped);
          if (stopped) why = EngineFinish::kStop;
        }
        if (why == EngineFinish::kNone && seq.generated >= seq.req.sampling.max_tokens) {
          why = EngineFinish::kLength;
        }
        if (why != EngineFinish::kNone) {
          Finish(seq, why, absl::OkStatus(), std::move(text), {next});
          finished.push_back(seq.id);
        } else {
          TokenEvent ev;
          ev.ids = {next};
          ev.text = std::move(text);
          ev.prompt_tokens = seq.prompt_len;
          ev.completion_tokens = seq.generated;
          seq.sink(ev);
        }
      }
      scheduler_.OnStepDone(plan, finished);
      exec_->OnStepDone(finished);
      DropFinished(finished);
    }
  }

  std::shared_ptr<Model> model_;
  std::shared_ptr<const Tokenizer> tok_;
  EngineOptions opt_;
  int64_t max_context_;
  KvBlockManager blocks_;
  PagedKvStore kv_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  Scheduler scheduler_;
  std::unique_ptr<StepExecutor> exec_;
  absl::flat_hash_map<SeqId, std::unique_ptr<Sequence>> seqs_;
  absl::flat_hash_map<std::string, SeqId> by_request_;
  SeqId next_id_ = 1;
  EngineStats stats_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<StepExecutor> MakeLocalExecutor(std::shared_ptr<Model> model) {
  return std::make_unique<LocalExecutor>(std::move(model));
}

std::vector<PoolSpec> EnginePools(const ModelConfig& cfg, const EngineOptions& opt) {
  // Pool sizes from the byte budget, unless the options fix a pool's blocks.
  std::vector<PoolSpec> pools = PagedKvStore::PlanPools(cfg, opt.block_size, opt.kv_cache_bytes,
                                                        opt.max_running, opt.max_batch_tokens);
  for (PoolSpec& p : pools) {
    const int64_t fixed = p.window > 0 ? opt.num_blocks_sliding : opt.num_blocks_global;
    if (fixed > 0) p.num_blocks = fixed;
  }
  return pools;
}

SchedulerConfig EngineSchedulerConfig(const ModelConfig& cfg, const EngineOptions& opt) {
  return SchedulerConfig{opt.max_batch_tokens, opt.max_running, opt.max_waiting, MaxContext(cfg, opt)};
}

absl::StatusOr<std::unique_ptr<Engine>> CreateLocalEngine(std::shared_ptr<Model> model,
                                                          std::shared_ptr<const Tokenizer> tokenizer,
                                                          const EngineOptions& options) {
  std::unique_ptr<StepExecutor> exec = model ? MakeLocalExecutor(model) : nullptr;
  return CreateEngine(std::move(model), std::move(tokenizer), options, std::move(exec));
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(std::shared_ptr<Model> model,
                                                     std::shared_ptr<const Tokenizer> tokenizer,
                                                     const EngineOptions& options,
                                                     std::unique_ptr<StepExecutor> executor) {
  if (!model) return absl::InvalidArgumentError("no model");
  if (!executor) return absl::InvalidArgumentError("no executor");
  if (options.block_size < 1 || options.max_batch_tokens < 1 || options.max_running < 1 ||
      options.kv_cache_bytes < 1) {
    return absl::InvalidArgumentError("engine options: block_size, max_batch_tokens, max_running and "
                                      "kv_cache_bytes must be positive");
  }
  if (model->config().HasPerLayerEmbeddings()) {
    return absl::UnimplementedError("per-layer embeddings (Gemma 4 E2B/E4B) are not supported yet");
  }
  return std::unique_ptr<Engine>(
      new LocalEngine(std::move(model), std::move(tokenizer), options, std::move(executor)));
}

}  // namespace facet
