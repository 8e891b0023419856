//! `ultracore-loadgen`: drives a running `ultracore` server the way a bank's batch or
//! payment front end would, and checks the books afterwards.
//!
//! 1. Opens `--accounts` accounts under a run id (so runs never collide).
//! 2. `--connections` tasks, each with one keep-alive HTTP/1.1 connection, post `--transfers`
//!    transfers with unique ids (`--mode single`: `POST /v1/transfers`; `--mode batch`:
//!    `POST /v1/transfers/batch` with `--batch-size` items). A request whose connection breaks
//!    is retried with the same id until the server answers: ids make retries safe, so the
//!    generator always knows which transfers were acknowledged.
//! 3. Prints a progress line every second, then throughput, latency percentiles
//!    (p50/p99/p999/max) and errors by status.
//! 4. Verifies: every account's posted balance equals the sum of the acknowledged transfers.
//!
//! ```text
//! TOKEN=$(ultracore token --sub loadgen --role admin)
//! ultracore-loadgen --token "$TOKEN" --connections 64 --transfers 200000
//! ultracore-loadgen --token "$TOKEN" --mode batch --batch-size 1000 --transfers 2000000
//! ```
//! Exit status: 0 when every transfer was acknowledged and the balances verify, 1 otherwise.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Command line.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// Base URL of the ledger listener.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Bearer token (e.g. `ultracore token --sub loadgen --role admin`).
    #[arg(long, env = "ULTRACORE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Accounts the transfers move money between.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u64,
    /// Transfers to post.
    #[arg(long, default_value_t = 100_000)]
    pub transfers: u64,
    /// One transfer per request, or the batch endpoint.
    #[arg(long, value_enum, default_value_t = Mode::Single)]
    pub mode: Mode,
    /// Transfers per batch request (batch mode).
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// Seed of the transfer stream (accounts and amounts).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of every id this run creates (default: derived from the time).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Currency of the accounts.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Skip the balance verification.
    #[arg(long)]
    pub no_verify: bool,
}

/// How transfers are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `POST /v1/transfers`, one per request.
    Single,
    /// `POST /v1/transfers/batch`.
    Batch,
}

/// Host, port and the `Host` header of the target.
#[derive(Clone, Debug)]
struct Target {
    addr: String,
    host: String,
    /// `Bearer <token>`, made once.
    authorization: String,
}

/// A fatal setup or protocol problem.
#[derive(Debug)]
pub struct Fail(pub String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

/// One keep-alive connection; reconnects when the server closes it.
struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(target: Target) -> Conn {
        Conn {
            target,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Fail> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(&self.target.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| Fail("no connection".into()))
    }

    /// One request; `Err` only when the connection failed (the outcome is then unknown).
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), Fail> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.target.host)
            .header("authorization", &self.target.authorization)
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let sender = self.connect().await?;
        sender.ready().await?;
        let result = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                self.sender = None;
                Err(e.into())
            }
        }
    }

    /// Retries a request whose connection broke, up to `attempts` times. Only for idempotent
    /// requests (every write here carries a client-chosen id).
    async fn request_retrying(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        attempts: u32,
    ) -> Result<(StatusCode, Bytes), Fail> {
        let mut last = Fail("no attempt".into());
        for i in 0..attempts {
            // `Bytes` clones share the buffer.
            match self.request(method.clone(), path, body.clone()).await {
                Ok(r) if r.0 == StatusCode::SERVICE_UNAVAILABLE => {
                    last = Fail(format!("503: {}", String::from_utf8_lossy(&r.1)));
                }
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(10 * u64::from(i + 1))).await;
        }
        Err(last)
    }
}

/// SplitMix64: the transfer stream is a pure function of (seed, index).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Transfer `k`: (debit account, credit account, amount in minor units).
fn transfer(seed: u64, accounts: u64, k: u64) -> (u64, u64, i64) {
    let a = mix(seed ^ mix(k));
    let b = mix(a);
    let from = a % accounts;
    let to = (from + 1 + b % (accounts - 1)) % accounts;
    (from, to, 1 + (mix(b) % 10_000) as i64)
}

