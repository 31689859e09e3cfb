// facet batch: an offline job — OpenAI batch-format JSONL in, one result line
// per input line out, restartable.
//
//   facet batch --model gemma-3-270m-it-Q4_K_M.gguf --input in.jsonl --output out.jsonl
//   srun --mpi=pmix facet batch ...   (scripts/slurm/facet-batch.sbatch)
//
// Results are appended in finishing order and fsynced in batches; a rerun
// with the same --output skips every line already answered, so a killed job
// loses nothing and repeats nothing.
//
// Several ranks (mpirun / srun): every rank is one data-parallel replica that
// answers the lines with (line - 1) % world_size == rank into its own part
// file OUT.part-<rank> (no two processes append to one file). Rank 0 is the
// coordinator: after a barrier it merges the part files into OUT and removes
// them. A restart reads OUT and every OUT.part-* left by a killed run, with
// any number of ranks.
//
// --tp / --ep N: a replica is N consecutive ranks (parallel::MakeProcessGroups)
// holding one sharded model. Its first rank leads: it reads, submits and
// writes like a single-rank replica, and its engine broadcasts every step to
// the others (worker/leader.h), which only follow (worker/follower.h). Lines
// are dealt by replica instead of by rank.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "cli/batch_jsonl.h"
#include "cli/batch_progress.h"
#include "cli/batch_runner.h"
#include "cli/batch_writer.h"
#include "cli/commands.h"
#include "cli/load.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "models/model.h"
#include "parallel/communicator.h"
#include "worker/engine.h"
#include "worker/follower.h"
#include "worker/leader.h"

namespace facet::cli {
namespace {

struct BatchCmdOptions {
  std::string model;
  std::string tokenizer;  // empty: the model's own (tokenizer.json beside it, or the GGUF vocabulary)
  std::string input;
  std::string output;
  std::string name;       // model name in the results; empty: the file or folder name
  int threads = 0;
  int tp = 1;  // tensor-parallel ranks per replica
  int ep = 0;  // expert-parallel ranks per replica; 0 = same as tp
  int64_t kv_cache_mb = 1024;
  int64_t max_batch_tokens = 512;
  int64_t max_running = 64;
  int64_t max_in_flight = 256;
  int64_t max_context = 0;
  int32_t default_max_tokens = 256;
  int64_t sync_every = 64;
  double sync_seconds = 2;
  double progress_seconds = 10;
};

// Exit codes: 0 all lines answered (some may hold errors), 1 the job failed,
// 2 the job's input or options are wrong, 143 stopped by SIGTERM/SIGINT.
constexpr int kExitStopped = 143;

int Fail(const std::string& prefix, const absl::Status& s) {
  std::cerr << "facet batch: " << prefix << s.message() << "\n";
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition: return 2;
    default: return 1;
  }
}

std::string DefaultModelName(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  if (p.extension() == ".gguf") return p.stem().string();
  return p.filename().empty() ? "model" : p.filename().string();
}

std::string PartPath(const std::string& output, int rank) { return absl::StrCat(output, ".part-", rank); }

// OUT.part-* files next to OUT, from this run or a killed one of any size.
std::vector<std::string> ListPartFiles(const std::string& output) {
  std::vector<std::string> parts;
  std::filesystem::path out(output);
  std::filesystem::path dir = out.parent_path().empty() ? "." : out.parent_path();
  const std::string prefix = out.filename().string() + ".part-";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && e.is_regular_file()) {
      parts.push_back(out.parent_path().empty() ? name : (out.parent_path() / name).string());
    }
  }
  std::sort(parts.begin(), parts.end());
  return parts;
}

