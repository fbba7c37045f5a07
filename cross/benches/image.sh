#!/usr/bin/env bash
# `cargo cross image` on an image shaped like Raspberry Pi OS Lite (bookworm arm64): 2.7 GB,
# a 512 MiB FAT32 boot partition at 4 MiB, the rest a root partition with 1.5 GiB of data (random,
# so nothing compresses or gets skipped) and zeros after it. Baseline, measured in the same run:
# `cp --sparse=always` of the same file. Prints times and the ratio.
#
#   cross/benches/image.sh [WORKER]      (default worker: target/bramble-cross/pi4b/release/)
#
# Needs fdisk, dosfstools, mtools and ~5 GB free in $TMPDIR. Removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MTOOLS_SKIP_CHECK=1 PATH="/usr/sbin:/sbin:$PATH"
worker=${1:-target/bramble-cross/pi4b/release/bramble-worker}
[ -f "$worker" ] || { echo "no worker at $worker: cargo cross build --board pi4b --release --worker-only" >&2; exit 1; }
cargo build -q -p bramble-cross
cross=target/debug/cross # what `cargo cross` runs

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
img=$dir/raspios.img
sectors=$((2700 * 1000 * 1000 / 512))
truncate -s $((sectors * 512)) "$img"
printf 'label: dos\nstart=8192, size=1048576, type=c\nstart=1056768, type=83\n' | sfdisk -q "$img"
mkfs.vfat -F 32 -n BOOTFS --offset=8192 "$img" 524288 >/dev/null 2>&1
echo 'console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet' >"$dir/cmdline.txt"
printf '# /boot/firmware/overlays/README\narm_64bit=1\n' >"$dir/config.txt"
mcopy -i "$img@@$((8192 * 512))" "$dir/cmdline.txt" "$dir/config.txt" ::
dd if=/dev/urandom of="$img" bs=4M count=384 seek=$((1056768 * 512 / 4194304)) conv=notrunc status=none
echo 'join-token-for-the-benchmark' >"$dir/token"
du -h --apparent-size "$img" | awk '{printf "image: %s apparent, ", $1}'
du -h "$img" | awk '{print $1 " allocated"}'

now() { date +%s.%N; }
t0=$(now)
cp --sparse=always "$img" "$dir/cp.img"
t1=$(now)
rm -f "$dir/cp.img"
"$cross" image --board pi4b --base "$img" --server 192.0.2.10:7070 --token-file "$dir/token" \
  --hostname bench-1 --worker "$worker" -o "$dir/node.img" | tail -1
t2=$(now)
rm -f "$dir/node.img"
awk -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN { cp = t1 - t0; img = t2 - t1
  printf "baseline cp --sparse=always: %.2f s\ncargo cross image:           %.2f s (%.2fx the copy)\n", cp, img, img / cp }'
