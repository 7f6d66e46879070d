#!/usr/bin/env bash
# Builds PgBouncer 1.24 (or whatever Debian trixie ships) from Debian
# trixie's source package and caches the binary for bench/compare.py.
#
# Debian 12's own pgbouncer is 1.18, which cannot keep prepared statements
# in transaction mode (max_prepared_statements came in 1.21), so the
# benchmark builds a newer one. Everything goes through a private apt
# sources list and state dir: the machine's apt configuration is untouched.
#
# Usage: bench/pgbouncer.sh            prints the cached binary's path last
#        BENCH_CACHE=/some/dir bench/pgbouncer.sh
#
# Idempotent: when the cached binary exists it only reports its version.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${BENCH_CACHE:-$repo_root/.bench-cache}
bin=$cache/pgbouncer/bin/pgbouncer

log() { printf 'pgbouncer.sh: %s\n' "$*" >&2; }

if [[ -x $bin ]]; then
    log "cached: $bin ($("$bin" --version | head -n1))"
    echo "$bin"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "run as root: build dependencies are installed with apt-get"
    exit 1
fi

mkdir -p "$cache"
apt_dir=$cache/apt
src_dir=$cache/pgbouncer-src
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
echo 'deb-src http://deb.debian.org/debian trixie main' > "$apt_dir/sources.list"

# The private apt: only trixie's source index, in its own state dir.
private_apt=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache::Archives=$apt_dir/archives"
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Sandbox::User=root"
)

log "build tools and headers (machine apt: libevent-dev libssl-dev pkg-config make gcc)"
export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s libevent-dev libssl-dev pkg-config make gcc dpkg-dev >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq libevent-dev libssl-dev pkg-config make gcc dpkg-dev >/dev/null
fi

log "trixie source index (private state dir $apt_dir)"
apt-get "${private_apt[@]}" update -qq

log "apt-get source pgbouncer"
rm -rf "$src_dir"
mkdir -p "$src_dir"
(
    cd "$src_dir"
    apt-get "${private_apt[@]}" source --download-only pgbouncer >/dev/null
    dsc=$(ls pgbouncer_*.dsc | head -n1)
    dpkg-source --no-check -x "$dsc" build >/dev/null
)

log "configure and make"
(
    cd "$src_dir/build"
    ./configure --prefix="$cache/pgbouncer" --without-cares --without-systemd --without-pam \
        >"$src_dir/configure.log" 2>&1 || { tail -n 30 "$src_dir/configure.log" >&2; exit 1; }
    make -j"$(nproc)" >"$src_dir/make.log" 2>&1 || { tail -n 30 "$src_dir/make.log" >&2; exit 1; }
)
mkdir -p "$(dirname "$bin")"
install -m 0755 "$src_dir/build/pgbouncer" "$bin"
log "built: $bin ($("$bin" --version | head -n1))"
echo "$bin"
