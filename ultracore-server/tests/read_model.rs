//! The read endpoints served from the SQL read model (`ULTRACORE_READ_MODEL=postgres`) answer
//! exactly what the in-memory ledger answers: the same requests go to a router on the server's
//! state and to a router on the same state without the read model, and every status and body
//! must match (and the first must say it came from SQL). The history has back-dated entries,
//! a correction, a reversal and a refused entry, and the bases are positions, times and now.
//! Needs PostgreSQL (`ULTRACORE_TEST_POSTGRES_URL`, as the `ultracore-postgres` tests).

#[path = "../../ultracore-postgres/tests/common/mod.rs"]
mod pg;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use ultracore_server::app::ledger_router;
use ultracore_server::auth::jwt::JwtKeys;
use ultracore_server::auth::{Principal, Role};
use ultracore_server::config::{Config, ReadModelKind, StoreKind};
use ultracore_server::read_model::SOURCE_HEADER;
use ultracore_server::state::AppState;
use ultracore_server::util::{temp_dir, unix_seconds};

const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

struct Answer {
    status: StatusCode,
    source: Option<String>,
    body: Value,
}

async fn call(
    router: &Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    };
    let res = router.clone().oneshot(req.unwrap()).await.unwrap();
    let status = res.status();
    let source = res
        .headers()
        .get(SOURCE_HEADER)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        source,
        body,
    }
}

async fn post(router: &Router, token: &str, path: &str, body: Value) -> Value {
    let a = call(router, token, "POST", path, Some(body)).await;
    assert!(a.status.is_success(), "{path}: {} {}", a.status, a.body);
    a.body
}

fn transfer(id: &str, from: &str, to: &str, amount: &str, at: Option<&str>) -> Value {
    json!({"id": id, "debit_account": from, "credit_account": to, "amount": amount,
        "currency": "USD", "effective_at": at})
}

/// Writes the history; returns (positions worth asking at, times worth asking at).
async fn history(router: &Router, t: &str) -> (Vec<u64>, Vec<String>) {
    for (id, kind) in [
        ("cash", "asset"),
        ("ana", "liability"),
        ("bob", "liability"),
    ] {
        post(
            router,
            t,
            "/v1/accounts",
            json!({"id": id, "currency": "USD", "kind": kind,
                "effective_at": "2025-12-01T00:00:00Z"}),
        )
        .await;
    }
    let mut positions = Vec::new();
    let mut times = Vec::new();
    let steps = [
        transfer("d1", "cash", "ana", "100.00", None),
        transfer("d2", "cash", "bob", "50.00", Some("2026-01-10T00:00:00Z")),
        transfer("t1", "ana", "bob", "30.00", Some("2026-01-05T12:00:00Z")),
        transfer("t2", "bob", "ana", "7.25", None),
        transfer("t3", "ana", "cash", "1.00", Some("2026-01-01T00:00:00Z")),
    ];
    for body in steps {
        let r = post(router, t, "/v1/transfers", body).await;
        positions.push(r["position"].as_u64().unwrap());
        times.push(r["recorded_at"].as_str().unwrap().to_string());
    }
    let r = post(
        router,
        t,
        "/v1/entries/t1/corrections",
        json!({"id": "c1", "amount": "40.00", "effective_at": "2026-01-03T00:00:00Z", "reason": "typo"}),
    )
    .await;
    positions.push(r["position"].as_u64().unwrap());
    post(router, t, "/v1/entries/t2/reversal", json!({"id": "r1"})).await;
    // A refused transfer (unknown account) is recorded too and moves the log.
    let refused = call(
        router,
        t,
        "POST",
        "/v1/transfers",
        Some(transfer("x1", "nobody", "ana", "1.00", None)),
    )
    .await;
    assert!(refused.status.is_client_error(), "{}", refused.body);
    post(
        router,
        t,
        "/v1/transfers",
        transfer("d3", "cash", "ana", "2.00", Some("2026-01-20T00:00:00Z")),
    )
    .await;
    (positions, times)
}

/// Every read request the comparison makes.
fn requests(positions: &[u64], times: &[String]) -> Vec<String> {
    let mut known: Vec<String> = vec![String::new()];
    known.extend(positions.iter().map(|p| format!("&known_at={p}")));
    known.extend(times.iter().map(|t| format!("&known_at={t}")));
    known.push("&known_at=1".into());
    known.push("&known_at=999999".into());
    let mut out = Vec::new();
    for account in ["ana", "bob", "cash", "nobody"] {
        for k in &known {
            for v in [
                "2025-12-31T00:00:00Z",
                "2026-01-04T00:00:00Z",
                "2026-01-08T00:00:00Z",
                "2030-01-01T00:00:00Z",
            ] {
                out.push(format!("/v1/accounts/{account}/balance?valid_at={v}{k}"));
            }
            out.push(format!("/v1/accounts/{account}/statement?from=2026-01-01T00:00:00Z&to=2030-01-01T00:00:00Z{k}"));
            out.push(format!(
                "/v1/accounts/{account}/statement?to=2030-01-01T00:00:00Z{k}"
            ));
        }
        for p in positions {
            let range = "from=2025-01-01T00:00:00Z&to=2030-01-01T00:00:00Z";
            out.push(format!(
                "/v1/accounts/{account}/restatement?{range}&known_at_1={p}"
            ));
            out.push(format!("/v1/accounts/{account}/restatement?from=2026-01-02T00:00:00Z&to=2026-01-09T00:00:00Z&known_at_1=1&known_at_2={p}"));
        }
        out.push(format!("/v1/accounts/{account}/restatement?from=2027-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&known_at_1=1"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_read_model_answers_exactly_what_memory_answers() {
    let db = pg::TestDb::create();
    let config = Config {
        data_dir: temp_dir("read-model"),
        jwt_secret: Some(SECRET.to_string()),
        store: StoreKind::Postgres,
        postgres_url: Some(db.url.clone()),
        postgres_schema: "uc_read".into(),
        read_model: ReadModelKind::Postgres,
        ..Config::default()
    };
    let (state, _) = AppState::build(&config).await.expect("state builds");
    let sql = ledger_router(state.clone());
    let memory = ledger_router(AppState {
        sql_reads: None,
        ..state.clone()
    });
    let principal = Principal {
        sub: "auditor".into(),
        role: Role::Admin,
        branch: None,
        customer: None,
        mfa: false,
    };
    let t = JwtKeys::hs256(SECRET.as_bytes(), 5).mint(&principal, unix_seconds(), 300);
    let (positions, times) = history(&sql, &t).await;
    let reqs = requests(&positions, &times);
    let mut from_sql = 0;
    for path in &reqs {
        let (a, b) = (
            call(&sql, &t, "GET", path, None).await,
            call(&memory, &t, "GET", path, None).await,
        );
        assert_eq!((a.status, &a.body), (b.status, &b.body), "{path}");
        if a.status == StatusCode::OK {
            assert_eq!(a.source.as_deref(), Some("sql"), "{path}");
            assert_eq!(b.source.as_deref(), Some("memory"), "{path}");
            from_sql += 1;
        }
    }
    assert!(
        from_sql > reqs.len() / 2,
        "{from_sql} of {} answered from SQL",
        reqs.len()
    );
    let metrics = call(&sql, &t, "GET", "/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    assert!(text.contains("ultracore_read_model_lag_events"), "{text}");
    assert!(text.contains("ultracore_read_model_lag_seconds"), "{text}");
}