/// Decimal string of `minor` with two minor digits (the generator uses 2-decimal currencies;
/// `Shared::write_body` writes the same inline).
#[cfg(test)]
fn decimal(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// Everything the workers share.
struct Shared {
    args: Args,
    run: String,
    next: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    fn account(&self, i: u64) -> String {
        format!("{}-a{i}", self.run)
    }
    /// Appends transfer `k` as a JSON object to `out`. Written directly rather than through a
    /// `serde_json::Value`, so that the generator spends its CPU on the wire, not on building
    /// trees (client and server share the machine's cores). The run id and the currency are
    /// checked to need no escaping (see [`plain`]); the test `bodies_are_the_json_of_a_transfer`
    /// compares the output with serde_json's.
    fn write_body(&self, k: u64, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let (from, to, minor) = transfer(self.args.seed, self.args.accounts, k);
        let run = &self.run;
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            r#"{{"id":"{run}-t{k}","debit_account":"{run}-a{from}","credit_account":"{run}-a{to}","amount":"{}.{:02}","currency":"{}"}}"#,
            minor / 100,
            minor % 100,
            self.args.currency
        );
    }

    /// The request body for transfers `ks`: one object, or an array of them in batch mode.
    fn request_body(&self, ks: &[u64]) -> Bytes {
        let mut out = Vec::with_capacity(ks.len() * 160 + 2);
        match self.args.mode {
            Mode::Single => self.write_body(ks[0], &mut out),
            Mode::Batch => {
                out.push(b'[');
                for (i, &k) in ks.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_body(k, &mut out);
                }
                out.push(b']');
            }
        }
        Bytes::from(out)
    }
}

/// Whether `s` can go into a JSON string as it is (so ids made from it need no escaping).
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The batch endpoint's answer, as far as the generator reads it (other fields are skipped
/// without building a tree).
#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<ItemAnswer>,
}

/// One item of a batch answer: its HTTP-like status and, for a refusal, the problem.
#[derive(Deserialize)]
struct ItemAnswer {
    status: u16,
    #[serde(default)]
    problem: Option<ItemProblem>,
}

#[derive(Deserialize)]
struct ItemProblem {
    #[serde(rename = "type")]
    kind: String,
}

impl ItemAnswer {
    fn ok(&self) -> bool {
        matches!(self.status, 200 | 201)
    }

    /// The error label of a refused item: its problem type, or its status.
    fn error(&self) -> String {
        match &self.problem {
            Some(p) => p.kind.clone(),
            None => format!("status {}", self.status),
        }
    }
}

/// What one worker saw.
struct WorkerReport {
    latency_us: Histogram<u64>,
    acknowledged: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

async fn worker(shared: Arc<Shared>, target: Target) -> Result<WorkerReport, Fail> {
    let mut conn = Conn::new(target);
    let mut report = WorkerReport {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        acknowledged: Vec::new(),
        errors: BTreeMap::new(),
    };
    let total = shared.args.transfers;
    let step = match shared.args.mode {
        Mode::Single => 1,
        Mode::Batch => shared.args.batch_size.max(1) as u64,
    };
    loop {
        let first = shared.next.fetch_add(step, Ordering::Relaxed);
        if first >= total {
            return Ok(report);
        }
        let ks: Vec<u64> = (first..(first + step).min(total)).collect();
        let path = match shared.args.mode {
            Mode::Single => "/v1/transfers",
            Mode::Batch => "/v1/transfers/batch",
        };
        let body = shared.request_body(&ks);
        let t = Instant::now();
        let answer = conn.request_retrying(Method::POST, path, body, 50).await;
        let micros = t.elapsed().as_micros().max(1) as u64;
        let _ = report.latency_us.record(micros.min(60_000_000));
        let mut ok = 0u64;
        match answer {
            Err(e) => {
                *report
                    .errors
                    .entry(format!("transport: {}", e.0))
                    .or_default() += ks.len() as u64;
            }
            Ok((status, bytes)) if status.is_success() => match shared.args.mode {
                Mode::Single => {
                    report.acknowledged.push(ks[0]);
                    ok = 1;
                }
                Mode::Batch => {
                    let items = serde_json::from_slice::<BatchAnswer>(&bytes)
                        .map_err(|e| {
                            Fail(format!(
                                "unexpected batch answer ({e}): {}",
                                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                            ))
                        })?
                        .results;
                    if items.len() != ks.len() {
                        return Err(Fail(format!(
                            "batch of {} answered with {} items",
                            ks.len(),
                            items.len()
                        )));
                    }
                    for (k, item) in ks.iter().zip(&items) {
                        if item.ok() {
                            report.acknowledged.push(*k);
                            ok += 1;
                        } else {
                            *report.errors.entry(item.error()).or_default() += 1;
                        }
                    }
                }
            },
            Ok((status, bytes)) => {
                let label = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
                    .unwrap_or_default();
                *report
                    .errors
                    .entry(format!("{} {label}", status.as_u16()))
                    .or_default() += ks.len() as u64;
            }
        }
        shared.done.fetch_add(ok, Ordering::Relaxed);
        shared
            .failed
            .fetch_add(ks.len() as u64 - ok, Ordering::Relaxed);
    }
}

fn parse_target(args: &Args) -> Result<Target, Fail> {
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| Fail("--url must start with http://".into()))?;
    let host = rest.trim_end_matches('/').to_string();
    Ok(Target {
        addr: host.clone(),
        host,
        authorization: format!("Bearer {}", args.token),
    })
}

