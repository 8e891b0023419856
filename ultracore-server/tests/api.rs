//! Router-level tests: every endpoint and the bad-input cases, through `oneshot` with no socket.
//! Each refusal is checked for its status, its problem JSON, and that nothing was written.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use ultracore_server::app::ledger_router;
use ultracore_server::auth::jwt::JwtKeys;
use ultracore_server::auth::{Principal, Role};
use ultracore_server::config::Config;
use ultracore_server::state::AppState;
use ultracore_server::util::{temp_dir, unix_seconds};

const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

struct App {
    router: Router,
    state: AppState,
    keys: JwtKeys,
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn app_with(f: impl FnOnce(&mut Config)) -> App {
    let mut config = Config {
        data_dir: temp_dir("api"),
        jwt_secret: Some(SECRET.to_string()),
        ..Config::default()
    };
    f(&mut config);
    let (state, _) = AppState::build(&config).await.expect("state builds");
    App {
        router: ledger_router(state.clone()),
        state,
        keys: JwtKeys::hs256(SECRET.as_bytes(), 5),
    }
}

async fn app() -> App {
    app_with(|_| {}).await
}

impl App {
    fn token(&self, role: Role, branch: Option<&str>, customer: Option<&str>) -> String {
        let p = Principal {
            sub: format!("{}-user", role.as_str()),
            role,
            branch: branch.map(str::to_string),
            customer: customer.map(str::to_string),
            mfa: false,
        };
        self.keys.mint(&p, unix_seconds(), 300)
    }

    fn admin(&self) -> String {
        self.token(Role::Admin, None, None)
    }

    /// An admin token issued after multi-factor authentication (`amr: ["mfa"]`).
    fn admin_mfa(&self) -> String {
        let p = Principal {
            sub: "admin-user".into(),
            role: Role::Admin,
            branch: None,
            customer: None,
            mfa: true,
        };
        self.keys.mint(&p, unix_seconds(), 300)
    }

    async fn raw(&self, req: Request<Body>) -> Resp {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("POST", path, Some(token), Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None).await
    }

    async fn position(&self) -> u64 {
        self.state.engine.read(|l| l.position()).await
    }

    /// cash (asset), ana and bob (liabilities that must not go negative, owned by ana/bob,
    /// branches north/south), and a 100.00 deposit for each.
    async fn seed(&self) {
        let t = self.admin();
        for (id, kind, owner, branch) in [
            ("cash", "asset", None, Some("north")),
            ("ana", "liability", Some("ana"), Some("north")),
            ("bob", "liability", Some("bob"), Some("south")),
        ] {
            let mut body = json!({"id": id, "currency": "USD", "kind": kind, "owner": owner, "branch": branch});
            if kind == "liability" {
                body["flags"] = json!({"debits_must_not_exceed_credits": true});
            }
            let r = self.post("/v1/accounts", &t, body).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        for who in ["ana", "bob"] {
            let r = self
                .post(
                    "/v1/transfers",
                    &t,
                    transfer(&format!("dep-{who}"), "cash", who, "100.00"),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
    }
}

fn transfer(id: &str, from: &str, to: &str, amount: &str) -> Value {
    json!({"id": id, "debit_account": from, "credit_account": to, "amount": amount, "currency": "USD"})
}

/// The one check for refusals: status, problem JSON with the stable type, and no write.
async fn refused(app: &App, r: Resp, status: StatusCode, code: &str, position_before: u64) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    assert_eq!(
        r.body["type"],
        format!("urn:ultracore:error:{code}"),
        "{}",
        r.body
    );
    assert_eq!(r.body["code"], code);
    assert_eq!(r.body["status"], status.as_u16());
    assert!(r.body["title"].is_string() && r.body["detail"].is_string());
    assert_eq!(
        app.position().await,
        position_before,
        "a refused request wrote to the log"
    );
}

#[tokio::test]
async fn accounts_open_read_freeze_unfreeze_close() {
    let app = app().await;
    let t = app.admin();
    let body = json!({"id": "a1", "currency": "EUR", "kind": "liability", "owner": "ana",
        "overdraft_limit": "50.00", "metadata": {"name": "Ana"}});
    let first = app.post("/v1/accounts", &t, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["status"], "open");
    assert_eq!(first.body["overdraft_limit"], "50.00");
    assert_eq!(first.body["metadata"]["name"], "Ana");

    let p = app.position().await;
    let again = app.post("/v1/accounts", &t, body.clone()).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body),
        "same request, same answer"
    );
    assert_eq!(
        app.position().await,
        p,
        "an idempotent repeat writes nothing"
    );

    let mut different = body.clone();
    different["currency"] = json!("USD");
    let r = app.post("/v1/accounts", &t, different).await;
    refused(&app, r, StatusCode::CONFLICT, "account_exists", p).await;

    let generated = app
        .post(
            "/v1/accounts",
            &t,
            json!({"currency": "USD", "kind": "asset"}),
        )
        .await;
    assert_eq!(generated.status, StatusCode::CREATED);
    assert!(generated.body["id"].as_str().unwrap().starts_with("acc_"));

    let got = app.get("/v1/accounts/a1", &t).await;
    assert_eq!((got.status, &got.body), (StatusCode::OK, &first.body));
    let p = app.position().await;
    refused(
        &app,
        app.get("/v1/accounts/nope", &t).await,
        StatusCode::NOT_FOUND,
        "unknown_account",
        p,
    )
    .await;
    refused(
        &app,
        app.get("/v1/accounts/bad%20id", &t).await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
        p,
    )
    .await;

