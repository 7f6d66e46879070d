#!/usr/bin/env python3
"""pgpilot vs PgBouncer vs direct PostgreSQL, on one machine, in one run.

Starts a throwaway PostgreSQL 15 primary (`pgpilot cluster`, the test kit),
loads it with `pgbench -i -s 10`, starts PgBouncer (bench/pgbouncer.sh builds
1.24 and caches it) and pgpilot with the same pool size, then runs
`pgbench -S` in each protocol mode and client count against all three
targets, interleaved, and a memory run with 10,000 idle clients against each
pooler. Prints a Markdown report and writes it to bench/results/.

Python 3 standard library only. Run as root (PgBouncer is started as the
`postgres` OS user). See BENCHMARKS.md for the methodology.
"""

import argparse
import asyncio
import datetime
import glob
import json
import math
import os
import platform
import pwd
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOL_SIZE = 20
MAX_PREPARED = 200
DB = "app"  # the test kit's database, owned by APP_USER
APP_USER = "app"
APP_PASSWORD = "app-secret"
# `pgpilot` is the PGO build (bench/pgo.py), `pgpilot-plain` the plain
# `cargo build --release`: both are measured, so the report shows what PGO
# buys and neither figure stands in for the other.
TARGETS = ("direct", "pgbouncer", "pgpilot", "pgpilot-plain")
PGPILOTS = ("pgpilot", "pgpilot-plain")
MODES = ("simple", "extended", "prepared")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Processes and cleanup


class Children:
    """Every process the script starts, stopped in reverse order on exit."""

    def __init__(self):
        self.procs = []  # (name, Popen, stop signal)

    def start(self, name, argv, stop_signal=signal.SIGTERM, **kw):
        kw.setdefault("start_new_session", True)  # Ctrl-C reaches only us
        proc = subprocess.Popen(argv, **kw)
        self.procs.append((name, proc, stop_signal))
        return proc

    def stop(self, proc, timeout=20):
        for i, (name, p, sig) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                _stop_one(name, p, sig, timeout)
                return

    def stop_all(self):
        while self.procs:
            name, p, sig = self.procs.pop()
            _stop_one(name, p, sig, 30)


def _stop_one(name, proc, sig, timeout):
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop in {timeout}s: killing it")
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def _raise_on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


def free_port():
    """A port in 20000..32000 that is bindable now (below the ephemeral range)."""
    import random

    for _ in range(1000):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 20000..32000")


def wait_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {port} after {timeout}s")


