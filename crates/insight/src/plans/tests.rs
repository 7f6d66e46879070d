//! Rules against EXPLAIN output captured from PostgreSQL 15 (see
//! `tests/fixtures/plans/README.md` for the schema and the statements).

use serde_json::{json, Value};

use super::*;

fn fixture(name: &str) -> Value {
    let text = match name {
        "clean_index_scan" => include_str!("../../tests/fixtures/plans/clean_index_scan.json"),
        "small_seq_scan_estimated" => {
            include_str!("../../tests/fixtures/plans/small_seq_scan_estimated.json")
        }
        "seq_scan_estimated" => include_str!("../../tests/fixtures/plans/seq_scan_estimated.json"),
        "seq_scan_generic" => include_str!("../../tests/fixtures/plans/seq_scan_generic.json"),
        "seq_scan_analyzed" => include_str!("../../tests/fixtures/plans/seq_scan_analyzed.json"),
        "misestimate" => include_str!("../../tests/fixtures/plans/misestimate.json"),
        "sort_spill" => include_str!("../../tests/fixtures/plans/sort_spill.json"),
        "sort_spill_parallel" => {
            include_str!("../../tests/fixtures/plans/sort_spill_parallel.json")
        }
        "hash_spill" => include_str!("../../tests/fixtures/plans/hash_spill.json"),
        "hashagg_spill" => include_str!("../../tests/fixtures/plans/hashagg_spill.json"),
        "nested_loop" => include_str!("../../tests/fixtures/plans/nested_loop.json"),
        "nested_loop_estimated" => {
            include_str!("../../tests/fixtures/plans/nested_loop_estimated.json")
        }
        "heap_fetches" => include_str!("../../tests/fixtures/plans/heap_fetches.json"),
        other => panic!("no fixture {other}"),
    };
    parse_explain(text).unwrap_or_else(|| panic!("fixture {name} is JSON"))
}

/// `pg_class` of the fixture database.
fn tables() -> TableStats {
    [
        ("orders", 1_000_000.0, 7373.0),
        ("customers", 50_000.0, 319.0),
        ("events", 200_000.0, 1082.0),
    ]
    .into_iter()
    .map(|(name, rows, pages)| (name.to_owned(), TableSize { rows, pages }))
    .collect()
}

fn rules(insights: &[PlanInsight]) -> Vec<&'static str> {
    insights.iter().map(|i| i.rule).collect()
}

fn only<'a>(insights: &'a [PlanInsight], rule: &str) -> &'a PlanInsight {
    insights
        .iter()
        .find(|i| i.rule == rule)
        .unwrap_or_else(|| panic!("{rule} in {insights:#?}"))
}

#[test]
fn a_clean_plan_yields_nothing() {
    assert!(analyze_plan(&fixture("clean_index_scan"), true).is_empty());
    assert!(analyze_plan_with(&fixture("clean_index_scan"), true, &tables()).is_empty());
    let small = fixture("small_seq_scan_estimated");
    assert!(
        analyze_plan_with(&small, false, &tables()).is_empty(),
        "10 % of a 50,000-row table is no index candidate"
    );
    assert!(analyze_plan(&small, false).is_empty(), "cheap by cost too");
}

#[test]
fn seq_scan_with_a_selective_filter_on_a_large_table() {
    let found = analyze_plan_with(&fixture("seq_scan_estimated"), false, &tables());
    assert_eq!(rules(&found), ["seq_scan"]);
    let i = &found[0];
    assert_eq!(i.severity, Severity::Critical);
    assert!(i.message.contains("orders"), "{}", i.message);
    assert!(i.message.contains("~1,000,000 rows"), "{}", i.message);
    assert!(i.message.contains("(customer_id = 42)"), "{}", i.message);
    assert!(
        i.fix
            .starts_with("CREATE INDEX CONCURRENTLY ON orders (customer_id);"),
        "{}",
        i.fix
    );
}

#[test]
fn seq_scan_judged_by_cost_without_table_sizes() {
    let found = analyze_plan(&fixture("seq_scan_estimated"), false);
    let i = only(&found, "seq_scan");
    assert_eq!(i.severity, Severity::Warning, "size unknown: not critical");
    assert!(i.message.contains("cost 12581"), "{}", i.message);
}

#[test]
fn seq_scan_of_a_generic_plan_names_every_filtered_column() {
    let found = analyze_plan_with(&fixture("seq_scan_generic"), false, &tables());
    let i = only(&found, "seq_scan");
    assert!(
        i.fix.contains("ON orders (customer_id, status)"),
        "{}",
        i.fix
    );
    assert!(i.message.contains("$1"), "{}", i.message);
}

