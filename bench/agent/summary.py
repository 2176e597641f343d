#!/usr/bin/env python3
"""summary.py -- medians over repetitions of corral-agent vs its peers, as ratios (bench/agent/run.sh).

usage: summary.py WORK_DIR COUNT...   (reads WORK_DIR/r*/c<COUNT>/{corral-agent,netdata-c0,netdata-c<COUNT>,node_exporter}.json)

Per repetition and count (all from one run_peers.sh invocation, so the peers ran on the same cgroups
minutes apart on the same machine):
  CPU %          CPU time of the process tree / window, in % of one core (measure.py)
  RSS            average resident set size over the window, MiB
  us/update      CPU-us per cgroup update = CPU s * 1e6 / (C * window s) at a 1 s interval; for
                 Netdata also the marginal figure, (CPU% with C cgroups - CPU% with none) per cgroup
  ratios         agent / peer of the figures above (below 1: the agent is cheaper)
The medians of each column over the repetitions are printed; SPDX-License-Identifier: Apache-2.0
"""
import glob
import json
import os
import statistics
import sys


def load(p):
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None


def one(rdir, c):
    a = load(os.path.join(rdir, "corral-agent.json"))
    nd = load(os.path.join(rdir, "netdata-c%d.json" % c))
    n0 = load(os.path.join(rdir, "netdata-c0.json"))
    ne = load(os.path.join(rdir, "node_exporter.json"))
    if not a or not nd:
        return None
    us = lambda r: r["cpu_s"] * 1e6 / (c * r["window_s"])
    row = dict(agent_cpu=a["cpu_pct"], agent_rss=a["rss_kb_avg"] / 1024.0, agent_us=us(a),
               nd_cpu=nd["cpu_pct"], nd_rss=nd["rss_kb_avg"] / 1024.0, nd_us=us(nd))
    row["ratio_cpu_nd"] = a["cpu_pct"] / nd["cpu_pct"] if nd["cpu_pct"] else float("nan")
    row["ratio_us_nd"] = row["agent_us"] / row["nd_us"] if row["nd_us"] else float("nan")
    if n0:
        marg = (nd["cpu_pct"] - n0["cpu_pct"]) / 100.0 * 1e6 / c
        row["nd_marg_us"] = marg
        row["ratio_us_nd_marg"] = row["agent_us"] / marg if marg > 0 else float("nan")
    if ne:
        row["ne_cpu"] = ne["cpu_pct"]
        row["ne_rss"] = ne["rss_kb_avg"] / 1024.0
        row["ratio_cpu_ne"] = a["cpu_pct"] / ne["cpu_pct"] if ne["cpu_pct"] else float("nan")
    return row


def med(rows, k):
    v = [r[k] for r in rows if k in r]
    return statistics.median(v) if v else float("nan")


def main():
    work, counts = sys.argv[1], [int(x) for x in sys.argv[2:]]
    cols = [("agent_cpu", "agent CPU %", "%.3f"), ("agent_rss", "agent RSS MiB", "%.1f"),
            ("agent_us", "agent us/cgroup update", "%.2f"), ("nd_cpu", "Netdata CPU %", "%.3f"),
            ("nd_rss", "Netdata RSS MiB", "%.1f"), ("nd_us", "Netdata us/cgroup update", "%.2f"),
            ("nd_marg_us", "Netdata marginal us/cgroup update", "%.2f"), ("ne_cpu", "node_exporter CPU %", "%.3f"),
            ("ne_rss", "node_exporter RSS MiB", "%.1f"), ("ratio_cpu_nd", "agent/Netdata CPU", "%.3f"),
            ("ratio_us_nd", "agent/Netdata us per update", "%.3f"),
            ("ratio_us_nd_marg", "agent/Netdata marginal us per update", "%.3f"),
            ("ratio_cpu_ne", "agent/node_exporter CPU", "%.3f")]
    print("| cgroups | reps | " + " | ".join(c[1] for c in cols) + " |")
    print("|---:|---:|" + "---:|" * len(cols))
    for c in counts:
        rows = [r for r in (one(d, c) for d in sorted(glob.glob(os.path.join(work, "r*", "c%d" % c)))) if r]
        print("| %d | %d | " % (c, len(rows)) + " | ".join(f % med(rows, k) for k, _, f in cols) + " |")
    print("\nEach figure is the median over the repetitions; every ratio is taken within one run_peers.sh "
          "invocation before the median. Targets at 200 cgroups: agent CPU <= 0.5 %, RSS <= 16 MiB, "
          "agent/Netdata us per update <= 0.333.")


if __name__ == "__main__":
    main()
