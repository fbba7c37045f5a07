#!/usr/bin/env bash
# Runs the SD-card image partition table fuzz target (MBR and GPT; seeds: the first sectors of
# images made with sfdisk, after a 4-byte image length) for SECONDS, and the first-boot one
# (cmdline.txt edit, config.txt, the node's flags in worker.env) for SECONDS/2.
# Usage: cross/fuzz/smoke.sh [SECONDS] (default 20); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
seconds="${1:-20}"
"$here/../../scripts/fuzz-smoke" "$here" "$seconds" partitions
exec "$here/../../scripts/fuzz-smoke" "$here" "$(( seconds / 2 > 0 ? seconds / 2 : 1 ))" firstboot
