use std::time::Duration;

use super::may_affect_session as m;
use super::{cache_hint, exact_key, mentions_current_time, scan, CacheHint, RouteHint};
use super::{for_each_token, Token, TokenKind};

#[test]
fn key_ignores_literals_comments_case_and_spacing() {
    let a = scan("SELECT abalance FROM pgbench_accounts WHERE aid = 17;");
    let b = scan("select  abalance from pgbench_accounts /* c */ where aid = 99123;");
    let c = scan("SELECT abalance FROM pgbench_accounts WHERE aid = 'x'");
    assert_eq!(a.key, b.key);
    assert_ne!(a.key, c.key, "the trailing ';' is a token");
    assert_ne!(scan("select a from t").key, scan("select b from t").key);
    assert_ne!(
        scan("select \"A\" from t").key,
        scan("select \"a\" from t").key
    );
    assert_eq!(scan("select 1.5e-3, $1").key, scan("select 7, $2").key);
    assert_eq!(scan("select E'a', .5").key, scan("select e'b', 7").key);
}

#[test]
fn shape_key_separates_strings_that_name_the_current_time() {
    let plain = scan("SELECT * FROM t WHERE d < '2024-01-01'").key;
    assert_eq!(plain, scan("SELECT * FROM t WHERE d < 'x'").key);
    for now in [
        "SELECT * FROM t WHERE d < 'now'",
        "SELECT * FROM t WHERE d < ' Today '",
        "SELECT * FROM t WHERE d < 'tomorrow 10:00'",
        "SELECT * FROM t WHERE d < $$yesterday$$",
    ] {
        assert_ne!(scan(now).key, plain, "{now}");
    }
    assert_eq!(
        scan("SELECT * FROM t WHERE d < 'now'").key,
        scan("SELECT * FROM t WHERE d < 'TODAY'").key
    );
    assert_eq!(
        scan("SELECT * FROM t WHERE d < $now$x$now$").key,
        plain,
        "a dollar tag is not the value"
    );
    // Escapes: the decoded value is not the text, so the text is the key.
    assert_ne!(
        scan(r"SELECT E'\x6eow'::date").key,
        scan(r"SELECT E'\x41'::date").key
    );
    assert_ne!(
        scan(r"SELECT U&'!006Eow' UESCAPE '!'").key,
        scan(r"SELECT U&'!006Eow' UESCAPE '#'").key
    );
}

#[test]
fn current_time_words() {
    for yes in [
        "now",
        " NOW ",
        "today",
        "tomorrow 10:00",
        "{yesterday}",
        "énow",
    ] {
        assert!(mentions_current_time(yes.as_bytes()), "{yes}");
    }
    for no in [
        "",
        "snowman",
        "known",
        "2024-01-01",
        "epoch",
        "infinity",
        "no w",
    ] {
        assert!(!mentions_current_time(no.as_bytes()), "{no}");
    }
}

#[test]
fn hints_come_from_comments() {
    assert_eq!(
        scan("/* pgpilot:primary */ select 1").hint,
        RouteHint::Primary
    );
    assert_eq!(scan("select 1 -- pgpilot:replica").hint, RouteHint::Replica);
    assert_eq!(
        scan("select 1 /* PGPILOT:Replica */").hint,
        RouteHint::Replica
    );
    assert_eq!(scan("select 'pgpilot:primary'").hint, RouteHint::None);
    assert!(scan("/* pgpilot:cache ttl=5s */ select 1").cache_hint);
    assert!(scan("select 1 -- PgPilot:NoCache").cache_hint);
    assert!(!scan("select 1 /* pgpilot:primary */").cache_hint);
    assert!(!scan("select 'pgpilot:cache'").cache_hint);
    assert!(!scan("select 1 /* pgpilot:cached */").cache_hint);
}

fn hint(enabled: bool, ttl: Option<Duration>, tags: &[&str]) -> Option<CacheHint> {
    Some(CacheHint {
        enabled,
        ttl,
        tags: tags.iter().map(|t| t.to_string()).collect(),
    })
}

