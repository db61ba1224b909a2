#!/bin/sh
# Regenerates raspios-like.img.xz: a tiny image laid out like Raspberry Pi OS, made with the standard tools
# (sfdisk, mkfs.vfat, mke2fs) rather than cluster-lab's own assembly code, so the tests read a layout that
# cluster-lab did not write itself. Needs fdisk, dosfstools, e2fsprogs, xz-utils; no root.
#
#   image/tests/data/make-fixtures.sh      (run from anywhere; writes next to this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PATH=$PATH:/usr/sbin:/sbin

img=$work/raspios-like.img
truncate -s 52M "$img"
# Raspberry Pi OS: p1 FAT32 (0x0c) "bootfs" at sector 8192, p2 ext4 (0x83) "rootfs" right after it.
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<'TABLE'
label: dos
label-id: 0x6c1d2a3f
start=8192, size=81920, type=c
start=90112, type=83
TABLE

mkdir -p "$work/boot" "$work/root/etc/systemd/system" "$work/root/usr/bin" "$work/root/boot/firmware"
printf 'arm_64bit=1\nenable_uart=1\n' > "$work/boot/config.txt"
printf 'console=serial0,115200 console=tty1 root=PARTUUID=6c1d2a3f-02 rootfstype=ext4 fsck.repair=yes rootwait\n' \
    > "$work/boot/cmdline.txt"
printf 'hostname: black-pearl\n' > "$work/boot/user-data"
printf 'PRETTY_NAME="Raspbian-like test fixture"\nID=debian\n' > "$work/root/etc/os-release"
printf 'raspberrypi\n' > "$work/root/etc/hostname"

mkfs.vfat -F 32 -s 1 -n bootfs -i 12345678 --offset=8192 "$img" 40960 >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -m -Q -i "$img@@$((8192 * 512))" "$work/boot/config.txt" "$work/boot/cmdline.txt" \
    "$work/boot/user-data" ::/
E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -L rootfs -U 4e1a7d0c-96a4-4cb6-8d7e-1f6b8d0c2a11 \
    -E offset=$((90112 * 512)),hash_seed=4e1a7d0c-96a4-4cb6-8d7e-1f6b8d0c2a11,nodiscard \
    -d "$work/root" "$img" 8M

xz -9e -T1 -c "$img" > "$here/raspios-like.img.xz"
ls -l "$here/raspios-like.img.xz"
