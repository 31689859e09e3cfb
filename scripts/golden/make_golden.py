#!/usr/bin/env python3
"""Generates the golden reference artifacts for Facet's forward pass.

Builds four tiny random-weight Gemma text decoders with HF transformers (eager attention, float32
compute), saves them in the real HF on-disk format, and records logits for the prompt (every
position), greedy KV-cached decode steps and a few per-layer intermediates. See README.md in this
folder for what each model exercises and how to rerun.

Usage:  python3 scripts/golden/make_golden.py --out tests/data/golden [--only gemma4_moe]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Gemma4ForCausalLM,
    Gemma4TextConfig,
)

NUM_DECODE_STEPS = 8
LONG_PROMPT_LEN = 20
SHORT_PROMPT_LEN = 3
BOS_ID = 2
# Random prompt ids are drawn from [FIRST_ORDINARY_ID, vocab): never pad (0), eos (1) or bos (2).
FIRST_ORDINARY_ID = 3
# The C++ engine will not reproduce torch bit-for-bit; a greedy step whose top-2 logits are closer
# than this could legitimately flip, so prompts are re-drawn until every step clears it.
MIN_GREEDY_MARGIN = 0.02
# Same idea for the MoE router: the k-th and (k+1)-th expert logits must be clearly separated, or a
# tiny numeric difference would route a token to a different expert.
MIN_ROUTER_MARGIN = 5e-3
MIN_DISTINCT_GREEDY = 3
# Tolerance for "KV-cached decode equals full recompute" inside this script (float32, eager).
KV_RECOMPUTE_TOL = 1e-4


@dataclass
class ModelSpec:
    name: str
    cls: type
    make_config: Callable[[], transformers.PreTrainedConfig]
    weights_dtype: torch.dtype
    seed: int
    # Returns the hub-style (as the official checkpoints spell it) config dict from the one
    # save_pretrained wrote.
    hub_config: Callable[[dict], dict]
    # name-pattern -> init rule; see randomize().
    init: dict = field(default_factory=dict)
    exercises: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------


def gemma2_config() -> Gemma2Config:
    return Gemma2Config(
        vocab_size=256,
        hidden_size=72,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        query_pre_attn_scalar=24,
        sliding_window=8,
        max_position_embeddings=512,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def gemma2_hub(cfg: dict) -> dict:
    out = dict(cfg)
    rp = out.pop("rope_parameters")
    out["rope_theta"] = rp["rope_theta"]
    return out


def gemma3_config() -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=512,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=7,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        query_pre_attn_scalar=48,
        sliding_window=8,
        sliding_window_pattern=6,
        max_position_embeddings=512,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        },
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def gemma3_hub(cfg: dict) -> dict:
    # Official Gemma 3 config.json files use the legacy RoPE keys and the integer window pattern.
    out = dict(cfg)
    rp = out.pop("rope_parameters")
    out.pop("layer_types")
    out.pop("_sliding_window_pattern", None)  # private attribute the installed version serialises
    out["rope_theta"] = rp["full_attention"]["rope_theta"]
    out["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
    out["rope_scaling"] = {"rope_type": "linear", "factor": rp["full_attention"]["factor"]}
    out["sliding_window_pattern"] = 6
    return out


def gemma4_config() -> Gemma4TextConfig:
    return Gemma4TextConfig(
        vocab_size=256,
        vocab_size_per_layer_input=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=6,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        global_head_dim=512,
        num_global_key_value_heads=1,
        attention_k_eq_v=True,
        sliding_window=8,
        max_position_embeddings=512,
        final_logit_softcapping=30.0,
        hidden_size_per_layer_input=0,
        num_kv_shared_layers=0,
        enable_moe_block=False,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {
                "rope_type": "proportional",
                "partial_rotary_factor": 0.25,
                "rope_theta": 1000000.0,
            },
        },
        hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def gemma4_moe_config() -> Gemma4TextConfig:
    cfg = gemma4_config()
    d = cfg.to_dict()
    for k in ("per_layer_config", "transformers_version", "model_type"):
        d.pop(k, None)
    d.update(
        num_key_value_heads=1,
        intermediate_size=32,
        enable_moe_block=True,
        num_experts=16,
        top_k_experts=4,
        moe_intermediate_size=8,
        global_head_dim=512,
        num_global_key_value_heads=1,
        attn_implementation="eager",
    )
    return Gemma4TextConfig(**d)


def gemma4_hub(cfg: dict) -> dict:
    # Official Gemma 4 config.json files carry global_head_dim / num_global_key_value_heads; the
    # installed transformers re-expresses them as a per_layer_config override on save.
    out = dict(cfg)
    plc = out.pop("per_layer_config")
    global_layers = [int(i) for i in plc]
    first = plc[str(global_layers[0])]
    assert all(plc[str(i)] == first for i in global_layers), plc
    out["global_head_dim"] = first["head_dim"]
    out["num_global_key_value_heads"] = first.get("num_key_value_heads", cfg["num_key_value_heads"])
    return out


# ----------------------------------------------------------------------------------------------
# Weight randomisation
# ----------------------------------------------------------------------------------------------

# Rules are (substring, kind, a, b), first match wins. kinds:
#   "normal_fanin": N(0, (a / sqrt(fan_in))^2), fan_in = last dim
#   "normal":       N(0, a^2)
#   "uniform":      U(a, b)
# Embedding rows of norm ~1 keep the token's own embedding from dominating the residual stream
# (otherwise a random model just predicts its input token again); the large final-norm weight then
# spreads the logits (std ~3) so greedy steps are well separated.
GEMMA23_RULES = [
    ("embed_tokens", "normal_fanin", 1.0, None),
    ("model.norm.", "uniform", 2.0, 3.0),  # final norm, (1 + w) in [3, 4]
    # Post-norms scale what each sub-block adds to the residual; (1 + w) in [1.5, 3] lets the
    # layers, not the input embedding, decide the next token.
    ("post_", "uniform", 0.5, 2.0),
    ("norm", "uniform", -0.5, 0.5),  # stored zero-centred, applied as (1 + w)
]
GEMMA2_RULES = [
    # Larger q/k so raw scores reach the region where the 50 softcap bends them noticeably.
    ("q_proj", "normal_fanin", 2.0, None),
    ("k_proj", "normal_fanin", 2.0, None),
] + GEMMA23_RULES
GEMMA4_RULES = [
    ("embed_tokens", "normal_fanin", 1.0, None),
    ("model.norm.", "uniform", 3.0, 4.0),
    ("post_", "uniform", 1.5, 3.0),
    ("layer_scalar", "uniform", 0.5, 1.5),
    # Attention scale is 1.0 in Gemma 4; smaller q/k norm weights keep softmax from being one-hot.
    ("q_norm", "uniform", 0.3, 0.7),
    ("k_norm", "uniform", 0.3, 0.7),
    ("norm", "uniform", 0.5, 1.5),  # stored one-centred, applied as w
    ("router.scale", "uniform", 0.5, 1.5),
    ("router.per_expert_scale", "uniform", 0.5, 1.5),
    ("router.proj", "normal", 2.0, None),
]


def randomize(model: torch.nn.Module, rules: list, seed: int) -> None:
    """Overwrites every stored tensor; HF's init leaves norms, scales and layer_scalar constant."""
    gen = torch.Generator().manual_seed(seed)
    # state_dict() holds parameters and persistent buffers (layer_scalar) as views of the live
    # tensors, so copy_ writes through to the model.
    tensors = model.state_dict()
    with torch.no_grad():
        for name in sorted(tensors):
            t = tensors[name]
            if name == "lm_head.weight":
                continue  # tied to model.embed_tokens.weight
            rule = next((r for r in rules if r[0] in name), None)
            kind, a, b = ("normal_fanin", 1.0, None) if rule is None else rule[1:]
            if kind == "normal_fanin":
                v = torch.randn(t.shape, generator=gen) * (a / (t.shape[-1] ** 0.5))
            elif kind == "normal":
                v = torch.randn(t.shape, generator=gen) * a
            elif kind == "uniform":
                v = torch.rand(t.shape, generator=gen) * (b - a) + a
            else:
                raise ValueError(kind)
            t.copy_(v.to(t.dtype))


