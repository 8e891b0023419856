//! Scenario tests of the ledger through the given/when/then harness: each `when` also proves
//! that replaying the log rebuilds the live state.

use crate::ids::{AccountId, EntryId};
use crate::ledger::*;
use crate::money::{Amount, Currency};
use crate::testing::gwt::Scenario;
use crate::time::{EffectiveAt, Timestamp};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}
fn day(d: u32) -> Timestamp {
    t(&format!("2026-01-{d:02}T00:00:00Z"))
}
fn acc(s: &str) -> AccountId {
    s.parse().unwrap()
}
fn eid(s: &str) -> EntryId {
    s.parse().unwrap()
}
fn usd(s: &str) -> Amount {
    Amount::parse(s, Currency::USD).unwrap()
}
fn open(id: &str, kind: AccountKind, constraints: Constraints) -> Command {
    Command::OpenAccount(OpenAccount {
        id: acc(id),
        currency: Currency::USD,
        kind,
        owner: None,
        branch: None,
        constraints,
        metadata: Metadata::new(),
        effective_at: Some(EffectiveAt(day(1))),
    })
}
fn no_overdraft() -> Constraints {
    Constraints {
        debits_must_not_exceed_credits: true,
        ..Constraints::default()
    }
}
fn transfer(id: &str, from: &str, to: &str, amount: &str, at: Option<Timestamp>) -> Command {
    Command::PostEntry(PostEntry::transfer(
        eid(id),
        acc(from),
        acc(to),
        usd(amount),
        at.map(EffectiveAt),
    ))
}
fn posted(s: &Scenario, account: &str, at: Timestamp, known: KnownAt) -> String {
    s.ledger()
        .balance(&acc(account), at, known)
        .unwrap()
        .posted
        .to_string()
}

/// A bank with cash (asset), alice and bob (deposits that may not go negative).
fn bank(now: Timestamp) -> Scenario {
    Scenario::new(now).given([
        open("cash", AccountKind::Asset, Constraints::default()),
        open("alice", AccountKind::Liability, no_overdraft()),
        open("bob", AccountKind::Liability, no_overdraft()),
    ])
}

#[test]
fn deposit_and_transfer_move_balances_and_keep_the_books_balanced() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", None))
        .accepted();
    s.when(transfer("t1", "alice", "bob", "30.25", None))
        .accepted();
    assert_eq!(posted(&s, "alice", day(10), KnownAt::Now), "69.75");
    assert_eq!(posted(&s, "bob", day(10), KnownAt::Now), "30.25");
    assert_eq!(posted(&s, "cash", day(10), KnownAt::Now), "100.00");
}

#[test]
fn opening_twice_is_idempotent_but_different_attributes_conflict() {
    let mut s = bank(day(10));
    s.when(open("alice", AccountKind::Liability, no_overdraft()))
        .no_events();
    s.when(open("alice", AccountKind::Asset, no_overdraft()))
        .rejected("account_exists");
}

#[test]
fn malformed_entries_are_refused_with_typed_errors() {
    let mut s = bank(day(10));
    let two_legs = |id: &str, second: Direction, amount: &str| {
        Command::PostEntry(PostEntry {
            id: eid(id),
            postings: vec![
                Posting {
                    account: acc("cash"),
                    direction: Direction::Debit,
                    amount: usd("10.00"),
                },
                Posting {
                    account: acc("alice"),
                    direction: second,
                    amount: usd(amount),
                },
            ]
            .into(),
            effective_at: None,
            metadata: Metadata::new(),
        })
    };
    s.when(two_legs("u1", Direction::Credit, "9.99"))
        .rejected("unbalanced_entry");
    // Two legs of one amount on the same side: the two-posting shortcut must not take them.
    s.when(two_legs("u2", Direction::Debit, "10.00"))
        .rejected("unbalanced_entry");
    s.when(transfer("z1", "cash", "alice", "0.00", None))
        .rejected("zero_amount");
    s.when(transfer("n1", "cash", "nobody", "1.00", None))
        .rejected("unknown_account");
    let eur = Command::PostEntry(PostEntry::transfer(
        eid("c1"),
        acc("cash"),
        acc("alice"),
        Amount::parse("1.00", Currency::EUR).unwrap(),
        None,
    ));
    s.when(eur).rejected("currency_mismatch");
    let single = Command::PostEntry(PostEntry {
        id: eid("s1"),
        postings: vec![Posting {
            account: acc("cash"),
            direction: Direction::Debit,
            amount: usd("1.00"),
        }]
        .into(),
        effective_at: None,
        metadata: Metadata::new(),
    });
    s.when(single).rejected("posting_count");
    // Nothing moved.
    assert_eq!(posted(&s, "cash", day(10), KnownAt::Now), "0.00");
}

#[test]
fn same_id_same_request_returns_the_original_answer_and_writes_nothing() {
    let mut s = bank(day(10));
    let first = s
        .when(transfer("d1", "cash", "alice", "100.00", None))
        .accepted()
        .clone();
    s.set_now(day(11));
    let again = s.when(transfer("d1", "cash", "alice", "100.00", None));
    again.no_events();
    assert_eq!(again.accepted(), &first);
    s.when(transfer("d1", "cash", "alice", "100.01", None))
        .rejected("id_conflict");
    assert_eq!(posted(&s, "alice", day(12), KnownAt::Now), "100.00");
}

#[test]
fn a_failed_id_stays_failed_even_when_it_would_now_succeed() {
    let mut s = bank(day(10));
    s.when(transfer("w1", "alice", "cash", "5.00", None))
        .rejected("limit_exceeded");
    s.when(transfer("d1", "cash", "alice", "100.00", None))
        .accepted();
    let retry = s.when(transfer("w1", "alice", "cash", "5.00", None));
    retry.rejected("limit_exceeded");
    retry.no_events();
    s.when(transfer("w1", "alice", "cash", "6.00", None))
        .rejected("id_conflict");
}

