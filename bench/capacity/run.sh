#!/usr/bin/env bash
# run.sh -- latency of the capacity reports on the shared 10,000-series, 24 h data set, against
# VictoriaMetrics answering the PromQL that fetches the same inputs, in one invocation.
#
# Data: ../shared/bench/tsdb/gen.py's data set (generated there when missing; cAdvisor-like container
# metrics of 19 nodes, 770 containers, 10 s for 24 h, 2024-01-01) plus machine_cpu_cores and
# machine_memory_bytes of each node (16 cores, 64 GiB; written here, the generator has none). Both
# servers import the same Prometheus text over HTTP and flush; corral runs with --tsdb-downsample and
# the bench waits for the day's 5 min tier, which the 24 h reports read.
#
# Measured: REPS requests of each report (nodes, workloads, fit, summary; window 24h ending at
# 2024-01-02T00:00Z): the median wall time from curl, and the server's CPU time per request (utime +
# stime from /proc, which a busy shared machine does not inflate the way it does wall time). The peer does not compute
# capacity reports; its figure is the time VictoriaMetrics takes to answer the PromQL a capacity tool
# (kube-capacity, a VPA recommender on Prometheus) would send for the same inputs, summed per report:
#   cpu     sum by (node) (rate(container_cpu_usage_seconds_total{container!=""}[5m]))   range 24h/5m
#   mem     sum by (node) (max_over_time(container_memory_working_set_bytes{container!=""}[5m]))  range
#   ctrcpu  rate(container_cpu_usage_seconds_total{container!=""}[5m])                  range 24h/5m
#   ctrmem  max_over_time(container_memory_working_set_bytes{container!=""}[5m])          range 24h/5m
#   spec    last_over_time(container_spec_memory_limit_bytes[24h]), machine_* likewise     instant
#   nodes = cpu + mem + spec; workloads = ctrcpu + ctrmem + spec; fit = nodes; summary = nodes + workloads.
# The ratio printed is corral / peer (below 1: corral is faster). Target: every report under 200 ms.
#
# env: REPS (11) PEERS ("corral vm") CORRAL_BIN (build/corral-aggregator) SERIES (10000) SAMPLES (8640)
#      SEED (42) CORRAL_PORT (18510) VM_PORT (18438) KEEP (1 = keep both data dirs and reuse them)
# Data and results go to $PEERBENCH_DIR/capacity (default ~/.cache/peerbench), never into the repo.
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench/tsdb}
SERIES=${SERIES:-10000}; SAMPLES=${SAMPLES:-8640}; SEED=${SEED:-42}; REPS=${REPS:-11}
PEERS=${PEERS:-corral vm}; KEEP=${KEEP:-0}
CORRAL_PORT=${CORRAL_PORT:-18510}; VM_PORT=${VM_PORT:-18438}
CORRAL_BIN=${CORRAL_BIN:-$ROOT/build/corral-aggregator}
BASE=${PEERBENCH_DIR:-$HOME/.cache/peerbench}
TAG=${SERIES}x${SAMPLES}-seed$SEED
DS=$BASE/tsdb/dataset/$TAG
WORK=$BASE/capacity
RES=$WORK/results-$(date -u +%Y%m%dT%H%M%S)
mkdir -p "$BASE/tsdb/dataset" "$WORK" "$RES"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

[ -x "$CORRAL_BIN" ] || { echo "run.sh: no $CORRAL_BIN (build first, or set CORRAL_BIN)" >&2; exit 1; }
if [ ! -s "$DS.meta.json" ] || [ ! -s "$DS.prom" ]; then
  log "generating $TAG"
  "$SHARED/gen.py" --series "$SERIES" --samples "$SAMPLES" --seed "$SEED" --prom "$DS.prom" --meta "$DS.meta.json"
