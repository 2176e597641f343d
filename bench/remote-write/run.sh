#!/usr/bin/env bash
# run.sh -- remote write forwarding: corral-aggregator --remote-write beside vmagent, into the same VictoriaMetrics.
#
# Each repetition loads the same Prometheus text (the first LINES lines of the shared tsdb data set that
# ../shared/bench/tsdb/gen.py writes, all series step by step) into each forwarder's
# /api/v1/import/prometheus, and times until a fresh VictoriaMetrics behind it has counted every row
# arriving over remote write (vm_rows_inserted_total{type="promremotewrite"}). The forwarders run with
# their defaults: corral stores the samples durably in its tsdb (fsync) and queues them on disk before
# forwarding; vmagent forwards from memory (its disk queue is only used when the receiver lags). Also
# measured: CPU seconds and peak RSS of the forwarder. Prints medians and the ratios corral / vmagent.
#
# MODE=receive measures the receivers instead: vmagent (the load generator) forwards the same text to
# corral-aggregator's POST /api/v1/write and to VictoriaMetrics', and the time until each has counted
# every sample (corral_remote_write_received_samples_total, vm_rows_inserted_total{type="promremotewrite"})
# is compared, with the receiver's CPU and peak RSS. Prometheus' receiver is not in the set: vmagent's
# import interleaves blocks, and Prometheus refuses the out-of-order samples that makes (400), so it
# never receives them all.
#
# OUTAGE=1 instead runs the integration test tests/integration/test_remote_write_vm.c with the issue's
# one-minute VictoriaMetrics outage (ctest runs it with 12 s).
#
# Usage (root or not; Debian package victoria-metrics, which has vmagent; python3):
#   BUILD=build bench/remote-write/run.sh
# Env: BUILD (build) LINES (1000000) REPS (3) PEERBENCH_DIR (~/.cache/peerbench) MODE (forward|receive) OUTAGE (0)
# Data and results go to $PEERBENCH_DIR/remote-write (never into this repository).
# SPDX-License-Identifier: Apache-2.0
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
BUILD=${BUILD:-build}
BIN=$ROOT/$BUILD
LINES=${LINES:-1000000}
REPS=${REPS:-3}
PB=${PEERBENCH_DIR:-$HOME/.cache/peerbench}
WORK=$PB/remote-write
VM_PORT=${VM_PORT:-17310}
FWD_PORT=${FWD_PORT:-17311}
PIDS=()

if [ "${OUTAGE:-0}" = 1 ]; then
	CORRAL_BIN=$BIN CORRAL_SRC=$ROOT CORRAL_RW_OUTAGE_MS=60000 exec "$BIN/tests/test_remote_write_vm"
fi

cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