def cpu_seconds(pid):
    """user+sys CPU seconds of a process, all threads (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is fields[0]; utime, stime are stat fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


COMPILERS = {"rustc", "cargo", "cc1", "cc1plus", "ld", "clang", "gcc"}


def busy_others():
    """Names of compiler processes running now (they share our 2 cores)."""
    found = set()
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            with open(comm) as f:
                name = f.read().strip()
        except OSError:
            continue
        if name in COMPILERS:
            found.add(name)
    return found


def run(argv, **kw):
    return subprocess.run(argv, check=True, **kw)


# --------------------------------------------------------------------------
# The three targets


def build_pgpilot():
    log("cargo build --release -p pgpilot (about 12 minutes from scratch on 2 cores)")
    run(["cargo", "build", "--release", "-p", "pgpilot"], cwd=REPO)


def build_pgbouncer():
    out = run([os.path.join(REPO, "bench", "pgbouncer.sh")], stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def start_cluster(children, pgpilot_bin, max_connections):
    log("starting PostgreSQL (pgpilot cluster)")
    proc = children.start(
        "cluster",
        [pgpilot_bin, "cluster", "--conf", f"max_connections={max_connections}",
         "--conf", "shared_buffers=256MB"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("pgpilot cluster exited without announcing the cluster")
    info = json.loads(line)
    log(f"PostgreSQL on port {info['primary_port']} ({info['data_dir']})")
    return info["primary_port"]


def pg_env():
    env = dict(os.environ)
    env["PGPASSWORD"] = APP_PASSWORD
    return env


def pgbench_init(pg_port, scale):
    log(f"pgbench -i -s {scale}")
    out = subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1",
                          "-p", str(pg_port), "-U", APP_USER, DB],
                         env=pg_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench -i failed:\n{out.stderr}")


def start_pgbouncer(children, binary, workdir, pg_port, label):
    """PgBouncer in transaction mode as the `postgres` OS user (it refuses root)."""
    pw = pwd.getpwnam("postgres")
    d = os.path.join(workdir, f"pgbouncer-{label}")
    os.makedirs(d, exist_ok=True)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    port = free_port()
    with open(os.path.join(d, "userlist.txt"), "w") as f:
        f.write(f'"{APP_USER}" "{APP_PASSWORD}"\n')
    with open(os.path.join(d, "pgbouncer.ini"), "w") as f:
        f.write(f"""[databases]
{DB} = host=127.0.0.1 port={pg_port} dbname={DB}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {d}/userlist.txt
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 20000
max_prepared_statements = {MAX_PREPARED}
logfile = {d}/pgbouncer.log
log_connections = 0
log_disconnections = 0
""")
    for name in os.listdir(d):
        os.chown(os.path.join(d, name), pw.pw_uid, pw.pw_gid)
    # SIGINT: safe shutdown (since 1.23 SIGTERM waits for clients to leave).
    proc = children.start(
        "pgbouncer", [binary, os.path.join(d, "pgbouncer.ini")],
        user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": pw.pw_dir},
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr.log"), "w"),
        cwd=d, stop_signal=signal.SIGINT,
    )
    wait_port(port, proc, "pgbouncer")
    return port, proc


def start_pgpilot(children, binary, workdir, pg_port, label, settings=None, workers=None):
    """pgpilot in transaction mode with the same pool as PgBouncer; `settings`
    adds TOML lines by section (`{"cache": ["enabled = true"]}`), `workers`
    sets PGPILOT_WORKERS."""
    d = os.path.join(workdir, f"pgpilot-{label}")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    sections = {"pool": ['mode = "transaction"', f"max_size = {POOL_SIZE}",
                         f"max_prepared_statements = {MAX_PREPARED}"]}
    for section, lines in (settings or {}).items():
        sections.setdefault(section, []).extend(lines)
    body = "\n".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())
    config = os.path.join(d, "pgpilot.toml")
    with open(config, "w") as f:
        f.write(f"""listen = "127.0.0.1:{port}"
admin_listen = "off"
max_client_connections = 20000

{body}
[upstream]
primary = "127.0.0.1:{pg_port}"

[[users]]
name = "{APP_USER}"
auth = "trust"
server_user = "{APP_USER}"
server_password = "{APP_PASSWORD}"
""")
    env = dict(os.environ)
    env.setdefault("PGPILOT_LOG", "warn")
    if workers:
        env["PGPILOT_WORKERS"] = workers
    proc = children.start(
        label, [binary, "proxy", "--config", config], env=env,
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr.log"), "w"),
    )
    wait_port(port, proc, label)
    return port, proc


# --------------------------------------------------------------------------
# pgbench runs


def pgbench_run(port, mode, clients, seconds, log_prefix, env, script=None,
                builtin="select-only"):
    """One pgbench run of `script` (a script file) or else of the `builtin`
    script (`select-only` is `-S`); returns (tps, transactions, failed,
    latencies_us)."""
    threads = min(clients, 2)
    workload = ["-f", script] if script else ["-b", builtin]
    argv = ["pgbench", *workload, "-n", "-M", mode, "-c", str(clients), "-j", str(threads),
            "-T", str(seconds), "-h", "127.0.0.1", "-p", str(port), "-U", APP_USER]
    if log_prefix:
        argv += ["--log", f"--log-prefix={log_prefix}"]
    argv.append(DB)
    out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=os.path.dirname(log_prefix) if log_prefix else None)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"pgbench failed ({out.returncode}): {' | '.join(tail)}")
    tps = tx = failed = None
    for line in out.stdout.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
        elif line.startswith("number of transactions actually processed:"):
            tx = int(line.split(":")[1].split()[0])
        elif line.startswith("number of failed transactions:"):
            failed = int(line.split(":")[1].split()[0])
    if tps is None or tx is None:
        raise RuntimeError(f"cannot read pgbench output:\n{out.stdout}")
    lat = read_latencies(log_prefix) if log_prefix else []
    return tps, tx, failed or 0, lat


def children_cpu_seconds():
    """User+sys CPU of this script's finished children (pgbench runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def read_latencies(prefix):
    """Per-transaction latencies (µs, 3rd column) from pgbench's log files."""
    lat = []
    for path in glob.glob(glob.escape(prefix) + ".*"):
        with open(path) as f:
            for line in f:
                parts = line.split(None, 3)
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
        os.remove(path)
    return lat


