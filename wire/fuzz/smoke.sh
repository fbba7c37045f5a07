#!/usr/bin/env bash
# Runs the wire decoder fuzz target for a few seconds (default 20) on one core.
# Usage: wire/fuzz/smoke.sh [SECONDS]
# Needs a nightly toolchain and cargo-fuzz. The corpus (wire/fuzz/corpus/decoder) is kept between
# runs but not committed (seeds/decoder is); a crash leaves its input in wire/fuzz/artifacts/decoder and fails.
set -euo pipefail
seconds="${1:-20}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"
mkdir -p corpus/decoder
# One in-process fuzzer (no -jobs/-workers: the machines running this are small and shared).
# seeds/decoder holds framed golden messages so the fuzzer starts deep in the message types.
exec cargo +nightly fuzz run decoder corpus/decoder seeds/decoder -- \
  -max_total_time="$seconds" -print_final_stats=1
