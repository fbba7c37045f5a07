#!/usr/bin/env bash
# Runs the master's fuzz targets (manifest parser and renderer, handshake, a node's status reports).
# Usage: master/fuzz/smoke.sh [SECONDS] [TARGET...] (default 20 s, all three); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
seconds="${1:-20}"
shift || true
[ $# -gt 0 ] || set -- manifest handshake status
exec "$here/../../scripts/fuzz-smoke" "$here" "$seconds" "$@"
