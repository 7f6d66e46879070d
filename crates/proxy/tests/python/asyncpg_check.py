#!/usr/bin/env python3
"""asyncpg through pgpilot (transaction pooling).

asyncpg prepares every statement it runs under names such as
__asyncpg_stmt_1__ and caches them per connection, so this exercises
pgpilot's statement translation from a pool of 10 asyncpg connections that
share fewer server connections. Checks: 200 concurrent fetchval calls, one
prepared statement reused across transactions, executemany, a transaction
rolled back (explicitly and by an exception), and an error inside a
transaction.

Usage: asyncpg_check.py POSTGRES_URL. Prints a summary; exits 1 on any
failed check, 2 on bad usage, 3 when asyncpg is missing.
"""

import asyncio
import sys

try:
    import asyncpg
except ImportError:
    print(
        "the Python module asyncpg is missing: run scripts/install-deps.sh",
        file=sys.stderr,
    )
    sys.exit(3)


class CheckFailed(Exception):
    pass


def check(ok, what):
    if not ok:
        raise CheckFailed(what)


async def concurrent_fetchval(pool):
    values = await asyncio.gather(
        *(pool.fetchval("select $1::int * 2", i) for i in range(200))
    )
    check(values == [i * 2 for i in range(200)], f"fetchval results: {values}")
    return "200 concurrent fetchval"


async def prepared_across_transactions(pool):
    async with pool.acquire() as conn:
        stmt = await conn.prepare("select $1::int + $2::int, $3::text")
        for i in range(100):
            async with conn.transaction():
                row = await stmt.fetchrow(i, 1000, f"t{i}")
                check(tuple(row) == (i + 1000, f"t{i}"), f"transaction {i}: {row}")
            # And outside any transaction, each its own pooled transaction.
            value = await stmt.fetchval(i, 1, "x")
            check(value == i + 1, f"autocommit {i}: {value}")
    return "1 prepared statement x 200 executions"


async def executemany_insert(pool):
    await pool.execute("drop table if exists asyncpg_items")
    await pool.execute("create table asyncpg_items (id int primary key, name text)")
    rows = [(i, f"name-{i}") for i in range(2000)]
    async with pool.acquire() as conn:
        await conn.executemany("insert into asyncpg_items values ($1, $2)", rows)
    count, total = await pool.fetchrow("select count(*), sum(id) from asyncpg_items")
    check(count == 2000 and total == sum(range(2000)), f"count {count}, sum {total}")
    names = await pool.fetch("select name from asyncpg_items where id = any($1::int[]) order by id", [5, 1999])
    check([r["name"] for r in names] == ["name-5", "name-1999"], f"names {names}")
    return "executemany of 2000 rows"


class Abandon(Exception):
    pass


async def rollbacks(pool):
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        await conn.execute("insert into asyncpg_items values (100001, 'explicit')")
        seen = await conn.fetchval("select count(*) from asyncpg_items where id = 100001")
        check(seen == 1, "the insert is visible inside its transaction")
        await tr.rollback()

        try:
            async with conn.transaction():
                await conn.execute("insert into asyncpg_items values (100002, 'raised')")
                raise Abandon()
        except Abandon:
            pass

        try:
            async with conn.transaction():
                await conn.execute("insert into asyncpg_items values (100003, 'dup')")
                await conn.execute("insert into asyncpg_items values (100003, 'dup')")
            check(False, "duplicate key did not raise")
        except asyncpg.UniqueViolationError:
            pass

        left = await conn.fetchval("select count(*) from asyncpg_items where id > 100000")
        check(left == 0, f"{left} rolled-back rows remain")
        check(await conn.fetchval("select 1") == 1, "connection works after rollbacks")
    return "3 rollbacks"


async def copy_and_cursor(pool):
    async with pool.acquire() as conn:
        await conn.execute("create table asyncpg_copy (id int, name text)")
        records = [(i, f"c{i}") for i in range(5000)]
        result = await conn.copy_records_to_table("asyncpg_copy", records=records)
        check(result == "COPY 5000", f"copy_records_to_table: {result}")
        out = await conn.fetch("select id, name from asyncpg_copy order by id")
        check([tuple(r) for r in out] == records, "rows read back after COPY")

        # A cursor fetches in chunks (Execute with a row limit, PortalSuspended).
        seen = []
        async with conn.transaction():
            async for row in conn.cursor("select id from asyncpg_copy order by id", prefetch=64):
                seen.append(row["id"])
        check(seen == list(range(5000)), f"cursor saw {len(seen)} rows")
    return "copy_records_to_table of 5000 rows; cursor with prefetch 64"


async def main(url):
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10, command_timeout=30)
    done = []
    try:
        for step in (
            concurrent_fetchval,
            prepared_across_transactions,
            executemany_insert,
            rollbacks,
            copy_and_cursor,
        ):
            done.append(await step(pool))
    finally:
        await pool.close()
    print(f"asyncpg {asyncpg.__version__}: ok: " + "; ".join(done))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), timeout=60))
    except CheckFailed as e:
        print(f"asyncpg check FAILED: {e}", file=sys.stderr)
        sys.exit(1)
