#!/bin/sh
# Install Consul 1.8.7 (Debian bullseye's `consul` package) on a bookworm/trixie host for the root-tier tests.
#
# Consul is not in bookworm or trixie. Rather than adding bullseye to the host's apt sources (which would offer every
# bullseye package to later upgrades), this uses a one-off source list and a private apt state directory to download
# just the consul .deb, then installs that file with the host's normal apt so its dependencies come from the host's
# own suites. The host's /etc/apt is left untouched.
set -eu

if command -v consul >/dev/null 2>&1 && consul version | grep -q '^Consul v1\.8\.'; then
    consul version | head -n1
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
cat >"$work/bullseye.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
LIST

apt_one_off() {
    apt-get -q \
        -o Dir::Etc::SourceList="$work/bullseye.list" \
        -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$work/lists" \
        -o Dir::Cache::Archives="$work/archives" \
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
        -o APT::Architecture="$(dpkg --print-architecture)" \
        "$@"
}

apt_one_off update
(cd "$work" && apt_one_off download consul)
deb=$(ls "$work"/consul_*.deb)
echo "installing $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 "$deb"
# The package enables consul.service; the tests start their own agents in network namespaces.
systemctl disable --now consul.service >/dev/null 2>&1 || true
consul version | head -n1
