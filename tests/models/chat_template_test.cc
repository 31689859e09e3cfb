// Chat template tests. Gemma 3 renders are checked against the HF
// transformers output in shared/data/tokenizers/gemma3/golden-chat-template.jsonl;
// Gemma 2 and Gemma 4 expectations are written out by hand from spec §8.2 and
// the templates cited in models/chat_template.cc.
#include "models/chat_template.h"

#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace facet {
namespace {

using ::testing::HasSubstr;
using Type = ContentPart::Type;

const std::string kGolden =
    std::string(FACET_SHARED_DIR) + "/data/tokenizers/gemma3/golden-chat-template.jsonl";

std::string Render(ChatFormat f, const std::vector<ChatMessage>& m, bool gen,
                   ChatOptions options = {}) {
  auto r = RenderChat(f, m, gen, options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::string();
}

TEST(ChatTemplateGemma3, MatchesEveryGoldenLine) {
  std::ifstream in(kGolden);
  if (!in) GTEST_SKIP() << "no " << kGolden;
  int lines = 0, errors = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    ++lines;
    const auto j = nlohmann::json::parse(line);
    auto messages = ParseChatMessages(j["messages"]);
    ASSERT_TRUE(messages.ok()) << messages.status() << "\n" << line;
    auto rendered = RenderChat(ChatFormat::kGemma3, *messages, j["add_generation_prompt"].get<bool>());
    if (j.contains("error")) {
      ++errors;
      ASSERT_FALSE(rendered.ok()) << line;
      EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(rendered.status().message()),
                  HasSubstr(j["error"].get<std::string>()));
    } else {
      ASSERT_TRUE(rendered.ok()) << rendered.status() << "\n" << line;
      EXPECT_EQ(*rendered, j["rendered"].get<std::string>()) << line;
    }
  }
  EXPECT_EQ(lines, 11);
  EXPECT_EQ(errors, 1);
}

TEST(ChatTemplateGemma3, TrimsUnicodeWhitespaceAsJinjaDoes) {
  // Python's str.strip() removes U+3000 and U+00A0 but not U+200B.
  const std::vector<ChatMessage> m = {ChatMessage::Text("user", "\xE3\x80\x80 Hi\xC2\xA0\n")};
  EXPECT_EQ(Render(ChatFormat::kGemma3, m, false),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n");
  const std::vector<ChatMessage> zw = {ChatMessage::Text("user", "\xE2\x80\x8BHi")};
  EXPECT_EQ(Render(ChatFormat::kGemma3, zw, false),
            "<bos><start_of_turn>user\n\xE2\x80\x8BHi<end_of_turn>\n");
}

TEST(ChatTemplateGemma3, RejectsAudio) {
  std::vector<ChatMessage> m = {{"user", {{Type::kAudio, ""}}}};
  auto r = RenderChat(ChatFormat::kGemma3, m, true);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("audio"));
}

TEST(ChatTemplateGemma2, RendersTurns) {
  const std::vector<ChatMessage> m = {ChatMessage::Text("user", "Hi"),
                                      ChatMessage::Text("assistant", " Hello! "),
                                      ChatMessage::Text("user", "Bye\n")};
  EXPECT_EQ(Render(ChatFormat::kGemma2, m, true),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n"
            "<start_of_turn>model\n");
  EXPECT_EQ(Render(ChatFormat::kGemma2, {m[0]}, false), "<bos><start_of_turn>user\nHi<end_of_turn>\n");
}

TEST(ChatTemplateGemma2, RejectsSystemAlternationAndImages) {
  const std::vector<ChatMessage> sys = {ChatMessage::Text("system", "x"),
                                        ChatMessage::Text("user", "Hi")};
  auto r = RenderChat(ChatFormat::kGemma2, sys, true);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("System role not supported"));

  const std::vector<ChatMessage> twice = {ChatMessage::Text("user", "a"),
                                          ChatMessage::Text("user", "b")};
  r = RenderChat(ChatFormat::kGemma2, twice, true);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("must alternate"));

  const std::vector<ChatMessage> image = {{"user", {{Type::kText, "see"}, {Type::kImage, ""}}}};
  EXPECT_FALSE(RenderChat(ChatFormat::kGemma2, image, true).ok());
}