def p99(values):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


class Cell:
    """Measurements of one (mode, clients, target) over all rounds."""

    def __init__(self):
        self.tps = []
        self.mean_ms = []
        self.p99_ms = []
        self.tx = 0
        self.failed = 0
        self.cpu = 0.0  # pooler CPU seconds over all rounds
        self.client_cpu = 0.0  # pgbench's own CPU seconds over all rounds
        self.errors = []
        self.noisy = []  # per round: a compiler ran during it

    def add(self, tps, tx, failed, lat, cpu, noisy=False):
        self.tps.append(tps)
        self.noisy.append(noisy)
        self.tx += tx
        self.failed += failed
        self.cpu += cpu
        if lat:
            self.mean_ms.append(statistics.fmean(lat) / 1000)
            self.p99_ms.append(p99(lat) / 1000)

    def median_tps(self):
        return statistics.median(self.tps) if self.tps else float("nan")

    def median_mean_ms(self):
        return statistics.median(self.mean_ms) if self.mean_ms else float("nan")

    def median_p99_ms(self):
        return statistics.median(self.p99_ms) if self.p99_ms else float("nan")

    def cpu_per_10k(self):
        return self.cpu / self.tx * 10_000 if self.tx else float("nan")

    def client_us_per_tx(self):
        """pgbench's own CPU (user+sys) per transaction, µs."""
        return self.client_cpu / self.tx * 1e6 if self.tx else float("nan")


def warm_up(targets, seconds, modes=MODES, script=None):
    """Fills both pools (20 server connections) and PostgreSQL's caches
    (and, running `script`, pgpilot's result cache)."""
    log("warm-up")
    for name, (port, _proc, env) in targets.items():
        for mode in modes:
            pgbench_run(port, mode, 2 * POOL_SIZE, seconds, None, env, script)


