#!/usr/bin/env python3
"""End to end: one facet-coordinator serving two models (golden Gemma 3 and
Gemma 2); each `mpirun facet-worker --model NAME` job joins its model's
replicas; gRPC and HTTP requests route by model name and reproduce each
model's golden greedy ids; a job that names no model (or an unknown one) is
refused with a clear message. Cleans up every process.

usage: two_models_test.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BUILD, SRC = sys.argv[1], sys.argv[2]
COORD = os.path.join(BUILD, "coordinator", "facet-coordinator")
WORKER = os.path.join(BUILD, "worker", "facet-worker")
FACET = os.path.join(BUILD, "cli", "facet")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
tmp = tempfile.mkdtemp(prefix="facet_two_models_")
procs, failures = [], []


def check(name, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else f": {str(detail)[:2000]}"), flush=True)
    if not cond:
        failures.append(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, cmd):
    log = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    procs.append((name, p))
    return p


def log_of(name):
    with open(os.path.join(tmp, name + ".log")) as f:
        return f.read()


def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def golden(model):
    with open(os.path.join(SRC, "tests/data/golden", model, "golden.json")) as f:
        return json.load(f)["prompts"][0]


def worker(name, *extra):
    return start(name, ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "1", WORKER,
                        "--coordinator", f"127.0.0.1:{link}", *extra])


try:
    port, link, http_port = free_port(), free_port(), free_port()
    coord = start("coordinator", [COORD, "--model", os.path.join(SRC, "tests/data/golden/gemma3"),
                                  "--model", os.path.join(SRC, "tests/data/golden/gemma2"),
                                  "--port", str(port), "--link-port", str(link), "--link-host", "127.0.0.1",
                                  "--http-port", str(http_port), "--kv-cache-mb", "16"])
    check("coordinator starts with two models",
          wait_for(lambda: "engine links on port" in log_of("coordinator"), 30), log_of("coordinator"))
    jobs = [worker("gemma3", "--model", "gemma3"), worker("gemma2", "--model", "gemma2")]
    nameless = worker("nameless")
    unknown = worker("unknown", "--model", "gemma9")
    check("both jobs register with their model",
          wait_for(lambda: 'model "gemma3")' in log_of("coordinator") and 'model "gemma2")' in log_of("coordinator"),
                   120), log_of("coordinator"))
    for name, p, what in ((("nameless", nameless, "start the workers with --model NAME")),
                          ("unknown", unknown, 'does not serve model "gemma9"')):
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        check(f"a job with {name} model is refused, saying why", rc not in (None, 0) and what in log_of(name),
              f"rc {rc}: {log_of(name)[-800:]}")
    for model in ("gemma2", "gemma3"):
        g = golden(model)
        r = subprocess.run([FACET, "client", "--addr", f"127.0.0.1:{port}", "--model", model, "--prompt-ids",
                            ",".join(map(str, g["input_ids"])), "--max-tokens", str(len(g["greedy_ids"])),
                            "--temperature", "0", "--json"], capture_output=True, text=True, timeout=120)
        try:
            ids = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
        except (ValueError, IndexError, KeyError):
            ids = None
        check(f"gRPC {model}: golden greedy ids from its own replicas", ids == g["greedy_ids"],
              f"{ids} vs {g['greedy_ids']}: {r.stderr[-500:]}")
        body = json.dumps({"model": model, "prompt": g["input_ids"], "max_tokens": len(g["greedy_ids"]),
                           "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                reply = json.loads(resp.read())
            tokens = reply["usage"]["completion_tokens"]
        except (urllib.error.URLError, ValueError, KeyError) as e:
            tokens, reply = None, e
        check(f"HTTP {model}: answered by its model", tokens == len(g["greedy_ids"]) and reply["model"] == model,
              reply)
    coord.send_signal(signal.SIGTERM)
    try:
        crc = coord.wait(timeout=60)
        jrc = [j.wait(timeout=60) for j in jobs]
    except subprocess.TimeoutExpired:
        crc, jrc = None, None
    check("coordinator and both jobs exit 0 on SIGTERM", crc == 0 and jrc == [0, 0], (crc, jrc))
finally:
    for name, p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)

if failures:
    print(f"logs in {tmp}")
    sys.exit(1)
print("all two-model checks passed")
