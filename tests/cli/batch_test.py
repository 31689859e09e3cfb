#!/usr/bin/env python3
"""End-to-end checks of `facet batch` on a golden model: results, per-line
errors, job-level errors, kill-and-resume (SIGTERM and SIGKILL), and 2 ranks
under mpirun giving the same results as one process.

Usage: batch_test.py FACET_BINARY SOURCE_DIR SHARED_DIR
Prints 'N passed, N failed' and exits non-zero on any failure.
"""
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import time

FACET, SRC, SHARED = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import batch_common as bc  # noqa: E402

MODEL = os.path.join(SRC, "tests/data/golden/gemma3")
TOKENIZER = os.path.join(SHARED, "data/tokenizers/gemma3/tokenizer.json")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: {str(detail)[:2000]}")


def batch(inp, out, *extra, timeout=300):
    return subprocess.run([FACET, "batch", "--model", MODEL, "--input", inp, "--output", out,
                           "--threads", "1", *extra], capture_output=True, text=True, timeout=timeout)


tmp = tempfile.mkdtemp(prefix="facet-batch-test-")
try:
    golden = bc.golden_prompts(SRC)
    lines = bc.make_input(golden, n_extra=40, with_bad=True)
    inp = os.path.join(tmp, "in.jsonl")
    bc.write_lines(inp, lines)
    n = len(lines)

    # 1. An uninterrupted run: every line answered once, golden greedy tokens.
    ref_path = os.path.join(tmp, "ref.jsonl")
    r = batch(inp, ref_path)
    check("run exit 0", r.returncode == 0, r.stderr)
    check("summary printed", "done:" in r.stderr and "requests" in r.stderr, r.stderr)
    check("plain progress when not a terminal", "\r" not in r.stderr, repr(r.stderr[-300:]))
    ref = bc.read_results(ref_path)
    problems = bc.check_results(lines, ref, golden)
    check("results: each line once, golden greedy ids, per-line errors", not problems, problems)

    # On a terminal the progress is redrawn in place ("\r" + erase line).
    master, slave = pty.openpty()
    tty_out = os.path.join(tmp, "tty.jsonl")
    p = subprocess.Popen([FACET, "batch", "--model", MODEL, "--input", inp, "--output", tty_out, "--threads", "1"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=120)
    os.close(master)
    tty_text = b"".join(chunks).decode(errors="replace")
    check("terminal: redrawn progress, no plain lines", p.returncode == 0 and "\r\x1b[K" in tty_text
          and "progress:" not in tty_text and "done:" in tty_text, repr(tty_text[-500:]))

    # 2. Restart on a finished output: nothing runs, nothing is appended.
    before = open(ref_path).read()
    r = batch(inp, ref_path)
    check("rerun skips everything", r.returncode == 0 and open(ref_path).read() == before
          and f"0 requests to run, {n} already done" in r.stderr, r.stderr)

    # 3. Killed midway (SIGTERM: syncs and exits 143; SIGKILL: loses only the
    #    unsynced tail), then resumed: identical to the uninterrupted run.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = os.path.join(tmp, f"resume-{sig.name}.jsonl")
        big = bc.make_input(golden, n_extra=400, with_bad=True, max_tokens=48)
        big_in = os.path.join(tmp, "big.jsonl")
        bc.write_lines(big_in, big)
        full = os.path.join(tmp, "big-ref.jsonl")
        if not os.path.exists(full):
            r = batch(big_in, full, "--max-in-flight", "4")
            check("big reference run", r.returncode == 0, r.stderr)
        p = subprocess.Popen([FACET, "batch", "--model", MODEL, "--input", big_in, "--output", out,
                              "--threads", "1", "--max-in-flight", "4", "--sync-every", "3"],
                             stderr=subprocess.PIPE, text=True)
        got = bc.wait_for_lines([out], len(big) // 5, p, timeout=120)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        partial = bc.count_lines([out])
        check(f"{sig.name}: killed midway", 0 < got and partial < len(big), f"{got} {partial} of {len(big)}")
        if sig == signal.SIGTERM:
            check("SIGTERM exits 143 after syncing", p.returncode == 143 and "stopped" in err, f"{p.returncode} {err}")
        else:
            # Simulate the torn write a kill mid-write(2) can leave.
            with open(out, "a") as f:
                f.write('{"custom_id": "torn", "respo')
        r = batch(big_in, out, "--max-in-flight", "4")
        check(f"{sig.name}: resume exit 0", r.returncode == 0, r.stderr)
        problems = bc.compare_runs(big, bc.read_results(full), bc.read_results(out))
        check(f"{sig.name}: resumed == uninterrupted, each id once", not problems, problems)

    # 4. Job-level errors: a clear message and a non-zero exit, before loading.
    r = batch(os.path.join(tmp, "missing.jsonl"), os.path.join(tmp, "o.jsonl"))
    check("missing input", r.returncode == 2 and "missing.jsonl" in r.stderr and "does not exist" in r.stderr, r.stderr)
    r = batch(tmp, os.path.join(tmp, "o.jsonl"))
    check("input is a folder", r.returncode == 2 and "is a folder" in r.stderr, r.stderr)
    r = batch(inp, os.path.join(tmp, "no/such/folder/o.jsonl"))
    check("output in a missing folder", r.returncode == 2 and "no/such/folder" in r.stderr
          and "does not exist" in r.stderr, r.stderr)
    dup = os.path.join(tmp, "dup.jsonl")
    bc.write_lines(dup, [lines[0], lines[0]])
    r = batch(dup, os.path.join(tmp, "dup-out.jsonl"))
    check("duplicate custom_id", r.returncode == 2 and "appears on lines 1 and 2" in r.stderr, r.stderr)
    foreign = os.path.join(tmp, "foreign.jsonl")
    with open(foreign, "w") as f:
        f.write("this is not a result file\n")
    r = batch(inp, foreign)
    check("refuses to append to a foreign file", r.returncode != 0 and "refusing" in r.stderr
          and open(foreign).read() == "this is not a result file\n", r.stderr)
    r = subprocess.run([FACET, "batch", "--model", "/nonexistent/model", "--input", inp, "--output",
                        os.path.join(tmp, "m.jsonl")], capture_output=True, text=True, timeout=60)
    check("missing model", r.returncode != 0 and "/nonexistent/model" in r.stderr, r.stderr)

    # 5. Text prompts need a tokenizer: with the real Gemma 3 tokenizer its ids
    #    fall outside the golden model's 512-token vocabulary -> per-line
    #    errors; a token-id line on the same run still completes.
    text_in = os.path.join(tmp, "text.jsonl")
    bc.write_lines(text_in, [
        {"custom_id": "t1", "body": {"prompt": "The capital of France is", "max_tokens": 4}},
        {"custom_id": "t2", "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}},
        {"custom_id": "t3", "body": {"prompt": golden[0]["input_ids"], "max_tokens": 3}}])
    r = batch(text_in, os.path.join(tmp, "text-notok.jsonl"))
    res = bc.read_results(os.path.join(tmp, "text-notok.jsonl"))
    check("text without tokenizer: per-line error", r.returncode == 0 and res.get("t1", {}).get("error")
          and "tokenizer" in res["t1"]["error"]["message"] and res.get("t3", {}).get("response"), res)
    if os.path.exists(TOKENIZER):
        r = batch(text_in, os.path.join(tmp, "text-tok.jsonl"), "--tokenizer", TOKENIZER)
        res = bc.read_results(os.path.join(tmp, "text-tok.jsonl"))
        check("text with an out-of-vocab tokenizer: per-line error", r.returncode == 0
              and "vocabulary" in (res.get("t1", {}).get("error") or {}).get("message", "")
              and res.get("t3", {}).get("response"), res)

    # 6. Two ranks under mpirun: the same results as one process, one file.
    mpirun = shutil.which("mpirun")
    if mpirun:
        out2 = os.path.join(tmp, "np2.jsonl")
        r = subprocess.run([mpirun, "-np", "2", "--oversubscribe", "--allow-run-as-root", FACET, "batch",
                            "--model", MODEL, "--input", inp, "--output", out2, "--threads", "1"],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMPI_MCA_mpi_yield_when_idle": "1",
                                "OMPI_MCA_btl_vader_single_copy_mechanism": "none"})
        check("mpirun -np 2 exit 0", r.returncode == 0, r.stderr)
        check("mpirun: rank 0 sums both ranks", "all 2 ranks" in r.stderr, r.stderr)
        check("mpirun: part files merged and removed",
              not [f for f in os.listdir(tmp) if f.startswith("np2.jsonl.part-")], os.listdir(tmp))
        problems = bc.compare_runs(lines, ref, bc.read_results(out2))
        check("mpirun -np 2 == embedded", not problems, problems)
        # 7. Tensor-parallel replicas: --tp 2 over 2 ranks (one replica) and 4 ranks (two).
        for np_ in (2, 4):
            out_tp = os.path.join(tmp, f"tp2-np{np_}.jsonl")
            r = subprocess.run([mpirun, "-np", str(np_), "--oversubscribe", "--allow-run-as-root", FACET, "batch",
                                "--model", MODEL, "--input", inp, "--output", out_tp, "--threads", "1", "--tp", "2"],
                               capture_output=True, text=True, timeout=600,
                               env={**os.environ, "OMPI_MCA_mpi_yield_when_idle": "1",
                                    "OMPI_MCA_btl_vader_single_copy_mechanism": "none"})
            check(f"mpirun -np {np_} --tp 2 exit 0, {np_ // 2} replica(s) of 2",
                  r.returncode == 0 and f"all {np_} ranks ({np_ // 2} replica" in r.stderr, r.stderr[-2000:])
            problems = bc.compare_runs(lines, ref, bc.read_results(out_tp))
            check(f"mpirun -np {np_} --tp 2 == embedded (greedy and seeded samples)", not problems, problems)
        r = subprocess.run([mpirun, "-np", "3", "--oversubscribe", "--allow-run-as-root", FACET, "batch",
                            "--model", MODEL, "--input", inp, "--output", os.path.join(tmp, "tp-bad.jsonl"),
                            "--threads", "1", "--tp", "2"], capture_output=True, text=True, timeout=120)
        check("--tp 2 on 3 ranks: a clear error", r.returncode != 0 and "must be a multiple of 2" in r.stderr,
              r.stderr[-1000:])
    else:
        check("mpirun found (scripts/setup.sh installs OpenMPI)", False)
finally:
    shutil.rmtree(tmp, ignore_errors=True)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
