//! The unified finding list behind `GET /api/findings` (a fixed contract):
//! lints ([`crate::lints`]), N+1 runs ([`crate::nplus1`]) and plan insights
//! (filed by the plan analyser through [`crate::Insight::add_finding`] with
//! kind `plan`), deduplicated by (kind, rule, fingerprint, endpoint) with a
//! count and first/last seen times. Bounded: when full, the finding seen
//! least recently makes room.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::clock::rfc3339;
use crate::lints::Severity;
use crate::shape::fingerprint_hex;

/// What produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    NPlusOne,
    Lint,
    Plan,
}

/// A finding to file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// Stable id: a lint rule, `n_plus_one`, or a plan rule such as `seq_scan`.
    pub rule: String,
    pub fingerprint: u64,
    pub endpoint: Option<Arc<str>>,
    pub severity: Severity,
    pub message: String,
    pub fix: String,
}

/// One finding for the JSON API. `kind`, `rule`, `fingerprint`, `endpoint`
/// (null when unknown), `message` and `fix` are the contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingView {
    pub kind: FindingKind,
    pub rule: String,
    /// 16 hex digits.
    pub fingerprint: String,
    pub endpoint: Option<String>,
    pub severity: Severity,
    /// The latest message (counts in it may change between occurrences).
    pub message: String,
    pub fix: String,
    /// Times filed.
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

type Key = (FindingKind, String, u64, Option<Arc<str>>);

/// A filed finding and when it was last seen (µs since the epoch).
struct Slot {
    view: FindingView,
    last_seen_us: u64,
}

/// Deduplicated findings, shared by all sessions.
pub struct Findings {
    map: Mutex<HashMap<Key, Slot>>,
    capacity: usize,
}

impl Findings {
    pub fn new(capacity: usize) -> Findings {
        Findings {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Files `f` seen at `at_unix_us`; returns its count so far.
    pub fn add(&self, f: Finding, at_unix_us: u64) -> u64 {
        let key: Key = (f.kind, f.rule, f.fingerprint, f.endpoint);
        let mut map = self.map.lock();
        if let Some(slot) = map.get_mut(&key) {
            slot.view.count += 1;
            slot.view.message = f.message;
            slot.view.fix = f.fix;
            slot.view.severity = slot.view.severity.max(f.severity);
            slot.view.last_seen = rfc3339(at_unix_us);
            slot.last_seen_us = at_unix_us;
            return slot.view.count;
        }
        if map.len() >= self.capacity {
            let stalest = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen_us)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                map.remove(&k);
            }
        }
        let seen = rfc3339(at_unix_us);
        let view = FindingView {
            kind: key.0,
            rule: key.1.clone(),
            fingerprint: fingerprint_hex(key.2),
            endpoint: key.3.as_deref().map(str::to_owned),
            severity: f.severity,
            message: f.message,
            fix: f.fix,
            count: 1,
            first_seen: seen.clone(),
            last_seen: seen,
        };
        map.insert(
            key,
            Slot {
                view,
                last_seen_us: at_unix_us,
            },
        );
        1
    }

    /// All findings, most severe first, then most frequent.
    pub fn views(&self) -> Vec<FindingView> {
        let mut out: Vec<FindingView> = self.map.lock().values().map(|s| s.view.clone()).collect();
        sort(&mut out);
        out
    }

    /// Findings about one fingerprint.
    pub fn for_fingerprint(&self, fingerprint: u64) -> Vec<FindingView> {
        let mut out: Vec<FindingView> = self
            .map
            .lock()
            .iter()
            .filter(|(k, _)| k.2 == fingerprint)
            .map(|(_, s)| s.view.clone())
            .collect();
        sort(&mut out);
        out
    }

    /// Withdraws the findings of `kind` about `fingerprint` for which
    /// `gone(rule, endpoint)` holds (a newer plan no longer shows them).
    pub fn remove_where(
        &self,
        kind: FindingKind,
        fingerprint: u64,
        gone: impl Fn(&str, Option<&str>) -> bool,
    ) {
        self.map
            .lock()
            .retain(|k, _| !(k.0 == kind && k.2 == fingerprint && gone(&k.1, k.3.as_deref())));
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }
}

fn sort(v: &mut [FindingView]) {
    v.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.count.cmp(&a.count))
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: FindingKind, rule: &str, fp: u64, endpoint: Option<&str>) -> Finding {
        Finding {
            kind,
            rule: rule.to_owned(),
            fingerprint: fp,
            endpoint: endpoint.map(Arc::from),
            severity: Severity::Warning,
            message: format!("{rule} on {fp}"),
            fix: "fix it".to_owned(),
        }
    }

    #[test]
    fn deduplicated_by_kind_rule_fingerprint_endpoint() {
        let f = Findings::new(10);
        assert_eq!(
            f.add(
                finding(FindingKind::Lint, "select_star", 1, None),
                1_000_000
            ),
            1
        );
        assert_eq!(
            f.add(
                finding(FindingKind::Lint, "select_star", 1, None),
                2_000_000
            ),
            2
        );
        f.add(finding(FindingKind::Lint, "select_star", 2, None), 0);
        f.add(
            finding(FindingKind::NPlusOne, "n_plus_one", 1, Some("/a")),
            0,
        );
        f.add(
            finding(FindingKind::NPlusOne, "n_plus_one", 1, Some("/b")),
            0,
        );
        assert_eq!(f.len(), 4);
        let one = f.for_fingerprint(1);
        assert_eq!(one.len(), 3);
        let star = one
            .iter()
            .find(|v| v.rule == "select_star")
            .unwrap_or_else(|| panic!("filed"));
        assert_eq!(star.count, 2);
        assert_eq!(star.first_seen, "1970-01-01T00:00:01.000Z");
        assert_eq!(star.last_seen, "1970-01-01T00:00:02.000Z");
    }

    #[test]
    fn json_has_the_contract_fields() {
        let f = Findings::new(10);
        f.add(finding(FindingKind::NPlusOne, "n_plus_one", 0xab, None), 0);
        let json = serde_json::to_value(f.views()).unwrap_or_default();
        let v = &json[0];
        assert_eq!(v["kind"], "n_plus_one");
        assert_eq!(v["rule"], "n_plus_one");
        assert_eq!(v["fingerprint"], "00000000000000ab");
        assert!(v["endpoint"].is_null());
        assert!(v["message"].is_string() && v["fix"].is_string());
        let plan = serde_json::to_value(FindingKind::Plan).unwrap_or_default();
        assert_eq!(plan, "plan");
    }

    #[test]
    fn bounded_dropping_the_stalest() {
        let f = Findings::new(3);
        for fp in 0..3 {
            f.add(finding(FindingKind::Lint, "select_star", fp, None), fp * 10);
        }
        f.add(finding(FindingKind::Lint, "select_star", 0, None), 100);
        f.add(finding(FindingKind::Lint, "select_star", 9, None), 200);
        assert_eq!(f.len(), 3);
        assert!(
            f.for_fingerprint(1).is_empty(),
            "least recently seen dropped"
        );
        assert_eq!(f.for_fingerprint(0).len(), 1);
    }
}
