// Gemma chat templates, written out in C++ instead of evaluating Jinja. Each
// format reproduces its official template (spec §8.2): Gemma 3 matches
// shared/data/tokenizers/gemma3/golden-chat-template.jsonl byte for byte.
//
// The rendered text starts with the literal "<bos>", so encode it with
// Tokenizer::Encode(text, /*add_bos=*/false) to avoid a second BOS.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/statusor.h"

namespace facet {

struct ContentPart {
  enum class Type { kText, kImage, kAudio, kVideo };
  Type type = Type::kText;
  std::string text;  // kText only
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (rendered as "model"), ...
  // A string content is one text part.
  std::vector<ContentPart> parts;

  static ChatMessage Text(std::string role, std::string text) {
    return ChatMessage{std::move(role), {ContentPart{ContentPart::Type::kText, std::move(text)}}};
  }
};

enum class ChatFormat { kGemma2, kGemma3, kGemma4 };

struct ChatOptions {
  // Gemma 4 only: puts <|think|> at the start of the system turn instead of
  // closing the thought channel in the generation prompt.
  bool enable_thinking = false;
};

// INVALID_ARGUMENT for conversations the official template rejects (Gemma 2/3:
// roles not alternating user/assistant, Gemma 2: a system message) and for
// media the format cannot carry.
absl::StatusOr<std::string> RenderChat(ChatFormat format, std::span<const ChatMessage> messages,
                                       bool add_generation_prompt, const ChatOptions& options = {});

// Parses OpenAI/HF-style messages: [{"role": ..., "content": "text" |
// [{"type": "text", "text": ...}, {"type": "image"}, ...]}, ...].
absl::StatusOr<std::vector<ChatMessage>> ParseChatMessages(const nlohmann::json& messages);

// "gemma2" / "gemma3" / "gemma4".
absl::StatusOr<ChatFormat> ChatFormatFromName(std::string_view name);

}  // namespace facet
