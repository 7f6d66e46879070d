//! Lints on the parse tree of a statement as sent (literals included): each
//! with a stable rule id, a severity, what is wrong and a concrete fix.
//!
//! [`crate::Insight::shape`] runs [`lint`] once per new shape (lexer key)
//! and files the results as findings of kind `lint`. Rules on queries live
//! in `query.rs`, rules on schema changes in `ddl.rs`. Statements that touch
//! only the system catalogs (drivers' and psql's metadata queries) are not
//! linted: the application cannot change them.
//!
//! The proxy lints the first text it sees of each lexer key (literal-blind),
//! so a rule that reads a literal value (`large_offset`) judges that first
//! text: `OFFSET 10` seen first hides a later `OFFSET 5000` of the same
//! shape. `IN` lists of different lengths have different keys and are each
//! linted.
//!
//! Rule ids are a contract (they appear in `GET /api/findings`): see
//! [`RULES`].

mod ddl;
mod query;

use pg_query::protobuf::{self, a_const, Node};
use pg_query::NodeEnum;
use serde::Serialize;

/// Every rule id this module can return.
pub const RULES: &[&str] = &[
    query::SELECT_STAR,
    query::LARGE_IN_LIST,
    query::ORDER_WITHOUT_LIMIT,
    query::LEADING_WILDCARD_LIKE,
    query::ORDER_BY_RANDOM,
    query::LARGE_OFFSET,
    query::NOT_IN_SUBQUERY,
    query::UPDATE_WITHOUT_WHERE,
    query::DELETE_WITHOUT_WHERE,
    query::FUNCTION_ON_COLUMN_IN_WHERE,
    ddl::DDL_WITHOUT_CONCURRENTLY,
    ddl::DDL_WITHOUT_LOCK_TIMEOUT,
];

/// How much a lint matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Costs something at scale; often fine.
    Info,
    /// Likely slow or risky as data grows.
    Warning,
    /// Can lose data or block production traffic.
    Critical,
}

/// One problem found in a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lint {
    /// Stable id, one of [`RULES`].
    pub rule: &'static str,
    pub severity: Severity,
    /// What is wrong, naming the table or column when known.
    pub message: String,
    /// The concrete rewrite or command.
    pub fix: String,
}

/// What the session knows beyond the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LintContext {
    /// The session already ran `SET lock_timeout` (tracked by the proxy's
    /// session state), so DDL needs no `SET` in its own text.
    pub lock_timeout_set: bool,
}

/// Lints `sql`; unparseable text yields none (the server rejects it).
pub fn lint(sql: &str) -> Vec<Lint> {
    lint_with(sql, LintContext::default())
}

/// [`lint`] with session knowledge.
pub fn lint_with(sql: &str, ctx: LintContext) -> Vec<Lint> {
    match std::panic::catch_unwind(|| pg_query::parse(sql, 0)) {
        Ok(Ok(parsed)) => lint_parsed(&parsed, ctx),
        _ => Vec::new(),
    }
}

/// Lints an already parsed text. At most one lint per rule.
pub fn lint_parsed(parsed: &pg_query::ParseResult, ctx: LintContext) -> Vec<Lint> {
    if only_catalogs(parsed) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let statements: Vec<&NodeEnum> = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|s| s.stmt.as_ref().and_then(|n| n.node.as_ref()))
        .collect();
    let created = ddl::created_relations(&statements);
    let mut lock_timeout = ctx.lock_timeout_set;
    for stmt in statements {
        if ddl::sets_lock_timeout(stmt) {
            lock_timeout = true;
            continue;
        }
        query::lint_statement(stmt, &mut out);
        ddl::lint_statement(stmt, &created, lock_timeout, &mut out);
    }
    let mut seen = Vec::new();
    out.retain(|l: &Lint| {
        let first = !seen.contains(&l.rule);
        seen.push(l.rule);
        first
    });
    out
}

/// True when every table referenced is a system catalog.
fn only_catalogs(parsed: &pg_query::ParseResult) -> bool {
    let tables = parsed.tables();
    !tables.is_empty()
        && tables.iter().all(|t| {
            let t = t.to_ascii_lowercase();
            t.starts_with("pg_")
                || t.starts_with("pg_catalog.")
                || t.starts_with("information_schema.")
        })
}

