#!/usr/bin/env python3
"""Same-run A/B of running poolers: TPS and where each transaction's CPU goes.

For comparing builds or settings side by side next to
`bench/compare.py --serve` (which prints each target's port and pid);
start extra pgpilot copies on the same PostgreSQL with
`PGPILOT_LOG=warn pgpilot proxy --config copy.toml`, all at the same time
(a process that has run for a while is a few per cent faster than a
fresh one). Runs `pgbench -S` through each target in turn, for a number of
alternating rounds, and prints per target the median over rounds of:

- TPS, and its ratio to the first target;
- the pooler's user and system CPU per transaction (/proc/<pid>/stat);
- all PostgreSQL processes' CPU per transaction, pgbench's own (from
  its rusage) and the machine's idle time per transaction (/proc/stat):
  a pooler can cost more than its own CPU.

    python3 bench/ab.py simple 10 5 4 pgbouncer:PORT:PID pgpilot:PORT:PID

Arguments: mode, clients, seconds per run, rounds, then name:port:pid per
target. Python 3 standard library only.
"""

import collections
import glob
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402

TCK = c.CLK_TCK


def pooler_cpu(pid):
    """(user, system) CPU seconds of one process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TCK, int(fields[12]) / TCK


def postgres_cpu():
    """user+system CPU seconds of every process named postgres."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue  # exited meanwhile
        if head.endswith("(postgres"):
            fields = tail.split()
            total += int(fields[11]) + int(fields[12])
    return total / TCK


def machine_idle():
    """Idle + iowait seconds of all CPUs (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[3] + v[4]) / TCK


def one_run(mode, clients, seconds, port, pid):
    """One pgbench -S run; returns (tps, per-transaction µs figures)."""
    before = (pooler_cpu(pid), postgres_cpu(), c.children_cpu_seconds(), machine_idle())
    try:
        tps, tx, _, _ = c.pgbench_run(port, mode, clients, seconds, None, c.pg_env())
    except RuntimeError as e:
        sys.exit(f"against port {port}: {e}")
    after = (pooler_cpu(pid), postgres_cpu(), c.children_cpu_seconds(), machine_idle())
    us = lambda a, b: (b - a) / tx * 1e6  # noqa: E731
    return tps, {
        "user": us(before[0][0], after[0][0]),
        "sys": us(before[0][1], after[0][1]),
        "postgres": us(before[1], after[1]),
        "pgbench": us(before[2], after[2]),
        "idle": us(before[3], after[3]),
    }


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    mode, clients, seconds, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    targets = [spec.split(":") for spec in sys.argv[5:]]
    tps = collections.defaultdict(list)
    figures = collections.defaultdict(lambda: collections.defaultdict(list))
    for _ in range(rounds):
        for name, port, pid in targets:
            t, f = one_run(mode, clients, seconds, port, pid)
            tps[name].append(t)
            for k, v in f.items():
                figures[name][k].append(v)
    base = statistics.median(tps[targets[0][0]])
    print(f"pgbench -S -M {mode} -c {clients}, {rounds} x {seconds} s; medians, µs per transaction")
    for name, _, _ in targets:
        t = statistics.median(tps[name])
        m = {k: statistics.median(v) for k, v in figures[name].items()}
        print(f"{name:14} tps {t:8.0f} ({t / base:.3f})  pooler user {m['user']:5.2f} "
              f"sys {m['sys']:5.2f}  postgres {m['postgres']:5.1f}  pgbench {m['pgbench']:5.1f}  "
              f"idle {m['idle']:5.1f}  rounds {[round(x) for x in tps[name]]}", flush=True)


if __name__ == "__main__":
    main()