#[test]
fn analyzed_seq_scan_also_reports_rows_removed() {
    let found = analyze_plan(&fixture("seq_scan_analyzed"), true);
    assert_eq!(rules(&found), ["seq_scan", "rows_removed_by_filter"]);
    let removed = only(&found, "rows_removed_by_filter");
    assert_eq!(removed.severity, Severity::Warning);
    assert!(removed.message.contains("100.0 %"), "{}", removed.message);
    assert!(
        removed.fix.contains("ON orders (customer_id)"),
        "{}",
        removed.fix
    );
    let seq = only(&found, "seq_scan");
    assert!(
        seq.message.contains("~1,000,002 rows"),
        "table size from actual + removed rows of 3 processes: {}",
        seq.message
    );
}

#[test]
fn rows_removed_needs_analyze() {
    let found = analyze_plan(&fixture("seq_scan_analyzed"), false);
    assert!(!rules(&found).contains(&"rows_removed_by_filter"));
}

#[test]
fn misestimate_of_correlated_columns() {
    let found = analyze_plan(&fixture("misestimate"), true);
    let i = only(&found, "misestimate");
    assert_eq!(i.severity, Severity::Info, "96× is in the 10–100× band");
    assert!(i.message.contains("under-estimated"), "{}", i.message);
    assert!(i.message.contains("96×"), "{}", i.message);
    assert!(
        i.fix.contains("CREATE STATISTICS ON a, b FROM orders"),
        "{}",
        i.fix
    );
    assert!(analyze_plan(&fixture("misestimate"), false)
        .iter()
        .all(|i| i.rule != "misestimate"));
}

/// A one-node plan with the given row counts.
fn scan(planned: u64, actual: u64, loops: u64) -> Value {
    json!([{"Plan": {
        "Node Type": "Index Scan", "Relation Name": "t", "Index Name": "t_pkey",
        "Plan Rows": planned, "Actual Rows": actual, "Actual Loops": loops,
        "Index Cond": "(id = $1)"
    }}])
}

#[test]
fn misestimate_bands_and_floor() {
    let severity = |planned, actual, loops| {
        analyze_plan(&scan(planned, actual, loops), true)
            .into_iter()
            .find(|i| i.rule == "misestimate")
            .map(|i| i.severity)
    };
    assert_eq!(severity(1, 5000, 1), Some(Severity::Critical));
    assert_eq!(severity(10, 1500, 1), Some(Severity::Warning));
    assert_eq!(
        severity(5000, 200, 1),
        Some(Severity::Info),
        "over-estimate"
    );
    assert_eq!(severity(100, 900, 1), None, "9× is within 10×");
    assert_eq!(severity(1, 50, 1), None, "too few rows to matter");
    assert_eq!(
        severity(1, 50, 100),
        Some(Severity::Info),
        "… unless it loops"
    );
    assert_eq!(
        severity(1, 0, 1),
        None,
        "a row estimate of 1 for none is fine"
    );
}

#[test]
fn sort_spill_suggests_work_mem() {
    let found = analyze_plan(&fixture("sort_spill"), true);
    assert_eq!(rules(&found), ["sort_spill"]);
    let i = &found[0];
    assert!(i.message.contains("by amount"), "{}", i.message);
    assert!(i.message.contains("2,312 kB"), "{}", i.message);
    assert!(i.fix.contains("work_mem = '8MB'"), "{}", i.fix);

    let parallel = analyze_plan(&fixture("sort_spill_parallel"), true);
    let i = only(&parallel, "sort_spill");
    assert!(
        i.message.contains("14,432 kB"),
        "largest process: {}",
        i.message
    );
    assert!(i.fix.contains("work_mem = '64MB'"), "{}", i.fix);
}

#[test]
fn hash_spill_for_joins_and_aggregates() {
    let join = analyze_plan(&fixture("hash_spill"), true);
    assert_eq!(rules(&join), ["hash_spill"]);
    assert!(
        join[0].message.contains("32 batches"),
        "{}",
        join[0].message
    );
    assert!(join[0].fix.contains("work_mem"), "{}", join[0].fix);

    let agg = analyze_plan(&fixture("hashagg_spill"), true);
    let i = only(&agg, "hash_spill");
    assert!(i.message.starts_with("Hash aggregate"), "{}", i.message);
    assert!(i.message.contains("85 batches"), "{}", i.message);
}