// Small tree helpers shared by the rule files.

/// The node inside an optional boxed child.
fn inner(n: &Option<Box<Node>>) -> Option<&NodeEnum> {
    n.as_ref().and_then(|n| n.node.as_ref())
}

/// A string constant's value.
fn const_str(n: &NodeEnum) -> Option<&str> {
    match n {
        NodeEnum::AConst(c) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(&s.sval),
            _ => None,
        },
        NodeEnum::TypeCast(t) => inner(&t.arg).and_then(const_str),
        _ => None,
    }
}

/// An integer constant's value (also large ones, which parse as floats).
fn const_int(n: &NodeEnum) -> Option<i64> {
    match n {
        NodeEnum::AConst(c) => match &c.val {
            Some(a_const::Val::Ival(i)) => Some(i64::from(i.ival)),
            Some(a_const::Val::Fval(f)) => f.fval.parse::<f64>().ok().map(|v| v as i64),
            _ => None,
        },
        NodeEnum::TypeCast(t) => inner(&t.arg).and_then(const_int),
        _ => None,
    }
}

/// `a.b` for a column reference (`*` for a star).
fn column_name(c: &protobuf::ColumnRef) -> String {
    c.fields
        .iter()
        .filter_map(|f| match f.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.clone()),
            NodeEnum::AStar(_) => Some("*".to_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Lower-case unqualified function name.
fn function_name(f: &protobuf::FuncCall) -> String {
    f.funcname
        .last()
        .and_then(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.to_ascii_lowercase()),
            _ => None,
        })
        .unwrap_or_default()
}

