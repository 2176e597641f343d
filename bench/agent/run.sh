#!/usr/bin/env bash
# run.sh -- corral-agent beside node_exporter and Netdata's cgroups plugin, on 100 and 200 test cgroups at 1 s.
#
# For each repetition and each cgroup count it calls ../shared/bench/agent/run_peers.sh once with
# PEERS="netdata node_exporter custom": make_cgroups.sh creates the C test cgroups (cgroup v1, below this
# shell's own cgroups), Netdata (cgroups plugin only; plus a baseline with no test cgroups, for its
# marginal cost per cgroup), node_exporter (scraped every second like Prometheus) and corral-agent
# (collecting every second and pushing to a corral-aggregator this script starts) run one after another
# on the same cgroups, each started and stopped by PID. summary.py then prints, per count, the medians
# over the repetitions of CPU % of a core, RSS, CPU-us per cgroup update, and the ratios against the
# peers measured in the same invocation.
#
# Usage (root, Debian packages prometheus-node-exporter and netdata installed):
#   BUILD=build bench/agent/run.sh
# Env: BUILD (build) COUNTS ("100 200") REPS (3) DURATION (30 s per peer) PEERBENCH_DIR (~/.cache/peerbench)
# Results: $PEERBENCH_DIR/agent-corral/r<rep>/c<C>/*.json and summary.md (never in this repository).
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
BUILD=${BUILD:-build}
BIN=$ROOT/$BUILD
COUNTS=${COUNTS:-100 200}
REPS=${REPS:-3}
export DURATION=${DURATION:-30} INTERVAL=1 NETDATA_EVERY=1
WORK=${PEERBENCH_DIR:-$HOME/.cache/peerbench}/agent-corral
AGG_PORT=${AGG_PORT:-17190}
AGG_PID=""

[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root (test cgroups)" >&2; exit 1; }
for b in corral-agent corral-aggregator; do
	[ -x "$BIN/$b" ] || { echo "run.sh: $BIN/$b missing: build first" >&2; exit 1; }
done
command -v prometheus-node-exporter >/dev/null && command -v netdata >/dev/null ||
	{ echo "run.sh: apt-get install prometheus-node-exporter netdata" >&2; exit 1; }

stop_agg() {
	[ -n "$AGG_PID" ] && kill -TERM "$AGG_PID" 2>/dev/null && wait "$AGG_PID" 2>/dev/null || true
	AGG_PID=""
}
trap stop_agg EXIT

rm -rf "$WORK"
mkdir -p "$WORK/agg"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/token"
"$BIN/corral-aggregator" --listen "127.0.0.1:$AGG_PORT" --data-dir "$WORK/agg/data" --token-file "$WORK/token" \
	> "$WORK/agg/aggregator.log" 2>&1 &
AGG_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AGG_PORT/healthz" >/dev/null && break; sleep 0.1; done

for rep in $(seq "$REPS"); do
	for c in $COUNTS; do
		echo "== repetition $rep, $c cgroups" >&2
		C=$c RESULTS_DIR="$WORK/r$rep/c$c" PEERS="netdata node_exporter custom" TARGET_NAME=corral-agent \
		TARGET_CMD="$BIN/corral-agent --cgroup-root {cgroot} --listen 127.0.0.1:{port} --interval 1s --aggregator http://127.0.0.1:$AGG_PORT --token-file $WORK/token --state-dir {workdir}/state --log-level warn" \
		TARGET_READY='http://127.0.0.1:{port}/healthz' \
			"$SHARED/agent/run_peers.sh" > "$WORK/r$rep-c$c.log" 2>&1 ||
			{ echo "run_peers.sh failed: see $WORK/r$rep-c$c.log" >&2; exit 1; }
	done
done
stop_agg
python3 "$HERE/summary.py" "$WORK" $COUNTS | tee "$WORK/summary.md"
