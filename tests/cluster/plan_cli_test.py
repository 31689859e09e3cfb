#!/usr/bin/env python3
"""`facet plan` dry runs on the official configs: exit codes, the plan's
numbers in --json, and a reason when the model cannot fit.

usage: plan_cli_test.py FACET SOURCE_DIR
"""
import json
import subprocess
import sys

facet, src = sys.argv[1], sys.argv[2]
failures = []


def check(name, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))
    if not cond:
        failures.append(name)


def plan(*args):
    return subprocess.run([facet, "plan", *args], capture_output=True, text=True, timeout=60)


cfg = lambda name: f"{src}/tests/data/configs/{name}/config.json"

r = plan("--config", cfg("gemma-4-26B-A4B-it"), "--ranks", "8", "--memory-gb", "80", "--context", "32768", "--json")
check("26B-A4B on 8x80GB plans", r.returncode == 0, r.stderr)
if r.returncode == 0:
    p = json.loads(r.stdout)
    check("26B-A4B: eight TP1 replicas", p["tp"] == 1 and len(p["groups"]) == 8, p["groups"])
    check("26B-A4B: KV tokens per rank reported", all(x["kv_tokens"] > 32768 for x in p["ranks"]), p["ranks"][0])

r = plan("--config", cfg("gemma-4-26B-A4B-it"), "--ranks", "8", "--memory-gb", "80", "--ep", "8")
check("26B-A4B --ep 8: experts split by 8", r.returncode == 0 and "experts [112,128)" in r.stdout, r.stdout + r.stderr)

r = plan("--config", cfg("gemma-4-31B-it"), "--ranks", "2", "--memory-gb", "80")
check("31B on 2x80GB at 256K: TP2", r.returncode == 0 and "plan: tp 2" in r.stdout, r.stdout + r.stderr)
check("31B: bytes per rank printed", "weights 28.6 GiB" in r.stdout, r.stdout)

r = plan("--config", cfg("gemma-3-27b-it"), "--ranks", "1", "--memory-gb", "24")
check("27B on 1x24GB fails with a reason", r.returncode == 1 and "does not fit" in r.stderr, r.stderr)

r = plan("--config", cfg("gemma-3-27b-it"), "--ranks", "4", "--memory-gb", "80", "--tp", "3")
check("--tp 3 refused: heads", r.returncode == 1 and "query heads" in r.stderr, r.stderr)

r = plan("--config", "/nonexistent/config.json", "--ranks", "1", "--memory-gb", "80")
check("missing config: error naming the path", r.returncode == 2 and "/nonexistent" in r.stderr, r.stderr)

sys.exit(1 if failures else 0)
