#!/bin/bash
# demo.sh -- run the whole corral stack on this host: aggregator, agent on the real cgroups, and three
# demo workloads in cgroups of their own (below this shell's cgroup, removed on exit).
#
# Usage: scripts/demo.sh [BUILD_DIR]   (make demo calls it after building)
# Stays up until Ctrl-C; then stops every process it started, by PID, and checks that no cgroup is left.
# Ports: CORRAL_PORT (aggregator, default 9300) and CORRAL_AGENT_PORT (agent, default 9301).
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/$BUILD
STATE=$ROOT/.demo
PORT=${CORRAL_PORT:-9300}
AGENT_PORT=${CORRAL_AGENT_PORT:-9301}
DNS_PORT=${CORRAL_DNS_PORT:-1053}
INTERVAL=${CORRAL_INTERVAL:-5s}
URL=http://127.0.0.1:$PORT
PIDS=()
LOADS=()

say() { printf '\033[1m%s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: the demo creates cgroups for its workloads"
for b in corral-aggregator corral-agent corralctl tests/corral-load; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make demo"
done
for p in "$PORT" "$AGENT_PORT"; do
	! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "port $p is in use (set CORRAL_PORT / CORRAL_AGENT_PORT)"
done

cleanup() {
	trap - INT TERM EXIT
	echo
	say "stopping"
	for pid in "${LOADS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${LOADS[@]}"; do wait "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	local left
	left=$(find /sys/fs/cgroup -maxdepth 6 -type d -name "corral-demo-$$-*" 2>/dev/null || true)
	if [ -n "$left" ]; then
		echo "removing leftover cgroups: $left"
		echo "$left" | sort -r | xargs -r rmdir 2>/dev/null || true
	fi
	say "stopped; no demo process or cgroup left"
}
trap cleanup INT TERM EXIT

mkdir -p "$STATE/logs"
[ -s "$STATE/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/token"
chmod 600 "$STATE/token"

# One headless service per workload (kubectl JSON, as --services reads it): the cluster DNS answers
# <app>.demo.svc.cluster.local with the IPs of the ready pods labelled app=<app>.
svc() { printf '{"apiVersion":"v1","kind":"Service","metadata":{"name":"%s","namespace":"demo"},"spec":{"clusterIP":"None","selector":{"app":"%s"},"ports":[{"name":"http","protocol":"TCP","port":8080}]}}' "$1" "$1"; }
printf '{"apiVersion":"v1","kind":"List","items":[%s,%s,%s]}\n' "$(svc web)" "$(svc batch)" "$(svc cache)" >"$STATE/services.json"

say "starting corral-aggregator on $URL (data in $STATE/data, DNS on 127.0.0.1:$DNS_PORT)"
"$BIN/corral-aggregator" --listen "127.0.0.1:$PORT" --data-dir "$STATE/data" --token-file "$STATE/token" \
	--services "$STATE/services.json" --dns-listen "127.0.0.1:$DNS_PORT" >"$STATE/logs/aggregator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "$URL/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "$URL/healthz" >/dev/null || die "aggregator did not start: see $STATE/logs/aggregator.log"

# Three workloads, each in its own cgroup: a web server, a batch job, a cache. Each also gets a pod
# manifest in $STATE/pods (the agent's --pods-dir, format in docs/agent.md) naming its cgroup, so its
# series carry pod/namespace/container/image labels and the aggregator's /api/v1/inventory lists it.
write_pod() { # name cpu-request memory-request ip
	local id
	id=$(awk '$1 == "cgroup" { print $2; exit }' "$STATE/logs/$1.log")
	cat >"$STATE/pods/$1.json.tmp" <<POD
{"name": "$1", "namespace": "demo", "uid": "$(pod_uid "$1")", "status": "Running",
 "labels": {"app": "$1"}, "ips": ["$4"],
 "containers": [{"name": "$1", "image": "corral-load", "cgroup": "$id",
                 "requests": {"cpu": "$2", "memory": "$3"}, "limits": {"memory": "$3"}}]}
POD
	mv "$STATE/pods/$1.json.tmp" "$STATE/pods/$1.json"
}
rm -rf "$STATE/pods" "$STATE/var"
mkdir -p "$STATE/pods" "$STATE/var/log/containers"
pod_uid() { printf 'de300000-0000-4000-8000-%012d' "$(printf '%s' "$1" | cksum | cut -c1-6)"; }
# Each workload also writes its log lines the way kubelet stores a container's log:
# var/log/pods/<ns>_<pod>_<uid>/<container>/0.log and a var/log/containers/ symlink; the agent tails them.
cri_log() { # name -> path of the container log file
	local dir="$STATE/var/log/pods/demo_$1_$(pod_uid "$1")/$1" cid
	cid=$(printf '%s' "$1" | sha256sum | cut -c1-64)
	mkdir -p "$dir"
	ln -sf "../pods/demo_$1_$(pod_uid "$1")/$1/0.log" "$STATE/var/log/containers/$1_demo_$1-$cid.log"
	echo "$dir/0.log"
}
start_load() { # name cpu-share memory-bytes
	local log="$STATE/logs/$1.log"
	rm -f "$log" # the wait below must not see the previous run's "ready"
	"$BIN/tests/corral-load" --cgroup "corral-demo-$$-$1" --cpu "$2" --mem "$3" --log-every 1000 \
		--cri-log "$(cri_log "$1")" >"$log" 2>&1 &
	LOADS+=($!)
	for _ in $(seq 50); do grep -q '^ready' "$log" && break; sleep 0.1; done
	grep -q '^ready' "$log" || die "workload $1 did not start: $(cat "$log")"
	awk '$1 == "cgroup" && !seen[$2]++ { print "    cgroup " $2 }' "$log"
}
say "starting demo workloads"
echo "  web   (20% of a core, 32 MB)";  start_load web 0.2 32000000;   write_pod web 200m 32M 127.0.0.11
echo "  batch (60% of a core, 8 MB)";   start_load batch 0.6 8000000;  write_pod batch 600m 8M 127.0.0.12
echo "  cache (5% of a core, 128 MB)";  start_load cache 0.05 128000000; write_pod cache 50m 128M 127.0.0.13

say "starting corral-agent (node $(hostname), every $INTERVAL, /metrics on 127.0.0.1:$AGENT_PORT)"
"$BIN/corral-agent" --aggregator "$URL" --token-file "$STATE/token" --interval "$INTERVAL" \
	--listen "127.0.0.1:$AGENT_PORT" --pods-dir "$STATE/pods" --label-allowlist app --state-dir "$STATE/agent" --log-root "$STATE" \
	>"$STATE/logs/agent.log" 2>&1 &
PIDS+=($!)

WEB_ID=$(awk '$1 == "cgroup" { print $2; exit }' "$STATE/logs/web.log")
say "waiting for the workloads' samples to be queryable"
Q="container_cpu_usage_seconds_total{id=\"$WEB_ID\"}"
for i in $(seq 60); do
	now=$(date +%s)
	n=$(curl -fsG "$URL/api/v1/query_range" --data-urlencode "query=$Q" --data-urlencode "start=$((now - 60))" \
		--data-urlencode "end=$now" --data-urlencode "step=1" | grep -o '\],\[' | wc -l || true)
	[ "${n:-0}" -ge 1 ] && break
	[ "$i" -eq 60 ] && die "no samples after 60 s: see $STATE/logs/agent.log"
	sleep 1
done
echo "  samples for $WEB_ID arrived after ${i} s"

cat <<INFO

$(say "corral is up")
  aggregator   $URL          (Prometheus API: /api/v1/query, /api/v1/query_range, /api/v1/series)
  agent        http://127.0.0.1:$AGENT_PORT/metrics   (cAdvisor-style metrics, Prometheus text)
  health       $URL/healthz, $URL/metrics
  inventory    $URL/api/v1/inventory   (pods from $STATE/pods)   events: $URL/api/v1/events
  web UI       $URL/ui/   (cluster, node, pod, logs, services, capacity, explore)
  DNS          127.0.0.1:$DNS_PORT   (headless services web, batch, cache in namespace demo)
  logs         $URL/loki/api/v1/   (Loki API; the workloads' container logs under $STATE/var/log)

Try:
  curl -s '$URL/api/v1/query_range?query=container_cpu_usage_seconds_total&start='\$((\$(date +%s)-300))'&end='\$(date +%s)'&step=10'
  $BIN/corralctl query-range 'container_cpu_usage_seconds_total{id=~"/.*corral-demo-.*"}' --since 5m
  curl -s http://127.0.0.1:$AGENT_PORT/metrics | grep 'namespace="demo"'
  dig @127.0.0.1 -p $DNS_PORT +short web.demo.svc.cluster.local
  curl -sG $URL/loki/api/v1/query_range --data-urlencode 'query={namespace="demo", pod="web"}' --data-urlencode limit=5
  curl -s $URL/api/v1/inventory

Ctrl-C stops everything and removes the demo cgroups.
INFO
wait "${PIDS[@]}"
