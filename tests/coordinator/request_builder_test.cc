// Validation and preparation of public requests, without a server.
#include "coordinator/request_builder.h"

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace facet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The engine is never called by the builder; a model of 100 tokens of
// context and a 512-token vocabulary, BOS 2, EOS 1.
ServedModel IdOnlyModel() {
  ServedModel m;
  m.info.name = "tiny";
  m.info.family = ModelFamily::kGemma3;
  m.info.context_length = 100;
  m.info.vocab_size = 512;
  m.info.bos_id = 2;
  m.info.stop_token_ids = {1};
  return m;
}

v1::GenerateRequest Ids(std::initializer_list<int32_t> ids) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.add_prompt_token_ids(id);
  return r;
}

void ExpectError(const absl::StatusOr<EngineRequest>& r, absl::StatusCode code,
                 const std::string& fragment) {
  ASSERT_FALSE(r.ok()) << "expected " << absl::StatusCodeToString(code) << " with \"" << fragment
                       << "\"";
  EXPECT_EQ(r.status().code(), code) << r.status().message();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(fragment));
}

TEST(BuildGenerateRequest, TokenIdsPassThroughWithDefaults) {
  ServedModel m = IdOnlyModel();
  v1::GenerateRequest r = Ids({2, 10, 11});
  r.mutable_sampling()->add_stop_token_ids(7);
  auto req = BuildGenerateRequest(r, m, RequestDefaults{.max_tokens = 40});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_THAT(req->prompt, ElementsAre(2, 10, 11));
  EXPECT_EQ(req->sampling.max_tokens, 40);
  EXPECT_EQ(req->sampling.temperature, 0.0f);
  EXPECT_EQ(req->sampling.top_p, 1.0f);
  EXPECT_EQ(req->sampling.repetition_penalty, 1.0f);
  // The model's stop ids always apply, the client's are added.
  EXPECT_THAT(req->sampling.stop_token_ids, ElementsAre(1, 7));
  EXPECT_FALSE(req->request_id.empty());
  EXPECT_EQ(req->deadline, std::chrono::steady_clock::time_point::max());
}

TEST(BuildGenerateRequest, DefaultMaxTokensIsCappedByTheContext) {
  ServedModel m = IdOnlyModel();
  std::vector<int32_t> ids(90, 5);
  v1::GenerateRequest r;
  for (int32_t id : ids) r.add_prompt_token_ids(id);
  auto req = BuildGenerateRequest(r, m, RequestDefaults{.max_tokens = 512});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->sampling.max_tokens, 10);
}

TEST(BuildGenerateRequest, ExplicitFieldsAreKept) {
  ServedModel m = IdOnlyModel();
  v1::GenerateRequest r = Ids({3});
  r.set_request_id("mine");
  r.set_add_bos(true);
  auto* s = r.mutable_sampling();
  s->set_temperature(0.7f);
  s->set_top_k(20);
  s->set_top_p(0.9f);
  s->set_min_p(0.05f);
  s->set_repetition_penalty(1.1f);
  s->set_seed(1234);
  s->set_max_tokens(9);
  auto req = BuildGenerateRequest(r, m, {});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->request_id, "mine");
  EXPECT_THAT(req->prompt, ElementsAre(2, 3));  // add_bos prepended BOS
  EXPECT_EQ(req->sampling.temperature, 0.7f);
  EXPECT_EQ(req->sampling.top_k, 20);
  EXPECT_EQ(req->sampling.top_p, 0.9f);
  EXPECT_EQ(req->sampling.min_p, 0.05f);
  EXPECT_EQ(req->sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(req->sampling.seed, 1234u);
  EXPECT_EQ(req->sampling.max_tokens, 9);
}

TEST(BuildGenerateRequest, AddBosDoesNotDoubleABos) {
  ServedModel m = IdOnlyModel();
  v1::GenerateRequest r = Ids({2, 3});
  r.set_add_bos(true);
  auto req = BuildGenerateRequest(r, m, {});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_THAT(req->prompt, ElementsAre(2, 3));
}

TEST(BuildGenerateRequest, UnsetSeedsDiffer) {
  ServedModel m = IdOnlyModel();
  auto a = BuildGenerateRequest(Ids({3}), m, {});
  auto b = BuildGenerateRequest(Ids({3}), m, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->sampling.seed, b->sampling.seed);
  EXPECT_NE(a->request_id, b->request_id);
}

