#!/usr/bin/env bash
# Runs the master's fuzz targets (manifest parser, handshake) for a few seconds each (default 20)
# on one core. Usage: master/fuzz/smoke.sh [SECONDS] [TARGET...]
# Needs a nightly toolchain and cargo-fuzz. Corpora (master/fuzz/corpus/<target>) are kept between
# runs but not committed (seeds/<target> are); a crash leaves its input in
# master/fuzz/artifacts/<target> and fails.
set -euo pipefail
seconds="${1:-20}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest handshake)
cd "$(dirname "$0")"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # dicts/<target>.dict: the tokens of the input language (TOML keys and tables for manifest).
  dict=()
  [ ! -f "dicts/$t.dict" ] || dict=(-dict="dicts/$t.dict")
  # One in-process fuzzer (no -jobs/-workers: the machines running this are small and shared).
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 "${dict[@]}"
done