#[test]
fn cache_hints() {
    let secs = |s| Some(Duration::from_secs(s));
    let cases = [
        ("select 1", None),
        ("select '/* pgpilot:cache */'", None),
        ("/* pgpilot:cache */ select 1", hint(true, None, &[])),
        ("/* pgpilot:nocache */ select 1", hint(false, None, &[])),
        (
            "/* pgpilot:cache ttl=30s tags=user:42,org:7 */ select 1",
            hint(true, secs(30), &["user:42", "org:7"]),
        ),
        (
            "/*pgpilot:cache ttl=30*/ select 1",
            hint(true, secs(30), &[]),
        ),
        (
            "select 1 /* PGPILOT:CACHE TTL=250MS */",
            hint(true, Some(Duration::from_millis(250)), &[]),
        ),
        ("/* pgpilot:cache ttl=5m */", hint(true, secs(300), &[])),
        ("/* pgpilot:cache ttl=2h */", hint(true, secs(7200), &[])),
        (
            "select 1 -- pgpilot:cache ttl=5s\n",
            hint(true, secs(5), &[]),
        ),
        // Malformed parts are ignored.
        (
            "/* pgpilot:cache ttl=5x ttl=-1 ttl= tags=,a,,a, junk =x */",
            hint(true, None, &["a"]),
        ),
        (
            "/* pgpilot:cache ttl=99999999999999999999s */",
            hint(true, None, &[]),
        ),
        (
            "/* pgpilot:cache ttl=9999999999999999999h */",
            hint(true, None, &[]),
        ),
        // Options stop at the next directive; nocache anywhere wins.
        (
            "/* pgpilot:cache ttl=1s pgpilot:replica ttl=9s */",
            hint(true, secs(1), &[]),
        ),
        (
            "/* pgpilot:cache ttl=1s */ select 1 /* pgpilot:nocache */",
            hint(false, None, &[]),
        ),
        (
            "/* pgpilot:cache tags=a */ select /* pgpilot:cache tags=b ttl=3 */ 1",
            hint(true, secs(3), &["a", "b"]),
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(cache_hint(sql), want, "{sql}");
    }
    let many = format!("/* pgpilot:cache tags={} */", vec!["t"; 100].join(","));
    assert_eq!(cache_hint(&many).map(|h| h.tags.len()), Some(1));
    let many: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let many = format!("/* pgpilot:cache tags={} */", many.join(","));
    assert_eq!(
        cache_hint(&many).map(|h| h.tags.len()),
        Some(super::MAX_TAGS)
    );
    let long = format!("/* pgpilot:cache tags={} */", "x".repeat(500));
    assert_eq!(cache_hint(&long), hint(true, None, &[]));
}

#[test]
fn exact_key_ignores_comments_spacing_and_keyword_case() {
    let same = [
        (
            "SELECT a FROM t WHERE id = 1",
            "select  a\n from T /* c */ where ID=1 -- x",
        ),
        ("select 'x'", "/* pgpilot:cache */ SELECT\t'x'"),
        ("select a=-1", "select a = - 1"),
        ("select a<=b", "SELECT a <= b"),
        // `<-` ends in `-` and holds none of ~!@#^&|`?%: PostgreSQL splits it.
        ("select a<-1", "select a < -1"),
        ("select E'x', U&'y'", "select e'x', u&'y'"),
        ("select a::int", "select a :: int"),
        ("select 'a',\n'b'", "select 'a', 'b'"),
        ("select a/**/b", "select a b"),
        ("select $1, $2", "select $1,$2"),
    ];
    for (a, b) in same {
        assert_eq!(exact_key(a), exact_key(b), "{a} | {b}");
    }
}

#[test]
fn exact_key_keeps_literals_quoting_and_token_boundaries() {
    let different = [
        ("select 1", "select 2"),
        ("select 1", "select 1.0"),
        ("select 'a'", "select 'A'"),
        ("select 'a'", "select $$a$$"),
        ("select $$a$$", "select $$b$$"),
        ("select E'\\n'", "select '\\n'"),
        ("select E'x'", "select E 'x'"),
        ("select $1", "select $2"),
        ("select \"A\"", "select A"),
        ("select \"a b\"", "select \"a\" \"b\""),
        ("select a b", "select ab"),
        ("select 'a''b'", "select 'a' 'b'"),
        ("select 'a'\n'b'", "select 'a' 'b'"),
        ("select 'a'\n'b'", "select 'a' /*\n*/ 'b'"),
        ("select a<=b", "select a< =b"),
        ("select a@-1", "select a@ -1"),
        ("select a - -1", "select a --1"),
        ("select 1", "select 1;"),
        ("select .5", "select . 5"),
        ("select 1 from t", "select 1 from u"),
    ];
    for (a, b) in different {
        assert_ne!(exact_key(a), exact_key(b), "{a} | {b}");
    }
}

fn tokens(sql: &str) -> Vec<Token> {
    let mut all = Vec::new();
    for_each_token(sql.as_bytes(), |t| all.push(t));
    all
}

#[test]
fn tokens_follow_postgres() {
    let kinds = |sql: &str| -> Vec<(TokenKind, String)> {
        tokens(sql)
            .into_iter()
            .map(|t| (t.kind, sql[t.start..t.end].to_owned()))
            .collect()
    };
    use TokenKind as K;
    assert_eq!(
        kinds("a=-1 b@-2 c*/*x*/d"),
        [
            (K::Word, "a"),
            (K::Operator, "="),
            (K::Operator, "-"),
            (K::Number, "1"),
            (K::Word, "b"),
            (K::Operator, "@-"),
            (K::Number, "2"),
            (K::Word, "c"),
            (K::Operator, "*"),
            (K::BlockComment, "/*x*/"),
            (K::Word, "d"),
        ]
        .map(|(k, s)| (k, s.to_owned()))
    );
    assert_eq!(
        kinds("E'\\'x' U&\"y\" x'1F' $1 $q$ $ $q$ :: ;"),
        [
            (K::String, "E'\\'x'"),
            (K::QuotedIdent, "U&\"y\""),
            (K::String, "x'1F'"),
            (K::Param, "$1"),
            (K::DollarString, "$q$ $ $q$"),
            (K::Punct, "::"),
            (K::Semicolon, ";"),
        ]
        .map(|(k, s)| (k, s.to_owned()))
    );
}

#[test]
fn ordinary_statements_skip_the_parser() {
    assert!(!m("SELECT abalance FROM pgbench_accounts WHERE aid = 1"));
    assert!(!m(
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2;"
    ));
    assert!(!m("BEGIN; INSERT INTO t VALUES ('set x'); COMMIT"));
    assert!(!m("select 'reset', \"set\" from t -- set\n"));
    assert!(!m("select $$ set temp $$, $tag$ discard $tag$, $1"));
    assert!(!m("select offset_col from t offset 5"));
}

#[test]
fn session_changing_statements_are_flagged() {
    assert!(m("SET search_path TO a"));
    assert!(m("  /* hi */ set TimeZone = 'UTC'"));
    assert!(m("select 1; RESET ALL"));
    assert!(m("DISCARD ALL"));
    assert!(m("listen chan"));
    assert!(m("create TEMP table t (a int)"));
    assert!(m("select pg_advisory_lock(1)"));
    assert!(m("SELECT set_config('a.b', 'c', false)"));
    assert!(m("PREPARE p AS SELECT 1"));
    assert!(m("DECLARE c CURSOR WITH HOLD FOR SELECT 1"));
}

#[test]
fn escapes_and_unterminated_input_do_not_panic() {
    assert!(!m(r"select E'\'set' from t"));
    assert!(!m("select 'abc"));
    for s in [
        "'",
        "\"",
        "$",
        "$a",
        "$a$",
        "/*",
        "--",
        "E'\\",
        "/* /* */",
        "U&",
        "U&'",
        "U&\"",
        "e'",
        "$1",
        ".",
        "..",
        ":",
        "-",
        "/",
        "*/",
        "é",
        "'é",
        "$é$",
        "/* pgpilot:cache ttl=",
        "-- pgpilot:",
        "pgpilot:cache",
    ] {
        let _ = m(s);
        let _ = exact_key(s);
        let _ = cache_hint(s);
        assert_eq!(
            tokens(s).last().map_or(0, |t| t.end),
            s.trim_end().len(),
            "{s:?}"
        );
    }
}

#[test]
fn one_pass_gives_both_keys() {
    let texts = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
        "select  *  from t where a = 'x' -- c\n and b = $1",
        "SET search_path = a; SELECT 1",
        "/* pgpilot:cache ttl=30s */ SELECT E'a\\'b' FROM t",
        "SELECT 'a'\n'b', U&'d\\0061t' UESCAPE '\\', $$x$$, $t$now$t$",
        "insert into t values (1.5e3, B'101', X'ff', 'today')",
        "",
        "'",
        "$a$",
        "/*",
    ];
    for sql in texts {
        let (scan, exact) = super::scan_with_exact_key(sql);
        assert_eq!(scan, super::scan(sql), "{sql:?}");
        assert_eq!(exact, super::exact_key(sql), "{sql:?}");
    }
}

#[test]
fn shape_key_sees_the_current_time_in_strings_joined_across_lines() {
    // PostgreSQL joins 'no' newline 'w' into 'now': it must not share a
    // shape (and so a classification) with two ordinary pieces.
    let joined = scan("SELECT * FROM t WHERE d < 'no'\n'w'").key;
    let plain = scan("SELECT * FROM t WHERE d < 'x'\n'y'").key;
    assert_ne!(joined, plain);
    // A line comment is a newline too; a block comment breaks the join.
    assert_eq!(scan("SELECT * FROM t WHERE d < 'no' -- c\n'w'").key, joined);
    assert_eq!(
        scan("SELECT * FROM t WHERE d < 'no' /* c */\n'w'").key,
        scan("SELECT * FROM t WHERE d < 'a' /* c */\n'b'").key
    );
    // Three pieces, and without a newline nothing is joined.
    assert_ne!(
        scan("SELECT 'n'\n'o'\n'w'").key,
        scan("SELECT 'a'\n'b'\n'c'").key
    );
    assert_eq!(scan("SELECT 'no' 'w'").key, scan("SELECT 'a' 'b'").key);
}
