#!/usr/bin/env python3
"""`mpirun -np N facet generate --tp N` prints the same greedy and seeded
sampled output as one process, for every golden architecture (token ids; the goldens have no
tokenizer) and N = 2, 4; only rank 0 prints. Also: --tp without a matching
world, or a --tp the heads do not split over, is an error.

usage: tp_generate_test.py FACET SOURCE_DIR MPIEXEC
"""
import json
import os
import subprocess
import sys

facet, src, mpiexec = sys.argv[1], sys.argv[2], sys.argv[3]
env = dict(os.environ, OMPI_MCA_mpi_yield_when_idle="1",
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
failures = []


def run(np_, args):
    cmd = [facet, "generate", "--threads", "1"] + args
    if np_ > 0:
        cmd = [mpiexec, "-np", str(np_), "--oversubscribe"] + cmd[:2] + ["--tp", str(np_)] + cmd[2:]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return p.returncode, p.stdout, p.stderr


def same(a, b, json_out):
    if not json_out:
        return a == b
    # Timings differ run to run; the tokens and text must not.
    ja, jb = json.loads(a), json.loads(b)
    return all(ja[k] == jb[k] for k in ("ids", "text", "finish_reason", "prompt_tokens"))


def check(name, args, sizes):
    json_out = "--json" in args
    rc, want, err = run(0, args)
    if rc != 0 or not want.strip():
        failures.append(f"{name}: single process failed ({rc}): {err}")
        return
    for n in sizes:
        rc, got, err = run(n, args)
        if rc != 0:
            failures.append(f"{name} np={n}: exit {rc}: {err[-500:]}")
        elif not same(got, want, json_out):
            failures.append(f"{name} np={n}: printed {got!r}, single process {want!r}")
        else:
            print(f"ok {name} np={n}: {got.strip()[:80]}")


for model in ["gemma2", "gemma3", "gemma4", "gemma4_moe"]:
    path = os.path.join(src, "tests/data/golden", model)
    check(model, ["--model", path, "--prompt-ids", "2,17,33,5,9", "--max-tokens", "12"], [2, 4])
    check(model + " json", ["--model", path, "--prompt-ids", "2,40", "--max-tokens", "6", "--json"], [2])
    # Seeded sampling: the ranks draw from their vocabulary slices (no gather).
    check(model + " sampled", ["--model", path, "--prompt-ids", "2,17,33,5,9", "--max-tokens", "12",
                               "--temperature", "0.9", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.02",
                               "--repetition-penalty", "1.2", "--seed", "5"], [2, 4])

# The quantized demo GGUF is not checked here: its matmuls quantize
# activations to int8 per block, a discontinuous step, so the 1e-7 changes
# that the all-reduce's summation order makes can flip a rounding and move
# logits by ~1 (measured: TP=2 matches 16 tokens, TP=4 differs at token 11).
# With dequantized weights it matches to 1e-5 (see the report).

# --tp 2 in a world of one: a clear error, exit code 2.
rc, out, err = run(0, ["--model", os.path.join(src, "tests/data/golden/gemma3"), "--tp", "2",
                       "--prompt-ids", "2"])
if rc != 2 or "mpirun" not in err:
    failures.append(f"--tp 2 without mpirun: exit {rc}, stderr {err!r}")
# --tp 3: the golden heads/width do not split three ways.
rc, out, err = run(3, ["--model", os.path.join(src, "tests/data/golden/gemma3"),
                       "--prompt-ids", "2"])
if rc == 0 or "attention shard: tp=3" not in out + err:
    failures.append(f"--tp 3 on 4 heads: exit {rc}, output {(out + err)[-600:]!r}")

if failures:
    print("\n".join("FAIL " + f for f in failures))
    sys.exit(1)
print("all tp generate checks passed")
