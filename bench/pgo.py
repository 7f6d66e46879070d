#!/usr/bin/env python3
"""Builds pgpilot with profile-guided optimization (PGO).

    python3 bench/pgo.py        # → target/pgo/release/pgpilot

Three steps: a release build instrumented to count what runs
(`-Cprofile-generate`, in target/pgo-gen), a training workload through it
against a throwaway PostgreSQL, and the release build optimized with the
counts (`-Cprofile-use`, in target/pgo). The compiler then inlines and lays
out the code the workload runs most and keeps the rest out of its way: on
this machine that cut pgpilot's user CPU per transaction by about 40 % at
10 clients (BENCHMARKS.md, "What changed", item 16). The plain
`cargo build --release` stays in target/release, untouched.

The training workload is not the benchmark's matrix alone: pgbench's
TPC-B-like script (BEGIN, three UPDATEs, a SELECT, an INSERT, END: writes,
transactions, routing to the primary; 10 clients) and its select-only
script (10 and 50 clients), each in the simple, extended and prepared
protocols, then select-only again with the result cache on (lookups,
fills, invalidation by the TPC-B writes). What no step runs (COPY,
replicas, the admin API) is compiled as cold code: correct, not tuned.

Needs what bench/compare.py needs, plus `llvm-profdata` from rustup's
`llvm-tools` component (installed when missing). Python 3 standard library.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402

GEN_DIR = os.path.join(c.REPO, "target", "pgo-gen")
USE_DIR = os.path.join(c.REPO, "target", "pgo")
BINARY = os.path.join(USE_DIR, "release", "pgpilot")
PROFILE = os.path.join(USE_DIR, "pgpilot.profdata")
SECONDS = 3


def log(msg):
    print(f"[pgo] {msg}", file=sys.stderr, flush=True)


def llvm_profdata():
    """rustup's llvm-profdata (it must match rustc's LLVM), installed if missing."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], stdout=subprocess.PIPE,
                             text=True, check=True).stdout.strip()
    host = next(line.split()[1] for line in
                subprocess.run(["rustc", "-vV"], stdout=subprocess.PIPE, text=True,
                               check=True).stdout.splitlines() if line.startswith("host:"))
    tool = os.path.join(sysroot, "lib", "rustlib", host, "bin", "llvm-profdata")
    if not os.path.exists(tool):
        log("rustup component add llvm-tools")
        c.run(["rustup", "component", "add", "llvm-tools"])
    return tool


def cargo_build(target_dir, rustflags):
    env = dict(os.environ)
    env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " " + rustflags).strip()
    c.run(["cargo", "build", "--release", "-p", "pgpilot", "--target-dir", target_dir],
          cwd=c.REPO, env=env)
    return os.path.join(target_dir, "release", "pgpilot")


def train(children, binary, workdir, pg_port, label, settings, workloads):
    """Runs `workloads` through a fresh instrumented pgpilot and stops it
    cleanly (the counts are written at exit)."""
    port, proc = c.start_pgpilot(children, binary, workdir, pg_port, label, settings)
    for builtin, modes, client_counts in workloads:
        for mode in modes:
            for clients in client_counts:
                log(f"{label}: pgbench -b {builtin} -M {mode} -c {clients}")
                c.pgbench_run(port, mode, clients, SECONDS, None, os.environ.copy(),
                              builtin=builtin)
    children.stop(proc)
    if proc.returncode not in (0, None):
        raise RuntimeError(f"instrumented pgpilot exited with {proc.returncode}: no profile")


def collect(profile_dir):
    """Trains the instrumented binary; returns the raw profile files. The
    test kit's cluster runs from the plain build (built first by `build`),
    so only the proxy is counted."""
    plain = os.path.join(c.REPO, "target", "release", "pgpilot")
    instrumented = cargo_build(GEN_DIR, f"-Cprofile-generate={profile_dir}")
    children = c.Children()
    workdir = tempfile.mkdtemp(prefix="pgpilot-pgo-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(workdir, 0o755)
    try:
        pg_port = c.start_cluster(children, plain, 300)
        c.pgbench_init(pg_port, 2)
        os.environ["LLVM_PROFILE_FILE"] = os.path.join(profile_dir, "pgpilot-%p-%m.profraw")
        modes = c.MODES
        train(children, instrumented, workdir, pg_port, "pooling", None, [
            # TPC-B-like: writes in transactions. At most as many clients as
            # server connections: pgbench -M prepared prepares a client's
            # statements synchronously inside a transaction of its
            # thread's other clients, and with more clients than servers
            # that waits on itself (PgBouncer stalls the same way).
            ("tpcb-like", modes, (10,)),
            ("select-only", modes, (10, 50)),
        ])
        train(children, instrumented, workdir, pg_port, "cache", {"cache": ["enabled = true"]}, [
            ("select-only", modes, (10,)),
            ("tpcb-like", ("prepared",), (10,)),  # writes that invalidate cached results
            ("select-only", ("prepared",), (10,)),
        ])
    finally:
        os.environ.pop("LLVM_PROFILE_FILE", None)
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    files = glob.glob(os.path.join(profile_dir, "pgpilot-*.profraw"))
    if not files:
        raise RuntimeError("the instrumented pgpilot wrote no profile")
    return files


def build():
    """The whole PGO build; returns the optimized binary's path."""
    tool = llvm_profdata()
    c.build_pgpilot()  # the plain build: the test kit's cluster runs from it
    profile_dir = os.path.join(GEN_DIR, "profiles")
    shutil.rmtree(profile_dir, ignore_errors=True)
    os.makedirs(profile_dir)
    files = collect(profile_dir)
    os.makedirs(USE_DIR, exist_ok=True)
    c.run([tool, "merge", "-o", PROFILE, *files])
    log(f"profile: {len(files)} file(s) merged into {PROFILE}")
    binary = cargo_build(USE_DIR, f"-Cprofile-use={PROFILE}")
    log(f"built {binary}")
    return binary


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (the test kit starts PostgreSQL as the postgres OS user)")
    build()


if __name__ == "__main__":
    main()
