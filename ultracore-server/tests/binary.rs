//! Drives the real `ultracore` binary: mint a token with the CLI, serve on free ports, talk
//! HTTP/1.1 over a plain socket, shut down with SIGTERM, then verify (and break) the audit
//! chain with `ultracore verify-audit`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ultracore"))
}

fn with_env(mut c: Command, dir: &Path) -> Command {
    c.env("ULTRACORE_DATA_DIR", dir)
        .env("ULTRACORE_LEDGER_ADDR", "127.0.0.1:0")
        .env("ULTRACORE_COMPLIANCE_ADDR", "127.0.0.1:0")
        .env("ULTRACORE_DOCUMENT_ADDR", "127.0.0.1:0")
        .env("ULTRACORE_NOTIFICATION_ADDR", "127.0.0.1:0")
        .env_remove("ULTRACORE_JWT_SECRET")
        .env_remove("ULTRACORE_CONFIG");
    c
}

fn token(dir: &Path, role: &str) -> String {
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

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let mut child = with_env(bin(), dir)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("ultracore: ledger API listening on http://") {
            break rest.to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

/// One HTTP/1.1 exchange with `Connection: close`: (status, head, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Request-Id: bin-{method}\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn temp(name: &str) -> PathBuf {
    ultracore_server::util::temp_dir(name)
}

#[test]
fn token_prints_only_a_jwt_and_refuses_bad_roles() {
    let dir = temp("bin-token");
    token(&dir, "teller");
    let out = with_env(bin(), &dir)
        .args(["token", "--sub", "x", "--role", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn serves_over_a_socket_then_shuts_down_and_the_audit_chain_verifies() {
    let dir = temp("bin-serve");
    let admin = token(&dir, "admin");
    let server = start(&dir);
    let a = &server.addr;

    assert_eq!(http(a, "GET", "/health/live", None, None).0, 200);
    let (status, _, body) = http(a, "GET", "/v1/accounts/x", None, None);
    assert_eq!(status, 401);
    assert!(
        body.contains("urn:ultracore:error:unauthenticated"),
        "{body}"
    );

    for (id, kind) in [("cash", "asset"), ("ana", "liability")] {
        let b = format!(r#"{{"id":"{id}","currency":"USD","kind":"{kind}"}}"#);
        let (status, _, body) = http(a, "POST", "/v1/accounts", Some(&admin), Some(&b));
        assert_eq!(status, 201, "{body}");
    }
    let t = r#"{"id":"t1","debit_account":"cash","credit_account":"ana","amount":"12.34","currency":"USD"}"#;
    let (status, head, body) = http(a, "POST", "/v1/transfers", Some(&admin), Some(t));
    assert_eq!(status, 201, "{body}");
    assert!(head.contains("x-request-id: bin-post"), "{head}");
    let (_, _, again) = http(a, "POST", "/v1/transfers", Some(&admin), Some(t));
    assert_eq!(again, body, "same request, same answer, over the wire too");
    let (status, _, body) = http(a, "GET", "/v1/accounts/ana/balance", Some(&admin), None);
    assert_eq!(status, 200);
    assert!(body.contains(r#""posted":"12.34""#), "{body}");
    let (_, _, metrics) = http(a, "GET", "/metrics", None, None);
    assert!(metrics.contains("ultracore_commits_total"), "{metrics}");

    // Graceful shutdown on SIGTERM: exits by itself, with success.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");

    let out = with_env(bin(), &dir).arg("verify-audit").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    // One record per request except the unaudited probes (/health/*, /metrics): 401, two
    // accounts, two transfers, one balance.
    assert!(stdout.contains("6 records, chain intact"), "{stdout}");

    // Change one recorded status: verify-audit names that record and fails.
    let path = dir.join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let second = text.lines().nth(1).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            second,
            &second.replace("\"status\":201", "\"status\":200"),
            1,
        ),
    )
    .unwrap();
    let out = with_env(bin(), &dir).arg("verify-audit").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("broken link at line 2 (seq Some(2))"),
        "{stdout}"
    );
}

#[test]
fn replay_reports_what_it_rebuilt() {
    let dir = temp("bin-replay");
    let out = with_env(bin(), &dir).arg("replay").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("replay: 0 events, 0 accounts, 0 entries in "),
        "{stdout}"
    );
}
