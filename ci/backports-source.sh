#!/usr/bin/env bash
# Print the deb822 source that adds bookworm-backports from the machine's own Debian mirror, or nothing when a
# bookworm-backports source is already configured. Reads both source formats: one-line `deb` entries in
# sources.list and *.list, and deb822 `URIs:` stanzas in *.sources. Exits 1 with a message when no Debian source
# is configured at all.
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

# One-line entries: `deb [options] URI suite ...`; deb822: `URIs: URI ...`. The first URI ending in /debian.
mirror=""
if [ "${#files[@]}" -gt 0 ]; then
    mirror=$(sed -nE \
        -e 's#^deb(\s+\[[^]]*\])?\s+([^ ]+/debian)/?(\s.*)?$#\2#p' \
        -e 's#^URIs:\s*(.*\s)?([^ ]+/debian)/?(\s.*)?$#\2#p' \
        "${files[@]}" | head -n1)
fi
if [ -z "$mirror" ]; then
    echo "ci/backports-source.sh: no Debian apt source (a 'deb …/debian' line or 'URIs: …/debian') in $etc/sources.list or $etc/sources.list.d/; add the Debian mirror first" >&2
    exit 1
fi
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror"