TEST(BuildGenerateRequest, RejectsBadInput) {
  ServedModel m = IdOnlyModel();
  ExpectError(BuildGenerateRequest(v1::GenerateRequest{}, m, {}),
              absl::StatusCode::kInvalidArgument, "prompt is empty");
  {
    v1::GenerateRequest r = Ids({3});
    r.set_prompt("text");
    ExpectError(BuildGenerateRequest(r, m, {}), absl::StatusCode::kInvalidArgument, "not both");
  }
  ExpectError(BuildGenerateRequest(Ids({3, 512}), m, {}), absl::StatusCode::kInvalidArgument,
              "prompt_token_ids[1] = 512");
  ExpectError(BuildGenerateRequest(Ids({-1}), m, {}), absl::StatusCode::kInvalidArgument,
              "prompt_token_ids[0] = -1");
  auto with = [&](auto set) {
    v1::GenerateRequest r = Ids({3});
    set(r.mutable_sampling());
    return BuildGenerateRequest(r, m, {});
  };
  ExpectError(with([](v1::SamplingParams* s) { s->set_temperature(-0.5f); }),
              absl::StatusCode::kInvalidArgument, "temperature");
  ExpectError(with([](v1::SamplingParams* s) { s->set_top_p(0.0f); }),
              absl::StatusCode::kInvalidArgument, "top_p");
  ExpectError(with([](v1::SamplingParams* s) { s->set_top_p(1.5f); }),
              absl::StatusCode::kInvalidArgument, "top_p");
  ExpectError(with([](v1::SamplingParams* s) { s->set_max_tokens(0); }),
              absl::StatusCode::kInvalidArgument, "max_tokens must be >= 1");
  ExpectError(with([](v1::SamplingParams* s) { s->set_top_k(-1); }),
              absl::StatusCode::kInvalidArgument, "top_k");
  ExpectError(with([](v1::SamplingParams* s) { s->add_stop_token_ids(600); }),
              absl::StatusCode::kInvalidArgument, "stop_token_ids");
  ExpectError(with([](v1::SamplingParams* s) { s->set_max_tokens(100); }),
              absl::StatusCode::kOutOfRange, "exceeds the context");
  // Stop strings need a tokenizer, and this model has none.
  ExpectError(with([](v1::SamplingParams* s) { s->add_stop("\n"); }),
              absl::StatusCode::kFailedPrecondition, "tokenizer");
  {
    v1::GenerateRequest r;
    r.set_prompt("hello");
    ExpectError(BuildGenerateRequest(r, m, {}), absl::StatusCode::kFailedPrecondition,
                "without a tokenizer");
  }
  {
    v1::GenerateRequest r;
    for (int i = 0; i < 100; ++i) r.add_prompt_token_ids(5);
    ExpectError(BuildGenerateRequest(r, m, {}), absl::StatusCode::kOutOfRange, "100 tokens");
  }
  {
    v1::GenerateRequest r = Ids({3});
    r.set_request_id(std::string(300, 'x'));
    ExpectError(BuildGenerateRequest(r, m, {}), absl::StatusCode::kInvalidArgument, "request_id");
  }
}

TEST(BuildChatRequest, NeedsATokenizerAndMessages) {
  ServedModel m = IdOnlyModel();
  ExpectError(BuildChatRequest(v1::ChatRequest{}, m, {}), absl::StatusCode::kInvalidArgument,
              "messages is empty");
  v1::ChatRequest r;
  auto* msg = r.add_messages();
  msg->set_role("user");
  msg->set_content("hi");
  ExpectError(BuildChatRequest(r, m, {}), absl::StatusCode::kFailedPrecondition, "tokenizer");
}

// With the real Gemma 3 tokenizer from shared/data (skipped when absent).
class ChatWithTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = std::string(FACET_SHARED_DIR) + "/data/tokenizers/gemma3/tokenizer.json";
    if (!std::filesystem::exists(path)) return;
    auto tok = Tokenizer::FromJsonFile(path);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = new std::shared_ptr<const Tokenizer>(std::make_shared<Tokenizer>(*std::move(tok)));
  }
  void SetUp() override {
    if (!tokenizer_) GTEST_SKIP() << "no Gemma 3 tokenizer in " << FACET_SHARED_DIR;
    model_ = IdOnlyModel();
    model_.info.vocab_size = (*tokenizer_)->vocab_size();
    model_.info.context_length = 4096;
    model_.tokenizer = *tokenizer_;
  }
  static std::shared_ptr<const Tokenizer>* tokenizer_;
  ServedModel model_;
};
std::shared_ptr<const Tokenizer>* ChatWithTokenizer::tokenizer_ = nullptr;

TEST_F(ChatWithTokenizer, RendersTheTemplateWithOneBos) {
  v1::ChatRequest r;
  auto* msg = r.add_messages();
  msg->set_role("user");
  msg->set_content("Why is the sky blue?");
  auto req = BuildChatRequest(r, model_, {});
  ASSERT_TRUE(req.ok()) << req.status();
  const Tokenizer& tok = *model_.tokenizer;
  ASSERT_GE(req->prompt.size(), 2u);
  EXPECT_EQ(req->prompt[0], tok.bos_id());
  EXPECT_NE(req->prompt[1], tok.bos_id());
  EXPECT_EQ(tok.Decode(req->prompt, /*skip_special=*/false),
            "<bos><start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n");
}

TEST_F(ChatWithTokenizer, RejectsMalformedConversations) {
  v1::ChatRequest r;
  for (const char* role : {"user", "user"}) {
    auto* msg = r.add_messages();
    msg->set_role(role);
    msg->set_content("x");
  }
  ExpectError(BuildChatRequest(r, model_, {}), absl::StatusCode::kInvalidArgument, "alternate");
  r.mutable_messages(1)->set_role("robot");
  ExpectError(BuildChatRequest(r, model_, {}), absl::StatusCode::kInvalidArgument,
              "messages[1].role is \"robot\"");
}

TEST_F(ChatWithTokenizer, TextPromptsAddBosLikeTheTokenizer) {
  v1::GenerateRequest r;
  r.set_prompt("Hello");
  auto with_default = BuildGenerateRequest(r, model_, {});
  ASSERT_TRUE(with_default.ok()) << with_default.status();
  EXPECT_EQ(with_default->prompt, model_.tokenizer->Encode("Hello", model_.tokenizer->adds_bos()));
  r.set_add_bos(false);
  auto without = BuildGenerateRequest(r, model_, {});
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(without->prompt, model_.tokenizer->Encode("Hello", false));
  r.mutable_sampling()->add_stop("\n\n");
  auto with_stop = BuildGenerateRequest(r, model_, {});
  ASSERT_TRUE(with_stop.ok()) << with_stop.status();
  EXPECT_THAT(with_stop->stop_strings, ElementsAre("\n\n"));
}

}  // namespace
}  // namespace facet
