//! Reading the condition texts EXPLAIN prints (`Filter`, `Index Cond`) well
//! enough to name the columns an index should cover. PostgreSQL deparses
//! them in a regular form — `((customer_id = $1) AND ((status)::text =
//! 'paid'::text))` — with identifiers already quoted where needed, so a
//! small lexer suffices; nothing here executes or trusts the text.

/// Columns an index could serve, at most this many.
const MAX_COLUMNS: usize = 3;

/// Words that look like identifiers but are not columns.
const KEYWORDS: &[&str] = &[
    "and", "or", "not", "is", "null", "true", "false", "any", "all", "some", "array", "like",
    "ilike", "in", "between", "case", "when", "then", "else", "end", "distinct", "from", "subplan",
    "initplan", "hashed", "collate", "row", "unknown",
];

/// Operators after which a column can use a btree index (`~~` is LIKE:
/// usable with a left-anchored pattern and `text_pattern_ops`).
const RANGE_OPS: &[&str] = &["<", ">", "<=", ">=", "~~"];

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    Ident(&'a str),
    Literal,
    Op(&'a str),
    Cast,
    Dot,
    Open,
    Close,
    Other,
}

fn tokens(s: &str) -> Vec<Token<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let token = match b[i] {
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'\'' => {
                i = pgpilot_sql::lexer::skip_quoted(b, i, b[i]);
                Token::Literal
            }
            b'"' => {
                i = pgpilot_sql::lexer::skip_quoted(b, i, b[i]);
                Token::Ident(&s[start..i])
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                i = word_end(b, i);
                Token::Ident(&s[start..i])
            }
            c if c.is_ascii_digit() || c == b'$' => {
                i = word_end(b, i + 1);
                Token::Literal
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                i += 2;
                Token::Cast
            }
            b'.' => {
                i += 1;
                Token::Dot
            }
            b'(' | b'[' => {
                i += 1;
                Token::Open
            }
            b')' | b']' => {
                i += 1;
                Token::Close
            }
            c if b"+-*/<>=~!@#%^&|".contains(&c) => {
                while i < b.len() && b"+-*/<>=~!@#%^&|".contains(&b[i]) {
                    i += 1;
                }
                Token::Op(&s[start..i])
            }
            _ => {
                i += 1;
                Token::Other
            }
        };
        out.push(token);
    }
    out
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len()
        && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
    {
        i += 1;
    }
    i
}

fn is_keyword(t: &Token<'_>) -> bool {
    matches!(t, Token::Ident(w) if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w)))
}

/// The plain columns `condition` compares with an indexable operator
/// (`=`, `IS NULL`, `<`, `>`, `<=`, `>=`, `LIKE`), equality columns first,
/// deduplicated, at most three. With `alias`, columns qualified by another
/// table's alias (join conditions) are left out. Columns only used inside
/// a function call (`lower(email) = …`) are not plain and are left out.
pub(super) fn indexable_columns(condition: &str, alias: Option<&str>) -> Vec<String> {
    let toks = tokens(condition);
    let mut equality: Vec<String> = Vec::new();
    let mut range: Vec<String> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Some((column, end)) = column_at(&toks, i, alias) else {
            i += 1;
            continue;
        };
        match comparison(&toks, i, end) {
            Some(true) => equality.push(column.to_owned()),
            Some(false) => range.push(column.to_owned()),
            None => {}
        }
        i = end;
    }
    let mut out: Vec<String> = Vec::new();
    for c in equality.into_iter().chain(range) {
        if !out.contains(&c) && out.len() < MAX_COLUMNS {
            out.push(c);
        }
    }
    out
}

/// A column reference starting at `i`: `col` or `qualifier.col`, not a
/// keyword, a type name after `::`, a function name or a `COLLATE` name.
/// Returns the column and the index just past it.
fn column_at<'a>(toks: &[Token<'a>], i: usize, alias: Option<&str>) -> Option<(&'a str, usize)> {
    let Token::Ident(first) = toks[i] else {
        return None;
    };
    if is_keyword(&toks[i]) || after_cast_or_collate(toks, i) {
        return None;
    }
    let (column, end) = match (toks.get(i + 1), toks.get(i + 2)) {
        (Some(Token::Dot), Some(Token::Ident(col))) => {
            if alias.is_some_and(|a| a != first.trim_matches('"')) {
                return None;
            }
            (*col, i + 3)
        }
        _ => (first, i + 1),
    };
    if matches!(toks.get(end), Some(Token::Open | Token::Dot)) {
        return None; // a function call or a deeper qualification
    }
    Some((column, end))
}

