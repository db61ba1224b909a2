#!/bin/sh
# mmdebstrap --customize-hook: runs after all packages are installed. $1 is the root directory.
# Accounts (no usable password anywhere), services, identity cleanup, and the boot partition's files
# under /boot/firmware (xtask moves them to the FAT partition).
set -eu
root="$1"
recipe="${CLUSTER_LAB_RECIPE:?}"
arch="${CLUSTER_LAB_ARCH:?}"
in_root() { chroot "$root" "$@"; }

# Consul from a HashiCorp release archive instead of Debian's package (already verified by xtask).
if [ -n "${CLUSTER_LAB_CONSUL_BIN:-}" ]; then
    install -m 0755 -o 0 -g 0 "$CLUSTER_LAB_CONSUL_BIN" "$root/usr/bin/consul"
fi
in_root getent group consul >/dev/null || in_root groupadd --system consul
in_root getent passwd consul >/dev/null ||
    in_root useradd --system --gid consul --home-dir /var/lib/consul --shell /usr/sbin/nologin consul
# Group consul: Consul runs as that user and must read the configuration the agent writes here (0640 root:consul).
in_root install -d -m 0750 -o root -g consul /etc/consul.d
in_root install -d -m 0750 -o consul -g consul /var/lib/consul

# Accounts: root locked; `cluster` (sudo, docker) logs in with SSH keys set at flash time.
in_root usermod --lock root
in_root getent passwd cluster >/dev/null ||
    in_root useradd --create-home --shell /bin/bash --groups sudo,docker cluster
in_root usermod --lock cluster
install -d -m 0700 -o 1000 -g 1000 "$root/home/cluster/.ssh"
in_root chown -R cluster:cluster /home/cluster

# Services.
in_root systemctl enable systemd-networkd.service systemd-resolved.service chrony.service \
    ssh.service avahi-daemon.service docker.service \
    cluster-lab-growroot.service cluster-lab-ssh-hostkeys.service
in_root systemctl mask systemd-networkd-wait-online.service
# The registry runs on the master only: first boot writes its configuration there and enables it.
in_root systemctl disable docker-registry.service
echo cluster-lab > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcluster-lab\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# Per-machine identity must not be baked in: every card makes its own on first boot.
rm -f "$root"/etc/ssh/ssh_host_*
printf 'uninitialized\n' > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root/var/lib/systemd/random-seed"

# Boot partition contents.
root_label="${CLUSTER_LAB_ROOT_LABEL:?}"
render() { sed -e "s|@ROOT_LABEL@|$root_label|g" "$1"; }
kver=$(ls "$root/lib/modules" | sort -V | tail -n 1)
fw="$root/boot/firmware"
case "$arch" in
amd64)
    cp "$root/boot/vmlinuz-$kver" "$fw/vmlinuz"
    cp "$root/boot/initrd.img-$kver" "$fw/initrd.img"
    mkdir -p "$fw/EFI/BOOT" "$fw/loader/entries"
    cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$fw/EFI/BOOT/BOOTX64.EFI"
    render "$recipe/boot/loader.conf" > "$fw/loader/loader.conf"
    cmdline=$(render "$recipe/boot/cmdline-amd64.txt" | grep -v '^#')
    printf 'title   cluster-lab (Debian %s)\nlinux   /vmlinuz\ninitrd  /initrd.img\noptions %s\n' \
        "$kver" "$cmdline" > "$fw/loader/entries/cluster-lab.conf"
    printf '%s\n' "$cmdline" > "$fw/cmdline.txt"
    ;;
