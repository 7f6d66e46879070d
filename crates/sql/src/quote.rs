//! Quoting values into SQL text: the one place identifiers and string
//! literals are escaped, for the statements pgpilot writes itself (index
//! advice, EXPLAIN of captured statements, replication setup).

/// `name` as an SQL identifier, by PostgreSQL's own `quote_ident` rule:
/// bare when it is lower case and not a keyword (unreserved keywords may
/// stay bare), else double-quoted. The keyword check asks the real
/// PostgreSQL scanner, so every keyword class of the server's grammar counts.
pub fn ident(name: &str) -> String {
    let safe_chars = name
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'$');
    if safe_chars && !is_keyword(name) {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Whether `word` scans as a keyword that cannot stand bare as a name.
fn is_keyword(word: &str) -> bool {
    use pg_query::protobuf::KeywordKind;
    match pg_query::scan(word) {
        Ok(scan) => match scan.tokens.as_slice() {
            [token] => !matches!(
                KeywordKind::try_from(token.keyword_kind),
                Ok(KeywordKind::NoKeyword | KeywordKind::UnreservedKeyword)
            ),
            _ => true,
        },
        Err(_) => true,
    }
}

/// An SQL string literal of `s` (an `E''` literal when it holds
/// backslashes, so it reads the same whatever `standard_conforming_strings`
/// says). NUL, which a literal cannot hold, is dropped.
pub fn literal(s: &str) -> String {
    let s = s.replace('\0', "");
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_when_needed() {
        assert_eq!(ident("orders"), "orders");
        assert_eq!(ident("Orders"), "\"Orders\"");
        assert_eq!(ident("order"), "\"order\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("1st"), "\"1st\"");
        // Every keyword class PostgreSQL's quote_ident quotes: reserved,
        // type/function names, column names; unreserved ones stay bare.
        for keyword in [
            "select",
            "verbose",
            "left",
            "join",
            "between",
            "int",
            "system_user",
        ] {
            assert_eq!(ident(keyword), format!("\"{keyword}\""), "{keyword}");
        }
        for plain in ["abort", "data", "publication", "pgpilot_cache", "t$1"] {
            assert_eq!(ident(plain), plain, "{plain}");
        }
    }

    #[test]
    fn literals_escape_quotes_backslashes_and_drop_nul() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b'"), r"E'a\\b'''");
        assert_eq!(literal("x\0y"), "'xy'");
    }
}