def write_report(text, out, suffix=""):
    """Prints `text` and writes it to `out` (default
    bench/results/<date>-<time>-<commit><suffix>.md)."""
    print(text)
    out = out or os.path.join(REPO, "bench", "results",
                              f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{git_commit()}{suffix}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    log(f"written to {out}")


class NoiseWatch:
    """Samples once a second, in a thread, whether a compiler is running."""

    def __init__(self):
        import threading

        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while True:
            self.seen |= busy_others()
            if self._stop.wait(1.0):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seen |= busy_others()
        return False


def wait_quiet(budget, per_run):
    """Waits up to `per_run` s (within what is left of `budget`) for no
    compiler to be running; returns the budget left."""
    started = time.monotonic()
    limit = min(per_run, budget)
    while busy_others() and time.monotonic() - started < limit:
        time.sleep(1)
    return budget - (time.monotonic() - started)


def run_matrix(targets, modes, client_counts, rounds, seconds, workdir, per_run_wait=0,
               quiet_total=0, script=None):
    cells = {(m, c, t): Cell() for m in modes for c in client_counts for t in targets}
    order = list(targets)
    total = rounds * len(cells)
    done = 0
    noisy_runs = 0  # runs that started or ended while a compiler was running
    quiet_budget = quiet_total
    for r in range(rounds):
        # Rotate who goes first each round, so no target always follows the same one.
        rot = order[r % len(order):] + order[:r % len(order)]
        for mode in modes:
            for clients in client_counts:
                for name in rot:
                    port, proc, env = targets[name]
                    prefix = os.path.join(workdir, f"lat-{name}-{mode}-{clients}-{r}")
                    quiet_budget = wait_quiet(quiet_budget, per_run_wait)
                    before = cpu_seconds(proc.pid) if proc else 0.0
                    client_before = children_cpu_seconds()
                    done += 1
                    try:
                        with NoiseWatch() as watch:
                            tps, tx, failed, lat = pgbench_run(port, mode, clients, seconds,
                                                               prefix, env, script)
                    except RuntimeError as e:
                        cells[(mode, clients, name)].errors.append(str(e))
                        log(f"[{done}/{total}] round {r + 1} {mode:8} c={clients:<3} {name:9} ERROR {e}")
                        continue
                    cpu = (cpu_seconds(proc.pid) - before) if proc else 0.0
                    noisy = watch.seen
                    noisy_runs += int(bool(noisy))
                    cell = cells[(mode, clients, name)]
                    cell.add(tps, tx, failed, lat, cpu, bool(noisy))
                    cell.client_cpu += children_cpu_seconds() - client_before
                    log(f"[{done}/{total}] round {r + 1} {mode:8} c={clients:<3} {name:9} "
                        f"{tps:9.0f} tps  mean {cell.mean_ms[-1] if lat else 0:6.3f} ms  "
                        f"p99 {cell.p99_ms[-1] if lat else 0:6.3f} ms  cpu {cpu:5.2f} s"
                        + (f"  FAILED {failed}" if failed else "")
                        + (f"  (noise: {','.join(sorted(noisy))})" if noisy else ""))
    return cells, (f"{noisy_runs} of {total} runs had a compiler (rustc, cc1, ld, …) running "
                   "on the machine at some point (sampled each second; marked * in TPS per round)")


# --------------------------------------------------------------------------
# Memory: idle clients


def startup_message(user, database):
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack("!ii", 8 + len(params), 196608) + params


async def idle_client(port, message, ready, hold, sem):
    """Connects, logs in (trust), signals `ready`, then idles until `hold` is set."""
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(message)
        await writer.drain()
        while True:
            header = await reader.readexactly(5)
            tag, length = header[:1], struct.unpack("!i", header[1:])[0]
            body = await reader.readexactly(length - 4)
            if tag == b"E":
                raise RuntimeError(f"login refused: {body!r}")
            if tag == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise RuntimeError("the pooler asked for a password: trust auth expected")
            if tag == b"Z":
                break
    ready()
    await hold.wait()
    writer.write(b"X\0\0\0\4")
    writer.close()


async def hold_idle_clients(port, n, pid):
    """Opens n idle logged-in clients; returns (rss_before, rss_with_n) in KiB."""
    message = startup_message(APP_USER, DB)
    hold = asyncio.Event()
    sem = asyncio.Semaphore(200)  # handshakes in flight, to stay under listen backlogs
    count = 0

    def ready():
        nonlocal count
        count += 1

    before = rss_kib(pid)
    tasks = [asyncio.create_task(idle_client(port, message, ready, hold, sem)) for _ in range(n)]
    started = time.monotonic()
    while count < n:
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            hold.set()
            raise RuntimeError(f"idle client failed after {count} logins: {failed[0].exception()!r}")
        if time.monotonic() - started > 300:
            raise RuntimeError(f"only {count} of {n} idle clients logged in after 300 s")
        await asyncio.sleep(0.1)
    log(f"{n} idle clients logged in after {time.monotonic() - started:.1f} s")
    await asyncio.sleep(2)
    after = rss_kib(pid)
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return before, after


def memory_run(children, pgbouncer_bin, pgpilot_bin, workdir, pg_port, n):
    results = {}
    for name in ("pgbouncer", "pgpilot"):
        start = start_pgbouncer if name == "pgbouncer" else start_pgpilot
        binary = pgbouncer_bin if name == "pgbouncer" else pgpilot_bin
        port, proc = start(children, binary, workdir, pg_port, "memory")
        # One login and query first, so the pool and its server connection exist.
        pgbench_run(port, "simple", 1, 1, None, os.environ.copy())
        time.sleep(1)
        log(f"memory: {n} idle clients against {name}")
        before, after = asyncio.run(hold_idle_clients(port, n, proc.pid))
        results[name] = (before, after)
        children.stop(proc)
    return results


# --------------------------------------------------------------------------
# Report


def git_commit():
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO,
                           stdout=subprocess.PIPE, text=True).stdout.strip()
    return sha + ("+dirty" if dirty else "")


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return f"{os.cpu_count()} CPUs ({model}), {mem_kib / 1024 / 1024:.1f} GiB RAM, {platform.system()} {platform.release()}"


