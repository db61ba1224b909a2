#!/bin/sh
# mmdebstrap --setup-hook: runs before any package is installed. $1 is the root directory.
# Puts the apt pin for consul and the recipe's files (rootfs/) in place, so that package scripts
# (initramfs, sshd) already see them.
set -eu
root="$1"
recipe="${CLUSTER_LAB_RECIPE:?}"
mkdir -p "$root/etc/apt/preferences.d"
cp "$recipe/apt/preferences" "$root/etc/apt/preferences.d/cluster-lab-consul"
cp -R "$recipe/rootfs/." "$root/"
chown -R 0:0 "$root/etc" "$root/usr"
chmod 0440 "$root/etc/sudoers.d/cluster-lab"
mkdir -p "$root/boot/firmware"
