#!/usr/bin/env bash
# Runs the image formats fuzz target (indexes, manifests and configs from registries and
# `bramble image import` archives, and the walk from a root document to an image).
# Usage: image/fuzz/smoke.sh [SECONDS] (default 20); see scripts/fuzz-smoke.
set -euo pipefail
here="$(dirname "$0")"
exec "$here/../../scripts/fuzz-smoke" "$here" "${1:-20}" formats
