#include "worker/scheduler.h"

#include <algorithm>

#include "core/logging.h"

namespace facet {

absl::Status ValidateSchedulerConfig(const SchedulerConfig& cfg) {
  const std::pair<const char*, int64_t> limits[] = {{"max_batch_tokens", cfg.max_batch_tokens},
                                                    {"max_running", cfg.max_running},
                                                    {"max_waiting", cfg.max_waiting},
                                                    {"max_context", cfg.max_context}};
  for (const auto& [name, value] : limits) {
    if (value < 1) return absl::InvalidArgumentError(absl::StrCat("scheduler ", name, " must be >= 1, got ", value));
  }
  return absl::OkStatus();
}

int64_t StepPlan::num_tokens() const {
  int64_t n = 0;
  for (const ScheduledSeq& s : seqs) n += s.num_tokens;
  return n;
}

Scheduler::Scheduler(SchedulerConfig cfg, KvBlockManager* kv) : cfg_(cfg), kv_(kv) {
  FACET_CHECK(kv != nullptr);
  const absl::Status s = ValidateSchedulerConfig(cfg);
  FACET_CHECK(s.ok()) << s.message();
}

absl::Status Scheduler::Add(SeqId id, int64_t prompt_len, int64_t max_new_tokens) {
  if (Has(id)) return absl::InvalidArgumentError(absl::StrCat("request ", id, " is already queued or running"));
  if (prompt_len < 1) return absl::InvalidArgumentError(absl::StrCat("request ", id, ": empty prompt"));
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("request ", id, ": max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  if (prompt_len > cfg_.max_context || max_new_tokens > cfg_.max_context - prompt_len) {
    return absl::OutOfRangeError(absl::StrCat("request ", id, ": prompt (", prompt_len, " tokens) + max_new_tokens (",
                                              max_new_tokens, ") exceeds the context of ", cfg_.max_context));
  }
  // The last sampled token is never fed back, so KV peaks one short of the total.
  const int64_t positions = prompt_len + max_new_tokens - 1;
  for (int p = 0; p < kv_->num_pools(); ++p) {
    const int64_t need = kv_->PeakBlocks(p, positions);
    if (need > kv_->total_blocks(p)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request ", id, ": prompt (", prompt_len, " tokens) + max_new_tokens (", max_new_tokens, ") needs ", need,
          " blocks of KV pool '", kv_->pool(p).name, "', which has only ", kv_->total_blocks(p)));
    }
  }
  if (num_waiting() >= cfg_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat("waiting queue is full (", cfg_.max_waiting, " requests)"));
  }
  Seq& s = seqs_[id];
  s.max_new_tokens = max_new_tokens;
  s.length = prompt_len;
  waiting_.push_back(id);
  return absl::OkStatus();
}

void Scheduler::Abort(SeqId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  if (it->second.running) {
    running_.erase(std::find(running_.begin(), running_.end(), id));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
  }
  kv_->Free(id);
  seqs_.erase(it);
}

const Scheduler::Seq& Scheduler::Get(SeqId id) const {
  auto it = seqs_.find(id);
  FACET_CHECK(it != seqs_.end()) << "unknown sequence " << id;
  return it->second;
}

int64_t Scheduler::length(SeqId id) const { return Get(id).length; }
int64_t Scheduler::computed(SeqId id) const { return Get(id).computed; }
int64_t Scheduler::generated(SeqId id) const { return Get(id).generated; }

