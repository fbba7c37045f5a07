#!/usr/bin/env bash
# Runs the image formats fuzz target (indexes, manifests and configs from registries and image
# archives, and the walk from a root document to an image) for SECONDS/2.
# Usage: image/fuzz/smoke.sh [SECONDS] (default 20); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
seconds="${1:-20}"
exec "$here/../../scripts/fuzz-smoke" "$here" "$(( seconds / 2 > 0 ? seconds / 2 : 1 ))" formats