    let r = app.post("/v1/accounts/a1/freeze", &t, json!(null)).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("frozen")),
        "{}",
        r.body
    );
    let r = app.post("/v1/accounts/a1/unfreeze", &t, json!(null)).await;
    assert_eq!(r.body["status"], "open", "{}", r.body);
    let r = app.post("/v1/accounts/a1/close", &t, json!(null)).await;
    assert_eq!(r.body["status"], "closed", "{}", r.body);
    let p = app.position().await;
    let r = app.post("/v1/accounts/nope/freeze", &t, json!(null)).await;
    refused(&app, r, StatusCode::NOT_FOUND, "unknown_account", p).await;
}

#[tokio::test]
async fn transfers_are_idempotent_and_limits_hold() {
    let app = app().await;
    app.seed().await;
    let t = app.admin();
    let first = app
        .post("/v1/transfers", &t, transfer("t1", "ana", "bob", "30.00"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["status"], "posted");
    assert!(first.body["position"].as_u64().unwrap() > 0);
    assert!(first.body["recorded_at"].as_str().unwrap().ends_with('Z'));

    let p = app.position().await;
    let again = app
        .post("/v1/transfers", &t, transfer("t1", "ana", "bob", "30.00"))
        .await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body)
    );
    assert_eq!(app.position().await, p);

    let r = app
        .post("/v1/transfers", &t, transfer("t1", "ana", "bob", "31.00"))
        .await;
    refused(&app, r, StatusCode::CONFLICT, "id_conflict", p).await;

    // Insufficient funds is a business rule (422); the refusal is sticky, so it is recorded.
    let r = app
        .post("/v1/transfers", &t, transfer("t2", "ana", "bob", "1000.00"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["code"], "limit_exceeded");

    let b = app.get("/v1/accounts/ana/balance", &t).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    assert_eq!(
        (b.body["posted"].as_str(), b.body["available"].as_str()),
        (Some("70.00"), Some("70.00"))
    );
    assert_eq!(b.body["currency"], "USD");

    // As known before t1 was recorded, and at a valid time before anything happened.
    let before = first.body["position"].as_u64().unwrap() - 1;
    let b = app
        .get(&format!("/v1/accounts/ana/balance?known_at={before}"), &t)
        .await;
    assert_eq!(b.body["posted"], "100.00", "{}", b.body);
    assert_eq!(b.body["position"], before);
    let b = app
        .get("/v1/accounts/ana/balance?valid_at=2000-01-01T00:00:00Z", &t)
        .await;
    assert_eq!(b.body["posted"], "0.00", "{}", b.body);
    let p = app.position().await;
    let r = app
        .get("/v1/accounts/ana/balance?known_at=999999", &t)
        .await;
    refused(
        &app,
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "position_not_reached",
        p,
    )
    .await;
    let r = app
        .get("/v1/accounts/ana/balance?valid_at=yesterday", &t)
        .await;
    refused(&app, r, StatusCode::BAD_REQUEST, "invalid_timestamp", p).await;
    let r = app.get("/v1/accounts/ana/balance?colour=red", &t).await;
    refused(&app, r, StatusCode::BAD_REQUEST, "invalid_request", p).await;
}

#[tokio::test]
async fn pending_transfers_post_void_and_reserve_funds() {
    let app = app().await;
    app.seed().await;
    let t = app.admin();
    let mut hold = transfer("h1", "ana", "bob", "30.00");
    hold["pending"] = json!(true);
    hold["expires_at"] = json!("2001-01-01T00:00:00Z");
    let r = app.post("/v1/transfers", &t, hold.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["code"], "expiry_not_after_effective");
    hold["id"] = json!("h2");
    hold["expires_at"] = json!(null);
    let r = app.post("/v1/transfers", &t, hold.clone()).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::CREATED, Some("pending")),
        "{}",
        r.body
    );
    assert_eq!(r.body["pending"], true);

    let b = app.get("/v1/accounts/ana/balance", &t).await;
    assert_eq!(
        (b.body["posted"].as_str(), b.body["available"].as_str()),
        (Some("100.00"), Some("70.00")),
        "{}",
        b.body
    );
    assert_eq!(b.body["pending"], "30.00");

    let r = app
        .post("/v1/transfers/h2/post", &t, json!({"amount": "20.00"}))
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("hold_posted")),
        "{}",
        r.body
    );
    let b = app.get("/v1/accounts/ana/balance", &t).await;
    assert_eq!(
        (b.body["posted"].as_str(), b.body["available"].as_str()),
        (Some("80.00"), Some("80.00")),
        "{}",
        b.body
    );

    let p = app.position().await;
    let r = app.post("/v1/transfers/h2/void", &t, json!({})).await;
    refused(
        &app,
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "hold_already_resolved",
        p,
    )
    .await;

    hold["id"] = json!("h3");
    app.post("/v1/transfers", &t, hold.clone()).await;
    let p = app.position().await;
    let r = app
        .post("/v1/transfers/h3/post", &t, json!({"amount": "99.00"}))
        .await;
    refused(
        &app,
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "post_exceeds_hold",
        p,
    )
    .await;
    // An empty body is allowed for void.
    let req = Request::post("/v1/transfers/h3/void")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    let r = app.raw(req).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("voided")),
        "{}",
        r.body
    );

    let p = app.position().await;
    refused(
        &app,
        app.post("/v1/transfers/none/post", &t, json!({})).await,
        StatusCode::NOT_FOUND,
        "unknown_entry",
        p,
    )
    .await;
    let r = app.post("/v1/transfers/dep-ana/void", &t, json!({})).await;
    refused(&app, r, StatusCode::UNPROCESSABLE_ENTITY, "not_a_hold", p).await;
    let mut bad = transfer("h4", "ana", "bob", "1.00");
    bad["expires_at"] = json!("2030-01-01T00:00:00Z");
    let r = app.post("/v1/transfers", &t, bad).await;
    refused(&app, r, StatusCode::BAD_REQUEST, "invalid_request", p).await;
}

