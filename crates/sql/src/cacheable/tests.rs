use super::refusal as why;
use super::*;
use crate::classify::{classify, Classification};

fn c(sql: &str) -> Classification {
    classify(&pg_query::parse(sql, 0).unwrap())
}

fn facts(sql: &str) -> CacheFacts {
    c(sql).cache
}

fn t(name: &str) -> TableRef {
    match name.split_once('.') {
        Some((schema, name)) => TableRef {
            schema: Some(schema.to_owned()),
            name: name.to_owned(),
        },
        None => TableRef {
            schema: None,
            name: name.to_owned(),
        },
    }
}

fn tables(names: &[&str]) -> Vec<TableRef> {
    names.iter().map(|n| t(n)).collect()
}

/// Reads come in walk order, not text order.
fn sorted(mut tables: Vec<TableRef>) -> Vec<TableRef> {
    tables.sort_by_key(|t| t.to_string());
    tables
}

/// One rule per row: a refused text, and an allowed variant with its reads.
#[test]
fn eligibility() {
    let rules: &[(&str, &str, &str, &[&str])] = &[
        (
            why::MULTIPLE_STATEMENTS,
            "SELECT 1 FROM t; SELECT 2 FROM t",
            "SELECT 1 FROM t;",
            &["t"],
        ),
        (why::NOT_SELECT, "SHOW search_path", "VALUES (1), (2)", &[]),
        (
            why::NOT_SELECT,
            "EXPLAIN SELECT * FROM t",
            "TABLE t",
            &["t"],
        ),
        (
            why::NOT_SELECT,
            "INSERT INTO t VALUES (1)",
            "SELECT * FROM t WHERE id = $1",
            &["t"],
        ),
        (
            why::SELECT_INTO,
            "SELECT * INTO t2 FROM t",
            "SELECT * FROM t",
            &["t"],
        ),
        (
            why::WRITING_CTE,
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "WITH x AS (SELECT 1) SELECT * FROM x JOIN t ON true",
            &["t"],
        ),
        (
            why::ROW_LOCKS,
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t ORDER BY id LIMIT 1",
            &["t"],
        ),
        (
            why::ROW_LOCKS,
            "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR KEY SHARE SKIP LOCKED)",
            "SELECT * FROM t WHERE id IN (SELECT id FROM u)",
            &["t", "u"],
        ),
        (
            why::ROW_LOCKS,
            "SELECT * FROM (VALUES ((SELECT 1 FROM u FOR NO KEY UPDATE))) v",
            "SELECT * FROM (VALUES ((SELECT 1 FROM u))) v",
            &["u"],
        ),
        (
            why::VALUE_FUNCTION,
            "SELECT CURRENT_DATE",
            "SELECT now()",
            &[],
        ),
        (
            why::VALUE_FUNCTION,
            "SELECT * FROM t WHERE owner = CURRENT_USER",
            "SELECT * FROM t WHERE owner = current_setting('app.user')",
            &["t"],
        ),
        (
            why::VALUE_FUNCTION,
            "SELECT * FROM t LIMIT (SELECT 1 WHERE current_schema = 'x')",
            "SELECT * FROM t LIMIT 5",
            &["t"],
        ),
        (
            why::CURRENT_TIME_LITERAL,
            "SELECT 'now'::timestamptz",
            "SELECT '2024-01-01'::timestamptz",
            &[],
        ),
        (
            why::CURRENT_TIME_LITERAL,
            "SELECT * FROM t WHERE d > timestamp ' Today '",
            "SELECT * FROM t WHERE d > timestamp 'epoch'",
            &["t"],
        ),
        (
            why::CURRENT_TIME_LITERAL,
            "SELECT * FROM t WHERE d > 'tomorrow'",
            "SELECT * FROM t WHERE d > 'tomorrow'::text",
            &["t"],
        ),
        (
            why::CURRENT_TIME_LITERAL,
            "SELECT CAST('yesterday'::text AS date)",
            "SELECT CAST('2024-01-01'::text AS date)",
            &[],
        ),
        (
            why::CURRENT_TIME_LITERAL,
            "SELECT ARRAY['now']::date[]",
            "SELECT ARRAY['snow']::date[]",
            &[],
        ),
        (
            why::TABLESAMPLE,
            "SELECT * FROM t TABLESAMPLE SYSTEM (10)",
            "SELECT * FROM t",
            &["t"],
        ),
        (
            why::CATALOG_LOOKUP_CAST,
            "SELECT 't'::regclass",
            "SELECT 't'::text",
            &[],
        ),
        (
            why::SYSTEM_CATALOG,
            "SELECT * FROM pg_class",
            "SELECT * FROM pgbench_accounts",
            &["pgbench_accounts"],
        ),
        (
            why::SYSTEM_CATALOG,
            "SELECT * FROM pg_catalog.pg_class",
            "SELECT * FROM public.pg_stuff",
            &["public.pg_stuff"],
        ),
        (
            why::SYSTEM_CATALOG,
            "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM information_schema.tables)",
            "SELECT * FROM s.t",
            &["s.t"],
        ),
        (
            why::TEMP_SCHEMA,
            "SELECT * FROM pg_temp.scratch",
            "SELECT * FROM temp.scratch",
            &["temp.scratch"],
        ),
        (
            why::TEMP_SCHEMA,
            "SELECT * FROM pg_temp_3.scratch",
            "SELECT * FROM scratch",
            &["scratch"],
        ),
        (
            why::CTE_SHADOWS_TABLE,
            "WITH t AS (SELECT * FROM t) SELECT * FROM t",
            "WITH x AS (SELECT * FROM t) SELECT * FROM x",
            &["t"],
        ),
        (
            why::CTE_SHADOWS_TABLE,
            "WITH t AS (SELECT 1) SELECT * FROM s.t, t",
            "WITH x AS (SELECT 1) SELECT * FROM s.t, x",
            &["s.t"],
        ),
    ];
    for (reason, refused, allowed, reads) in rules {
        assert_eq!(facts(refused).refusal, Some(*reason), "{refused}");
        let ok = facts(allowed);
        assert_eq!(ok.refusal, None, "{allowed}");
        assert_eq!(sorted(ok.reads), sorted(tables(reads)), "{allowed}");
    }
}

