//! Embeds `ultracore-core` in a program: opens accounts, posts a transfer, back-dates an entry,
//! corrects one, and prints balances for several (valid time, known at) pairs — the bitemporal
//! table that explains what the ledger believed about each day, and when.
//!
//! Run: `cargo run -p embedded-ledger`

use std::sync::Arc;

use ultracore_core::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("valid RFC 3339 literal")
}

fn open(id: &str, kind: AccountKind, constraints: Constraints) -> Command {
    Command::OpenAccount(OpenAccount {
        id: id.parse().expect("valid id"),
        currency: Currency::EUR,
        kind,
        owner: None,
        branch: None,
        constraints,
        metadata: Metadata::new(),
        effective_at: Some(EffectiveAt(ts("2026-03-01T00:00:00Z"))),
    })
}

fn transfer(id: &str, from: &str, to: &str, amount: &str, effective: &str) -> Command {
    Command::PostEntry(PostEntry::transfer(
        id.parse().expect("valid id"),
        from.parse().expect("valid id"),
        to.parse().expect("valid id"),
        Amount::parse(amount, Currency::EUR).expect("valid amount"),
        Some(EffectiveAt(ts(effective))),
    ))
}

fn main() {
    futures_executor::block_on(run());
}

async fn run() {
    // The clock is injected: here a manual one, so the story is reproducible.
    let clock = Arc::new(ManualClock::new(ts("2026-03-10T09:00:00Z")));
    let engine = Engine::open(
        MemoryEventStore::new(),
        clock.clone(),
        EngineConfig::default(),
    )
    .await
    .expect("an empty store opens");
    let exec = |c: Command| {
        let engine = &engine;
        async move {
            match engine.execute(c, Trace::default()).await {
                Ok(_) => {}
                Err(e) => println!("  refused: {e}"),
            }
        }
    };

    println!("10 Mar 09:00 — open accounts; salary of 2,500.00 for 1 Mar; rent of 900.00 on 5 Mar");
    let no_overdraft = Constraints {
        debits_must_not_exceed_credits: true,
        ..Constraints::default()
    };
    exec(open(
        "bank:cash",
        AccountKind::Asset,
        Constraints::default(),
    ))
    .await;
    exec(open("cust:ana", AccountKind::Liability, no_overdraft)).await;
    exec(open(
        "cust:landlord",
        AccountKind::Liability,
        Constraints::default(),
    ))
    .await;
    exec(transfer(
        "salary-03",
        "bank:cash",
        "cust:ana",
        "2500.00",
        "2026-03-01T08:00:00Z",
    ))
    .await;
    exec(transfer(
        "rent-03",
        "cust:ana",
        "cust:landlord",
        "900.00",
        "2026-03-05T10:00:00Z",
    ))
    .await;
    let t1 = engine.read(|l| l.position()).await;

    clock.set(ts("2026-03-12T15:00:00Z"));
    println!("12 Mar 15:00 — a card payment of 120.00 made on 3 Mar arrives late (back-dated)");
    exec(transfer(
        "card-7781",
        "cust:ana",
        "bank:cash",
        "120.00",
        "2026-03-03T18:30:00Z",
    ))
    .await;
    println!("12 Mar 15:00 — a back-dated 2,000.00 on 2 Mar would overdraw ana on 5 Mar: refused");
    exec(transfer(
        "big-1",
        "cust:ana",
        "bank:cash",
        "2000.00",
        "2026-03-02T00:00:00Z",
    ))
    .await;
    let t2 = engine.read(|l| l.position()).await;

    clock.set(ts("2026-03-15T11:00:00Z"));
    println!("15 Mar 11:00 — correction: the salary was 2,550.00");
    let fix = Command::Correct(Correct {
        id: "fix-salary-03".parse().expect("valid id"),
        entry: "salary-03".parse().expect("valid id"),
        amount: Some(Amount::parse("2550.00", Currency::EUR).expect("valid amount")),
        postings: None,
        effective_at: None,
        cancel: false,
        reason: "payroll keyed the wrong gross".into(),
    });
    exec(fix).await;

    let ana: AccountId = "cust:ana".parse().expect("valid id");
    let valid = [
        "2026-03-02T00:00:00Z",
        "2026-03-04T00:00:00Z",
        "2026-03-06T00:00:00Z",
    ];
    let known = [
        ("known 10 Mar", KnownAt::Position(t1)),
        ("known 12 Mar", KnownAt::Position(t2)),
        ("known now   ", KnownAt::Now),
    ];
    println!("\nana's posted balance (EUR) — rows: as known at; columns: valid on");
    println!("               2 Mar      4 Mar      6 Mar");
    for (label, k) in known {
        let row = engine
            .read(|l| {
                valid
                    .iter()
                    .map(|v| {
                        let b = l.balance(&ana, ts(v), k).expect("ana exists");
                        format!("{:>9}", b.posted.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            })
            .await;
        println!("{label}  {row}");
    }
    let history = engine
        .read(|l| l.entry_history(&"salary-03".parse().expect("valid id")))
        .await
        .expect("salary exists");
    println!("\nsalary-03 versions:");
    for v in history {
        let amount = v
            .postings
            .first()
            .map(|p| p.amount.to_string())
            .unwrap_or_default();
        let until = v
            .superseded_at
            .map_or("now".to_string(), |(_, t)| t.to_string());
        println!(
            "  v{} {amount} effective {} believed from {} until {until}",
            v.version, v.effective_at, v.recorded_at
        );
    }
}
