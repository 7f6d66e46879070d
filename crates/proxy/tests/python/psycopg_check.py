#!/usr/bin/env python3
"""psycopg 3 through pgpilot (transaction pooling).

With prepare_threshold=0 psycopg prepares every query as a named server-side
statement (_pg3_0, _pg3_1, ...) on its first execution, so this exercises
pgpilot's statement translation from several threads, each with its own
connection. Also checks transactions, pipeline mode, and COPY in both
directions (text rows and binary), plus a COPY that fails on a bad row.

Usage: psycopg_check.py POSTGRES_URL. Prints a summary; exits 1 on any
failed check, 2 on bad usage, 3 when psycopg is missing.
"""

import sys
import threading

try:
    import psycopg
    from psycopg import errors
except ImportError:
    print(
        "the Python module psycopg is missing: run scripts/install-deps.sh",
        file=sys.stderr,
    )
    sys.exit(3)

THREADS = 6
QUERIES = 200


class CheckFailed(Exception):
    pass


def check(ok, what):
    if not ok:
        raise CheckFailed(what)


def connect(url):
    return psycopg.connect(url, prepare_threshold=0, autocommit=True, connect_timeout=10)


def worker(url, n, failures):
    try:
        with connect(url) as conn:
            for i in range(QUERIES):
                if i % 5 == 0:
                    with conn.transaction():
                        row = conn.execute("select %s::int * 3, %s::text", (i, f"w{n}")).fetchone()
                else:
                    row = conn.execute("select %s::int * 3, %s::text", (i, f"w{n}")).fetchone()
                check(row == (i * 3, f"w{n}"), f"thread {n}, query {i}: {row}")
    except Exception as e:  # reported by the main thread
        failures.append(f"thread {n}: {e!r}")


def threads(url):
    failures = []
    ts = [threading.Thread(target=worker, args=(url, n, failures)) for n in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    check(not any(t.is_alive() for t in ts), "a worker thread hung")
    check(not failures, "; ".join(failures))
    return f"{THREADS} threads x {QUERIES} prepared queries"


def pipeline(url):
    with connect(url) as conn:
        with conn.pipeline():
            curs = [conn.execute("select %s::int + 1", (i,)) for i in range(50)]
        values = [c.fetchone()[0] for c in curs]
        check(values == [i + 1 for i in range(50)], f"pipeline results {values}")
    return "pipeline of 50"


def copy_both_ways(url):
    rows = [(i, f"name\t{i}", None if i % 10 == 0 else i * 0.5) for i in range(20000)]
    with connect(url) as conn:
        conn.execute("drop table if exists psycopg_items")
        conn.execute("create table psycopg_items (id int primary key, name text, score float8)")
        with conn.cursor() as cur:
            with cur.copy("copy psycopg_items (id, name, score) from stdin") as copy:
                for row in rows:
                    copy.write_row(row)
            n = conn.execute("select count(*) from psycopg_items").fetchone()[0]
            check(n == len(rows), f"copied in {n} rows")

            out = []
            with cur.copy("copy (select id, name, score from psycopg_items order by id) to stdout") as copy:
                copy.set_types(["int4", "text", "float8"])
                for row in copy.rows():
                    out.append(row)
            check(out == rows, "COPY TO returns what COPY FROM took")

            data = bytearray()
            with cur.copy("copy psycopg_items to stdout (format binary)") as copy:
                for chunk in copy:
                    data += chunk
            conn.execute("create table psycopg_items2 (like psycopg_items)")
            with cur.copy("copy psycopg_items2 from stdin (format binary)") as copy:
                copy.write(bytes(data))
            diff = conn.execute(
                "select count(*) from (select * from psycopg_items except all select * from psycopg_items2) d"
            ).fetchone()[0]
            check(diff == 0, f"binary copy lost {diff} rows")
    return f"COPY {len(rows)} rows in, out, and binary"


def failed_copy(url):
    with connect(url) as conn:
        try:
            with conn.cursor() as cur:
                with cur.copy("copy psycopg_items (id, name) from stdin") as copy:
                    copy.write_row((900001, "good"))
                    copy.write("not-a-number\tbad\n")
            check(False, "bad row did not fail the COPY")
        except errors.InvalidTextRepresentation:
            pass
        n = conn.execute("select count(*) from psycopg_items where id >= 900000").fetchone()[0]
        check(n == 0, f"{n} rows of a failed COPY remain")
        check(conn.execute("select 41 + 1").fetchone()[0] == 42, "connection works after failed COPY")
    return "failed COPY"


def main(url):
    done = []
    for step in (threads, pipeline, copy_both_ways, failed_copy):
        done.append(step(url))
    print(f"psycopg {psycopg.__version__}: ok: " + "; ".join(done))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1])
    except CheckFailed as e:
        print(f"psycopg check FAILED: {e}", file=sys.stderr)
        sys.exit(1)