#[tokio::test]
async fn entries_corrections_reversals_history_statement_restatement() {
    let app = app().await;
    app.seed().await;
    let t = app.admin();
    let legs = |bob: &str, cash: &str| {
        json!([
            {"account": "ana", "direction": "debit", "amount": "30.00", "currency": "USD"},
            {"account": "bob", "direction": "credit", "amount": bob, "currency": "USD"},
            {"account": "cash", "direction": "debit", "amount": cash, "currency": "USD"}
        ])
    };
    let p = app.position().await;
    let r = app
        .post(
            "/v1/entries",
            &t,
            json!({"id": "e0", "postings": legs("10.00", "5.00")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["code"], "unbalanced_entry");
    assert!(
        app.position().await > p,
        "a refused entry id is recorded (sticky)"
    );

    // ana -30, cash -(-5)...: debit ana 30 + debit cash 5 = credit bob 35.
    let r = app
        .post(
            "/v1/entries",
            &t,
            json!({"id": "e1", "postings": legs("35.00", "5.00"),
        "metadata": {"memo": "split"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let e1_position = r.body["position"].as_u64().unwrap();

    let r = app
        .post(
            "/v1/entries/dep-ana/corrections",
            &t,
            json!({"id": "c1", "amount": "120.00", "reason": "typo"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::CREATED, Some(2)),
        "{}",
        r.body
    );
    let b = app.get("/v1/accounts/ana/balance", &t).await;
    assert_eq!(b.body["posted"], "90.00", "{}", b.body);

    let h = app.get("/v1/entries/dep-ana/history", &t).await;
    assert_eq!(h.status, StatusCode::OK);
    let versions = h.body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["postings"][0]["amount"], "100.00");
    assert!(versions[0]["superseded_at"].is_string());
    assert_eq!(versions[1]["reason"], "typo");

    let old = app
        .get(&format!("/v1/entries/dep-ana?known_at={e1_position}"), &t)
        .await;
    assert_eq!(old.body["version"]["version"], 1, "{}", old.body);
    let now = app.get("/v1/entries/dep-ana", &t).await;
    assert_eq!(
        (
            now.body["version"]["version"].as_u64(),
            now.body["kind"].as_str()
        ),
        (Some(2), Some("posted"))
    );

    let r = app
        .post("/v1/entries/e1/reversal", &t, json!({"id": "r1"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let e = app.get("/v1/entries/e1", &t).await;
    assert_eq!(e.body["reversed_by"], "r1");
    let r1 = app.get("/v1/entries/r1", &t).await;
    assert_eq!(
        (r1.body["kind"].as_str(), r1.body["reversal_of"].as_str()),
        (Some("reversal"), Some("e1"))
    );

    let s = app
        .get("/v1/accounts/ana/statement?from=2000-01-01T00:00:00Z", &t)
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    let lines = s.body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{}", s.body);
    assert_eq!(
        lines.last().unwrap()["posted_balance"],
        s.body["closing"]["posted"]
    );
    assert_eq!(s.body["closing"]["posted"], "120.00");

    let r = app.get(&format!(
        "/v1/accounts/ana/restatement?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z&known_at_1={e1_position}"), &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["closing_before"]["posted"], "70.00", "{}", r.body);
    assert_eq!(r.body["closing_after"]["posted"], "120.00");
    let types: Vec<&str> = r.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["caused_by_event_type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"entry_corrected"), "{types:?}");

    let p = app.position().await;
    let r = app.get("/v1/accounts/ana/restatement?from=2000-01-01T00:00:00Z&to=1999-01-01T00:00:00Z&known_at_1=1", &t).await;
    refused(
        &app,
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_range",
        p,
    )
    .await;
    refused(
        &app,
        app.get("/v1/entries/nope", &t).await,
        StatusCode::NOT_FOUND,
        "unknown_entry",
        p,
    )
    .await;
    let r = app
        .post("/v1/entries/nope/reversal", &t, json!({"id": "r2"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

#[tokio::test]
async fn batch_answers_item_by_item() {
    let app = app().await;
    app.seed().await;
    let t = app.admin();
    let items = json!([
        transfer("b1", "ana", "bob", "1.00"),
        {"id": "b2", "debit_account": "ana", "credit_account": "bob", "amount": "1.00", "currency": "USD", "colour": "red"},
        transfer("b3", "ana", "bob", "1000.00"),
        transfer("b4", "ana", "bob", "1.005"),
        transfer("b1", "ana", "bob", "1.00"),
    ]);
    let r = app.post("/v1/transfers/batch", &t, items).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let statuses: Vec<u64> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 400, 422, 400, 201]);
    assert_eq!(r.body["results"][2]["problem"]["code"], "limit_exceeded");
    assert_eq!(r.body["results"][3]["problem"]["code"], "too_many_decimals");
    assert_eq!(
        r.body["results"][0]["result"], r.body["results"][4]["result"],
        "a repeat in a batch is idempotent"
    );
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["refused"].as_u64()),
        (Some(2), Some(3))
    );

    // A customer's batch: items out of someone else's account are refused one by one.
    let ana = app.token(Role::Customer, None, Some("ana"));
    let r = app
        .post(
            "/v1/transfers/batch",
            &ana,
            json!([
                transfer("b5", "ana", "bob", "1.00"),
                transfer("b6", "bob", "ana", "1.00")
            ]),
        )
        .await;
    let statuses: Vec<u64> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 403], "{}", r.body);

    let p = app.position().await;
    let too_many = Value::Array(vec![
        json!({});
        ultracore_server::config::TRANSFERS_PER_BATCH_MAX + 1
    ]);
    let r = app.post("/v1/transfers/batch", &t, too_many).await;
    refused(&app, r, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", p).await;
}

#[tokio::test]
async fn events_and_audit_logs() {
    let app = app().await;
    app.seed().await;
    let t = app.admin();
    let r = app.get("/v1/events?after=1&limit=2", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let events = r.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["position"], 2);
    assert_eq!(events[0]["event_type"], "account_opened");
    assert_eq!(r.body["next_after"], 3);
    assert_eq!(r.body["last_position"], 5);

    let req = Request::get("/v1/accounts/ana")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .header("x-request-id", "trace-me-42")
        .body(Body::empty())
        .unwrap();
    let r = app.raw(req).await;
    assert_eq!(r.headers.get("x-request-id").unwrap(), "trace-me-42");
    let generated = app.get("/v1/accounts/ana", &t).await;
    assert!(generated
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("req_"));

    let auditor = app.token(Role::Auditor, None, None);
    let a = app.get("/v1/audit?limit=1000", &auditor).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let records = a.body["records"].as_array().unwrap();
    let traced = records
        .iter()
        .find(|r| r["correlation_id"] == "trace-me-42")
        .expect("audited");
    assert_eq!(
        (traced["principal"].as_str(), traced["action"].as_str()),
        (Some("admin-user"), Some("account_read"))
    );
    assert_eq!(
        (traced["decision"].as_str(), traced["status"].as_u64()),
        (Some("allow"), Some(200))
    );
    for w in records.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"], "chained");
    }
    let p = app.position().await;
    let teller = app.token(Role::Teller, Some("north"), None);
    refused(
        &app,
        app.get("/v1/audit", &teller).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;
    refused(
        &app,
        app.get("/v1/events", &teller).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;

    // A denied request is audited as a denial.
    let a = app.get("/v1/audit?after=0&limit=1000", &auditor).await;
    let last_denied = a.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["path"] == "/v1/events")
        .unwrap()
        .clone();
    assert_eq!(
        (
            last_denied["decision"].as_str(),
            last_denied["outcome"].as_str()
        ),
        (Some("deny"), Some("forbidden"))
    );
    let end = ultracore_server::auth::audit::verify(app.state.audit.path()).unwrap();
    assert!(end.records >= records.len() as u64);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_right_problem_and_no_write() {
    let app = app().await;
    app.seed().await;
    let t = app.admin();
    let p = app.position().await;
    let post_raw = |body: &'static str, ct: &'static str| {
        Request::post("/v1/transfers")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap()
    };
    let r = app
        .raw(post_raw("{\"id\": \"x\",", "application/json"))
        .await;
    refused(&app, r, StatusCode::BAD_REQUEST, "malformed_json", p).await;
    let r = app.raw(post_raw("{\"id\": \"x\"}", "text/plain")).await;
    refused(
        &app,
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        p,
    )
    .await;

    let mut unknown = transfer("x1", "ana", "bob", "1.00");
    unknown["colour"] = json!("red");
    refused(
        &app,
        app.post("/v1/transfers", &t, unknown).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        p,
    )
    .await;
    let r = app.post("/v1/transfers", &t, json!({"id": "x1"})).await;
    refused(&app, r, StatusCode::BAD_REQUEST, "invalid_request", p).await;
    let r = app
        .post("/v1/transfers", &t, transfer("x1", "ana", "bob", "1.005"))
        .await;
    refused(&app, r, StatusCode::BAD_REQUEST, "too_many_decimals", p).await;
    let r = app
        .post("/v1/transfers", &t, transfer("x1", "ana", "bob", "-1.00"))
        .await;
    refused(&app, r, StatusCode::BAD_REQUEST, "negative_amount", p).await;
    let r = app
        .post("/v1/transfers", &t, transfer("x1", "ana", "bob", "1e3"))
        .await;
    refused(&app, r, StatusCode::BAD_REQUEST, "invalid_amount_format", p).await;
    let mut xxq = transfer("x1", "ana", "bob", "1.00");
    xxq["currency"] = json!("XXQ");
    refused(
        &app,
        app.post("/v1/transfers", &t, xxq).await,
        StatusCode::BAD_REQUEST,
        "unknown_currency",
        p,
    )
    .await;
    let r = app
        .post(
            "/v1/transfers",
            &t,
            transfer("bad id!", "ana", "bob", "1.00"),
        )
        .await;
    refused(&app, r, StatusCode::BAD_REQUEST, "invalid_id", p).await;
    let mut when = transfer("x1", "ana", "bob", "1.00");
    when["effective_at"] = json!("last tuesday");
    refused(
        &app,
        app.post("/v1/transfers", &t, when).await,
        StatusCode::BAD_REQUEST,
        "invalid_timestamp",
        p,
    )
    .await;
    let r = app
        .post(
            "/v1/accounts",
            &t,
            json!({"currency": "USD", "kind": "vault"}),
        )
        .await;
    refused(&app, r, StatusCode::BAD_REQUEST, "invalid_request", p).await;

    let mut big = transfer("x1", "ana", "bob", "1.00");
    big["metadata"] = json!({"k": "v".repeat(70 * 1024)});
    refused(
        &app,
        app.post("/v1/transfers", &t, big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        p,
    )
    .await;
}

#[tokio::test]
async fn authentication_is_required_and_checked() {
    let app = app().await;
    app.seed().await;
    let p = app.position().await;
    let body = || Some(transfer("y1", "ana", "bob", "1.00"));
    let r = app.call("POST", "/v1/transfers", None, body()).await;
    refused(&app, r, StatusCode::UNAUTHORIZED, "unauthenticated", p).await;
    let r = app.call("GET", "/v1/accounts/ana", None, None).await;
    refused(&app, r, StatusCode::UNAUTHORIZED, "unauthenticated", p).await;

    let admin = Principal {
        sub: "old".into(),
        role: Role::Admin,
        branch: None,
        customer: None,
        mfa: false,
    };
    let expired = app.keys.mint(&admin, unix_seconds() - 3600, 60);
    let r = app
        .call("POST", "/v1/transfers", Some(&expired), body())
        .await;
    refused(&app, r, StatusCode::UNAUTHORIZED, "token_expired", p).await;

    let forged = JwtKeys::hs256(b"another-secret-another-secret-0123456789", 5).mint(
        &admin,
        unix_seconds(),
        60,
    );
    let r = app
        .call("POST", "/v1/transfers", Some(&forged), body())
        .await;
    refused(&app, r, StatusCode::UNAUTHORIZED, "unauthenticated", p).await;

    // Tampered: a customer token whose payload is swapped for an admin's, signature kept.
    let customer = app.token(Role::Customer, None, Some("ana"));
    let admin_token = app.admin();
    let c: Vec<&str> = customer.split('.').collect();
    let a: Vec<&str> = admin_token.split('.').collect();
    let tampered = format!("{}.{}.{}", c[0], a[1], c[2]);
    let r = app
        .call("POST", "/v1/transfers", Some(&tampered), body())
        .await;
    refused(&app, r, StatusCode::UNAUTHORIZED, "unauthenticated", p).await;

    let req = Request::get("/v1/accounts/ana")
        .header(header::AUTHORIZATION, "Basic YWRtaW46YWRtaW4=")
        .body(Body::empty())
        .unwrap();
    refused(
        &app,
        app.raw(req).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        p,
    )
    .await;
}

#[tokio::test]
async fn roles_are_enforced_by_the_policy() {
    let app = app().await;
    app.seed().await;
    let p = app.position().await;
    let ana = app.token(Role::Customer, None, Some("ana"));
    assert_eq!(
        app.get("/v1/accounts/ana", &ana).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/accounts/ana/balance", &ana).await.status,
        StatusCode::OK
    );
    refused(
        &app,
        app.get("/v1/accounts/bob", &ana).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;
    refused(
        &app,
        app.get("/v1/accounts/bob/balance", &ana).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;
    refused(
        &app,
        app.get("/v1/accounts/bob/statement", &ana).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;
    // An account that does not exist looks the same as someone else's: no probing.
    refused(
        &app,
        app.get("/v1/accounts/ghost", &ana).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;
    let r = app
        .post("/v1/transfers", &ana, transfer("z1", "bob", "ana", "1.00"))
        .await;
    refused(&app, r, StatusCode::FORBIDDEN, "forbidden", p).await;
    let r = app.post("/v1/accounts/ana/freeze", &ana, json!(null)).await;
    refused(&app, r, StatusCode::FORBIDDEN, "forbidden", p).await;
    let r = app
        .post("/v1/transfers", &ana, transfer("z2", "ana", "bob", "1.00"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "a customer may move money out of their own account"
    );
    let e = app.get("/v1/entries/z2", &ana).await;
    assert_eq!(e.status, StatusCode::OK);

    let p = app.position().await;
    let auditor = app.token(Role::Auditor, None, None);
    assert_eq!(
        app.get("/v1/accounts/bob", &auditor).await.status,
        StatusCode::OK
    );
    let r = app
        .post(
            "/v1/transfers",
            &auditor,
            transfer("z3", "ana", "bob", "1.00"),
        )
        .await;
    refused(&app, r, StatusCode::FORBIDDEN, "forbidden", p).await;
    let r = app
        .post(
            "/v1/accounts",
            &auditor,
            json!({"currency": "USD", "kind": "asset"}),
        )
        .await;
    refused(&app, r, StatusCode::FORBIDDEN, "forbidden", p).await;

    let north = app.token(Role::Teller, Some("north"), None);
    assert_eq!(
        app.get("/v1/accounts/ana", &north).await.status,
        StatusCode::OK
    );
    refused(
        &app,
        app.get("/v1/accounts/bob", &north).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;
    let r = app
        .post(
            "/v1/accounts",
            &north,
            json!({"id": "s1", "currency": "USD", "kind": "liability", "branch": "south"}),
        )
        .await;
    refused(&app, r, StatusCode::FORBIDDEN, "forbidden", p).await;
    let r = app
        .post(
            "/v1/accounts",
            &north,
            json!({"id": "n1", "currency": "USD", "kind": "liability", "branch": "north"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let co = app.token(Role::ComplianceOfficer, None, None);
    let r = app.post("/v1/accounts/bob/freeze", &co, json!(null)).await;
    assert_eq!(r.body["status"], "frozen", "{}", r.body);
    let p = app.position().await;
    let r = app
        .post("/v1/transfers", &co, transfer("z4", "ana", "bob", "1.00"))
        .await;
    refused(&app, r, StatusCode::FORBIDDEN, "forbidden", p).await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let app = app_with(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    let t = app.admin();
    assert_eq!(app.get("/v1/events", &t).await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/events", &t).await.status, StatusCode::OK);
    let r = app.get("/v1/events", &t).await;
    refused(&app, r, StatusCode::TOO_MANY_REQUESTS, "rate_limited", 0).await;
    assert!(app
        .get("/v1/events", &t)
        .await
        .headers
        .get(header::RETRY_AFTER)
        .is_some());
    let other = app.token(Role::Auditor, None, None);
    assert_eq!(
        app.get("/v1/events", &other).await.status,
        StatusCode::OK,
        "limits are per principal"
    );
}

#[tokio::test]
async fn ops_endpoints_need_no_token() {
    let app = app().await;
    app.seed().await;
    let r = app.call("GET", "/health/live", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.call("GET", "/health/ready", None, None).await;
    assert_eq!(
        (r.status, r.body["position"].as_u64()),
        (StatusCode::OK, Some(5))
    );
    let r = app.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.body.as_str().unwrap();
    for name in [
        "ultracore_http_requests_total",
        "ultracore_http_request_duration_seconds_bucket",
        "ultracore_commits_total",
        "ultracore_commit_events_bucket",
        "ultracore_engine_commands_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let r = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/accounts",
        "/v1/transfers",
        "/v1/transfers/batch",
        "/v1/entries/{id}/corrections",
        "/v1/accounts/{id}/restatement",
        "/v1/events",
        "/v1/audit",
    ] {
        assert!(
            r.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let p = app.position().await;
    refused(
        &app,
        app.call("GET", "/v2/nothing", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        p,
    )
    .await;
    let r = app
        .call("DELETE", "/v1/accounts", Some(&app.admin()), None)
        .await;
    refused(
        &app,
        r,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        p,
    )
    .await;

    app.state
        .ready
        .store(false, std::sync::atomic::Ordering::Release);
    let r = app.call("GET", "/health/ready", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.get(header::RETRY_AFTER).is_some());
}

#[tokio::test]
async fn placeholder_listeners_answer_health_and_404() {
    for name in ["compliance", "document", "notification"] {
        let router = ultracore_server::app::placeholder_router(name);
        let res = router
            .clone()
            .oneshot(Request::get("/health/live").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = router
            .oneshot(Request::get("/v1/anything").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}

/// Every server-level code has its page in docs/errors/ (a style check that runs as a test).
#[test]
fn every_server_code_is_documented() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors");
    let index = std::fs::read_to_string(docs.join("README.md")).unwrap();
    for code in ultracore_server::error::SERVER_CODES {
        assert!(
            docs.join(format!("{code}.md")).is_file(),
            "docs/errors/{code}.md is missing"
        );
        assert!(
            index.contains(&format!("[`{code}`]({code}.md)")),
            "{code} is not in docs/errors/README.md"
        );
    }
}

/// An OIDC provider's ES256 token, verified against a configured JWKS, works like an HS256 one
/// and goes through the same policy.
#[tokio::test]
async fn jwks_tokens_are_accepted_and_authorised() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let app = app_with(|c| {
        c.jwks_file = Some(fixtures.join("jwks.json"));
        c.jwt_issuer = Some("https://idp.test".into());
    })
    .await;
    app.seed().await;
    let der_hex = std::fs::read_to_string(fixtures.join("es256-test-key.pk8.hex")).unwrap();
    let der = ultracore_server::util::hex_decode(der_hex.trim()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("test-es256".into());
    let claims = json!({"sub": "ana@idp", "role": "customer", "customer": "ana",
        "iss": "https://idp.test", "exp": unix_seconds() + 60});
    let token = encode(&header, &claims, &EncodingKey::from_ec_der(&der)).unwrap();
    let r = app.get("/v1/accounts/ana/balance", &token).await;
    assert_eq!(
        (r.status, r.body["posted"].as_str()),
        (StatusCode::OK, Some("100.00")),
        "{}",
        r.body
    );
    let p = app.position().await;
    refused(
        &app,
        app.get("/v1/accounts/bob", &token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        p,
    )
    .await;
    let foreign = json!({"sub": "x", "role": "admin", "iss": "https://evil.test", "exp": unix_seconds() + 60});
    let token = encode(&header, &foreign, &EncodingKey::from_ec_der(&der)).unwrap();
    refused(
        &app,
        app.get("/v1/accounts/bob", &token).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        p,
    )
    .await;
}

/// A store that loses the acknowledgement of a write: the client gets 503 with Retry-After,
/// and retrying with the same id returns the transfer once, never twice.
#[tokio::test]
async fn store_failures_answer_503_and_a_retry_with_the_same_id_is_safe() {
    use std::sync::Arc;
    use ultracore_core::ledger::LedgerEvent;
    use ultracore_core::store::MemoryEventStore;
    use ultracore_core::testing::faulty::{Fault, FaultSchedule, FaultyStore};
    use ultracore_server::store::Stores;

    let config = Config {
        data_dir: temp_dir("api-faulty"),
        jwt_secret: Some(SECRET.to_string()),
        ..Config::default()
    };
    // Appends 1 and 2 open the accounts; append 3 (the first transfer) is written but its
    // acknowledgement is lost; append 4 fails before writing.
    let schedule = FaultSchedule::script([(3, Fault::LostAck), (4, Fault::FailBefore)]);
    let store = FaultyStore::new(MemoryEventStore::<LedgerEvent>::new(), schedule);
    let stores = Stores {
        events: Arc::new(store),
        snapshots: None,
        durable: false,
        index_checkpoint: None,
    };
    let (state, _) = AppState::build_on(&config, stores).await.unwrap();
    let app = App {
        router: ledger_router(state.clone()),
        state,
        keys: JwtKeys::hs256(SECRET.as_bytes(), 5),
    };
    let t = app.admin();
    for (id, kind) in [("cash", "asset"), ("ana", "liability")] {
        let r = app
            .post(
                "/v1/accounts",
                &t,
                json!({"id": id, "currency": "USD", "kind": kind}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = app
        .post("/v1/transfers", &t, transfer("t1", "cash", "ana", "5.00"))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body["code"], "unavailable");
    assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "1");
    let after_lost_ack = app.position().await;
    assert_eq!(
        after_lost_ack, 3,
        "the write happened; the engine rebuilt from the store"
    );

    let r = app
        .post("/v1/transfers", &t, transfer("t2", "cash", "ana", "1.00"))
        .await;
    refused(
        &app,
        r,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        after_lost_ack,
    )
    .await;

    let r = app
        .post("/v1/transfers", &t, transfer("t1", "cash", "ana", "5.00"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        app.position().await,
        3,
        "the retry found the transfer and wrote nothing"
    );
    let b = app.get("/v1/accounts/ana/balance", &t).await;
    assert_eq!(b.body["posted"], "5.00", "counted once");
}

/// With the MFA policy on, closing an account, corrections, reversals and money moves above
/// the threshold need a token whose `amr` contains "mfa": without one they are refused with
/// `403 mfa_required` (problem JSON, nothing written, audited as such); with one they go
/// through. At or below the threshold nothing changes.
#[tokio::test]
async fn sensitive_actions_need_an_mfa_token_when_the_policy_says_so() {
    let app = app_with(|c| {
        c.mfa_required_for = ["account_close", "correction", "reversal", "transfer"]
            .map(String::from)
            .to_vec();
        c.mfa_transfer_threshold = "100".into();
    })
    .await;
    app.seed().await; // deposits of exactly 100.00: not above the threshold
    let plain = app.admin();
    let mfa = app.admin_mfa();
    let r = app
        .post(
            "/v1/accounts",
            &plain,
            json!({"id": "z", "currency": "USD", "kind": "liability"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let p = app.position().await;
    let big = || transfer("big", "cash", "ana", "100.01");
    let mut hold = transfer("big-hold", "cash", "ana", "250.00");
    hold["pending"] = json!(true);
    let entry = json!({"id": "big-entry", "postings": [
        {"account": "cash", "direction": "debit", "amount": "150.00", "currency": "USD"},
        {"account": "ana", "direction": "credit", "amount": "150.00", "currency": "USD"}]});
    for (path, body) in [
        ("/v1/transfers", big()),
        ("/v1/transfers", hold.clone()),
        ("/v1/entries", entry.clone()),
        (
            "/v1/entries/dep-ana/corrections",
            json!({"id": "c1", "amount": "90.00", "reason": "typo"}),
        ),
        ("/v1/entries/dep-bob/reversal", json!({"id": "r1"})),
        ("/v1/accounts/z/close", json!(null)),
    ] {
        let r = app.post(path, &plain, body).await;
        refused(&app, r, StatusCode::FORBIDDEN, "mfa_required", p).await;
    }
    // A batch refuses only its items above the threshold.
    let r = app
        .post(
            "/v1/transfers/batch",
            &plain,
            json!([transfer("b-small", "cash", "bob", "5.00"), big()]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["refused"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(r.body["results"][1]["status"], 403);
    assert_eq!(
        r.body["results"][1]["problem"]["type"],
        "urn:ultracore:error:mfa_required"
    );
    let r = app
        .post(
            "/v1/transfers",
            &plain,
            transfer("at-limit", "cash", "ana", "100.00"),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "at the threshold: {}",
        r.body
    );

    // The refusals are audited with their own decision and outcome.
    let auditor = app.token(Role::Auditor, None, None);
    let a = app.get("/v1/audit?limit=1000", &auditor).await;
    let records = a.body["records"].as_array().unwrap();
    let refusals: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "mfa_required")
        .collect();
    assert_eq!(refusals.len(), 6, "{records:#?}");
    for r in &refusals {
        assert_eq!(
            (r["decision"].as_str(), r["status"].as_u64()),
            (Some("mfa_required"), Some(403))
        );
    }
    let batch = records
        .iter()
        .rev()
        .find(|r| r["path"] == "/v1/transfers/batch")
        .unwrap();
    assert_eq!(batch["decision"], "allow 1 deny 0 mfa_required 1");

    // The same requests with an MFA token go through (the refusals recorded nothing, so the
    // same ids are free).
    for (path, body, status) in [
        ("/v1/transfers", big(), StatusCode::CREATED),
        ("/v1/transfers", hold, StatusCode::CREATED),
        ("/v1/entries", entry, StatusCode::CREATED),
        (
            "/v1/entries/dep-ana/corrections",
            json!({"id": "c1", "amount": "90.00", "reason": "typo"}),
            StatusCode::CREATED,
        ),
        (
            "/v1/entries/dep-bob/reversal",
            json!({"id": "r1"}),
            StatusCode::CREATED,
        ),
        ("/v1/accounts/z/close", json!(null), StatusCode::OK),
    ] {
        let r = app.post(path, &mfa, body).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
    }
}

/// Off by default: the same sensitive actions need no MFA.
#[tokio::test]
async fn without_an_mfa_policy_sensitive_actions_need_no_mfa() {
    let app = app().await;
    app.seed().await;
    let t = app.admin();
    let r = app
        .post(
            "/v1/transfers",
            &t,
            transfer("big", "cash", "ana", "100000.00"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .post("/v1/entries/dep-bob/reversal", &t, json!({"id": "r1"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// A JWKS served over HTTP by a tiny server in the test: `serve` replaces what it serves, and
/// `fetches` counts the requests it answered.
struct JwksServer {
    addr: std::net::SocketAddr,
    jwks: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start() -> JwksServer {
        JwksServer::start_with(None).await
    }

    /// Serves over TLS with `tls` when given.
    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            jwks: Default::default(),
            fetches: Default::default(),
        };
        let (jwks, fetches) = (server.jwks.clone(), server.fetches.clone());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let body = jwks.lock().unwrap().clone();
                let served = match &tls {
                    None => answer(socket, &body).await,
                    Some(acceptor) => match acceptor.accept(socket).await {
                        Ok(s) => answer(s, &body).await,
                        Err(_) => false, // a client that does not trust us
                    },
                };
                if served {
                    fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        server
    }

    fn serve(&self, keys: &[&EsKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.jwks.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one `GET /keys` request and answers `body`; whether it did.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut socket: S,
    body: &str,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    assert!(request.starts_with(b"GET /keys HTTP/1.1\r\n"));
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let ok = socket.write_all(response.as_bytes()).await.is_ok();
    let _ = socket.shutdown().await;
    ok
}

/// An ES256 key pair generated in the test, with its public JWK.
struct EsKey {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

impl EsKey {
    fn generate(kid: &str) -> EsKey {
        use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey};
        use p256::pkcs8::EncodePrivateKey;
        let secret = loop {
            let bytes = ultracore_server::util::random_bytes::<32>();
            if let Ok(k) = p256::ecdsa::SigningKey::from_bytes(&bytes.into()) {
                break k;
            }
        };
        let der = secret.to_pkcs8_der().unwrap();
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap())
                .unwrap();
        jwk["kid"] = json!(kid);
        EsKey {
            kid: kid.to_string(),
            encoding,
            jwk,
        }
    }

    fn token(&self, sub: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = json!({"sub": sub, "role": "admin", "iss": "https://idp.test", "exp": unix_seconds() + 60});
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// The JWKS is fetched from its URL at start; a token signed by a key the provider added later
/// (rotation) makes the server fetch it again, at most once per refresh interval, and a key
/// the provider dropped stops working after that fetch.
#[tokio::test]
async fn jwks_from_a_url_is_fetched_at_start_and_again_on_an_unknown_kid() {
    let idp = JwksServer::start().await;
    let (k1, k2) = (EsKey::generate("k1"), EsKey::generate("k2"));
    idp.serve(&[&k1]);
    let url = format!("http://{}/keys", idp.addr);
    let app = app_with(|c| {
        c.jwks_url = Some(url);
        c.jwt_issuer = Some("https://idp.test".into());
        c.jwks_refresh_min_seconds = 1;
    })
    .await;
    assert_eq!(idp.fetches(), 1, "fetched at start");
    let r = app.get("/v1/events", &k1.token("idp-admin")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(idp.fetches(), 1, "a known kid fetches nothing");

    // The provider rotates: k2 in, k1 out. Within the refresh interval of the start-up fetch
    // an unknown kid is refused without a fetch; garbage kids cannot hammer the provider.
    idp.serve(&[&k2]);
    let p = app.position().await;
    for _ in 0..5 {
        let r = app.get("/v1/events", &k2.token("idp-admin")).await;
        refused(&app, r, StatusCode::UNAUTHORIZED, "unauthenticated", p).await;
    }
    assert_eq!(idp.fetches(), 1, "rate limited");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = app.get("/v1/events", &k2.token("idp-admin")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "after the interval the new key is fetched: {}",
        r.body
    );
    assert_eq!(idp.fetches(), 2);
    // k1 was dropped by that fetch; asking again for it within the interval fetches nothing.
    let r = app.get("/v1/events", &k1.token("idp-admin")).await;
    refused(&app, r, StatusCode::UNAUTHORIZED, "unauthenticated", p).await;
    assert_eq!(idp.fetches(), 2);
    // HS256 tokens keep working throughout, and an unknown kid never needs a fetch for them.
    assert_eq!(
        app.get("/v1/events", &app.admin()).await.status,
        StatusCode::OK
    );
    assert_eq!(idp.fetches(), 2);
}

/// A provider that is down at start does not stop the server; its tokens work once a fetch on
/// an unknown kid succeeds.
#[tokio::test]
async fn a_jwks_url_that_fails_at_start_is_fetched_again_later() {
    let idp = JwksServer::start().await;
    let k1 = EsKey::generate("k1");
    *idp.jwks.lock().unwrap() = "not json".into();
    let url = format!("http://{}/keys", idp.addr);
    let app = app_with(|c| {
        c.jwks_url = Some(url);
        c.jwks_refresh_min_seconds = 0;
    })
    .await;
    assert_eq!(idp.fetches(), 1);
    assert_eq!(
        app.get("/v1/events", &app.admin()).await.status,
        StatusCode::OK
    );
    idp.serve(&[&k1]);
    let r = app.get("/v1/events", &k1.token("idp-admin")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(idp.fetches(), 2);
}

/// An `https://` JWKS URL: its certificate must chain to the configured CA file (here the
/// provider's self-signed certificate); without it (Mozilla's roots) the fetch fails and the
/// provider's tokens are refused.
#[tokio::test]
async fn jwks_over_https_is_fetched_only_from_a_trusted_certificate() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = temp_dir("jwks-tls");
    let (cert, key) = (dir.join("idp.pem"), dir.join("idp.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let acceptor = ultracore_server::tls::acceptor(&cert, &key).unwrap();
    let idp = JwksServer::start_with(Some(acceptor)).await;
    let k1 = EsKey::generate("k1");
    idp.serve(&[&k1]);
    let url = format!("https://localhost:{}/keys", idp.addr.port());

    let trusting = app_with(|c| {
        c.jwks_url = Some(url.clone());
        c.jwks_ca_file = Some(cert.clone());
    })
    .await;
    assert_eq!(idp.fetches(), 1);
    let r = trusting.get("/v1/events", &k1.token("idp-admin")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let default_roots = app_with(|c| c.jwks_url = Some(url.clone())).await;
    let r = default_roots
        .get("/v1/events", &k1.token("idp-admin"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(
        idp.fetches(),
        1,
        "no JWKS was served to a client that does not trust it"
    );
}
