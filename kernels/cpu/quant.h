// ggml (GGUF) block formats on the CPU: row dequantization, reference
// quantizers for making test data (quant.cc), and a matmul that reads the
// blocks directly (quant_matmul.cc). Block layouts follow ggml-common.h
// (block_q8_0, block_q4_0, block_q5_0, block_q4_K, block_q5_K, block_q6_K;
// see quant_blocks.h); the value each block stands for follows the
// dequantize_row_* functions of ggml-quants.c.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "core/thread_pool.h"
#include "kernels/cpu/weight.h"

namespace facet {

// True for the block formats (Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K), false for
// F32/F16/BF16.
bool IsQuantized(WeightFormat f);

// dst[0, n) = the values of `n` consecutive elements stored at `src` in
// format `f` (any format, float ones included). n must be a multiple of
// BlockSize(f).
absl::Status DequantizeRow(WeightFormat f, const void* src, float* dst, int64_t n);

// Quantizes n values (a multiple of BlockSize(f)) into RowBytes(f, n) bytes at
// `dst`. Plain round-to-nearest with scales chosen so no value is clipped
// (Q4_0/Q5_0: by at most one step, on the side opposite the largest value,
// as in ggml): it makes valid blocks for tests and tools, not ggml's
// error-minimising search.
// Supports the block formats plus F32/F16/BF16.
absl::Status QuantizeRowRef(WeightFormat f, const float* src, void* dst, int64_t n);

// y[m, w.rows] = x[m, w.cols] · wᵀ for a block-format weight, read in place.
// Each row of x is first quantized to int8 in blocks (256 values for the
// K-quants, 32 for Q8_0/Q4_0/Q5_0: one float scale each, like ggml's
// Q8_K/Q8_0 activations), then every output is an integer dot product per
// block scaled in float. The int8 step adds at most Σ|w_i|·amax(x-block)/254
// of error. Work is split over output rows on `pool` (nullptr: calling thread
// only); products too small to pay for waking the pool run on the caller.
// Batch invariant: every row of y is the same bits whatever m is, wherever
// the row sits in x, whatever the other rows hold and whatever the pool size,
// so a decode token batched with a prefill chunk gets the bits it gets alone.
absl::Status QuantMatMul(const float* x, int64_t m, const WeightRef& w, float* y,
                         ThreadPool* pool);

// Name of the SIMD target QuantMatMul runs on here ("AVX3", "AVX2", ...).
const char* QuantSimdTarget();

}  // namespace facet
