#!/usr/bin/env python3
"""Golden reference logits of the real Gemma 3 270M model (Q4_K_M GGUF), computed by HF transformers.

The GGUF file (fetched by scripts/fetch-demo-model.sh) is loaded two ways:
  1. transformers' own GGUF loader (`from_pretrained(dir, gguf_file=...)`), which dequantizes every
     tensor with the `gguf` package and subtracts the +1 that llama.cpp folded into the norms;
  2. by hand: gguf.GGUFReader + gguf.quants.dequantize, the names mapped to HF's, 1 subtracted from
     every `*norm.weight`, loaded into a Gemma3ForCausalLM whose Gemma3TextConfig is derived here from
     the gemma3.* metadata with llama.cpp's rules for what GGUF does not store (spec §7.4).
The script asserts that both give bit-identical weights and identical logits, so neither the name
mapping nor the config of either path is taken on trust. The golden data comes from path 1.

Everything runs in float32 on the exact dequantized values, eager attention, one CPU thread.
For each prompt: prefill, then NUM_DECODE_STEPS greedy steps through the KV cache. Only the top-50
logits are stored (a full row is 1 MB); see README.md in this folder.

Usage:
  /work/venv-golden/bin/python scripts/golden/make_gguf_golden.py \
      [--gguf ~/.cache/facet/gemma3-270m/gemma-3-270m-q4_k_m.gguf] \
      [--tokenizer /work/shared/data/tokenizers/gemma3] \
      [--out tests/data/golden/gemma3-270m-q4km]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from importlib.metadata import version as pkg_version

import gguf
import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

NUM_DECODE_STEPS = 8
TOP_K = 50
# Gemma 3 GGUF stores neither the sliding-layer RoPE base nor the layer pattern; llama.cpp hard-codes
# both for the gemma3 architecture (spec §4.5, §4.7, §7.4).
SLIDING_ROPE_THETA = 10000.0
SLIDING_WINDOW_PATTERN = 6
KV_RECOMPUTE_TOL = 1e-4
# Greedy steps whose top-2 gap is below this are flagged: an engine that accumulates differently
# (or quantizes activations) could legitimately pick the other token there.
SMALL_MARGIN = 0.05

PLAIN_PROMPTS = [
    "The capital of France is",
    # About 40 tokens of ordinary English prose.
    "The old lighthouse keeper climbed the narrow spiral staircase every evening at sunset, "
    "carrying a small brass lantern, a thermos of strong black coffee, and a worn notebook in "
    "which he recorded",
    # Latin script with accents, CJK and Cyrillic: exercises multi-byte tokens.
    "Bonjour, je m'appelle Marie. 東京は日本の首都です。Москва — столица",
]
CHAT_MESSAGE = "What is the capital of France?"
CHAT_TEMPLATE = "<bos><start_of_turn>user\n{msg}<end_of_turn>\n<start_of_turn>model\n"

CHECKSUM_TENSORS = [
    "token_embd.weight",
    "blk.0.attn_q.weight",
    "blk.0.ffn_down.weight",
    "output_norm.weight",
]

# GGUF tensor name suffix -> HF Gemma3ForCausalLM name suffix (spec §7.2, §7.3).
LAYER_NAME_MAP = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def field(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            sys.exit(f"error: GGUF metadata key {key} is missing")
        return default
    return f.contents()


def dequantize(t) -> np.ndarray:
    """Returns the tensor as float32 in numpy/PyTorch order ([ne1, ne0] = [out, in])."""
    arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
    # The reader already presents the data with the ggml dims reversed; check, don't assume.
    expected = tuple(int(n) for n in reversed(t.shape))
    assert arr.shape == expected, (t.name, arr.shape, expected)
    return arr


def config_from_gguf(reader: gguf.GGUFReader) -> Gemma3TextConfig:
    arch = field(reader, "general.architecture")
    if arch != "gemma3":
        sys.exit(f"error: expected a gemma3 GGUF, got architecture {arch!r}")
    p = "gemma3."
    n_layers = int(field(reader, p + "block_count"))
    hidden = int(field(reader, p + "embedding_length"))
    n_heads = int(field(reader, p + "attention.head_count"))
    head_dim = int(field(reader, p + "attention.key_length"))
    assert int(field(reader, p + "attention.value_length")) == head_dim
    # llama.cpp derives the query scale from the model type (spec §4.3): n_embd/n_head for 27B
    # (62 layers), head_dim for every other Gemma 3.
    qpas = hidden // n_heads if n_layers == 62 else head_dim
    full_rope = {"rope_type": "default", "rope_theta": float(field(reader, p + "rope.freq_base"))}
    scaling = field(reader, p + "rope.scaling.type", "none")
    if scaling == "linear":
        full_rope = dict(full_rope, rope_type="linear",
                         factor=float(field(reader, p + "rope.scaling.factor")))
    elif scaling != "none":
        sys.exit(f"error: unsupported rope.scaling.type {scaling!r}")
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(field(reader, p + "feed_forward_length")),
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=int(field(reader, p + "attention.head_count_kv")),
        head_dim=head_dim,
        query_pre_attn_scalar=qpas,
        sliding_window=int(field(reader, p + "attention.sliding_window")),
        layer_types=[
            "full_attention" if (i + 1) % SLIDING_WINDOW_PATTERN == 0 else "sliding_attention"
            for i in range(n_layers)
        ],
        max_position_embeddings=int(field(reader, p + "context_length")),
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": SLIDING_ROPE_THETA},
            "full_attention": full_rope,
        },
        final_logit_softcapping=field(reader, p + "final_logit_softcapping", 0.0) or None,
        attn_logit_softcapping=None,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=float(field(reader, p + "attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in {t.name for t in reader.tensors},
        pad_token_id=0,
        bos_token_id=int(field(reader, "tokenizer.ggml.bos_token_id")),
        eos_token_id=int(field(reader, "tokenizer.ggml.eos_token_id")),
    )


def hf_name(gguf_name: str) -> str:
    base = gguf_name.removesuffix(".weight")
    if base == "token_embd":
        return "model.embed_tokens.weight"
    if base == "output_norm":
        return "model.norm.weight"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in LAYER_NAME_MAP:
        return f"model.layers.{parts[1]}.{LAYER_NAME_MAP[parts[2]]}.weight"
    sys.exit(f"error: no HF name for GGUF tensor {gguf_name}")


def load_manual(reader: gguf.GGUFReader) -> Gemma3ForCausalLM:
    config = config_from_gguf(reader)
    config._attn_implementation = "eager"
    torch.manual_seed(0)  # the random init is overwritten below; this only makes the run repeatable
    model = Gemma3ForCausalLM(config)
    state = {}
    for t in reader.tensors:
        w = dequantize(t)
        if t.name.endswith("norm.weight"):
            # llama.cpp's converter stores 1+w; HF's Gemma3RMSNorm multiplies by (1+w).
            w = w - np.float32(1.0)
        state[hf_name(t.name)] = torch.from_numpy(np.ascontiguousarray(w))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    # Tied: the LM head is the (unscaled) embedding matrix (spec §1.2).
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.eval()


def load_hf(gguf_path: str) -> Gemma3ForCausalLM:
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf_path),
        gguf_file=os.path.basename(gguf_path),
        dtype=torch.float32,
        attn_implementation="eager",
    )
    return model.eval()


def compare_models(hf: torch.nn.Module, manual: torch.nn.Module, ids: list[list[int]]) -> dict:
    hf_sd, man_sd = hf.state_dict(), manual.state_dict()
    assert set(hf_sd) == set(man_sd), set(hf_sd) ^ set(man_sd)
    for k in hf_sd:
        assert hf_sd[k].dtype == torch.float32, (k, hf_sd[k].dtype)
        assert torch.equal(hf_sd[k], man_sd[k]), f"{k}: HF's GGUF loader and the manual load differ"
    for key in ("query_pre_attn_scalar", "sliding_window", "layer_types", "head_dim",
                "num_key_value_heads", "final_logit_softcapping", "attn_logit_softcapping"):
        a, b = getattr(hf.config, key), getattr(manual.config, key)
        assert a == b, (key, a, b)
    worst = 0.0
    for p in ids:
        a = forward_logits(hf, p)
        b = forward_logits(manual, p)
        worst = max(worst, float((a - b).abs().max()))
    assert worst <= 1e-5, worst
    return {"weights_bit_identical": True, "max_abs_logit_diff": worst}


def forward_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()


def out_cache(out):
    # transformers 5.x renamed past_key_values to cache; accept both spellings.
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def kv_decode(model, prompt: list[int], steps: int):
    """Prefill with a cache, then feed greedy tokens one at a time."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        cache = out_cache(out)
        prefill = out.logits[0].float()
        greedy = [int(prefill[-1].argmax())]
        decode = []
        for _ in range(steps):
            out = model(input_ids=torch.tensor([[greedy[-1]]]), cache=cache, use_cache=True)
            cache = out_cache(out)
            step = out.logits[0, -1].float()
            decode.append(step)
            greedy.append(int(step.argmax()))
    return prefill, torch.stack(decode), greedy


