//! Unit tests of the cache as a whole: fills, hits, invalidation races,
//! TTL, refresh-ahead, the byte budget and stampede protection.

use super::*;
use bytes::Bytes;

fn limits() -> CacheLimits {
    CacheLimits {
        max_memory: 1 << 20,
        max_result_size: 64 << 10,
        ttl_min: Duration::from_secs(5),
        ttl_max: Duration::from_secs(300),
        ttl_per_ms: Duration::from_secs(1),
        refresh_ahead: true,
    }
}

fn fill(tables: &[&str], body: &'static [u8]) -> Fill {
    Fill {
        response: Bytes::from_static(body),
        database: "app".into(),
        user: "app".into(),
        sql: "SELECT v FROM t".into(),
        shape: 7,
        tables: tables.iter().map(|t| t.to_string()).collect(),
        tags: Vec::new(),
        ttl: None,
    }
}

fn lead(cache: &ResultCache, key: u128, now: Instant) -> FillTicket {
    match cache.begin(CacheKey(key), 1, now) {
        Begin::Lead(t) => t,
        _ => panic!("expected to lead"),
    }
}

fn hit_body(cache: &ResultCache, key: u128, now: Instant) -> Option<Bytes> {
    match cache.lookup(CacheKey(key), 7, now) {
        Lookup::Hit(e) => Some(e.response.clone()),
        _ => None,
    }
}

#[test]
fn a_fill_is_served_until_its_table_is_written() {
    let cache = ResultCache::new(limits());
    let now = Instant::now();
    assert!(hit_body(&cache, 1, now).is_none());
    let t = lead(&cache, 1, now);
    cache.complete(t, fill(&["t"], b"v1"), now).expect("stored");
    assert_eq!(hit_body(&cache, 1, now).as_deref(), Some(&b"v1"[..]));
    cache.invalidate(
        Source::Proxy,
        &Invalidation::Tables {
            database: "app".into(),
            tables: vec!["public.t".into()],
        },
    );
    assert!(hit_body(&cache, 1, now).is_none());
    assert_eq!(cache.stats().stale_dropped.load(Relaxed), 1);
    assert_eq!(cache.stats().invalidations_proxy.load(Relaxed), 1);
}

#[test]
fn a_result_that_raced_a_write_is_refused() {
    let cache = ResultCache::new(limits());
    let now = Instant::now();
    let t = lead(&cache, 1, now);
    // The write commits while the query runs.
    cache.invalidate(
        Source::Wal,
        &Invalidation::Tables {
            database: "app".into(),
            tables: vec!["t".into()],
        },
    );
    assert_eq!(
        cache.complete(t, fill(&["t"], b"old"), now),
        Err(Refused::Stale)
    );
    assert!(hit_body(&cache, 1, now).is_none());
    // Writes to other tables do not matter.
    let t = lead(&cache, 1, now);
    cache.invalidate(
        Source::Wal,
        &Invalidation::Tables {
            database: "app".into(),
            tables: vec!["u".into()],
        },
    );
    assert!(cache.complete(t, fill(&["t"], b"new"), now).is_ok());
}

#[test]
fn tags_databases_and_everything() {
    let cache = ResultCache::new(limits());
    let now = Instant::now();
    let mut tagged = fill(&["t"], b"x");
    tagged.tags = vec!["user:42".into()];
    cache
        .complete(lead(&cache, 1, now), tagged, now)
        .expect("stored");
    cache
        .complete(lead(&cache, 2, now), fill(&["t"], b"y"), now)
        .expect("stored");
    cache.invalidate(Source::Api, &Invalidation::Tags(vec!["user:42".into()]));
    assert!(hit_body(&cache, 1, now).is_none());
    assert!(hit_body(&cache, 2, now).is_some());
    cache.invalidate(Source::Api, &Invalidation::Database("other".into()));
    assert!(hit_body(&cache, 2, now).is_some());
    cache.invalidate(Source::Api, &Invalidation::All);
    assert!(hit_body(&cache, 2, now).is_none());
}

#[test]
fn ttl_grows_with_cost_within_bounds() {
    let l = limits();
    assert_eq!(l.ttl_for(Duration::ZERO), Duration::from_secs(5));
    assert_eq!(
        l.ttl_for(Duration::from_millis(10)),
        Duration::from_secs(15)
    );
    assert_eq!(l.ttl_for(Duration::from_secs(60)), Duration::from_secs(300));
}

