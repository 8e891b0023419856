//! PostgreSQL restarted mid-run: acknowledged writes survive, the store reports `Unavailable`
//! while the server is down (the server turns that into 503), and the engine recovers by
//! itself once it is back. Runs its own throwaway PostgreSQL (initdb + pg_ctl) so it can stop
//! it; fails with a clear message when the PostgreSQL binaries are missing.

use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::Arc;
use std::time::Duration;

use ultracore_core::ledger::KnownAt;
use ultracore_core::prelude::*;
use ultracore_core::store::StoreError;
use ultracore_postgres::{PgConfig, PgEventStore};

/// A PostgreSQL cluster of this test's own.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql: \
             install the postgresql package (scripts/test does)"
        )
    })
}

fn root() -> bool {
    Proc::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn run(bin: &Path, tool: &str, args: &[&str]) {
    let exe = bin.join(tool);
    let status = if root() {
        Proc::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&exe)
            .args(args)
            .status()
    } else {
        Proc::new(&exe).args(args).status()
    }
    .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(status.success(), "{tool} {args:?} failed: {status}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Cluster {
    fn create() -> Cluster {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!("uc-outage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        if root() {
            let ok = Proc::new("chown")
                .args(["postgres", dir.to_str().expect("utf-8 path")])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown postgres {}", dir.display());
        }
        let data = dir.join("data");
        run(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().expect("path"),
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
            ],
        );
        let c = Cluster {
            bin,
            dir,
            port: free_port(),
        };
        c.start();
        c
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.display()
        );
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("path"),
                "-l",
                log.to_str().expect("path"),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("path"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Proc::new(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
            .status();
        if root() {
            let _ = Proc::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn transfer(i: usize) -> Command {
    Command::PostEntry(PostEntry::transfer(
        format!("t{i}").parse().expect("id"),
        "cash".parse().expect("id"),
        "alice".parse().expect("id"),
        Amount::parse("1.00", Currency::USD).expect("amount"),
        None,
    ))
}

fn open(id: &str, kind: AccountKind) -> Command {
    Command::OpenAccount(OpenAccount::new(
        id.parse().expect("id"),
        Currency::USD,
        kind,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_postgres_restart_and_the_engine_recovers() {
    let cluster = Cluster::create();
    let mut config = PgConfig::new(&cluster.url(), "uc_outage").expect("config");
    config.statement_timeout = Duration::from_secs(5);
    let store = PgEventStore::connect(config.clone())
        .await
        .expect("connect");
    let now: Timestamp = "2026-02-01T00:00:00Z".parse().expect("time");
    let engine = Engine::open(
        store,
        Arc::new(ManualClock::new(now)),
        EngineConfig::default(),
    )
    .await
    .expect("engine");
    for c in [
        open("cash", AccountKind::Asset),
        open("alice", AccountKind::Liability),
    ] {
        engine.execute(c, Trace::default()).await.expect("opened");
    }
    let mut acknowledged = 0usize;
    for i in 0..20 {
        engine
            .execute(transfer(i), Trace::default())
            .await
            .expect("before the outage");
        acknowledged += 1;
    }

    cluster.stop();
    // Down: the write is refused as unavailable (never acknowledged, never half-done).
    match engine.execute(transfer(100), Trace::default()).await {
        Err(EngineError::Store(StoreError::Unavailable(_))) | Err(EngineError::Recovering) => {}
        other => panic!("while PostgreSQL is down: {other:?}"),
    }

    cluster.start();
    // Back: the caller retries the same command (same id) until it is answered.
    let mut answered = None;
    for _ in 0..100 {
        match engine.execute(transfer(100), Trace::default()).await {
            Ok(o) => {
                answered = Some(o);
                break;
            }
            // No call to `recover`: the engine rebuilds itself on the next batch.
            Err(EngineError::Store(_)) | Err(EngineError::Recovering) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("after restart: {e:?}"),
        }
    }
    assert!(answered.is_some(), "the engine did not recover within 10 s");
    acknowledged += 1;
    for i in 200..210 {
        engine
            .execute(transfer(i), Trace::default())
            .await
            .expect("after recovery");
        acknowledged += 1;
    }

    // A fresh process sees every acknowledged write exactly once.
    let store = PgEventStore::connect(config).await.expect("reconnect");
    let reopened = Engine::open(
        store,
        Arc::new(ManualClock::new(now)),
        EngineConfig::default(),
    )
    .await
    .expect("reopen");
    let posted = reopened
        .read(|l| {
            l.balance(&"alice".parse().expect("id"), now, KnownAt::Now)
                .expect("alice")
                .posted
                .to_string()
        })
        .await;
    assert_eq!(posted, format!("{acknowledged}.00"));
}
