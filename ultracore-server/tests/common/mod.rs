//! Helpers shared by the tests that drive the real `ultracore` binary: environment, token,
//! start on free ports, and one HTTP/1.1 exchange over a plain socket.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ultracore"))
}

pub fn with_env(mut c: Command, dir: &Path) -> Command {
    c.env("ULTRACORE_DATA_DIR", dir)
        .env("ULTRACORE_LEDGER_ADDR", "127.0.0.1:0")
        .env("ULTRACORE_COMPLIANCE_ADDR", "127.0.0.1:0")
        .env("ULTRACORE_DOCUMENT_ADDR", "127.0.0.1:0")
        .env("ULTRACORE_NOTIFICATION_ADDR", "127.0.0.1:0")
        .env_remove("ULTRACORE_JWT_SECRET")
        .env_remove("ULTRACORE_CONFIG");
    c
}

pub fn token(dir: &Path, role: &str) -> String {
    let out = with_env(bin(), dir)
        .args(["token", "--sub", "it", "--role", role, "--ttl", "120"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {stdout:?}");
    assert_eq!(lines[0].split('.').count(), 3, "a JWT: {stdout:?}");
    lines[0].to_string()
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    /// The start-up line `ultracore: store ...; state at position ...; audit log ...`.
    pub startup: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(dir: &Path) -> Server {
    start_with(dir, &[], None)
}

/// Starts `ultracore serve` with extra environment variables; its JSON log (stderr) goes to
/// `log` if given. Returns once it printed its start-up line.
pub fn start_with(dir: &Path, env: &[(&str, &str)], log: Option<&Path>) -> Server {
    let mut cmd = with_env(bin(), dir);
    cmd.arg("serve").stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    match log {
        Some(path) => cmd.stderr(std::fs::File::create(path).unwrap()),
        None => cmd.stderr(Stdio::null()),
    };
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let startup = loop {
        let line = lines
            .next()
            .expect("server printed its start-up lines")
            .unwrap();
        if let Some(rest) = line.strip_prefix("ultracore: ledger API listening on ") {
            let rest = rest
                .strip_prefix("http://")
                .or_else(|| rest.strip_prefix("https://"));
            addr = rest.map(str::to_string);
        }
        if line.starts_with("ultracore: store ") {
            break line;
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: addr.expect("ledger address printed before the start-up line"),
        startup,
    }
}

/// Starts `ultracore serve` with its log on PostgreSQL (`url`, `schema`), `secret` as its
/// JWT key (so several servers accept one token) and no rate limit.
#[allow(dead_code)] // not every test binary uses every helper
pub fn start_on_postgres(dir: &Path, url: &str, schema: &str, secret: &str) -> Server {
    start_with(
        dir,
        &[
            ("ULTRACORE_JWT_SECRET", secret),
            ("ULTRACORE_STORE", "postgres"),
            ("ULTRACORE_POSTGRES_URL", url),
            ("ULTRACORE_POSTGRES_SCHEMA", schema),
            ("ULTRACORE_RATE_LIMIT_PER_SECOND", "0"),
        ],
        None,
    )
}

/// An admin token signed with `secret` (see [`start_on_postgres`]), valid for ten minutes.
#[allow(dead_code)]
pub fn admin_token(secret: &str, sub: &str) -> String {
    use ultracore_server::auth::jwt::JwtKeys;
    use ultracore_server::auth::{Principal, Role};
    let p = Principal {
        sub: sub.into(),
        role: Role::Admin,
        branch: None,
        customer: None,
        mfa: false,
    };
    JwtKeys::hs256(secret.as_bytes(), 5).mint(&p, ultracore_server::util::unix_seconds(), 600)
}

/// The value of an unlabelled metric in a Prometheus text exposition.
pub fn metric(addr: &str, name: &str) -> f64 {
    let (status, _, body) = http(addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}

/// One HTTP/1.1 exchange with `Connection: close`: (status, head, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    try_http(addr, method, path, token, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`http`], but a connection that fails (a dead server) is an error, not a panic.
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Request-Id: bin-{method}\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, head.to_ascii_lowercase(), body.to_string()))
}

pub fn temp(name: &str) -> PathBuf {
    ultracore_server::util::temp_dir(name)
}
