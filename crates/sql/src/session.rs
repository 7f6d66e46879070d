//! Reading session-level effects off a `pg_query` parse tree.
//!
//! The proxy keeps a client's `SET`s and replays them on whichever server
//! the client lands on; effects it cannot replay (LISTEN, temp tables, SQL
//! PREPARE, WITH HOLD cursors, session advisory locks, SET ROLE…) pin the
//! client to its server for the rest of the session.

use pg_query::protobuf::{self, VariableSetKind};
use pg_query::NodeRef;

/// `CURSOR_OPT_HOLD` from PostgreSQL's `parsenodes.h`.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// One statement's effect on state that outlives its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// `SET name ...` (not LOCAL): replay `statement` on other servers.
    Set { name: String, statement: String },
    /// `RESET name` or `SET name TO DEFAULT`.
    Reset { name: String },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`: settings reset, prepared statements and temp objects gone.
    DiscardAll,
    /// State the proxy cannot move between servers.
    Pin(PinReason),
}

/// Why a client had to be pinned to one server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    Listen,
    TempObject,
    SqlPrepare,
    HoldCursor,
    AdvisoryLock,
    SetRole,
    SetConfig,
    SessionCharacteristics,
    Load,
}

impl PinReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Listen => "LISTEN",
            PinReason::TempObject => "temporary object",
            PinReason::SqlPrepare => "SQL PREPARE",
            PinReason::HoldCursor => "WITH HOLD cursor",
            PinReason::AdvisoryLock => "session advisory lock",
            PinReason::SetRole => "SET ROLE / SESSION AUTHORIZATION",
            PinReason::SetConfig => "set_config()",
            PinReason::SessionCharacteristics => "SET SESSION CHARACTERISTICS",
            PinReason::Load => "LOAD",
        }
    }
}

/// The session effects of one query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    /// In statement order.
    pub effects: Vec<SessionEffect>,
    /// The parser rejected the text (the server will too); no effects assumed.
    pub parse_error: Option<String>,
}

/// Parses `sql` and lists its session effects.
pub fn analyze(sql: &str) -> Effects {
    let parsed = std::panic::catch_unwind(|| pg_query::parse(sql, 0));
    let result = match parsed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Effects {
                effects: vec![],
                parse_error: Some(e.to_string()),
            }
        }
        Err(_) => {
            return Effects {
                effects: vec![],
                parse_error: Some("parser panicked".into()),
            }
        }
    };
    let mut effects = Vec::new();
    for raw in &result.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        if let pg_query::NodeEnum::VariableSetStmt(v) = node {
            effects.extend(variable_set(v, statement_text(sql, raw)));
        }
    }
    for (node, _, _, _) in result.protobuf.nodes() {
        if let Some(e) = node_effect(node) {
            if !effects.contains(&e) {
                effects.push(e);
            }
        }
    }
    Effects {
        effects,
        parse_error: None,
    }
}

fn statement_text(sql: &str, raw: &protobuf::RawStmt) -> String {
    let start = usize::try_from(raw.stmt_location).unwrap_or(0);
    let end = match usize::try_from(raw.stmt_len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(len) => start.saturating_add(len).min(sql.len()),
    };
    sql.get(start..end).unwrap_or(sql).trim().to_owned()
}

fn variable_set(v: &protobuf::VariableSetStmt, statement: String) -> Option<SessionEffect> {
    if v.is_local {
        return None;
    }
    let name = v.name.to_ascii_lowercase();
    let is_role = matches!(name.as_str(), "role" | "session_authorization");
    match VariableSetKind::try_from(v.kind).ok()? {
        VariableSetKind::VarSetValue | VariableSetKind::VarSetCurrent if is_role => {
            Some(SessionEffect::Pin(PinReason::SetRole))
        }
        VariableSetKind::VarSetValue | VariableSetKind::VarSetCurrent => {
            Some(SessionEffect::Set { name, statement })
        }
        VariableSetKind::VarSetDefault | VariableSetKind::VarReset => {
            Some(SessionEffect::Reset { name })
        }
        VariableSetKind::VarResetAll => Some(SessionEffect::ResetAll),
        VariableSetKind::VarSetMulti if name == "session characteristics" => {
            Some(SessionEffect::Pin(PinReason::SessionCharacteristics))
        }
        VariableSetKind::VarSetMulti | VariableSetKind::Undefined => None,
    }
}

fn node_effect(node: NodeRef<'_>) -> Option<SessionEffect> {
    let pin = |r| Some(SessionEffect::Pin(r));
    match node {
        NodeRef::ListenStmt(_) => pin(PinReason::Listen),
        NodeRef::RangeVar(r) if r.relpersistence == "t" => pin(PinReason::TempObject),
        NodeRef::SelectStmt(s) if into_temp(s.into_clause.as_deref()) => pin(PinReason::TempObject),
        NodeRef::CreateTableAsStmt(c) if into_temp(c.into.as_deref()) => pin(PinReason::TempObject),
        NodeRef::PrepareStmt(_) => pin(PinReason::SqlPrepare),
        NodeRef::DeclareCursorStmt(d) if d.options & CURSOR_OPT_HOLD != 0 => {
            pin(PinReason::HoldCursor)
        }
        NodeRef::LoadStmt(_) => pin(PinReason::Load),
        NodeRef::DiscardStmt(d) if d.target == protobuf::DiscardMode::DiscardAll as i32 => {
            Some(SessionEffect::DiscardAll)
        }
        NodeRef::FuncCall(f) => function_effect(f),
        _ => None,
    }
}

fn into_temp(into: Option<&protobuf::IntoClause>) -> bool {
    into.and_then(|i| i.rel.as_ref())
        .is_some_and(|r| r.relpersistence == "t")
}

fn function_effect(f: &protobuf::FuncCall) -> Option<SessionEffect> {
    let name = f.funcname.last().and_then(|n| match n.node.as_ref() {
        Some(pg_query::NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
        _ => None,
    })?;
    match name.as_str() {
        "set_config" => Some(SessionEffect::Pin(PinReason::SetConfig)),
        "pg_advisory_lock"
        | "pg_advisory_lock_shared"
        | "pg_try_advisory_lock"
        | "pg_try_advisory_lock_shared" => Some(SessionEffect::Pin(PinReason::AdvisoryLock)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effects(sql: &str) -> Vec<SessionEffect> {
        analyze(sql).effects
    }

    #[test]
    fn set_and_reset() {
        assert_eq!(
            effects("SET search_path TO app, public"),
            vec![SessionEffect::Set {
                name: "search_path".into(),
                statement: "SET search_path TO app, public".into()
            }]
        );
        assert_eq!(effects("SET LOCAL statement_timeout = 5"), vec![]);
        assert_eq!(
            effects("set TimeZone = default"),
            vec![SessionEffect::Reset {
                name: "timezone".into()
            }]
        );
        assert_eq!(effects("RESET ALL"), vec![SessionEffect::ResetAll]);
        assert_eq!(
            effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            vec![]
        );
    }

    #[test]
    fn multi_statement_keeps_each_set_text() {
        let e = effects("SELECT 1; SET application_name = 'x'; SET datestyle TO 'ISO'");
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            SessionEffect::Set {
                name: "application_name".into(),
                statement: "SET application_name = 'x'".into()
            }
        );
    }

    #[test]
    fn pins() {
        for (sql, reason) in [
            ("LISTEN chan", PinReason::Listen),
            ("CREATE TEMP TABLE t (a int)", PinReason::TempObject),
            ("SELECT 1 INTO TEMP t2", PinReason::TempObject),
            ("PREPARE p AS SELECT 1", PinReason::SqlPrepare),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                PinReason::HoldCursor,
            ),
            ("SELECT pg_advisory_lock(42)", PinReason::AdvisoryLock),
            ("SELECT set_config('a.b', 'c', false)", PinReason::SetConfig),
            ("SET ROLE app", PinReason::SetRole),
            ("SET SESSION AUTHORIZATION app", PinReason::SetRole),
        ] {
            assert_eq!(effects(sql), vec![SessionEffect::Pin(reason)], "{sql}");
        }
        assert_eq!(effects("DECLARE c CURSOR FOR SELECT 1"), vec![]);
        assert_eq!(effects("SELECT pg_advisory_xact_lock(1)"), vec![]);
    }

    #[test]
    fn discard_all_and_parse_errors() {
        assert_eq!(effects("DISCARD ALL"), vec![SessionEffect::DiscardAll]);
        assert_eq!(effects("DISCARD PLANS"), vec![]);
        let a = analyze("SET = broken");
        assert!(a.parse_error.is_some() && a.effects.is_empty());
    }
}
