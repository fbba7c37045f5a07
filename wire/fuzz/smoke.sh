#!/usr/bin/env bash
# Runs the wire decoder fuzz target (seeds: framed golden messages, so it starts deep in the message types).
# Usage: wire/fuzz/smoke.sh [SECONDS] (default 20); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
exec "$here/../../scripts/fuzz-smoke" "$here" "${1:-20}" decoder
