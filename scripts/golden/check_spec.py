#!/usr/bin/env python3
"""Independent float64 NumPy forward pass written from /work/shared/spec/gemma-architecture.md.

Reads config.hub.json (the spelling official checkpoints use) and model.safetensors of each golden
model, recomputes the logits of prompt + greedy tokens without a KV cache, and compares them with
golden.safetensors. Agreement shows that the HF reference matches the spec (§1-§5), so the C++
engine can be written against either.

Usage:  python3 scripts/golden/check_spec.py tests/data/golden [--ablate]

--ablate additionally breaks one spec rule at a time and prints how far the logits move, to show
that the golden data actually depends on that rule.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
from safetensors import safe_open


def load_weights(path: str) -> dict:
    # torch is only used to read bf16 (NumPy has no bfloat16); all math below is float64 NumPy.
    out = {}
    with safe_open(path, "pt") as f:
        for n in f.keys():
            out[n] = f.get_tensor(n).double().numpy()
    return out


def load_golden(path: str) -> dict:
    with safe_open(path, "np") as f:
        return {n: f.get_tensor(n).astype(np.float64) for n in f.keys()}


def rms(x):
    return np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6)


def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


def rope(x, pos, inv_freq, interleaved=False):
    """Rotate-half RoPE. x [T, N, D]; inv_freq [D/2] (zeros = pass-through pairs)."""
    ang = pos[:, None] * inv_freq[None, :]  # [T, D/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if interleaved:  # wrong for Gemma (GPT-J pairs (2i, 2i+1)); only used as an ablation
        x1, x2 = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2], y[..., 1::2] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
        return y
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Model:
    # Ablations (see ABLATIONS) flip one spec rule to show the golden data depends on it.
    def __init__(self, folder: str, ablate: str | None = None):
        self.ab = ablate
        with open(os.path.join(folder, "config.hub.json")) as f:
            self.c = json.load(f)
        self.w = load_weights(os.path.join(folder, "model.safetensors"))
        mt = self.c["model_type"]
        self.gen = {"gemma2": 2, "gemma3_text": 3, "gemma4_text": 4}[mt]
        L = self.c["num_hidden_layers"]
        if self.gen == 2:  # §4.5: even layers sliding
            self.types = ["sliding" if (i + 1) % 2 else "full" for i in range(L)]
        elif self.gen == 3:  # §4.5: pattern 6
            p = self.c.get("sliding_window_pattern", 6)
            self.types = ["sliding" if (i + 1) % p else "full" for i in range(L)]
        else:
            self.types = ["sliding" if t == "sliding_attention" else "full" for t in self.c["layer_types"]]

    def norm(self, x, name):
        w = self.w[name]
        plain = self.gen == 4
        if self.ab == "norm_form":
            plain = not plain
        return x / rms(x) * (w if plain else 1.0 + w)

    def inv_freq(self, kind: str, d: int):
        c = self.c
        if self.gen == 2:
            return c["rope_theta"] ** (-np.arange(0, d, 2) / d)
        if self.gen == 3:
            if kind == "sliding":
                return c["rope_local_base_freq"] ** (-np.arange(0, d, 2) / d)
            f = c["rope_theta"] ** (-np.arange(0, d, 2) / d)
            sc = c.get("rope_scaling") or {}
            if self.ab == "no_rope_scaling":
                return f
            return f / sc.get("factor", 1.0) if sc.get("rope_type") == "linear" else f
        rp = c["rope_parameters"]["sliding_attention" if kind == "sliding" else "full_attention"]
        theta = rp["rope_theta"]
        if rp["rope_type"] == "default":
            return theta ** (-np.arange(0, d, 2) / d)
        assert rp["rope_type"] == "proportional"
        if self.ab == "partial_rope_usual":  # rotate the first 25% with denominator = rotary dim
            r = int(rp["partial_rotary_factor"] * d)
            f = np.zeros(d // 2)
            f[: r // 2] = theta ** (-np.arange(0, r, 2) / r)
            return f
        n_rot = int(rp["partial_rotary_factor"] * d // 2)  # §4.7: denominator is the full head dim
        f = np.zeros(d // 2)
        f[:n_rot] = theta ** (-np.arange(0, 2 * n_rot, 2) / d)
        return f

    def attention(self, h, i, pos):
        c, p = self.c, f"model.layers.{i}.self_attn."
        kind = self.types[i]
        T = h.shape[0]
        nq = c["num_attention_heads"]
        d = c["head_dim"]
        nkv = c["num_key_value_heads"]
        if self.gen == 4 and kind == "full":
            d = c.get("global_head_dim", 512)
            if c.get("attention_k_eq_v"):
                nkv = c.get("num_global_key_value_heads") or nkv
        q = (h @ self.w[p + "q_proj.weight"].T).reshape(T, nq, d)
        kr = (h @ self.w[p + "k_proj.weight"].T).reshape(T, nkv, d)
        vr = (h @ self.w[p + "v_proj.weight"].T).reshape(T, nkv, d) if p + "v_proj.weight" in self.w else kr
        k, v = kr, vr
        if self.gen >= 3:
            q = self.norm(q, p + "q_norm.weight")
            k = self.norm(k, p + "k_norm.weight")
        if self.ab == "k_eq_v_after_k_norm" and vr is kr:
            v = k
        if self.gen == 4 and self.ab != "no_v_norm":
            v = v / rms(v)
        f = self.inv_freq(kind, d)
        il = self.ab == "rope_interleaved"
        q, k = rope(q, pos, f, il), rope(k, pos, f, il)
        scale = 1.0 if self.gen == 4 else c["query_pre_attn_scalar"] ** -0.5
        if self.ab == "scale_head_dim":
            scale = d**-0.5
        rep = nq // nkv
        if self.ab == "gqa_tile":
            k, v = np.tile(k, (1, rep, 1)), np.tile(v, (1, rep, 1))
        else:
            k = np.repeat(k, rep, axis=1)  # query head h uses kv head h // rep
            v = np.repeat(v, rep, axis=1)
        s = np.einsum("tnd,snd->nts", q, k) * scale
        cap = c.get("attn_logit_softcapping") if self.gen == 2 else None
        if cap and self.ab != "no_attn_softcap":
            s = cap * np.tanh(s / cap)
        dt = pos[:, None] - pos[None, :]
        allowed = dt >= 0
        if kind == "sliding" and self.ab != "no_sliding_window":
            allowed &= dt < c["sliding_window"] + (self.ab == "window_off_by_one")
        s = np.where(allowed[None], s, -np.inf)
        s = s - s.max(-1, keepdims=True)
        pr = np.exp(s)
        pr /= pr.sum(-1, keepdims=True)
        o = np.einsum("nts,snd->tnd", pr, v).reshape(T, nq * d)
        return o @ self.w[p + "o_proj.weight"].T

    def mlp(self, h, p):
        g = h @ self.w[p + "gate_proj.weight"].T
        u = h @ self.w[p + "up_proj.weight"].T
        return (gelu_tanh(g) * u) @ self.w[p + "down_proj.weight"].T

    def moe(self, x1, i):
        c, p = self.c, f"model.layers.{i}."
        H = c["hidden_size"]
        r_in = x1
        if self.ab == "router_reads_normed":
            r_in = self.norm(x1, p + "pre_feedforward_layernorm_2.weight")
        z = r_in / rms(r_in) * self.w[p + "router.scale"] * H**-0.5
        logits = z @ self.w[p + "router.proj.weight"].T
        self.inter[f"layer{i}.router_logits"] = logits
        pr = np.exp(logits - logits.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        k = c["top_k_experts"]
        idx = np.argsort(-pr, axis=-1, kind="stable")[:, :k]
        wsel = np.take_along_axis(pr, idx, -1)
        if self.ab != "no_router_renorm":
            wsel = wsel / wsel.sum(-1, keepdims=True)
        if self.ab != "no_per_expert_scale":
            wsel = wsel * self.w[p + "router.per_expert_scale"][idx]
        e_in = self.norm(x1, p + "pre_feedforward_layernorm_2.weight")
        gu = self.w[p + "experts.gate_up_proj"]  # [E, 2F, H], gate rows first
        dn = self.w[p + "experts.down_proj"]  # [E, H, F]
        F = gu.shape[1] // 2
        y = np.zeros_like(x1)
        for t in range(x1.shape[0]):
            for j in range(k):
                e = idx[t, j]
                a = gu[e] @ e_in[t]
                y[t] += wsel[t, j] * (dn[e] @ (gelu_tanh(a[:F]) * a[F:]))
        return self.norm(y, p + "post_feedforward_layernorm_2.weight")

    def forward(self, ids):
        c = self.c
        H = c["hidden_size"]
        pos = np.arange(len(ids), dtype=np.float64)
        E = self.w["model.embed_tokens.weight"]
        x = E[ids] * math.sqrt(H)
        inter = {"embed": x.copy()}
        self.inter = inter
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            a = self.attention(self.norm(x, p + "input_layernorm.weight"), i, pos)
            inter[f"layer{i}.attn"] = a
            x = x + self.norm(a, p + "post_attention_layernorm.weight")
            f = self.mlp(self.norm(x, p + "pre_feedforward_layernorm.weight"), p + "mlp.")
            if self.gen == 4 and c.get("enable_moe_block"):
                f = self.norm(f, p + "post_feedforward_layernorm_1.weight") + self.moe(x, i)
            x = x + self.norm(f, p + "post_feedforward_layernorm.weight")
            if self.gen == 4 and self.ab != "no_layer_scalar":
                x = x * self.w[p + "layer_scalar"]
            inter[f"layer{i}.out"] = x.copy()
        h = self.norm(x, "model.norm.weight")
        inter["final_norm"] = h
        logits = h @ E.T
        cap = c.get("final_logit_softcapping")
        if cap and self.ab != "no_final_softcap":
            logits = cap * np.tanh(logits / cap)
        return logits, inter


def check(folder: str) -> float:
    m = Model(folder)
    g = load_golden(os.path.join(folder, "golden.safetensors"))
    with open(os.path.join(folder, "golden.json")) as f:
        meta = json.load(f)
    worst = 0.0
    for i, pr in enumerate(meta["prompts"]):
        ids, greedy, n = pr["input_ids"], pr["greedy_ids"], pr["num_decode_steps"]
        logits, inter = m.forward(ids + greedy[:n])
        t = len(ids)
        ref = np.concatenate([g[f"prompt{i}.prefill_logits"], g[f"prompt{i}.decode_logits"]])
        d = np.abs(logits - ref).max()
        worst = max(worst, d)
        assert list(logits[t - 1 :].argmax(-1)) == greedy, (logits[t - 1 :].argmax(-1), greedy)
        line = f"  prompt{i}: max|logit diff| {d:.3g}"
        if i == 0:
            stored = {k[len("prompt0.") :] for k in g if k.startswith("prompt0.")}
            stored -= {"prefill_logits", "decode_logits"}
            assert set(inter) == stored, set(inter) ^ stored
            di = max(np.abs(inter[k][:t] - g[f"prompt0.{k}"]).max() for k in inter)
            line += f", max|intermediate diff| {di:.3g}"
            worst = max(worst, di)
        print(line)
    return worst


ABLATIONS = {
    2: ["norm_form", "scale_head_dim", "no_attn_softcap", "no_final_softcap", "no_sliding_window",
        "window_off_by_one", "gqa_tile", "rope_interleaved"],
    3: ["norm_form", "scale_head_dim", "no_rope_scaling", "no_sliding_window", "window_off_by_one",
        "gqa_tile", "rope_interleaved"],
    # No gqa_tile for Gemma 4: the golden models only group query heads where there is 1 KV head,
    # so tiling and repeating coincide (gemma2 and gemma3 cover the head mapping).
    4: ["norm_form", "scale_head_dim", "no_v_norm", "k_eq_v_after_k_norm", "partial_rope_usual",
        "no_layer_scalar", "no_final_softcap", "no_sliding_window", "window_off_by_one",
        "rope_interleaved", "no_router_renorm", "no_per_expert_scale", "router_reads_normed"],
}


def ablation_report(folder: str) -> None:
    """Max |logit| change when one rule is broken: each must be far above the 1e-4 test noise."""
    g = load_golden(os.path.join(folder, "golden.safetensors"))
    with open(os.path.join(folder, "golden.json")) as f:
        pr = json.load(f)["prompts"][0]
    ids = pr["input_ids"] + pr["greedy_ids"][: pr["num_decode_steps"]]
    ref = np.concatenate([g["prompt0.prefill_logits"], g["prompt0.decode_logits"]])
    gen = Model(folder).gen
    for ab in ABLATIONS[gen]:
        m = Model(folder, ab)
        if "router" in ab or ab == "no_per_expert_scale":
            if not m.c.get("enable_moe_block"):
                continue
        logits, _ = m.forward(ids)
        print(f"  ablate {ab:22s}: max|logit change| {np.abs(logits - ref).max():.3g}")


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else "tests/data/golden"
    bad = False
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.exists(os.path.join(folder, "golden.json")):
            continue
        print(name)
        worst = check(folder)
        if "--ablate" in sys.argv:
            ablation_report(folder)
        if worst > 1e-3:
            print(f"  MISMATCH {worst}")
            bad = True
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
