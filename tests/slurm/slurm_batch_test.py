#!/usr/bin/env python3
"""A real single-host Slurm: brings up munged + slurmctld + slurmd (Debian's
slurm-wlm 22.05) in a scratch folder, submits scripts/slurm/facet-batch.sbatch
with 2 tasks on CPU and the golden Gemma 3 model, checks the output, then
kills a second job midway (SIGKILL: no chance to flush) and resubmits it: the
result must hold every custom_id exactly once and equal the uninterrupted run.
Then scripts/slurm/facet-serve.sbatch: facet-coordinator in the batch step and
2 facet-worker ranks via srun --mpi=pmix form one TP=2 engine group that
answers gRPC and HTTP with the golden greedy ids; scancel drains it.

Usage: slurm_batch_test.py FACET_BINARY SOURCE_DIR
Fails (never skips) when Slurm cannot start. Every daemon and job it started
is stopped on exit, also when a check fails or the test is interrupted.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

FACET, SRC = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
sys.path.insert(0, os.path.join(SRC, "tests/cli"))
import batch_common as bc  # noqa: E402

SBATCH = os.path.join(SRC, "scripts/slurm/facet-batch.sbatch")
SERVE_SBATCH = os.path.join(SRC, "scripts/slurm/facet-serve.sbatch")
BUILD = os.path.dirname(os.path.dirname(FACET))  # FACET is BUILD/cli/facet
MODEL = os.path.join(SRC, "tests/data/golden/gemma3")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {str(detail)[:3000]}")
    sys.stdout.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """munged, slurmctld and slurmd as children of this process, configured
    entirely inside `root`; stop() ends jobs, daemons and any process whose
    environment points into `root` (slurmstepd and job processes)."""

    def __init__(self, root):
        self.root = root
        self.procs = []
        self.conf = os.path.join(root, "slurm.conf")
        self.env = {**os.environ, "SLURM_CONF": self.conf}

    def start(self):
        root = self.root
        for d in ("state", "spool", "log"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(root, 0o711)  # munged wants its socket folder traversable
        key = os.path.join(root, "munge.key")
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        os.chmod(key, 0o400)
        self.sock = os.path.join(root, "munge.sock")
        # -F: a child we can stop by pid; --force: munged would refuse to run as
        # root with keys outside /etc/munge.
        self._spawn("munged", ["munged", "-F", "--force", f"--key-file={key}", f"--socket={self.sock}",
                               f"--pid-file={root}/munged.pid", f"--log-file={root}/log/munged.log",
                               f"--seed-file={root}/munged.seed"])
        self._wait(lambda: os.path.exists(self.sock), 20, "munged socket")
        host = socket.gethostname()
        user = os.environ.get("USER") or "root"
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=facettest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={self.sock}
CredType=cred/munge
SlurmUser={user}
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# No cgroups in containers: track processes by parentage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
# The node's CPUs come from here, not from the machine, so 2 tasks fit on
# any runner.
SlurmdParameters=config_overrides
NodeName=facetnode NodeHostname={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=facetnode Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf])
        self._spawn("slurmd", ["slurmd", "-D", "-f", self.conf, "-N", "facetnode"])
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", 60,
                   "the node to become idle")

    def _spawn(self, name, cmd):
        out = open(os.path.join(self.root, "log", f"{name}.out"), "w")
        self.procs.append((name, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                                  start_new_session=True)))

    def _wait(self, cond, timeout, what):
        end = time.time() + timeout
        while time.time() < end:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.logs()}")
            try:
                if cond():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self):
        text = []
        for name in sorted(os.listdir(os.path.join(self.root, "log"))):
            with open(os.path.join(self.root, "log", name), errors="replace") as f:
                text.append(f"--- {name}\n" + f.read()[-3000:])
        return "\n".join(text)

    def run(self, *cmd, timeout=60):
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)

    def submit(self, *args):
        r = self.run("sbatch", "--parsable", *args)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed: {r.stderr}")
        return r.stdout.strip().split(";")[0]

    def state(self, job):
        r = self.run("scontrol", "-o", "show", "job", job)
        for field in r.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return "GONE"

    def wait_job(self, job, timeout):
        end = time.time() + timeout
        while time.time() < end:
            s = self.state(job)
            if s not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return s
            time.sleep(0.5)
        return "TIMEOUT"

    def stop(self):
        try:
            if any(p.poll() is None for n, p in self.procs if n == "slurmctld"):
                self.run("scancel", "--user", os.environ.get("USER") or "root", "--signal=KILL", timeout=20)
                time.sleep(1)
        except (OSError, subprocess.SubprocessError):
            pass
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # slurmstepd and the ranks outlive slurmd: find them by the SLURM_CONF
        # in their environment (it names our scratch folder) and kill by pid.
        marker = f"SLURM_CONF={self.conf}".encode()
        for _ in range(2):
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == os.getpid():
                    continue
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if marker in f.read().split(b"\0"):
                            os.kill(int(pid), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
            time.sleep(0.5)


def serve_serving(slurm, work, golden):
    port, http_port, link = free_port(), free_port(), free_port()
    env = {"FACET_COORDINATOR": os.path.join(BUILD, "coordinator/facet-coordinator"),
           "FACET_WORKER": os.path.join(BUILD, "worker/facet-worker"),
           "FACET_PORT": str(port), "FACET_HTTP_PORT": str(http_port), "FACET_LINK_PORT": str(link),
           "FACET_COORD_HOST": "127.0.0.1", "FACET_BIND": "127.0.0.1"}
    os.environ.update(env)
    slurm.env.update(env)
    log_path = os.path.join(work, "serve.log")
    job = slurm.submit("-n", "2", "-o", log_path, SERVE_SBATCH, MODEL, "--tp", "2", "--kv-cache-mb", "16")

    def log():
        try:
            with open(log_path) as f:
                return f.read()
        except OSError:
            return ""

    end = time.time() + 180
    while time.time() < end and "registered (" not in log() and slurm.state(job) in (
            "PENDING", "CONFIGURING", "RUNNING"):
        time.sleep(0.5)
    check("serve job: the srun-launched ranks register one TP=2 engine group",
          "registered (" in log() and "plan: tp 2" in log(), f"{slurm.state(job)}\n{log()}")
    g = golden[0]
    r = subprocess.run([FACET, "client", "--addr", f"127.0.0.1:{port}", "--prompt-ids",
                        ",".join(map(str, g["input_ids"])), "--max-tokens", str(len(g["greedy_ids"])),
                        "--temperature", "0", "--json"], capture_output=True, text=True, timeout=120)
    try:
        ids = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
    except (ValueError, IndexError, KeyError):
        ids = None
    check("serve job: gRPC greedy ids equal the golden ones (TP=2 over srun)", ids == g["greedy_ids"],
          f"{ids} vs {g['greedy_ids']}; rc {r.returncode} {r.stderr[-1500:]}\n{log()}")
    body = json.dumps({"prompt": g["input_ids"], "max_tokens": len(g["greedy_ids"]), "temperature": 0}).encode()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            reply = json.loads(resp.read())
        usage = reply["usage"]["completion_tokens"]
    except Exception as e:  # noqa: BLE001 - reported as a failure
        usage, reply = None, e
    check("serve job: the HTTP front answers through the same group", usage == len(g["greedy_ids"]), reply)
    r = slurm.run("scancel", job)
    state = slurm.wait_job(job, 120)
    text = log()
    check("serve job: scancel drains the coordinator and the group",
          r.returncode == 0 and state in ("CANCELLED", "COMPLETED") and "draining" in text, f"{state}\n{text}")


def main():
    for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch"):
        if not shutil.which(tool):
            print(f"FAIL {tool} not found: run scripts/setup.sh (slurm-wlm, munge)")
            return 1
    root = tempfile.mkdtemp(prefix="facet-slurm-")
    slurm = Slurm(root)
    # SIGTERM from ctest's timeout still cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        slurm.start()
        check("slurm up: node idle", True)
        work = os.path.join(root, "work")
        os.makedirs(work)
        golden = bc.golden_prompts(SRC)
        env_note = {"FACET_BIN": FACET, "FACET_THREADS": "1"}
        os.environ.update(env_note)  # sbatch exports the submitting environment
        slurm.env.update(env_note)

        # 1. An uninterrupted job: 2 tasks, part files merged into one output.
        lines = bc.make_input(golden, n_extra=300, with_bad=True, max_tokens=40)
        inp = os.path.join(work, "in.jsonl")
        bc.write_lines(inp, lines)
        ref = os.path.join(work, "ref.jsonl")
        job = slurm.submit("-n", "2", "-o", os.path.join(work, "ref-%j.log"), SBATCH, MODEL, inp, ref,
                           "--max-in-flight", "8")
        state = slurm.wait_job(job, 600)
        log = open(os.path.join(work, f"ref-{job}.log")).read()
        check("job 1 completed", state == "COMPLETED", f"{state}\n{log}\n{slurm.logs()}")
        check("job 1 ran 2 ranks via srun --mpi=pmix", "srun --mpi=pmix" in log and "all 2 ranks" in log, log)
        check("job 1 part files merged", not [f for f in os.listdir(work) if ".part-" in f], os.listdir(work))
        res = bc.read_results(ref)
        problems = bc.check_results(lines, res, golden)
        check("job 1 output: each line once, golden greedy ids, per-line errors", not problems, problems)

        # 2. The same input, killed midway with SIGKILL, then resubmitted.
        out = os.path.join(work, "resumed.jsonl")
        job = slurm.submit("-n", "2", "-o", os.path.join(work, "resumed-%j.log"), SBATCH, MODEL, inp, out,
                           "--max-in-flight", "8", "--sync-every", "4")
        got = bc.wait_for_lines([out, out + ".part-*"], len(lines) // 4, timeout=300,
                                alive=lambda: slurm.state(job) in ("PENDING", "CONFIGURING", "RUNNING"))
        r = slurm.run("scancel", "--signal=KILL", job)
        state = slurm.wait_job(job, 120)
        partial = bc.count_lines([out, out + ".part-*"])
        print(f"job 2: {got} results seen, scancel --signal=KILL, {partial} of {len(lines)} synced")
        check("job 2 killed midway", r.returncode == 0 and 0 < got and partial < len(lines)
              and state in ("CANCELLED", "FAILED"),
              f"scancel {r.returncode} {r.stderr}; {got} / {partial} of {len(lines)} lines; state {state}")
        job = slurm.submit("-n", "2", "-o", os.path.join(work, "resumed-%j.log"), SBATCH, MODEL, inp, out,
                           "--max-in-flight", "8")
        state = slurm.wait_job(job, 600)
        log = open(os.path.join(work, f"resumed-{job}.log")).read()
        check("job 3 (resubmitted) completed", state == "COMPLETED", f"{state}\n{log}")
        m = re.search(r"all 2 ranks: done: (\d+) requests \(\d+ failed, (\d+) already done", log)
        check("job 3 skipped what job 2 had done and ran the rest",
              m is not None and int(m.group(2)) > 0 and int(m.group(1)) + int(m.group(2)) == len(lines), log)
        problems = bc.compare_runs(lines, res, bc.read_results(out))
        check("killed + resumed == uninterrupted, every custom_id exactly once", not problems, problems)
        check("job 3 part files merged", not [f for f in os.listdir(work) if ".part-" in f], os.listdir(work))

        # 3. Serving: facet-serve.sbatch, coordinator + an srun-launched TP=2 group.
        serve_serving(slurm, work, golden)
    except Exception as e:  # noqa: BLE001 - reported as a failure, never a skip
        check("slurm test ran", False, f"{type(e).__name__}: {e}")
    finally:
        slurm.stop()
        leftovers = [p for n, p in slurm.procs if p.poll() is None]
        check("daemons stopped", not leftovers, leftovers)
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
