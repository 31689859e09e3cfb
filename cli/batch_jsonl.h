// The files of `facet batch`: OpenAI batch-format input lines in, one result
// (or error) line per input line out. Kept free of the engine so the parsing,
// formatting and resume bookkeeping are unit-tested on their own.
//
// Input line (https://platform.openai.com/docs/guides/batch, field names only):
//   {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
//    "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}}
//   {"custom_id": "r2", "url": "/v1/completions", "body": {"prompt": "Once", "seed": 7}}
// `prompt` may also be a list of token ids (one prompt per line).
//
// Output line:
//   {"id": "batch_req_r1", "custom_id": "r1", "response": {"status_code": 200, "body":
//    {"object": "chat.completion", "model": M, "choices": [{"index": 0, "message":
//    {"role": "assistant", "content": "..."}, "finish_reason": "stop", "token_ids": [...]}],
//    "usage": {...}}}, "error": null}
// or, for a line at fault, "response": null and "error": {"code", "message"}.
// A line whose custom_id cannot be read is answered with "custom_id": null and
// its 1-based input "line" number, which then names it on a restart.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "facet/v1/facet.pb.h"

namespace facet::cli {

struct BatchLine {
  int64_t line_no = 0;    // 1-based line in the input file
  std::string custom_id;  // empty when the line has none we could read
  bool chat = false;      // /v1/chat/completions (messages) vs /v1/completions (prompt)
  v1::ChatRequest chat_request;          // when chat
  v1::GenerateRequest generate_request;  // when !chat
  absl::Status error;     // not OK: the line is at fault and is answered with this error

  // Names the line in the output and on restart: custom_id, or "line:N".
  std::string Key() const;
};

// Parses one input line. Never fails as a whole: a malformed line comes back
// with `error` set (INVALID_ARGUMENT naming the field). When the body sets no
// seed, one is derived from the key so a rerun samples the same tokens.
BatchLine ParseBatchLine(std::string_view text, int64_t line_no);

struct BatchCompletion {
  std::string text;
  std::vector<int32_t> token_ids;  // generated ids, a final stop token included
  std::string finish_reason;       // "stop" / "length"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// One output line (no trailing newline).
std::string FormatBatchResult(const BatchLine& line, const BatchCompletion& c,
                              const std::string& model_name);
std::string FormatBatchError(const BatchLine& line, const absl::Status& error);

// What an output file already holds.
struct BatchDone {
  absl::flat_hash_set<std::string> keys;  // Key() of every answered line
  int64_t lines = 0;
  int64_t errors = 0;
  int64_t completion_tokens = 0;
  int64_t good_bytes = 0;  // length of the prefix made of whole, valid lines
  bool torn_tail = false;  // the file ends in a partial line (a write cut short by a kill)
};

// Reads an output (or part) file; a missing file is empty. A partial last
// line is reported in torn_tail and not counted; a malformed line before the
// end is FAILED_PRECONDITION (not a file this command wrote).
absl::StatusOr<BatchDone> ReadBatchDone(const std::string& path);

// The key an output line was written for ("" when the line is not valid JSON
// or names nothing).
std::string BatchOutputKey(std::string_view line);

}  // namespace facet::cli
