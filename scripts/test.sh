#!/usr/bin/env bash
# Installs what the tests need, then runs every test in the workspace with
# nextest. Extra arguments go to `cargo nextest run` (e.g. `-p pgpilot-wire`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh

status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
exit "$status"
