//! Basic traffic through pgpilot with tokio-postgres: simple and extended
//! protocol, named prepared statements across transactions and servers,
//! errors inside transactions.

mod common;

use common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    let env = Env::start("max_size = 2").await;
    let c = env.client().await;
    let rows = c.simple_query("select 1; select 'two'").await.unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec!["1", "two"]);
    let row = c.query_one("select $1::int + 1", &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let stmt = c.prepare("select $1::text || 'x'").await.unwrap();
    for i in 0..50 {
        let r = c.query_one(&stmt, &[&i.to_string()]).await.unwrap();
        assert_eq!(r.get::<_, String>(0), format!("{i}x"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_inside_transaction_then_rollback() {
    let env = Env::start("max_size = 2").await;
    let c = env.client().await;
    c.batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    c.batch_execute("begin").await.unwrap();
    c.execute("insert into t values (1)", &[]).await.unwrap();
    let err = c
        .execute("insert into t values (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    let err = c.execute("select 1", &[]).await.unwrap_err();
    assert_eq!(
        err.code().unwrap().code(),
        "25P02",
        "transaction is aborted"
    );
    c.batch_execute("rollback").await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    c.execute("insert into t values (2)", &[]).await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
