#!/usr/bin/env python3
"""End to end: facet-coordinator + two `mpirun -np 2 facet-worker` replica jobs
+ concurrent gRPC clients on the golden Gemma 3 model, greedy; the
coordinator's OpenAI-compatible HTTP front (--http-port) answers the same. One replica's
rank is SIGKILLed mid-generation; every stream must still complete with the
same tokens as an undisturbed run (DESIGN.md §6). Cleans up every process.

usage: cluster_test.py BUILD_DIR SOURCE_DIR SHARED_DIR [--tp N]
"""
import argparse
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("src")
ap.add_argument("shared")
ap.add_argument("--tp", type=int, default=2)
ap.add_argument("--streams", type=int, default=6)
ap.add_argument("--max-tokens", type=int, default=300)
args = ap.parse_args()

COORD = os.path.join(args.build, "coordinator", "facet-coordinator")
WORKER = os.path.join(args.build, "worker", "facet-worker")
MODEL = os.path.join(args.src, "tests/data/golden/gemma3")
TOKENIZER = os.path.join(args.shared, "data/tokenizers/gemma3/tokenizer.json")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
failures = []
procs = []  # (name, Popen) to clean up
tmp = tempfile.mkdtemp(prefix="facet_cluster_")


def check(name, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failures.append(name)


def load_stubs():
    """Python stubs for facet/v1/facet.proto: grpc_tools when installed, else
    Debian's protoc + grpc_python_plugin (scripts/setup.sh)."""
    out = tempfile.mkdtemp(prefix="facet_stubs_")
    root = os.path.join(args.src, "proto")
    proto = os.path.join(root, "facet", "v1", "facet.proto")
    try:
        from grpc_tools import protoc
        well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        rc = protoc.main(["protoc", f"--proto_path={root}", f"--proto_path={well_known}", f"--python_out={out}",
                          f"--grpc_python_out={out}", proto])
    except ImportError:
        rc = subprocess.run(["protoc", f"--proto_path={root}", f"--python_out={out}", f"--grpc_python_out={out}",
                             "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", proto]).returncode
    if rc != 0:
        sys.exit("generating the Python gRPC stubs failed")
    sys.path.insert(0, out)
    return importlib.import_module("facet.v1.facet_pb2"), importlib.import_module("facet.v1.facet_pb2_grpc")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(name, cmd):
    log = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    procs.append((name, p))
    return p


def log_of(name):
    with open(os.path.join(tmp, name + ".log")) as f:
        return f.read()


def wait_for(pred, timeout, what, poll=0.1):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(poll)
    check(what, False, f"not within {timeout} s")
    return False


def rank_pids(mpirun):
    """World rank -> pid of the facet-worker processes mpirun started."""
    out = {}
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(mpirun.pid)], capture_output=True,
                              text=True).stdout.split():
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for kv in env:
            if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                out[int(kv.split(b"=")[1])] = int(pid)
    return out


def job_of_stream(stream, jobs):
    """Index of the job whose group serves `stream` (coordinator log: "request R on group HOST:PID/gN",
    PID being the job's world rank 0)."""
    if not stream.request_id:
        return None
    m = re.search(r"request %s on group [^:\s]+:(\d+)/g" % re.escape(stream.request_id), log_of("coordinator"))
    if not m:
        return None
    for j, job in enumerate(jobs):
        if job.poll() is None and rank_pids(job).get(0) == int(m.group(1)):
            return j
    return None


def pick_victim(streams, candidates, jobs):
    """Waits for a long stream to be mid-generation on one of the candidate jobs; returns that job."""
    found = {}

    def ready():
        for i in candidates:
            s = streams[i]
            if 12 <= len(s.ids) < args.max_tokens - 50:
                j = job_of_stream(s, jobs)
                if j is not None:
                    found["job"] = j
                    return True
        return False

    wait_for(ready, 60, "a stream mid-generation on a known group", poll=0.002)
    return found.get("job")


def cleanup():
    for name, p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


class Stream(threading.Thread):
    def __init__(self, stub, pb, prompt, max_tokens):
        super().__init__(daemon=True)
        self.stub, self.pb, self.prompt, self.max_tokens = stub, pb, prompt, max_tokens
        self.ids, self.finish, self.error, self.request_id, self.text = [], None, None, None, ""

    def run(self):
        req = self.pb.GenerateRequest(prompt_token_ids=self.prompt,
                                      sampling=self.pb.SamplingParams(temperature=0, max_tokens=self.max_tokens,
                                                                      seed=7))
        try:
            for chunk in self.stub.Generate(req, timeout=300):
                self.request_id = chunk.request_id
                self.ids.extend(chunk.token_ids)
                self.text += chunk.text
                if chunk.finish_reason:
                    self.finish = chunk.finish_reason
        except grpc.RpcError as e:
            self.error = f"{e.code()}: {e.details()}"


