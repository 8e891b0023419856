//! The `ultracore` binary on `ULTRACORE_STORE=postgres` while PostgreSQL goes away and comes
//! back: while it is down, write endpoints answer 503 problem JSON with `Retry-After` (never a
//! half-done write); once it is back the server recovers by itself (no restart, no operator),
//! the same request retried with the same id is answered, and every acknowledged write is in
//! the log, also for a fresh server process. Runs its own throwaway PostgreSQL cluster
//! (`ultracore-postgres/tests/common/cluster.rs`) so it can stop it.

#[path = "../../ultracore-postgres/tests/common/cluster.rs"]
mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::Cluster;
use common::{admin_token, http, start_on_postgres, temp};

const SECRET: &str = "pg-outage-secret-pg-outage-secret-pg-outage-01";

fn transfer(i: usize) -> String {
    format!(
        r#"{{"id":"t{i}","debit_account":"cash","credit_account":"alice","amount":"1.00","currency":"USD"}}"#
    )
}

fn alice_posted(addr: &str, t: &str) -> String {
    let (status, _, body) = http(addr, "GET", "/v1/accounts/alice/balance", Some(t), None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["posted"].as_str().unwrap().to_string()
}

#[test]
fn writes_answer_503_while_postgres_is_down_and_the_server_recovers_by_itself() {
    let cluster = Cluster::create();
    let dir = temp("pg-outage");
    let server = start_on_postgres(&dir, &cluster.url(), "uc_srv", SECRET);
    let addr = server.addr.clone();
    let t = admin_token(SECRET, "pg-outage");
    for (id, kind) in [("cash", "asset"), ("alice", "liability")] {
        let body = format!(r#"{{"id":"{id}","currency":"USD","kind":"{kind}"}}"#);
        let (status, _, answer) = http(&addr, "POST", "/v1/accounts", Some(&t), Some(&body));
        assert_eq!(status, 201, "{answer}");
    }
    let mut acknowledged = 0;
    for i in 0..20 {
        let (status, _, answer) =
            http(&addr, "POST", "/v1/transfers", Some(&t), Some(&transfer(i)));
        assert_eq!(status, 201, "{answer}");
        acknowledged += 1;
    }

    cluster.stop();
    // Down: every write is refused with 503 problem JSON and a Retry-After, again and again
    // (the first fails the append, the next ones find the engine still unable to rebuild).
    let writes = [
        ("/v1/transfers", transfer(100)),
        ("/v1/transfers", transfer(100)),
        (
            "/v1/accounts",
            r#"{"id":"bob","currency":"USD","kind":"liability"}"#.to_string(),
        ),
    ];
    for (path, body) in &writes {
        let (status, head, answer) = http(&addr, "POST", path, Some(&t), Some(body));
        assert_eq!(status, 503, "{path} while PostgreSQL is down: {answer}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(head.contains("retry-after:"), "{head}");
        let problem: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(problem["code"], "unavailable", "{answer}");
        assert_eq!(problem["status"], 503);
    }

    cluster.start();
    // Back: the client retries the same request (same id) until it is answered; the server
    // rebuilds itself on the next write, nobody restarts it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, answer) = http(
            &addr,
            "POST",
            "/v1/transfers",
            Some(&t),
            Some(&transfer(100)),
        );
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            Instant::now() < deadline,
            "not recovered 15 s after PostgreSQL came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    acknowledged += 1;
    for i in 200..210 {
        let (status, _, answer) =
            http(&addr, "POST", "/v1/transfers", Some(&t), Some(&transfer(i)));
        assert_eq!(status, 201, "after recovery: {answer}");
        acknowledged += 1;
    }
    let expected = format!("{acknowledged}.00");
    assert_eq!(alice_posted(&addr, &t), expected);

    // Every acknowledged write is durable: a fresh process on the same schema sees them all,
    // each once.
    drop(server);
    let again = start_on_postgres(&temp("pg-outage-again"), &cluster.url(), "uc_srv", SECRET);
    assert_eq!(alice_posted(&again.addr, &t), expected);
}

/// `ULTRACORE_POSTGRES_CA_FILE` (TLS on, verified against that CA) against a cluster that
/// accepts TCP only over TLS: the server migrates, writes and reads there; without the CA
/// file (plain connections) it cannot start.
#[test]
fn the_server_talks_to_postgres_over_tls_when_configured() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let cluster = Cluster::create_tls(&cert.pem(), &key.serialize_pem());
    let dir = temp("pg-tls");
    let ca = dir.join("pg-ca.pem");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&ca, cert.pem()).unwrap();

    let server = common::start_with(
        &dir,
        &[
            ("ULTRACORE_JWT_SECRET", SECRET),
            ("ULTRACORE_STORE", "postgres"),
            ("ULTRACORE_POSTGRES_URL", &cluster.url()),
            ("ULTRACORE_POSTGRES_SCHEMA", "uc_tls"),
            ("ULTRACORE_POSTGRES_CA_FILE", ca.to_str().unwrap()),
        ],
        None,
    );
    let t = admin_token(SECRET, "pg-tls");
    let body = r#"{"id":"cash","currency":"USD","kind":"asset"}"#;
    let (status, _, answer) = http(&server.addr, "POST", "/v1/accounts", Some(&t), Some(body));
    assert_eq!(status, 201, "{answer}");
    let (status, _, _) = http(&server.addr, "GET", "/v1/accounts/cash", Some(&t), None);
    assert_eq!(status, 200);
    drop(server);

    // Plain connections are refused by the cluster: the server reports it and exits.
    let out = common::bin()
        .env("ULTRACORE_DATA_DIR", temp("pg-tls-plain"))
        .env("ULTRACORE_JWT_SECRET", SECRET)
        .env("ULTRACORE_STORE", "postgres")
        .env("ULTRACORE_POSTGRES_URL", cluster.url())
        .env("ULTRACORE_POSTGRES_SCHEMA", "uc_tls")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a plain migrate must fail");
}