#[test]
fn refusals_are_distinct() {
    let all = [
        why::UNPARSEABLE,
        why::NOT_ANALYZED,
        why::NO_STATEMENT,
        why::MULTIPLE_STATEMENTS,
        why::NOT_SELECT,
        why::SELECT_INTO,
        why::WRITING_CTE,
        why::ROW_LOCKS,
        why::VALUE_FUNCTION,
        why::CURRENT_TIME_LITERAL,
        why::TABLESAMPLE,
        why::CATALOG_LOOKUP_CAST,
        why::SYSTEM_CATALOG,
        why::TEMP_SCHEMA,
        why::CTE_SHADOWS_TABLE,
        why::UNSUPPORTED_SYNTAX,
    ];
    for (i, a) in all.iter().enumerate() {
        assert!(!all[i + 1..].contains(a), "{a}");
    }
    assert_eq!(facts("").refusal, Some(why::NO_STATEMENT));
    assert_eq!(CacheFacts::default().refusal, Some(why::NOT_ANALYZED));
    assert!(CacheFacts::default().flush_all);
}

#[test]
fn reads_cover_every_clause() {
    let cases: &[(&str, &[&str])] = &[
        (
            "SELECT a FROM t1 JOIN s.t2 USING (id) LEFT JOIN (SELECT * FROM t3) x ON true \
             WHERE EXISTS (SELECT 1 FROM t4) AND a IN (SELECT a FROM t5) \
             GROUP BY a HAVING count(*) > (SELECT count(*) FROM t6) \
             ORDER BY (SELECT max(b) FROM t7) LIMIT (SELECT 1 FROM t8) OFFSET (SELECT 0 FROM t9)",
            &["t1", "s.t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"],
        ),
        (
            "SELECT ARRAY[(SELECT 1 FROM a)], count(*) FILTER (WHERE x IN (SELECT x FROM b)), \
             sum(y) OVER (PARTITION BY (SELECT 1 FROM c)), f(n => (SELECT 1 FROM d)), \
             (SELECT row(1) FROM e).f1, coalesce((SELECT 1 FROM f), 0) COLLATE \"C\"",
            &["a", "b", "c", "d", "e", "f"],
        ),
        (
            "VALUES ((SELECT 1 FROM a)) UNION ALL SELECT 1 FROM b EXCEPT SELECT 1 FROM c",
            &["a", "b", "c"],
        ),
        (
            "SELECT * FROM generate_series(1, (SELECT max(n) FROM a)) g, \
             LATERAL (SELECT * FROM b WHERE b.n = g) l, ROWS FROM (f((SELECT 1 FROM c)))",
            &["a", "b", "c"],
        ),
        (
            "SELECT JSON_OBJECT('k': (SELECT 1 FROM a)), JSON_ARRAY(SELECT x FROM b), \
             JSON_VALUE(j, '$.x' RETURNING int DEFAULT (SELECT 1 FROM c) ON EMPTY) FROM d",
            &["a", "b", "c", "d"],
        ),
        (
            "SELECT * FROM JSON_TABLE((SELECT j FROM a), '$[*]' COLUMNS (x int PATH '$.x')) jt",
            &["a"],
        ),
        (
            "SELECT * FROM XMLTABLE('/r' PASSING (SELECT x FROM a) COLUMNS c int PATH 'c')",
            &["a"],
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) \
             SELECT * FROM r, t",
            &["t"],
        ),
        (
            "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b, \
             (WITH c AS (SELECT 1) SELECT * FROM c) s, t",
            &["t"],
        ),
        (
            "SELECT CASE WHEN x THEN (SELECT 1 FROM a) ELSE 2 END FROM \"T\"",
            &["a", "T"],
        ),
        ("SELECT * FROM ONLY t", &["t"]),
        ("SELECT * FROM db.s.t", &["s.t"]),
    ];
    for (sql, reads) in cases {
        let f = facts(sql);
        assert_eq!(sorted(f.reads), sorted(tables(reads)), "{sql}");
        assert_eq!(f.refusal, None, "{sql}");
    }
}

