//! The expression half of the walk: function calls, casts, constants,
//! and the node kinds that only hold other expressions (SQL/JSON and XML
//! syntax among them).

use pg_query::protobuf::{self, a_const};
use pg_query::NodeEnum;

use super::{function_name, push_unique, Walker};
use crate::lexer::mentions_current_time;

/// Cast targets whose input can never be a date or time: a string that
/// names the current time, cast to one of these, is just text.
const NON_TIME_TYPES: &[&str] = &[
    "text", "varchar", "bpchar", "char", "name", "json", "jsonb", "jsonpath", "xml", "bytea",
    "citext", "bool", "int2", "int4", "int8", "float4", "float8", "numeric", "uuid", "tsvector",
    "tsquery",
];

/// OID alias types: casting a name to one reads the catalogs.
const REG_TYPES: &[&str] = &[
    "regclass",
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
];

impl<'t> Walker<'t> {
    pub(super) fn expression(&mut self, n: &'t NodeEnum) {
        use NodeEnum as N;
        match n {
            N::FuncCall(f) => self.func_call(f),
            N::TypeCast(c) => self.type_cast(c),
            N::AConst(c) => self.constant(c, None),
            N::SqlvalueFunction(_) => self.out.value_function = true,
            N::SubLink(l) => {
                self.opt(&l.testexpr);
                self.opt(&l.subselect);
            }
            N::AExpr(e) => {
                self.opt(&e.lexpr);
                self.opt(&e.rexpr);
            }
            N::BoolExpr(e) => self.list(&e.args),
            N::NullTest(e) => self.opt(&e.arg),
            N::BooleanTest(e) => self.opt(&e.arg),
            N::CaseExpr(e) => {
                self.opt(&e.arg);
                self.list(&e.args);
                self.opt(&e.defresult);
            }
            N::CaseWhen(w) => {
                self.opt(&w.expr);
                self.opt(&w.result);
            }
            N::CoalesceExpr(e) => self.list(&e.args),
            N::MinMaxExpr(e) => self.list(&e.args),
            N::RowExpr(e) => self.list(&e.args),
            N::AArrayExpr(e) => self.list(&e.elements),
            N::AIndirection(i) => {
                self.opt(&i.arg);
                self.list(&i.indirection);
            }
            N::AIndices(i) => {
                self.opt(&i.lidx);
                self.opt(&i.uidx);
            }
            other => self.clause(other),
        }
    }

    /// Parts of queries and expressions that only hold other nodes.
    fn clause(&mut self, n: &'t NodeEnum) {
        use NodeEnum as N;
        match n {
            N::ResTarget(t) => {
                self.list(&t.indirection);
                self.opt(&t.val);
            }
            N::NamedArgExpr(e) => self.opt(&e.arg),
            N::CollateClause(c) => self.opt(&c.arg),
            N::MultiAssignRef(m) => self.opt(&m.source),
            N::SortBy(s) => self.opt(&s.node),
            N::WindowDef(w) => self.window(w),
            N::GroupingSet(g) => self.list(&g.content),
            N::GroupingFunc(g) => self.list(&g.args),
            N::XmlExpr(x) => {
                self.list(&x.named_args);
                self.list(&x.args);
            }
            N::XmlSerialize(x) => self.opt(&x.expr),
            N::List(l) => self.list(&l.items),
            N::IndexElem(e) => self.opt(&e.expr),
            N::MergeWhenClause(m) => {
                self.opt(&m.condition);
                self.list(&m.target_list);
                self.list(&m.values);
            }
            N::ColumnRef(_)
            | N::ParamRef(_)
            | N::AStar(_)
            | N::String(_)
            | N::Integer(_)
            | N::Float(_)
            | N::Boolean(_)
            | N::BitString(_)
            | N::SetToDefault(_)
            | N::CurrentOfExpr(_)
            | N::MergeSupportFunc(_)
            | N::TypeName(_) => {}
            other => self.json(other),
        }
    }

    /// SQL/JSON syntax (PostgreSQL 16+).
    fn json(&mut self, n: &'t NodeEnum) {
        use NodeEnum as N;
        match n {
            N::JsonValueExpr(v) => self.json_value(v),
            N::JsonIsPredicate(p) => self.opt(&p.expr),
            N::JsonScalarExpr(e) => self.opt(&e.expr),
            N::JsonParseExpr(e) => self.json_values([&e.expr]),
            N::JsonSerializeExpr(e) => self.json_values([&e.expr]),
            N::JsonObjectConstructor(c) => self.list(&c.exprs),
            N::JsonArrayConstructor(c) => self.list(&c.exprs),
            N::JsonArrayQueryConstructor(c) => self.opt(&c.query),
            N::JsonKeyValue(kv) => {
                self.opt(&kv.key);
                self.json_values([&kv.value]);
            }
            N::JsonObjectAgg(a) => {
                self.json_agg(a.constructor.as_deref());
                if let Some(kv) = &a.arg {
                    self.opt(&kv.key);
                    self.json_values([&kv.value]);
                }
            }
            N::JsonArrayAgg(a) => {
                self.json_agg(a.constructor.as_deref());
                self.json_values([&a.arg]);
            }
            N::JsonFuncExpr(f) => {
                self.json_values([&f.context_item]);
                self.opt(&f.pathspec);
                self.list(&f.passing);
                self.json_behaviors([&f.on_empty, &f.on_error]);
            }
            N::JsonArgument(a) => self.json_values([&a.val]),
            N::JsonBehavior(b) => self.opt(&b.expr),
            N::JsonTable(t) => self.json_table(t),
            N::JsonTableColumn(c) => {
                self.json_path(c.pathspec.as_deref());
                self.list(&c.columns);
                self.json_behaviors([&c.on_empty, &c.on_error]);
            }
            _ => self.out.unsupported = true,
        }
    }

