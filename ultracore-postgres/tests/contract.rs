//! Core's store contract, against PostgreSQL (a fresh schema per check).

mod common;

use ultracore_core::testing::contract::event_store_contract;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_contract() {
    let db = common::TestDb::create();
    event_store_contract(|| db.fresh_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_versioned() {
    let db = common::TestDb::create();
    let config = db.fresh_config();
    let first = ultracore_postgres::migrate(&config).await.expect("migrate");
    assert_eq!(first, vec![1, 2], "a fresh schema gets every migration");
    let again = ultracore_postgres::migrate(&config)
        .await
        .expect("migrate again");
    assert!(
        again.is_empty(),
        "nothing to apply the second time: {again:?}"
    );
}

#[test]
fn schema_names_are_identifiers() {
    for bad in ["", "1abc", "a-b", "A", "a;drop table x", &"x".repeat(49)] {
        assert!(
            ultracore_postgres::PgConfig::new("postgres://x", bad).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(ultracore_postgres::PgConfig::new("postgres://x", "uc_1").is_ok());
}
