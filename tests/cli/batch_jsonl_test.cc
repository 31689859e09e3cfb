#include "cli/batch_jsonl.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/batch_writer.h"

namespace facet::cli {
namespace {

using nlohmann::json;

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "-" + std::to_string(getpid()))).string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(BatchLine, ChatLine) {
  BatchLine l = ParseBatchLine(
      R"({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "x",
          "messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
          "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": "END"}})",
      4);
  ASSERT_TRUE(l.error.ok()) << l.error;
  EXPECT_TRUE(l.chat);
  EXPECT_EQ(l.Key(), "a");
  ASSERT_EQ(l.chat_request.messages_size(), 2);
  EXPECT_EQ(l.chat_request.messages(1).content(), "Hi there");
  const v1::SamplingParams& s = l.chat_request.sampling();
  EXPECT_EQ(s.max_tokens(), 7);
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_EQ(s.seed(), 3u);
  ASSERT_EQ(s.stop_size(), 1);
  EXPECT_EQ(s.stop(0), "END");
}

TEST(BatchLine, CompletionLineWithTokenIds) {
  BatchLine l = ParseBatchLine(R"({"custom_id": "b", "body": {"prompt": [2, 17, 99], "max_completion_tokens": 5}})", 1);
  ASSERT_TRUE(l.error.ok()) << l.error;
  EXPECT_FALSE(l.chat);
  ASSERT_EQ(l.generate_request.prompt_token_ids_size(), 3);
  EXPECT_EQ(l.generate_request.prompt_token_ids(2), 99);
  EXPECT_EQ(l.generate_request.sampling().max_tokens(), 5);
}

TEST(BatchLine, UnsetSeedIsStablePerKey) {
  BatchLine a1 = ParseBatchLine(R"({"custom_id": "a", "body": {"prompt": "x", "temperature": 1}})", 1);
  BatchLine a2 = ParseBatchLine(R"({"custom_id": "a", "body": {"prompt": "x", "temperature": 1}})", 9);
  BatchLine b = ParseBatchLine(R"({"custom_id": "b", "body": {"prompt": "x", "temperature": 1}})", 1);
  ASSERT_TRUE(a1.generate_request.sampling().has_seed());
  EXPECT_EQ(a1.generate_request.sampling().seed(), a2.generate_request.sampling().seed());
  EXPECT_NE(a1.generate_request.sampling().seed(), b.generate_request.sampling().seed());
}

struct BadCase {
  const char* line;
  const char* message_part;
  bool has_custom_id;
};

class BatchLineErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(BatchLineErrors, AnsweredWithAnErrorNamingTheProblem) {
  const BadCase& c = GetParam();
  BatchLine l = ParseBatchLine(c.line, 3);
  ASSERT_FALSE(l.error.ok()) << c.line;
  EXPECT_EQ(l.error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(l.error.message()).find(c.message_part), std::string::npos) << l.error;
  EXPECT_EQ(l.Key(), c.has_custom_id ? "id" : "line:3");
}

INSTANTIATE_TEST_SUITE_P(
    All, BatchLineErrors,
    ::testing::Values(
        BadCase{"{not json", "malformed JSON", false},
        BadCase{"[1, 2]", "not a JSON object", false},
        BadCase{R"({"body": {"prompt": "x"}})", "custom_id is missing", false},
        BadCase{R"({"custom_id": 5, "body": {"prompt": "x"}})", "custom_id must be", false},
        BadCase{R"({"custom_id": "line:7", "body": {"prompt": "x"}})", "reserved", false},
        BadCase{R"({"custom_id": "id", "extra": 1, "body": {"prompt": "x"}})", "\"extra\" is not a supported field", true},
        BadCase{R"({"custom_id": "id", "body": {"prompt": "x", "foo": 1}})", "body.foo is not a supported field", true},
        BadCase{R"({"custom_id": "id", "body": {"prompt": ["a", "b"]}})", "one prompt per line", true},
        BadCase{R"({"custom_id": "id", "body": {"prompt": "x", "messages": []}})", "exactly one of", true},
        BadCase{R"({"custom_id": "id", "body": {}})", "exactly one of", true},
        BadCase{R"({"custom_id": "id", "url": "/v1/chat/completions", "body": {"prompt": "x"}})", "expects body.messages", true},
        BadCase{R"({"custom_id": "id", "url": "/v1/embeddings", "body": {"prompt": "x"}})", "not supported", true},
        BadCase{R"({"custom_id": "id", "body": {"prompt": "x", "n": 2}})", "n = 1", true},
        BadCase{R"({"custom_id": "id", "body": {"prompt": "x", "stream": true}})", "body.stream", true},
        BadCase{R"({"custom_id": "id", "body": {"prompt": "x", "max_tokens": 0}})", "max_tokens must be >= 1", true},
        BadCase{R"({"custom_id": "id", "body": {"prompt": "x", "temperature": "hot"}})", "body.temperature must be a number", true},
        BadCase{R"({"custom_id": "id", "body": {"messages": [{"role": "user"}]}})", "content is missing", true},
        BadCase{R"({"custom_id": "id", "body": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}})", "text", true}));