// Every input line, parsed. INVALID_ARGUMENT when two lines share a
// custom_id (the output could not name each once); NOT_FOUND/PERMISSION_DENIED
// when the file cannot be read.
absl::StatusOr<std::vector<BatchLine>> ReadInput(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("the input ", path, " is a folder"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::filesystem::exists(path, ec)
               ? absl::PermissionDeniedError(absl::StrCat("cannot read the input ", path))
               : absl::NotFoundError(absl::StrCat("the input ", path, " does not exist"));
  }
  std::vector<BatchLine> lines;
  absl::flat_hash_map<std::string, int64_t> seen;  // custom_id -> line
  std::string text;
  for (int64_t no = 1; std::getline(in, text); ++no) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines are not requests
    BatchLine line = ParseBatchLine(text, no);
    if (!line.custom_id.empty()) {
      auto [it, fresh] = seen.emplace(line.custom_id, no);
      if (!fresh) {
        return absl::InvalidArgumentError(absl::StrCat("custom_id \"", line.custom_id, "\" appears on lines ",
                                                       it->second, " and ", no, " of ", path,
                                                       "; custom_ids must be unique"));
      }
    }
    lines.push_back(std::move(line));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return lines;
}

// Appends the part files' lines that OUT lacks to OUT, fsyncs, removes them.
// Safe to repeat after a crash at any point: a line already in OUT is skipped.
absl::Status MergeParts(const std::string& output, const std::vector<std::string>& parts) {
  if (parts.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(BatchDone done, ReadBatchDone(output));
  {
    ASSIGN_OR_RETURN(auto writer, BatchWriter::Open(output, done.good_bytes, /*sync_every=*/1 << 30,
                                                    /*sync_seconds=*/1e9));
    for (const std::string& part : parts) {
      std::ifstream in(part, std::ios::binary);
      std::string text;
      // A torn last line has no newline: std::getline would return it, so
      // check the key, which a partial JSON line never yields.
      while (std::getline(in, text)) {
        const std::string key = BatchOutputKey(text);
        if (key.empty() || !done.keys.insert(key).second) continue;
        RETURN_IF_ERROR(writer->Append(text));
      }
    }
    RETURN_IF_ERROR(writer->Sync());
  }
  for (const std::string& part : parts) std::filesystem::remove(part);
  return absl::OkStatus();
}

// SIGINT/SIGTERM (scancel, Ctrl-C) raise `stop`: the job syncs what is done
// and exits 143. Signals are blocked in every thread created after this (the
// engine's, the pool's) and taken by one watcher thread.
class StopWatcher {
 public:
  StopWatcher() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] {
      const timespec tick{0, 200 * 1000 * 1000};
      while (!quit_.load()) {
        if (sigtimedwait(&set_, nullptr, &tick) > 0) stop_.store(true);
      }
    });
  }
  ~StopWatcher() {
    quit_.store(true);
    thread_.join();
  }
  const std::atomic<bool>& stop() const { return stop_; }

 private:
  sigset_t set_;
  std::atomic<bool> stop_{false}, quit_{false};
  std::thread thread_;
};

EngineOptions BatchEngineOptions(const BatchCmdOptions& opt) {
  EngineOptions eopt;
  eopt.kv_cache_bytes = opt.kv_cache_mb << 20;
  eopt.max_batch_tokens = opt.max_batch_tokens;
  eopt.max_running = opt.max_running;
  eopt.max_waiting = opt.max_in_flight;  // the runner never has more in flight
  eopt.max_context = opt.max_context;
  return eopt;
}

// The model, sharded over `group` when the replica spans several ranks.
absl::StatusOr<std::shared_ptr<Model>> LoadBatchModel(const BatchCmdOptions& opt, parallel::Communicator* group,
                                                      ThreadPool* pool) {
  Model::LoadOptions lo;
  if (group != nullptr) {
    if (opt.tp > 1) lo.tp = group;
    if ((opt.ep > 0 ? opt.ep : opt.tp) > 1) lo.ep = group;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(opt.model, pool, lo));
  return std::shared_ptr<Model>(std::move(model));
}

// Collective over the world: `totals` (done, failed, prompt and completion
// tokens, skipped) summed over the ranks, `wall_us` the slowest rank's.
absl::Status SumOverRanks(parallel::Communicator& world, int64_t (&totals)[5], int64_t* wall_us) {
  RETURN_IF_ERROR(world.AllReduce(std::span<int64_t>(totals), parallel::ReduceOp::kSum));
  return world.AllReduce(std::span<int64_t>(wall_us, 1), parallel::ReduceOp::kMax);
}

