// The Gemma chat templates as code. Sources: Gemma 2's tokenizer_config.json
// template, Gemma 3's (shared/data/tokenizers/gemma3/tokenizer_config.json),
// and for Gemma 4 llama.cpp models/templates/gemma4.jinja (text and media
// parts; tool declarations and tool calls are not supported here).
#include "models/chat_template.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace facet {
namespace {

using Type = ContentPart::Type;

constexpr char kRolesMustAlternate[] =
    "Conversation roles must alternate user/assistant/user/assistant/...";

// Python's str.isspace() set, which Jinja's `trim` filter strips.
bool IsPythonSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes the code point in s[begin, end) (assumed one well-formed character;
// anything else decodes to a non-space value).
char32_t DecodeAt(std::string_view s, size_t begin, size_t end) {
  const auto b0 = static_cast<unsigned char>(s[begin]);
  const size_t n = end - begin;
  if (n == 1) return b0;
  char32_t c = n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[begin + k]) & 0x3F);
  return c;
}

size_t CharLen(unsigned char b0) {
  return b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 1;
}

std::string Trim(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    const size_t n = std::min(CharLen(static_cast<unsigned char>(s[begin])), s.size() - begin);
    if (!IsPythonSpace(DecodeAt(s, begin, begin + n))) break;
    begin += n;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    if (!IsPythonSpace(DecodeAt(s, start, end))) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

std::string_view TypeName(Type t) {
  switch (t) {
    case Type::kText:
      return "text";
    case Type::kImage:
      return "image";
    case Type::kAudio:
      return "audio";
    case Type::kVideo:
      return "video";
  }
  return "?";
}

absl::Status UnsupportedPart(std::string_view format, size_t index, Type t) {
  return absl::InvalidArgumentError(absl::StrCat("message ", index, ": the ", std::string(format),
                                                 " chat format has no ", std::string(TypeName(t)),
                                                 " input"));
}

// All text parts joined, for turns that may only hold text (Gemma 2 turns,
// Gemma 4 system turn).
absl::StatusOr<std::string> TextOnly(const ChatMessage& m, std::string_view format, size_t index) {
  std::string text;
  for (const ContentPart& p : m.parts) {
    if (p.type != Type::kText) return UnsupportedPart(format, index, p.type);
    text += p.text;
  }
  return text;
}

std::string_view TurnRole(const std::string& role) {
  return role == "assistant" ? std::string_view("model") : std::string_view(role);
}

absl::Status CheckAlternation(const ChatMessage& m, size_t loop_index, size_t message_index) {
  if ((m.role == "user") != (loop_index % 2 == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(kRolesMustAlternate, " (message ", message_index,
                                                   " has role \"", m.role, "\")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RenderGemma2(std::span<const ChatMessage> messages, bool add_gen) {
  std::string out = "<bos>";
  if (!messages.empty() && messages[0].role == "system") {
    return absl::InvalidArgumentError("System role not supported (the Gemma 2 chat format)");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (auto s = CheckAlternation(messages[i], i, i); !s.ok()) return s;
    auto text = TextOnly(messages[i], "Gemma 2", i);
    if (!text.ok()) return text.status();
    absl::StrAppend(&out, "<start_of_turn>", std::string(TurnRole(messages[i].role)), "\n",
                    Trim(*text), "<end_of_turn>\n");
  }
  if (add_gen) out += "<start_of_turn>model\n";
  return out;
}

absl::StatusOr<std::string> RenderGemma3(std::span<const ChatMessage> messages, bool add_gen) {
  std::string out = "<bos>";
  std::string first_user_prefix;
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    // The template takes the whole string, or only the first part of a list,
    // untrimmed.
    const auto& parts = messages[0].parts;
    if (parts.empty() || parts[0].type != Type::kText) {
      return absl::InvalidArgumentError("message 0: a Gemma 3 system message must start with text");
    }
    first_user_prefix = parts[0].text + "\n\n";
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (auto s = CheckAlternation(m, i - first, i); !s.ok()) return s;
    absl::StrAppend(&out, "<start_of_turn>", std::string(TurnRole(m.role)), "\n",
                    i == first ? first_user_prefix : std::string());
    for (const ContentPart& p : m.parts) {
      if (p.type == Type::kText) {
        out += Trim(p.text);
      } else if (p.type == Type::kImage) {
        out += "<start_of_image>";
      } else {
        return UnsupportedPart("Gemma 3", i, p.type);
      }
    }
    out += "<end_of_turn>\n";
  }
  if (add_gen) out += "<start_of_turn>model\n";
  return out;
}

// Earlier model turns are re-rendered without their reasoning: every
// "<|channel>…<channel|>" block is dropped (gemma4.jinja `strip_thinking`).
std::string StripThinking(std::string_view text) {
  std::string out;
  constexpr std::string_view kOpen = "<|channel>", kClose = "<channel|>";
  size_t pos = 0;
  while (true) {
    const size_t close = text.find(kClose, pos);
    const std::string_view part =
        text.substr(pos, close == std::string_view::npos ? std::string_view::npos : close - pos);
    out += part.substr(0, part.find(kOpen));
    if (close == std::string_view::npos) break;
    pos = close + kClose.size();
  }
  return Trim(out);
}

absl::StatusOr<std::string> RenderGemma4(std::span<const ChatMessage> messages, bool add_gen,
                                         const ChatOptions& options) {
  std::string out = "<bos>";
  size_t first = 0;
  const bool has_system =
      !messages.empty() && (messages[0].role == "system" || messages[0].role == "developer");
  if (options.enable_thinking || has_system) {
    out += "<|turn>system\n";
    if (options.enable_thinking) out += "<|think|>";
    if (has_system) {
      auto text = TextOnly(messages[0], "Gemma 4", 0);
      if (!text.ok()) return text.status();
      out += Trim(*text);
      first = 1;
    }
    out += "<turn|>\n";
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::string_view role = TurnRole(m.role);
    absl::StrAppend(&out, "<|turn>", std::string(role), "\n");
    for (const ContentPart& p : m.parts) {
      switch (p.type) {
        case Type::kText:
          out += role == "model" ? StripThinking(p.text) : Trim(p.text);
          break;
        case Type::kImage:
          out += "\n\n<|image|>\n\n";
          break;
        case Type::kAudio:
          out += "<|audio|>";
          break;
        case Type::kVideo:
          out += "\n\n<|video|>\n\n";
          break;
      }
    }
    out += "<turn|>\n";
  }
  if (add_gen) {
    out += "<|turn>model\n";
    if (!options.enable_thinking) out += "<|channel>thought\n<channel|>";
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> RenderChat(ChatFormat format, std::span<const ChatMessage> messages,
                                       bool add_generation_prompt, const ChatOptions& options) {
  switch (format) {
    case ChatFormat::kGemma2:
      return RenderGemma2(messages, add_generation_prompt);
    case ChatFormat::kGemma3:
      return RenderGemma3(messages, add_generation_prompt);
    case ChatFormat::kGemma4:
      return RenderGemma4(messages, add_generation_prompt, options);
  }
  return absl::InvalidArgumentError("unknown chat format");
}

absl::StatusOr<std::vector<ChatMessage>> ParseChatMessages(const nlohmann::json& messages) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a JSON array");
  std::vector<ChatMessage> out;
  out.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::json& m = messages[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " is not an object"));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has no string \"role\""));
    }
    ChatMessage msg;
    msg.role = role->get<std::string>();
    auto content = m.find("content");
    if (content == m.end() || !(content->is_string() || content->is_array())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".content must be a string or a list of parts"));
    }
    if (content->is_string()) {
      msg.parts.push_back({Type::kText, content->get<std::string>()});
      out.push_back(std::move(msg));
      continue;
    }
    for (size_t k = 0; k < content->size(); ++k) {
      const nlohmann::json& part = (*content)[k];
      const std::string part_where = absl::StrCat(where, ".content[", k, "]");
      auto type = part.is_object() ? part.find("type") : part.end();
      if (!part.is_object() || type == part.end() || !type->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(part_where, " has no string \"type\""));
      }
      const std::string t = type->get<std::string>();
      if (t == "text") {
        auto text = part.find("text");
        if (text == part.end() || !text->is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(part_where, " has no string \"text\""));
        }
        msg.parts.push_back({Type::kText, text->get<std::string>()});
      } else if (t == "image") {
        msg.parts.push_back({Type::kImage, ""});
      } else if (t == "audio") {
        msg.parts.push_back({Type::kAudio, ""});
      } else if (t == "video") {
        msg.parts.push_back({Type::kVideo, ""});
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            part_where, " has unknown type \"", t, "\" (expected text, image, audio or video)"));
      }
    }
    out.push_back(std::move(msg));
  }
  return out;
}

absl::StatusOr<ChatFormat> ChatFormatFromName(std::string_view name) {
  if (name == "gemma2") return ChatFormat::kGemma2;
  if (name == "gemma3") return ChatFormat::kGemma3;
  if (name == "gemma4") return ChatFormat::kGemma4;
  return absl::InvalidArgumentError(absl::StrCat("unknown chat format \"", std::string(name),
                                                 "\" (expected gemma2, gemma3 or gemma4)"));
}

}  // namespace facet
