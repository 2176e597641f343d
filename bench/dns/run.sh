#!/usr/bin/env bash
# run.sh -- corral's DNS (the aggregator with --services) against knot (and nsd) on the shared zone.
#
# Uses ../shared/bench/dns/run_peers.sh unchanged: the same generated zone (gen_zone.py, 2,000 services,
# 25 % headless) is served by knot/nsd from its zone file and by corral-aggregator from services.json
# (loaded through the service registry), each pinned to the same one core (SERVER_CPU) in the same
# invocation, with dnsperf and the same query mix on another core. Then prints, per client count,
# qps, lost queries, average latency and server CPU per query of each peer (medians over REPS runs,
# default 3) and corral's ratios against them.
# Env: BUILD (build) and anything run_peers.sh takes (PEERS, DURATION, CLIENTS, ...).
# Data and results go to $PEERBENCH_DIR (default ~/.cache/peerbench), never into the repository.
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
BUILD=${BUILD:-build}
BIN=$(cd "$ROOT/$BUILD" && pwd)/corral-aggregator
[ -x "$BIN" ] || { echo "run.sh: build $BIN first (make build)" >&2; exit 1; }
export PEERS=${PEERS:-custom knot nsd}
export TARGET_NAME=corral
# one UDP thread: the server gets one core, like knot's udp-workers=1 and nsd's server-count=1
export TARGET_CMD="env CORRAL_TOKEN=bench $BIN --data-dir {workdir}/agg --listen 127.0.0.1:0 --dns-threads 1 --dns-listen 127.0.0.1:{port} --services {zonedir}/services.json --log-level warn"
REPS=${REPS:-3}
RES=${RESULTS_DIR:-${PEERBENCH_DIR:-$HOME/.cache/peerbench}/dns/results/corral-$(date +%Y%m%d-%H%M%S)}
for rep in $(seq 1 "$REPS"); do
  RESULTS_DIR=$RES/rep$rep "$SHARED/dns/run_peers.sh"
done
python3 - "$RES" <<'PY'
import glob, json, os, statistics, sys
runs = {}  # (clients, peer) -> [result per rep]
for f in glob.glob(os.path.join(sys.argv[1], "rep*", "*.c*.json")):
    r = json.load(open(f))
    runs.setdefault((r["clients"], r["peer"]), []).append(r)
def med(c, p, k):
    v = [r[k] for r in runs.get((c, p), []) if r.get(k) is not None]
    return statistics.median(v) if v else None
reps = max(len(v) for v in runs.values())
print(f"\nmedians of {reps} run(s); ratios are corral / peer (qps and us/query: >1 means corral does more)")
print("clients peer        qps     lost  avg_ms  cpu_us/q   qps ratio  latency ratio  per-core capacity ratio")
for c in sorted({k[0] for k in runs}):
    mq, ml, mc = med(c, "corral", "qps"), med(c, "corral", "avg_latency_ms"), med(c, "corral", "server_cpu_us_per_query")
    for p in sorted({k[1] for k in runs if k[0] == c}):
        q, lost, lat, cpu = med(c, p, "qps"), max(r["lost"] for r in runs[(c, p)]), med(c, p, "avg_latency_ms"), med(c, p, "server_cpu_us_per_query")
        f = lambda a, b: f"{a / b:.2f}" if a and b else "-"
        print(f"{c:7d} {p:10s} {q:9.0f} {lost:6d} {lat:7.3f} {cpu:8.2f}   {f(mq, q):>9s}  {f(ml, lat):>13s}  {f(cpu, mc):>23s}")
PY