mkdir -p "$WORK"
DATA=$WORK/data-$LINES.prom
if [ ! -s "$DATA" ]; then
	SRC=$(ls "$PB"/tsdb/dataset/*.prom 2>/dev/null | head -1 || true)
	if [ -z "$SRC" ]; then
		SRC=$WORK/gen.prom
		python3 "$SHARED/tsdb/gen.py" --series 1000 --samples $(((LINES + 999) / 1000)) --prom "$SRC" \
			--meta "$WORK/gen.meta.json"
	fi
	head -n "$LINES" "$SRC" >"$DATA"
fi
N=$(grep -vc '^#' "$DATA")

wait_http() { for _ in $(seq 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
metric() { curl -fsS "$1" 2>/dev/null | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s }'; }
cpu_s() { awk '{ printf "%.2f\n", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }
hwm_mib() { awk '/VmHWM/ { printf "%.0f\n", $2 / 1024 }' "/proc/$1/status"; }

# timed_import COUNTER PID WHAT: imports $DATA into the forwarder on $FWD_PORT and waits until COUNTER
# at $VM_PORT's /metrics reaches $N; "seconds cpu rss" of PID to $WORK/last.
timed_import() {
	local counter=$1 pid=$2 what=$3 t0 t1 got=0
	t0=$(date +%s.%N)
	curl -fsS -o /dev/null --data-binary "@$DATA" "http://127.0.0.1:$FWD_PORT/api/v1/import/prometheus"
	for _ in $(seq 6000); do
		got=$(metric "http://127.0.0.1:$VM_PORT/metrics" "$counter")
		[ "$got" -ge "$N" ] && break
		sleep 0.05
	done
	t1=$(date +%s.%N)
	[ "$got" -ge "$N" ] || { echo "$what $got of $N" >&2; exit 1; }
	echo "$(echo "$t1 - $t0" | bc -l) $(cpu_s "$pid") $(hwm_mib "$pid")" >"$WORK/last"
}

# one_run NAME: starts VictoriaMetrics and the forwarder, imports, waits; writes "seconds cpu rss" to $WORK/last.
one_run() {
	local name=$1 dir
	dir=$(mktemp -d "$WORK/run-XXXXXX")
	victoria-metrics -storageDataPath="$dir/vm" -httpListenAddr=127.0.0.1:$VM_PORT -retentionPeriod=100y \
		-loggerLevel=ERROR >"$dir/vm.log" 2>&1 &
	local vm=$!
	PIDS+=("$vm")
	wait_http "http://127.0.0.1:$VM_PORT/health"
	if [ "$name" = corral ]; then
		CORRAL_TOKEN=bench-token "$BIN/corral-aggregator" --listen 127.0.0.1:$FWD_PORT --data-dir "$dir/agg" --dns-listen off \
			--allow-unauthenticated-import --remote-write "http://127.0.0.1:$VM_PORT/api/v1/write" \
			--log-level warn >"$dir/fwd.log" 2>&1 &
	else
		vmagent -httpListenAddr=127.0.0.1:$FWD_PORT -remoteWrite.url="http://127.0.0.1:$VM_PORT/api/v1/write" \
			-remoteWrite.tmpDataPath="$dir/vmagent" -loggerLevel=ERROR >"$dir/fwd.log" 2>&1 &
	fi
	local fwd=$!
	PIDS+=("$fwd")
	wait_http "http://127.0.0.1:$FWD_PORT/metrics"
	timed_import 'vm_rows_inserted_total{type="promremotewrite"}' "$fwd" "$name: VictoriaMetrics got"
	kill "$fwd" "$vm"
	wait "$fwd" "$vm" 2>/dev/null || true
	PIDS=()
	rm -rf "$dir"
}

# recv_run NAME: a receiver, vmagent in front of it, import into vmagent, wait; "seconds cpu rss" to $WORK/last.
recv_run() {
	local name=$1 dir rcv url counter
	dir=$(mktemp -d "$WORK/run-XXXXXX")
	case $name in
	corral)
		CORRAL_TOKEN=bench-token "$BIN/corral-aggregator" --listen 127.0.0.1:$VM_PORT --data-dir "$dir/agg" \
			--dns-listen off --log-level warn >"$dir/rcv.log" 2>&1 &
		counter=corral_remote_write_received_samples_total ;;
	victoriametrics)
		victoria-metrics -storageDataPath="$dir/vm" -httpListenAddr=127.0.0.1:$VM_PORT -retentionPeriod=100y \
			-loggerLevel=ERROR >"$dir/rcv.log" 2>&1 &
		counter='vm_rows_inserted_total{type="promremotewrite"}' ;;
	esac
	rcv=$!
	PIDS+=("$rcv")
	wait_http "http://127.0.0.1:$VM_PORT/metrics"
	url=http://127.0.0.1:$VM_PORT/api/v1/write
	printf 'bench-token' >"$dir/token"
	vmagent -httpListenAddr=127.0.0.1:$FWD_PORT -remoteWrite.url="$url" -remoteWrite.bearerTokenFile="$dir/token" \
		-remoteWrite.tmpDataPath="$dir/vmagent" -loggerLevel=ERROR >"$dir/fwd.log" 2>&1 &
	local fwd=$!
	PIDS+=("$fwd")
	wait_http "http://127.0.0.1:$FWD_PORT/metrics"
	timed_import "$counter" "$rcv" "$name: received"
	kill "$fwd" "$rcv"
	wait "$fwd" "$rcv" 2>/dev/null || true
	PIDS=()
	rm -rf "$dir"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A SEC CPU RSS
if [ "${MODE:-forward}" = receive ]; then
	NAMES="corral victoriametrics" RUN=recv_run
else
	NAMES="corral vmagent" RUN=one_run
fi
for rep in $(seq "$REPS"); do
	for name in $NAMES; do
		$RUN $name
		read -r s c r <"$WORK/last"
		echo "rep $rep $name: ${s}s for $N samples, ${c} CPU-s, ${r} MiB peak RSS"
		SEC[$name]+="$s "
		CPU[$name]+="$c "
		RSS[$name]+="$r "
	done
done

printf '\n| medians of %s, %s samples (%s) |' "$REPS" "$N" "${MODE:-forward}"
for name in $NAMES; do printf ' %s |' "$name"; done
for name in $NAMES; do [ $name = corral ] || printf ' corral / %s |' "$name"; done
printf '\n|---|'
for name in $NAMES $NAMES; do [ $name = corral ] && [ "${seen_corral:-}" ] && continue; seen_corral=1; printf -- '---|'; done
printf '\n'
for m in SEC CPU RSS; do
	declare -n A=$m
	label=$(case $m in SEC) echo "seconds until all arrived" ;; CPU) echo "CPU seconds" ;; RSS) echo "peak RSS MiB" ;; esac)
	printf '| %s |' "$label"
	declare -A med
	for name in $NAMES; do
		med[$name]=$(tr ' ' '\n' <<<"${A[$name]}" | grep . | median)
		printf ' %s |' "${med[$name]}"
	done
	for name in $NAMES; do
		[ $name = corral ] || printf ' %.2f |' "$(echo "${med[corral]} / ${med[$name]}" | bc -l)"
	done
	printf '\n'
	unset -n A
done
