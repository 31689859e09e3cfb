#!/usr/bin/env bash
# Facet vs llama.cpp, side by side on the same machine, model, threads and
# context: starts llama.cpp's OpenAI-compatible server (llama-cpp-python,
# built from source into a cached venv by install-llamacpp.sh; nothing of it
# is committed) and `facet serve --http-port`, runs the same
# `facet bench --serve --url` sweep against both, prints one markdown table
# with Facet/llama.cpp ratios and writes a plot.
#
#   scripts/bench/compare-llamacpp.sh                  # 270M Q4_K_M, 2 threads, c = 1,4,16
#   CONCURRENCY=1,4 PROMPT_LEN=256 scripts/bench/compare-llamacpp.sh
#
# Environment: GGUF, THREADS (2), CTX (2048), CONCURRENCY (1,4,16), PROMPT_LEN
# (128), GEN_LEN (64), REQUESTS (0 = 2 x concurrency), FACET (the binary),
# OUT (results folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${FACET_CACHE:-$HOME/.cache/facet}"
GGUF="${GGUF:-$CACHE/gemma3-270m/gemma-3-270m-q4_k_m.gguf}"
THREADS="${THREADS:-2}"
CTX="${CTX:-2048}"
CONCURRENCY="${CONCURRENCY:-1,4,16}"
PROMPT_LEN="${PROMPT_LEN:-128}"
GEN_LEN="${GEN_LEN:-64}"
REQUESTS="${REQUESTS:-0}"
FACET="${FACET:-build/cpu/cli/facet}"
OUT="${OUT:-$CACHE/bench-compare/$(date +%Y%m%d-%H%M%S)}"
LLAMA_PORT="${LLAMA_PORT:-18080}"
FACET_PORT="${FACET_PORT:-18081}"
mkdir -p "$OUT"

[ -f "$GGUF" ] || bash scripts/fetch-demo-model.sh >/dev/null
[ -x "$FACET" ] || { echo "compare-llamacpp.sh: no facet binary at $FACET (build it or set FACET)" >&2; exit 1; }
bash scripts/bench/install-llamacpp.sh >&2
LLAMA_PY="${FACET_LLAMACPP_VENV:-$CACHE/venv-llamacpp}/bin/python"
PLOT_PY="$(bash scripts/setup-python.sh | tail -1)"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_ready() {  # URL LOG
  for _ in $(seq 1 600); do
    if curl -sf "$1/v1/models" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "compare-llamacpp.sh: $1 did not come up; its log:" >&2; tail -20 "$2" >&2; exit 1
}

# Both servers stay up, but only one is ever driven: the sweep alternates
# between them level by level, so a change in the machine's load (it is
# shared) hits both alike instead of one whole side.
bench() {  # NAME URL EXTRA_BODY CONCURRENCY SEED JSON
  "$FACET" bench --serve --url "$2" --concurrency "$4" --requests "$REQUESTS" --prompt-len "$PROMPT_LEN" \
    --gen-len "$GEN_LEN" --extra-body "$3" --seed "$5" --json-out "$6" >/dev/null \
    2>>"$OUT/$1.bench.log"
}
LLAMA_URL="http://127.0.0.1:$LLAMA_PORT"
FACET_URL="http://127.0.0.1:$FACET_PORT"
# No ignore_eos on either side: llama-cpp-python has none, and its logit_bias
# runs a Python processor over the 262k logits every token, which would
# measure Python, not llama.cpp. Greedy decoding of the same model and prompts
# ends both alike; the table reports the mean output length of each.
LLAMA_EXTRA='{}'

# --interrupt_requests False: its default cancels the running request whenever
# a new one arrives, which fails every concurrent client.
echo "compare-llamacpp.sh: llama.cpp (llama-cpp-python) and facet serve on $GGUF, $THREADS threads, context $CTX" >&2
"$LLAMA_PY" -m llama_cpp.server --model "$GGUF" --model_alias gemma-3-270m --host 127.0.0.1 \
  --port "$LLAMA_PORT" --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx "$CTX" \
  --interrupt_requests False >"$OUT/llamacpp.log" 2>&1 &
