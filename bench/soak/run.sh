#!/usr/bin/env bash
# run.sh -- the one-hour soak of issue 11 (point 4): 10 agents, 200 real cgroups each, 2,000 log lines/s.
#
# One corral-aggregator and AGENTS corral-agents on this host. Each agent reads its own subtree of
# CGROUPS real test cgroups (made below this shell's own cgroups; the agent's --cgroup-root is a
# directory of symlinks to its subtree, as a cgroup namespace shows it) and tails its own kubelet-style
# log tree; a writer appends LINES_PER_S lines a second in total across the trees and rotates each file
# the kubelet way (rename to 0.log.<time>, new 0.log, at most 4 old files) at 10 MiB. Every SAMPLE
# seconds it records the aggregator's RSS, its data directory's size, the tsdb's series and samples,
# the agents' RSS and the lines written; at the end it prints the table, the aggregator's RSS and disk
# per retained sample at the first and last samples (flat = grows only with retained data), and checks
# that the aggregator holds every line written (Loki API, index/stats).
#
# Usage (root):  BUILD=build bench/soak/run.sh
# Env: BUILD (build) DURATION (3600 s) AGENTS (10) CGROUPS (200) LINES_PER_S (2000) INTERVAL (10s, the
#      agent's default) SAMPLE (60 s) PEERBENCH_DIR (~/.cache/peerbench; results in soak/, never here)
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/${BUILD:-build}
DURATION=${DURATION:-3600}
AGENTS=${AGENTS:-10}
CGROUPS=${CGROUPS:-200}
LINES_PER_S=${LINES_PER_S:-2000}
INTERVAL=${INTERVAL:-10s}
SAMPLE=${SAMPLE:-60}
WORK=${PEERBENCH_DIR:-$HOME/.cache/peerbench}/soak
PORT=${PORT:-17290}
URL=http://127.0.0.1:$PORT
PIDS=()
PARENTS=()

[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root (test cgroups)" >&2; exit 1; }
for b in corral-agent corral-aggregator; do
	[ -x "$BIN/$b" ] || { echo "run.sh: $BIN/$b missing: build first" >&2; exit 1; }
done

cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	for d in "${PARENTS[@]}"; do
		find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
		rmdir "$d" 2>/dev/null || true
	done
}
trap cleanup EXIT

rm -rf "$WORK"
mkdir -p "$WORK/logs"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"

# ---- cgroups: one subtree per agent ----------------------------------------------------------------------
v2=0
[ -f /sys/fs/cgroup/cgroup.controllers ] && v2=1
make_tree() { # k -> prints the agent's --cgroup-root
	local k=$1 root="$WORK/cgroot-$k" line ctrls own dir c i
	[ $v2 -eq 1 ] || mkdir -p "$root"
	while IFS= read -r line; do
		ctrls=${line#*:}; ctrls=${ctrls%%:*}; own=${line#*:*:}
		[ "$own" = / ] && own=""
		if [ $v2 -eq 1 ]; then
			[ -z "$ctrls" ] || continue
			dir=/sys/fs/cgroup$own/corral-soak-$$-$k
			root=$dir
		else
			case ",$ctrls," in *,cpu,*|*,cpuacct,*|*,memory,*) ;; *) continue ;; esac
			dir=/sys/fs/cgroup/$ctrls$own/corral-soak-$$-$k
			for c in ${ctrls//,/ }; do ln -s "$dir" "$root/$c"; done
		fi
		mkdir "$dir"
		PARENTS+=("$dir")
		for i in $(seq "$CGROUPS"); do mkdir "$dir/c$i"; done
	done </proc/self/cgroup
	echo "$root"
}

# ---- the daemons -----------------------------------------------------------------------------------------
"$BIN/corral-aggregator" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --token-file "$WORK/token" \
	--dns-listen off >"$WORK/logs/aggregator.log" 2>&1 &
AGG=$!
PIDS+=("$AGG")
for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done

FILES=()
for k in $(seq "$AGENTS"); do
	make_tree "$k" >"$WORK/root-$k"
	d="$WORK/node-$k/var/log/pods/soak_pod-${k}_uid-$k/main"
	mkdir -p "$d" "$WORK/node-$k/var/log/containers"
	: >"$d/0.log"
	ln -s "$d/0.log" "$WORK/node-$k/var/log/containers/pod-${k}_soak_main-$(printf '%064d' "$k").log"
	FILES+=("$d/0.log")
	"$BIN/corral-agent" --node "soak-$k" --aggregator "$URL" --token-file "$WORK/token" --interval "$INTERVAL" \
		--listen "127.0.0.1:$((PORT + k))" --cgroup-root "$(cat "$WORK/root-$k")" --state-dir "$WORK/state-$k" \
		--log-root "$WORK/node-$k" >"$WORK/logs/agent-$k.log" 2>&1 &
	PIDS+=("$!")
