#!/bin/sh
# install-deps.sh -- install the Debian packages corral needs to build, test and run its demo.
#
# Idempotent: asks dpkg what is already there and runs apt-get only for what is missing,
# so a machine that has everything prints nothing and touches no package list.
# SPDX-License-Identifier: Apache-2.0
set -eu

PKGS="build-essential cmake pkg-config clang
libuv1-dev libprotobuf-c-dev protobuf-c-compiler libzstd-dev libmicrohttpd-dev
libjansson-dev libsqlite3-dev libcurl4-openssl-dev libsnappy-dev libcmocka-dev
curl ca-certificates procps
prometheus"
# prometheus (promtool comes with it): the peer of tests/integration/test_promql_conformance.c and
# test_prom_api.c (issue 6)
# dig and kdig: the DNS conformance tests (issue 8)
PKGS="$PKGS dnsutils knot-dnsutils"
# victoria-metrics: the remote write sender's receiver in tests/integration/test_remote_write_vm.c, and
# vmagent (same package) as the peer in bench/remote-write (issue 6)
PKGS="$PKGS victoria-metrics"
# python3-yaml: tests/deploy/check_deploy.py parses deploy/kubernetes; openssl: the TLS test makes its CA
# (issue 11)
PKGS="$PKGS python3 python3-yaml openssl"
# libfaketime: tests/faults/test_clock_jump.c steps the agent's wall clock (issue 11)
PKGS="$PKGS faketime"

# node + npm: the real Loki push client (winston-loki) that tests/integration/test_logs_client.c runs
# (issue 7), installed from npm into tests/integration/loki-client/node_modules (package-lock.json).
# npm comes with nodesource's nodejs; with Debian's nodejs it is Debian's npm package.
PKGS="$PKGS nodejs"
loki_client() {
	d=$(cd "$(dirname "$0")/.." && pwd)/tests/integration/loki-client
	[ -d "$d/node_modules/winston-loki" ] && return 0
	if ! command -v npm >/dev/null; then
		[ "$1" = quiet ] || echo "install-deps: no npm (apt-get install npm): test_logs_client will fail"
		return 0
	fi
	(cd "$d" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}
loki_client quiet
# chromium + npm packages of the web UI (issue 10): uPlot for dashboards/web (the build copies it into
# <build>/ui) and playwright-core for tests/browser (it drives Debian's chromium), each from its
# package-lock.json, the same way as the Loki client above.
PKGS="$PKGS chromium"
ui_npm() {
	for d in dashboards/web tests/browser; do
		d=$(cd "$(dirname "$0")/.." && pwd)/$d
		[ -d "$d/node_modules" ] && continue
		command -v npm >/dev/null || { [ "$1" = quiet ] || echo "install-deps: no npm: the web UI cannot be built"; return 0; }
		(cd "$d" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	done
}
ui_npm quiet

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
loki_client loud
ui_npm loud
