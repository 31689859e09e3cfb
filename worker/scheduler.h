// Continuous batching with chunked prefill (DESIGN.md §3 step 1): a pure,
// deterministic state machine over sequence ids and lengths. No threads, no
// clocks, no tokens: the engine owns token ids, deadlines and cancellation
// (it calls Abort), and the same calls always produce the same plans, so
// every rank could run its own copy.
//
// A sequence knows `length` tokens (prompt + generated) of which `computed`
// have KV in the cache. While length - computed > 1 it is in prefill; with
// exactly one token left (the last sampled one) it is in decode. A step that
// computes the last known token samples the next one.
//
// Policy of Schedule(), within max_batch_tokens tokens per step:
//   1. Every running sequence in decode gets 1 token, oldest admitted first.
//   2. Running sequences in prefill get the next chunk, oldest first: as many
//      tokens as the remaining budget and the free KV blocks allow.
//   3. Waiting sequences are admitted in FIFO order while there is budget,
//      fewer than max_running are running and the head's first chunk (maybe
//      shorter than the budget) fits in the free blocks. The head of the queue
//      is never skipped. Nothing is admitted in a step that preempted.
// Preemption by recompute: when a running sequence cannot get a block for
// its next token (or, in prefill, for any token), the most recently admitted
// running sequence is freed entirely and moved to the FRONT of the waiting
// queue with all its known tokens to be recomputed (computed = 0); repeat
// until the blocks fit or the sequence itself is the newest, in which case a
// decode preempts itself and a prefill waits. Preempted ids are reported in
// StepPlan::preempted; a chunk already planned for them this step is dropped.
// The oldest running sequence can thus always take every block, so a
// sequence that fits the pools alone (checked by Add) always makes progress.
//
// Cost per step: O(running + admitted) plus O(log budget) KV queries per
// prefill chunk.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "worker/kv_blocks.h"

namespace facet {

struct SchedulerConfig {
  int64_t max_batch_tokens = 512;  // tokens per step: prefill chunks + decodes
  int64_t max_running = 64;        // sequences in the running batch
  int64_t max_waiting = 256;       // queued requests; Add beyond: RESOURCE_EXHAUSTED
  int64_t max_context = 8192;      // prompt + max_new_tokens limit
};

// INVALID_ARGUMENT naming the field when a limit is not positive.
absl::Status ValidateSchedulerConfig(const SchedulerConfig& cfg);

struct ScheduledSeq {
  SeqId id;
  int64_t begin;       // first position computed this step (== computed before the step)
  int64_t num_tokens;  // positions [begin, begin + num_tokens)
  bool samples;        // the chunk reaches the last known token: the step samples a new one
};

struct StepPlan {
  std::vector<ScheduledSeq> seqs;  // decodes first, then prefill chunks, then new admissions
  std::vector<SeqId> preempted;    // back to waiting; their KV was freed and will be recomputed
  int64_t num_tokens() const;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  // `kv` must outlive the scheduler, which is its only user while it runs.
  // `cfg` must pass ValidateSchedulerConfig.
  Scheduler(SchedulerConfig cfg, KvBlockManager* kv);

  // Queues a request. INVALID_ARGUMENT: duplicate id, prompt_len < 1,
  // max_new_tokens < 1, or a request too long for the KV pools even alone;
  // OUT_OF_RANGE: prompt_len + max_new_tokens > max_context;
  // RESOURCE_EXHAUSTED: max_waiting requests are already queued.
  absl::Status Add(SeqId id, int64_t prompt_len, int64_t max_new_tokens);
  // Removes a waiting or running sequence and frees its blocks at once.
  // Unknown ids are ignored. Allowed between Schedule and OnStepDone: the
  // aborted sequence's entries in that plan are then ignored.
  void Abort(SeqId id);

  StepPlan Schedule();
  // Call once after executing each plan, before the next Schedule. For every
  // scheduled chunk: computed += num_tokens, and a sampled token extends the
  // length. Sequences listed in `finished` (stop token, stop string, ...) and
  // those that have now sampled max_new_tokens tokens (the engine finishes
  // them with "length") are removed and their blocks freed.
  void OnStepDone(const StepPlan& plan, const std::vector<SeqId>& finished);

  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  bool Has(SeqId id) const { return seqs_.count(id) != 0; }
  int64_t length(SeqId id) const;     // known tokens (prompt + generated)
  int64_t computed(SeqId id) const;   // tokens whose KV is in the cache
  int64_t generated(SeqId id) const;  // tokens sampled so far

 private:
  struct Seq {
    int64_t max_new_tokens = 0;
    int64_t length = 0;
    int64_t computed = 0;
    int64_t generated = 0;
    bool running = false;
    bool done = false;        // set in OnStepDone until the running list is compacted
    int64_t plan_index = -1;  // entry in the plan being built, -1 if none
  };

  // Largest n <= max_tokens whose blocks fit right now (0 if none).
  int64_t MaxFit(SeqId id, const Seq& s, int64_t max_tokens) const;
  void Put(SeqId id, Seq& s, int64_t num_tokens, StepPlan& plan, int64_t& budget);
  // Preempts the newest running sequence, undoing its part of `plan`.
  void PreemptNewest(StepPlan& plan, int64_t& budget);
  const Seq& Get(SeqId id) const;

  SchedulerConfig cfg_;
  KvBlockManager* kv_;
  std::unordered_map<SeqId, Seq> seqs_;
  std::vector<SeqId> running_;  // admission order, oldest first
  std::deque<SeqId> waiting_;   // FIFO; preempted sequences go to the front
};

}  // namespace facet
