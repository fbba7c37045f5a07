#!/usr/bin/env bash
# Runs the master's fuzz targets: manifest parser and renderer, handshake (SECONDS each), and a
# node's status reports (SECONDS/2, a newer target: the whole smoke stays within its budget).
# Usage: master/fuzz/smoke.sh [SECONDS] [TARGET...] (default 20 s, all three); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
seconds="${1:-20}"
shift || true
if [ $# -gt 0 ]; then
  exec "$here/../../scripts/fuzz-smoke" "$here" "$seconds" "$@"
fi
"$here/../../scripts/fuzz-smoke" "$here" "$seconds" manifest handshake
exec "$here/../../scripts/fuzz-smoke" "$here" "$(( seconds / 2 > 0 ? seconds / 2 : 1 ))" status
