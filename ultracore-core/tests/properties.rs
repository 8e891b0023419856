//! Property tests over seeded workloads: the ledger against a naive oracle, its bookkeeping
//! invariants, replay, stable past answers, idempotent retries, constraints at every valid
//! time, and recovery of the engine over a store that fails. Every failure names its seed.
//!
//! Run: `cargo test -p ultracore-core --features test-util --test properties`.
#![cfg(feature = "test-util")]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_executor::block_on;
use proptest::prelude::*;
use ultracore_core::engine::{replay, EngineError};
use ultracore_core::ledger::{AccountStatus, EntryReceipt, EntryStatus, Statement};
use ultracore_core::prelude::*;
use ultracore_core::testing::contract::event_store_contract;
use ultracore_core::testing::faulty::{Fault, FaultSchedule, FaultyStore};
use ultracore_core::testing::oracle::{self, OracleLine};
use ultracore_core::testing::rng::Rng;
use ultracore_core::testing::same_state;
use ultracore_core::testing::workload::Workload;

const COMMANDS: usize = 250;
const DAY: i64 = 86_400_000_000;

type Answer = Result<Outcome, Rejection>;

/// One seeded run of the workload through `Ledger::execute` at a moving clock.
struct Sim {
    seed: u64,
    workload: Workload,
    ledger: Ledger,
    log: Vec<Envelope<LedgerEvent>>,
    now: Timestamp,
}

/// What one command did.
struct Step {
    command: Command,
    answer: Answer,
    events: usize,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            seed,
            workload: Workload::new(seed),
            ledger: Ledger::default(),
            log: Vec::new(),
            now: Workload::start(),
        }
    }

    /// Runs `n` workload commands.
    fn run(seed: u64, n: usize) -> Sim {
        let mut sim = Sim::new(seed);
        for _ in 0..n {
            sim.step();
            sim.advance();
        }
        sim
    }

    fn execute(&mut self, command: &Command) -> (Answer, usize) {
        let mut out = Vec::new();
        let answer = self
            .ledger
            .execute(command, &Trace::default(), self.now, 0, &mut out)
            .unwrap_or_else(|e| panic!("seed {}: invariant broken by {command:?}: {e}", self.seed));
        let n = out.len();
        self.log.extend(out);
        (answer, n)
    }

    /// The next workload command, executed.
    fn step(&mut self) -> Step {
        let command = self.workload.next(&self.ledger, self.now);
        let (answer, events) = self.execute(&command);
        Step {
            command,
            answer,
            events,
        }
    }

    /// Moves the clock on, as the workload's policy says.
    fn advance(&mut self) {
        self.now = self
            .now
            .saturating_add_micros(self.workload.advance_micros());
    }

    fn accounts(&self) -> Vec<(AccountId, Currency, AccountKind, Timestamp)> {
        self.ledger
            .accounts()
            .map(|a| (a.id.clone(), a.currency, a.kind, a.opened_at.0))
            .collect()
    }

    /// A valid time worth probing: random in the whole span, or on (or just before) the valid
    /// time of some recorded event, or of some hold's deadline.
    fn probe_time(&self, rng: &mut Rng) -> Timestamp {
        let start = Workload::start().saturating_add_micros(-100 * DAY);
        let end = self.now.saturating_add_micros(15 * DAY);
        let at = match (rng.below(3), rng.pick(&self.log)) {
            (0, Some(e)) => e.effective_at.0,
            (1, Some(e)) => match &e.payload {
                LedgerEvent::HoldPlaced {
                    expires_at: Some(x),
                    ..
                } => *x,
                _ => e.effective_at.0,
            },
            _ => {
                let t = rng.between(start.as_micros(), end.as_micros());
                return Timestamp::from_micros(t).unwrap_or(start);
            }
        };
        at.saturating_add_micros(-rng.between(0, 1))
    }

    fn probe_basis(&self, rng: &mut Rng) -> u64 {
        let last = self.ledger.position();
        if rng.chance(1, 4) {
            last
        } else {
            rng.between(0, last as i64) as u64
        }
    }
}

/// +1 for credit-normal accounts, -1 for debit-normal ones (`BalanceView` is normal-side).
fn sign(kind: AccountKind) -> i128 {
    match kind.normal_side() {
        Direction::Credit => 1,
        Direction::Debit => -1,
    }
}

/// (posted net, pending debits, pending credits) of a balance view.
fn net(view: &BalanceView, kind: AccountKind) -> oracle::Money {
    (
        view.posted.minor() * sign(kind),
        view.pending_debits.minor(),
        view.pending_credits.minor(),
    )
}

fn balance(
    sim: &Sim,
    id: &AccountId,
    kind: AccountKind,
    at: Timestamp,
    basis: u64,
) -> oracle::Money {
    let view = sim
        .ledger
        .balance(id, at, KnownAt::Position(basis))
        .unwrap_or_else(|e| panic!("seed {}: balance of {id}: {e}", sim.seed));
    net(&view, kind)
}

