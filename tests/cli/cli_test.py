#!/usr/bin/env python3
"""End-to-end checks of the `facet` binary: tokenize, generate, bench, chat.

Usage: cli_test.py FACET_BINARY SOURCE_DIR SHARED_DIR
Prints 'N passed, N failed' and exits non-zero on any failure.
"""
import json
import os
import subprocess
import sys
import tempfile

FACET, SRC, SHARED = sys.argv[1], sys.argv[2], sys.argv[3]
TOKENIZER = os.path.join(SHARED, "data/tokenizers/gemma3/tokenizer.json")
GOLDEN = os.path.join(SRC, "tests/data/golden")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


def run(*args, stdin=None, timeout=300):
    return subprocess.run([FACET, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


# --help lists the subcommands.
r = run("--help")
for sub in ("tokenize", "generate", "chat", "bench"):
    check(f"help lists {sub}", r.returncode == 0 and sub in r.stdout, r.stdout)

# tokenize --jsonl reproduces every golden encoding, in order.
golden = [json.loads(l) for l in open(os.path.join(SHARED, "data/tokenizers/gemma3/golden-encodings.jsonl"))]
with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    for g in golden:
        f.write(json.dumps({"text": g["text"]}) + "\n")
    path = f.name
r = run("tokenize", "--tokenizer", TOKENIZER, "--jsonl", path)
out = [json.loads(l) for l in r.stdout.splitlines()]
check("tokenize exit 0", r.returncode == 0, r.stderr)
check("tokenize one line per input", len(out) == len(golden), f"{len(out)} vs {len(golden)}")
check("tokenize ids match golden", all(o.get("ids") == g["ids"] for o, g in zip(out, golden)))
r = run("tokenize", "--tokenizer", TOKENIZER, "--jsonl", path, "--no-bos")
out = [json.loads(l) for l in r.stdout.splitlines()]
check("tokenize --no-bos drops <bos>", all(o["ids"] == g["ids"][1:] for o, g in zip(out, golden)))
os.unlink(path)

# A malformed line yields an error object in place, others still answered, exit 1.
r = run("tokenize", "--tokenizer", TOKENIZER, "--jsonl", "-", stdin='{"text": "a"}\nnot json\n{"text": "b"}\n')
lines = [json.loads(l) for l in r.stdout.splitlines()]
check("tokenize bad line", r.returncode == 1 and len(lines) == 3 and "error" in lines[1] and "ids" in lines[2], r.stdout)
r = run("tokenize", "--tokenizer", "/nonexistent/tokenizer.json", "--text", "x")
check("tokenize missing tokenizer", r.returncode != 0 and "/nonexistent/tokenizer.json" in r.stderr, r.stderr)

# generate --json on a golden model reproduces transformers' greedy tokens.
g = json.load(open(os.path.join(GOLDEN, "gemma3/golden.json")))["prompts"][0]
r = run("generate", "--model", os.path.join(GOLDEN, "gemma3"), "--prompt-ids",
        ",".join(map(str, g["input_ids"])), "--max-tokens", str(len(g["greedy_ids"])), "--json")
check("generate exit 0", r.returncode == 0, r.stderr)
if r.returncode == 0:
    j = json.loads(r.stdout)
    check("generate greedy ids", j["ids"] == g["greedy_ids"], f'{j["ids"]} vs {g["greedy_ids"]}')
    check("generate reports speed", j["prefill_tok_s"] > 0 and j["decode_tok_s"] > 0, r.stdout)
r = run("generate", "--model", os.path.join(GOLDEN, "gemma3"), "--prompt-ids", "2,99999", "--json")
check("generate rejects out-of-vocab id", r.returncode == 2 and "vocabulary" in r.stderr, r.stderr)
r = run("generate", "--model", "/nonexistent/model", "--prompt-ids", "2")
check("generate missing model", r.returncode != 0 and "/nonexistent/model" in r.stderr, r.stderr)

# bench prints its JSON with the roofline fractions.
r = run("bench", "--model", os.path.join(GOLDEN, "gemma4_moe"), "--prompt-len", "16", "--gen-len", "4",
        "--threads", "1", "--no-probe")
check("bench exit 0", r.returncode == 0, r.stderr)
if r.returncode == 0:
    j = json.loads(r.stdout)
    check("bench fields", all(k in j for k in ("prefill_tok_s", "decode_tok_s", "decode_weight_bytes_per_token")), r.stdout)

# chat (real model only): two turns on stdin, replies streamed, exit 0.
gguf = os.environ.get("FACET_DEMO_GGUF") or os.path.join(
    os.environ.get("FACET_CACHE", os.path.expanduser("~/.cache/facet")), "gemma3-270m/gemma-3-270m-q4_k_m.gguf")
if os.path.exists(gguf):
    r = run("chat", "--model", gguf, "--max-tokens", "8", "--threads", "2", stdin="Hello!\nWhat is 2+2?\n")
    check("chat exit 0", r.returncode == 0, r.stderr)
    check("chat replied twice", len([l for l in r.stdout.splitlines() if l.strip()]) >= 2, r.stdout)
    r = run("generate", "--model", gguf, "--prompt", "The capital of France is", "--max-tokens", "9", "--json")
    check("generate real model", r.returncode == 0 and json.loads(r.stdout)["text"].startswith(" the capital of"),
          r.stdout + r.stderr)
else:
    print(f"note: {gguf} not fetched; chat/real-model CLI checks not run")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
