// Each TP rank holds about 1/tp of the weights, measured, not computed: a
// Gemma 3-shaped checkpoint of ~70 MB (bf16, written by rank 0) is loaded
// sharded, every page of the checkpoint mapping is dropped from this
// process (MADV_DONTNEED), one forward pass runs (it reads every weight the
// rank uses), and the rank's weight memory is
//   Rss of the checkpoint mapping (/proc/self/smaps: pages this process
//   mapped, not the shared page cache) + bytes of the slices it copied
//   (o_proj/down_proj columns, anonymous memory).
// The same measurement of the unsharded model must see the whole file, so
// the measurement itself is checked.
//
// A fault maps the pages around it that the page cache already holds
// (fault-around; whole large folios on recent kernels, ~2 MiB granules
// measured here), which would count neighbours' slices. So before the
// forward the file leaves the page cache (POSIX_FADV_DONTNEED after an
// fdatasync) and the mapping is MADV_RANDOM (no readahead, order-0 pages).
// What remains is fault-around onto pages another rank faulted at the edge
// of a slice: at most fault_around_bytes (64 KiB) per slice edge. Margin: 5%
// plus 2 × 64 KiB per matrix.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/half.h"
#include "core/thread_pool.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "parallel/communicator.h"
#include "tests/parallel/test_world.h"

namespace facet {
namespace {

constexpr int kHidden = 512, kInter = 4096, kHeads = 8, kKv = 4, kHeadDim = 64, kVocab = 32768;
constexpr int kLayers = 2;

// Writes config.json + model.safetensors (bf16, U(-0.05, 0.05)) into dir.
void WriteCheckpoint(const std::string& dir) {
  std::filesystem::create_directories(dir);
  nlohmann::json cfg = nlohmann::json::parse(
      std::ifstream(std::string(FACET_SOURCE_DIR) + "/tests/data/golden/gemma3/config.json"));
  cfg["hidden_size"] = kHidden;
  cfg["intermediate_size"] = kInter;
  cfg["num_attention_heads"] = kHeads;
  cfg["num_key_value_heads"] = kKv;
  cfg["head_dim"] = kHeadDim;
  cfg["vocab_size"] = kVocab;
  cfg["num_hidden_layers"] = kLayers;
  cfg["layer_types"] = {"sliding_attention", "full_attention"};
  cfg["query_pre_attn_scalar"] = kHeadDim;
  std::ofstream(dir + "/config.json") << cfg.dump(2);

  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  std::vector<std::vector<bf16>> store;
  std::vector<NamedTensor> tensors;
  auto add = [&](const std::string& name, Shape shape) {
    std::vector<bf16>& v = store.emplace_back(size_t(shape.numel()));
    for (bf16& x : v) x = F32ToBf16(u(rng));
    tensors.push_back({"model." + name, TensorView{v.data(), DType::kBF16, shape}});
  };
  add("embed_tokens.weight", {kVocab, kHidden});
  add("norm.weight", {kHidden});
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                          "post_feedforward_layernorm"}) {
      add(p + n + ".weight", {kHidden});
    }
    add(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden});
    add(p + "self_attn.k_proj.weight", {kKv * kHeadDim, kHidden});
    add(p + "self_attn.v_proj.weight", {kKv * kHeadDim, kHidden});
    add(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim});
    add(p + "self_attn.q_norm.weight", {kHeadDim});
    add(p + "self_attn.k_norm.weight", {kHeadDim});
    add(p + "mlp.gate_proj.weight", {kInter, kHidden});
    add(p + "mlp.up_proj.weight", {kInter, kHidden});
    add(p + "mlp.down_proj.weight", {kHidden, kInter});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  // Written back, so the page cache can be dropped before each measurement.
  int fd = open((dir + "/model.safetensors").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(fdatasync(fd), 0);
  close(fd);
}

struct Mapping {
  uintptr_t begin = 0, end = 0;
};

// The mapping of `file` in /proc/self/maps (the checkpoint is one mapping).
Mapping FindMapping(const std::string& file) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const std::string canon = std::filesystem::canonical(file).string();
  while (std::getline(maps, line)) {
    if (line.size() < canon.size() || line.compare(line.size() - canon.size(), canon.size(), canon) != 0) continue;
    Mapping m;
    std::sscanf(line.c_str(), "%lx-%lx", &m.begin, &m.end);
    return m;
  }
  return {};
}

