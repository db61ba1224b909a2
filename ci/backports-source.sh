#!/usr/bin/env bash
# Print the deb822 source that adds bookworm-backports from the machine's own Debian mirror, or nothing when a
# bookworm-backports source is already configured. Reads both source formats: one-line `deb` entries in
# sources.list and *.list, and deb822 stanzas (`Types:`, `URIs:`, `Suites:`) in *.sources. The mirror is a URI
# ending in /debian that serves the suite `bookworm`, one on a debian.org host first (other archives such as
# Docker's or Raspberry Pi's also end in /debian). Exits 1 with a message when there is none.
#
#   bash ci/backports-source.sh [APT_ETC]      (default /etc/apt; tests pass a fixture tree)
set -euo pipefail
etc=${1:-/etc/apt}

files=()
[ -f "$etc/sources.list" ] && files+=("$etc/sources.list")
for f in "$etc"/sources.list.d/*.list "$etc"/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
done

if [ "${#files[@]}" -gt 0 ] && grep -qsE '^[^#]*bookworm-backports' "${files[@]}"; then
    exit 0
fi

# Candidate mirrors, one per line, in file order.
candidates() {
    local f
    for f in "${files[@]}"; do
        case "$f" in
        *.sources)
            # deb822: blank-line separated stanzas.
            awk 'BEGIN { RS = ""; FS = "\n" }
                {
                    types = ""; uris = ""; suites = ""
                    for (i = 1; i <= NF; i++) {
                        line = $i
                        if (line ~ /^#/) continue
                        if (sub(/^Types:[ \t]*/, "", line)) types = line
                        else if (sub(/^URIs:[ \t]*/, "", line)) uris = line
                        else if (sub(/^Suites:[ \t]*/, "", line)) suites = line
                    }
                    if ((" " types " ") !~ / deb / || (" " suites " ") !~ /[ \t]bookworm[ \t]/) next
                    n = split(uris, u, /[ \t]+/)
                    for (j = 1; j <= n; j++) if (u[j] ~ /\/debian\/?$/) { sub(/\/$/, "", u[j]); print u[j] }
                }' "$f"
            ;;
        *)
            # One-line: deb [options] URI SUITE COMPONENT...
            awk '$1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    uri = $i; suite = $(i + 1)
                    if (suite == "bookworm" && uri ~ /\/debian\/?$/) { sub(/\/$/, "", uri); print uri }
                }' "$f"
            ;;
        esac
    done
}

mirror=""
if [ "${#files[@]}" -gt 0 ]; then
    all=$(candidates)
    mirror=$(printf '%s\n' "$all" | awk '/^[a-z]+:\/\/([^\/]*\.)?debian\.org\// { print; exit }')
    [ -n "$mirror" ] || mirror=$(printf '%s\n' "$all" | awk 'NF { print; exit }')
fi
if [ -z "$mirror" ]; then
    echo "ci/backports-source.sh: no Debian apt source for bookworm (a 'deb …/debian bookworm' line or a deb822 stanza with 'URIs: …/debian' and 'Suites: bookworm') in $etc/sources.list or $etc/sources.list.d/; add the Debian mirror first" >&2
    exit 1
fi
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror"