    pub(super) fn func_call(&mut self, f: &'t protobuf::FuncCall) {
        if let Some(name) = function_name(f) {
            push_unique(&mut self.out.functions, name);
        }
        self.list(&f.args);
        self.list(&f.agg_order);
        self.opt(&f.agg_filter);
        if let Some(w) = &f.over {
            self.window(w);
        }
    }

    fn window(&mut self, w: &'t protobuf::WindowDef) {
        self.list(&w.partition_clause);
        self.list(&w.order_clause);
        self.opt(&w.start_offset);
        self.opt(&w.end_offset);
    }

    /// Casts: `'t'::regclass` reads the catalogs; `'now'::timestamptz`,
    /// also through more casts (`'now'::text::date`), reads the clock.
    fn type_cast(&mut self, c: &'t protobuf::TypeCast) {
        let target = c.type_name.as_ref().and_then(last_name);
        if target.is_some_and(|t| REG_TYPES.contains(&t)) {
            self.out.catalog_lookup_cast = true;
        }
        let arg = c.arg.as_deref().and_then(|n| n.node.as_ref());
        match arg {
            Some(NodeEnum::AConst(k)) => self.constant(k, target),
            _ => {
                let inner = arg.and_then(cast_source);
                if may_read_time(target) && inner.is_some_and(names_current_time) {
                    self.out.current_time_literal = true;
                }
                self.opt(&c.arg);
            }
        }
    }

    /// A constant, optionally under a cast to `cast_to`. Without a cast its
    /// type comes from context (`WHERE day = 'today'` is a date).
    fn constant(&mut self, k: &protobuf::AConst, cast_to: Option<&str>) {
        if may_read_time(cast_to) && names_current_time(k) {
            self.out.current_time_literal = true;
        }
    }

    fn json_value(&mut self, v: &'t protobuf::JsonValueExpr) {
        self.opt(&v.raw_expr);
        self.opt(&v.formatted_expr);
    }

    fn json_values<const N: usize>(
        &mut self,
        values: [&'t Option<Box<protobuf::JsonValueExpr>>; N],
    ) {
        for v in values.into_iter().flatten() {
            self.guarded(|w| w.json_value(v));
        }
    }

    fn json_behaviors<const N: usize>(&mut self, bs: [&'t Option<Box<protobuf::JsonBehavior>>; N]) {
        for b in bs.into_iter().flatten() {
            self.opt(&b.expr);
        }
    }

    fn json_agg(&mut self, c: Option<&'t protobuf::JsonAggConstructor>) {
        if let Some(c) = c {
            self.opt(&c.agg_filter);
            self.list(&c.agg_order);
            if let Some(w) = &c.over {
                self.window(w);
            }
        }
    }

    fn json_path(&mut self, p: Option<&'t protobuf::JsonTablePathSpec>) {
        if let Some(p) = p {
            self.opt(&p.string);
        }
    }

    fn json_table(&mut self, t: &'t protobuf::JsonTable) {
        self.json_values([&t.context_item]);
        self.json_path(t.pathspec.as_deref());
        self.list(&t.passing);
        self.list(&t.columns);
        self.json_behaviors([&t.on_error]);
    }
}

/// The last part of a type name (`pg_catalog.timestamptz` → `timestamptz`).
fn last_name(t: &protobuf::TypeName) -> Option<&str> {
    match t.names.last().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::String(s)) => Some(&s.sval),
        _ => None,
    }
}

/// A value of this type (`None`: type from context) may be read as a date.
fn may_read_time(type_name: Option<&str>) -> bool {
    type_name.is_none_or(|t| !NON_TIME_TYPES.contains(&t))
}

/// The constant under a chain of casts and COLLATE clauses.
fn cast_source(mut n: &NodeEnum) -> Option<&protobuf::AConst> {
    loop {
        n = match n {
            NodeEnum::AConst(k) => return Some(k),
            NodeEnum::TypeCast(c) => c.arg.as_deref()?.node.as_ref()?,
            NodeEnum::CollateClause(c) => c.arg.as_deref()?.node.as_ref()?,
            _ => return None,
        };
    }
}

fn names_current_time(k: &protobuf::AConst) -> bool {
    matches!(&k.val, Some(a_const::Val::Sval(s)) if mentions_current_time(s.sval.as_bytes()))
}