def top2_margins(rows: torch.Tensor) -> list[float]:
    top = torch.topk(rows, 2, dim=-1).values
    return [float(x) for x in (top[..., 0] - top[..., 1]).reshape(-1)]


def topk(rows: torch.Tensor):
    v, i = torch.topk(rows, TOP_K, dim=-1)  # sorted, largest first
    return i.to(torch.int32).contiguous(), v.to(torch.float32).contiguous()


def row_stats(rows: torch.Tensor) -> torch.Tensor:
    """[..., 3] = mean, std and logsumexp over the whole vocab, computed in float64."""
    r = rows.double()
    return torch.stack([r.mean(-1), r.std(-1), torch.logsumexp(r, -1)], -1).float().contiguous()


def tensor_checksums(reader: gguf.GGUFReader) -> list[dict]:
    by_name = {t.name: t for t in reader.tensors}
    out = []
    for name in CHECKSUM_TENSORS:
        t = by_name[name]
        w = dequantize(t).astype(np.float64)
        out.append({
            "name": name,
            "ggml_type": t.tensor_type.name,
            "ne": [int(n) for n in t.shape],
            "sum": float(w.sum()),
            "sum_abs": float(np.abs(w).sum()),
            "first_values": [float(x) for x in w.reshape(-1)[:8]],
        })
    return out