#[test]
fn back_dated_entry_that_breaks_a_later_balance_is_refused() {
    // Formance issue 340: validating only the final balance is not enough.
    let mut s = bank(day(20));
    s.when(transfer("d1", "cash", "alice", "100.00", Some(day(5))))
        .accepted();
    s.when(transfer("w1", "alice", "bob", "80.00", Some(day(10))))
        .accepted();
    // Today alice has 20; a back-dated withdrawal of 50 on day 7 leaves 50 on day 7 but -30 on day 10.
    let r = s.when(transfer("w2", "alice", "bob", "50.00", Some(day(7))));
    match r.rejected("limit_exceeded") {
        Rejection::LimitExceeded { at, balance, .. } => {
            assert_eq!(*at, day(10));
            assert_eq!(*balance, -3000);
        }
        other => panic!("{other:?}"),
    }
    s.when(transfer("w3", "alice", "bob", "20.00", Some(day(7))))
        .accepted();
    assert_eq!(posted(&s, "alice", day(7), KnownAt::Now), "80.00");
    assert_eq!(posted(&s, "alice", day(20), KnownAt::Now), "0.00");
}

#[test]
fn overdraft_limit_allows_going_that_far_and_no_further() {
    let mut s = Scenario::new(day(10)).given([
        open("cash", AccountKind::Asset, Constraints::default()),
        open(
            "carol",
            AccountKind::Liability,
            Constraints {
                overdraft_limit: Some(usd("50.00")),
                ..Constraints::default()
            },
        ),
    ]);
    s.when(transfer("w1", "carol", "cash", "50.00", None))
        .accepted();
    s.when(transfer("w2", "carol", "cash", "0.01", None))
        .rejected("limit_exceeded");
    assert_eq!(posted(&s, "carol", day(10), KnownAt::Now), "-50.00");
}

#[test]
fn effective_time_outside_the_window_or_before_opening_is_refused() {
    let mut s = bank(day(10));
    s.when(transfer(
        "e1",
        "cash",
        "alice",
        "1.00",
        Some(t("2020-01-01T00:00:00Z")),
    ))
    .rejected("effective_at_outside_window");
    s.when(transfer(
        "e2",
        "cash",
        "alice",
        "1.00",
        Some(t("2030-01-01T00:00:00Z")),
    ))
    .rejected("effective_at_outside_window");
    s.when(transfer(
        "e3",
        "cash",
        "alice",
        "1.00",
        Some(t("2025-12-31T00:00:00Z")),
    ))
    .rejected("before_account_opened");
}

fn hold(id: &str, from: &str, to: &str, amount: &str, expires: Option<Timestamp>) -> Command {
    Command::PlaceHold(PlaceHold {
        id: eid(id),
        debit_account: acc(from),
        credit_account: acc(to),
        amount: usd(amount),
        effective_at: None,
        expires_at: expires,
        metadata: Metadata::new(),
    })
}

#[test]
fn holds_reserve_funds_and_post_partially_releasing_the_rest() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", None))
        .accepted();
    s.when(hold("h1", "alice", "bob", "60.00", None)).accepted();
    let b = s
        .ledger()
        .balance(&acc("alice"), day(10), KnownAt::Now)
        .unwrap();
    assert_eq!(b.posted.to_string(), "100.00");
    assert_eq!(b.pending_debits.to_string(), "60.00");
    assert_eq!(b.available.to_string(), "40.00");
    // The reservation blocks spending it elsewhere.
    s.when(transfer("w1", "alice", "cash", "40.01", None))
        .rejected("limit_exceeded");
    s.set_now(day(11));
    let post = Command::PostHold(PostHold {
        hold: eid("h1"),
        amount: Some(usd("25.00")),
        effective_at: None,
    });
    s.when(post.clone()).accepted();
    s.when(post).no_events(); // idempotent repeat
    let b = s
        .ledger()
        .balance(&acc("alice"), day(11), KnownAt::Now)
        .unwrap();
    assert_eq!(b.posted.to_string(), "75.00");
    assert_eq!(b.pending_debits.to_string(), "0.00");
    assert_eq!(posted(&s, "bob", day(11), KnownAt::Now), "25.00");
    // Each hold resolves once.
    s.when(Command::VoidHold(VoidHold {
        hold: eid("h1"),
        effective_at: None,
    }))
    .rejected("hold_already_resolved");
    // Valid time: on day 10 the hold was pending, as known now.
    let b = s
        .ledger()
        .balance(&acc("alice"), day(10), KnownAt::Now)
        .unwrap();
    assert_eq!(b.pending_debits.to_string(), "60.00");
}

#[test]
fn holds_cannot_be_posted_above_the_held_amount_or_after_expiry() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", None))
        .accepted();
    s.when(hold("h1", "alice", "bob", "10.00", Some(day(12))))
        .accepted();
    let over = Command::PostHold(PostHold {
        hold: eid("h1"),
        amount: Some(usd("10.01")),
        effective_at: None,
    });
    s.when(over).rejected("post_exceeds_hold");
    s.set_now(day(13));
    let post = Command::PostHold(PostHold {
        hold: eid("h1"),
        amount: None,
        effective_at: None,
    });
    s.when(post).rejected("hold_expired");
    let expire = s.when(Command::ExpireHolds);
    assert_eq!(expire.accepted(), &Outcome::HoldsExpired { count: 1 });
    assert_eq!(s.ledger().account(&acc("alice")).unwrap().open_holds, 0);
    let b = s
        .ledger()
        .balance(&acc("alice"), day(13), KnownAt::Now)
        .unwrap();
    assert_eq!(b.available.to_string(), "100.00");
    s.when(Command::ExpireHolds).no_events();
}

