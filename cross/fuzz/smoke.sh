#!/usr/bin/env bash
# Runs the SD-card image partition table fuzz target (MBR and GPT) for a few seconds (default
# 20) on one core. Usage: cross/fuzz/smoke.sh [SECONDS]
# Needs a nightly toolchain and cargo-fuzz. The corpus (cross/fuzz/corpus/partitions) is kept
# between runs but not committed (seeds/partitions is: the first sectors of images made with
# sfdisk, after a 4-byte image length); a crash leaves its input in
# cross/fuzz/artifacts/partitions and fails.
set -euo pipefail
seconds="${1:-20}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"
mkdir -p corpus/partitions
# One in-process fuzzer (no -jobs/-workers: the machines running this are small and shared).
exec cargo +nightly fuzz run partitions corpus/partitions seeds/partitions -- \
  -max_total_time="$seconds" -print_final_stats=1
