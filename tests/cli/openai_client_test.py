#!/usr/bin/env python3
"""The official `openai` Python client against `facet serve --http-port`:
models, chat (non-streaming and streamed, which must agree under greedy
decoding), completions, n, bad requests (400/404 as the client's typed
errors), a stream the client closes early (no request or KV block left
behind), /metrics parsed by prometheus_client's text-format parser with
counters that move, /health, `facet bench --serve --url` with its plot, and a
clean SIGTERM.

The model is the tiny golden Gemma 3 (vocab 512, random weights) with a tiny
byte-fallback tokenizer.json written here, so the test is fast and needs no
download. The packages come from scripts/setup-python.sh's venv; if they are
missing this test FAILS (CI must really run it).

Usage: openai_client_test.py FACET_BINARY SOURCE_DIR SHARED_DIR
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

FACET, SRC, SHARED = sys.argv[1], sys.argv[2], sys.argv[3]


def reexec_in_venv():
    venv_py = os.environ.get("FACET_TEST_PYTHON") or os.path.join(
        os.environ.get("FACET_CACHE", os.path.expanduser("~/.cache/facet")), "venv-test/bin/python")
    if not os.environ.get("FACET_OPENAI_TEST_REEXEC") and os.path.exists(venv_py):
        os.environ["FACET_OPENAI_TEST_REEXEC"] = "1"  # once: a venv without the packages fails below
        os.execv(venv_py, [venv_py, *sys.argv])
    print("FAIL: the `openai` and `prometheus_client` packages are missing; run scripts/setup-python.sh "
          f"(expected in {venv_py})")
    sys.exit(1)


try:
    import openai
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    reexec_in_venv()

passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


def write_tiny_tokenizer(folder):
    """A 512-token byte-fallback BPE in Gemma's tokenizer.json layout: the
    special tokens at Gemma 3's names, all 256 bytes, and single characters."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in "\u2581abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'":
        vocab[ch] = len(vocab)
    while len(vocab) < 512:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in specials]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                          "invert": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<bos>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    path = os.path.join(folder, "tokenizer.json")
    with open(path, "w") as f:
        json.dump(tok, f)
    return path


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metrics(base):
    status, text = http_get(base + "/metrics")
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):  # raises on a malformed exposition
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


tmp = tempfile.mkdtemp(prefix="facet-openai-")
tokenizer = write_tiny_tokenizer(tmp)
model_dir = os.path.join(SRC, "tests/data/golden/gemma3")
log_path = os.path.join(tmp, "serve.log")
log = open(log_path, "w")
server = subprocess.Popen([FACET, "serve", "--model", model_dir, "--tokenizer", tokenizer, "--name", "tiny",
                           "--port", "0", "--http-port", "0", "--threads", "1", "--kv-cache-mb", "16",
                           "--default-max-tokens", "16"], stdout=log, stderr=subprocess.STDOUT)
base = None
deadline = time.time() + 120
while time.time() < deadline and server.poll() is None and base is None:
    m = re.search(r"HTTP \(OpenAI API, /metrics\) on (http://\S+)", open(log_path).read())
    if m:
        base = m.group(1)
    time.sleep(0.1)
if base is None:
    print("FAIL: facet serve did not start its HTTP front:\n" + open(log_path).read())
    server.kill()
    sys.exit(1)

