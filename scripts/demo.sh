#!/usr/bin/env bash
# Installs what a fresh machine lacks, builds pgpilot (release) and runs
# `pgpilot demo`: a throwaway PostgreSQL primary + replica with pgpilot in
# front. Extra arguments go to `pgpilot demo` (see `pgpilot demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
exec cargo run --release --quiet -p pgpilot -- demo "$@"
