//! The recording path's allocation promise, checked with a counting
//! allocator: recording a query of an already seen fingerprint (with an
//! endpoint, across window roll-overs) allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use pgpilot_insight::{Clock, Location, QueryEvent, QueryStore, Shape, StoreLimits};

/// Counts allocations made by the current thread (other test threads do
/// not disturb the count).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only adds a thread-local counter
// (a const-initialized `Cell`, which never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn recording_a_seen_fingerprint_does_not_allocate() {
    let t0 = Instant::now();
    let store = QueryStore::new(
        StoreLimits::default(),
        Clock::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_040)),
    );
    let shape = Arc::new(Shape {
        fingerprint: 7,
        fingerprint_hex: "0000000000000007".into(),
        normalized: "SELECT name FROM users WHERE id = $1".into(),
        parsed: true,
    });
    let ev = QueryEvent {
        shape,
        duration: Duration::from_micros(1500),
        rows: 1,
        error: None,
        location: Location::Primary,
        endpoint: Some(Arc::from("/users/:id")),
    };
    // First sight: the entry, its histograms and the endpoint are created
    // (which also shows the counter counts).
    let first = allocations();
    store.record(&ev, t0);
    assert!(allocations() > first, "a new fingerprint allocates");

    let before = allocations();
    for i in 0..10_000u64 {
        // Two hours of simulated time: minute and hour windows roll over.
        store.record(&ev, t0 + Duration::from_millis(i * 720));
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations on the recording path"
    );
    assert_eq!(
        store.top(pgpilot_insight::TopBy::Calls, 1, t0)[0].calls,
        10_001
    );
}

#[test]
fn insight_is_shareable_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<pgpilot_insight::Insight>();
    send::<pgpilot_insight::NPlusOneTracker>();
}