fi
read -r START_MS END_MS NODES < <(python3 -c "
import json; m = json.load(open('$DS.meta.json')); print(m['start_ms'], m['end_ms'], m['nodes'])")
T_END=$(( (END_MS / 86400000 + 1) * 86400 ))   # the midnight after the data: window = the whole day
MACHINE=$WORK/machine-$TAG.prom
python3 - "$START_MS" "$END_MS" "$NODES" > "$MACHINE" <<'PY'
import sys
start, end, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(1, n + 1):
    for t in (start, end):
        print('machine_cpu_cores{node="k8s-worker-%03d"} 16 %d' % (i, t))
        print('machine_memory_bytes{node="k8s-worker-%03d"} 68719476736 %d' % (i, t))
PY

wait_http() { for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done; return 1; }
import_file() { curl -fsS -X POST -T "$2" -H 'Content-Type: text/plain' -o /dev/null "$1"; }  # streamed
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ms() { awk '{printf "%.1f\n", $1 * 1000}'; }

# CPU seconds (user + system) the server process pid has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# GET url REPS times (fails on a non-200); prints "<median wall ms> <server CPU ms per request>". The
# CPU figure does not depend on how busy the (shared) machine is; the wall time does.
time_get() {
  local c0 c1 wall
  c0=$(cpu_s "$2")
  wall=$(for _ in $(seq 1 "$REPS"); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$1" | awk '$1 != 200 {exit 1} {print $2}' || return 1
  done | median | ms)
  c1=$(cpu_s "$2")
  echo "$wall $(echo "($c1 - $c0) * 1000 / $REPS" | bc -l | xargs printf '%.1f')"
}
add2() { awk -v a="$1" -v b="$2" -v c="${3:-0 0}" 'BEGIN {split(a, x, " "); split(b, y, " "); split(c, z, " ");
  printf "%.1f %.1f\n", x[1] + y[1] + z[1], x[2] + y[2] + z[2]}'; }

declare -A CORRAL VM
if [[ " $PEERS " == *" corral "* ]]; then
  D=$WORK/corral-data
  fresh=1; [ "$KEEP" = 1 ] && ls "$D"/tsdb/blocks/*-300000-* > /dev/null 2>&1 && fresh=0
  [ "$fresh" = 1 ] && rm -rf "$D"
  log "corral-aggregator ($CORRAL_BIN)"
  CORRAL_TOKEN=bench-token "$CORRAL_BIN" --data-dir "$D" --listen 127.0.0.1:$CORRAL_PORT --log-level warn \
    --allow-unauthenticated-import --tsdb-downsample --dns-listen off > "$RES/corral.log" 2>&1 &
  PIDS+=($!); CPID=$!
  wait_http "http://127.0.0.1:$CORRAL_PORT/healthz"
  if [ "$fresh" = 1 ]; then
    log "corral: importing $(du -h "$DS.prom" | cut -f1) and the machine series"
    t0=$(date +%s)
    import_file "http://127.0.0.1:$CORRAL_PORT/api/v1/import/prometheus" "$DS.prom"
    import_file "http://127.0.0.1:$CORRAL_PORT/api/v1/import/prometheus" "$MACHINE"
    curl -sf -X POST "http://127.0.0.1:$CORRAL_PORT/api/v1/admin/flush" > /dev/null
    log "corral: imported and flushed in $(( $(date +%s) - t0 )) s; waiting for the 5 min tier"
    for _ in $(seq 1 600); do ls "$D"/tsdb/blocks/*-300000-* > /dev/null 2>&1 && break; sleep 1; done
    ls "$D"/tsdb/blocks/*-300000-* > /dev/null 2>&1 || { echo "run.sh: no 5 min tier after 10 min" >&2; exit 1; }
    sleep 5
  fi
  for r in nodes workloads summary "fit?cpu=500m&memory=1Gi&replicas=10"; do
    q="http://127.0.0.1:$CORRAL_PORT/api/v1/capacity/$r"; q+=$([[ $r == *\?* ]] && echo '&' || echo '?')
    q+="window=24h&time=$T_END"
    curl -sf "$q" > "$RES/corral-${r%%\?*}.json"
    CORRAL[${r%%\?*}]=$(time_get "$q" "$CPID")
  done
  python3 - "$RES/corral-nodes.json" <<'PY' >&2
import json, sys
d = json.load(open(sys.argv[1]))['data']
n = d['nodes']
print('corral nodes report: %d nodes, %d pods, first node cpu used p95 %.3f of %.1f allocatable' %
      (len(n), sum(x['pods'] for x in n), n[0]['cpu']['used_p95'], n[0]['cpu']['allocatable']))
PY
  kill "$CPID"; wait "$CPID" 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf "$D"
fi

if [[ " $PEERS " == *" vm "* ]]; then
  command -v victoria-metrics > /dev/null || { echo "run.sh: apt-get install victoria-metrics" >&2; exit 1; }
  D=$WORK/vm-data
  fresh=1; [ "$KEEP" = 1 ] && [ -d "$D" ] && fresh=0
  [ "$fresh" = 1 ] && rm -rf "$D"
  log "VictoriaMetrics"
  victoria-metrics -storageDataPath="$D" -httpListenAddr=127.0.0.1:$VM_PORT -retentionPeriod=100y \
    -search.disableCache -loggerLevel=WARN > "$RES/vm.log" 2>&1 &
  PIDS+=($!); VPID=$!
  wait_http "http://127.0.0.1:$VM_PORT/health"
  if [ "$fresh" = 1 ]; then
    log "VictoriaMetrics: importing"
    t0=$(date +%s)
    import_file "http://127.0.0.1:$VM_PORT/api/v1/import/prometheus" "$DS.prom"
    import_file "http://127.0.0.1:$VM_PORT/api/v1/import/prometheus" "$MACHINE"
    curl -sf "http://127.0.0.1:$VM_PORT/internal/force_flush" > /dev/null
    log "VictoriaMetrics: imported and flushed in $(( $(date +%s) - t0 )) s"
    sleep 5
  fi
  enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
  RANGE="start=$(( T_END - 86400 ))&end=$T_END&step=300"
  vmq() { echo "http://127.0.0.1:$VM_PORT/api/v1/$1?query=$(enc "$2")&$3"; }
  declare -A P
  P[cpu]=$(time_get "$(vmq query_range 'sum by (node) (rate(container_cpu_usage_seconds_total{container!=""}[5m]))' "$RANGE")" "$VPID")
  P[mem]=$(time_get "$(vmq query_range 'sum by (node) (max_over_time(container_memory_working_set_bytes{container!=""}[5m]))' "$RANGE")" "$VPID")
  P[ctrcpu]=$(time_get "$(vmq query_range 'rate(container_cpu_usage_seconds_total{container!=""}[5m])' "$RANGE")" "$VPID")
  P[ctrmem]=$(time_get "$(vmq query_range 'max_over_time(container_memory_working_set_bytes{container!=""}[5m])' "$RANGE")" "$VPID")
  spec1=$(time_get "$(vmq query 'last_over_time(container_spec_memory_limit_bytes[24h])' "time=$T_END")" "$VPID")
  spec2=$(time_get "$(vmq query 'last_over_time(machine_cpu_cores[24h])' "time=$T_END")" "$VPID")
  spec3=$(time_get "$(vmq query 'last_over_time(machine_memory_bytes[24h])' "time=$T_END")" "$VPID")
  P[spec]=$(add2 "$spec1" "$spec2" "$spec3")
  VM[nodes]=$(add2 "${P[cpu]}" "${P[mem]}" "${P[spec]}")
  VM[workloads]=$(add2 "${P[ctrcpu]}" "${P[ctrmem]}" "${P[spec]}")
  VM[fit]=${VM[nodes]}
  VM[summary]=$(add2 "${VM[nodes]}" "${VM[workloads]}")
  for k in cpu mem ctrcpu ctrmem spec; do echo "VictoriaMetrics $k: ${P[$k]} (wall ms, CPU ms)" >&2; done
  kill "$VPID"; wait "$VPID" 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf "$D"
fi


{
  echo "dataset $TAG, window 24h, $REPS requests each; $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg); $(date -u +%FT%TZ)"
  echo "wall = median curl time, cpu = server CPU per request (user + system); ratio = corral / peer"
  printf '%-10s %10s %10s %10s %10s %10s %10s  %s\n' report corral_wall peer_wall wall_ratio corral_cpu peer_cpu \
    cpu_ratio "target <200 ms"
  for r in nodes workloads fit summary; do
    read -r cw cc <<< "${CORRAL[$r]:-- -}"; read -r vw vc <<< "${VM[$r]:-- -}"
    rw=$(awk -v a="$cw" -v b="$vw" 'BEGIN {print (b + 0 > 0 && a != "-") ? sprintf("%.3f", a / b) : "-"}')
    rc=$(awk -v a="$cc" -v b="$vc" 'BEGIN {print (b + 0 > 0 && a != "-") ? sprintf("%.3f", a / b) : "-"}')
    ok=$(awk -v c="$cw" 'BEGIN {print c == "-" ? "-" : (c < 200) ? "ok" : "MISSED"}')
    printf '%-10s %10s %10s %10s %10s %10s %10s  %s\n' "$r" "$cw" "$vw" "$rw" "$cc" "$vc" "$rc" "$ok"
  done
} | tee "$RES/table.txt"
