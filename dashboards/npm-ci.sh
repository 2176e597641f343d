#!/bin/sh
# npm-ci.sh -- `npm ci` in the current directory unless node_modules is already installed from this
# package-lock.json (npm writes node_modules/.package-lock.json; a newer lock file means reinstall).
# Usage: sh npm-ci.sh NPM   (dashboards/CMakeLists.txt runs it in dashboards/web)
# SPDX-License-Identifier: Apache-2.0
set -eu
if [ -f node_modules/.package-lock.json ] && [ ! package-lock.json -nt node_modules/.package-lock.json ]; then
	exit 0
fi
exec "$1" ci --no-audit --no-fund --loglevel=error
