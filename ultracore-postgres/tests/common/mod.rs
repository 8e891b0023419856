//! A throwaway database per test process on the PostgreSQL of `ULTRACORE_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, what `scripts/test` provides),
//! dropped when the test ends; and a fresh schema per store inside it.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::atomic::{AtomicU32, Ordering};

use ultracore_postgres::{PgConfig, PgEventStore};

/// The admin URL.
pub fn admin_url() -> String {
    std::env::var("ULTRACORE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database for one test, dropped (with `FORCE`, closing its connections) when the guard
/// goes out of scope, also when the test fails.
pub struct TestDb {
    pub name: String,
    pub url: String,
    schemas: AtomicU32,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn admin(sql: String) {
    // Blocking helper on its own runtime: usable from Drop and from any test.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let url = admin_url();
            let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok(c) => c,
                Err(e) => panic!(
                    "PostgreSQL is not reachable at {url} ({e}). These tests need a real \
                     server: run them through scripts/test (which starts one if needed) or set \
                     ULTRACORE_TEST_POSTGRES_URL."
                ),
            };
            let task = tokio::spawn(conn);
            client.batch_execute(&sql).await.expect("admin statement");
            drop(client);
            let _ = task.await;
        })
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

impl TestDb {
    /// Creates a uniquely named database.
    pub fn create() -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("uc_test_{}_{n}_{nanos}", std::process::id());
        admin(format!("CREATE DATABASE {name}"));
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        TestDb {
            url: format!("{base}/{name}"),
            name,
            schemas: AtomicU32::new(0),
        }
    }

    /// A config for a fresh schema in this database.
    pub fn fresh_config(&self) -> PgConfig {
        let n = self.schemas.fetch_add(1, Ordering::Relaxed);
        PgConfig::new(&self.url, &format!("uc_t{n}")).expect("valid config")
    }

    /// A store in a fresh schema (migrated on first use).
    pub fn fresh_store(&self) -> PgEventStore {
        PgEventStore::lazy(self.fresh_config()).expect("store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::panic::catch_unwind(|| {
            admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        });
        if dropped.is_err() {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
