// OpenAI JSON -> Facet requests: every field we honour lands in the proto,
// and bad bodies (malformed JSON, wrong types, out-of-range values,
// unsupported features) are INVALID_ARGUMENT naming the field.
#include "coordinator/http_openai.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace facet {
namespace {

using ::testing::HasSubstr;

TEST(HttpOpenAiTest, ChatFieldsLandInTheRequest) {
  auto r = ParseChatCompletion(R"({"model": "m", "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
      "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 42, "stop": ["a", "b"], "n": 2,
      "stream": true, "stream_options": {"include_usage": true}, "logprobs": false, "user": "x"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->chat);
  EXPECT_EQ(r->model, "m");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->n, 2);
  const v1::ChatRequest& c = r->chat_request;
  ASSERT_EQ(c.messages_size(), 2);
  EXPECT_EQ(c.messages(1).role(), "user");
  EXPECT_EQ(c.messages(1).content(), "hi there");
  EXPECT_EQ(c.sampling().max_tokens(), 7);
  EXPECT_FLOAT_EQ(c.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(c.sampling().top_p(), 0.9f);
  EXPECT_EQ(c.sampling().seed(), 42u);
  ASSERT_EQ(c.sampling().stop_size(), 2);
  EXPECT_EQ(c.sampling().stop(1), "b");
}

TEST(HttpOpenAiTest, DefaultsFollowOpenAi) {
  auto r = ParseChatCompletion(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": null})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(r->n, 1);
  EXPECT_FLOAT_EQ(r->chat_request.sampling().temperature(), 1.0f);  // OpenAI's default, not greedy
  EXPECT_FALSE(r->chat_request.sampling().has_max_tokens());
  EXPECT_FALSE(r->chat_request.sampling().has_seed());
}

TEST(HttpOpenAiTest, CompletionPromptForms) {
  auto text = ParseCompletion(R"({"prompt": "Once", "max_tokens": 3, "stop": "."})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_FALSE(text->chat);
  EXPECT_EQ(text->generate_request.prompt(), "Once");
  EXPECT_EQ(text->generate_request.sampling().stop(0), ".");
  auto one = ParseCompletion(R"({"prompt": ["Once"]})");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->generate_request.prompt(), "Once");
  auto ids = ParseCompletion(R"({"prompt": [2, 10, 11]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(std::vector<int32_t>(ids->generate_request.prompt_token_ids().begin(),
                                   ids->generate_request.prompt_token_ids().end()),
              ::testing::ElementsAre(2, 10, 11));
}

TEST(HttpOpenAiTest, BadBodiesNameTheField) {
  struct Case {
    const char* body;
    const char* fragment;
  };
  const Case chat[] = {
      {"{not json", "not valid JSON"},
      {"[1, 2]", "JSON object"},
      {R"({})", "'messages' is required"},
      {R"({"messages": "hi"})", "'messages' must be a list"},
      {R"({"messages": [{"role": 3, "content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "only text"},
      {R"({"model": 5, "messages": []})", "'model' must be a string"},
      {R"({"messages": [], "max_tokens": -5})", "'max_tokens' must be >= 1, got -5"},
      {R"({"messages": [], "max_tokens": "12"})", "'max_tokens' must be an integer"},
      {R"({"messages": [], "max_tokens": 1.5})", "'max_tokens' must be an integer"},
      {R"({"messages": [], "max_completion_tokens": 0})", "'max_completion_tokens' must be >= 1"},
      {R"({"messages": [], "max_tokens": 99999999999})", "too large"},
      {R"({"messages": [], "temperature": "hot"})", "'temperature' must be a number"},
      {R"({"messages": [], "temperature": 3})", "'temperature' must be in [0, 2]"},
      {R"({"messages": [], "top_p": 0})", "'top_p' must be > 0"},
      {R"({"messages": [], "stream": "yes"})", "'stream' must be a boolean"},
      {R"({"messages": [], "stream_options": {"include_usage": true}})", "only allowed with stream"},
      {R"({"messages": [], "stop": 4})", "'stop' must be a string"},
      {R"({"messages": [], "stop": ["a", "b", "c", "d", "e"]})", "at most 4"},
      {R"({"messages": [], "n": 0})", "'n' must be in [1, 16]"},
      {R"({"messages": [], "seed": "x"})", "'seed' must be an integer"},
      {R"({"messages": [], "logprobs": true})", "'logprobs' is not supported"},
      {R"({"messages": [], "presence_penalty": 0.5})", "'presence_penalty' is not supported"},
  };
  for (const Case& c : chat) {
    auto r = ParseChatCompletion(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_THAT(r.status().message(), HasSubstr(c.fragment)) << c.body;
  }
  const Case completion[] = {
      {R"({})", "'prompt' is required"},
      {R"({"prompt": ""})", "'prompt' is empty"},
      {R"({"prompt": ["a", "b"]})", "'prompt' must be a string"},
      {R"({"prompt": [1, "b"]})", "token ids must be integers"},
      {R"({"prompt": [1, 99999999999]})", "out of range"},
      {R"({"prompt": {"a": 1}})", "'prompt' must be a string"},
      {R"({"prompt": "x", "echo": true})", "'echo' is not supported"},
  };
  for (const Case& c : completion) {
    auto r = ParseCompletion(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_THAT(r.status().message(), HasSubstr(c.fragment)) << c.body;
  }
}

TEST(HttpOpenAiTest, StatusMapping) {
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kOutOfRange), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInternal), 500);
  const nlohmann::json e = ErrorJson(404, "model \"x\" is not served");
  EXPECT_EQ(e["error"]["message"], "model \"x\" is not served");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["code"], "model_not_found");
}

TEST(HttpOpenAiTest, StreamChunks) {
  OpenAiRequest chat;
  chat.chat = true;
  nlohmann::json first = StreamChunk(chat, "id1", 5, "m", 0, "", true, EngineFinish::kNone);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  nlohmann::json last = StreamChunk(chat, "id1", 5, "m", 1, "end", false, EngineFinish::kLength);
  EXPECT_EQ(last["choices"][0]["index"], 1);
  EXPECT_EQ(last["choices"][0]["delta"]["content"], "end");
  EXPECT_FALSE(last["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  OpenAiRequest completion;
  completion.chat = false;
  nlohmann::json c = StreamChunk(completion, "id2", 5, "m", 0, "x", true, EngineFinish::kStop);
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "x");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(SseEvent(nlohmann::json{{"a", 1}}), "data: {\"a\":1}\n\n");
}

}  // namespace
}  // namespace facet
