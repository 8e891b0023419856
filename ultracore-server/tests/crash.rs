//! Crash test: the real binary on its durable journal, concurrent transfers from several
//! clients, `kill -9` at a seeded random moment, restart. Every acknowledged transfer must be
//! there; each transfer whose answer was lost in the crash is either wholly there or wholly
//! absent; balances equal a recomputation from the transfers that are there; debits equal
//! credits; retries change nothing. Repeated with several seeds.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CUSTOMERS: usize = 8;
const CLIENTS: usize = 6;

/// A transfer the clients tried: (id, debit, credit, cents).
#[derive(Clone, Debug)]
struct Tried {
    id: String,
    from: String,
    to: String,
    cents: i64,
}

/// What a client learned about a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// 201/200: recorded.
    Acknowledged,
    /// 422: refused (insufficient funds); the refusal is recorded too.
    Refused,
    /// No answer: the server died while it was in flight.
    Unknown,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn cents(decimal: &str) -> i64 {
    let (units, frac) = decimal.split_once('.').unwrap_or((decimal, "00"));
    let negative = units.starts_with('-');
    let v =
        units.trim_start_matches('-').parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
    if negative {
        -v
    } else {
        v
    }
}

fn run_seed(seed: u64) {
    let dir = temp(&format!("crash-{seed}"));
    let admin = token(&dir, "admin");
    let server = start(&dir);
    let addr = server.addr.clone();
    let (s, _, b) = http(
        &addr,
        "POST",
        "/v1/accounts",
        Some(&admin),
        Some(r#"{"id":"bank","currency":"USD","kind":"asset"}"#),
    );
    assert_eq!(s, 201, "{b}");
    for c in 0..CUSTOMERS {
        // Customers may not go below zero: refusals are part of the workload.
        let body = format!(
            r#"{{"id":"c{c}","currency":"USD","kind":"liability","flags":{{"debits_must_not_exceed_credits":true}}}}"#
        );
        let (s, _, b) = http(&addr, "POST", "/v1/accounts", Some(&admin), Some(&body));
        assert_eq!(s, 201, "{b}");
    }

    let fates: Arc<Mutex<Vec<(Tried, Fate)>>> = Arc::default();
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (addr, admin, fates) = (addr.clone(), admin.clone(), fates.clone());
        clients.push(std::thread::spawn(move || {
            let mut rng = Rng(seed * 1_000 + client as u64);
            for i in 0.. {
                let from = match rng.below(3) {
                    0 => "bank".to_string(),
                    _ => format!("c{}", rng.below(CUSTOMERS as u64)),
                };
                let mut to = format!("c{}", rng.below(CUSTOMERS as u64));
                if to == from {
                    to = "bank".to_string();
                }
                let t = Tried {
                    id: format!("s{seed}-k{client}-{i}"),
                    from,
                    to,
                    cents: 1 + rng.below(5_000) as i64,
                };
                let body = format!(
                    r#"{{"id":"{}","debit_account":"{}","credit_account":"{}","amount":"{}.{:02}","currency":"USD"}}"#,
                    t.id, t.from, t.to, t.cents / 100, t.cents % 100
                );
                let fate = match try_http(&addr, "POST", "/v1/transfers", Some(&admin), Some(&body)) {
                    Ok((200 | 201, _, _)) => Fate::Acknowledged,
                    Ok((422, _, _)) => Fate::Refused,
                    Ok((other, _, b)) => panic!("seed {seed}: transfer {} answered {other}: {b}", t.id),
                    Err(_) => Fate::Unknown,
                };
                let dead = fate == Fate::Unknown;
                fates.lock().unwrap().push((t, fate));
                if dead {
                    return;
                }
            }
        }));
    }
    // Kill at a seeded moment between 0.3 s and 1.5 s into the load.
    let mut rng = Rng(seed);
    std::thread::sleep(Duration::from_millis(300 + rng.below(1_200)));
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no shutdown path runs
    server.child.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let fates = fates.lock().unwrap().clone();
    let acked = fates
        .iter()
        .filter(|(_, f)| *f == Fate::Acknowledged)
        .count();
    assert!(
        acked > 20,
        "seed {seed}: only {acked} transfers before the kill ({:?})",
        started.elapsed()
    );
    drop(server);

    // Restart on the same data directory.
    let server = start(&dir);
    let addr = &server.addr;
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut in_doubt_landed = 0;
    for (t, fate) in &fates {
        let (status, _, body) = http(
            addr,
            "GET",
            &format!("/v1/entries/{}", t.id),
            Some(&admin),
            None,
        );
        let present = match status {
            200 => {
                let v: Value = serde_json::from_str(&body).unwrap();
                // A refusal is recorded as a rejected id, not as an entry with money.
                v.get("status").and_then(Value::as_str) != Some("rejected")
            }
            404 => false,
            other => panic!("seed {seed}: GET entry {} answered {other}: {body}", t.id),
        };
        match fate {
            Fate::Acknowledged => assert!(present, "seed {seed}: acknowledged {} lost", t.id),
            Fate::Refused => assert!(!present, "seed {seed}: refused {} has money", t.id),
            Fate::Unknown => in_doubt_landed += usize::from(present),
        }
        if present {
            *expected.entry(t.from.clone()).or_default() -= t.cents;
            *expected.entry(t.to.clone()).or_default() += t.cents;
        }
    }
    // Balances: customers are credit-normal (credits add), the bank is debit-normal.
    let mut customers_total = 0;
    let mut bank = 0;
    for acc in std::iter::once("bank".to_string()).chain((0..CUSTOMERS).map(|c| format!("c{c}"))) {
        let (status, _, body) = http(
            addr,
            "GET",
            &format!("/v1/accounts/{acc}/balance"),
            Some(&admin),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let posted = cents(v["posted"].as_str().unwrap());
        let want = expected.get(&acc).copied().unwrap_or(0);
        if acc == "bank" {
            assert_eq!(posted, -want, "seed {seed}: bank balance");
            bank = posted;
        } else {
            assert_eq!(posted, want, "seed {seed}: balance of {acc}");
            assert!(posted >= 0, "seed {seed}: {acc} went below zero");
            customers_total += posted;
        }
    }
    assert_eq!(bank, customers_total, "seed {seed}: debits equal credits");
    // Retrying an acknowledged transfer answers again and changes nothing.
    if let Some((t, _)) = fates.iter().find(|(_, f)| *f == Fate::Acknowledged) {
        let body = format!(
            r#"{{"id":"{}","debit_account":"{}","credit_account":"{}","amount":"{}.{:02}","currency":"USD"}}"#,
            t.id,
            t.from,
            t.to,
            t.cents / 100,
            t.cents % 100
        );
        let (status, _, answer) = http(addr, "POST", "/v1/transfers", Some(&admin), Some(&body));
        assert!(
            status == 200 || status == 201,
            "seed {seed}: retry answered {status}: {answer}"
        );
        let (_, _, b) = http(addr, "GET", "/v1/accounts/bank/balance", Some(&admin), None);
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            cents(v["posted"].as_str().unwrap()),
            bank,
            "seed {seed}: retry moved money"
        );
    }
    eprintln!(
        "seed {seed}: {} tried, {acked} acknowledged, {in_doubt_landed} in doubt and landed; all present after kill -9",
        fates.len()
    );
}

#[test]
fn kill_minus_nine_under_load_loses_no_acknowledged_transfer() {
    for seed in 1..=3 {
        run_seed(seed);
    }
}
