//! Drives the real `ultracore` binary: mint a token with the CLI, serve on free ports, talk
//! HTTP/1.1 over a plain socket, shut down with SIGTERM, then verify (and break) the audit
//! chain with `ultracore verify-audit`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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

    // The graceful shutdown left a snapshot and the journal's index checkpoint; a restart
    // starts from them and the ledger is as it was.
    assert!(dir.join("journal/index.checkpoint").exists());
    assert!(std::fs::read_dir(dir.join("snapshots")).unwrap().count() > 0);
    let server = start(&dir);
    let (status, _, body) = http(
        &server.addr,
        "GET",
        "/v1/accounts/ana/balance",
        Some(&admin),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""posted":"12.34""#),
        "after restart: {body}"
    );
    drop(server);

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

#[test]
fn migrate_creates_the_postgres_schema_once() {
    let url = std::env::var("ULTRACORE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("uc_migrate_{}", std::process::id());
    let dir = temp("bin-migrate");
    let run = || {
        with_env(bin(), &dir)
            .arg("migrate")
            .env("ULTRACORE_POSTGRES_URL", &url)
            .env("ULTRACORE_POSTGRES_SCHEMA", &schema)
            .output()
            .unwrap()
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(
        first.status.success(),
        "PostgreSQL at {url} (scripts/test provides one): {stdout}{stderr}"
    );
    assert!(stdout.contains("applied version 1, 2"), "{stdout}");
    let again = run();
    let stdout = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains("is up to date"), "{stdout}");
    // Clean up the schema (it lives in the shared database).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ultracore_postgres::PgConfig::new(&url, &schema).unwrap();
        let store = ultracore_postgres::PgEventStore::connect(config)
            .await
            .unwrap();
        let client = store.pool().get().await.unwrap();
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}

/// Posts `count` transfers `<prefix>-<i>` of 0.01 from cash to c0..c9 in batches of 100, and
/// checks each was accepted.
fn post_transfers(addr: &str, token: &str, prefix: &str, count: usize) {
    for start in (0..count).step_by(100) {
        let items: Vec<String> = (start..count.min(start + 100))
            .map(|i| {
                format!(
                    r#"{{"id":"{prefix}-{i}","debit_account":"cash","credit_account":"c{}","amount":"0.01","currency":"USD"}}"#,
                    i % 10
                )
            })
            .collect();
        let body = format!("[{}]", items.join(","));
        let (status, _, answer) = http(
            addr,
            "POST",
            "/v1/transfers/batch",
            Some(token),
            Some(&body),
        );
        assert_eq!(status, 200, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["refused"], 0, "{answer}");
        assert_eq!(v["accepted"], items.len(), "{answer}");
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_periodic_snapshot_is_what_a_restart_after_kill_9_starts_from() {
    let dir = temp("bin-periodic-snapshot");
    let log = dir.with_extension("stderr.log");
    let admin = token(&dir, "admin");
    let env = [
        ("ULTRACORE_SNAPSHOT_EVERY_EVENTS", "250"),
        ("ULTRACORE_SNAPSHOT_INTERVAL_SECONDS", "0"),
    ];
    let server = start_with(&dir, &env, Some(&log));
    let a = server.addr.clone();
    assert!(
        server.startup.contains("0 events replayed"),
        "{}",
        server.startup
    );
    for i in 0..11 {
        let (id, kind) = match i {
            0 => ("cash".to_string(), "asset"),
            _ => (format!("c{}", i - 1), "liability"),
        };
        let b = format!(r#"{{"id":"{id}","currency":"USD","kind":"{kind}"}}"#);
        assert_eq!(
            http(&a, "POST", "/v1/accounts", Some(&admin), Some(&b)).0,
            201
        );
    }
    // Six rounds past the threshold, each snapshot seen in the metrics. The first is full
    // (no snapshot yet), the next three deltas each on the one before (the chain has grown
    // by less than 3 times its full snapshot). After round 5 it has: a full snapshot that
    // starts a new chain is encoded beside a fourth delta on the old chain, then saved.
    // Round 6 is the first delta on the new chain.
    for (round, snapshots) in (1..=6).zip([1.0, 2.0, 3.0, 4.0, 6.0, 7.0]) {
        post_transfers(&a, &admin, &format!("r{round}"), 260);
        wait_until(&format!("snapshots after round {round}"), || {
            metric(&a, "ultracore_snapshots_total") >= snapshots
        });
    }
    let snapped = metric(&a, "ultracore_snapshot_position") as u64;
    // 11 accounts + 1,560 transfers, one event each; the last snapshot came after round 6.
    assert_eq!(
        snapped, 1571,
        "the last snapshot covers everything up to round 6"
    );
    // Below the threshold: these are only in the journal when the process dies.
    post_transfers(&a, &admin, "tail", 120);
    assert_eq!(metric(&a, "ultracore_snapshots_total"), 7.0);
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no shutdown snapshot
    server.child.wait().unwrap();

    let mut files: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "ledger-0-delta-1.00000000000000001571.snapshot",
            "ledger-0.00000000000000000271.snapshot",
            "ledger-0.00000000000000001311.snapshot",
        ],
        "the new chain's full snapshot and link (the store keeps the full snapshot before the \
         newest to fall back on); the old chain's links were removed"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let links: Vec<(Option<u64>, u64)> = text
        .lines()
        .filter(|l| l.contains("snapshot saved") && l.contains("\"periodic\":true"))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = &v["fields"];
            (f["delta_of"].as_u64(), f["link"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        links,
        [
            (None, 0),
            (Some(271), 1),
            (Some(531), 2),
            (Some(791), 3),
            (Some(1051), 4),
            (None, 0),
            (Some(1311), 1)
        ],
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("full snapshot begun"))
            .count(),
        2,
        "the first chain's and the second's: {text}"
    );
    // The journal's index checkpoint after each snapshot: a base, then links of its chain.
    let mut checkpoint_files: Vec<String> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("index.checkpoint"))
        .collect();
    checkpoint_files.sort();
    assert!(
        checkpoint_files.len() >= 2 && checkpoint_files[0] == "index.checkpoint",
        "{checkpoint_files:?}"
    );
    assert!(text.contains("\"checkpoint_ms\""), "{text}");

    let server = start_with(&dir, &env, None);
    let a = server.addr.clone();
    assert!(
        server
            .startup
            .contains("state at position 1691: snapshot at 1571 + 120 events replayed"),
        "{}",
        server.startup
    );
    assert_eq!(metric(&a, "ultracore_startup_snapshot_position"), 1571.0);
    assert_eq!(metric(&a, "ultracore_startup_replayed_events"), 120.0);
    // Every acknowledged transfer is there, and the balances add up.
    for (prefix, count) in [
        ("r1", 260),
        ("r2", 260),
        ("r3", 260),
        ("r4", 260),
        ("r5", 260),
        ("r6", 260),
        ("tail", 120),
    ] {
        for i in 0..count {
            let (status, _, body) = http(
                &a,
                "GET",
                &format!("/v1/entries/{prefix}-{i}"),
                Some(&admin),
                None,
            );
            assert_eq!(status, 200, "{prefix}-{i}: {body}");
        }
    }
    for c in 0..10 {
        let (_, _, body) = http(
            &a,
            "GET",
            &format!("/v1/accounts/c{c}/balance"),
            Some(&admin),
            None,
        );
        // 1,680 transfers spread over 10 accounts: 168 each of 0.01.
        assert!(body.contains(r#""posted":"1.68""#), "c{c}: {body}");
    }
}

#[test]
fn a_second_server_on_the_same_data_dir_fails_at_once_naming_the_first() {
    let dir = temp("bin-lock");
    let admin = token(&dir, "admin");
    let first = start(&dir);
    let b = r#"{"id":"cash","currency":"USD","kind":"asset"}"#;
    assert_eq!(
        http(&first.addr, "POST", "/v1/accounts", Some(&admin), Some(b)).0,
        201
    );

    let started = Instant::now();
    let mut second = with_env(bin(), &dir)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            panic!("the second server did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    // The data directory's lock refuses it first (whatever the store), naming the holder.
    assert!(
        stderr.contains(&format!(
            "data directory {} is in use by another ultracore process (PID {})",
            dir.display(),
            first.child.id()
        )),
        "{stderr}"
    );
    // The first one is unharmed.
    let (status, _, _) = http(&first.addr, "GET", "/v1/accounts/cash", Some(&admin), None);
    assert_eq!(status, 200);

    // kill -9 leaves no stale lock: the kernel drops it with the process.
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let again = start(&dir);
    let (status, _, _) = http(&again.addr, "GET", "/v1/accounts/cash", Some(&admin), None);
    assert_eq!(status, 200);
}

#[test]
fn token_mfa_mints_a_token_that_passes_the_mfa_policy() {
    let dir = temp("bin-mfa");
    let mint = |extra: &[&str]| {
        let out = with_env(bin(), &dir)
            .args(["token", "--sub", "ops", "--role", "admin"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (plain, mfa) = (mint(&[]), mint(&["--mfa"]));
    let server = start_with(
        &dir,
        &[("ULTRACORE_MFA_REQUIRED_FOR", "account_close")],
        None,
    );
    let a = &server.addr;
    let b = r#"{"id":"z","currency":"USD","kind":"liability"}"#;
    assert_eq!(
        http(a, "POST", "/v1/accounts", Some(&plain), Some(b)).0,
        201
    );
    let (status, head, body) = http(a, "POST", "/v1/accounts/z/close", Some(&plain), None);
    assert_eq!(status, 403, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert!(body.contains("urn:ultracore:error:mfa_required"), "{body}");
    let (status, _, body) = http(a, "POST", "/v1/accounts/z/close", Some(&mfa), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"closed""#), "{body}");
}

/// One HTTP/1.1 exchange over TLS with a rustls client that trusts only `root`:
/// (status, body).
fn https(
    addr: &str,
    root: &tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, Option<Vec<u8>>) {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tls.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    // A peer that closes without close_notify ends the read with an error after the answer.
    let _ = tls.read_to_end(&mut resp);
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .expect("an HTTP answer over TLS");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string(), alpn)
}

#[test]
fn serves_https_with_the_configured_certificate_and_only_https() {
    let dir = temp("bin-tls");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let root = generated.cert.der().clone();
    let admin = token(&dir, "admin");
    let env = [
        ("ULTRACORE_TLS_CERT", cert.to_str().unwrap()),
        ("ULTRACORE_TLS_KEY", key.to_str().unwrap()),
    ];
    let server = start_with(&dir, &env, None);
    let a = &server.addr;

    let (status, body, alpn) = https(a, &root, "GET", "/health/live", None, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "HTTP/1.1 chosen by ALPN"
    );
    let b = r#"{"id":"cash","currency":"USD","kind":"asset"}"#;
    let (status, body, _) = https(a, &root, "POST", "/v1/accounts", Some(&admin), Some(b));
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = https(a, &root, "GET", "/v1/accounts/cash", Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""id":"cash""#), "{body}");

    // Plain HTTP on the TLS port gets no HTTP answer, and the server carries on.
    assert!(try_http(a, "GET", "/health/live", None, None).is_err());
    assert_eq!(https(a, &root, "GET", "/health/live", None, None).0, 200);
    drop(server);

    // Half a configuration is refused at start, naming both variables.
    let out = with_env(bin(), &dir)
        .arg("serve")
        .env("ULTRACORE_TLS_CERT", &cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set both ULTRACORE_TLS_CERT and ULTRACORE_TLS_KEY"),
        "{stderr}"
    );
}

#[test]
fn audit_pages_over_http_match_the_file_and_verify_audit_still_passes() {
    let dir = temp("bin-audit-pages");
    let admin = token(&dir, "admin");
    let auditor = token(&dir, "auditor");
    let server = start(&dir);
    let a = &server.addr;
    // 1,200 audited requests (unknown accounts: 404s, each one record); `auth::audit` unit
    // tests page through 3,000.
    for i in 0..1_200 {
        let (status, _, _) = http(a, "GET", &format!("/v1/accounts/n{i}"), Some(&admin), None);
        assert_eq!(status, 404);
    }
    // Page through the log over HTTP: every record once, in order, as in the file.
    let (mut after, mut seqs) = (0u64, Vec::new());
    loop {
        let path = format!("/v1/audit?after={after}&limit=500");
        let (status, _, body) = http(a, "GET", &path, Some(&auditor), None);
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let records = page["records"].as_array().unwrap();
        for r in records {
            seqs.push(r["seq"].as_u64().unwrap());
        }
        after = page["next_after"].as_u64().unwrap();
        // Each page request is itself audited (after its answer), so the log grows by one
        // record per page: a short page is the end.
        if records.len() < 500 {
            break;
        }
    }
    assert!(seqs.len() >= 1_200, "{}", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    let line = |seq: u64| -> serde_json::Value {
        serde_json::from_str(text.lines().nth(seq as usize - 1).unwrap()).unwrap()
    };
    let (_, _, body) = http(
        a,
        "GET",
        "/v1/audit?after=999&limit=3",
        Some(&auditor),
        None,
    );
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["records"],
        serde_json::json!([line(1000), line(1001), line(1002)]),
        "the records as stored"
    );
    drop(server);

    let out = with_env(bin(), &dir).arg("verify-audit").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("chain intact"), "{stdout}");
}