try:
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)

    models = client.models.list()
    check("models lists the served model", [m.id for m in models.data] == ["tiny"], models)

    status, body = http_get(base + "/health")
    check("health 200", status == 200 and json.loads(body)["status"] == "ok", body)

    before = metrics(base)
    messages = [{"role": "user", "content": "Hello there, how are you?"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    text = r.choices[0].message.content
    check("chat reply", isinstance(text, str) and r.choices[0].message.role == "assistant", r)
    check("chat finish reason", r.choices[0].finish_reason in ("stop", "length"), r)
    check("chat usage", r.usage.prompt_tokens > 10 and 1 <= r.usage.completion_tokens <= 8
          and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage)
    check("chat object", r.object == "chat.completion" and r.model == "tiny" and r.id.startswith("chatcmpl-"), r)

    # Streamed, the same greedy request yields the same text, then usage.
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, finish, usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    check("stream text equals non-stream text", "".join(pieces) == text, f"{''.join(pieces)!r} vs {text!r}")
    check("stream finish reason", finish == r.choices[0].finish_reason, finish)
    check("stream usage", usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage)
    check("stream came in chunks", chunks >= 2, chunks)

    # Sampling with a seed is reproducible; n gives several choices.
    a = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=1.0, seed=7)
    b = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=1.0, seed=7)
    check("seeded sampling reproducible", a.choices[0].message.content == b.choices[0].message.content)
    n = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, n=3, seed=1)
    check("n=3 choices", [c.index for c in n.choices] == [0, 1, 2], n)

    c = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
    check("completion", c.object == "text_completion" and isinstance(c.choices[0].text, str)
          and 1 <= c.usage.completion_tokens <= 5, c)

    # Bad requests surface as the client's typed errors with OpenAI-style bodies.
    try:
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=-1)
        check("negative max_tokens rejected", False, "no error")
    except openai.BadRequestError as e:
        check("negative max_tokens -> 400", e.status_code == 400 and "max_tokens" in str(e), e)
    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        check("unknown model rejected", False, "no error")
    except openai.NotFoundError as e:
        check("unknown model -> 404", e.status_code == 404 and "no-such-model" in str(e), e)
    try:
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}])
        check("bad role rejected", False, "no error")
    except openai.BadRequestError as e:
        check("bad role -> 400", "role" in str(e), e)
    try:
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=600)
        check("too long rejected", False, "no error")
    except openai.BadRequestError as e:
        check("beyond the context -> 400", "context" in str(e), e)
    req = urllib.request.Request(base + "/v1/chat/completions", data=b'{"messages": [', method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        check("malformed JSON rejected", False, "no error")
    except urllib.error.HTTPError as e:
        err = json.loads(e.read().decode())
        check("malformed JSON -> 400 with an error object", e.code == 400 and "error" in err
              and err["error"]["type"] == "invalid_request_error", err)

    # A client that closes the stream early leaves nothing behind.
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=400, stream=True,
                                            temperature=1.0, extra_body={"ignore_eos": True})
    for _ in stream:
        break
    stream.close()
    ok = False
    for _ in range(200):
        m = metrics(base)
        used = sum(v for (name, _), v in m.items() if name == "facet_kv_blocks_used")
        if sample(m, "facet_requests_running", model="tiny") == 0 and used == 0 \
                and sample(m, "facet_http_active_requests") == 0:
            ok = True
            break
        time.sleep(0.05)
    check("early close frees the request and its KV blocks", ok, m)

    # /metrics parses (above) and its counters moved with the requests.
    after = metrics(base)
    ok200 = sample(after, "facet_http_requests_total", endpoint="/v1/chat/completions", status="200") - \
        sample(before, "facet_http_requests_total", endpoint="/v1/chat/completions", status="200")
    check("requests_total counts the 200s", ok200 >= 6, ok200)
    check("requests_total counts the 400s",
          sample(after, "facet_http_requests_total", endpoint="/v1/chat/completions", status="400") >= 3, after)
    check("requests_total counts the 404",
          sample(after, "facet_http_requests_total", endpoint="/v1/chat/completions", status="404") == 1, after)
    check("generation tokens counted",
          sample(after, "facet_generation_tokens_total", model="tiny") >
          sample(before, "facet_generation_tokens_total", model="tiny") + 20, after)
    check("TTFT histogram observed",
          sample(after, "facet_time_to_first_token_seconds_count", model="tiny") >=
          sample(before, "facet_time_to_first_token_seconds_count", model="tiny") + 6, after)
    check("ITL histogram observed", sample(after, "facet_inter_token_latency_seconds_count", model="tiny") > 0)
    check("step time exported", sample(after, "facet_engine_step_seconds_total", model="tiny") > 0 and
          sample(after, "facet_engine_steps_total", model="tiny") > 0, after)
    check("KV pool totals exported", any(n == "facet_kv_blocks_total" and v > 0 for (n, _), v in after.items()))

    # facet bench --serve --url drives the same server, then the plot.
    out_json, out_md, png = (os.path.join(tmp, f) for f in ("bench.json", "bench.md", "bench.png"))
    r = subprocess.run([FACET, "bench", "--serve", "--url", base, "--concurrency", "1,2", "--requests", "3",
                        "--prompt-len", "6", "--gen-len", "4", "--ignore-eos", "--json-out", out_json,
                        "--markdown-out", out_md], capture_output=True, text=True, timeout=300)
    check("bench --url exit 0", r.returncode == 0, r.stdout + r.stderr)
    if r.returncode == 0:
        report = json.loads(r.stdout)
        runs = report["runs"]
        check("bench two levels", [x["concurrency"] for x in runs] == [1, 2], runs)
        check("bench exact output lengths (ignore_eos)", all(x["mean_output_tokens"] == 4 for x in runs), runs)
        check("bench latency fields", all(x["output_tok_s"] > 0 and x["ttft_ms"]["p99"] >= x["ttft_ms"]["p50"] > 0
                                          and set(x["tpot_ms"]) == {"mean", "p50", "p90", "p99"} for x in runs), runs)
        check("bench markdown table", open(out_md).read().startswith("| concurrency |"), open(out_md).read())
        p = subprocess.run([sys.executable, os.path.join(SRC, "scripts/bench/plot_serve.py"), out_json,
                            "-o", png], capture_output=True, text=True, timeout=120)
        check("plot written", p.returncode == 0 and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n",
              p.stdout + p.stderr)
    r = subprocess.run([FACET, "bench", "--serve", "--url", "ftp://x"], capture_output=True, text=True, timeout=60)
    check("bench bad url", r.returncode != 0 and "http://" in r.stderr, r.stderr)
finally:
    server.send_signal(signal.SIGTERM)
    try:
        rc = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        rc = -1
    log.close()
check("serve exits 0 on SIGTERM", rc == 0, open(log_path).read()[-2000:])

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