def built(binary):
    when = datetime.datetime.fromtimestamp(os.path.getmtime(binary)).astimezone()
    return f"{binary} built {when.strftime('%Y-%m-%d %H:%M %Z')}"


def version(argv):
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True).stdout.strip().splitlines()[0]
    except OSError:
        return "?"


def fmt(x, spec):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def report(meta, cells, modes, client_counts, targets, memory, args):
    lines = [f"# pgpilot benchmark: {meta['date']}", ""]
    for k in ("commit", "date", "machine", "PostgreSQL", "PgBouncer", "pgbench", "pgpilot binary",
              "pgpilot-plain binary", "run",
              "load before", "load after", "noise"):
        if k in meta:
            lines.append(f"- **{k}**: {meta[k]}")
    if cells:
        lines += table_lines(cells, modes, client_counts, targets)
        lines += ["", "## Bars of issue 3", ""]
        lines += bar_lines(cells, modes, client_counts, targets)
    if memory:
        lines += memory_lines(memory, args.idle_clients)
    return "\n".join(lines) + "\n"


def table_lines(cells, modes, client_counts, targets):
    lines = ["", "## pgbench -S (select-only), transaction pooling, pool size 20", "",
             "| mode | clients | target | median TPS | × PgBouncer | mean ms | p99 ms "
             "| CPU s / 10k tx | TPS per round |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for m in modes:
        for c in client_counts:
            base = cells[(m, c, "pgbouncer")].median_tps() if "pgbouncer" in targets else None
            for t in targets:
                cell = cells[(m, c, t)]
                tps = cell.median_tps()
                ratio = tps / base if base and not math.isnan(base) else float("nan")
                cpu = cell.cpu_per_10k() if t != "direct" else float("nan")
                rounds = ", ".join(f"{x:.0f}" + ("*" if n else "")
                                   for x, n in zip(cell.tps, cell.noisy))
                if cell.errors:
                    rounds += f" ({len(cell.errors)} failed runs: {cell.errors[0][:80]})"
                if cell.failed:
                    rounds += f" ({cell.failed} failed tx)"
                lines.append(f"| {m} | {c} | {t} | {fmt(tps, '.0f')} | {fmt(ratio, '.2f')} | "
                             f"{fmt(cell.median_mean_ms(), '.3f')} | {fmt(cell.median_p99_ms(), '.3f')} | "
                             f"{fmt(cpu, '.3f')} | {rounds} |")
    return lines


def memory_lines(memory, n):
    lines = ["", f"## Memory: {n} idle client connections", "",
             "| pooler | RSS before (MiB) | RSS with clients (MiB) | RSS per idle client (KiB) |",
             "|---|---:|---:|---:|"]
    for name, (before, after) in memory.items():
        per = (after - before) / n
        lines.append(f"| {name} | {before / 1024:.1f} | {after / 1024:.1f} | {per:.2f} |")
    if "pgpilot" in memory:
        b, a = memory["pgpilot"]
        per = (a - b) / n
        verdict = "meets" if per <= 16 else "misses"
        lines += ["", f"- pgpilot {verdict} ≤ 16 KiB RSS per idle client: {per:.2f} KiB"]
    return lines


def bar_lines(cells, modes, client_counts, targets):
    pilots = [t for t in PGPILOTS if t in targets]
    if "pgbouncer" not in targets or not pilots:
        return ["(needs PgBouncer and pgpilot)"]
    out = []
    for name in pilots:
        if len(pilots) > 1:
            out += ([""] if out else []) + [f"`{name}`:", ""]
        out += pilot_bar_lines(cells, modes, client_counts, targets, name)
    return out


def pilot_bar_lines(cells, modes, client_counts, targets, name):
    out = []
    for m in modes:
        for c in client_counts:
            bo, pp = cells[(m, c, "pgbouncer")], cells[(m, c, name)]
            ratio = pp.median_tps() / bo.median_tps() if bo.tps and pp.tps else float("nan")
            if c == 1 and "direct" in targets:
                d = cells[(m, c, "direct")]
                added_pp = pp.median_mean_ms() - d.median_mean_ms()
                added_bo = bo.median_mean_ms() - d.median_mean_ms()
                ok = added_pp <= added_bo
                # Rounds are interleaved, so each round's pair shows the spread.
                rounds = [f"{(p - dd) * 1000:.0f}/{(b - dd) * 1000:.0f}"
                          for p, b, dd in zip(pp.mean_ms, bo.mean_ms, d.mean_ms)]
                # PgBouncer's latency minus pgpilot's, per round (µs; ≥ 0 meets).
                margins = [(b - p) * 1000 for p, b in zip(pp.mean_ms, bo.mean_ms)]
                out.append(f"- {m}, 1 client: added mean latency over direct: {name} "
                           f"{fmt(added_pp * 1000, '.1f')} µs vs PgBouncer {fmt(added_bo * 1000, '.1f')} µs"
                           f" → {'meets' if ok else 'misses'} (per round, {name}/PgBouncer µs: "
                           f"{', '.join(rounds)}{spread_note(margins, 0.0)})")
                continue
            tps_ok = ratio >= 1.0
            p99_ok = pp.median_p99_ms() <= bo.median_p99_ms()
            per_round = [p / b for p, b in zip(pp.tps, bo.tps) if b]
            out.append(f"- {m}, {c} clients: TPS {fmt(ratio, '.2f')}× PgBouncer "
                       f"({'meets' if tps_ok else 'misses'} ≥ 1.0×; per round "
                       f"{', '.join(f'{x:.2f}' for x in per_round)}{spread_note(per_round, 1.0)}); "
                       f"p99 {fmt(pp.median_p99_ms(), '.3f')} "
                       f"vs {fmt(bo.median_p99_ms(), '.3f')} ms ({'meets' if p99_ok else 'misses'})")
    return out


def spread_note(values, bar):
    """Says when the per-round values fall on both sides of `bar`: the
    cell's verdict is then within the spread of one round on this machine
    (rounds are interleaved, so each round's pair ran minutes apart at most)."""
    if len(values) > 1 and min(values) < bar <= max(values):
        return ": rounds on both sides of the bar"
    return ""


# --------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 s per cell, 1 round, 1/10/100 clients, 1,000 idle clients")
    p.add_argument("--no-build", action="store_true",
                   help="use the existing target/pgo/release/pgpilot and target/release/pgpilot")
    p.add_argument("--no-pgo", action="store_true",
                   help="measure only the plain release build (as `pgpilot`); skip bench/pgo.py")
    p.add_argument("--rounds", type=int, help="rounds per cell (default 3; quick 1)")
    p.add_argument("--seconds", type=int, help="pgbench -T per run (default 10; quick 3)")
    p.add_argument("--clients", help="comma-separated client counts (default 1,10,100,500)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated pgbench -M modes")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of "
                   + ",".join(TARGETS))
    p.add_argument("--idle-clients", type=int, help="idle clients in the memory run (default 10000)")
    p.add_argument("--no-memory", action="store_true", help="skip the idle-client memory run")
    p.add_argument("--no-matrix", action="store_true", help="only the memory run")
    p.add_argument("--wait-quiet", type=int, default=0, metavar="S",
                   help="before each run, wait up to S seconds for no compiler to be running")
    p.add_argument("--quiet-budget", type=int, default=1800, metavar="S",
                   help="total seconds --wait-quiet may wait over the whole run (default 1800)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    p.add_argument("--serve", action="store_true",
                   help="set everything up, print the ports, wait for Ctrl-C (for profiling)")
    p.add_argument("--out", help="report path (default bench/results/<date>-<commit>.md)")
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (3 if args.quick else 10)
    args.clients = [int(c) for c in (args.clients or ("1,10,100" if args.quick else "1,10,100,500")).split(",")]
    args.modes = args.modes.split(",")
    args.targets = [t for t in TARGETS if t in args.targets.split(",")]
    if args.no_pgo:
        args.targets = [t for t in args.targets if t != "pgpilot-plain"]
    args.idle_clients = args.idle_clients or (1000 if args.quick else 10_000)
    return args


