#!/usr/bin/env python3
"""pgpilot against itself: the same pgbench workload through differently
configured pgpilot processes, interleaved, in one run.

Answers questions such as "what does query insight cost?" (issue 6's bar:
TPS with insight on ≥ 0.95× insight off) or "one worker thread or two?".
Reuses bench/compare.py's cluster, pgbench and reporting helpers.

    python3 bench/variants.py --variant off:insight.enabled=false --variant on: \\
        --modes simple,prepared --clients 10,100 --rounds 3 --seconds 10

A variant is `name:key=value,key=value` where keys are `workers` (runtime
threads), `bin` (another pgpilot binary, e.g. a copy of an older build) or
`section.key` TOML settings (values written as TOML literals;
bare words are quoted). The first variant is the baseline of the ratios.
"""

import argparse
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def parse_variant(text):
    name, _, spec = text.partition(":")
    settings, workers, binary = {}, None, None
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key == "workers":
            workers = value
            continue
        if key == "bin":
            binary = value
            continue
        section, _, k = key.partition(".")
        literal = value if value in ("true", "false") or value.replace(".", "").isdigit() else f'"{value}"'
        settings.setdefault(section, []).append(f"{k} = {literal}")
    return name, settings, workers, binary


def start_variant(children, binary, workdir, pg_port, name, settings, workers):
    return c.start_pgpilot(children, binary, workdir, pg_port, name, settings, workers)


def table(cells, modes, clients, names):
    base = names[0]
    lines = ["| mode | clients | variant | median TPS | × " + base + " | mean ms | p99 ms | CPU s / 10k tx | TPS per round |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for m in modes:
        for n in clients:
            ref = cells[(m, n, base)].median_tps()
            for name in names:
                cell = cells[(m, n, name)]
                tps = cell.median_tps()
                ratio = f"{tps / ref:.2f}" if ref and tps else "—"
                lines.append(f"| {m} | {n} | {name} | {c.fmt(tps, '.0f')} | {ratio} | "
                             f"{c.fmt(cell.median_mean_ms(), '.3f')} | {c.fmt(cell.median_p99_ms(), '.3f')} | "
                             f"{c.fmt(cell.cpu_per_10k(), '.3f')} | {', '.join(f'{t:.0f}' for t in cell.tps)} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True)
    p.add_argument("--modes", default="simple,extended,prepared")
    p.add_argument("--clients", default="10,100")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args()
    modes = args.modes.split(",")
    clients = [int(x) for x in args.clients.split(",")]
    variants = [parse_variant(v) for v in args.variant]
    binary = os.path.join(c.REPO, "target", "release", "pgpilot")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, c._raise_on_signal)
    children = c.Children()
    workdir = tempfile.mkdtemp(prefix="pgpilot-variants-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(workdir, 0o755)
    try:
        pg_port = c.start_cluster(children, binary, max(300, max(clients) + 60 * len(variants)))
        c.pgbench_init(pg_port, args.scale)
        targets = {}
        for name, settings, workers, own_binary in variants:
            port, proc = start_variant(children, own_binary or binary, workdir, pg_port, name,
                                       settings, workers)
            targets[name] = (port, proc, os.environ.copy())
        c.warm_up(targets, 2)
        cells, noise = c.run_matrix(targets, modes, clients, args.rounds, args.seconds, workdir)
        names = [v[0] for v in variants]
        head = [f"# pgpilot variants: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", "",
                f"- **commit**: {c.git_commit()}", f"- **machine**: {c.machine()}",
                f"- **variants**: " + "; ".join(args.variant),
                f"- **run**: pgbench -S -T {args.seconds}, {args.rounds} round(s), scale {args.scale}, interleaved",
                f"- **noise**: {noise}", ""]
        text = "\n".join(head) + table(cells, modes, clients, names) + "\n"
        c.write_report(text, args.out, "-variants")
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
