//! Prints how long cluster starts and teardowns take on this machine:
//! `cargo run -p pgpilot-testkit --example start_timing`. The first start
//! may include building the machine's template.

use std::time::Instant;

use pgpilot_testkit::Cluster;

fn main() {
    type Start = fn() -> Cluster;
    let kinds: [(&str, Start); 2] = [
        ("primary_only", Cluster::primary_only),
        ("with_replica", Cluster::with_replica),
    ];
    for (name, start) in kinds {
        for _ in 0..3 {
            let began = Instant::now();
            let cluster = start();
            let started = began.elapsed();
            drop(cluster);
            println!(
                "{name}: start {started:?}, drop {:?}",
                began.elapsed() - started
            );
        }
    }
}
