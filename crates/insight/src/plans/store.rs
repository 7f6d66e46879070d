//! The latest EXPLAIN of each explained fingerprint, shown in its detail
//! (`GET /api/queries/{fp}` → `plan`). Bounded: at most [`MAX_PLANS`]
//! plans; when full, the oldest makes room. Plans larger than
//! [`MAX_PLAN_BYTES`] keep their metadata but not their JSON.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::clock::rfc3339;

/// Plans kept.
pub const MAX_PLANS: usize = 500;
/// Larger plans (serialized) are not kept, only their insights.
pub const MAX_PLAN_BYTES: usize = 256 * 1024;

/// How a plan was obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanSource {
    /// `EXPLAIN ANALYZE`: actual rows, timings, spills.
    pub analyzed: bool,
    /// A generic plan (`$n` as NULL under `plan_cache_mode =
    /// force_generic_plan`) rather than one for captured parameter values.
    pub generic: bool,
}

/// One stored plan for the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanView {
    /// When it was explained, RFC 3339 UTC.
    pub at: String,
    #[serde(flatten)]
    pub source: PlanSource,
    /// Rules it triggered.
    pub rules: Vec<&'static str>,
    /// Size of the EXPLAIN JSON in bytes.
    pub plan_bytes: usize,
    /// The EXPLAIN (FORMAT JSON) output; null when over [`MAX_PLAN_BYTES`].
    pub plan: Value,
}

struct Slot {
    view: PlanView,
    at_us: u64,
}

/// Fingerprint → latest plan, shared by the explain task and the API.
pub struct PlanStore {
    map: Mutex<HashMap<u64, Slot>>,
    capacity: usize,
}

impl Default for PlanStore {
    fn default() -> PlanStore {
        PlanStore::new(MAX_PLANS)
    }
}

impl PlanStore {
    pub fn new(capacity: usize) -> PlanStore {
        PlanStore {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Keeps `plan` as `fingerprint`'s latest, explained at `at_unix_us`;
    /// returns how the plan it replaces was obtained.
    pub fn insert(
        &self,
        fingerprint: u64,
        plan: &Value,
        source: PlanSource,
        rules: Vec<&'static str>,
        at_unix_us: u64,
    ) -> Option<PlanSource> {
        let plan_bytes = serde_json::to_string(plan).map_or(0, |s| s.len());
        let view = PlanView {
            at: rfc3339(at_unix_us),
            source,
            rules,
            plan_bytes,
            plan: if plan_bytes <= MAX_PLAN_BYTES {
                plan.clone()
            } else {
                Value::Null
            },
        };
        let mut map = self.map.lock();
        if !map.contains_key(&fingerprint) && map.len() >= self.capacity {
            let oldest = map.iter().min_by_key(|(_, s)| s.at_us).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            fingerprint,
            Slot {
                view,
                at_us: at_unix_us,
            },
        )
        .map(|old| old.view.source)
    }

    /// The latest plan of `fingerprint`.
    pub fn get(&self, fingerprint: u64) -> Option<PlanView> {
        self.map.lock().get(&fingerprint).map(|s| s.view.clone())
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_plan_per_fingerprint_bounded_by_age() {
        let store = PlanStore::new(2);
        let plan = serde_json::json!([{"Plan": {"Node Type": "Result"}}]);
        let analyzed = PlanSource {
            analyzed: true,
            generic: false,
        };
        assert_eq!(store.insert(1, &plan, analyzed, vec![], 10), None);
        assert_eq!(
            store.insert(1, &plan, PlanSource::default(), vec!["seq_scan"], 20),
            Some(analyzed)
        );
        store.insert(2, &plan, PlanSource::default(), vec![], 30);
        store.insert(3, &plan, PlanSource::default(), vec![], 40);
        assert_eq!(store.len(), 2);
        assert!(store.get(1).is_none(), "the oldest made room");
        let view = store.get(3).unwrap_or_else(|| panic!("kept"));
        assert_eq!(view.plan, plan);
        let json = serde_json::to_value(&view).unwrap_or_default();
        assert_eq!(json["analyzed"], false);
        assert_eq!(json["plan"][0]["Plan"]["Node Type"], "Result");
    }

    #[test]
    fn huge_plans_keep_only_metadata() {
        let store = PlanStore::new(2);
        let plan = Value::String("x".repeat(MAX_PLAN_BYTES + 1));
        store.insert(1, &plan, PlanSource::default(), vec!["seq_scan"], 0);
        let view = store.get(1).unwrap_or_else(|| panic!("kept"));
        assert!(view.plan.is_null());
        assert!(view.plan_bytes > MAX_PLAN_BYTES);
        assert_eq!(view.rules, ["seq_scan"]);
    }
}