/// Whether the identifier at `i` is part of a type name (`::character
/// varying`) or a collation (`COLLATE "C"`).
fn after_cast_or_collate(toks: &[Token<'_>], i: usize) -> bool {
    let mut j = i;
    while j > 0 {
        j -= 1;
        match &toks[j] {
            Token::Cast => return true,
            Token::Ident(w) if w.eq_ignore_ascii_case("collate") => return true,
            Token::Ident(_) | Token::Dot => continue,
            _ => return false,
        }
    }
    false
}

/// How the column spanning `start..end` is compared: `Some(true)` for
/// equality (`=`, `= ANY`, `IS NULL`), `Some(false)` for a range or
/// LIKE, `None` when it is not compared indexably or sits inside a
/// function call.
fn comparison(toks: &[Token<'_>], start: usize, end: usize) -> Option<bool> {
    // Parentheses before the column: a function call's makes it an argument.
    let mut j = start;
    while j > 0 && toks[j - 1] == Token::Open {
        j -= 1;
        if j > 0 && matches!(toks[j - 1], Token::Ident(_)) && !is_keyword(&toks[j - 1]) {
            return None;
        }
    }
    if j > 0 {
        if let Token::Op(op) = toks[j - 1] {
            return op_kind(op);
        }
    }
    // After: closing parentheses and casts, then the operator.
    let mut k = end;
    loop {
        match toks.get(k) {
            Some(Token::Close) => k += 1,
            Some(Token::Cast) => {
                k += 1;
                while matches!(toks.get(k), Some(Token::Ident(_) | Token::Dot)) {
                    k += 1;
                }
            }
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("collate") => k += 2,
            _ => break,
        }
    }
    match toks.get(k)? {
        Token::Op(op) => op_kind(op),
        Token::Ident(w) if w.eq_ignore_ascii_case("is") => match toks.get(k + 1)? {
            Token::Ident(n) if n.eq_ignore_ascii_case("null") => Some(true),
            _ => None,
        },
        _ => None,
    }
}

fn op_kind(op: &str) -> Option<bool> {
    if op == "=" {
        Some(true)
    } else if RANGE_OPS.contains(&op) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(condition: &str) -> Vec<String> {
        indexable_columns(condition, None)
    }

    #[test]
    fn equality_columns_come_first() {
        assert_eq!(cols("(customer_id = 42)"), ["customer_id"]);
        assert_eq!(
            cols("((created_at > $2) AND (customer_id = $1))"),
            ["customer_id", "created_at"]
        );
        assert_eq!(
            cols("(((status)::text = 'paid'::text) AND (id = ANY ('{1,2}'::integer[])))"),
            ["status", "id"]
        );
        assert_eq!(
            cols("((a = 1) AND (b = 1) AND (c = 1) AND (d = 1))"),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn functions_types_and_keywords_are_not_columns() {
        assert!(cols("(lower(email) = 'x'::text)").is_empty());
        assert!(cols("(NOT deleted)").is_empty());
        assert!(cols("(hashed SubPlan 1)").is_empty());
        assert!(cols("(kind <> 3)").is_empty(), "not indexable");
        assert_eq!(
            cols("((note)::character varying = 'a'::character varying)"),
            ["note"]
        );
        assert_eq!(cols("((name)::text ~~ 'abc%'::text)"), ["name"]);
        assert_eq!(cols("(deleted_at IS NULL)"), ["deleted_at"]);
        assert!(cols("(deleted_at IS NOT NULL)").is_empty());
        assert_eq!(
            cols("((name COLLATE \"C\") = 'x'::text)"),
            ["name"],
            "the collation is not a column"
        );
        assert_eq!(cols("(\"Weird Col\" = 1)"), ["\"Weird Col\""]);
        assert_eq!(cols("(5 < total)"), ["total"], "column on the right");
    }

    #[test]
    fn other_tables_columns_are_left_out_given_an_alias() {
        assert_eq!(
            indexable_columns("((o.customer_id = c.id) AND (o.total > 5))", Some("o")),
            ["customer_id", "total"]
        );
    }
}