#[test]
fn voided_hold_releases_funds() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", None))
        .accepted();
    s.when(hold("h1", "alice", "bob", "100.00", None))
        .accepted();
    s.when(Command::VoidHold(VoidHold {
        hold: eid("h1"),
        effective_at: None,
    }))
    .accepted();
    s.when(transfer("w1", "alice", "cash", "100.00", None))
        .accepted();
}

#[test]
fn reversal_undoes_an_entry_once_and_leaves_it_in_place() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", None))
        .accepted();
    let rev = Command::Reverse(Reverse {
        id: eid("r1"),
        entry: eid("d1"),
        effective_at: None,
        metadata: Metadata::new(),
    });
    s.when(rev).accepted();
    assert_eq!(posted(&s, "alice", day(10), KnownAt::Now), "0.00");
    assert!(s.ledger().entry_record(&eid("d1")).is_some());
    let again = Command::Reverse(Reverse {
        id: eid("r2"),
        entry: eid("d1"),
        effective_at: None,
        metadata: Metadata::new(),
    });
    s.when(again).rejected("entry_not_changeable");
}

fn correct_amount(id: &str, entry: &str, amount: &str) -> Command {
    Command::Correct(Correct {
        id: eid(id),
        entry: eid(entry),
        amount: Some(usd(amount)),
        postings: None,
        effective_at: None,
        cancel: false,
        reason: "keying error".into(),
    })
}

#[test]
fn corrections_are_seen_only_from_when_they_were_recorded() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", Some(day(5))))
        .accepted();
    let before = s.ledger().position();
    s.set_now(day(11));
    s.when(correct_amount("c1", "d1", "90.00")).accepted();
    // As known now, the deposit was always 90; as known before the correction, 100.
    assert_eq!(posted(&s, "alice", day(6), KnownAt::Now), "90.00");
    assert_eq!(
        posted(&s, "alice", day(6), KnownAt::Position(before)),
        "100.00"
    );
    assert_eq!(
        posted(
            &s,
            "alice",
            day(6),
            KnownAt::Time(t("2026-01-10T12:00:00Z"))
        ),
        "100.00"
    );
    assert_eq!(posted(&s, "alice", day(4), KnownAt::Now), "0.00");
    let history = s.ledger().entry_history(&eid("d1")).unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0].superseded_at.is_some());
    assert_eq!(history[1].correction_id, Some(eid("c1")));
    // Move it to day 8 and then cancel it.
    let redate = Command::Correct(Correct {
        id: eid("c2"),
        entry: eid("d1"),
        amount: None,
        postings: None,
        effective_at: Some(EffectiveAt(day(8))),
        cancel: false,
        reason: "value date was the 8th".into(),
    });
    s.when(redate).accepted();
    assert_eq!(posted(&s, "alice", day(6), KnownAt::Now), "0.00");
    assert_eq!(posted(&s, "alice", day(8), KnownAt::Now), "90.00");
    let cancel = Command::Correct(Correct {
        id: eid("c3"),
        entry: eid("d1"),
        amount: None,
        postings: None,
        effective_at: None,
        cancel: true,
        reason: "duplicate".into(),
    });
    s.when(cancel).accepted();
    assert_eq!(posted(&s, "alice", day(9), KnownAt::Now), "0.00");
    let v = s.ledger().entry(&eid("d1"), KnownAt::Now).unwrap();
    assert_eq!(v.status, EntryStatus::Cancelled);
    let v = s
        .ledger()
        .entry(&eid("d1"), KnownAt::Position(before))
        .unwrap();
    assert_eq!(v.version.version, 1);
}

#[test]
fn a_correction_that_would_overdraw_later_is_refused() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", Some(day(2))))
        .accepted();
    s.when(transfer("w1", "alice", "bob", "70.00", Some(day(5))))
        .accepted();
    s.when(correct_amount("c1", "d1", "60.00"))
        .rejected("limit_exceeded");
    s.when(correct_amount("c2", "d1", "70.00")).accepted();
}

#[test]
fn restatement_names_the_events_that_changed_a_period() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "100.00", Some(day(3))))
        .accepted();
    let t1 = s.ledger().position();
    s.set_now(day(11));
    s.when(correct_amount("c1", "d1", "120.00")).accepted();
    s.when(transfer("d2", "cash", "alice", "5.00", Some(day(4))))
        .accepted();
    let t2 = s.ledger().position();
    let r = s
        .ledger()
        .restatement(
            &acc("alice"),
            day(1),
            day(9),
            KnownAt::Position(t1),
            KnownAt::Position(t2),
        )
        .unwrap();
    assert_eq!(r.closing_before.posted.to_string(), "100.00");
    assert_eq!(r.closing_after.posted.to_string(), "125.00");
    let kinds: Vec<_> = r
        .changes
        .iter()
        .map(|c| (c.caused_by_event_type.as_str(), c.posted_change.to_string()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("entry_corrected", "-100.00".to_string()),
            ("entry_corrected", "120.00".to_string()),
            ("entry_posted", "5.00".to_string())
        ]
    );
}

#[test]
fn statement_has_a_running_balance_for_the_valid_period() {
    let mut s = bank(day(20));
    s.when(transfer("d1", "cash", "alice", "100.00", Some(day(2))))
        .accepted();
    s.when(transfer("d2", "cash", "alice", "50.00", Some(day(6))))
        .accepted();
    s.when(transfer("w1", "alice", "bob", "30.00", Some(day(8))))
        .accepted();
    let st = s
        .ledger()
        .statement(&acc("alice"), day(5), day(9), KnownAt::Now)
        .unwrap();
    assert_eq!(st.opening.posted.to_string(), "100.00");
    let lines: Vec<_> = st
        .lines
        .iter()
        .map(|l| (l.posted_change.to_string(), l.posted_balance.to_string()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("50.00".into(), "150.00".into()),
            ("-30.00".into(), "120.00".into())
        ]
    );
    assert_eq!(st.closing.posted.to_string(), "120.00");
    assert_eq!(st.lines[0].entry_id, Some(eid("d2")));
}