/// `schema.table` as written.
fn relation_name(r: &protobuf::RangeVar) -> String {
    if r.schemaname.is_empty() {
        r.relname.clone()
    } else {
        format!("{}.{}", r.schemaname, r.relname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(sql: &str) -> Vec<&'static str> {
        lint(sql).into_iter().map(|l| l.rule).collect()
    }

    #[test]
    fn clean_queries_yield_nothing() {
        for sql in [
            "SELECT id, name FROM users WHERE id = $1",
            "SELECT id FROM users WHERE email = $1 ORDER BY created_at DESC LIMIT 20 OFFSET 40",
            "SELECT count(*) FROM orders WHERE user_id = $1",
            "SELECT id FROM users u WHERE EXISTS (SELECT * FROM orders o WHERE o.user_id = u.id) LIMIT 10",
            "SELECT id FROM users WHERE name LIKE 'abc%' LIMIT 5",
            "SELECT id FROM users WHERE id = ANY($1)",
            "SELECT id FROM users WHERE id IN (1, 2, 3)",
            "SELECT id FROM users WHERE created_at > now() - interval '1 day' AND lower($1) = email",
            "UPDATE users SET name = $1 WHERE id = $2",
            "DELETE FROM sessions WHERE expires_at < now()",
            "INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b')",
            "SET lock_timeout = '2s'; CREATE INDEX CONCURRENTLY users_email ON users (email)",
            "CREATE TABLE t (id int primary key, a int); CREATE INDEX t_a ON t (a); ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)",
            "SELECT relname FROM pg_class ORDER BY relname",
            "SELECT 1",
            "BEGIN",
            "not even sql",
        ] {
            assert!(lint(sql).is_empty(), "{sql}: {:?}", lint(sql));
        }
    }

    #[test]
    fn one_lint_per_rule_and_rule_ids_are_listed() {
        let found = lint("SELECT * FROM a; SELECT * FROM b");
        assert_eq!(found.len(), 1);
        for l in lint("SELECT * FROM t ORDER BY random() OFFSET 5000") {
            assert!(RULES.contains(&l.rule), "{}", l.rule);
            assert!(!l.fix.is_empty() && !l.message.is_empty());
        }
    }

    #[test]
    fn each_planted_query_fires_its_rule() {
        let in_list = (1..=101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let cases = [
            ("SELECT * FROM users WHERE id = $1", "select_star"),
            ("SELECT u.* FROM users u WHERE id = $1", "select_star"),
            (&*format!("SELECT id FROM users WHERE id IN ({in_list})"), "large_in_list"),
            (&*format!("SELECT id FROM users WHERE id = ANY(ARRAY[{in_list}])"), "large_in_list"),
            ("SELECT id FROM users ORDER BY name", "order_without_limit"),
            ("SELECT id FROM users WHERE name LIKE '%son' LIMIT 5", "leading_wildcard_like"),
            ("SELECT id FROM users WHERE name ILIKE '_on%' LIMIT 5", "leading_wildcard_like"),
            ("SELECT id FROM users ORDER BY random() LIMIT 1", "order_by_random"),
            ("SELECT id FROM users ORDER BY id LIMIT 20 OFFSET 1000", "large_offset"),
            ("SELECT id FROM users WHERE id NOT IN (SELECT user_id FROM bans) LIMIT 5", "not_in_subquery"),
            ("UPDATE users SET active = false", "update_without_where"),
            ("DELETE FROM users", "delete_without_where"),
            ("SELECT id FROM users WHERE lower(email) = $1", "function_on_column_in_where"),
            ("SELECT id FROM orders WHERE created_at::date = $1", "function_on_column_in_where"),
            ("UPDATE users SET a = 1 WHERE date_trunc('day', created_at) = $1", "function_on_column_in_where"),
            ("CREATE INDEX users_email ON users (email)", "ddl_without_concurrently"),
            ("DROP INDEX users_email", "ddl_without_concurrently"),
            ("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)", "ddl_without_concurrently"),
            ("ALTER TABLE orders ADD CONSTRAINT pos CHECK (total > 0)", "ddl_without_concurrently"),
            ("ALTER TABLE orders ADD CONSTRAINT u UNIQUE (code)", "ddl_without_concurrently"),
            ("ALTER TABLE orders ADD COLUMN note text", "ddl_without_lock_timeout"),
            ("CREATE INDEX CONCURRENTLY users_email ON users (email); ALTER TABLE users DROP COLUMN x", "ddl_without_lock_timeout"),
        ];
        for (sql, rule) in cases {
            let found = rules(sql);
            assert!(
                found.contains(&rule),
                "{sql}: expected {rule}, got {found:?}"
            );
        }
    }

    #[test]
    fn in_list_of_exactly_100_is_fine() {
        let list = (1..=100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(rules(&format!("SELECT id FROM users WHERE id IN ({list})")).is_empty());
    }

    #[test]
    fn offset_below_1000_is_fine() {
        assert!(rules("SELECT id FROM users ORDER BY id LIMIT 20 OFFSET 999").is_empty());
    }

    #[test]
    fn lock_timeout_in_the_text_or_session_silences_the_timeout_rule() {
        let alter = "ALTER TABLE orders ADD COLUMN note text";
        assert!(rules(&format!("SET lock_timeout = '3s'; {alter}")).is_empty());
        assert!(rules(&format!("SET LOCAL lock_timeout TO 3000; {alter}")).is_empty());
        assert!(lint_with(
            alter,
            LintContext {
                lock_timeout_set: true
            }
        )
        .is_empty());
        // Set after the DDL does not count; set to 0 disables it.
        assert_eq!(
            rules(&format!("{alter}; SET lock_timeout = '3s'")),
            vec!["ddl_without_lock_timeout"]
        );
        assert_eq!(
            rules(&format!("SET lock_timeout = 0; {alter}")),
            vec!["ddl_without_lock_timeout"]
        );
    }

    #[test]
    fn messages_name_the_objects() {
        let l = &lint("SELECT id FROM users WHERE lower(email) = $1")[0];
        assert!(l.message.contains("lower(email)"), "{}", l.message);
        assert!(
            l.fix
                .contains("CREATE INDEX CONCURRENTLY ON users ((lower(email)))"),
            "{}",
            l.fix
        );
        let l = &lint("CREATE INDEX users_email ON users (email)")[0];
        assert!(l.fix.contains("CREATE INDEX CONCURRENTLY"), "{}", l.fix);
    }
}