/// Valid syntax must not fall into "unsupported": each of these is cacheable
/// by text.
#[test]
fn rich_syntax_is_understood() {
    for sql in [
        "SELECT JSON('{\"a\": 1}' FORMAT JSON ENCODING UTF8), JSON_SCALAR(1), JSON_SERIALIZE('1' RETURNING bytea)",
        "SELECT JSON_OBJECT('a': 1, 'b': JSON_OBJECT('c': 2 RETURNING jsonb) ABSENT ON NULL WITH UNIQUE)",
        "SELECT JSON_ARRAY(SELECT i FROM (VALUES (1)) v(i) ORDER BY i), JSON_ARRAY(1, 2 RETURNING jsonb)",
        "SELECT JSON_ARRAYAGG(b ORDER BY b RETURNING jsonb) FILTER (WHERE b > 2), \
         JSON_OBJECTAGG(k: v WITH UNIQUE KEYS) OVER (ORDER BY k) FROM t",
        "SELECT js IS JSON OBJECT WITH UNIQUE KEYS, JSON_EXISTS(js, '$.a' PASSING 1 AS x), \
         JSON_VALUE(js, '$.a' RETURNING int DEFAULT 0 ON EMPTY ERROR ON ERROR), \
         JSON_QUERY(js, '$' WITH WRAPPER OMIT QUOTES) FROM t",
        "SELECT * FROM JSON_TABLE(jsonb '[1]', '$[*]' AS p PASSING 1 AS x COLUMNS (id FOR ORDINALITY, \
         a int PATH '$' DEFAULT 1 ON EMPTY, NESTED PATH '$.b[*]' COLUMNS (b text PATH '$'))) jt",
        "SELECT xmlelement(name foo, xmlattributes('x' AS bar), 'c'), xmlforest(a, b), \
         xmlserialize(content x AS text), x IS DOCUMENT, xmlpi(name php, 'x'), xmlroot(x, version '1.0') FROM t",
        "SELECT * FROM XMLTABLE(XMLNAMESPACES('http://x' AS x), '/r' PASSING d COLUMNS id int PATH '@id', \
         n FOR ORDINALITY, v text DEFAULT 'x') xt",
        "SELECT a, GROUPING(a, b), sum(c) FROM t GROUP BY DISTINCT GROUPING SETS ((a), ()), ROLLUP (a), CUBE (b)",
        "SELECT DISTINCT ON (a) a FROM t ORDER BY a, b DESC NULLS LAST, c USING <",
        "SELECT sum(x) OVER w, rank() OVER (w ORDER BY y ROWS BETWEEN 1 PRECEDING AND CURRENT ROW \
         EXCLUDE TIES) FROM t WINDOW w AS (PARTITION BY z)",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x), string_agg(DISTINCT y, ',' ORDER BY y) FROM t",
        "SELECT a[1], a[1:2], a[:2], (r).f, (r).*, t.*, ROW(1, 2), (1, 2) IS DISTINCT FROM (1, 3), \
         x IS NOT NULL, y IS TRUE FROM t",
        "SELECT CASE a WHEN 1 THEN 'x' ELSE 'y' END, NULLIF(a, 0), GREATEST(a, b), COALESCE(a, b) FROM t",
        "SELECT a BETWEEN SYMMETRIC 2 AND 1, a LIKE 'x%' ESCAPE '!', a SIMILAR TO 'x', a = ANY (ARRAY[1]), \
         a = ALL (SELECT b FROM u) FROM t",
        "SELECT EXTRACT(year FROM d), SUBSTRING(s FROM 1 FOR 2), TRIM(BOTH 'x' FROM s), s COLLATE \"C\", \
         d AT TIME ZONE 'UTC', s IS NFC NORMALIZED, f(a := 1, b => 2), f(VARIADIC ARRAY[1]) FROM t",
        "SELECT CAST(a AS int), a::numeric(10, 2), interval '1 day', b'101', x'1F', E'\\n', U&'\\0061', $1::int FROM t",
        "SELECT * FROM t1 NATURAL JOIN t2 CROSS JOIN t3 FULL JOIN t4 USING (id) AS j \
         RIGHT JOIN LATERAL (SELECT * FROM t5) s ON true",
        "SELECT * FROM unnest(ARRAY[1]) WITH ORDINALITY u(x, n), ROWS FROM (f(), g() AS (a int)) r",
        "SELECT 1 UNION SELECT 2 INTERSECT SELECT 3 EXCEPT ALL (SELECT 4 ORDER BY 1 LIMIT 1)",
        "SELECT * FROM t ORDER BY a OFFSET 1 ROWS FETCH FIRST 5 ROWS WITH TIES",
        "WITH RECURSIVE r(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM r WHERE id < 3) \
         SEARCH DEPTH FIRST BY id SET ord CYCLE id SET is_cycle USING path SELECT * FROM r",
        "WITH x AS MATERIALIZED (SELECT 1) SELECT ARRAY(SELECT 1), EXISTS (SELECT 1 FROM x)",
        "SELECT MERGE_ACTION() FROM t",
        "SELECT * FROM t WHERE (a, b) IN (SELECT a, b FROM u) AND (a, b) > (1, 2) AND NOT (a = 1 OR b = 2)",
    ] {
        assert_eq!(facts(sql).refusal, None, "{sql}");
    }
    let deep = format!("SELECT {}1{}", "(SELECT ".repeat(10), ")".repeat(10));
    assert_eq!(facts(&deep).refusal, None);
}

