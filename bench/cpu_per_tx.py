#!/usr/bin/env python3
"""CPU seconds and context switches per transaction of running poolers.

For profiling next to `bench/compare.py --serve`, which prints each
target's port and pid. Runs a fixed number of `pgbench -S` transactions
through each pooler in turn and reads the pooler's user+sys CPU
(/proc/<pid>/stat) and context switches (/proc/<pid>/task/*/status)
before and after.

    python3 bench/cpu_per_tx.py pgbouncer:PORT:PID,pgpilot:PORT:PID \
        simple:10:30000,extended:10:30000,prepared:500:50000

Each spec is mode:clients:transactions. Python 3 standard library only.
"""

import os
import subprocess
import sys


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
    return total


def pgbench(port, mode, clients, per_client):
    argv = ["pgbench", "-S", "-n", "-M", mode, "-c", str(clients), "-j", str(min(clients, 2)),
            "-t", str(per_client), "-h", "127.0.0.1", "-p", port, "-U", "app", "app"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    done = next(l for l in lines if "actually processed" in l).split()[-1].split("/")[0]
    tps = next(l for l in lines if l.startswith("tps")).split()[2]
    return int(done), float(tps)


def main():
    targets = [t.split(":") for t in sys.argv[1].split(",")]
    specs = [s.split(":") for s in sys.argv[2].split(",")]
    for mode, clients, total in specs:
        clients = int(clients)
        for name, port, pid in targets:
            cpu0, cs0 = cpu_seconds(pid), context_switches(pid)
            n, tps = pgbench(port, mode, clients, int(total) // clients)
            cpu1, cs1 = cpu_seconds(pid), context_switches(pid)
            print(f"{name:9} {mode:8} c={clients:<3} tx={n:6} tps={tps:8.0f} "
                  f"cpu/tx={(cpu1 - cpu0) * 1e6 / n:5.1f}us ctxsw/tx={(cs1 - cs0) / n:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
