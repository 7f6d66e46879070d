//! A complete walk of one statement's queries and expressions, for the
//! facts that must not miss a single node: relations read and written,
//! functions called, and what makes a result uncacheable.
//!
//! `pg_query`'s own `nodes()` walk visits only part of a tree (not VALUES
//! lists, LIMIT, array constructors, FILTER, window clauses, the relation
//! under TABLESAMPLE…); a cache keyed on its table list would miss
//! invalidations. This walk visits every node kind that can occur in a
//! query or DML statement and reports any other kind as
//! [`Tree::unsupported`], so that a gap here refuses caching instead of
//! serving stale rows. [`crate::classify`] and [`crate::cacheable`] read
//! the result.

mod expr;

use pg_query::protobuf::{self, Node};
use pg_query::NodeEnum;

use crate::cacheable::TableRef;

/// Deeper trees are reported as unsupported. `pg_query`'s protobuf decoder
/// already rejects trees nested more than about 100 messages deep, so this
/// only bounds the recursion should that change.
const MAX_DEPTH: u32 = 256;

/// What the walk of one statement found.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    /// Relations in FROM, JOIN, subqueries and CTE bodies, CTE references
    /// excluded; without duplicates.
    pub reads: Vec<TableRef>,
    /// Targets of INSERT/UPDATE/DELETE/MERGE (also in CTEs) and SELECT INTO.
    pub writes: Vec<TableRef>,
    /// Lower-case unqualified names of the functions called.
    pub functions: Vec<String>,
    /// Names of the CTEs defined anywhere in the statement.
    pub cte_names: Vec<String>,
    /// FOR UPDATE/SHARE/NO KEY UPDATE/KEY SHARE somewhere.
    pub row_locks: bool,
    /// `SELECT … INTO`.
    pub select_into: bool,
    /// A CTE whose body is INSERT/UPDATE/DELETE/MERGE.
    pub writing_cte: bool,
    /// CURRENT_DATE, CURRENT_USER… (SQLValueFunction).
    pub value_function: bool,
    /// TABLESAMPLE.
    pub tablesample: bool,
    /// A string naming the current time (`'now'`, `'today'`…) that may be
    /// read as a date or time.
    pub current_time_literal: bool,
    /// A cast to an OID alias type (`'t'::regclass`).
    pub catalog_lookup_cast: bool,
    /// A node kind this walk does not know, or a tree too deep.
    pub unsupported: bool,
}

/// Walks the queries and expressions of one statement. Statements without
/// a query part (most DDL) yield an empty [`Tree`].
pub(crate) fn statement(stmt: &NodeEnum) -> Tree {
    let mut w = Walker {
        out: Tree::default(),
        scope: Vec::new(),
        depth: 0,
    };
    match stmt {
        NodeEnum::ExplainStmt(e) => w.opt(&e.query),
        NodeEnum::CopyStmt(c) => {
            w.opt(&c.query);
            w.opt(&c.where_clause);
        }
        NodeEnum::CreateTableAsStmt(c) => w.opt(&c.query),
        NodeEnum::DeclareCursorStmt(c) => w.opt(&c.query),
        NodeEnum::PrepareStmt(p) => w.opt(&p.query),
        NodeEnum::ViewStmt(v) => w.opt(&v.query),
        NodeEnum::ExecuteStmt(e) => w.list(&e.params),
        NodeEnum::CallStmt(c) => {
            if let Some(f) = &c.funccall {
                w.func_call(f);
            }
        }
        NodeEnum::SelectStmt(_)
        | NodeEnum::InsertStmt(_)
        | NodeEnum::UpdateStmt(_)
        | NodeEnum::DeleteStmt(_)
        | NodeEnum::MergeStmt(_) => w.dispatch(stmt),
        _ => {}
    }
    w.out
}

/// The lower-case unqualified name of a called function.
pub(crate) fn function_name(f: &protobuf::FuncCall) -> Option<String> {
    match f.funcname.last().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
        _ => None,
    }
}