fn seeds() -> impl Strategy<Value = u64> {
    any::<u64>()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every accepted entry balances; the books sum to zero per currency at every probed valid
/// time and basis; holds reserve as much on one side as on the other.
fn check_books_balance(seed: u64) {
    let sim = Sim::run(seed, COMMANDS);
    check_closed_accounts_are_empty(&sim);
    if let Err(e) = oracle::audit_entries(&sim.log) {
        panic!("seed {seed}: {e}");
    }
    let mut rng = Rng::new(seed ^ 0xB00C);
    let accounts = sim.accounts();
    for _ in 0..30 {
        let (at, basis) = (sim.probe_time(&mut rng), sim.probe_basis(&mut rng));
        let mut sums: BTreeMap<String, oracle::Money> = BTreeMap::new();
        for (id, cur, kind, _) in &accounts {
            let (p, d, c) = balance(&sim, id, *kind, at, basis);
            let s = sums.entry(cur.code().to_string()).or_default();
            *s = (s.0 + p, s.1 + d, s.2 + c);
        }
        for (cur, (p, d, c)) in sums {
            assert_eq!(
                p, 0,
                "seed {seed}: {cur} posted sums to {p} at {at} known at {basis}"
            );
            assert_eq!(
                d, c,
                "seed {seed}: {cur} pending debits {d} vs credits {c} at {at}"
            );
        }
    }
}

/// A closed account holds nothing, at any valid time, as known now.
fn check_closed_accounts_are_empty(sim: &Sim) {
    let end = sim.now.saturating_add_micros(500 * DAY);
    for a in sim
        .ledger
        .accounts()
        .filter(|a| a.status == AccountStatus::Closed)
    {
        let v = sim
            .ledger
            .balance(&a.id, end, KnownAt::Now)
            .expect("balance");
        assert_eq!(
            net(&v, a.kind),
            (0, 0, 0),
            "seed {}: closed account {}",
            sim.seed,
            a.id
        );
    }
}

/// The ledger's balances and statements equal the oracle's for random (V, T).
fn check_against_oracle(seed: u64) {
    let sim = Sim::run(seed, COMMANDS);
    let mut rng = Rng::new(seed ^ 0x0AC1E);
    let accounts = sim.accounts();
    for _ in 0..40 {
        let Some((id, _, kind, opened)) = rng.pick(&accounts).cloned() else {
            return;
        };
        let (at, basis) = (sim.probe_time(&mut rng), sim.probe_basis(&mut rng));
        let got = balance(&sim, &id, kind, at, basis);
        let want = oracle::balance(&sim.log, &id, at, basis);
        assert_eq!(
            got, want,
            "seed {seed}: balance of {id} at {at} known at {basis}"
        );
        let before = opened.saturating_add_micros(-1);
        let zero = balance(&sim, &id, kind, before, basis);
        assert_eq!(
            zero,
            (0, 0, 0),
            "seed {seed}: {id} before opening, known at {basis}"
        );
        check_statement(&sim, &mut rng, &id, kind, basis);
        check_restatement(&sim, &mut rng, &id, kind);
        check_known_at_time(&sim, &mut rng, &id);
        check_entry(&sim, &mut rng);
    }
}

/// `available` is posted minus the reservations against the normal side.
fn check_available(seed: u64, view: &BalanceView, kind: AccountKind) {
    let reserved = match kind.normal_side() {
        Direction::Credit => view.pending_debits.minor(),
        Direction::Debit => view.pending_credits.minor(),
    };
    let want = view.posted.minor() - reserved;
    assert_eq!(
        view.available.minor(),
        want,
        "seed {seed}: available of {}",
        view.account_id
    );
}

/// The restatement between two bases: closings equal the oracle's, and the listed posted
/// changes add up to the difference.
fn check_restatement(sim: &Sim, rng: &mut Rng, id: &AccountId, kind: AccountKind) {
    let (b1, b2) = (sim.probe_basis(rng), sim.probe_basis(rng));
    let (b1, b2) = (b1.min(b2), b1.max(b2));
    let to = sim.probe_time(rng);
    let from = to.saturating_add_micros(-rng.between(0, 10 * DAY));
    let r = sim
        .ledger
        .restatement(id, from, to, KnownAt::Position(b1), KnownAt::Position(b2))
        .unwrap_or_else(|e| panic!("seed {}: restatement of {id}: {e}", sim.seed));
    let seed = sim.seed;
    let before = oracle::balance(&sim.log, id, to, b1);
    let after = oracle::balance(&sim.log, id, to, b2);
    assert_eq!(
        net(&r.closing_before, kind),
        before,
        "seed {seed}: restated {id} before"
    );
    assert_eq!(
        net(&r.closing_after, kind),
        after,
        "seed {seed}: restated {id} after"
    );
    check_available(seed, &r.closing_after, kind);
    let listed: i128 = r.changes.iter().map(|c| c.posted_change.minor()).sum();
    let diff = r.closing_after.posted.minor() - r.closing_before.posted.minor();
    assert_eq!(
        listed, diff,
        "seed {seed}: restatement changes of {id} from {b1} to {b2}"
    );
    for c in &r.changes {
        assert!(
            c.caused_by_position > b1 && c.caused_by_position <= b2,
            "seed {seed}: {c:?}"
        );
    }
}

/// `KnownAt::Time(t)` is the basis of every event recorded at or before `t`.
fn check_known_at_time(sim: &Sim, rng: &mut Rng, id: &AccountId) {
    let span = (Workload::start().as_micros(), sim.now.as_micros());
    let t = Timestamp::from_micros(rng.between(span.0, span.1)).unwrap_or(sim.now);
    let at = sim.probe_time(rng);
    let expected = sim.log.iter().filter(|e| e.recorded_at.0 <= t).count() as u64;
    let by_time = sim
        .ledger
        .balance(id, at, KnownAt::Time(t))
        .expect("balance");
    let by_pos = sim
        .ledger
        .balance(id, at, KnownAt::Position(expected))
        .expect("balance");
    assert_eq!(
        by_time.basis.position, expected,
        "seed {}: basis of time {t}",
        sim.seed
    );
    assert_eq!(
        by_time, by_pos,
        "seed {}: known at {t} vs position {expected}",
        sim.seed
    );
}

/// An entry as known at a basis: version, valid time and status equal the oracle's.
fn check_entry(sim: &Sim, rng: &mut Rng) {
    let ids: Vec<EntryId> = sim
        .log
        .iter()
        .filter_map(|e| match &e.payload {
            LedgerEvent::EntryPosted { id, .. } | LedgerEvent::HoldPlaced { id, .. } => {
                Some(id.clone())
            }
            _ => None,
        })
        .collect();
    let Some(id) = rng.pick(&ids) else {
        return;
    };
    let basis = sim.probe_basis(rng);
    let want = oracle::entry_at(&sim.log, id, basis);
    let got = sim
        .ledger
        .entry(id, KnownAt::Position(basis))
        .ok()
        .map(|v| oracle::OracleEntry {
            postings: v.version.postings.to_vec(),
            effective_at: v.version.effective_at.0.as_micros(),
            position: v.version.position,
            status: v.status,
        });
    assert_eq!(got, want, "seed {}: entry {id} known at {basis}", sim.seed);
}

fn check_statement(sim: &Sim, rng: &mut Rng, id: &AccountId, kind: AccountKind, basis: u64) {
    let (a, b) = (sim.probe_time(rng), sim.probe_time(rng));
    let (from, to) = (a.min(b), a.max(b));
    let st = sim
        .ledger
        .statement(id, from, to, KnownAt::Position(basis))
        .unwrap_or_else(|e| panic!("seed {}: statement of {id}: {e}", sim.seed));
    let got: Vec<OracleLine> = st
        .lines
        .iter()
        .map(|l| OracleLine {
            effective_at: l.effective_at.as_micros(),
            position: l.position,
            posted: l.posted_change.minor() * sign(kind),
            pending_debit: l.pending_debits_change.minor(),
            pending_credit: l.pending_credits_change.minor(),
        })
        .collect();
    let want = oracle::statement_lines(&sim.log, id, from, to, basis);
    assert_eq!(
        got, want,
        "seed {}: statement of {id} [{from}, {to}] known at {basis}",
        sim.seed
    );
    let closing = oracle::balance(&sim.log, id, to, basis);
    assert_eq!(
        net(&st.closing, kind),
        closing,
        "seed {}: closing of {id}",
        sim.seed
    );
}

/// Rebuilding from the log gives exactly the live state.
fn check_replay(seed: u64) {
    let sim = Sim::run(seed, COMMANDS);
    let mut rebuilt = Ledger::default();
    for e in &sim.log {
        rebuilt
            .apply(e)
            .unwrap_or_else(|err| panic!("seed {seed}: replay failed at {}: {err}", e.position));
    }
    if let Err(diff) = same_state(&sim.ledger, &rebuilt) {
        panic!("seed {seed}: replay differs: {diff}");
    }
    // Bulk replay (index changes buffered and applied account by account), with buffers that
    // flush after every change, mid-entry and never before the end.
    for buffer in [1, 3, 7, usize::MAX] {
        let mut bulk = Ledger::default();
        bulk.apply_all_buffered(&sim.log, buffer)
            .unwrap_or_else(|err| panic!("seed {seed}: bulk replay ({buffer}) failed: {err}"));
        if let Err(diff) = same_state(&sim.ledger, &bulk) {
            panic!("seed {seed}: bulk replay ({buffer}) differs: {diff}");
        }
        // The rebuilt indexes answer like the live ones (not only hold the same changes).
        for a in sim.ledger.accounts() {
            let live = sim.ledger.balance(&a.id, sim.now, KnownAt::Now);
            assert_eq!(
                live,
                bulk.balance(&a.id, sim.now, KnownAt::Now),
                "seed {seed}"
            );
        }
    }
    // Events applied one by one, then a bulk catch-up, then one by one again: each account's
    // log mixes changes of its own with runs of the bulk replay's shared blocks.
    let (a, b) = (sim.log.len() / 3, 2 * sim.log.len() / 3);
    let mut mixed = Ledger::default();
    let one_by_one = |l: &mut Ledger, events: &[_]| {
        for e in events {
            l.apply(e)
                .unwrap_or_else(|err| panic!("seed {seed}: replay failed: {err}"));
        }
    };
    one_by_one(&mut mixed, &sim.log[..a]);
    mixed
        .apply_all_buffered(&sim.log[a..b], 5)
        .unwrap_or_else(|err| panic!("seed {seed}: bulk catch-up failed: {err}"));
    one_by_one(&mut mixed, &sim.log[b..]);
    if let Err(diff) = same_state(&sim.ledger, &mixed) {
        panic!("seed {seed}: mixed replay differs: {diff}");
    }
}

/// One recorded answer for a past basis.
struct Recorded {
    account: AccountId,
    at: Timestamp,
    from: Timestamp,
    known: KnownAt,
    balance: BalanceView,
    statement: Statement,
}

fn record(sim: &Sim, rng: &mut Rng) -> Option<Recorded> {
    let (account, ..) = rng.pick(&sim.accounts())?.clone();
    let at = sim.probe_time(rng);
    let from = at.saturating_add_micros(-rng.between(0, 20 * DAY));
    let known = match rng.below(3) {
        0 => KnownAt::Position(sim.ledger.position()),
        1 => KnownAt::Position(sim.probe_basis(rng)),
        _ => KnownAt::Time(sim.ledger.recorded_at()?.0),
    };
    let balance = sim.ledger.balance(&account, at, known).ok()?;
    let statement = sim.ledger.statement(&account, from, at, known).ok()?;
    Some(Recorded {
        account,
        at,
        from,
        known,
        balance,
        statement,
    })
}

/// Answers for a past basis never change after later writes.
fn check_past_answers(seed: u64) {
    let mut sim = Sim::new(seed);
    let mut rng = Rng::new(seed ^ 0x9A57);
    let mut recorded = Vec::new();
    for _ in 0..COMMANDS {
        sim.step();
        sim.advance();
        if rng.chance(1, 5) {
            recorded.extend(record(&sim, &mut rng));
        }
    }
    for r in &recorded {
        let b = sim
            .ledger
            .balance(&r.account, r.at, r.known)
            .expect("balance");
        assert_eq!(
            b, r.balance,
            "seed {seed}: balance of {} at {} as of {:?}",
            r.account, r.at, r.known
        );
        let s = sim
            .ledger
            .statement(&r.account, r.from, r.at, r.known)
            .expect("statement");
        assert_eq!(
            s, r.statement,
            "seed {seed}: statement of {} as of {:?}",
            r.account, r.known
        );
    }
}

/// The parts of an answer a retry must repeat: everything but statuses (which move on with
/// later commands) and an account's latest position.
fn stable(answer: &Answer) -> Answer {
    match answer {
        Ok(Outcome::Entry(r)) => Ok(Outcome::Entry(EntryReceipt {
            status: EntryStatus::Posted,
            ..r.clone()
        })),
        Ok(Outcome::Account(r)) => Ok(Outcome::Account(ledger_account_id_only(r))),
        other => other.clone(),
    }
}

fn ledger_account_id_only(
    r: &ultracore_core::ledger::AccountReceipt,
) -> ultracore_core::ledger::AccountReceipt {
    ultracore_core::ledger::AccountReceipt {
        status: ultracore_core::ledger::AccountStatus::Open,
        position: 0,
        ..r.clone()
    }
}

/// Whether a command's first answer is final: a retry must give it again with no events.
fn sticky(command: &Command, answer: &Answer) -> bool {
    match command {
        Command::PostEntry(_)
        | Command::PlaceHold(_)
        | Command::Reverse(_)
        | Command::Correct(_) => true,
        Command::OpenAccount(_) | Command::PostHold(_) | Command::VoidHold(_) => answer.is_ok(),
        _ => false,
    }
}

/// Retries (immediate, and the workload's later ones) change nothing.
fn check_retries(seed: u64) {
    let mut sim = Sim::new(seed);
    let mut rng = Rng::new(seed ^ 0x2E72);
    let mut first: HashMap<u64, Answer> = HashMap::new();
    for i in 0..COMMANDS {
        let s = sim.step();
        let fp = s.command.fingerprint();
        match first.get(&fp) {
            Some(a) => {
                assert_eq!(
                    s.events, 0,
                    "seed {seed}: retry {i} {:?} recorded events",
                    s.command
                );
                assert_eq!(
                    stable(&s.answer),
                    stable(a),
                    "seed {seed}: retry {i} {:?}",
                    s.command
                );
            }
            None if sticky(&s.command, &s.answer) => {
                first.insert(fp, s.answer.clone());
            }
            None => {}
        }
        if !matches!(s.command, Command::ExpireHolds) && rng.chance(1, 4) {
            let (again, n) = sim.execute(&s.command);
            assert_eq!(
                n, 0,
                "seed {seed}: immediate retry of {:?} recorded events",
                s.command
            );
            assert_eq!(
                again, s.answer,
                "seed {seed}: immediate retry of {:?}",
                s.command
            );
        }
        sim.advance();
    }
}

/// Every constrained account stays within its bounds at every valid time, for every basis.
fn check_constraints(seed: u64) {
    let sim = Sim::run(seed, COMMANDS);
    let last = sim.ledger.position();
    for basis in (0..=last).filter(|p| p % 5 == 0 || *p == last) {
        if let Err(e) = oracle::audit_constraints(&sim.log, basis) {
            panic!("seed {seed}: {e}");
        }
    }
}

/// The event `command` would have recorded, had the limits let it through.
fn hypothetical(ledger: &Ledger, command: &Command, now: Timestamp) -> Option<LedgerEvent> {
    let at = |e: Option<EffectiveAt>| e.unwrap_or(EffectiveAt(now));
    let fingerprint = command.fingerprint();
    Some(match command {
        Command::PostEntry(c) => LedgerEvent::EntryPosted {
            id: c.id.clone(),
            postings: c.postings.clone(),
            effective_at: at(c.effective_at),
            metadata: c.metadata.clone(),
            reversal_of: None,
            fingerprint,
        },
        Command::PlaceHold(c) => LedgerEvent::HoldPlaced {
            id: c.id.clone(),
            postings: vec![
                Posting {
                    account: c.debit_account.clone(),
                    direction: Direction::Debit,
                    amount: c.amount,
                },
                Posting {
                    account: c.credit_account.clone(),
                    direction: Direction::Credit,
                    amount: c.amount,
                },
            ]
            .into(),
            amount: c.amount,
            effective_at: at(c.effective_at),
            expires_at: c.expires_at,
            metadata: c.metadata.clone(),
            fingerprint,
        },
        Command::Correct(c) => {
            let cur = &ledger.entry_record(&c.entry)?.current;
            let postings: Vec<Posting> = match (&c.postings, c.amount, c.cancel) {
                (_, _, true) => Vec::new(),
                (Some(p), _, _) => p.clone(),
                (None, Some(a), _) => cur
                    .postings
                    .iter()
                    .map(|p| Posting {
                        amount: a,
                        ..p.clone()
                    })
                    .collect(),
                (None, None, _) => cur.postings.to_vec(),
            };
            LedgerEvent::EntryCorrected {
                entry: c.entry.clone(),
                correction_id: c.id.clone(),
                version: cur.version + 1,
                postings: postings.into(),
                effective_at: c.effective_at.unwrap_or(cur.effective_at),
                cancelled: c.cancel,
                reason: c.reason.clone(),
                fingerprint,
            }
        }
        _ => return None,
    })
}

/// Completeness of the limit check: a command refused with `limit_exceeded` would really
/// have broken a limit at some valid time (asked of the oracle, with the event it would
/// have recorded appended to the log).
fn check_limit_rejections_are_real(seed: u64) {
    let mut sim = Sim::new(seed);
    for _ in 0..COMMANDS {
        let before = sim.ledger.clone();
        let s = sim.step();
        // A fresh refusal (a retry repeats the recorded one, decided on an older state).
        if s.events > 0 && matches!(s.answer, Err(Rejection::LimitExceeded { .. })) {
            if let Some(payload) = hypothetical(&before, &s.command, sim.now) {
                let env = before.envelope(payload, &Trace::default(), sim.now, 0);
                let mut log = sim.log[..before.position() as usize].to_vec();
                log.push(env);
                let verdict = oracle::audit_constraints(&log, u64::MAX);
                assert!(
                    verdict.is_err(),
                    "seed {seed}: {:?} refused ({:?}) but breaks no limit",
                    s.command,
                    s.answer
                );
            }
        }
        sim.advance();
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    // Regression: limits were once checked between same-instant entries, in recording order.
    fn limit_rejections_are_real(seed in seeds()) {
        check_limit_rejections_are_real(seed);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn accepted_entries_balance_and_books_sum_to_zero(seed in seeds()) {
        check_books_balance(seed);
    }

    #[test]
    fn balances_and_statements_match_the_oracle(seed in seeds()) {
        check_against_oracle(seed);
    }

    #[test]
    fn replay_rebuilds_the_same_state(seed in seeds()) {
        check_replay(seed);
    }

    #[test]
    fn past_answers_never_change(seed in seeds()) {
        check_past_answers(seed);
    }

    #[test]
    fn retries_change_nothing(seed in seeds()) {
        check_retries(seed);
    }

    #[test]
    fn constraints_hold_at_every_valid_time_for_every_basis(seed in seeds()) {
        check_constraints(seed);
    }
}

/// The workload is realistic: most commands are accepted, and every kind of event shows up.
#[test]
fn workload_exercises_the_ledger() {
    let mut accepted = 0;
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    let mut runs = 0;
    for seed in 0..8 {
        let mut sim = Sim::new(seed);
        for _ in 0..COMMANDS {
            accepted += usize::from(sim.step().answer.is_ok());
            sim.advance();
            runs += 1;
        }
        for e in &sim.log {
            *types.entry(e.event_type()).or_default() += 1;
        }
    }
    assert!(
        accepted * 2 > runs,
        "only {accepted} of {runs} commands accepted"
    );
    for t in [
        "account_opened",
        "account_frozen",
        "account_unfrozen",
        "entry_posted",
        "hold_placed",
        "hold_posted",
        "hold_voided",
        "hold_expired",
        "entry_corrected",
        "entry_rejected",
    ] {
        assert!(
            types.get(t).copied().unwrap_or(0) > 0,
            "no {t} in {types:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The engine over a failing store.

type Store = FaultyStore<MemoryEventStore<LedgerEvent>>;

/// Runs the workload through the real engine over a `FaultyStore`, retrying failed batches,
/// alongside a fault-free reference ledger fed the same commands at the same clock.
fn check_engine_under_faults(seed: u64) {
    block_on(engine_under_faults(seed));
}

async fn engine_under_faults(seed: u64) {
    let clock = Arc::new(ManualClock::new(Workload::start()));
    let store: Store = FaultyStore::new(MemoryEventStore::new(), FaultSchedule::seeded(seed, 1, 4));
    let engine = Engine::open(store, clock.clone(), EngineConfig::default())
        .await
        .expect("open");
    let mut workload = Workload::new(seed);
    let mut rng = Rng::new(seed ^ 0xFA17);
    let mut reference = Sim::new(seed);
    let mut issued = 0;
    while issued < COMMANDS / 2 {
        let now = clock.now();
        reference.now = now;
        let size = 1 + rng.below(3) as usize;
        let mut commands = engine
            .read(|l| (0..size).map(|_| workload.next(l, now)).collect::<Vec<_>>())
            .await;
        // Commands without an entry id are idempotent by target state only (freeze a frozen
        // account: no-op), so a client retries each of them on its own: retrying a batch like
        // [freeze, unfreeze] after a lost acknowledgement would apply both again.
        if commands.len() > 1 && commands.iter().any(|c| c.entry_id().is_none()) {
            commands.truncate(1);
        }
        let size = commands.len();
        issued += size;
        // The engine expires due holds itself at the start of a batch; the reference does the
        // same so both logs stay identical.
        let auto = if reference
            .ledger
            .next_hold_deadline()
            .is_some_and(|d| d <= now)
        {
            reference.execute(&Command::ExpireHolds).1
        } else {
            0
        };
        let expected: Vec<(Answer, usize)> =
            commands.iter().map(|c| reference.execute(c)).collect();
        run_batch(seed, &engine, &commands, &expected, auto).await;
        clock.advance_micros(workload.advance_micros());
    }
    let log = engine
        .store()
        .inner()
        .read_all(0, usize::MAX)
        .await
        .expect("read");
    assert_eq!(
        log, reference.log,
        "seed {seed}: the store holds the fault-free history"
    );
    let stats = engine.store().stats();
    // Every kind is covered by the scripted test; a random schedule must inject something.
    assert!(
        !stats.injected.is_empty(),
        "seed {seed}: the schedule injected no fault"
    );
    let rebuilt = replay(engine.store(), LedgerConfig::default(), |_| {})
        .await
        .expect("replay");
    let live = engine
        .read(|l| same_state(l, &rebuilt).and(same_state(l, &reference.ledger)))
        .await;
    if let Err(diff) = live {
        panic!("seed {seed}: engine state differs: {diff}");
    }
}

/// Executes one batch until no store error remains, checking after every attempt that the
/// batch landed whole or not at all and that the engine shows exactly the store.
async fn run_batch(
    seed: u64,
    engine: &Engine<Store>,
    commands: &[Command],
    expected: &[(Answer, usize)],
    auto_expired: usize,
) {
    let n: usize = expected.iter().map(|e| e.1).sum::<usize>() + auto_expired;
    let mut landed = false;
    for attempt in 0..50 {
        let before = engine
            .store()
            .inner()
            .last_position()
            .await
            .expect("position");
        let batch = commands
            .iter()
            .map(|c| (c.clone(), Trace::default()))
            .collect();
        let answers = engine.execute_batch(batch).await;
        let after = engine
            .store()
            .inner()
            .last_position()
            .await
            .expect("position");
        let grew = (after - before) as usize;
        assert!(
            grew == 0 || (grew == n && !landed),
            "seed {seed}: partial append ({grew} of {n})"
        );
        landed |= grew > 0;
        let shown = engine.read(|l| l.position()).await;
        assert_eq!(
            shown, after,
            "seed {seed}: engine shows position {shown}, store has {after}"
        );
        if answers
            .iter()
            .any(|a| matches!(a, Err(EngineError::Store(_))))
        {
            continue;
        }
        for ((c, got), (want, _)) in commands.iter().zip(&answers).zip(expected) {
            let got = got.clone().map_err(|e| match e {
                EngineError::Rejected(r) => r,
                other => panic!("seed {seed}: {c:?} failed: {other}"),
            });
            let retried_expiry = attempt > 0 && matches!(c, Command::ExpireHolds);
            // A command without an entry id (hold post/void, account commands) carries no
            // idempotency key of its own: when a lost acknowledgement makes us retry the batch,
            // it is decided again against a state that already includes the whole batch, so its
            // answer may legitimately differ (an unfreeze accepted first is refused once the
            // batch's close has landed). The log and state checks below still must hold.
            let rekeyless_retry = attempt > 0 && c.entry_id().is_none();
            if rekeyless_retry {
                continue;
            } else if !retried_expiry {
                assert_eq!(stable(&got), stable(want), "seed {seed}: answer to {c:?}");
            }
            if got.is_ok() {
                check_acknowledged(seed, engine, c).await;
            }
        }
        return;
    }
    panic!("seed {seed}: batch never succeeded");
}

/// An acknowledged entry command is in the store.
async fn check_acknowledged(seed: u64, engine: &Engine<Store>, command: &Command) {
    let id = match command {
        Command::PostEntry(c) => c.id.clone(),
        Command::PlaceHold(c) => c.id.clone(),
        Command::Reverse(c) => c.id.clone(),
        Command::Correct(c) => c.id.clone(),
        _ => return,
    };
    let log = engine
        .store()
        .inner()
        .read_all(0, usize::MAX)
        .await
        .expect("read");
    let found = log.iter().any(|e| match &e.payload {
        LedgerEvent::EntryPosted { id: x, .. } | LedgerEvent::HoldPlaced { id: x, .. } => *x == id,
        LedgerEvent::EntryCorrected { correction_id, .. } => *correction_id == id,
        _ => false,
    });
    assert!(found, "seed {seed}: acknowledged {id} is not in the store");
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn engine_recovers_from_store_faults(seed in seeds()) {
        check_engine_under_faults(seed);
    }
}

/// Each kind of fault, scripted: the engine answers with the store error, then recovers.
#[test]
fn scripted_faults_are_survived() {
    block_on(async {
        let clock = Arc::new(ManualClock::new(Workload::start()));
        let faults = [
            (2, Fault::FailBefore),
            (3, Fault::LostAck),
            (4, Fault::SpuriousConflict),
        ];
        let store: Store = FaultyStore::new(MemoryEventStore::new(), FaultSchedule::script(faults));
        let engine = Engine::open(store, clock.clone(), EngineConfig::default())
            .await
            .expect("open");
        let mut workload = Workload::new(1);
        let mut errors = 0;
        for _ in 0..6 {
            let c = engine.read(|l| workload.next(l, clock.now())).await;
            errors += usize::from(matches!(
                engine.execute(c, Trace::default()).await,
                Err(EngineError::Store(_))
            ));
        }
        assert_eq!(errors, 3);
        let stats = engine.store().stats();
        assert_eq!(stats.injected.len(), 3);
        assert_eq!(
            stats.written_batches.len(),
            4,
            "the lost acknowledgement still wrote"
        );
        let rebuilt = replay(engine.store(), LedgerConfig::default(), |_| {})
            .await
            .expect("replay");
        engine
            .read(|l| same_state(l, &rebuilt))
            .await
            .expect("engine equals replay");
    });
}

#[test]
fn memory_store_passes_the_contract() {
    block_on(event_store_contract(MemoryEventStore::<LedgerEvent>::new));
}

#[test]
fn faulty_store_without_faults_passes_the_contract() {
    block_on(event_store_contract(|| {
        FaultyStore::new(MemoryEventStore::<LedgerEvent>::new(), FaultSchedule::None)
    }));
}

// ---------------------------------------------------------------------------------------
// Targeted scenarios for what the properties found.

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn open(id: &str, kind: AccountKind) -> Command {
    Command::OpenAccount(OpenAccount {
        id: id.parse().expect("id"),
        currency: Currency::USD,
        kind,
        owner: None,
        branch: None,
        constraints: Constraints::default(),
        metadata: Metadata::new(),
        effective_at: Some(EffectiveAt(t("2026-01-01T00:00:00Z"))),
    })
}

fn pay(id: &str, from: &str, to: &str, amount: &str) -> Command {
    Command::PostEntry(PostEntry::transfer(
        id.parse().expect("id"),
        from.parse().expect("id"),
        to.parse().expect("id"),
        Amount::parse(amount, Currency::USD).expect("amount"),
        None,
    ))
}

fn cancel(id: &str, entry: &str) -> Command {
    Command::Correct(Correct {
        id: id.parse().expect("id"),
        entry: entry.parse().expect("id"),
        amount: None,
        postings: None,
        effective_at: None,
        cancel: true,
        reason: "mistake".into(),
    })
}

/// A closed account refuses everything; cancelling an entry that touched it would change
/// its balance after closing (to non-zero), so the cancellation must be refused.
#[test]
fn cancelling_an_entry_on_a_closed_account_is_refused() {
    use ultracore_core::testing::gwt::Scenario;
    let mut s = Scenario::new(t("2026-01-10T00:00:00Z")).given([
        open("cash", AccountKind::Asset),
        open("alice", AccountKind::Liability),
        pay("in", "cash", "alice", "10.00"),
        pay("out", "alice", "cash", "10.00"),
        Command::CloseAccount {
            account: "alice".parse().expect("id"),
        },
    ]);
    s.when(cancel("fix", "out")).rejected("account_closed");
}

/// Frozen accounts refuse every posting until unfrozen: a cancellation moves money too.
#[test]
fn cancelling_an_entry_on_a_frozen_account_is_refused() {
    use ultracore_core::testing::gwt::Scenario;
    let mut s = Scenario::new(t("2026-01-10T00:00:00Z")).given([
        open("cash", AccountKind::Asset),
        open("alice", AccountKind::Liability),
        pay("in", "cash", "alice", "10.00"),
        Command::FreezeAccount {
            account: "alice".parse().expect("id"),
        },
    ]);
    s.when(cancel("fix", "in")).rejected("account_frozen");
}

/// `alice` may not go below zero (holds included).
fn open_guarded(id: &str) -> Command {
    let Command::OpenAccount(mut c) = open(id, AccountKind::Liability) else {
        unreachable!("open builds an OpenAccount")
    };
    c.constraints.debits_must_not_exceed_credits = true;
    Command::OpenAccount(c)
}

fn pay_at(id: &str, from: &str, to: &str, amount: &str, at: &str) -> Command {
    let Command::PostEntry(mut c) = pay(id, from, to, amount) else {
        unreachable!("pay builds a PostEntry")
    };
    c.effective_at = Some(EffectiveAt(t(at)));
    Command::PostEntry(c)
}

/// A deposit and a payment share a valid time (e.g. end-of-day bookings); raising the
/// deposit keeps alice's balance at or above zero at every valid time, yet the correction
/// re-keys the deposit after the payment within that instant and the check sees -100.
#[test]
// Regression: limits were once checked between same-instant entries, in recording order.
fn raising_a_deposit_that_shares_its_instant_with_a_payment_is_accepted() {
    use ultracore_core::testing::gwt::Scenario;
    let day = "2026-01-05T00:00:00Z";
    let mut s = Scenario::new(t("2026-01-10T00:00:00Z")).given([
        open("cash", AccountKind::Asset),
        open_guarded("alice"),
        pay_at("in", "cash", "alice", "100.00", day),
        pay_at("out", "alice", "cash", "100.00", day),
    ]);
    s.when(Command::Correct(Correct {
        id: "raise".parse().expect("id"),
        entry: "in".parse().expect("id"),
        amount: Some(Amount::parse("150.00", Currency::USD).expect("amount")),
        postings: None,
        effective_at: None,
        cancel: false,
        reason: "amount was 150".into(),
    }))
    .accepted();
}

/// Alice has 100 until `x`, where an earlier-recorded payment takes it all; a hold of 100
/// expiring at `x` reserves 100 on [now, x) and nothing from `x` on: alice never goes below
/// zero, yet the hold is refused because its end is keyed after the payment at `x`.
#[test]
// Regression: limits were once checked between same-instant entries, in recording order.
fn a_hold_ending_at_the_instant_of_an_earlier_payment_is_accepted() {
    use ultracore_core::testing::gwt::Scenario;
    let x = "2026-01-12T00:00:00Z";
    let mut s = Scenario::new(t("2026-01-10T00:00:00Z")).given([
        open("cash", AccountKind::Asset),
        open_guarded("alice"),
        pay_at("in", "cash", "alice", "100.00", "2026-01-05T00:00:00Z"),
        pay_at("out", "alice", "cash", "100.00", x),
    ]);
    s.when(Command::PlaceHold(PlaceHold {
        id: "hold".parse().expect("id"),
        debit_account: "alice".parse().expect("id"),
        credit_account: "cash".parse().expect("id"),
        amount: Amount::parse("100.00", Currency::USD).expect("amount"),
        effective_at: None,
        expires_at: Some(t(x)),
        metadata: Metadata::new(),
    }))
    .accepted();
}

/// The most common shape in practice: a future-dated payment reversed at its own instant
/// nets to nothing from that instant on, yet a back-dated payment below it is refused
/// because the reversal's key sorts after the payment's within the instant.
#[test]
// Regression: limits were once checked between same-instant entries, in recording order.
fn a_back_dated_payment_below_a_same_instant_reversal_is_accepted() {
    use ultracore_core::testing::gwt::Scenario;
    let x = "2026-01-13T00:00:00Z";
    let mut s = Scenario::new(t("2026-01-10T00:00:00Z")).given([
        open("cash", AccountKind::Asset),
        open_guarded("alice"),
        pay_at("in", "cash", "alice", "100.00", "2026-01-05T00:00:00Z"),
        pay_at("out", "alice", "cash", "80.00", x),
        Command::Reverse(Reverse {
            id: "undo".parse().expect("id"),
            entry: "out".parse().expect("id"),
            effective_at: Some(EffectiveAt(t(x))),
            metadata: Metadata::new(),
        }),
    ]);
    s.when(pay_at(
        "fee",
        "alice",
        "cash",
        "50.00",
        "2026-01-06T00:00:00Z",
    ))
    .accepted();
}