async fn open_accounts(shared: &Shared, target: &Target) -> Result<(), Fail> {
    let mut conn = Conn::new(target.clone());
    for i in 0..shared.args.accounts {
        let body = json!({
            "id": shared.account(i),
            "currency": shared.args.currency,
            "kind": "liability",
        });
        let body = Bytes::from(serde_json::to_vec(&body)?);
        let (status, bytes) = conn
            .request_retrying(Method::POST, "/v1/accounts", body, 20)
            .await?;
        if !status.is_success() {
            return Err(Fail(format!(
                "opening {}: {status} {}",
                shared.account(i),
                String::from_utf8_lossy(&bytes)
            )));
        }
    }
    Ok(())
}

/// Compares every account's posted balance with the acknowledged transfers.
async fn verify(shared: &Shared, target: &Target, acknowledged: &[u64]) -> Result<u64, Fail> {
    let n = shared.args.accounts as usize;
    let mut expected = vec![0i64; n];
    for &k in acknowledged {
        let (from, to, minor) = transfer(shared.args.seed, shared.args.accounts, k);
        // Liability accounts: credits raise the balance, debits lower it.
        expected[from as usize] -= minor;
        expected[to as usize] += minor;
    }
    let mut conn = Conn::new(target.clone());
    let mut wrong = 0;
    for (i, want) in expected.iter().enumerate() {
        let path = format!("/v1/accounts/{}/balance", shared.account(i as u64));
        let (status, bytes) = conn
            .request_retrying(Method::GET, &path, Bytes::new(), 20)
            .await?;
        if !status.is_success() {
            return Err(Fail(format!("{path}: {status}")));
        }
        let v: Value = serde_json::from_slice(&bytes)?;
        let posted = v
            .get("posted")
            .and_then(Value::as_str)
            .ok_or_else(|| Fail(format!("{path}: no posted balance in {v}")))?;
        let got = Decimal::from_str(posted)?;
        let want = Decimal::new(*want, 2);
        if got != want {
            wrong += 1;
            if wrong <= 10 {
                eprintln!(
                    "MISMATCH {}: posted {got}, expected {want}",
                    shared.account(i as u64)
                );
            }
        }
    }
    Ok(wrong)
}

fn percentile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1_000.0
}