# ----------------------------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------------------------


def forward_logits(model, ids: list[int], **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=False, **kw)
    return out.logits[0].float()


def kv_decode(model, prompt: list[int], steps: int):
    """Prefill with a cache, then feed greedy tokens one at a time. Returns (prefill, decode, ids)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        cache = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
        prefill = out.logits[0].float()
        greedy = [int(prefill[-1].argmax())]
        decode = []
        for _ in range(steps):
            out = model(input_ids=torch.tensor([[greedy[-1]]]), cache=cache, use_cache=True)
            cache = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
            step = out.logits[0, -1].float()
            decode.append(step)
            greedy.append(int(step.argmax()))
    return prefill, torch.stack(decode), greedy


def top2_margin(logits: torch.Tensor) -> float:
    top = torch.topk(logits, 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


class RouterProbe:
    """Records router logits (router.proj outputs) so expert-choice near-ties can be rejected."""

    def __init__(self, model):
        self.logits = []
        self.handles = []
        for layer in model.model.layers:
            if getattr(layer, "router", None) is not None:
                self.handles.append(layer.router.proj.register_forward_hook(self._hook))

    def _hook(self, _m, _i, out):
        self.logits.append(out.detach().reshape(-1, out.shape[-1]).float())

    def min_margin(self, k: int) -> float:
        if not self.logits:
            return float("inf")
        allv = torch.cat(self.logits)
        top = torch.topk(allv, k + 1, dim=-1).values
        return float((top[:, k - 1] - top[:, k]).min())

    def close(self):
        for h in self.handles:
            h.remove()


def capture_intermediates(model, ids: list[int]) -> dict:
    """Scaled embedding, per-layer attention output and layer output, final-norm output."""
    got = {}
    handles = []
    inner = model.model

    def save(key):
        def hook(_m, _i, out):
            t = out[0] if isinstance(out, tuple) else out
            # Batch of one: [1, T, X] -> [T, X]; the router sees tokens already flattened to [T, E].
            t = t.detach().reshape(-1, t.shape[-1])
            got[key] = t.float().clone()

        return hook

    handles.append(inner.embed_tokens.register_forward_hook(save("embed")))
    for j, layer in enumerate(inner.layers):
        handles.append(layer.register_forward_hook(save(f"layer{j}.out")))
        # o_proj output: attention result before post_attention_layernorm.
        handles.append(layer.self_attn.register_forward_hook(save(f"layer{j}.attn")))
        if getattr(layer, "router", None) is not None:
            handles.append(layer.router.proj.register_forward_hook(save(f"layer{j}.router_logits")))
    handles.append(inner.norm.register_forward_hook(save("final_norm")))
    try:
        forward_logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    return got


def load_saved(spec: ModelSpec, folder: str, config_file: str | None = None):
    """Loads the model exactly as a user would, in float32, optionally with another config.json."""
    if config_file is None:
        src = folder
    else:
        src = tempfile.mkdtemp(prefix="golden_cfg_")
        shutil.copy(os.path.join(folder, "model.safetensors"), src)
        shutil.copy(os.path.join(folder, config_file), os.path.join(src, "config.json"))
    model = spec.cls.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    if config_file is not None:
        shutil.rmtree(src)
    return model


def draw_prompts(vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    long = torch.randint(FIRST_ORDINARY_ID, vocab, (LONG_PROMPT_LEN - 1,), generator=gen).tolist()
    short = torch.randint(FIRST_ORDINARY_ID, vocab, (SHORT_PROMPT_LEN - 1,), generator=gen).tolist()
    return [[BOS_ID] + long, [BOS_ID] + short]


def dump_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def build_one(spec: ModelSpec, out_root: str) -> dict:
    print(f"=== {spec.name} ===", flush=True)
    folder = os.path.join(out_root, spec.name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)

    torch.manual_seed(spec.seed)
    config = spec.make_config()
    model = spec.cls(config)
    randomize(model, spec.init, spec.seed)
    model.tie_weights()
    model.to(spec.weights_dtype)
    model.save_pretrained(folder, safe_serialization=True)

    # Config variants: config.json = save_pretrained output + hub-style keys (either spelling
    # parses); config.modern.json = exactly what save_pretrained wrote; config.hub.json = only the
    # spelling the official checkpoints use.
    with open(os.path.join(folder, "config.json")) as f:
        modern = json.load(f)
    hub = spec.hub_config(modern)
    union = dict(modern)
    for k, v in hub.items():
        union.setdefault(k, v)
    dump_json(os.path.join(folder, "config.modern.json"), modern)
    dump_json(os.path.join(folder, "config.hub.json"), hub)
    dump_json(os.path.join(folder, "config.json"), union)

    # Everything below uses the files on disk, upcast to float32.
    model = load_saved(spec, folder)
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = list(f.keys())
        shapes = {n: (list(f.get_slice(n).get_shape()), f.get_slice(n).get_dtype()) for n in names}
    assert "lm_head.weight" not in names, "tied LM head should not be stored"
    # The loaded model must use exactly the stored values (no re-init of anything).
    sd = model.state_dict()
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        for n in names:
            assert torch.equal(f.get_tensor(n).float(), sd[n]), n

    # Pick prompts whose greedy path and expert routing have no near-ties.
    k_top = getattr(model.config, "top_k_experts", None)
    for attempt in range(100):
        prompts = draw_prompts(model.config.vocab_size, spec.seed * 1000 + attempt)
        probe = RouterProbe(model)
        results = []
        ok = True
        for p in prompts:
            prefill, decode, greedy = kv_decode(model, p, NUM_DECODE_STEPS)
            full = forward_logits(model, p + greedy[:NUM_DECODE_STEPS])
            margin = min(top2_margin(prefill[-1:]), top2_margin(decode))
            results.append((p, prefill, decode, greedy, full, margin))
            ok &= margin >= MIN_GREEDY_MARGIN
            # Random models like to repeat one token; insist on some variety so that a test which
            # only compares token ids still notices a decode path stuck on its input.
            ok &= len(set(greedy)) >= MIN_DISTINCT_GREEDY
        router_margin = probe.min_margin(k_top) if k_top else float("inf")
        probe.close()
        if ok and router_margin >= MIN_ROUTER_MARGIN:
            break
    else:
        raise RuntimeError(f"{spec.name}: no prompt without near-ties found")
    print(f"prompt draw attempt {attempt}; min router margin {router_margin:.4g}")

    golden_tensors = {}
    prompts_json = []
    checks = []
    for i, (p, prefill, decode, greedy, full, margin) in enumerate(results):
        t = len(p)
        # KV-cached logits vs. a cache-free recompute of the whole sequence.
        d_prefill = float((full[:t] - prefill).abs().max())
        d_decode = float((full[t:] - decode).abs().max())
        assert d_prefill <= KV_RECOMPUTE_TOL and d_decode <= KV_RECOMPUTE_TOL, (d_prefill, d_decode)
        # And vs. HF generate (greedy) with eos disabled.
        with torch.no_grad():
            gen_out = model.generate(
                torch.tensor([p]),
                do_sample=False,
                max_new_tokens=NUM_DECODE_STEPS + 1,
                eos_token_id=None,
                pad_token_id=0,
            )
        gen_ids = gen_out[0, t:].tolist()
        assert gen_ids == greedy, (gen_ids, greedy)
        print(
            f"prompt{i}: T={t} greedy={greedy} min_top2_margin={margin:.4f} "
            f"kv_vs_recompute max|diff| prefill={d_prefill:.3g} decode={d_decode:.3g}"
        )
        golden_tensors[f"prompt{i}.prefill_logits"] = prefill.contiguous()
        golden_tensors[f"prompt{i}.decode_logits"] = decode.contiguous()
        prompts_json.append(
            {"input_ids": p, "greedy_ids": greedy, "num_decode_steps": NUM_DECODE_STEPS}
        )
        checks.append(
            {
                "min_top2_margin": round(margin, 6),
                "kv_vs_recompute_max_abs_diff_prefill": d_prefill,
                "kv_vs_recompute_max_abs_diff_decode": d_decode,
                "max_abs_logit": float(max(prefill.abs().max(), decode.abs().max())),
            }
        )

    inter = capture_intermediates(model, prompts_json[0]["input_ids"])
    # The captured last-layer stream through the final norm must reproduce the logits.
    emb = model.model.embed_tokens.weight.float()
    relogit = inter["final_norm"] @ emb.T
    c = model.config.final_logit_softcapping
    if c:
        relogit = c * torch.tanh(relogit / c)
    assert torch.allclose(relogit, golden_tensors["prompt0.prefill_logits"], atol=1e-4)
    for k, v in inter.items():
        golden_tensors[f"prompt0.{k}"] = v.contiguous()

    save_file(
        dict(sorted(golden_tensors.items())),
        os.path.join(folder, "golden.safetensors"),
        # One key only: safetensors writes the metadata map in hash order, and reruns must be
        # byte-identical.
        metadata={"source": f"make_golden.py {spec.name} transformers {transformers.__version__}"},
    )

    # Every config spelling must load to the same model.
    ref = golden_tensors["prompt0.prefill_logits"]
    for cfg_name in ("config.modern.json", "config.hub.json"):
        alt = load_saved(spec, folder, cfg_name)
        diff = float((forward_logits(alt, prompts_json[0]["input_ids"]) - ref).abs().max())
        assert diff == 0.0, (cfg_name, diff)
    print("config.json / config.modern.json / config.hub.json all reproduce the logits exactly")

    golden = {
        "model": spec.name,
        "hf_class": spec.cls.__name__,
        "model_type": model.config.model_type,
        "dtype": "float32",
        "weights_dtype": str(spec.weights_dtype).replace("torch.", ""),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seed": spec.seed,
        "layer_types": list(model.config.layer_types),
        "greedy_semantics": (
            "greedy_ids[0] = argmax(prefill_logits[-1]); decode step k (0-based) feeds greedy_ids[k] "
            "at position len(input_ids)+k through the KV cache and yields decode_logits[k]; "
            "greedy_ids[k+1] = argmax(decode_logits[k]). len(greedy_ids) = num_decode_steps + 1."
        ),
        "intermediates": {
            "prompt0.embed": "token embedding * sqrt(hidden_size), [T, H]",
            "prompt0.layer{j}.attn": "self-attention output after o_proj, before post_attention_layernorm, [T, H]",
            "prompt0.layer{j}.out": "decoder layer j output (residual stream; Gemma 4: after layer_scalar), [T, H]",
            "prompt0.layer{j}.router_logits": "MoE only: router.proj output (pre-softmax), [T, E]",
            "prompt0.final_norm": "final RMSNorm output, [T, H]",
        },
        "prompts": prompts_json,
        "checks": checks,
        "exercises": spec.exercises,
    }
    dump_json(os.path.join(folder, "golden.json"), golden)

    for fn in os.listdir(folder):
        os.chmod(os.path.join(folder, fn), 0o644)  # save_file creates 0600 files
    sizes = {fn: os.path.getsize(os.path.join(folder, fn)) for fn in sorted(os.listdir(folder))}
    return {"name": spec.name, "sizes": sizes, "tensors": shapes, "golden": golden}


SPECS = [
    ModelSpec(
        name="gemma2",
        cls=Gemma2ForCausalLM,
        make_config=gemma2_config,
        weights_dtype=torch.float32,
        seed=1002,
        hub_config=gemma2_hub,
        init=GEMMA2_RULES,
        exercises=[
            "(1+w) RMSNorm with random zero-centred weights on all 4 block norms + final norm",
            "alternating sliding (even layers) / global (odd layers), sliding_window=8 < prompt length",
            "query_pre_attn_scalar=24 != head_dim=32 (score scale 24^-0.5)",
            "attention logit softcap 50 (q/k weights enlarged so raw scores reach the nonlinear range)",
            "final logit softcap 30",
            "GQA 4 query heads / 2 KV heads",
            "hidden_size 72 != num_heads*head_dim 128; embedding scale sqrt(72) (not a power of two)",
            "float32 weights on disk",
        ],
    ),
    ModelSpec(
        name="gemma3",
        cls=Gemma3ForCausalLM,
        make_config=gemma3_config,
        weights_dtype=torch.float32,
        seed=1003,
        hub_config=gemma3_hub,
        init=GEMMA23_RULES,
        exercises=[
            "7 layers with pattern 6: layers 0-4 and 6 sliding, layer 5 global (last layer is sliding)",
            "q_norm / k_norm per head ((1+w) form, random weights)",
            "RoPE theta 1e4 on sliding layers, 1e6 with linear scaling factor 8 on global layers",
            "query_pre_attn_scalar=48 != head_dim=32",
            "GQA 4 query heads / 2 KV heads",
            "no softcaps; vocab 512; hidden 48, embedding scale sqrt(48)",
            "float32 weights on disk",
        ],
    ),
    ModelSpec(
        name="gemma4",
        cls=Gemma4ForCausalLM,
        make_config=gemma4_config,
        weights_dtype=torch.bfloat16,
        seed=1004,
        hub_config=gemma4_hub,
        init=GEMMA4_RULES,
        exercises=[
            "plain x*w RMSNorm (no +1) with random one-centred weights",
            "attention scale 1.0; q_norm/k_norm with weight; v_norm without weight",
            "5 sliding layers (head_dim 64, 2 KV heads, full RoPE theta 1e4) + 1 global layer",
            "global layer: head_dim 512, 1 KV head (GQA 2:1), attention_k_eq_v (no v_proj; V = v_norm(raw k_proj))",
            "proportional RoPE on global layer: theta 1e6, partial_rotary_factor 0.25 -> 64 of 256 pairs rotated, pairs (i, i+256)",
            "layer_scalar buffers random in [0.5, 1.5]",
            "final logit softcap 30; no PLE; no KV sharing",
            "bfloat16 weights on disk (reference computed in float32 on the bf16 values)",
        ],
    ),
    ModelSpec(
        name="gemma4_moe",
        cls=Gemma4ForCausalLM,
        make_config=gemma4_moe_config,
        weights_dtype=torch.bfloat16,
        seed=1005,
        hub_config=gemma4_hub,
        init=GEMMA4_RULES,
        exercises=[
            "everything in gemma4 (norms, scale 1.0, v_norm, K=V 512-dim global layer, proportional RoPE, layer_scalar, softcap 30)",
            "enable_moe_block on every layer: dense MLP (intermediate 32) + 16 experts (moe_intermediate 8), top-4",
            "router: weightless RMSNorm of the post-attention residual * router.scale * H^-0.5, softmax, top-k, renormalise, * per_expert_scale (all random)",
            "fused experts.gate_up_proj [E, 2F, H] (gate rows first) and experts.down_proj [E, H, F]",
            "extra norms pre_feedforward_layernorm_2, post_feedforward_layernorm_1, post_feedforward_layernorm_2",
            "1 KV head on sliding layers too (GQA 2:1 everywhere)",
            "bfloat16 weights on disk (reference computed in float32 on the bf16 values)",
        ],
    ),
]


def abbreviate(shapes: dict) -> list[str]:
    """Groups layers.N.<suffix> rows that repeat with identical shape across layers."""
    groups: dict = {}
    order = []
    for n, (shape, dt) in shapes.items():
        m = re.match(r"(.*layers\.)(\d+)(\..*)", n)
        key = (m.group(1) + "{N}" + m.group(3), tuple(shape), dt) if m else (n, tuple(shape), dt)
        if key not in groups:
            groups[key] = []
            order.append(key)
        if m:
            groups[key].append(int(m.group(2)))
    lines = []
    for key in order:
        name, shape, dt = key
        layers = groups[key]
        suffix = f"  N in {sorted(layers)}" if layers else ""
        lines.append(f"{name} {list(shape)} {dt}{suffix}")
    return sorted(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root, e.g. tests/data/golden")
    ap.add_argument("--only", nargs="*", help="subset of model names")
    ap.add_argument("--list-tensors", action="store_true", help="print stored tensor names and shapes")
    args = ap.parse_args()

    # Single-threaded, deterministic kernels so a rerun produces byte-identical files.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    os.makedirs(args.out, exist_ok=True)
    specs = [s for s in SPECS if not args.only or s.name in args.only]
    for spec in specs:
        r = build_one(spec, args.out)
        total = sum(r["sizes"].values())
        print(f"files: {r['sizes']}  total {total} bytes")
        if args.list_tensors:
            print("\n".join(abbreviate(r["tensors"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
