#!/usr/bin/env bash
# The whole test suite, tier by tier (see `cargo xtask test --help`). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask test "$@"
