#!/usr/bin/env python3
"""Plots `facet bench --serve` reports: output tokens/s, TTFT and TPOT (p50,
p99 dashed) against concurrency, one line per report (e.g. Facet and a peer).

  scripts/bench/plot_serve.py facet.json llamacpp.json --label Facet --label llama.cpp -o serve.png

Needs matplotlib (scripts/setup-python.sh's venv has it).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reports", nargs="+", help="JSON written by facet bench --serve (--json-out)")
    ap.add_argument("--label", action="append", default=[], help="one per report (default: file name)")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    args = ap.parse_args()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [("output_tok_s", None, "output tokens/s"), ("ttft_ms", "p50", "TTFT (ms)"),
              ("tpot_ms", "p50", "TPOT (ms)")]
    for i, path in enumerate(args.reports):
        report = json.load(open(path))
        label = args.label[i] if i < len(args.label) else os.path.basename(path)
        runs = sorted(report["runs"], key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in runs]
        for ax, (key, pct, title) in zip(axes, panels):
            if pct is None:
                ax.plot(xs, [r[key] for r in runs], marker="o", label=label)
            else:
                line, = ax.plot(xs, [r[key][pct] if r[key] else float("nan") for r in runs], marker="o",
                                label=f"{label} p50")
                ax.plot(xs, [r[key]["p99"] if r[key] else float("nan") for r in runs], marker="x",
                        linestyle="--", color=line.get_color(), label=f"{label} p99")
            ax.set_title(title)
            ax.set_xlabel("concurrency")
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([str(x) for x in xs])
            ax.grid(True, alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=8)
    first = json.load(open(args.reports[0]))
    fig.suptitle(f"facet bench --serve: prompt {first.get('prompt_len')} / output {first.get('gen_len')} tokens")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