/// A relation as the parser gives it.
pub(crate) fn table_ref(r: &protobuf::RangeVar) -> TableRef {
    TableRef {
        schema: (!r.schemaname.is_empty()).then(|| r.schemaname.clone()),
        name: r.relname.clone(),
    }
}

pub(crate) fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

struct Walker<'t> {
    out: Tree,
    /// CTE names visible at this point of the walk, innermost last.
    scope: Vec<&'t str>,
    depth: u32,
}

impl<'t> Walker<'t> {
    fn list(&mut self, nodes: &'t [Node]) {
        nodes.iter().for_each(|n| self.node(n));
    }

    fn opt(&mut self, node: &'t Option<Box<Node>>) {
        if let Some(n) = node {
            self.node(n);
        }
    }

    fn node(&mut self, n: &'t Node) {
        if let Some(n) = &n.node {
            self.dispatch(n);
        }
    }

    /// Every node passes here, so this is where depth is bounded.
    fn dispatch(&mut self, n: &'t NodeEnum) {
        if self.depth >= MAX_DEPTH {
            self.out.unsupported = true;
            return;
        }
        self.depth += 1;
        self.query_or_from_item(n);
        self.depth -= 1;
    }

    fn query_or_from_item(&mut self, n: &'t NodeEnum) {
        use NodeEnum as N;
        match n {
            N::SelectStmt(s) => self.select(s),
            N::InsertStmt(s) => self.insert(s),
            N::UpdateStmt(s) => self.update(s),
            N::DeleteStmt(s) => self.delete(s),
            N::MergeStmt(s) => self.merge(s),
            N::RangeVar(r) => self.read(r),
            N::JoinExpr(j) => {
                self.opt(&j.larg);
                self.opt(&j.rarg);
                self.opt(&j.quals);
            }
            N::RangeSubselect(s) => self.opt(&s.subquery),
            N::RangeFunction(f) => self.range_function(f),
            N::RangeTableFunc(f) => {
                self.opt(&f.docexpr);
                self.opt(&f.rowexpr);
                self.list(&f.namespaces);
                self.list(&f.columns);
            }
            N::RangeTableFuncCol(c) => {
                self.opt(&c.colexpr);
                self.opt(&c.coldefexpr);
            }
            N::RangeTableSample(s) => {
                self.out.tablesample = true;
                self.opt(&s.relation);
                self.list(&s.args);
                self.opt(&s.repeatable);
            }
            N::LockingClause(_) => self.out.row_locks = true,
            other => self.expression(other),
        }
    }

    fn select(&mut self, s: &'t protobuf::SelectStmt) {
        let scope = self.with(s.with_clause.as_ref());
        if let Some(into) = &s.into_clause {
            self.out.select_into = true;
            if let Some(rel) = &into.rel {
                push_unique(&mut self.out.writes, table_ref(rel));
            }
        }
        for list in [
            &s.distinct_clause,
            &s.target_list,
            &s.from_clause,
            &s.group_clause,
            &s.window_clause,
            &s.values_lists,
            &s.sort_clause,
            &s.locking_clause,
        ] {
            self.list(list);
        }
        for expr in [
            &s.where_clause,
            &s.having_clause,
            &s.limit_offset,
            &s.limit_count,
        ] {
            self.opt(expr);
        }
        for arm in [&s.larg, &s.rarg].into_iter().flatten() {
            self.guarded(|w| w.select(arm));
        }
        self.scope.truncate(scope);
    }

    fn insert(&mut self, s: &'t protobuf::InsertStmt) {
        let scope = self.with(s.with_clause.as_ref());
        self.write(s.relation.as_ref());
        self.list(&s.cols);
        self.opt(&s.select_stmt);
        if let Some(c) = &s.on_conflict_clause {
            if let Some(infer) = &c.infer {
                self.list(&infer.index_elems);
                self.opt(&infer.where_clause);
            }
            self.list(&c.target_list);
            self.opt(&c.where_clause);
        }
        self.returning(s.returning_clause.as_ref());
        self.scope.truncate(scope);
    }