done
echo "soak: aggregator $URL, $AGENTS agents x $CGROUPS cgroups every $INTERVAL, $LINES_PER_S lines/s, ${DURATION}s"

# ---- the log writer --------------------------------------------------------------------------------------
python3 - "$DURATION" "$LINES_PER_S" "$WORK/lines" "${FILES[@]}" <<'PY' &
import os, sys, time
dur, rate, count_file, files = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
per_tick = max(1, rate // 10 // len(files))  # 10 ticks a second
n, start = 0, time.time()
while time.time() - start < dur:
    tick = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(tick)) + ".%09dZ" % int((tick % 1) * 1e9)
    for k, f in enumerate(files):
        if os.path.exists(f) and os.path.getsize(f) > 10 << 20:  # kubelet rotation
            os.rename(f, f + time.strftime(".%Y%m%d-%H%M%S", time.gmtime(tick)))
            old = sorted(x for x in os.listdir(os.path.dirname(f)) if x.startswith("0.log."))
            for x in old[:-4]:
                os.remove(os.path.join(os.path.dirname(f), x))
        with open(f, "a") as fp:
            fp.write("".join("%s stdout F soak f%d n%d %s\n" % (ts, k, n + i, "x" * 80) for i in range(per_tick)))
    n += per_tick
    with open(count_file + ".tmp", "w") as fp:  # renamed: the sampler never reads a half-written file
        fp.write(str(n * len(files)))
    os.rename(count_file + ".tmp", count_file)
    time.sleep(max(0, 0.1 - (time.time() - tick)))
PY
WRITER=$!
PIDS+=("$WRITER")

# ---- sampling ---------------------------------------------------------------------------------------------
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
metric() { curl -sf "$URL/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
printf '%8s %10s %12s %12s %10s %12s %12s %12s\n' elapsed agg_rss_kib tsdb_bytes logs_bytes series samples \
	agents_rss_kib lines \
	| tee "$WORK/samples.txt"
t0=$(date +%s)
while kill -0 "$WRITER" 2>/dev/null; do
	sleep "$SAMPLE"
	agents=0
	for p in "${PIDS[@]:1:$AGENTS}"; do agents=$((agents + $(rss "$p"))); done
	printf '%8d %10d %12d %12d %10.0f %12.0f %12d %12d\n' $(($(date +%s) - t0)) "$(rss "$AGG")" \
		"$(du -sb "$WORK/data/tsdb" | cut -f1)" "$(du -sb "$WORK/data/logs" | cut -f1)" \
		"$(metric corral_tsdb_series)" "$(metric corral_tsdb_samples)" \
		"$agents" "$(cat "$WORK/lines" 2>/dev/null || echo 0)" | tee -a "$WORK/samples.txt"
done
sleep 30 # the agents ship the last lines
written=$(cat "$WORK/lines")
now=$(date +%s)
stored=$(curl -sfG "$URL/loki/api/v1/index/stats" --data-urlencode 'query={namespace="soak"}' \
	--data-urlencode "start=$(((t0 - 600) * 1000000000))" --data-urlencode "end=$(((now + 60) * 1000000000))" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["entries"])')
echo "soak: $written lines written, $stored stored"
awk 'NR == 2 { r0 = $2; t0 = $3; l0 = $4; s0 = $6; n0 = $8 } NR > 1 { r = $2; t = $3; l = $4; s = $6; n = $8 }
     END { if (s0 > 0 && s > s0 && n > n0) {
           printf "soak: aggregator RSS %.1f -> %.1f MiB, tsdb %.1f -> %.1f MiB, logs %.1f -> %.1f MiB\n", r0 / 1024,
                  r / 1024, t0 / 1048576, t / 1048576, l0 / 1048576, l / 1048576
           printf "soak: samples %.0f -> %.0f, lines %.0f -> %.0f; per added sample: RSS %.1f B, tsdb %.2f B;" \
                  " per added line: logs %.1f B\n", s0, s, n0, n, (r - r0) * 1024 / (s - s0), (t - t0) / (s - s0),
                  (l - l0) / (n - n0) } }' "$WORK/samples.txt"
