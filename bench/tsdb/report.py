#!/usr/bin/env python3
"""report.py -- corral vs VictoriaMetrics and Prometheus from one run.sh results directory.

Ingest (corral and VictoriaMetrics, absent after a QUERY_ONLY run) is samples/s over the whole import plus
flush; disk is bytes per sample after background work settles (VictoriaMetrics: after its force_merge,
when it ran); RSS is after ingest and the high-water mark. Queries are query_bench.py medians of each
peer (<name>.queries.json) with corral's ratio to each peer, and whether the answers agree: the same
series, points and items, and sums equal to the 6 significant digits the driver keeps), peer by peer
(an error answer is shown as unsupported).
SPDX-License-Identifier: Apache-2.0
"""
import json
import os
import sys

PEERS = ("corral", "victoria-metrics", "prometheus")


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


def ingest_table(c, v):
    print("| measure | corral | VictoriaMetrics | corral / VM |")
    print("|---|---|---|---|")
    row("ingest samples/s", c["samples_per_s"], v["samples_per_s"], "%d", True)
    row("ingest CPU s", c.get("ingest_cpu_s"), v.get("ingest_cpu_s"), "%.1f", False)
    row("bytes/sample on disk", disk(c), disk(v), "%.3f", False)
    row("RSS after ingest MiB", c["rss_after_ingest_kb"] / 1024, v["rss_after_ingest_kb"] / 1024, "%.1f", False)
    row("RSS high-water during ingest MiB", c["hwm_after_ingest_kb"] / 1024, v["hwm_after_ingest_kb"] / 1024,
        "%.1f", False)
    row("RSS high-water, queries too, MiB", c["hwm_final_kb"] / 1024, v["hwm_final_kb"] / 1024, "%.1f", False)
    print()


def same(a, b):
    """Whether two query_bench answer shapes agree."""
    if "error" in a or "error" in b:
        return False
    for k in ("series", "points", "items"):
        if a.get(k) != b.get(k):
            return False
    sa, sb = a.get("sum"), b.get("sum")
    return sa == sb or (sa is not None and sb is not None and abs(sa - sb) <= 1e-5 * max(abs(sa), abs(sb)))


def ms(q):
    if q is None:
        return "-"
    if "error" in q["result"]:
        return "unsupported"
    return "%.1f" % q["median_ms"]


def ratio(c, p):
    if c is None or p is None or "error" in c["result"] or "error" in p["result"] or not p["median_ms"]:
        return ""
    return "%.2fx" % (c["median_ms"] / p["median_ms"])


def query_table(qs):
    names = []
    for p in PEERS:
        for q in qs.get(p, []):
            if q["query"] not in names:
                names.append(q["query"])
    by = {p: {q["query"]: q for q in qs.get(p, [])} for p in PEERS}
    print("| query (median ms) | corral | VictoriaMetrics | Prometheus | corral / VM | corral / Prometheus | answers |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        c, v, p = (by[x].get(n) for x in PEERS)
        agree = ", ".join("%s %s" % ("=" if c and same(c["result"], x["result"]) else "differs from", label)
                          for x, label in ((v, "VM"), (p, "Prometheus")) if x is not None)
        print("| %s | %s | %s | %s | %s | %s | %s |" % (n, ms(c), ms(v), ms(p), ratio(c, v), ratio(c, p), agree))
    print()
    for n in names:
        for x in PEERS:
            if n in by[x]:
                print("%-16s %-28s %s" % (x, n, json.dumps(by[x][n]["result"])))


def main():
    d = sys.argv[1]
    qs = {}
    for p in PEERS:
        r = load(d, p + ".queries")
        if r:
            qs[p] = r["results"]
            ds = r["dataset"]
    if "corral" not in qs:
        print("need corral.queries.json in", d)
        return 1
    vers = open(os.path.join(d, "versions.txt")).read() if os.path.exists(os.path.join(d, "versions.txt")) else ""
    print("dataset: %d series x %d samples = %d samples" % (ds["series"], ds["samples_per_series"],
                                                          ds["total_samples"]))
    print(vers)
    c, v = load(d, "corral"), load(d, "victoria-metrics")
    if c and v and "queries only" not in vers:
        ingest_table(c, v)
    query_table(qs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