#[test]
fn frozen_accounts_refuse_postings_and_closing_needs_zero_balance() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "10.00", None))
        .accepted();
    s.when(Command::FreezeAccount {
        account: acc("alice"),
    })
    .accepted();
    s.when(Command::FreezeAccount {
        account: acc("alice"),
    })
    .no_events();
    s.when(transfer("w1", "alice", "bob", "1.00", None))
        .rejected("account_frozen");
    s.when(Command::UnfreezeAccount {
        account: acc("alice"),
    })
    .accepted();
    s.when(Command::CloseAccount {
        account: acc("alice"),
    })
    .rejected("account_not_closable");
    s.when(transfer("w2", "alice", "bob", "10.00", None))
        .accepted();
    s.when(Command::CloseAccount {
        account: acc("alice"),
    })
    .accepted();
    s.when(transfer("d2", "cash", "alice", "1.00", None))
        .rejected("account_closed");
}

#[test]
fn balance_before_opening_is_zero_and_bases_are_repeatable() {
    let mut s = bank(day(10));
    s.when(transfer("d1", "cash", "alice", "10.00", None))
        .accepted();
    let b = s
        .ledger()
        .balance(&acc("alice"), t("2025-06-01T00:00:00Z"), KnownAt::Now)
        .unwrap();
    assert_eq!(b.posted.to_string(), "0.00");
    let now = s
        .ledger()
        .balance(&acc("alice"), day(10), KnownAt::Now)
        .unwrap();
    s.when(transfer("d2", "cash", "alice", "10.00", Some(day(9))))
        .accepted();
    let again = s
        .ledger()
        .balance(
            &acc("alice"),
            day(10),
            KnownAt::Position(now.basis.position),
        )
        .unwrap();
    assert_eq!(again.posted, now.posted);
    assert!(s
        .ledger()
        .balance(&acc("alice"), day(10), KnownAt::Position(10_000))
        .is_err());
}

