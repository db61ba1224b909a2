#!/usr/bin/env bash
# The whole test suite, tier by tier (see `cargo xtask test --help`). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
# A run from a fresh clone never reuses incremental state: without it target/ is gigabytes smaller.
export CARGO_INCREMENTAL=0
exec cargo xtask test "$@"