#[test]
fn cte_names_are_scoped() {
    // A CTE is visible in its WITH's query and later siblings only; a
    // non-recursive CTE does not see itself.
    let cases: &[(&str, &[&str])] = &[
        (
            "SELECT * FROM (WITH c AS (SELECT 1) SELECT * FROM c) s, c",
            &["c"],
        ),
        (
            "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
            &["b"],
        ),
        ("WITH t AS (SELECT * FROM t) SELECT * FROM t", &["t"]),
        ("WITH RECURSIVE t AS (SELECT * FROM t) SELECT * FROM t", &[]),
    ];
    for (sql, reads) in cases {
        assert_eq!(facts(sql).reads, tables(reads), "{sql}");
    }
}

#[test]
fn functions_are_listed_wherever_called() {
    let k = c(
        "SELECT * FROM f1() x(a int), (VALUES (f2())) v, ROWS FROM (f3(), f4()) r \
         WHERE a = ANY(ARRAY[f5()]) LIMIT f6() ",
    );
    for f in ["f1", "f2", "f3", "f4", "f5", "f6"] {
        assert!(k.functions.iter().any(|g| g == f), "{f}: {:?}", k.functions);
    }
    assert_eq!(k.cache.refusal, None);
    let k = c("SELECT now()");
    assert_eq!(k.functions, ["now"]);
    assert_eq!(
        k.cache.refusal, None,
        "left to the run-time volatility check"
    );
}

fn effects(sql: &str) -> (Vec<TableRef>, bool) {
    let f = facts(sql);
    (f.writes, f.flush_all)
}