TEST(BatchFormat, ResultAndErrorLinesNameTheirKey) {
  BatchLine chat = ParseBatchLine(R"({"custom_id": "c1", "body": {"messages": [{"role": "user", "content": "hi"}]}})", 1);
  BatchCompletion c{"Hello", {5, 6, 1}, "stop", 4, 3};
  json r = json::parse(FormatBatchResult(chat, c, "m"));
  EXPECT_EQ(r["custom_id"], "c1");
  EXPECT_TRUE(r["error"].is_null());
  const json& body = r["response"]["body"];
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["token_ids"], json({5, 6, 1}));
  EXPECT_EQ(body["usage"]["total_tokens"], 7);
  EXPECT_EQ(BatchOutputKey(r.dump()), "c1");

  BatchLine bad = ParseBatchLine("nope", 12);
  json e = json::parse(FormatBatchError(bad, bad.error));
  EXPECT_TRUE(e["custom_id"].is_null());
  EXPECT_EQ(e["line"], 12);
  EXPECT_TRUE(e["response"].is_null());
  EXPECT_EQ(e["error"]["code"], "invalid_request");
  EXPECT_EQ(BatchOutputKey(e.dump()), "line:12");
}

TEST(BatchDone, TornTailIsDroppedAndTruncatedOnReopen) {
  const std::string path = TempPath("batch_done_torn");
  BatchLine a = ParseBatchLine(R"({"custom_id": "a", "body": {"prompt": "x"}})", 1);
  BatchLine b = ParseBatchLine(R"({"custom_id": "b", "body": {"prompt": "x"}})", 2);
  const std::string la = FormatBatchResult(a, BatchCompletion{"t", {1}, "stop", 1, 1}, "m");
  const std::string lb = FormatBatchError(b, absl::OutOfRangeError("too long"));
  {
    std::ofstream out(path, std::ios::binary);
    out << la << "\n" << lb << "\n" << la.substr(0, la.size() / 2);  // killed mid-write
  }
  auto done = ReadBatchDone(path);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->lines, 2);
  EXPECT_EQ(done->errors, 1);
  EXPECT_EQ(done->completion_tokens, 1);
  EXPECT_TRUE(done->torn_tail);
  EXPECT_TRUE(done->keys.contains("a"));
  EXPECT_TRUE(done->keys.contains("b"));
  EXPECT_EQ(done->good_bytes, int64_t(la.size() + lb.size() + 2));
  {
    auto w = BatchWriter::Open(path, done->good_bytes, 100, 100);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Append("{\"custom_id\": \"c\", \"error\": null}").ok());
    ASSERT_TRUE((*w)->Sync().ok());
    EXPECT_EQ((*w)->synced_lines(), 1);
  }
  EXPECT_EQ(ReadAll(path), la + "\n" + lb + "\n{\"custom_id\": \"c\", \"error\": null}\n");
  std::filesystem::remove(path);
}

TEST(BatchDone, MissingFileIsEmptyForeignFileIsRefused) {
  auto none = ReadBatchDone(TempPath("batch_done_missing"));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->lines, 0);
  const std::string path = TempPath("batch_done_foreign");
  { std::ofstream(path) << "hello world\n{\"custom_id\": \"a\", \"error\": null}\n"; }
  auto foreign = ReadBatchDone(path);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(foreign.status().message()).find("line 1"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(BatchWriter, SyncsInBatchesAndRejectsAMissingFolder) {
  const std::string path = TempPath("batch_writer");
  std::filesystem::remove(path);
  {
    auto w = BatchWriter::Open(path, -1, /*sync_every=*/2, /*sync_seconds=*/1000);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append("1").ok());
    EXPECT_EQ(ReadAll(path), "");  // buffered until the batch is full
    ASSERT_TRUE((*w)->Append("2").ok());
    EXPECT_EQ(ReadAll(path), "1\n2\n");
    ASSERT_TRUE((*w)->Append("3").ok());
  }
  EXPECT_EQ(ReadAll(path), "1\n2\n3\n");  // the destructor syncs the rest
  std::filesystem::remove(path);

  auto missing = BatchWriter::Open("/nonexistent-folder-facet/out.jsonl", -1, 1, 1);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(missing.status().message()).find("/nonexistent-folder-facet"), std::string::npos);
}

}  // namespace
}  // namespace facet::cli
