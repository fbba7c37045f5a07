#!/usr/bin/env bash
# Runs the SD-card image partition table fuzz target (MBR and GPT; seeds: the first sectors of images made with sfdisk, after a 4-byte image length).
# Usage: cross/fuzz/smoke.sh [SECONDS] (default 20); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
exec "$here/../../scripts/fuzz-smoke" "$here" "${1:-20}" partitions