// Rss (bytes) of the mapping starting at `begin`, from /proc/self/smaps.
int64_t MappingRss(uintptr_t begin) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    unsigned long b = 0, e = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &b, &e) == 2 && line.find(' ') < 30) {
      in = b == begin;
      continue;
    }
    if (in && line.rfind("Rss:", 0) == 0) return std::stoll(line.substr(4)) * 1024;
  }
  return -1;
}

struct Held {
  int64_t mapped = 0;  // Rss of the checkpoint mapping
  int64_t owned = 0;   // copied slices
  int64_t total() const { return mapped + owned; }
};

// Loads, drops the mapping's pages, then rank by rank: empties the page
// cache of the file, runs one forward without readahead, measures.
Held Measure(const std::string& dir, parallel::Communicator* tp) {
  parallel::Communicator& world = parallel::TestWorld();
  Held h;
  ThreadPool pool(1);
  Model::LoadOptions opt;
  opt.tp = tp;
  auto model = Model::Load(dir, &pool, opt);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return h;
  const Mapping m = FindMapping(dir + "/model.safetensors");
  EXPECT_NE(m.begin, 0u);
  void* base = reinterpret_cast<void*>(m.begin);
  EXPECT_EQ(madvise(base, m.end - m.begin, MADV_DONTNEED), 0);
  EXPECT_EQ(madvise(base, m.end - m.begin, MADV_RANDOM), 0);
  KvCache cache((*model)->config(), 8);
  std::vector<float> logits;
  std::vector<int32_t> ids = {2, 100, 20000, 31000};
  // All ranks have dropped their pages; one empties the page cache of the
  // file; then all run the (collective) forward without readahead.
  EXPECT_TRUE(world.Barrier().ok());
  if (world.rank() == 0) {
    int fd = open((dir + "/model.safetensors").c_str(), O_RDONLY);
    EXPECT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
  }
  EXPECT_TRUE(world.Barrier().ok());
  EXPECT_TRUE((*model)->Forward(ids, &cache, false, &logits).ok());
  h.mapped = MappingRss(m.begin);
  EXPECT_TRUE(world.Barrier().ok());
  EXPECT_EQ(int64_t(logits.size()), kVocab);
  const ModelWeights& w = (*model)->weights();
  auto owned = [&](const WeightRef& r) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(r.data);
    if (r.data != nullptr && (p < m.begin || p >= m.end)) h.owned += r.rows * r.row_bytes();
  };
  owned(w.embed);
  for (const LayerWeights& l : w.layers)
    for (const WeightRef* r : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) owned(*r);
  return h;
}

TEST(TpResident, EachRankHoldsItsShard) {
  parallel::Communicator& world = parallel::TestWorld();
  const int tp = world.size();
  const std::string dir = "/tmp/facet_tp_resident_" + std::to_string(getppid());
  if (world.rank() == 0) WriteCheckpoint(dir);
  ASSERT_TRUE(world.Barrier().ok());
  const int64_t file = int64_t(std::filesystem::file_size(dir + "/model.safetensors"));
  const int64_t matrices = 1 + kLayers * 7;
  const int64_t slack = matrices * 2 * 64 * 1024;

  // The measurement sees the whole model when nothing is sharded.
  Held full = Measure(dir, nullptr);
  EXPECT_EQ(full.owned, 0);
  EXPECT_GT(full.total(), file * 95 / 100);
  EXPECT_LT(full.total(), file + 4096);

  Held shard = Measure(dir, &world);
  const int64_t want = file / tp;
  EXPECT_LT(shard.total(), want + want / 20 + slack);
  EXPECT_GT(shard.total(), want * 9 / 10);
  if (tp > 1) EXPECT_GT(shard.owned, 0);  // o_proj / down_proj column slices
  std::printf("[ measured ] rank %d/%d: file %.1f MiB, unsharded %.1f MiB, shard %.1f MiB "
              "(mapped %.1f + copied %.1f), ideal %.1f MiB\n",
              world.rank(), tp, file / 1048576.0, full.total() / 1048576.0,
              shard.total() / 1048576.0, shard.mapped / 1048576.0, shard.owned / 1048576.0,
              want / 1048576.0);
  ASSERT_TRUE(world.Barrier().ok());
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace facet