#[test]
fn writes() {
    let cases: &[(&str, &[&str])] = &[
        ("INSERT INTO t VALUES (1)", &["t"]),
        (
            "INSERT INTO s.t SELECT * FROM u ON CONFLICT (id) DO UPDATE SET x = 1",
            &["s.t"],
        ),
        ("UPDATE t SET x = 1 FROM u WHERE t.id = u.id", &["t"]),
        ("DELETE FROM t USING u WHERE t.id = u.id", &["t"]),
        (
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
            &["t"],
        ),
        (
            "WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
            &["a", "b"],
        ),
        (
            "WITH d AS (UPDATE a SET x = 1 RETURNING *) SELECT * FROM d",
            &["a"],
        ),
        ("SELECT * INTO t2 FROM t", &["t2"]),
        ("CREATE TABLE t2 AS SELECT * FROM t", &["t2"]),
        ("TRUNCATE a, b", &["a", "b"]),
        ("COPY t FROM STDIN", &["t"]),
        ("COPY (DELETE FROM t RETURNING *) TO STDOUT", &["t"]),
        ("EXPLAIN ANALYZE UPDATE t SET x = 1", &["t"]),
        ("EXPLAIN (ANALYZE false) DELETE FROM t", &["t"]),
        ("DROP TABLE a", &["a"]),
        ("DROP TABLE IF EXISTS s.a, b CASCADE", &["s.a", "b"]),
        ("DROP SEQUENCE q", &["q"]),
        ("ALTER TABLE t ADD COLUMN c int DEFAULT 1", &["t"]),
        (
            "ALTER TABLE p ATTACH PARTITION c FOR VALUES IN (1)",
            &["p", "c"],
        ),
        ("ALTER TABLE p DETACH PARTITION c", &["p", "c"]),
        ("ALTER TABLE c INHERIT p", &["c", "p"]),
        ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", &["t"]),
        ("ALTER TABLE t RENAME TO u", &["t", "u"]),
        ("ALTER TABLE s.t RENAME COLUMN a TO b", &["s.t"]),
        ("ALTER TABLE t SET SCHEMA s", &["t", "s.t"]),
        ("CREATE INDEX i ON t (a)", &["t"]),
        (
            "CREATE TRIGGER g AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
            &["t"],
        ),
        ("DROP TRIGGER g ON s.t", &["s.t"]),
        ("CREATE POLICY p ON t USING (true)", &["t"]),
        ("ALTER POLICY p ON t USING (false)", &["t"]),
        ("DROP POLICY p ON t", &["t"]),
        ("CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", &["t"]),
        ("CLUSTER t USING i", &["t"]),
        ("CREATE TABLE n (a int)", &["n"]),
        ("ALTER SEQUENCE q RESTART", &["q"]),
    ];
    for (sql, writes) in cases {
        assert_eq!(effects(sql), (tables(writes), false), "{sql}");
    }
}

#[test]
fn flush_all() {
    for sql in [
        "ALTER ROLE app SET search_path = x",
        "ALTER USER app WITH PASSWORD 'x'",
        "GRANT SELECT ON t TO r",
        "REVOKE SELECT ON t FROM r",
        "GRANT r TO app",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r",
        "DROP DATABASE d",
        "ALTER DATABASE d SET x = 1",
        "DROP SCHEMA s CASCADE",
        "ALTER SCHEMA s RENAME TO s2",
        "DROP OWNED BY r",
        "REASSIGN OWNED BY r TO q",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "ALTER FUNCTION f() STABLE",
        "DROP FUNCTION f()",
        "CREATE VIEW v AS SELECT * FROM t",
        "CREATE OR REPLACE VIEW v AS SELECT * FROM t",
        "ALTER VIEW v RENAME TO w",
        "ALTER VIEW v RENAME COLUMN a TO b",
        "DROP VIEW v",
        "CREATE MATERIALIZED VIEW m AS SELECT * FROM t",
        "REFRESH MATERIALIZED VIEW m",
        "DROP MATERIALIZED VIEW m",
        "CREATE EXTENSION pgcrypto",
        "ALTER EXTENSION pgcrypto UPDATE",
        "DROP EXTENSION pgcrypto",
        "DO $$ BEGIN END $$",
        "CALL p()",
        "ALTER TYPE e ADD VALUE 'x'",
        "ALTER DOMAIN d SET DEFAULT 1",
        "SECURITY LABEL ON TABLE t IS 'x'",
        "IMPORT FOREIGN SCHEMA s FROM SERVER f INTO l",
        "ALTER SYSTEM SET work_mem = '1MB'",
        "EXECUTE p(1)",
        "DROP INDEX i",
        "ALTER INDEX i RENAME TO j",
        "CLUSTER",
        "LOAD 'x'",
        "ALTER TABLE ALL IN TABLESPACE a SET TABLESPACE b",
    ] {
        assert!(effects(sql).1, "{sql}");
    }
    assert!(CacheFacts::unparseable().flush_all);
}