arm64 | armhf)
    # raspi-firmware's kernel hook copies the firmware, kernel, initrd and device trees here and writes
    # config.txt and cmdline.txt from /etc/default/raspi-firmware*. Configure it, then run it again, so a
    # kernel upgrade on the device later writes the same files.
    # The serial console the header's UART really is: ttyS1 (the mini UART) on the 64-bit boards (Pi 3, 4, 400,
    # CM4, Zero 2 W), where ttyAMA0 drives Bluetooth; ttyAMA0 on the Pi 2, which has no ttyS1. No cma=: the hook
    # would put the build chroot's guess (64M) on every board, and the Pi 4 may not boot with it; a headless
    # node needs no video memory.
    case "$arch" in
    arm64) consoles="tty0 ttyS1,115200" ;;
    armhf) consoles="tty0 ttyAMA0,115200" ;;
    esac
    sed -i -e "s|^#\?ROOTPART=.*|ROOTPART=LABEL=$root_label|" \
        -e "s|^#\?CONSOLES=.*|CONSOLES=\"$consoles\"|" \
        -e "s|^#\?CMA=.*|CMA=0|" \
        "$root/etc/default/raspi-firmware"
    grep -q "^ROOTPART=LABEL=$root_label\$" "$root/etc/default/raspi-firmware"
    grep -q "^CMA=0\$" "$root/etc/default/raspi-firmware"
    cp "$recipe/boot/raspi-firmware-custom" "$root/etc/default/raspi-firmware-custom"
    if [ "$arch" = arm64 ]; then
        cat "$recipe/boot/raspi-firmware-custom-arm64" >> "$root/etc/default/raspi-firmware-custom"
    fi
    # The hook acts on "configure" only, and needs /proc to see that it runs in a chroot.
    proc_mounted=
    if [ ! -e "$root/proc/self" ]; then
        mount -t proc proc "$root/proc"
        proc_mounted=1
    fi
    in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "$kver"
    [ -z "$proc_mounted" ] || umount "$root/proc"
    echo "customize: $(cat "$fw/cmdline.txt")"
    grep -q "root=LABEL=$root_label " "$fw/cmdline.txt" || { echo "customize: cmdline.txt lacks root=LABEL=$root_label" >&2; exit 1; }
    grep -q "^kernel=vmlinuz-$kver\$" "$fw/config.txt" || { echo "customize: config.txt lacks kernel=vmlinuz-$kver" >&2; exit 1; }
    # The wired NIC is eth0 (what cluster-lab.toml's default interface names) only because the hook adds
    # net.ifnames=0: make sure it still does.
    grep -q " net.ifnames=0 " "$fw/cmdline.txt" || { echo "customize: cmdline.txt lacks net.ifnames=0 (the NIC would not be eth0)" >&2; exit 1; }
    for c in $consoles; do
        grep -q "console=$c" "$fw/cmdline.txt" || { echo "customize: cmdline.txt lacks console=$c" >&2; exit 1; }
    done
    if grep -q "cma=" "$fw/cmdline.txt"; then echo "customize: cmdline.txt sets cma=" >&2; exit 1; fi
    if [ "$arch" = arm64 ]; then
        # config.txt sends the Compute Module 4 to its own device tree (raspi-firmware-custom's [cm4] section).
        grep -q "^device_tree=bcm2711-rpi-cm4-io.dtb\$" "$fw/config.txt" && [ -f "$fw/bcm2711-rpi-cm4-io.dtb" ] ||
            { echo "customize: config.txt or the boot partition lacks the CM4's device tree" >&2; exit 1; }
    fi
    ;;
esac

# Debian packages for the built-in stacks' container images (Prometheus, node-exporter and the C library they
# link): downloaded for the base's architecture and unpacked beside the root tree, not installed in it.
# `cargo xtask image` makes the images from them; the base keeps them as build/base/<arch>.packages/.
unpack_dir="${CLUSTER_LAB_UNPACK_DIR:?}"
debs="$unpack_dir/.debs"
rm -rf "$unpack_dir"
mkdir -p "$debs"
# apt from outside the chroot, with mmdebstrap's configuration (the chroot's sources, lists and architecture).
# shellcheck disable=SC2086 # one word per package
(cd "$debs" && APT_CONFIG="${MMDEBSTRAP_APT_CONFIG:?}" apt-get download -q -o APT::Sandbox::User=root ${CLUSTER_LAB_UNPACK:?})
for pkg in $CLUSTER_LAB_UNPACK; do
    deb=$(ls "$debs/${pkg}"_*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || { echo "customize: apt-get download left no $pkg package" >&2; exit 1; }
    dpkg-deb -x "$deb" "$unpack_dir/$pkg"
    echo "customize: unpacked $(basename "$deb") for the stacks' container images"
done
rm -rf "$debs"

# Caches that only make the image bigger.
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*_Packages* "$root"/var/log/*.log
