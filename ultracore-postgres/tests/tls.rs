//! TLS to PostgreSQL, against a throwaway cluster that accepts TCP connections only over TLS
//! (its own initdb, a self-signed certificate made here): the store, its follower and the
//! migrations connect with `Connector::tls` and a CA file; a plain connector and a connector
//! that does not trust the certificate are both refused.

#[path = "common/cluster.rs"]
mod cluster;

use std::time::Duration;

use cluster::Cluster;
use ultracore_core::engine::{Engine, EngineConfig};
use ultracore_core::event::Envelope;
use ultracore_core::event::Trace;
use ultracore_core::ledger::{AccountKind, Command, LedgerEvent, OpenAccount};
use ultracore_core::money::Currency;
use ultracore_core::store::EventStore;
use ultracore_core::time::ManualClock;
use ultracore_postgres::{Connector, PgConfig, PgEventStore};

fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

fn config(url: &str, connector: Connector) -> PgConfig {
    let mut c = PgConfig::new(url, "uc_tls").expect("config");
    c.connector = connector;
    c.statement_timeout = Duration::from_secs(10);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_over_tls_and_refuses_plain_or_untrusted_connections() {
    let (cert, key) = certificate();
    let cluster = Cluster::create_tls(&cert, &key);
    let ca = std::env::temp_dir().join(format!("uc-tls-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, &cert).unwrap();

    // Over TLS, verified against the certificate: migrations, appends through the engine,
    // reads and the LISTEN follower all work.
    let tls = Connector::tls(Some(&ca)).expect("connector");
    assert!(tls.is_tls());
    let store = PgEventStore::connect(config(&cluster.url(), tls.clone()))
        .await
        .expect("connects over TLS");
    let clock = std::sync::Arc::new(ManualClock::new("2026-01-10T09:00:00Z".parse().unwrap()));
    let engine = Engine::open(store.clone(), clock, EngineConfig::default())
        .await
        .expect("engine");
    let open = |id: &str| {
        Command::OpenAccount(OpenAccount::new(
            id.parse().unwrap(),
            Currency::USD,
            AccountKind::Asset,
        ))
    };
    engine
        .execute(open("cash"), Trace::default())
        .await
        .expect("accepted");
    // A follower (LISTEN on its own TLS connection, plus polling) is woken by the next append.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { EventStore::<LedgerEvent>::wait_for(&store, 1).await })
    };
    engine
        .execute(open("alice"), Trace::default())
        .await
        .expect("accepted");
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the follower is woken")
        .expect("task")
        .expect("wait_for");
    assert_eq!(
        EventStore::<LedgerEvent>::last_position(&store)
            .await
            .unwrap(),
        2
    );
    let events: Vec<Envelope<LedgerEvent>> = store.read_all(0, 10).await.expect("reads over TLS");
    assert_eq!(events.len(), 2);

    // The server's pg_hba accepts TCP only over TLS: a plain connection is refused.
    let plain = PgEventStore::connect(config(&cluster.url(), Connector::plain())).await;
    let err = plain.err().expect("a plain connection must be refused");
    assert!(
        format!("{err:?}").contains("pg_hba.conf"),
        "refused by the server's rule, not by a client error: {err:?}"
    );

    // TLS that does not trust the self-signed certificate (Mozilla's roots) is refused too.
    let untrusted =
        PgEventStore::connect(config(&cluster.url(), Connector::tls(None).unwrap())).await;
    let err = untrusted
        .err()
        .expect("an untrusted certificate must be refused");
    assert!(
        format!("{err}").to_lowercase().contains("certificate")
            || format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );

    // A CA file that holds no certificate is a configuration error, not a silent fallback.
    let empty = std::env::temp_dir().join(format!("uc-tls-empty-{}.pem", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    assert!(Connector::tls(Some(&empty)).is_err());
    let _ = std::fs::remove_file(&ca);
    let _ = std::fs::remove_file(&empty);
}
