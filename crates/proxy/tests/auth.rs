//! Authentication through pgpilot with real drivers: clients against the
//! configured users (SCRAM, md5, trust, a stored SCRAM verifier; wrong and
//! unknown credentials), pgpilot against PostgreSQL (SCRAM, md5, cleartext
//! `password`), and the psql binary end to end.

mod common;

use common::{one_value, sqlstate, try_connect, Env, Setup};
use pgpilot_testkit::{
    APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER, PLAIN_PASSWORD, PLAIN_USER,
};

/// Extra logins, each mapped to a PostgreSQL role.
fn users() -> String {
    let verifier = pgpilot_auth::ScramSecret::generate("verifier-pw").to_string();
    let md5_hash = pgpilot_auth::md5_stored("md5hashed", "hashed-pw");
    let md5user_hash = pgpilot_auth::md5_stored(MD5_USER, MD5_PASSWORD);
    format!(
        r#"
[[users]]
name = "md5client"
auth = "md5"
password = "md5client-pw"
server_user = "{APP_USER}"
server_password = "{APP_PASSWORD}"

[[users]]
name = "md5hashed"
auth = "md5"
password = "{md5_hash}"
server_user = "{APP_USER}"
server_password = "{APP_PASSWORD}"

[[users]]
name = "trusted"
auth = "trust"
server_user = "{APP_USER}"
server_password = "{APP_PASSWORD}"

[[users]]
name = "verified"
password = "{verifier}"
server_user = "{APP_USER}"
server_password = "{APP_PASSWORD}"

[[users]]
name = "{MD5_USER}"
password = "{MD5_PASSWORD}"

[[users]]
name = "md5user_by_hash"
password = "client-pw"
server_user = "{MD5_USER}"
server_password = "{md5user_hash}"

[[users]]
name = "{PLAIN_USER}"
password = "{PLAIN_PASSWORD}"

[[users]]
name = "bad_server_password"
password = "client-pw"
server_user = "{MD5_USER}"
server_password = "not-the-password"
"#
    )
}

async fn env() -> Env {
    Env::start_setup(Setup {
        pool: "max_size = 2".into(),
        extra_users: users(),
        ..Setup::default()
    })
    .await
}

/// Logs in as `user` and returns `current_user` as PostgreSQL sees it.
async fn login(env: &Env, user: &str, password: Option<&str>) -> String {
    let c = try_connect(&env.conn_str_as(user, password, APP_DB, ""))
        .await
        .unwrap_or_else(|e| panic!("login as {user}: {e:?}"));
    one_value(&c, "select current_user")
        .await
        .expect("current_user")
}

/// The SQLSTATE a failed login as `user` ends with.
async fn login_error(env: &Env, user: &str, password: Option<&str>, db: &str) -> String {
    match try_connect(&env.conn_str_as(user, password, db, "")).await {
        Ok(_) => panic!("login as {user} on {db} must fail"),
        Err(e) => sqlstate(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_unknown_credentials_are_refused() {
    let env = env().await;
    assert_eq!(login(&env, APP_USER, Some(APP_PASSWORD)).await, APP_USER);
    assert_eq!(
        login_error(&env, APP_USER, Some("wrong"), APP_DB).await,
        "28P01"
    );
    assert_eq!(
        login_error(&env, "nobody", Some("whatever"), APP_DB).await,
        "28P01",
        "unknown users look like a wrong password"
    );
    assert_eq!(
        login_error(&env, "md5client", Some("wrong"), APP_DB).await,
        "28P01"
    );
    assert_eq!(
        login_error(&env, "verified", Some("wrong"), APP_DB).await,
        "28P01"
    );
    assert_eq!(
        env.proxy
            .rt
            .counters
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        3,
        "failures of configured users are counted"
    );
    // The proxy still serves good logins afterwards.
    assert_eq!(login(&env, APP_USER, Some(APP_PASSWORD)).await, APP_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_3d000() {
    let env = env().await;
    assert_eq!(
        login_error(&env, APP_USER, Some(APP_PASSWORD), "no_such_db").await,
        "3D000"
    );
    assert_eq!(login(&env, APP_USER, Some(APP_PASSWORD)).await, APP_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_trust_and_verifier_clients() {
    let env = env().await;
    assert_eq!(
        login(&env, "md5client", Some("md5client-pw")).await,
        APP_USER
    );
    assert_eq!(login(&env, "md5hashed", Some("hashed-pw")).await, APP_USER);
    assert_eq!(login(&env, "trusted", None).await, APP_USER);
    assert_eq!(login(&env, "verified", Some("verifier-pw")).await, APP_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgpilot_logs_in_to_postgres_with_md5_and_cleartext() {
    let env = env().await;
    assert_eq!(login(&env, MD5_USER, Some(MD5_PASSWORD)).await, MD5_USER);
    assert_eq!(
        login(&env, PLAIN_USER, Some(PLAIN_PASSWORD)).await,
        PLAIN_USER
    );
    // PostgreSQL's refusal of pgpilot's own login reaches the client.
    assert_eq!(
        login_error(&env, "bad_server_password", Some("client-pw"), APP_DB).await,
        "28P01"
    );
}

/// `server_password` may be the role's md5 hash, which answers an md5 server
/// (pgpilot.example.toml, `User::server_password`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_hash_as_server_password() {
    let env = env().await;
    assert_eq!(
        login(&env, "md5user_by_hash", Some("client-pw")).await,
        MD5_USER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_binary_connects_and_queries() {
    let env = env().await;
    env.client()
        .await
        .batch_execute("create table psql_visible (id int)")
        .await
        .unwrap();
    let psql = pgpilot_testkit::bin_dir()
        .expect("PostgreSQL binaries")
        .join("psql");
    let port = env.port().to_string();
    let output = tokio::process::Command::new(psql)
        .env_clear()
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGPASSFILE", "/dev/null/pgpass")
        .env("PGCONNECT_TIMEOUT", "5")
        .args(["-X", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port, "-U", APP_USER, "-d", APP_DB])
        .args(["-c", "\\dt", "-c", "select 40 + 2 as answer"])
        .output()
        .await
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql failed: {stderr}");
    assert!(stdout.contains("psql_visible"), "\\dt output: {stdout}");
    assert!(stdout.contains("42"), "query output: {stdout}");
    assert!(stderr.is_empty(), "psql warned: {stderr}");
}
