//! The plan rules over the flattened nodes of one plan: the registry,
//! what every rule sees, and the wording shared by the rule files
//! (`scans.rs`: reading rows and estimating them; `operators.rs`: sorts,
//! hashes and joins). Each rule returns the insight about its worst node,
//! or nothing.

use super::{operators, scans, Node, PlanInsight, TableStats};

/// What every rule may look at besides the nodes.
pub(super) struct Context<'a> {
    pub(super) analyzed: bool,
    pub(super) tables: &'a TableStats,
}

type Rule = fn(&[Node<'_>], &Context<'_>) -> Option<PlanInsight>;

/// Every rule, in the order insights are listed.
pub(super) const ALL: &[Rule] = &[
    scans::seq_scan,
    scans::rows_removed_by_filter,
    scans::misestimate,
    operators::sort_spill,
    operators::hash_spill,
    operators::nested_loop_large_outer,
    scans::heap_fetches,
];

/// A `work_mem` value of at least `kb`: a power of two in MB, ≥ 8 MB.
pub(super) fn work_mem_for(kb: f64) -> String {
    let mb = (kb / 1024.0).ceil().max(8.0) as u64;
    format!("{}MB", mb.next_power_of_two())
}

/// 1234567.8 → "1,234,568".
pub(super) fn count(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 0.00123 → "0.12 %", 0.995 → "99.5 %".
pub(super) fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p < 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1_234_567.8), "1,234,568");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(-3.0), "0");
        assert_eq!(percent(0.00123), "0.12 %");
        assert_eq!(percent(0.995), "99.5 %");
        assert_eq!(work_mem_for(100.0), "8MB");
        assert_eq!(work_mem_for(2312.0 * 3.0), "8MB");
        assert_eq!(work_mem_for(14_432.0 * 3.0), "64MB");
    }
}
