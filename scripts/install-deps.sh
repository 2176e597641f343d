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
