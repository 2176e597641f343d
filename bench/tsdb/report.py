#!/usr/bin/env python3
"""report.py -- corral vs VictoriaMetrics from one run.sh results directory, as ratios to VictoriaMetrics.

Ingest is samples/s over the whole import plus flush; disk is bytes per sample after background work
settles (VictoriaMetrics: after its force_merge, when it ran); RSS is after ingest and the high-water
mark; queries are query_bench.py medians (an error answer is shown as unsupported).
SPDX-License-Identifier: Apache-2.0
"""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None


def disk(r):
    for k in ("disk_compacted_bytes_per_sample", "disk_settled_bytes_per_sample"):
        if k in r:
            return r[k]
    return None


def row(label, c, v, fmt, better_high):
    if c is None or v is None:
        print("| %s | %s | %s | |" % (label, "-" if c is None else fmt % c, "-" if v is None else fmt % v))
        return
    ratio = c / v if v else float("inf")
    note = "x (higher is better)" if better_high else "x (lower is better)"
    print("| %s | %s | %s | %.2f%s |" % (label, fmt % c, fmt % v, ratio, note))


def main():
    d = sys.argv[1]
    c, v = load(d, "corral"), load(d, "victoria-metrics")
    if not c or not v:
        print("need corral.json and victoria-metrics.json in", d)
        return 1
    ds = c["dataset"]
    print("dataset: %d series x %d samples = %d samples" % (ds["series"], ds["samples_per_series"],
                                                          ds["total_samples"]))
    print()
    print("| measure | corral | VictoriaMetrics | corral / VM |")
    print("|---|---|---|---|")
    row("ingest samples/s", c["samples_per_s"], v["samples_per_s"], "%d", True)
    row("ingest CPU s", c.get("ingest_cpu_s"), v.get("ingest_cpu_s"), "%.1f", False)
    row("bytes/sample on disk", disk(c), disk(v), "%.3f", False)
    row("RSS after ingest MiB", c["rss_after_ingest_kb"] / 1024, v["rss_after_ingest_kb"] / 1024, "%.1f", False)
    row("RSS high-water MiB", c["hwm_final_kb"] / 1024, v["hwm_final_kb"] / 1024, "%.1f", False)
    vq = {q["query"]: q for q in v["queries"]}
    for q in c["queries"]:
        p = vq.get(q["query"], {})
        cm, vm = q.get("median_ms"), p.get("median_ms")
        if "error" in q.get("result", {}) or cm is None:
            print("| query %s ms | unsupported | %s | |" % (q["query"], "-" if vm is None else "%.1f" % vm))
        else:
            row("query %s ms" % q["query"], cm, vm, "%.1f", False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