// A replica's other ranks: load their shard and replay the leader's steps
// until its engine shuts down, then join the job's final collectives.
template <class Fail>
int RunFollowerRank(const BatchCmdOptions& opt, parallel::Communicator& world, parallel::Communicator& group,
                    const Fail& fail, const StopWatcher& watcher) {
  ThreadPool pool(opt.threads);
  auto model = LoadBatchModel(opt, &group, &pool);
  if (!model.ok()) return fail("loading " + opt.model + ": ", model.status());
  Follower follower(*model, BatchEngineOptions(opt), &group);
  if (absl::Status st = follower.Run(); !st.ok()) return fail("following the replica's leader: ", st);
  if (watcher.stop().load()) {
    std::cerr.flush();
    std::_Exit(kExitStopped);  // as the leader does: its results are synced
  }
  int64_t totals[5] = {0, 0, 0, 0, 0};  // a follower answers no lines itself
  int64_t wall_us = 0;
  if (auto st = SumOverRanks(world, totals, &wall_us); !st.ok()) return fail("summing the ranks' counts: ", st);
  if (auto st = world.Barrier(); !st.ok()) return fail("barrier: ", st);
  return 0;
}

int RunBatch(const BatchCmdOptions& opt) {
  StopWatcher watcher;
  // Job-level checks first, before minutes of model loading.
  if (auto st = CheckOutputPath(opt.output); !st.ok()) return Fail("", st);
  auto input = ReadInput(opt.input);
  if (!input.ok()) return Fail("", input.status());
  if (opt.max_in_flight < 1) return Fail("", absl::InvalidArgumentError("--max-in-flight must be >= 1"));

  auto world_or = parallel::CreateWorldCommunicator();
  if (!world_or.ok()) return Fail("starting the ranks: ", world_or.status());
  std::unique_ptr<parallel::Communicator> world = std::move(*world_or);
  const int rank = world->rank(), size = world->size();
  // With several ranks a failing rank takes the job down at once: peers may
  // already wait in a collective that it will never join.
  auto fail = [&world](const std::string& what, const absl::Status& st) {
    const int rc = Fail(what, st);
    if (world->size() > 1) world->Abort(rc);
    return rc;
  };
  // Replicas: groups of `group_size` consecutive ranks (one when tp = ep = 1).
  const int ep = opt.ep > 0 ? opt.ep : opt.tp;
  const int group_size = std::max(opt.tp, ep);
  if (opt.tp < 1 || ep < 1 || size % group_size != 0) {
    return fail("", absl::InvalidArgumentError(absl::StrCat(
                        "--tp ", opt.tp, opt.ep > 0 ? absl::StrCat(" --ep ", opt.ep) : std::string(), ": the world of ",
                        size, " ranks must be a multiple of ", group_size, " (one replica per ", group_size,
                        " consecutive ranks)")));
  }
  std::unique_ptr<parallel::Communicator> group;  // this replica's ranks (null for one-rank replicas)
  int replicas = size, replica = rank;
  if (group_size > 1) {
    auto groups = parallel::MakeProcessGroups(*world, opt.tp, ep);
    if (!groups.ok()) return fail("", groups.status());
    group = std::move(opt.tp > 1 ? groups->tp : groups->ep);
    replicas = groups->dp->size();
    replica = groups->dp->rank();
  }
  const bool follower = group != nullptr && group->rank() != 0;
  const std::string prefix =
      replicas > 1 ? absl::StrCat("[", group_size > 1 ? "replica " : "rank ", replica, "/", replicas, "] ") : "";
  const std::string my_output = size > 1 ? PartPath(opt.output, rank) : opt.output;

  // A single process first folds in what the ranks of a killed run left.
  if (size == 1) {
    if (auto st = MergeParts(opt.output, ListPartFiles(opt.output)); !st.ok()) return fail("", st);
  }
  // Done = OUT plus every part file, so a restart with another rank count
  // still skips them. Lines are dealt by input line number, so the share of a
  // rank does not depend on what the others have done.
  absl::flat_hash_set<std::string> done;
  int64_t my_keep = -1;
  std::vector<std::string> sources = ListPartFiles(opt.output);
  sources.insert(sources.begin(), opt.output);
  for (const std::string& path : sources) {
    auto d = ReadBatchDone(path);
    if (!d.ok()) return fail("", d.status());
    done.insert(d->keys.begin(), d->keys.end());
    if (path == my_output) my_keep = d->good_bytes;
  }
  if (my_keep < 0) my_keep = 0;  // a fresh part file
  // Nobody truncates a torn tail or appends until every rank has read.
  if (auto st = world->Barrier(); !st.ok()) return fail("barrier: ", st);

  std::vector<BatchLine> todo;
  int64_t skipped = 0;
  for (BatchLine& line : *input) {
    if (follower || (line.line_no - 1) % replicas != replica) continue;
    if (done.contains(line.Key())) {
      ++skipped;
    } else {
      todo.push_back(std::move(line));
    }
  }
  input->clear();
  if (follower) return RunFollowerRank(opt, *world, *group, fail, watcher);
  // One write per line: the ranks share the terminal or log.
  std::cerr << absl::StrCat("facet batch: ", prefix, todo.size(), " requests to run, ", skipped,
                            " already done in ", opt.output, "\n")
            << std::flush;

  auto writer = BatchWriter::Open(my_output, my_keep, opt.sync_every, opt.sync_seconds);
  if (!writer.ok()) return fail("", writer.status());

  BatchProgress progress(static_cast<int64_t>(todo.size()), isatty(STDERR_FILENO) != 0,
                         isatty(STDERR_FILENO) ? 0.5 : opt.progress_seconds, prefix, std::cerr);
  BatchRunResult run;
  std::unique_ptr<ThreadPool> pool;
  // A sharded replica loads even with nothing to do: its followers wait for it.
  if (!todo.empty() || group != nullptr) {
    pool = std::make_unique<ThreadPool>(opt.threads);
    auto loaded = LoadBatchModel(opt, group.get(), pool.get());
    if (!loaded.ok()) return fail("loading " + opt.model + ": ", loaded.status());
    std::shared_ptr<Model> model = std::move(*loaded);
    const ModelConfig& cfg = model->config();
    ServedModel served;
    auto tok = LoadTokenizer(opt.tokenizer.empty() ? opt.model : opt.tokenizer);
    if (tok.ok()) {
      served.tokenizer = std::move(*tok);
    } else if (!opt.tokenizer.empty()) {
      return fail("loading the tokenizer: ", tok.status());
    } else {
      std::cerr << "facet batch: " << prefix << "no tokenizer (" << tok.status().message()
                << "); only token-id prompts can run\n";
    }
    const EngineOptions eopt = BatchEngineOptions(opt);
    auto engine = group == nullptr
                      ? CreateLocalEngine(model, served.tokenizer, eopt)
                      : CreateEngine(model, served.tokenizer, eopt, MakeLeaderExecutor(model, group.get(), {}));
    if (!engine.ok()) return fail("creating the engine: ", engine.status());
    served.engine = std::move(*engine);
    served.info = ModelInfoFromConfig(opt.name.empty() ? DefaultModelName(opt.model) : opt.name, cfg,
                                      opt.max_context);
    served.info.stop_token_ids = DefaultStopTokens(cfg, served.tokenizer.get());

    BatchRunOptions ropt;
    ropt.max_in_flight = opt.max_in_flight;
    ropt.defaults.max_tokens = opt.default_max_tokens;
    auto ran = RunBatchLines(served, todo, ropt, **writer, progress, watcher.stop());
    served.engine->Shutdown(/*drain=*/false);
    if (!ran.ok()) return fail("", ran.status());
    run = *ran;
  }
  if (auto st = (*writer)->Sync(); !st.ok()) return fail("", st);
  progress.Finish(run.counts, skipped);
  if (run.stopped || watcher.stop().load()) {
    std::cerr << "facet batch: " << prefix << "stopped; " << (*writer)->synced_lines()
              << " results are in " << my_output << "; rerun the same command to finish\n";
    // Peers may be waiting in a collective or already gone: leave without
    // the communicator's teardown (the results are synced).
    std::cerr.flush();
    std::_Exit(kExitStopped);
  }
  writer->reset();

  // The coordinator's part: totals of every rank and one output file.
  if (size > 1) {
    // [5] summed over ranks; the slowest rank's wall time in microseconds.
    int64_t totals[5] = {run.counts.done, run.counts.failed, run.counts.prompt_tokens,
                         run.counts.completion_tokens, skipped};
    int64_t wall_us = static_cast<int64_t>(progress.elapsed_s() * 1e6);
    if (auto st = SumOverRanks(*world, totals, &wall_us); !st.ok()) return fail("summing the ranks' counts: ", st);
    if (rank == 0) {
      if (auto st = MergeParts(opt.output, ListPartFiles(opt.output)); !st.ok()) return fail("", st);
      BatchCounts all{totals[0], totals[1], totals[2], totals[3]};
      std::cerr << "facet batch: all " << size << " ranks"
                << (group_size > 1 ? absl::StrCat(" (", replicas, replicas == 1 ? " replica" : " replicas", " of ", group_size, ")")
                                  : std::string()) << ": ";
      BatchProgress(0, false, 0, "", std::cerr).Finish(all, totals[4], wall_us * 1e-6);
    }
    if (auto st = world->Barrier(); !st.ok()) return fail("barrier: ", st);
  }
  if (rank == 0) std::cerr << "facet batch: results in " << opt.output << "\n";
  return 0;
}

}  // namespace

