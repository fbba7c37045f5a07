#!/usr/bin/env bash
# Runs the artifact tarball fuzz target (checker + extractor) for a few seconds (default 20) on
# one core. Usage: artifact/fuzz/smoke.sh [SECONDS]
# Needs a nightly toolchain and cargo-fuzz. The corpus (artifact/fuzz/corpus/tar) is kept between
# runs but not committed (seeds/tar is); a crash leaves its input in artifact/fuzz/artifacts/tar
# and fails. The target extracts into a sandbox under a temporary directory of this run's own,
# removed at the end.
set -euo pipefail
seconds="${1:-20}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"
mkdir -p corpus/tar
# One in-process fuzzer (no -jobs/-workers: the machines running this are small and shared).
# -max_len: room for a few entries (512-byte headers) beyond the seeds.
sandbox="$(mktemp -d)"
trap 'rm -rf "$sandbox"' EXIT
TMPDIR="$sandbox" cargo +nightly fuzz run tar corpus/tar seeds/tar -- \
  -max_total_time="$seconds" -max_len=16384 -print_final_stats=1