pids+=($!)
"$FACET" serve --model "$GGUF" --name gemma-3-270m --host 127.0.0.1 --port 0 --http-port "$FACET_PORT" \
  --threads "$THREADS" --max-context "$CTX" >"$OUT/facet.log" 2>&1 &
pids+=($!)
wait_ready "$LLAMA_URL" "$OUT/llamacpp.log"
wait_ready "$FACET_URL" "$OUT/facet.log"
# Warm-up (first-request allocations, page cache) outside the measurement, with
# its own seed: llama-cpp-python reuses a cached prompt prefix, which would
# otherwise make the first measured prompt free.
for target in "$LLAMA_URL|$LLAMA_EXTRA" "$FACET_URL|{}"; do
  "$FACET" bench --serve --url "${target%%|*}" --concurrency 1 --requests 1 --prompt-len "$PROMPT_LEN" \
    --gen-len 8 --extra-body "${target#*|}" --seed 999 >/dev/null 2>&1 || true
done
IFS=, read -ra LEVELS <<<"$CONCURRENCY"
for c in "${LEVELS[@]}"; do
  echo "compare-llamacpp.sh: concurrency $c" >&2
  # The same seed: both get the same prompts at this level.
  bench llamacpp "$LLAMA_URL" "$LLAMA_EXTRA" "$c" "$c" "$OUT/llamacpp-c$c.json" || true  # failures: in the table
  bench facet "$FACET_URL" '{}' "$c" "$c" "$OUT/facet-c$c.json" || true
done
cleanup; pids=()
python3 - "$OUT" "$CONCURRENCY" <<'PY'
import json, sys
out, levels = sys.argv[1], sys.argv[2].split(",")
for name in ("facet", "llamacpp"):
    reports = [json.load(open(f"{out}/{name}-c{c}.json")) for c in levels]
    merged = dict(reports[0])
    merged["runs"] = [r["runs"][0] for r in reports]
    json.dump(merged, open(f"{out}/{name}.json", "w"), indent=2)
PY

python3 - "$OUT/facet.json" "$OUT/llamacpp.json" <<'PY' | tee "$OUT/compare.md"
import json, sys
facet, peer = (json.load(open(p)) for p in sys.argv[1:3])
print(f"prompt {facet['prompt_len']} words (~tokens), output {facet['gen_len']} tokens, "
      f"greedy; ratio = Facet / llama.cpp (throughput: higher is better; latency: lower is better)\n")
print("| c | output tok/s Facet | llama.cpp | ratio | TTFT p50 ms Facet | llama.cpp | ratio | TTFT p99 Facet | llama.cpp | ratio "
      "| TPOT p50 ms Facet | llama.cpp | ratio | TPOT p99 Facet | llama.cpp | ratio |")
print("|" + "---|" * 16)
def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"
for f, l in zip(facet["runs"], peer["runs"]):
    cells = [str(f["concurrency"])]
    fo, lo = f["output_tok_s"], l["output_tok_s"]
    cells += [f"{fo:.1f}", f"{lo:.1f}", ratio(fo, lo)]
    for key in ("ttft_ms", "tpot_ms"):
        for p in ("p50", "p99"):
            a = f[key][p] if f[key] else float("nan")
            b = l[key][p] if l[key] else float("nan")
            cells += [f"{a:.1f}", f"{b:.1f}", ratio(a, b)]
    print("| " + " | ".join(cells) + " |")
fails = [(n, r["concurrency"], r.get("first_error")) for n, rep in (("facet", facet), ("llama.cpp", peer))
         for r in rep["runs"] if r["failed"]]
if fails:
    print("\nfailed requests:", fails)
print("\nmean output tokens per request: Facet " +
      ", ".join(f"{r['mean_output_tokens']:.1f}" for r in facet["runs"]) + "; llama.cpp " +
      ", ".join(f"{r['mean_output_tokens']:.1f}" for r in peer["runs"]))
PY
"$PLOT_PY" scripts/bench/plot_serve.py "$OUT/facet.json" "$OUT/llamacpp.json" --label Facet \
  --label llama.cpp -o "$OUT/compare.png" >&2
echo "compare-llamacpp.sh: results in $OUT (compare.md, compare.png, *.json)" >&2