#[test]
fn nested_loop_over_a_large_outer_side() {
    let found = analyze_plan(&fixture("nested_loop"), true);
    assert_eq!(rules(&found), ["nested_loop_large_outer"]);
    let i = &found[0];
    assert_eq!(i.severity, Severity::Warning);
    assert!(i.message.contains("200,000 rows"), "{}", i.message);
    assert!(
        i.message.contains("Index Scan using orders_pkey on orders"),
        "{}",
        i.message
    );
    assert!(i.fix.contains("enable_nestloop = off"), "{}", i.fix);

    let estimated = analyze_plan(&fixture("nested_loop_estimated"), false);
    let i = only(&estimated, "nested_loop_large_outer");
    assert!(i.message.contains("~194,975 rows"), "{}", i.message);
}

#[test]
fn heap_fetches_on_an_index_only_scan() {
    let found = analyze_plan(&fixture("heap_fetches"), true);
    assert_eq!(rules(&found), ["heap_fetches"]);
    let i = &found[0];
    assert_eq!(i.severity, Severity::Warning);
    assert!(
        i.message.contains("667 times for 500 rows"),
        "{}",
        i.message
    );
    assert!(i.fix.starts_with("VACUUM (ANALYZE) events;"), "{}", i.fix);
}

#[test]
fn anything_else_is_not_a_plan() {
    for v in [
        Value::Null,
        json!([]),
        json!({"foo": 1}),
        json!([{"Plan": 3}]),
        json!("Seq Scan"),
    ] {
        assert!(analyze_plan(&v, true).is_empty(), "{v}");
    }
    assert!(parse_explain("not json").is_none());
    // Wrong types inside a node are ignored, not trusted.
    let odd = json!({"Node Type": "Seq Scan", "Filter": 5, "Plan Rows": "many", "Plans": "x"});
    assert!(analyze_plan(&odd, true).is_empty());
}

#[test]
fn relations_to_size() {
    assert_eq!(
        seq_scan_relations(&fixture("seq_scan_estimated")),
        ["orders"]
    );
    assert_eq!(seq_scan_relations(&fixture("hash_spill")), ["customers"]);
    assert!(seq_scan_relations(&fixture("clean_index_scan")).is_empty());
}

#[test]
fn only_single_preparable_statements_are_explainable() {
    let params = |sql: &str| explainable(sql).map(|e| e.params);
    assert_eq!(
        params("SELECT id FROM orders WHERE customer_id = $1 AND status = $2"),
        Some(2)
    );
    assert_eq!(params("SELECT 1"), Some(0));
    assert_eq!(params("VALUES ($1), ($3)"), Some(3));
    assert_eq!(params("UPDATE t SET a = $1 WHERE id = $2"), Some(2));
    assert_eq!(params("INSERT INTO t VALUES ($1)"), Some(1));
    assert_eq!(params("DELETE FROM t"), Some(0));
    assert_eq!(params("SELECT 1; DROP TABLE t"), None, "two statements");
    assert_eq!(params("SELECT 1; COMMIT"), None);
    assert_eq!(params("DROP TABLE t"), None);
    assert_eq!(params("SELECT * INTO t2 FROM t"), None, "creates a table");
    assert_eq!(params("BEGIN"), None);
    assert_eq!(params("SET work_mem = '1GB'"), None);
    assert_eq!(
        params("SELECT id FROM t WHERE a IN ($1, $2 …"),
        None,
        "cut text"
    );
    assert_eq!(params(""), None);
    assert_eq!(
        params(
            "SELECT '$9', \"$8\", $$ $7 $$, $tag$ $6 $tag$ /* $5 */ -- $4\n FROM t WHERE a = $2"
        ),
        Some(2),
        "only real parameters count"
    );
}

#[test]
fn rules_table_matches_the_rule_ids() {
    let mut seen: Vec<&str> = Vec::new();
    for name in [
        "seq_scan_analyzed",
        "misestimate",
        "sort_spill",
        "hash_spill",
        "nested_loop",
        "heap_fetches",
    ] {
        seen.extend(rules(&analyze_plan(&fixture(name), true)));
    }
    seen.sort();
    seen.dedup();
    let mut all = RULES.to_vec();
    all.sort();
    assert_eq!(seen, all, "every rule has a fixture that triggers it");
    assert!(!needs_analyze("seq_scan") && needs_analyze("sort_spill"));
}