#[test]
fn neither_writes_nor_flushes() {
    for sql in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT a",
        "SET x = 1",
        "RESET ALL",
        "SHOW search_path",
        "DISCARD ALL",
        "PREPARE p AS DELETE FROM t",
        "DEALLOCATE p",
        "LISTEN c",
        "NOTIFY c",
        "UNLISTEN *",
        "EXPLAIN DELETE FROM t",
        "SELECT * FROM t",
        "VALUES (1)",
        "DECLARE c CURSOR FOR SELECT * FROM t",
        "FETCH 10 FROM c",
        "CLOSE c",
        "LOCK TABLE t",
        "VACUUM FULL t",
        "ANALYZE t",
        "CHECKPOINT",
        "REINDEX TABLE t",
        "COMMENT ON TABLE t IS 'x'",
        "SET CONSTRAINTS ALL DEFERRED",
    ] {
        assert_eq!(effects(sql), (vec![], false), "{sql}");
    }
}

#[test]
fn ddl_marks_catalog_changes() {
    for sql in [
        "CREATE TABLE n (a int)",
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
        "ALTER FUNCTION f() IMMUTABLE",
        "DROP VIEW v",
        "GRANT SELECT ON t TO r",
        "COMMENT ON TABLE t IS 'x'",
        "SELECT * INTO t2 FROM t",
        "CREATE TABLE t2 AS SELECT 1",
        "EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1",
        "DO $$ BEGIN END $$",
        "CALL p()",
        "SELECT 1; CREATE INDEX i ON t (a)",
    ] {
        assert!(facts(sql).ddl, "{sql}");
    }
    for sql in [
        "SELECT * FROM t",
        "INSERT INTO t VALUES (1)",
        "WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
        "TRUNCATE t",
        "COPY t FROM STDIN",
        "EXPLAIN CREATE TABLE t2 AS SELECT 1",
        "BEGIN",
        "SET search_path = a",
        "VACUUM ANALYZE t",
        "LOCK TABLE t",
        "EXECUTE p",
    ] {
        assert!(!facts(sql).ddl, "{sql}");
    }
    assert!(CacheFacts::unparseable().ddl);
}

#[test]
fn multi_statement_effects_add_up() {
    let f = facts("UPDATE a SET x = 1; DELETE FROM b; GRANT SELECT ON c TO r");
    assert_eq!(f.writes, tables(&["a", "b"]));
    assert!(f.flush_all);
    assert_eq!(f.refusal, Some(why::MULTIPLE_STATEMENTS));
}

/// `SELECT a FROM t WHERE <clause>` as a parsed statement.
fn select_with_where(clause: pg_query::protobuf::Node) -> NodeEnum {
    let parsed = pg_query::parse("SELECT a FROM t WHERE a = 1", 0).unwrap();
    let mut stmt = parsed.protobuf.stmts[0]
        .stmt
        .as_ref()
        .and_then(|s| s.node.clone())
        .unwrap();
    match &mut stmt {
        NodeEnum::SelectStmt(s) => s.where_clause = Some(Box::new(clause)),
        other => panic!("not a SELECT: {other:?}"),
    }
    stmt
}

fn refusal_of_one(stmt: &NodeEnum) -> Option<&'static str> {
    refusal_of(&[(stmt, crate::walk::statement(stmt))])
}

/// Syntax the walk does not know (a node kind it has no rule for, or a
/// tree deeper than it follows) refuses caching instead of being skipped:
/// a skipped subtree could hide a table read.
#[test]
fn syntax_the_walk_does_not_cover_is_refused() {
    use pg_query::protobuf::{List, Node};
    let column = || Node {
        node: Some(NodeEnum::ColumnRef(Default::default())),
    };
    assert_eq!(refusal_of_one(&select_with_where(column())), None);

    let unknown = Node {
        node: Some(NodeEnum::CreateStmt(Default::default())),
    };
    assert_eq!(
        refusal_of_one(&select_with_where(unknown)),
        Some(why::UNSUPPORTED_SYNTAX)
    );

    let nested = |depth: usize| {
        (0..depth).fold(column(), |inner, _| Node {
            node: Some(NodeEnum::List(List { items: vec![inner] })),
        })
    };
    assert_eq!(refusal_of_one(&select_with_where(nested(100))), None);
    assert_eq!(
        refusal_of_one(&select_with_where(nested(300))),
        Some(why::UNSUPPORTED_SYNTAX)
    );
}
