"""Helpers shared by the `facet batch` tests (tests/cli/batch_test.py and
tests/slurm/slurm_batch_test.py): input files on the golden Gemma 3 model and
the checks on result files."""
import glob
import json
import os
import random
import time

CONTEXT = 512  # tests/data/golden/gemma3/config.json max_position_embeddings
VOCAB = 512


def golden_prompts(src):
    with open(os.path.join(src, "tests/data/golden/gemma3/golden.json")) as f:
        return json.load(f)["prompts"]


def make_input(golden, n_extra, with_bad, max_tokens=16):
    """Input lines (dicts, or raw strings for malformed ones) and what each
    must produce: the golden prompts (greedy ids known), `n_extra` pseudo-random
    token-id prompts (some sampled, with and without a seed) and, if
    `with_bad`, one line for each kind of per-line error."""
    rng = random.Random(1234)
    lines = []
    for i, g in enumerate(golden):
        lines.append({"custom_id": f"golden-{i}", "method": "POST", "url": "/v1/completions",
                      "body": {"model": "gemma3-golden", "prompt": g["input_ids"],
                               "max_tokens": len(g["greedy_ids"]), "temperature": 0}})
    for i in range(n_extra):
        prompt = [2] + [rng.randrange(3, VOCAB) for _ in range(rng.randrange(3, 24))]
        body = {"prompt": prompt, "max_tokens": max_tokens}
        if i % 5 == 3:
            body.update(temperature=0.8, top_p=0.95)  # seed derived from custom_id
        if i % 5 == 4:
            body.update(temperature=1.0, seed=i)
        lines.append({"custom_id": f"req-{i}", "body": body})
    if with_bad:
        lines.insert(1, "{this is not json")
        lines.insert(len(lines) // 2, {"custom_id": "bad-field", "body": {"prompt": [2, 5], "frobnicate": 1}})
        lines.append({"custom_id": "too-long", "body": {"prompt": [2] + [7] * (CONTEXT + 10)}})
        lines.append({"custom_id": "out-of-vocab", "body": {"prompt": [2, 99999]}})
        lines.append({"custom_id": "bad-temperature", "body": {"prompt": [2, 5], "temperature": -1}})
    return lines


# custom_id (or "line:N") -> a piece of the error message it must get.
def expected_errors(lines):
    out = {}
    for no, line in enumerate(lines, start=1):
        if isinstance(line, str):
            out[f"line:{no}"] = "malformed JSON"
        elif line["custom_id"] == "bad-field":
            out["bad-field"] = "body.frobnicate is not a supported field"
        elif line["custom_id"] == "too-long":
            out["too-long"] = "tokens"
        elif line["custom_id"] == "out-of-vocab":
            out["out-of-vocab"] = "vocabulary"
        elif line["custom_id"] == "bad-temperature":
            out["bad-temperature"] = "temperature"
    return out


def key_of(no, line):
    return f"line:{no}" if isinstance(line, str) else line["custom_id"]


def write_lines(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def read_results(path):
    """key -> result object; '__duplicates__' lists keys seen more than once."""
    res, dups = {}, []
    if not os.path.exists(path):
        return res
    with open(path) as f:
        for text in f:
            obj = json.loads(text)
            key = obj["custom_id"] if obj["custom_id"] is not None else f"line:{obj['line']}"
            if key in res:
                dups.append(key)
            res[key] = obj
    if dups:
        res["__duplicates__"] = dups
    return res


def check_results(lines, res, golden):
    """Problems (empty when fine): every line answered exactly once, golden
    prompts give transformers' greedy ids, bad lines get their error."""
    problems = []
    if "__duplicates__" in res:
        problems.append(f"duplicated: {res['__duplicates__'][:5]}")
    keys = [key_of(no, l) for no, l in enumerate(lines, start=1)]
    missing = [k for k in keys if k not in res]
    extra = [k for k in res if k not in keys and k != "__duplicates__"]
    if missing or extra:
        problems.append(f"missing {missing[:5]}, unexpected {extra[:5]}")
    errors = expected_errors(lines)
    for k in keys:
        r = res.get(k)
        if r is None:
            continue
        if k in errors:
            if r.get("response") is not None or errors[k] not in (r.get("error") or {}).get("message", ""):
                problems.append(f"{k}: expected an error with '{errors[k]}', got {json.dumps(r)[:300]}")
            continue
        if r.get("error") is not None or not r.get("response"):
            problems.append(f"{k}: unexpected error {r.get('error')}")
            continue
        body = r["response"]["body"]
        choice = body["choices"][0]
        if choice["finish_reason"] not in ("stop", "length"):
            problems.append(f"{k}: finish_reason {choice['finish_reason']}")
        if body["usage"]["completion_tokens"] != len(choice["token_ids"]):
            problems.append(f"{k}: usage {body['usage']} vs {len(choice['token_ids'])} ids")
    for i, g in enumerate(golden):
        r = res.get(f"golden-{i}")
        ids = r and r.get("response") and r["response"]["body"]["choices"][0]["token_ids"]
        if ids != g["greedy_ids"]:
            problems.append(f"golden-{i}: {ids} != transformers' greedy {g['greedy_ids']}")
    return problems


def compare_runs(lines, a, b):
    """Problems: `b` must hold each line exactly once with the same answer as `a`."""
    problems = []
    for name, res in (("reference", a), ("run", b)):
        if "__duplicates__" in res:
            problems.append(f"{name} duplicated {res['__duplicates__'][:5]}")
    keys = [key_of(no, l) for no, l in enumerate(lines, start=1)]
    for k in keys:
        if k not in a or k not in b:
            problems.append(f"{k}: in reference {k in a}, in run {k in b}")
        elif a[k] != b[k]:
            problems.append(f"{k}: differs:\n  {json.dumps(a[k])[:300]}\n  {json.dumps(b[k])[:300]}")
    extra = set(b) - set(keys) - {"__duplicates__"}
    if extra:
        problems.append(f"unexpected keys {sorted(extra)[:5]}")
    return problems[:10]


def count_lines(patterns):
    n = 0
    for pattern in patterns:
        for path in glob.glob(pattern):
            with open(path, "rb") as f:
                n += f.read().count(b"\n")
    return n


def wait_for_lines(patterns, n, proc=None, timeout=120, alive=None):
    """Polls until the files hold >= n lines; returns the count. Stops early
    when `proc` exits or `alive()` turns false."""
    end = time.time() + timeout
    got = 0
    while time.time() < end:
        got = count_lines(patterns)
        if got >= n:
            return got
        if proc is not None and proc.poll() is not None:
            return got
        if alive is not None and not alive():
            return got
        time.sleep(0.05)
    return got
