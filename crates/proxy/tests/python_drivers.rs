//! Python drivers through pgpilot: asyncpg (prepares everything, pipelines
//! executemany) and psycopg 3 (named server-side statements with
//! `prepare_threshold=0`, pipeline mode, COPY). The checks live in
//! `tests/python/*.py`; each takes the proxy's URL and exits non-zero on
//! any failed check. A missing driver fails the test and says how to
//! install it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{external, Env};
use pgpilot_testkit::APP_PASSWORD;

/// Fails the test, with the install command, unless `python3` can import `module`.
async fn require_module(module: &str) {
    let mut cmd = external::command("python3", APP_PASSWORD);
    cmd.args(["-c", &format!("import {module}")]);
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(e) => panic!("python3 is not installed ({e}): run scripts/install-deps.sh"),
    };
    assert!(
        out.status.success(),
        "the Python module {module} is missing: run scripts/install-deps.sh\n{}",
        external::describe(&out)
    );
}

/// Runs `tests/python/<script>` against the proxy; its stdout on success.
async fn run_script(env: &Env, script: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut cmd = external::command("python3", APP_PASSWORD);
    cmd.arg(&path).arg(env.url());
    let out = external::run(cmd, Duration::from_secs(90)).await;
    assert!(
        out.status.success(),
        "{script} failed: {}",
        external::describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_pool_of_10_on_3_servers() {
    require_module("asyncpg").await;
    let env = Env::start("max_size = 3").await;
    let stdout = run_script(&env, "asyncpg_check.py").await;
    println!("{stdout}");
    assert!(stdout.contains(": ok: "), "{stdout}");
    let rt = &env.proxy.rt;
    assert!(
        rt.statements.len() >= 4,
        "asyncpg's named statements went through pgpilot's registry: {}",
        rt.statements.len()
    );
    let snap = &rt.backends.snapshots()[0];
    assert!(snap.sv_active + snap.sv_idle <= 3, "{snap:?}");
    assert_eq!(snap.checkout_timeouts, 0, "{snap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_named_statements_pipeline_and_copy() {
    require_module("psycopg").await;
    let env = Env::start("max_size = 3").await;
    let stdout = run_script(&env, "psycopg_check.py").await;
    println!("{stdout}");
    assert!(stdout.contains(": ok: "), "{stdout}");
    let rt = &env.proxy.rt;
    assert!(
        rt.statements.len() >= 2,
        "psycopg's _pg3_* statements went through pgpilot's registry: {}",
        rt.statements.len()
    );
    let snap = &rt.backends.snapshots()[0];
    assert_eq!(snap.checkout_timeouts, 0, "{snap:?}");
}
