#!/usr/bin/env python3
"""Recall@10 against top-10 p50 latency (one thread) for every engine's sweep, one panel per
report: the plot beside the tables in BENCHMARKS.md.

Usage: plot_recall_latency.py OUT.png REPORT.json [REPORT.json ...]

Needs matplotlib (PyPI), e.g.  python3 -m venv .venv && .venv/bin/pip install matplotlib==3.11.2
The plot is a dev-time artifact drawn from the JSON reports that `tessera-bench` writes; it is
not built by CI, so the Rust build carries no font or image dependencies.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, paths = sys.argv[1], sys.argv[2:]
    reports = [json.load(open(p, encoding="utf-8")) for p in paths]
    fig, axes = plt.subplots(1, len(reports), figsize=(5.2 * len(reports), 4.2), squeeze=False)
    styles = {"tessera": ("tab:blue", "o"), "next-plaid": ("tab:orange", "s")}
    for ax, r in zip(axes[0], reports):
        for e in r["engines"]:
            color, marker = styles.get(e["name"], ("tab:gray", "^"))
            # One line per re-rank budget, through the probe widths.
            budgets = sorted({p["rerank_effective"] for p in e["sweep"]})
            for i, budget in enumerate(budgets):
                pts = sorted((p for p in e["sweep"] if p["rerank_effective"] == budget),
                             key=lambda p: p["knobs"]["probe"])
                xs = [p["latency"]["p50_ms"] for p in pts]
                ys = [p["recall_at_10"] for p in pts]
                ax.plot(xs, ys, marker=marker, color=color, alpha=1.0 - 0.3 * i,
                        ls=["-", "--", ":"][i % 3],
                        label=f"{e['name']}, {e['knob_names'][1]} {budget}")
                for p, x, y in zip(pts, xs, ys):
                    ax.annotate(str(p["knobs"]["probe"]), (x, y), textcoords="offset points",
                                xytext=(4, -10), fontsize=7, color=color)
        d = r["dataset"]
        ax.set_title(f"{d['name']}: {d['docs']:,} docs, {d['tokens']:,} tokens\n"
                     f"commit {r['git_commit']}, load {r['machine']['load_start']:.1f}",
                     fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("top-10 p50 latency, one thread (ms, log)")
        ax.set_ylabel("recall@10 vs exhaustive MaxSim")
        ax.set_ylim(0.6, 1.0)
        ax.axhline(0.95, color="gray", lw=0.6, ls="--")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Recall–latency sweep (labels: probes per query token)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
