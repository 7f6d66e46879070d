#!/usr/bin/env bash
# Installs what pgpilot's build and tests need on a Debian 12 machine:
#   - libclang-dev, clang        (pg_query's bindgen needs libclang)
#   - postgresql-15 + contrib    (the test kit starts its own clusters)
#   - postgresql-15-hypopg       (hypothetical indexes for index advice)
#   - redis-server               (binary only: tests start their own servers)
#   - Python drivers psycopg[binary] and asyncpg (driver compatibility tests)
#   - cargo-nextest              (the test runner)
# Idempotent: checks what is there first, prints only what it installs, and
# runs `apt-get update` only when a Debian package is missing. Starts no
# service: tests start their own PostgreSQL and Redis servers.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
PG_EXT=/usr/share/postgresql/15/extension

say() { echo "install-deps: $*" >&2; }

# Runs a command as root: directly when root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root (or sudo) to run: $*"
        exit 1
    fi
}

# Prints the Debian packages whose files are missing, one per line.
missing_debian_packages() {
    command -v clang >/dev/null 2>&1 || echo clang
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null || echo libclang-dev
    { [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/pgbench" ]; } || echo postgresql-15
    [ -f "$PG_EXT/pg_stat_statements.control" ] || echo postgresql-contrib
    [ -f "$PG_EXT/hypopg.control" ] || echo postgresql-15-hypopg
    command -v redis-server >/dev/null 2>&1 || echo redis-server
    command -v python3 >/dev/null 2>&1 || echo python3
    python3 -m pip --version >/dev/null 2>&1 || echo python3-pip
}

install_debian_packages() {
    local packages
    mapfile -t packages < <(missing_debian_packages)
    [ "${#packages[@]}" -eq 0 ] && return 0
    say "installing Debian packages: ${packages[*]}"
    # Keep package scripts from starting services (PostgreSQL's main
    # cluster, Redis) unless the machine already has a policy for that.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
        added_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    if [ -n "$added_policy" ]; then
        as_root rm -f "$policy"
    fi
}

install_python_drivers() {
    python3 -c 'import psycopg, asyncpg' >/dev/null 2>&1 && return 0
    say "installing Python drivers: psycopg[binary] asyncpg"
    local pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
    local log
    if ! log=$("${pip[@]}" 'psycopg[binary]' asyncpg 2>&1); then
        if grep -q externally-managed-environment <<<"$log"; then
            # Debian's own python3 (PEP 668): these are test-only drivers.
            "${pip[@]}" --break-system-packages 'psycopg[binary]' asyncpg
        else
            echo "$log" >&2
            exit 1
        fi
    fi
}

install_nextest() {
    cargo nextest --version >/dev/null 2>&1 && return 0
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked --quiet
}

install_debian_packages
install_python_drivers
install_nextest