    fn update(&mut self, s: &'t protobuf::UpdateStmt) {
        let scope = self.with(s.with_clause.as_ref());
        self.write(s.relation.as_ref());
        self.list(&s.target_list);
        self.list(&s.from_clause);
        self.opt(&s.where_clause);
        self.returning(s.returning_clause.as_ref());
        self.scope.truncate(scope);
    }

    fn delete(&mut self, s: &'t protobuf::DeleteStmt) {
        let scope = self.with(s.with_clause.as_ref());
        self.write(s.relation.as_ref());
        self.list(&s.using_clause);
        self.opt(&s.where_clause);
        self.returning(s.returning_clause.as_ref());
        self.scope.truncate(scope);
    }

    fn merge(&mut self, s: &'t protobuf::MergeStmt) {
        let scope = self.with(s.with_clause.as_ref());
        self.write(s.relation.as_ref());
        self.opt(&s.source_relation);
        self.opt(&s.join_condition);
        self.list(&s.merge_when_clauses);
        self.returning(s.returning_clause.as_ref());
        self.scope.truncate(scope);
    }

    /// Walks a WITH clause's CTE bodies, each with the names it can see in
    /// scope, and leaves all its names in scope for the query that follows.
    /// Returns the scope length to restore after that query.
    fn with(&mut self, with: Option<&'t protobuf::WithClause>) -> usize {
        let base = self.scope.len();
        let Some(with) = with else {
            return base;
        };
        let ctes = || {
            with.ctes.iter().filter_map(|n| match &n.node {
                Some(NodeEnum::CommonTableExpr(c)) => Some(c.as_ref()),
                _ => None,
            })
        };
        if ctes().count() != with.ctes.len() {
            self.out.unsupported = true;
        }
        if with.recursive {
            self.scope.extend(ctes().map(|c| c.ctename.as_str()));
        }
        for cte in ctes() {
            push_unique(&mut self.out.cte_names, cte.ctename.clone());
            self.cte_body(cte);
            if !with.recursive {
                self.scope.push(&cte.ctename);
            }
        }
        base
    }

    fn cte_body(&mut self, cte: &'t protobuf::CommonTableExpr) {
        if let Some(query) = cte.ctequery.as_deref() {
            if matches!(
                query.node,
                Some(
                    NodeEnum::InsertStmt(_)
                        | NodeEnum::UpdateStmt(_)
                        | NodeEnum::DeleteStmt(_)
                        | NodeEnum::MergeStmt(_)
                )
            ) {
                self.out.writing_cte = true;
            }
            self.node(query);
        }
        if let Some(cycle) = &cte.cycle_clause {
            self.opt(&cycle.cycle_mark_value);
            self.opt(&cycle.cycle_mark_default);
        }
    }

    /// A relation in a FROM list: a CTE when its bare name is in scope.
    fn read(&mut self, r: &'t protobuf::RangeVar) {
        if r.schemaname.is_empty() && self.scope.contains(&r.relname.as_str()) {
            return;
        }
        push_unique(&mut self.out.reads, table_ref(r));
    }

    fn write(&mut self, r: Option<&protobuf::RangeVar>) {
        if let Some(r) = r {
            push_unique(&mut self.out.writes, table_ref(r));
        }
    }

    fn returning(&mut self, r: Option<&'t protobuf::ReturningClause>) {
        if let Some(r) = r {
            self.list(&r.exprs);
        }
    }

    /// `FROM f(…) AS x(a int)` and `ROWS FROM (…)`: each item is a list of
    /// the call and its column definitions (types only, not walked).
    fn range_function(&mut self, f: &'t protobuf::RangeFunction) {
        for item in &f.functions {
            match &item.node {
                Some(NodeEnum::List(l)) => {
                    if let Some(call) = l.items.first() {
                        self.node(call);
                    }
                }
                _ => self.node(item),
            }
        }
    }

    /// Runs `f` one level deeper, for recursion that bypasses [`Self::dispatch`].
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        if self.depth >= MAX_DEPTH {
            self.out.unsupported = true;
            return;
        }
        self.depth += 1;
        f(self);
        self.depth -= 1;
    }
}
