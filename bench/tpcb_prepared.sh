#!/usr/bin/env bash
# pgbench -M prepared -c 50 -j 50 -T 10 (TPC-B) direct vs through pgpilot, alternating, 2 rounds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=target/release/pgpilot
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

$BIN cluster --ignore-stdin --conf max_connections=300 > "$WORK/cl.out" & CLP=$!
while ! [ -s "$WORK/cl.out" ]; do sleep 0.1; done
PG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["primary_port"])' "$WORK/cl.out")
export PGPASSWORD=app-secret
pgbench -i -q -s 10 -h 127.0.0.1 -p $PG -U app app >/dev/null 2>&1
PP=$((PG+1000))
cat > "$WORK/pgpilot.toml" <<T
listen = "127.0.0.1:$PP"
admin_listen = "off"
[pool]
max_size = 20
[upstream]
primary = "127.0.0.1:$PG"
[[users]]
name = "app"
password = "app-secret"
T
PGPILOT_LOG=warn $BIN proxy --config "$WORK/pgpilot.toml" & PX=$!
sleep 1
for r in 1 2; do
  for t in direct pgpilot; do
    port=$PG; [ $t = pgpilot ] && port=$PP
    out=$(pgbench -M prepared -c 50 -j 50 -T 10 -n -h 127.0.0.1 -p $port -U app app 2>&1)
    echo "round $r $t: $(echo "$out" | grep -E '^tps' | head -1) | $(echo "$out" | grep -E 'failed' | head -1) | $(echo "$out" | grep 'latency average')"
  done
done
kill $PX; kill -TERM $CLP; wait 2>/dev/null || true
