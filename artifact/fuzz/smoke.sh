#!/usr/bin/env bash
# Runs the artifact tarball fuzz target (checker + extractor into a sandbox; -max_len leaves room for a few 512-byte headers beyond the seeds).
# Usage: artifact/fuzz/smoke.sh [SECONDS] (default 20); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
exec "$here/../../scripts/fuzz-smoke" "$here" "${1:-20}" tar
