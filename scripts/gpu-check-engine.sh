#!/usr/bin/env bash
# The whole engine on one GPU (issue 8): golden-model logits from the GPU
# forward against the HF references, the engine loop with the CUDA executor
# (batched decode from CUDA graphs), NCCL with one rank when built, and an
# end-to-end `facet bench --device cuda` on random weights of real Gemma 3
# 27B shape, whose batch-1 decode tok/s is printed against the HBM roofline
# (decode weight bytes / the card's HBM bandwidth).
#
#   bash scripts/gpu-carry-libs.sh build/gpueng --build   # here: binaries + Debian .so files
#   bash scripts/gpu-check-engine.sh build/gpueng          # there (carry build/gpueng/carry)
#
# Binaries come from BUILD/carry/bin when present (gpu-carry-libs.sh), else
# from the build tree. Output goes to $OUT/gpu-check.log (or ./gpu-check.log),
# appended; when scripts/gpu-check.sh runs this, its log already has it.
# Every step stops on its own within 3 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/cuda}

nested=0
pid=$PPID
while [[ "$pid" -gt 1 ]]; do
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "gpu-check.sh"; then
    nested=1
    break
  fi
  pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 1)
done
if [[ $nested -eq 0 ]]; then
  LOG=./gpu-check.log
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    LOG="$OUT/gpu-check.log"
  fi
  exec > >(tee -a "$LOG") 2>&1
fi
START=$SECONDS
status=0
step() { echo; echo "=== engine: $* ($((SECONDS - START)) s)"; }

# Carried Debian libraries first, then the CUDA libraries of the machine's
# Python packages (nvidia-*-cu13 wheels) in case they are not on the loader path.
LIBS="$BUILD/carry/lib"
for d in $(python3 - 2>/dev/null <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
EOF
); do LIBS="$LIBS:$d"; done
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

bin() {  # bin NAME TREE-PATH
  if [[ -x "$BUILD/carry/bin/$1" ]]; then echo "$BUILD/carry/bin/$1"; else echo "$BUILD/$2/$1"; fi
}
MODEL_TESTS=$(bin facet_cuda_model_tests models/cuda)
EXEC_TESTS=$(bin facet_cuda_executor_tests worker)
NCCL_TESTS=$(bin facet_nccl_one_rank_tests models/cuda)
FACET=$(bin facet cli)

step "libraries"
for b in "$MODEL_TESTS" "$EXEC_TESTS" "$FACET"; do
  if [[ ! -x "$b" ]]; then
    echo "missing $b (here: bash scripts/gpu-carry-libs.sh $BUILD --build)"
    status=1
  elif ldd "$b" | grep "not found"; then
    echo "^ $b: unresolved libraries (carry $BUILD/carry)"
    status=1
  fi
done

run_tests() {  # run_tests LABEL BINARY
  [[ -x "$2" ]] || return 0
  step "$1"
  timeout 170 "$2" --gtest_color=no
  local rc=$?
  echo "$1 exit code: $rc"
  [[ $rc -ne 0 ]] && status=1
}
run_tests "GPU model vs golden logits (facet_cuda_model_tests)" "$MODEL_TESTS"
run_tests "engine + CUDA executor (facet_cuda_executor_tests)" "$EXEC_TESTS"
if [[ -x "$NCCL_TESTS" ]]; then
  run_tests "NCCL, one rank (facet_nccl_one_rank_tests)" "$NCCL_TESTS"
else
  step "NCCL, one rank: not built (no parallel/nccl_communicator in this build)"
fi

# --- end to end: random weights of a real shape, batch 1 ---
# (Only with a GPU: the random 27B weights alone take 54 GB of host memory.)
if ! nvidia-smi -L > /dev/null 2>&1; then
  step "facet bench --device cuda: skipped, no GPU (nvidia-smi -L failed)"
  status=1
elif [[ -x "$FACET" ]]; then
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
  # Peak HBM bandwidth of the card (vendor data sheets), bytes/s.
  case "$name" in
    *H200*) hbm=4.8e12 ;;
    *H100*PCIe*) hbm=2.0e12 ;;
    *H100*) hbm=3.35e12 ;;
    *A100*80GB*) hbm=2.039e12 ;;
    *) hbm=0 ;;
  esac
  # Gemma 3 27B in bf16 is 54 GB of weights; Gemma 4 31B 62 GB (on 141 GB cards).
  configs=("tests/data/configs/gemma-3-27b-it/config.json")
  if [[ "${mem_mib:-0}" -gt 120000 ]]; then configs+=("tests/data/configs/gemma-4-31B-it/config.json"); fi
  for cfg in "${configs[@]}"; do
    step "facet bench --device cuda --config $cfg --dtype bf16 (batch 1) on ${name:-unknown GPU}"
    json=$(mktemp)
    timeout 175 "$FACET" bench --device cuda --config "$cfg" --dtype bf16 --prompt-len 128 \
      --gen-len 64 --threads 0 > "$json"
    rc=$?
    cat "$json"
    echo "facet bench exit code: $rc"
    if [[ $rc -ne 0 ]]; then
      status=1
      continue
    fi
    python3 - "$json" "$hbm" "$name" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
hbm, name = float(sys.argv[2]), sys.argv[3]
wb = j["decode_weight_bytes_per_token"]
tok_s = j["decode_tok_s"]
print(f"decode at batch 1: {tok_s:.1f} tok/s; {wb / 1e9:.1f} GB of weights read per token")
if hbm > 0:
    roof = hbm / wb
    print(f"HBM roofline on {name}: {hbm / 1e12:.2f} TB/s / {wb / 1e9:.1f} GB = {roof:.1f} tok/s; "
          f"reached {100 * tok_s / roof:.0f}% (achieved {tok_s * wb / 1e12:.2f} TB/s)")
else:
    print(f"no HBM bandwidth known for '{name}': achieved {tok_s * wb / 1e12:.2f} TB/s")
print(f"prefill: {j['prefill_tok_s']:.0f} tok/s over {j['prompt_len']} tokens")
EOF
    rm -f "$json"
  done
fi

step "done: status $status"
exit $status
