// A Gemma model from a llama.cpp GGUF file: the config from its metadata, the
// weights as zero-copy (possibly quantized) views, the tokenizer from its
// embedded vocabulary. spec/gemma-architecture.md §7.3–§7.4.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "models/config.h"
#include "models/gguf.h"
#include "models/tokenizer.h"
#include "models/weights.h"

namespace facet {

// gemma2 / gemma3 / gemma4 metadata → ModelConfig. The metadata is turned into
// the equivalent HF config.json and parsed by ParseModelConfig, so both paths
// share every derived rule (layer pattern, RoPE per kind, validation). What
// GGUF does not store is derived as llama.cpp does: the sliding RoPE base
// (1e4), the Gemma 2/3 layer pattern, and the query scale (27B:
// 1/sqrt(H/Nq), otherwise 1/sqrt(head_dim)).
absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& gguf);

// Weights for `config`. llama.cpp already folded Gemma 2/3's "+1" into the
// norm weights, so nothing is added here. Quantized matrices stay quantized
// (zero copy) unless `dequantize` asks for fp32 copies: the kernels then run
// the reference's exact arithmetic (fp32 activations × dequantized weights)
// instead of ggml-style 8-bit activation blocks, at 4-8x the memory.
//
// With a ShardSpec only this rank's slices are used: rows stay zero-copy
// views (a quantized row is whole blocks); o_proj/down_proj column slices
// are copied block-wise when the split falls on a quant-block boundary, else
// those rows are dequantized to fp32 first.
absl::StatusOr<ModelWeights> LoadGgufWeights(const ModelConfig& config,
                                             std::shared_ptr<const GgufFile> gguf,
                                             bool dequantize = false,
                                             const ShardSpec& shard = {});

// The tokenizer embedded in the GGUF (tokenizer.ggml.*).
absl::StatusOr<Tokenizer> TokenizerFromGguf(const GgufFile& gguf);

}  // namespace facet