/// Runs the whole load test: open accounts, post, report, verify. `Ok(true)` when every
/// transfer was acknowledged and the balances verify.
pub async fn run(args: Args) -> Result<bool, Fail> {
    if args.accounts < 2 {
        return Err(Fail("--accounts must be at least 2".into()));
    }
    let target = parse_target(&args)?;
    if !plain(&args.currency) {
        return Err(Fail(format!(
            "--currency {:?} is not a plain code",
            args.currency
        )));
    }
    let run = args.run_id.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("lg{t}")
    });
    if !plain(&run) {
        return Err(Fail(format!(
            "--run-id {run:?}: use letters, digits, '-', '_' or '.'"
        )));
    }
    let shared = Arc::new(Shared {
        args: args.clone(),
        run,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    eprintln!(
        "run {}: opening {} accounts at {}",
        shared.run, args.accounts, args.url
    );
    open_accounts(&shared, &target).await?;
    eprintln!(
        "posting {} transfers ({:?}{}) over {} connections",
        args.transfers,
        args.mode,
        if args.mode == Mode::Batch {
            format!(", {} per request", args.batch_size)
        } else {
            String::new()
        },
        args.connections
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections.max(1))
        .map(|_| tokio::spawn(worker(shared.clone(), target.clone())))
        .collect();
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = shared.done.load(Ordering::Relaxed);
                let failed = shared.failed.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>4.0}s] {done} ok ({:.1}%), {}/s, {failed} failed",
                    started.elapsed().as_secs_f64(),
                    100.0 * (done + failed) as f64 / shared.args.transfers.max(1) as f64,
                    done - last
                );
                last = done;
            }
        })
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acknowledged = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        let r = w.await??;
        latency.add(&r.latency_us)?;
        acknowledged.extend(r.acknowledged);
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    progress.abort();
    let ok = acknowledged.len() as u64;
    println!("mode:          {:?}", args.mode);
    println!("connections:   {}", args.connections);
    println!("transfers:     {ok} acknowledged of {}", args.transfers);
    println!("elapsed:       {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput:    {:.0} transfers/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency (per request): p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms ({} requests)",
        percentile_ms(&latency, 0.50),
        percentile_ms(&latency, 0.99),
        percentile_ms(&latency, 0.999),
        latency.max() as f64 / 1_000.0,
        latency.len()
    );
    let error_count: u64 = errors.values().sum();
    println!("errors:        {error_count}");
    for (k, v) in &errors {
        println!("  {v:>10}  {k}");
    }
    let mut good = error_count == 0 && ok == args.transfers;
    if !args.no_verify {
        let wrong = verify(&shared, &target, &acknowledged).await?;
        println!(
            "verification:  {} accounts, {wrong} mismatched",
            args.accounts
        );
        good &= wrong == 0;
    }
    Ok(good)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_never_move_money_to_the_same_account() {
        for k in 0..10_000 {
            let (from, to, minor) = transfer(7, 3, k);
            assert_ne!(from, to);
            assert!(from < 3 && to < 3);
            assert!((1..=10_000).contains(&minor));
        }
    }

    #[test]
    fn decimals_have_two_places() {
        assert_eq!(decimal(1), "0.01");
        assert_eq!(decimal(12_345), "123.45");
        assert_eq!(decimal(100), "1.00");
    }

    fn shared(mode: Mode) -> Shared {
        let args = Args::parse_from(["loadgen", "--token", "t", "--accounts", "50"]);
        Shared {
            args: Args { mode, ..args },
            run: "lg1".into(),
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    #[test]
    fn bodies_are_the_json_of_a_transfer() {
        let s = shared(Mode::Batch);
        let ks = [0, 7, 123_456];
        let got: Value = serde_json::from_slice(&s.request_body(&ks)).unwrap();
        let want: Vec<Value> = ks
            .iter()
            .map(|&k| {
                let (from, to, minor) = transfer(s.args.seed, s.args.accounts, k);
                json!({
                    "id": format!("lg1-t{k}"),
                    "debit_account": s.account(from),
                    "credit_account": s.account(to),
                    "amount": decimal(minor),
                    "currency": "USD",
                })
            })
            .collect();
        assert_eq!(got, Value::Array(want.clone()));
        let single: Value =
            serde_json::from_slice(&shared(Mode::Single).request_body(&[7])).unwrap();
        assert_eq!(single, want[1]);
    }

    #[test]
    fn only_plain_ids_go_unescaped() {
        assert!(plain("lg1764000000000") && plain("run-1_a.b") && plain("USD"));
        assert!(!plain("") && !plain("a\"b") && !plain("a b") && !plain("é"));
    }

    #[test]
    fn batch_items_are_read_by_status_and_problem_type() {
        let answer: BatchAnswer = serde_json::from_value(json!({
            "accepted": 1, "refused": 1,
            "results": [
                {"index": 0, "status": 201, "result": {"id": "t1", "status": "posted"}},
                {"index": 1, "status": 422, "problem": {"type": "insufficient_funds", "title": "x"}},
            ]
        }))
        .unwrap();
        assert!(answer.results[0].ok());
        assert!(!answer.results[1].ok());
        assert_eq!(answer.results[1].error(), "insufficient_funds");
    }
}