#[test]
fn entries_expire_at_their_ttl() {
    let cache = ResultCache::new(limits());
    let now = Instant::now();
    let mut f = fill(&["t"], b"x");
    f.ttl = Some(Duration::from_secs(30));
    cache
        .complete(lead(&cache, 1, now), f, now)
        .expect("stored");
    assert!(hit_body(&cache, 1, now + Duration::from_secs(10)).is_some());
    assert!(hit_body(&cache, 1, now + Duration::from_secs(31)).is_none());
}

#[test]
fn one_caller_refreshes_a_hot_entry_past_half_its_ttl() {
    let cache = ResultCache::new(limits());
    let now = Instant::now();
    cache
        .complete(lead(&cache, 1, now), fill(&["t"], b"x"), now)
        .expect("stored");
    for _ in 0..3 {
        assert!(hit_body(&cache, 1, now).is_some());
    }
    let later = now + Duration::from_secs(3);
    assert!(matches!(
        cache.lookup(CacheKey(1), 7, later),
        Lookup::Refresh(_)
    ));
    assert!(
        matches!(cache.lookup(CacheKey(1), 7, later), Lookup::Hit(_)),
        "only one refresher"
    );
}

#[test]
fn oversize_results_are_not_stored() {
    let mut l = limits();
    l.max_result_size = 4;
    let cache = ResultCache::new(l);
    let now = Instant::now();
    assert_eq!(
        cache.complete(lead(&cache, 1, now), fill(&["t"], b"12345"), now),
        Err(Refused::TooLarge)
    );
    assert_eq!(cache.stats().oversize.load(Relaxed), 1);
}

#[test]
fn memory_stays_within_the_budget() {
    let mut l = limits();
    l.max_memory = 64 << 10;
    let cache = ResultCache::new(l);
    let now = Instant::now();
    static BODY: [u8; 4000] = [7; 4000];
    for k in 0..200u128 {
        cache
            .complete(lead(&cache, k, now), fill(&["t"], &BODY), now)
            .expect("stored");
    }
    cache.maintain();
    assert!(
        cache.weighted_size() <= 64 << 10,
        "{} bytes",
        cache.weighted_size()
    );
    assert!(cache.entry_count() < 200);
    assert!(cache.stats().evictions.load(Relaxed) > 0);
}

#[test]
fn listing_orders_by_size_and_hits() {
    let cache = ResultCache::new(limits());
    let now = Instant::now();
    cache
        .complete(lead(&cache, 1, now), fill(&["t"], b"small"), now)
        .expect("stored");
    cache
        .complete(
            lead(&cache, 2, now),
            fill(&["t"], b"a much bigger body"),
            now,
        )
        .expect("stored");
    for _ in 0..3 {
        hit_body(&cache, 1, now);
    }
    assert_eq!(
        cache.entries(EntryOrder::Biggest, 10, now)[0].key,
        CacheKey(2)
    );
    let hottest = cache.entries(EntryOrder::Hottest, 1, now);
    assert_eq!((hottest[0].key, hottest[0].hits), (CacheKey(1), 3));
    assert_eq!(cache.shapes(1)[0].0, 7);
}

#[tokio::test]
async fn followers_of_a_fill_hit_afterwards() {
    let cache = Arc::new(ResultCache::new(limits()));
    let now = Instant::now();
    let ticket = lead(&cache, 1, now);
    let mut waiters = Vec::new();
    for owner in 2..12 {
        let Begin::Follow(w) = cache.begin(CacheKey(1), owner, now) else {
            panic!("follows");
        };
        waiters.push(tokio::spawn(w.wait(Duration::from_secs(5))));
    }
    cache
        .complete(ticket, fill(&["t"], b"x"), now)
        .expect("stored");
    for w in waiters {
        assert!(w.await.expect("join"));
        assert!(hit_body(&cache, 1, now).is_some());
    }
}

#[test]
fn a_refreshed_entry_lives_its_own_ttl() {
    // moka's clock is the real one: real time, with wide margins.
    let mut l = limits();
    l.ttl_min = Duration::from_millis(400);
    l.ttl_max = Duration::from_millis(400);
    let cache = ResultCache::new(l);
    let start = Instant::now();
    cache
        .complete(lead(&cache, 1, start), fill(&["t"], b"old"), start)
        .expect("stored");
    for _ in 0..3 {
        assert!(hit_body(&cache, 1, start).is_some());
    }
    std::thread::sleep(Duration::from_millis(250));
    let now = Instant::now();
    assert!(matches!(
        cache.lookup(CacheKey(1), 7, now),
        Lookup::Refresh(_)
    ));
    cache
        .complete(lead(&cache, 1, now), fill(&["t"], b"new"), now)
        .expect("refreshed");
    // Past the first entry's deadline, within the refreshed one's.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        hit_body(&cache, 1, Instant::now()).as_deref(),
        Some(&b"new"[..])
    );
}