def http(port, path, body=None):
    """(status, parsed JSON or text) of a request to the coordinator's HTTP front."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, raw = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def run_streams(stub, pb, prompts, on_started=None):
    streams = [Stream(stub, pb, p, args.max_tokens) for p in prompts]
    for s in streams:
        s.start()
    if on_started:
        on_started(streams)
    for s in streams:
        s.join(timeout=300)
    return streams


try:
    pb, pb_grpc = load_stubs()
    port, link, http_port = free_port(), free_port(), free_port()
    coord = start("coordinator", [COORD, "--model", MODEL, "--tokenizer", TOKENIZER, "--port", str(port),
                                  "--http-port", str(http_port),
                                  "--link-port", str(link), "--link-host", "127.0.0.1", "--tp", str(args.tp),
                                  "--kv-cache-mb", "16", "--step-timeout-ms", "3000", "--link-timeout-ms", "4000",
                                  "--failover-wait", "60"])
    wait_for(lambda: "engine links on port" in log_of("coordinator"), 30, "coordinator starts")
    jobs = [start(f"job{j}", ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", WORKER,
                              "--coordinator", f"127.0.0.1:{link}",
                              # ~3 ms per step: a stream stays mid-generation long enough to be
                              # killed there even on an idle machine (a tiny model runs >2k tok/s).
                              "--test-step-delay-ms", "3"]) for j in range(2)]
    groups = 2 * (2 // args.tp)
    ok = wait_for(lambda: log_of("coordinator").count("registered (") == groups, 120,
                  f"{groups} engine groups register")
    if not ok:
        print(log_of("coordinator"), log_of("job0"), log_of("job1"), sep="\n")
        raise SystemExit(1)
    check("plan printed by the worker", "plan: tp %d" % args.tp in log_of("job0"), log_of("job0")[-500:])

    stub = pb_grpc.FacetStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    # The golden prompt first: the cluster (TP included) reproduces transformers' greedy ids.
    import json
    golden = json.load(open(os.path.join(MODEL, "golden.json")))["prompts"][0]
    g = Stream(stub, pb, golden["input_ids"], len(golden["greedy_ids"]))
    g.max_tokens = len(golden["greedy_ids"])
    g.run()
    check("golden greedy ids through the cluster", g.ids == golden["greedy_ids"] and g.error is None,
          f"{g.ids} vs {golden['greedy_ids']} ({g.error})")

    # The same request through the coordinator's OpenAI-compatible HTTP front.
    status, models = http(http_port, "/v1/models")
    check("HTTP /v1/models lists the served model", status == 200 and models["data"][0]["id"] == "gemma3",
          (status, models))
    status, reply = http(http_port, "/v1/completions", {"model": "gemma3", "prompt": golden["input_ids"],
                                                        "max_tokens": len(golden["greedy_ids"]), "temperature": 0})
    check("HTTP completion through the cluster equals the gRPC stream",
          status == 200 and reply["choices"][0]["text"] == g.text
          and reply["usage"]["completion_tokens"] == len(golden["greedy_ids"]), (status, reply, g.text))
    status, health = http(http_port, "/health")
    check("HTTP /health is 200 with live groups", status == 200, (status, health))
    status, metrics = http(http_port, "/metrics")
    m = re.search(r'^facet_generation_tokens_total\{model="gemma3"\} (\S+)$', metrics if status == 200 else "",
                  re.M)
    check("HTTP /metrics counts the cluster's generated tokens",
          m is not None and float(m.group(1)) >= len(golden["greedy_ids"]), metrics if m is None else m.group(0))
    status, bad = http(http_port, "/v1/completions", {"model": "nope", "prompt": [2, 3]})
    check("HTTP unknown model is a 404 with an OpenAI error", status == 404 and "error" in bad, (status, bad))

    prompts = [[2] + [3 + (i * 37 + k * 11) % 500 for k in range(6 + 3 * i)] for i in range(args.streams)]
    t0 = time.time()
    calm = run_streams(stub, pb, prompts)
    calm_s = time.time() - t0
    check("undisturbed streams complete", all(s.error is None and s.finish for s in calm),
          [(len(s.ids), s.error) for s in calm])
    # Streams that run to max_tokens (not stopped early by EOS) are the ones
    # that can be caught mid-generation.
    long_ones = [i for i, s in enumerate(calm) if len(s.ids) == args.max_tokens]
    check("most streams run to max_tokens", len(long_ones) >= args.streams // 2, [len(s.ids) for s in calm])
    print(f"undisturbed: {args.streams} streams x {args.max_tokens} tokens in {calm_s:.2f} s "
          f"({args.streams * args.max_tokens / calm_s:.0f} tok/s)", flush=True)

    killed = {}

    def kill_mid_stream(streams):
        # Every stream has started and none has finished: mid-generation.
        victim_job = pick_victim(streams, long_ones, jobs)
        if victim_job is None:
            return
        mid = [len(streams[i].ids) for i in long_ones]
        killed["job"] = victim_job
        pids = rank_pids(jobs[victim_job])
        victim = pids.get(1, pids.get(0))
        killed["counts"] = mid
        killed["pid"] = victim
        killed["t"] = time.time()
        os.kill(victim, signal.SIGKILL)

    t0 = time.time()
    hurt = run_streams(stub, pb, prompts, kill_mid_stream)
    hurt_s = time.time() - t0
    print(f"tokens per stream at the kill: {killed.get('counts')}", flush=True)
    check("killed mid-generation", killed.get("counts") and min(killed["counts"]) < args.max_tokens,
          killed.get("counts"))
    victim = killed.get("job", 0)
    survivor = jobs[1 - victim]
    for i, (a, b) in enumerate(zip(calm, hurt)):
        check(f"stream {i} completes after the kill", b.error is None and b.finish == a.finish,
              f"{b.error} finish={b.finish} tokens={len(b.ids)}")
        check(f"stream {i} same tokens as undisturbed (no loss, no duplicate)", a.ids == b.ids,
              f"{len(a.ids)} vs {len(b.ids)} tokens; first diff at "
              f"{next((k for k, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y), min(len(a.ids), len(b.ids)))}")
    clog = log_of("coordinator")
    resumed = [int(n) for n in re.findall(r"resumed after (\d+) streamed tokens", clog)]
    check("some requests failed over mid-stream", any(n > 0 for n in resumed), resumed)
    print(f"disturbed: {hurt_s:.2f} s; {len(resumed)} requests resumed after {resumed} tokens", flush=True)
    try:
        rc = jobs[victim].wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    check("the killed replica's job ends (mpirun tears it down)", rc is not None and rc != 0, rc)
    check("a live job keeps serving", survivor.poll() is None)

    # A hung collective: a stopped rank blocks its group's step; the leader's
    # watchdog aborts the job and its requests move to the fresh job2.
    jobs.append(start("job2", ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", WORKER,
                               "--coordinator", f"127.0.0.1:{link}", "--test-step-delay-ms", "3"]))
    wait_for(lambda: log_of("coordinator").count("registered (") == groups + 2 // args.tp, 120,
             "job2 registers")
    hung = {}

    def hang_mid_stream(streams):
        j = pick_victim(streams, long_ones, [survivor, jobs[2]])
        if j is None:
            return
        hung["job"] = [survivor, jobs[2]][j]
        pids = rank_pids(hung["job"])
        hung["pid"] = pids.get(1, pids.get(0))
        hung["t"] = time.time()
        closed = log_of("coordinator").count("link closed")
        os.kill(hung["pid"], signal.SIGSTOP)

        def resume_after_group_down():
            # The leader's watchdog must close the link while the rank is
            # stuck; then the rank resumes (a healed partition) and MPI must
            # take the rest of the job down.
            if wait_for(lambda: log_of("coordinator").count("link closed") > closed, 60,
                        "the hung group's leader leaves (watchdog)", poll=0.01):
                hung["down_s"] = time.time() - hung["t"]
            os.kill(hung["pid"], signal.SIGCONT)

        threading.Thread(target=resume_after_group_down, daemon=True).start()

    stalled = run_streams(stub, pb, prompts, hang_mid_stream)
    for i, (a, b) in enumerate(zip(calm, stalled)):
        check(f"stream {i} survives the hang with the same tokens", b.error is None and a.ids == b.ids,
              f"{b.error}, {len(b.ids)} tokens")
    stuck = hung.get("job", survivor)
    stuck_name = next(name for name, p in procs if p is stuck)
    try:
        rc1 = stuck.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc1 = None
    check("the hung job is aborted by the leader's watchdog", rc1 is not None and rc1 != 0,
          f"{rc1}\n{log_of(stuck_name)[-1500:]}")
    if args.tp > 1:  # a stopped single-rank leader is caught by the coordinator's link timeout instead
        check("the watchdog says why", "step watchdog" in log_of(stuck_name), log_of(stuck_name)[-1500:])
    print(f"hang: the coordinator saw the group down {hung.get('down_s', -1):.1f} s after its rank stopped "
          f"(step timeout 3 s); its job ended {time.time() - hung.get('t', time.time()):.1f} s after", flush=True)
    live = jobs[2] if stuck is survivor else survivor

    after = Stream(stub, pb, prompts[0], 20)
    after.max_tokens = 20
    after.run()
    check("new requests go to the live replica", after.error is None and after.ids == calm[0].ids[:20],
          after.error)
    status, reply = http(http_port, "/v1/completions", {"model": "gemma3", "prompt": prompts[0], "max_tokens": 20,
                                                        "temperature": 0})
    check("HTTP requests go to the live replica after the failures",
          status == 200 and reply["choices"][0]["text"] == after.text, (status, reply, after.text))

    # Clean shutdown: SIGTERM drains the coordinator, which drains the leaders.
    coord.send_signal(signal.SIGTERM)
    try:
        crc = coord.wait(timeout=60)
        jrc = live.wait(timeout=60)
    except subprocess.TimeoutExpired:
        crc = jrc = None
    check("coordinator exits 0 on SIGTERM", crc == 0, crc)
    check("the live job exits 0 after the drain", jrc == 0, jrc)
finally:
    cleanup()
    leftover = [name for name, p in procs if p.poll() is None]
    check("no process left behind", not leftover, leftover)

if failures:
    print(f"logs in {tmp}")
    sys.exit(1)
print("all cluster checks passed")