def model_kind(reader: gguf.GGUFReader) -> dict:
    keys = {k: field(reader, k, "") for k in
            ("general.name", "general.finetune", "general.basename", "general.size_label")}
    words = set(re.split(r"[^a-z0-9]+", " ".join(str(v).lower() for v in keys.values())))
    tuned = bool(words & {"it", "instruct", "chat"})
    return {
        "kind": "instruction-tuned" if tuned else "base (pretrained)",
        "metadata": {k: v for k, v in keys.items() if v != ""},
        "has_chat_template": "tokenizer.chat_template" in reader.fields,
    }


def main() -> None:
    cache = os.environ.get("FACET_CACHE", os.path.expanduser("~/.cache/facet"))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gguf", default=os.path.join(cache, "gemma3-270m", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--tokenizer", default="/work/shared/data/tokenizers/gemma3",
                    help="folder with tokenizer.json + tokenizer_config.json")
    ap.add_argument("--out", default=os.path.join(repo, "tests/data/golden/gemma3-270m-q4km"))
    args = ap.parse_args()
    if not os.path.isfile(args.gguf):
        sys.exit(f"error: {args.gguf} not found; run scripts/fetch-demo-model.sh first")

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    reader = gguf.GGUFReader(args.gguf)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    prompts = [(text, False, tok(text).input_ids) for text in PLAIN_PROMPTS]
    chat_text = CHAT_TEMPLATE.format(msg=CHAT_MESSAGE)
    if getattr(tok, "chat_template", None):
        rendered = tok.apply_chat_template([{"role": "user", "content": CHAT_MESSAGE}],
                                           tokenize=False, add_generation_prompt=True)
        assert rendered == chat_text, (rendered, chat_text)
    # The rendered text already starts with <bos>; don't add a second one.
    prompts.append((chat_text, True, tok(chat_text, add_special_tokens=False).input_ids))
    for text, _, ids in prompts:
        assert ids[0] == 2 and 2 not in ids[1:], (text, ids)

    print("loading with transformers' GGUF loader ...", flush=True)
    model = load_hf(args.gguf)
    print("loading by manual dequantization ...", flush=True)
    manual = load_manual(reader)
    loader_check = compare_models(model, manual, [ids for _, _, ids in prompts])
    del manual
    print(f"HF loader == manual load: {loader_check}", flush=True)

    tensors: dict[str, torch.Tensor] = {}
    prompts_json, checks = [], []
    for i, (text, chat, ids) in enumerate(prompts):
        t = len(ids)
        prefill, decode, greedy = kv_decode(model, ids, NUM_DECODE_STEPS)
        full = forward_logits(model, ids + greedy[:-1])
        d_prefill = float((full[:t] - prefill).abs().max())
        d_decode = float((full[t:] - decode).abs().max())
        assert d_prefill <= KV_RECOMPUTE_TOL and d_decode <= KV_RECOMPUTE_TOL, (d_prefill, d_decode)
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), do_sample=False,
                                 max_new_tokens=NUM_DECODE_STEPS + 1, eos_token_id=None,
                                 pad_token_id=0)
        assert gen[0, t:].tolist() == greedy, (gen[0, t:].tolist(), greedy)

        steps = torch.cat([prefill[-1:], decode])  # the rows greedy_ids were taken from
        margins = top2_margins(steps)
        greedy_text = tok.decode(greedy)
        ids_top, logits_top = topk(prefill[-1])
        tensors[f"prompt{i}.last_prefill_top_ids"] = ids_top
        tensors[f"prompt{i}.last_prefill_top_logits"] = logits_top
        ids_top, logits_top = topk(decode)
        tensors[f"prompt{i}.decode_top_ids"] = ids_top
        tensors[f"prompt{i}.decode_top_logits"] = logits_top
        tensors[f"prompt{i}.last_prefill_logit_stats"] = row_stats(prefill[-1])
        tensors[f"prompt{i}.decode_logit_stats"] = row_stats(decode)
        if i == 0:
            ids_top, logits_top = topk(prefill)
            tensors["prompt0.prefill_top_ids"] = ids_top
            tensors["prompt0.prefill_top_logits"] = logits_top
            tensors["prompt0.prefill_logit_stats"] = row_stats(prefill)
        prompts_json.append({
            "text": text,
            "chat": chat,
            "input_ids": ids,
            "greedy_ids": greedy,
            "num_decode_steps": NUM_DECODE_STEPS,
            "greedy_text": greedy_text,
        })
        checks.append({
            "top2_margins": margins,
            "min_top2_margin": min(margins),
            "small_margin_steps": [k for k, m in enumerate(margins) if m < SMALL_MARGIN],
            "max_abs_logit": float(max(prefill.abs().max(), decode.abs().max())),
            "kv_vs_recompute_max_abs_diff": {"prefill": d_prefill, "decode": d_decode},
        })
        print(f"prompt{i}: T={t} greedy={greedy} min_top2_margin={min(margins):.4f}\n"
              f"  {text!r} -> {greedy_text!r}", flush=True)

    golden = {
        "gguf_file_name": os.path.basename(args.gguf),
        "gguf_sha256": sha256_file(args.gguf),
        "model": model_kind(reader),
        "loader": "transformers AutoModelForCausalLM.from_pretrained(gguf_file=...), "
                  "cross-checked against a manual gguf.quants.dequantize load",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "gguf_version": pkg_version("gguf"),
        "dtype": "float32",
        "attn_implementation": "eager",
        "hf_config": {k: getattr(model.config, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "query_pre_attn_scalar",
            "sliding_window", "layer_types", "rope_parameters", "rms_norm_eps",
            "final_logit_softcapping", "tie_word_embeddings")},
        "prompts": prompts_json,
        "greedy_semantics": "greedy_ids[0] = argmax(prefill last logits); decode step k feeds "
                            "greedy_ids[k] and yields decode logits k; "
                            "greedy_ids[k+1]=argmax(decode logits k)",
        "top_k": TOP_K,
        "logit_stats": "*_logit_stats tensors: [mean, std (unbiased), logsumexp] over all "
                       "vocab logits of that row, computed in float64, stored as float32",
        "checks": {
            "per_prompt": checks,
            "min_top2_margin": min(c["min_top2_margin"] for c in checks),
            "loader_cross_check": loader_check,
            "tensor_checksums": tensor_checksums(reader),
        },
    }
    os.makedirs(args.out, exist_ok=True)
    save_file(tensors, os.path.join(args.out, "golden.safetensors"),
              metadata={"source": os.path.basename(args.gguf)})
    with open(os.path.join(args.out, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for name in ("golden.json", "golden.safetensors"):
        print(f"wrote {os.path.join(args.out, name)} "
              f"({os.path.getsize(os.path.join(args.out, name))} bytes)")


if __name__ == "__main__":
    main()
