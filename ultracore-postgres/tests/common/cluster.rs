//! A throwaway PostgreSQL cluster (initdb + pg_ctl on a free port, in a temporary directory)
//! that a test can stop and start again, for outage tests; removed when dropped. Shared by
//! `tests/outage.rs` here and the server's PostgreSQL outage test (included with `#[path]`).
//! Fails with a clear message when the PostgreSQL server binaries are missing.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command as Proc;

/// A PostgreSQL cluster of one test's own.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Extra `-c` settings for `pg_ctl start` (TLS).
    extra: String,
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

/// When we are root (the server then runs as `postgres`), makes `path` the `postgres` user's.
fn give_to_postgres(path: &Path) {
    if root() {
        let ok = Proc::new("chown")
            .args(["postgres", path.to_str().expect("utf-8 path")])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "chown postgres {}", path.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Cluster {
    /// Creates and starts a cluster (fsync on, trust auth, user `postgres`).
    pub fn create() -> Cluster {
        Cluster::create_with(None)
    }

    /// A cluster that accepts TCP connections only over TLS (`hostssl` in `pg_hba.conf`, no
    /// `host` line), with the given PEM certificate and key.
    pub fn create_tls(cert_pem: &str, key_pem: &str) -> Cluster {
        Cluster::create_with(Some((cert_pem, key_pem)))
    }

    fn create_with(tls: Option<(&str, &str)>) -> Cluster {
        let bin = pg_bin();
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("uc-outage-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        give_to_postgres(&dir);
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
        let mut extra = String::new();
        if let Some((cert, key)) = tls {
            let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::write(&cert_path, cert).expect("certificate");
            std::fs::write(&key_path, key).expect("key");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("pg_hba.conf");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
            for f in [&cert_path, &key_path, &data.join("pg_hba.conf")] {
                give_to_postgres(f);
            }
            extra = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_path.display(),
                key_path.display()
            );
        }
        let c = Cluster {
            bin,
            dir,
            port: free_port(),
            extra,
        };
        c.start();
        c
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on{}",
            self.port,
            self.dir.display(),
            self.extra
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

    /// Stops the cluster (fast shutdown: open connections are cut) and waits.
    pub fn stop(&self) {
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

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
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