#[test]
fn amounts_beyond_the_posting_limit_are_refused_not_crashed_on() {
    let mut s = bank(day(10));
    let huge =
        Amount::from_minor(crate::limits::POSTING_AMOUNT_MINOR_MAX + 1, Currency::USD).unwrap();
    let cmd = Command::PostEntry(PostEntry::transfer(
        eid("h1"),
        acc("cash"),
        acc("alice"),
        huge,
        None,
    ));
    s.when(cmd).rejected("amount_overflow");
    // Many maximal postings at one instant on an unconstrained account: refused before the
    // balance index could overflow, never an invariant violation.
    let max = Amount::from_minor(crate::limits::POSTING_AMOUNT_MINOR_MAX, Currency::USD).unwrap();
    let mut refused = false;
    for i in 0..2_000 {
        let cmd = Command::PostEntry(PostEntry::transfer(
            eid(&format!("m{i}")),
            acc("cash"),
            acc("alice"),
            max,
            Some(EffectiveAt(day(9))),
        ));
        if s.when(cmd).result.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the index's range must be enforced by decide");
}

#[test]
fn an_entry_that_touches_one_account_only_is_refused() {
    let mut s = bank(day(10));
    s.when(transfer("x1", "alice", "alice", "1.00", None))
        .rejected("same_account");
}

/// Fingerprints are stored in events (idempotency across restarts), so their definition may
/// never change: these values were computed by the original byte-at-a-time implementation.
#[test]
fn fingerprints_are_stable() {
    let usd = |s: &str| Amount::parse(s, Currency::USD).unwrap();
    let transfer = Command::PostEntry(PostEntry::transfer(
        "t-1".parse().unwrap(),
        "alice".parse().unwrap(),
        "bob-the-longer-account".parse().unwrap(),
        usd("10.05"),
        Some(EffectiveAt(
            Timestamp::from_micros(1_700_000_000_000_000).unwrap(),
        )),
    ));
    let mut open = OpenAccount::new(
        "alice".parse().unwrap(),
        Currency::USD,
        AccountKind::Liability,
    );
    open.owner = Some("cust-1".into());
    open.constraints.overdraft_limit = Some(usd("50.00"));
    let open = Command::OpenAccount(open);
    let freeze = Command::FreezeAccount {
        account: "alice".parse().unwrap(),
    };
    let got = [
        transfer.fingerprint(),
        open.fingerprint(),
        freeze.fingerprint(),
    ];
    assert_eq!(
        got,
        [
            192002237236234464,
            4886048438208702653,
            17550914571477366570
        ]
    );
}

/// A ledger holding one entry of every stored shape, with the expected form of each: `true`
/// when it must be stored hot (a plain transfer), `false` when cold.
fn every_entry_shape() -> (Scenario, Vec<(&'static str, bool)>) {
    let mut s = bank(day(10));
    s.when(transfer("plain", "cash", "alice", "100.00", None))
        .accepted();
    s.when(transfer("backdated", "cash", "bob", "50.00", Some(day(5))))
        .accepted();
    let leg = |a: &str, direction, amount: &str| Posting {
        account: acc(a),
        direction,
        amount: usd(amount),
    };
    s.when(Command::PostEntry(PostEntry {
        id: eid("multi-leg"),
        postings: vec![
            leg("cash", Direction::Debit, "30.00"),
            leg("alice", Direction::Credit, "10.00"),
            leg("bob", Direction::Credit, "20.00"),
        ]
        .into(),
        effective_at: None,
        metadata: Metadata::new(),
    }))
    .accepted();
    // Credit first, then debit: two postings, but not in the compact order.
    s.when(Command::PostEntry(PostEntry {
        id: eid("credit-first"),
        postings: vec![
            leg("alice", Direction::Credit, "1.00"),
            leg("cash", Direction::Debit, "1.00"),
        ]
        .into(),
        effective_at: None,
        metadata: Metadata::new(),
    }))
    .accepted();
    let mut tagged =
        PostEntry::transfer(eid("metadata"), acc("cash"), acc("bob"), usd("2.00"), None);
    tagged.metadata =
        Metadata::from_map([("memo".to_string(), "rent".to_string())].into()).unwrap();
    s.when(Command::PostEntry(tagged)).accepted();
    for h in ["hold-placed", "hold-posted", "hold-voided"] {
        s.when(hold(h, "alice", "bob", "5.00", None)).accepted();
    }
    s.when(hold("hold-expired", "alice", "bob", "5.00", Some(day(11))))
        .accepted();
    s.when(Command::PostHold(PostHold {
        hold: eid("hold-posted"),
        amount: Some(usd("3.00")),
        effective_at: None,
    }))
    .accepted();
    s.when(Command::VoidHold(VoidHold {
        hold: eid("hold-voided"),
        effective_at: None,
    }))
    .accepted();
    for id in ["corrected", "cancelled", "reversed"] {
        s.when(transfer(id, "cash", "alice", "7.00", None))
            .accepted();
    }
    s.when(correct_amount("c1", "corrected", "8.00")).accepted();
    s.when(Command::Correct(Correct {
        id: eid("c2"),
        entry: eid("cancelled"),
        amount: None,
        postings: None,
        effective_at: None,
        cancel: true,
        reason: "duplicate".into(),
    }))
    .accepted();
    s.when(Command::Reverse(Reverse {
        id: eid("reversal"),
        entry: eid("reversed"),
        effective_at: None,
        metadata: Metadata::new(),
    }))
    .accepted();
    s.set_now(day(12));
    s.when(Command::ExpireHolds).accepted();
    let shapes = vec![
        ("plain", true),
        ("backdated", true),
        ("multi-leg", false),
        ("credit-first", false),
        ("metadata", false),
        ("hold-placed", false),
        ("hold-posted", false),
        ("hold-voided", false),
        ("hold-expired", false),
        ("corrected", false),
        ("cancelled", false),
        ("reversed", false),
        ("reversal", false),
    ];
    (s, shapes)
}

/// Each entry as a plain fold of the log builds it in full (the representation the ledger
/// stored before entries were compacted), to check the compact form against.
fn full_entries(log: &[crate::event::Envelope<LedgerEvent>]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let find = |out: &mut Vec<Entry>, id: &EntryId| out.iter().position(|e| &e.id == id).unwrap();
    for env in log {
        let (pos, at) = (env.position, env.recorded_at);
        match &env.payload {
            LedgerEvent::EntryPosted {
                id,
                postings,
                effective_at,
                metadata,
                reversal_of,
                fingerprint,
            } => {
                if let Some(of) = reversal_of {
                    let i = find(&mut out, of);
                    out[i].reversed_by = Some(id.clone());
                }
                let kind = match reversal_of {
                    Some(of) => EntryKind::Reversal { of: of.clone() },
                    None => EntryKind::Posted,
                };
                let e = Entry::recorded(
                    id.clone(),
                    kind,
                    metadata.clone(),
                    postings.clone(),
                    *effective_at,
                    (pos, at),
                    *fingerprint,
                    1,
                );
                out.push(e);
            }
            LedgerEvent::HoldPlaced {
                id,
                postings,
                amount,
                effective_at,
                expires_at,
                metadata,
                fingerprint,
            } => out.push(Entry::recorded(
                id.clone(),
                EntryKind::Hold {
                    expires_at: *expires_at,
                    amount: *amount,
                    resolution: None,
                },
                metadata.clone(),
                postings.clone(),
                *effective_at,
                (pos, at),
                *fingerprint,
                1,
            )),
            LedgerEvent::HoldPosted {
                hold,
                amount,
                effective_at,
                ..
            } => {
                let i = find(&mut out, hold);
                if let EntryKind::Hold { resolution, .. } = &mut out[i].kind {
                    *resolution = Some(HoldResolution::Posted {
                        amount: *amount,
                        effective_at: *effective_at,
                        position: pos,
                    });
                }
                out[i].stream_version += 1;
            }
            LedgerEvent::HoldVoided {
                hold, effective_at, ..
            } => {
                let i = find(&mut out, hold);
                if let EntryKind::Hold { resolution, .. } = &mut out[i].kind {
                    *resolution = Some(HoldResolution::Voided {
                        effective_at: *effective_at,
                        position: pos,
                    });
                }
                out[i].stream_version += 1;
            }
            LedgerEvent::HoldExpired { hold } => {
                let i = find(&mut out, hold);
                if let EntryKind::Hold { resolution, .. } = &mut out[i].kind {
                    *resolution = Some(HoldResolution::Expired { position: pos });
                }
                out[i].stream_version += 1;
            }
            LedgerEvent::EntryCorrected {
                entry,
                correction_id,
                version,
                postings,
                effective_at,
                cancelled,
                reason,
                ..
            } => {
                let i = find(&mut out, entry);
                let e = &mut out[i];
                let mut prev = std::mem::replace(
                    &mut e.current,
                    EntryVersion {
                        version: *version,
                        postings: postings.clone(),
                        effective_at: *effective_at,
                        position: pos,
                        recorded_at: at,
                        superseded_at: None,
                        correction_id: Some(correction_id.clone()),
                        reason: Some(reason.clone()),
                        cancelled: *cancelled,
                    },
                );
                prev.superseded_at = Some((pos, at));
                e.previous.push(prev);
                e.stream_version += 1;
            }
            _ => {}
        }
    }
    out
}

/// Checks the stored form of every entry of `ledger` against `expected` (full entries in
/// recording order) and the hot/cold form each must have.
fn check_stored_entries(ledger: &Ledger, expected: &[Entry], shapes: &[(&str, bool)]) {
    assert_eq!(ledger.entries.len(), expected.len());
    for (stored, full) in ledger.entries.iter().zip(expected) {
        let id = ledger.entry_id(stored);
        let view = ledger.entry_record(&id).unwrap();
        assert_eq!(&view, full, "materialised view of {id}");
        // The compact accessors that hot paths read agree with the full view.
        assert_eq!(id, full.id);
        assert_eq!(stored.fingerprint, full.fingerprint);
        assert_eq!(stored.stream_version(), full.stream_version);
        assert_eq!(stored.current_position(), full.current.position);
        assert_eq!(stored.current_effective_at(), full.current.effective_at);
        assert_eq!(
            stored.first_position(),
            full.versions().next().unwrap().position
        );
        assert_eq!(
            ledger.next_stream_version(&LedgerEvent::HoldExpired { hold: id.clone() }),
            full.stream_version + 1
        );
        if let Some(t) = stored.as_transfer() {
            let [d, c] = &full.current.postings[..] else {
                panic!("{} is hot but has not two postings", full.id)
            };
            let account = |ix: u32| &ledger.accounts[ix as usize].account.id;
            assert_eq!(
                (account(t.debit), account(t.credit)),
                (&d.account, &c.account)
            );
            assert_eq!(i128::from(t.minor), d.amount.minor());
        }
        let hot = shapes
            .iter()
            .find(|(shape, _)| *shape == id.as_str())
            .map(|(_, hot)| *hot);
        assert_eq!(
            stored.cold_entry().is_none(),
            hot.unwrap_or_else(|| is_plain_transfer(ledger, full)),
            "form of {id}"
        );
    }
}

#[test]
fn stored_entries_agree_with_their_full_view_for_every_shape() {
    let (s, shapes) = every_entry_shape();
    let expected = full_entries(s.log());
    // Every shape is there (the bank's deposits are plain transfers).
    for (id, _) in &shapes {
        assert!(expected.iter().any(|e| e.id.as_str() == *id), "{id}");
    }
    check_stored_entries(s.ledger(), &expected, &shapes);
    // The queries that read the stored form directly answer as from the full view.
    for e in &expected {
        let view = s.ledger().entry(&e.id, KnownAt::Now).unwrap();
        assert_eq!(view.version, e.current);
        assert_eq!(view.kind, e.kind);
        assert_eq!(
            s.ledger().entry_history(&e.id).unwrap().len(),
            e.previous.len() + 1
        );
    }
    // Same id and content again: the original answer, from the compact record.
    let mut s = s;
    s.when(transfer("plain", "cash", "alice", "100.00", None))
        .no_events();
    s.when(transfer("plain", "cash", "alice", "100.01", None))
        .rejected("id_conflict");
}

#[test]
fn snapshots_round_trip_every_entry_shape_into_the_same_stored_form() {
    let (s, shapes) = every_entry_shape();
    let expected = full_entries(s.log());
    let bytes = s.ledger().encode_snapshot();
    let decoded = Ledger::decode_snapshot(LedgerConfig::default(), &bytes).unwrap();
    assert_eq!(crate::testing::same_state(&decoded, s.ledger()), Ok(()));
    assert_eq!(decoded.entries, s.ledger().entries);
    check_stored_entries(&decoded, &expected, &shapes);
    // Written again from the decoded form (the hash maps' order may differ, so compare states).
    let again = Ledger::decode_snapshot(LedgerConfig::default(), &decoded.encode_snapshot());
    assert_eq!(again.unwrap().entries, decoded.entries);
}

#[test]
fn a_stored_entry_is_56_bytes() {
    assert_eq!(std::mem::size_of::<super::stored::StoredEntry>(), 56);
}

/// The id index hashes the ids the entries hold; an event recording an id again is still
/// refused as a broken invariant, and the refused entry is not kept.
#[test]
fn an_entry_recorded_twice_is_refused_by_apply() {
    let (s, _) = every_entry_shape();
    let mut ledger = s.ledger().clone();
    let first = s
        .log()
        .iter()
        .find(|e| matches!(e.payload, LedgerEvent::EntryPosted { .. }))
        .unwrap();
    let mut again = first.clone();
    again.position = ledger.position() + 1;
    again.recorded_at = crate::time::RecordedAt(s.now().saturating_add_micros(1_000_000));
    let count = ledger.entry_count();
    let err = ledger.apply(&again).unwrap_err();
    assert!(err.0.contains("recorded twice"), "{err}");
    assert_eq!(ledger.entry_count(), count);
}

/// A bulk replay indexes entry ids in runs, after recording them; an id recorded twice is
/// still refused, whether the second comes before the first run is indexed, after it, or
/// with buffers that flush after every change.
#[test]
fn an_entry_recorded_twice_is_refused_by_a_bulk_replay() {
    let (s, _) = every_entry_shape();
    let log = s.log();
    let first = log
        .iter()
        .find(|e| matches!(e.payload, LedgerEvent::EntryPosted { .. }))
        .unwrap();
    let mut again = first.clone();
    again.position = log.len() as u64 + 1;
    again.recorded_at = crate::time::RecordedAt(s.now().saturating_add_micros(1_000_000));
    let mut with_dup = log.to_vec();
    with_dup.push(again);
    for buffer in [1, 3, usize::MAX] {
        let err = Ledger::default()
            .apply_all_buffered(&with_dup, buffer)
            .unwrap_err();
        assert!(err.0.contains("recorded twice"), "{buffer}: {err}");
        // Without the duplicate the same replay succeeds.
        Ledger::default()
            .apply_all_buffered(log, buffer)
            .unwrap_or_else(|e| panic!("{buffer}: {e}"));
    }
}

/// Whether `e` must be stored hot: the definition of a plain transfer, written out again from
/// the full entry.
fn is_plain_transfer(ledger: &Ledger, e: &Entry) -> bool {
    let currency = |id: &AccountId| ledger.account(id).map(|a| a.currency);
    let transfer = match &e.current.postings[..] {
        [d, c] => {
            d.direction == Direction::Debit
                && c.direction == Direction::Credit
                && d.amount == c.amount
                && currency(&d.account) == Some(d.amount.currency())
                && currency(&c.account) == Some(c.amount.currency())
                && i64::try_from(d.amount.minor()).is_ok()
        }
        _ => false,
    };
    transfer
        && matches!(e.kind, EntryKind::Posted)
        && e.metadata.is_empty()
        && e.previous.is_empty()
        && e.reversed_by.is_none()
        && e.stream_version == 1
        && !e.current.cancelled
}

/// Random workloads (every command type, refusals included): every stored entry agrees with
/// a full fold of the log and has the form its shape calls for, live and after a snapshot.
#[test]
fn stored_entries_agree_with_their_full_view_under_random_workloads() {
    for seed in 0..24 {
        let mut workload = crate::testing::workload::Workload::new(seed);
        let mut ledger = Ledger::default();
        let mut log = Vec::new();
        let mut now = crate::testing::workload::Workload::start();
        for _ in 0..300 {
            let cmd = workload.next(&ledger, now);
            let _answer = ledger
                .execute(&cmd, &crate::event::Trace::default(), now, 0, &mut log)
                .expect("no invariant breaks");
            now = now.saturating_add_micros(workload.advance_micros());
        }
        let expected = full_entries(&log);
        check_stored_entries(&ledger, &expected, &[]);
        let hot = ledger.entries.iter().filter(|e| e.cold_entry().is_none());
        assert!(
            hot.count() > 0,
            "seed {seed}: some entries are plain transfers"
        );
        let decoded =
            Ledger::decode_snapshot(LedgerConfig::default(), &ledger.encode_snapshot()).unwrap();
        check_stored_entries(&decoded, &expected, &[]);
    }
}

/// `warm` before each window of commands, each executed with the hints it learned (as the
/// engine does), changes no answer and no event, on random workloads with every command
/// type, retries and refusals.
#[test]
fn warming_windows_changes_nothing() {
    for seed in 0..16 {
        let mut workload = crate::testing::workload::Workload::new(seed);
        let mut plain = Ledger::default();
        let mut plain_log = Vec::new();
        let mut now = crate::testing::workload::Workload::start();
        let mut commands = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..300 {
            let cmd = workload.next(&plain, now);
            let answer = plain
                .execute(
                    &cmd,
                    &crate::event::Trace::default(),
                    now,
                    0,
                    &mut plain_log,
                )
                .expect("no invariant breaks");
            commands.push((cmd, now));
            answers.push(answer);
            now = now.saturating_add_micros(workload.advance_micros());
        }
        // Both ways of warming: reading ahead (a ledger of many accounts) and not.
        for read_ahead in [true, false] {
            let mut warmed = Ledger::default();
            let mut warmed_log = Vec::new();
            let mut warmed_answers = Vec::new();
            let mut hinted = 0;
            for window in commands.chunks(7) {
                let w = warmed.warm_with(window.iter().map(|(c, _)| c), read_ahead);
                for (i, (cmd, now)) in window.iter().enumerate() {
                    let hints = w.hints(i, cmd);
                    hinted += usize::from(hints.is_some());
                    let answer = warmed
                        .execute_hinted(
                            cmd,
                            hints,
                            &crate::event::Trace::default(),
                            *now,
                            0,
                            &mut warmed_log,
                        )
                        .expect("no invariant breaks");
                    warmed_answers.push(answer);
                }
            }
            assert_eq!(
                warmed_answers, answers,
                "seed {seed}, read ahead {read_ahead}"
            );
            assert_eq!(
                warmed_log, plain_log,
                "seed {seed}, read ahead {read_ahead}"
            );
            assert!(hinted > 50, "seed {seed}: most commands are plain entries");
        }
    }
}

/// Hints are for the command and the ledger they were learned from: another command (even
/// an equal one) gets none, and a ledger whose accounts lie at other indexes (here a clone
/// that opened the same accounts in the other order) ignores them, posting to the accounts
/// the command names.
#[test]
fn hints_apply_to_their_command_on_their_ledger_only() {
    let mut a = Ledger::default();
    let mut b = a.clone();
    let mut log = Vec::new();
    let trace = crate::event::Trace::default();
    for id in ["x", "y"] {
        let cmd = open(id, AccountKind::Liability, Constraints::default());
        a.execute(&cmd, &trace, day(1), 0, &mut log)
            .unwrap()
            .unwrap();
    }
    for id in ["y", "x"] {
        let cmd = open(id, AccountKind::Liability, Constraints::default());
        b.execute(&cmd, &trace, day(1), 0, &mut log)
            .unwrap()
            .unwrap();
    }
    let cmd = transfer("t1", "x", "y", "5.00", None);
    let window = [cmd.clone()];
    let warmed = a.warm(&window);
    assert!(warmed.hints(0, &window[0]).is_some());
    assert!(
        warmed.hints(0, &cmd).is_none(),
        "an equal command elsewhere"
    );
    assert!(
        warmed.hints(1, &window[0]).is_none(),
        "another place in the window"
    );
    let post = |l: &mut Ledger, log: &mut Vec<_>| {
        let hints = warmed.hints(0, &window[0]);
        l.execute_hinted(&window[0], hints, &trace, day(2), 0, log)
            .unwrap()
            .unwrap();
    };
    let bal = |l: &Ledger, id: &str| {
        let b = l.balance(&acc(id), day(3), KnownAt::Now).unwrap();
        b.posted.to_string()
    };
    // Learned on `a` (x at 0, y at 1), used on `b` (y at 0, x at 1).
    post(&mut b, &mut log);
    assert_eq!(bal(&b, "x"), "-5.00");
    assert_eq!(bal(&b, "y"), "5.00");
    // A clone of `a` is another ledger too.
    let mut c = a.clone();
    post(&mut c, &mut log);
    assert_eq!(bal(&c, "x"), "-5.00");
    // On `a` itself, hints lent for one command and given with another are not used: the
    // other command is decided on its own (its accounts, its id, its fingerprint).
    let two = [
        transfer("t2", "x", "y", "1.00", None),
        transfer("t3", "y", "x", "7.00", None),
    ];
    let warmed = a.warm(&two);
    a.execute_hinted(
        &two[1],
        warmed.hints(0, &two[0]),
        &trace,
        day(2),
        0,
        &mut log,
    )
    .unwrap()
    .unwrap();
    assert_eq!(bal(&a, "x"), "7.00");
    assert_eq!(bal(&a, "y"), "-7.00");
    assert!(a.entry_record(&"t3".parse().unwrap()).is_some());
    assert!(a.entry_record(&"t2".parse().unwrap()).is_none());
}

/// A bulk replay's flush sorts its buffer into blocks of about `RUN_BLOCK_CHANGES` changes;
/// a workload with several blocks' worth of changes (holds among them, whose amounts are kept
/// apart) replays to the live state, and past bases answer alike.
#[test]
fn a_bulk_replay_over_several_run_blocks_gives_the_live_state() {
    use crate::testing::{same_state, workload::Workload};
    let mut workload = Workload::new(11);
    let mut live = Ledger::default();
    let mut log = Vec::new();
    let mut now = Workload::start();
    while live
        .accounts
        .iter()
        .map(|a| a.index.changes().len())
        .sum::<usize>()
        < 3 * RUN_BLOCK_CHANGES
    {
        let cmd = workload.next(&live, now);
        // Rejections are part of the workload; only a broken invariant fails the test.
        let _answer = live
            .execute(&cmd, &crate::event::Trace::default(), now, 0, &mut log)
            .expect("no invariant breaks");
        now = now.saturating_add_micros(workload.advance_micros());
    }
    let wide = live
        .accounts
        .iter()
        .flat_map(|a| a.index.changes().iter())
        .filter(|c| c.deltas.pending_debit != 0 || c.deltas.pending_credit != 0)
        .count();
    assert!(wide > 0, "the workload places holds");
    let mut bulk = Ledger::default();
    bulk.apply_all(&log).expect("replays");
    same_state(&live, &bulk).unwrap();
    let position = live.position();
    for a in live.accounts() {
        for known in [position / 3, position / 2, position] {
            assert_eq!(
                live.balance(&a.id, now, KnownAt::Position(known)),
                bulk.balance(&a.id, now, KnownAt::Position(known)),
            );
        }
    }
}

proptest::proptest! {
    /// Every two-posting entry (any two of four accounts in USD and EUR, either side, a few
    /// amounts) is decided as the per-currency rule says: refused when both legs hit one
    /// account; otherwise accepted exactly when debits equal credits in every currency, and
    /// else refused as unbalanced in the first currency whose sums differ, with those sums.
    /// The shortcut for the common transfer in `validate_postings` must agree with it.
    #[test]
    fn two_posting_entries_balance_per_currency(
        legs in proptest::collection::vec((0usize..4, proptest::bool::ANY, 1i128..4), 2)
    ) {
        let accounts = [
            ("u1", Currency::USD),
            ("u2", Currency::USD),
            ("e1", Currency::EUR),
            ("e2", Currency::EUR),
        ];
        let s = Scenario::new(day(10)).given(accounts.iter().map(|&(id, currency)| {
            Command::OpenAccount(OpenAccount {
                id: acc(id),
                currency,
                kind: AccountKind::Asset,
                owner: None,
                branch: None,
                constraints: Constraints::default(),
                metadata: Metadata::new(),
                effective_at: Some(EffectiveAt(day(1))),
            })
        }));
        let postings: Vec<Posting> = legs
            .iter()
            .map(|&(a, debit, units)| Posting {
                account: acc(accounts[a].0),
                direction: if debit { Direction::Debit } else { Direction::Credit },
                amount: Amount::from_minor(units * 100, accounts[a].1).unwrap(),
            })
            .collect();
        let cmd = Command::PostEntry(PostEntry {
            id: eid("p"),
            postings: postings.clone().into(),
            effective_at: None,
            metadata: Metadata::new(),
        });
        let ledger = s.ledger();
        let ctx = Context { now: day(10), next_position: ledger.position() + 1 };
        let decision = ledger.decide(&cmd, &ctx);
        // The rule, naively.
        let mut sums: Vec<(Currency, i128, i128)> = Vec::new();
        for p in &postings {
            let c = p.amount.currency();
            if !sums.iter().any(|s| s.0 == c) {
                sums.push((c, 0, 0));
            }
            let s = sums.iter_mut().find(|s| s.0 == c).unwrap();
            match p.direction {
                Direction::Debit => s.1 += p.amount.minor(),
                Direction::Credit => s.2 += p.amount.minor(),
            }
        }
        let expected = if legs[0].0 == legs[1].0 {
            Some(Rejection::SameAccount)
        } else {
            sums.iter().find(|s| s.1 != s.2).map(|&(currency, debits, credits)| {
                Rejection::Unbalanced { currency, debits, credits }
            })
        };
        match (decision, expected) {
            (Decision::Accept(_), None) => {}
            (Decision::Reject { rejection, .. }, Some(e)) => proptest::prop_assert_eq!(rejection, e),
            (d, e) => proptest::prop_assert!(false, "decided {d:?}, expected refusal {e:?}"),
        }
    }
}
