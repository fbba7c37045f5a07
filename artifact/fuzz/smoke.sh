#!/usr/bin/env bash
# Runs the artifact tarball fuzz target (checker + extractor into a sandbox) for SECONDS and the
# image layer one (overlay whiteouts and flatten over a lower layer) for SECONDS/2; -max_len
# (flags/) leaves room for a few 512-byte headers beyond the seeds.
# Usage: artifact/fuzz/smoke.sh [SECONDS] (default 20); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
seconds="${1:-20}"
"$here/../../scripts/fuzz-smoke" "$here" "$seconds" tar
exec "$here/../../scripts/fuzz-smoke" "$here" "$(( seconds / 2 > 0 ? seconds / 2 : 1 ))" layer