int64_t Scheduler::MaxFit(SeqId id, const Seq& s, int64_t max_tokens) const {
  // Whether a chunk fits only changes once with its length, so bisect.
  int64_t lo = 0, hi = max_tokens;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (kv_->CanAllocate(id, s.computed, s.computed + mid)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

void Scheduler::Put(SeqId id, Seq& s, int64_t num_tokens, StepPlan& plan, int64_t& budget) {
  const absl::Status st = kv_->Allocate(id, s.computed, s.computed + num_tokens);
  FACET_CHECK(st.ok()) << st.message();
  s.plan_index = static_cast<int64_t>(plan.seqs.size());
  plan.seqs.push_back({id, s.computed, num_tokens, s.computed + num_tokens == s.length});
  budget -= num_tokens;
}

void Scheduler::PreemptNewest(StepPlan& plan, int64_t& budget) {
  const SeqId id = running_.back();
  running_.pop_back();
  Seq& s = seqs_.at(id);
  if (s.plan_index >= 0) {
    // Marked empty and dropped when the plan is compacted.
    budget += plan.seqs[s.plan_index].num_tokens;
    plan.seqs[s.plan_index].num_tokens = 0;
    s.plan_index = -1;
  }
  kv_->Free(id);
  s.running = false;
  s.computed = 0;
  waiting_.push_front(id);
  plan.preempted.push_back(id);
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  int64_t budget = cfg_.max_batch_tokens;

  // Index loops: preemption only pops running_ entries newer than i.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    const SeqId id = running_[i];
    Seq& s = seqs_.at(id);
    if (s.length - s.computed != 1) continue;
    while (!kv_->CanAllocate(id, s.computed, s.computed + 1) && running_.back() != id) PreemptNewest(plan, budget);
    if (!kv_->CanAllocate(id, s.computed, s.computed + 1)) {
      PreemptNewest(plan, budget);  // itself: it holds blocks the older ones need
      break;
    }
    Put(id, s, 1, plan, budget);
  }

  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    const SeqId id = running_[i];
    Seq& s = seqs_.at(id);
    if (s.length - s.computed <= 1) continue;
    int64_t n = MaxFit(id, s, std::min(s.length - s.computed, budget));
    while (n == 0 && running_.back() != id) {
      PreemptNewest(plan, budget);
      n = MaxFit(id, s, std::min(s.length - s.computed, budget));
    }
    if (n > 0) Put(id, s, n, plan, budget);
  }

  while (plan.preempted.empty() && budget > 0 && num_running() < cfg_.max_running && !waiting_.empty()) {
    const SeqId id = waiting_.front();
    Seq& s = seqs_.at(id);
    const int64_t n = MaxFit(id, s, std::min(s.length - s.computed, budget));
    if (n == 0) break;
    waiting_.pop_front();
    s.running = true;
    running_.push_back(id);
    Put(id, s, n, plan, budget);
  }

  std::erase_if(plan.seqs, [](const ScheduledSeq& e) { return e.num_tokens == 0; });
  for (const ScheduledSeq& e : plan.seqs) seqs_.at(e.id).plan_index = -1;
  return plan;
}

void Scheduler::OnStepDone(const StepPlan& plan, const std::vector<SeqId>& finished) {
  bool any_done = false;
  auto finish = [&](Seq& s) {
    s.done = true;
    any_done = true;
  };
  for (const ScheduledSeq& e : plan.seqs) {
    auto it = seqs_.find(e.id);
    if (it == seqs_.end() || !it->second.running) continue;  // aborted (and maybe re-added) since Schedule
    Seq& s = it->second;
    FACET_CHECK(s.computed == e.begin) << "sequence " << e.id << ": plan begins at " << e.begin << ", computed is "
                                       << s.computed << " (OnStepDone called twice?)";
    s.computed += e.num_tokens;
    if (e.samples) {
      ++s.length;
      if (++s.generated >= s.max_new_tokens) finish(s);
    }
  }
  for (SeqId id : finished) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) continue;
    if (it->second.running) {
      finish(it->second);
    } else {
      Abort(id);
    }
  }
  if (!any_done) return;
  std::erase_if(running_, [&](SeqId id) {
    auto it = seqs_.find(id);
    if (!it->second.done) return false;
    kv_->Free(id);
    seqs_.erase(it);
    return true;
  });
}

}  // namespace facet