TEST(ChatTemplateGemma4, UserOnlyClosesTheThoughtChannel) {
  const std::vector<ChatMessage> m = {ChatMessage::Text("user", " Hi ")};
  EXPECT_EQ(Render(ChatFormat::kGemma4, m, true),
            "<bos><|turn>user\nHi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>");
  EXPECT_EQ(Render(ChatFormat::kGemma4, m, false), "<bos><|turn>user\nHi<turn|>\n");
}

TEST(ChatTemplateGemma4, SystemTurnAndThinking) {
  const std::vector<ChatMessage> m = {
      ChatMessage::Text("system", "Be brief.\n"), ChatMessage::Text("user", "Hi"),
      ChatMessage::Text("assistant", "Hello"), ChatMessage::Text("user", "Why?")};
  EXPECT_EQ(Render(ChatFormat::kGemma4, m, true),
            "<bos><|turn>system\nBe brief.<turn|>\n"
            "<|turn>user\nHi<turn|>\n<|turn>model\nHello<turn|>\n<|turn>user\nWhy?<turn|>\n"
            "<|turn>model\n<|channel>thought\n<channel|>");
  EXPECT_EQ(Render(ChatFormat::kGemma4, m, true, {.enable_thinking = true}),
            "<bos><|turn>system\n<|think|>Be brief.<turn|>\n"
            "<|turn>user\nHi<turn|>\n<|turn>model\nHello<turn|>\n<|turn>user\nWhy?<turn|>\n"
            "<|turn>model\n");
  // Thinking without a system message still opens a system turn for <|think|>.
  EXPECT_EQ(Render(ChatFormat::kGemma4, {m[1]}, true, {.enable_thinking = true}),
            "<bos><|turn>system\n<|think|><turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n");
}

TEST(ChatTemplateGemma4, EarlierReasoningIsStrippedAndMediaPlaced) {
  const std::vector<ChatMessage> m = {
      {"user", {{Type::kText, "Describe "}, {Type::kImage, ""}, {Type::kAudio, ""}}},
      ChatMessage::Text("assistant", "<|channel>thought\nlooks red<channel|> A red car. ")};
  EXPECT_EQ(Render(ChatFormat::kGemma4, m, false),
            "<bos><|turn>user\nDescribe\n\n<|image|>\n\n<|audio|><turn|>\n"
            "<|turn>model\nA red car.<turn|>\n");
}

TEST(ChatTemplateMessages, ParsesStringsAndParts) {
  const auto j = nlohmann::json::parse(R"([
    {"role": "system", "content": "S"},
    {"role": "user", "content": [{"type": "text", "text": "T"}, {"type": "image", "url": "x"}]}])");
  auto m = ParseChatMessages(j);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0].role, "system");
  ASSERT_EQ((*m)[0].parts.size(), 1u);
  EXPECT_EQ((*m)[0].parts[0].text, "S");
  ASSERT_EQ((*m)[1].parts.size(), 2u);
  EXPECT_EQ((*m)[1].parts[0].type, Type::kText);
  EXPECT_EQ((*m)[1].parts[1].type, Type::kImage);
}

TEST(ChatTemplateMessages, ErrorsNameTheMessage) {
  for (const char* bad : {R"({"role": "user"})", R"([{"content": "x"}])",
                          R"([{"role": "user", "content": 3}])",
                          R"([{"role": "user", "content": [{"type": "image_url"}]}])",
                          R"([{"role": "user", "content": [{"type": "text"}]}])"}) {
    auto m = ParseChatMessages(nlohmann::json::parse(bad));
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  auto m = ParseChatMessages(
      nlohmann::json::parse(R"([{"role": "user", "content": "a"}, {"role": "user", "content": 1}])"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("messages[1]"));
}

TEST(ChatTemplateMessages, FormatNames) {
  EXPECT_EQ(*ChatFormatFromName("gemma3"), ChatFormat::kGemma3);
  EXPECT_EQ(*ChatFormatFromName("gemma4"), ChatFormat::kGemma4);
  EXPECT_FALSE(ChatFormatFromName("llama").ok());
}

}  // namespace
}  // namespace facet