def main():
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: PgBouncer is started as the postgres OS user")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the poolers
    if not args.no_memory and args.idle_clients + 200 > hard:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.idle_clients} idle clients")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    # Also when started in the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    plain_bin = os.path.join(REPO, "target", "release", "pgpilot")
    pgpilot_bin = plain_bin
    if not args.no_pgo:
        import pgo
        if not args.no_build:
            pgo.build()
        elif not os.path.exists(pgo.BINARY):
            sys.exit(f"{pgo.BINARY} is missing: run bench/pgo.py, or drop --no-build, or add --no-pgo")
        pgpilot_bin = pgo.BINARY
    elif not args.no_build:
        build_pgpilot()
    pgbouncer_bin = build_pgbouncer()
    load = os.getloadavg()
    if load[0] > 0.5:
        log(f"warning: load average {load[0]:.2f}: something else is running; results will be noisy")

    children = Children()
    workdir = tempfile.mkdtemp(prefix="pgpilot-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(workdir, 0o755)
    try:
        max_conn = max(args.clients) + 2 * POOL_SIZE + 60
        pg_port = start_cluster(children, plain_bin, max(300, max_conn))
        pgbench_init(pg_port, args.scale)
        meta = {
            "commit": git_commit(),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(),
            "load before": " ".join(f"{x:.2f}" for x in load),
            "PostgreSQL": version(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
            "PgBouncer": version([pgbouncer_bin, "--version"]),
            "pgbench": version(["pgbench", "--version"]),
            "pgpilot binary": built(pgpilot_bin) + ("" if args.no_pgo else " (PGO, bench/pgo.py)"),
            "run": ("quick" if args.quick else "full") + f": pgbench -T {args.seconds}, "
                   f"{args.rounds} round(s), scale {args.scale}, targets interleaved",
        }
        targets = {}
        if "pgpilot-plain" in args.targets:
            meta["pgpilot-plain binary"] = built(plain_bin) + " (plain `cargo build --release`)"
        if not args.no_matrix or args.serve:
            if "direct" in args.targets:
                targets["direct"] = (pg_port, None, pg_env())
            if "pgbouncer" in args.targets:
                port, proc = start_pgbouncer(children, pgbouncer_bin, workdir, pg_port, "tps")
                targets["pgbouncer"] = (port, proc, os.environ.copy())
            if "pgpilot" in args.targets:
                port, proc = start_pgpilot(children, pgpilot_bin, workdir, pg_port, "tps")
                targets["pgpilot"] = (port, proc, os.environ.copy())
            if "pgpilot-plain" in args.targets:
                port, proc = start_pgpilot(children, plain_bin, workdir, pg_port, "tps-plain")
                targets["pgpilot-plain"] = (port, proc, os.environ.copy())
        if args.serve:
            for name, (port, proc, _) in targets.items():
                print(f"{name}: port {port} pid {proc.pid if proc else '-'}", flush=True)
            print(f"pgbench -S -n -M prepared -c 10 -j 2 -T 10 -h 127.0.0.1 -p PORT -U {APP_USER} {DB}"
                  f"  (direct needs PGPASSWORD={APP_PASSWORD}); Ctrl-C ends", flush=True)
            signal.pause()
            return
        cells = {}
        if not args.no_matrix:
            warm_up(targets, 1 if args.quick else 2)
            cells, meta["noise"] = run_matrix(targets, args.modes, args.clients, args.rounds,
                                              args.seconds, workdir, args.wait_quiet,
                                              args.quiet_budget)
            meta["load after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            for name, (_, proc, _) in list(targets.items()):
                if proc:
                    children.stop(proc)
        memory = None
        if not args.no_memory:
            memory = memory_run(children, pgbouncer_bin, pgpilot_bin, workdir, pg_port,
                                args.idle_clients)
        text = report(meta, cells, args.modes, args.clients, list(targets), memory, args)
        write_report(text, args.out, "-quick" if args.quick else "")
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
