// Device selection (worker/device_registry.h): names, refusals, and
// GenerateOn's engine path against Generate on the CPU (a test device that
// wraps the CPU executor goes through the same registry and engine loop a
// GPU device does).
#include "worker/device_registry.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "core/thread_pool.h"
#include "models/model.h"

namespace facet {
namespace {

std::string GoldenDir(const std::string& name) {
  return std::string(FACET_SOURCE_DIR) + "/tests/data/golden/" + name;
}

bool Built(const std::string& device) {
  const std::vector<std::string> b = BuiltDevices();
  return std::find(b.begin(), b.end(), device) != b.end();
}

TEST(DeviceRegistryTest, CpuAlwaysBuilt) {
  EXPECT_TRUE(Built("cpu"));
  EXPECT_TRUE(CheckDevice("cpu").ok());
}

TEST(DeviceRegistryTest, UnknownDeviceIsInvalidArgument) {
  absl::Status st = CheckDevice("tpu");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("cpu"), absl::string_view::npos) << st;  // lists what is built
}

TEST(DeviceRegistryTest, CudaIsUnimplementedOnlyWhenNotBuilt) {
  absl::Status st = CheckDevice("cuda");
  if (Built("cuda")) {
    EXPECT_TRUE(st.ok()) << st;
  } else {
    EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(st.message().find("without CUDA"), absl::string_view::npos) << st;
  }
}

TEST(DeviceRegistryTest, MakeExecutorNeedsAModel) {
  EXPECT_EQ(MakeExecutor("cpu", nullptr, EngineOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A device that runs the CPU executor: GenerateOn takes the engine path.
const bool kTestDevice = RegisterExecutorFactory(
    "test-cpu-engine",
    [](std::shared_ptr<Model> m,
       const EngineOptions&) -> absl::StatusOr<std::unique_ptr<StepExecutor>> {
      return MakeLocalExecutor(std::move(m));
    });

TEST(DeviceRegistryTest, GenerateOnEnginePathMatchesGenerate) {
  ASSERT_TRUE(kTestDevice);
  ThreadPool pool(2);
  auto model = Model::Load(GoldenDir("gemma3"), &pool);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int32_t> prompt = {2, 17, 31, 5, 9, 44, 12, 8, 3, 100, 7};
  SamplingParams sp;
  sp.max_tokens = 8;
  auto want = Generate(**model, prompt, sp);
  ASSERT_TRUE(want.ok()) << want.status();
  GenerateOptions go;
  go.prefill_chunk = 4;  // the engine path chunks the prompt too
  std::vector<int32_t> seen;
  go.on_token = [&](int32_t id) {
    seen.push_back(id);
    return true;
  };
  auto got = GenerateOn("test-cpu-engine", **model, prompt, sp, go);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ids, want->ids);
  EXPECT_EQ(got->finish, FinishReason::kLength);
  EXPECT_EQ(got->prompt_tokens, int64_t(prompt.size()));
  EXPECT_EQ(seen, got->ids);  // a length finish: the caller saw every token
  EXPECT_GT(got->prefill_seconds, 0);

  // The callback stops generation after three tokens.
  seen.clear();
  go.on_token = [&](int32_t id) {
    seen.push_back(id);
    return seen.size() < 3;
  };
  got = GenerateOn("test-cpu-engine", **model, prompt, sp, go);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ids.size(), 3u);
  EXPECT_EQ(got->finish, FinishReason::kStop);

  // Refusals as Generate's.
  EXPECT_EQ(GenerateOn("test-cpu-engine", **model, {}, sp).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> bad = {2, (*model)->config().vocab_size};
  EXPECT_EQ(GenerateOn("test-cpu-engine", **model, bad, sp).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace facet
