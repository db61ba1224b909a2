#!/usr/bin/env bash
# Install everything cluster-lab's build and test suite need on a fresh Debian/Ubuntu machine. Run as root.
# Safe to run again: apt, rustup and cargo skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "ci/deps.sh: run as root (it installs Debian packages): sudo bash ci/deps.sh" >&2
    exit 2
fi

step() { printf '\n==> %s\n' "$*"; }
# Every failure says which command failed, on which line, instead of exiting silently.
trap 'rc=$?; echo "ci/deps.sh: line $LINENO: \`$BASH_COMMAND\` failed with exit status $rc" >&2; exit $rc' ERR

export DEBIAN_FRONTEND=noninteractive
step "apt: $(grep -cv '^\s*\(#\|$\)' ci/apt-packages.txt) packages from ci/apt-packages.txt"
apt-get update -qq
# shellcheck disable=SC2046
apt-get install -y -qq --no-install-recommends $(grep -v '^\s*\(#\|$\)' ci/apt-packages.txt | sort -u) >/dev/null

if [ -s ci/apt-backports.txt ]; then
    step "apt: bookworm-backports packages from ci/apt-backports.txt"
    # Same mirror as the machine's own Debian source, backports suite added (nothing when already configured).
    source=$(bash ci/backports-source.sh)
    if [ -n "$source" ]; then
        printf '%s\n' "$source" > /etc/apt/sources.list.d/bookworm-backports.sources
        echo "added /etc/apt/sources.list.d/bookworm-backports.sources"
        apt-get update -qq
    fi
    # shellcheck disable=SC2046
    apt-get install -y -qq --no-install-recommends -t bookworm-backports \
        $(grep -v '^\s*\(#\|$\)' ci/apt-backports.txt | sort -u) >/dev/null
fi

for script in ci/install-*.sh; do
    [ -e "$script" ] || continue
    step "$script"
    bash "$script"
done

step "rustup: components and targets"
rustup component add rustfmt clippy >/dev/null
while read -r target; do
    case "$target" in ''|'#'*) continue ;; esac
    rustup target add "$target" >/dev/null
done < ci/rust-targets.txt

if ! cargo nextest --version >/dev/null 2>&1; then
    step "cargo install cargo-nextest"
    cargo install --locked cargo-nextest
fi
step "dependencies ready"