void RegisterBatch(CLI::App& app) {
  auto opt = std::make_shared<BatchCmdOptions>();
  CLI::App* cmd = app.add_subcommand(
      "batch", "Offline job: OpenAI batch JSONL in, results out (restartable; mpirun/srun for several ranks)");
  cmd->add_option("--model", opt->model, "model directory (config.json + safetensors) or .gguf file")->required();
  cmd->add_option("--input", opt->input, "input JSONL (custom_id, body with messages or prompt)")->required();
  cmd->add_option("--output", opt->output, "output JSONL; rerunning with the same file resumes")->required();
  cmd->add_option("--tokenizer", opt->tokenizer, "tokenizer.json, its folder or a .gguf (default: the model's)");
  cmd->add_option("--name", opt->name, "model name written in the results (default: the file or folder name)");
  cmd->add_option("--threads", opt->threads, "CPU threads per rank (0 = all cores)");
  cmd->add_option("--tp", opt->tp,
                  "tensor-parallel ranks per replica (consecutive ranks; the world must be a multiple)")
      ->capture_default_str();
  cmd->add_option("--ep", opt->ep, "expert-parallel ranks per replica (MoE; 0 = same as --tp)");
  cmd->add_option("--kv-cache-mb", opt->kv_cache_mb, "KV cache size in MiB")->capture_default_str();
  cmd->add_option("--max-batch-tokens", opt->max_batch_tokens, "token budget of one engine step")
      ->capture_default_str();
  cmd->add_option("--max-running", opt->max_running, "sequences decoded together")->capture_default_str();
  cmd->add_option("--max-in-flight", opt->max_in_flight, "requests submitted to the engine at once")
      ->capture_default_str();
  cmd->add_option("--max-context", opt->max_context, "tokens per sequence (0 = the model's context length)");
  cmd->add_option("--default-max-tokens", opt->default_max_tokens, "max_tokens of lines that leave it unset")
      ->capture_default_str();
  cmd->add_option("--sync-every", opt->sync_every, "fsync the output after this many results")
      ->capture_default_str();
  cmd->add_option("--sync-seconds", opt->sync_seconds, "... or when the oldest unsynced result is this old")
      ->capture_default_str();
  cmd->add_option("--progress-seconds", opt->progress_seconds,
                  "seconds between progress lines when stderr is not a terminal")
      ->capture_default_str();
  cmd->callback([opt] { SetExitCode(RunBatch(*opt)); });
}

}  // namespace facet::cli
