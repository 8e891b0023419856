//! The event codec: golden files of every released schema version must still decode (and
//! upcast) to the same events, forever; round trips are exact; old versions go through the
//! upcaster chain; bad input is a typed error.
//!
//! To add a schema version: keep `golden/ledger_events_v1.jsonl` untouched, add the new file,
//! and add upcasters so the old file still decodes. Regenerate the current file with
//! `UC_BLESS=1 cargo test -p ultracore-core --test codec` only when adding event types.

#![allow(clippy::disallowed_methods)] // blessing golden files reads the environment and writes a file: test-only

use std::sync::Arc;

use ultracore_core::event::{
    decode, decode_payload, encode, CodecError, DomainEvent, Envelope, Trace, Upcaster,
};
use ultracore_core::ids::{EventId, StreamId};
use ultracore_core::ledger::*;
use ultracore_core::money::{Amount, Currency};
use ultracore_core::time::{EffectiveAt, RecordedAt, Timestamp};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn usd(s: &str) -> Amount {
    Amount::parse(s, Currency::USD).unwrap()
}

/// One event of every type, with every optional field exercised somewhere.
fn samples() -> Vec<LedgerEvent> {
    let a = "alice".parse().unwrap();
    let b = "bob".parse().unwrap();
    let e = "T-1".parse().unwrap();
    let postings: Postings = Arc::from(vec![
        Posting {
            account: "alice".parse().unwrap(),
            direction: Direction::Debit,
            amount: usd("10.50"),
        },
        Posting {
            account: "bob".parse().unwrap(),
            direction: Direction::Credit,
            amount: usd("10.50"),
        },
    ]);
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("channel".to_string(), "branch".to_string());
    let metadata = Metadata::from_map(meta).unwrap();
    let at = EffectiveAt(ts("2026-01-05T10:00:00Z"));
    vec![
        LedgerEvent::AccountOpened {
            id: "alice".parse().unwrap(),
            currency: Currency::USD,
            kind: AccountKind::Liability,
            owner: Some("cust-1".into()),
            branch: Some("br-9".into()),
            constraints: Box::new(Constraints {
                debits_must_not_exceed_credits: true,
                credits_must_not_exceed_debits: false,
                overdraft_limit: Some(usd("50.00")),
            }),
            metadata: metadata.clone(),
            opened_at: EffectiveAt(ts("2026-01-01T00:00:00Z")),
            fingerprint: 42,
        },
        LedgerEvent::AccountFrozen { account: a },
        LedgerEvent::AccountUnfrozen { account: b },
        LedgerEvent::AccountClosed {
            account: "carol".parse().unwrap(),
        },
        LedgerEvent::AccountMetadataSet {
            account: "alice".parse().unwrap(),
            metadata: metadata.clone(),
        },
        LedgerEvent::EntryPosted {
            id: e,
            postings: postings.clone(),
            effective_at: at,
            metadata: metadata.clone(),
            reversal_of: None,
            fingerprint: u64::MAX,
        },
        LedgerEvent::EntryPosted {
            id: "R-1".parse().unwrap(),
            postings: postings.clone(),
            effective_at: at,
            metadata: Metadata::new(),
            reversal_of: Some("T-1".parse().unwrap()),
            fingerprint: 7,
        },
        LedgerEvent::HoldPlaced {
            id: "H-1".parse().unwrap(),
            postings: postings.clone(),
            amount: usd("10.50"),
            effective_at: at,
            expires_at: Some(ts("2026-01-06T10:00:00Z")),
            metadata: Metadata::new(),
            fingerprint: 8,
        },
        LedgerEvent::HoldPosted {
            hold: "H-1".parse().unwrap(),
            amount: usd("5.00"),
            effective_at: at,
            fingerprint: 9,
        },
        LedgerEvent::HoldVoided {
            hold: "H-2".parse().unwrap(),
            effective_at: at,
            fingerprint: 10,
        },
        LedgerEvent::HoldExpired {
            hold: "H-3".parse().unwrap(),
        },
        LedgerEvent::EntryCorrected {
            entry: "T-1".parse().unwrap(),
            correction_id: "C-1".parse().unwrap(),
            version: 2,
            postings,
            effective_at: at,
            cancelled: false,
            reason: "keying error".into(),
            fingerprint: 11,
        },
        LedgerEvent::EntryRejected {
            id: "T-2".parse().unwrap(),
            fingerprint: 12,
            rejection: Rejection::LimitExceeded {
                account: "alice".parse().unwrap(),
                at: ts("2026-01-05T10:00:00Z"),
                balance: -100,
                bound: 0,
            },
        },
    ]
}

fn envelopes() -> Vec<Envelope<LedgerEvent>> {
    samples()
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let position = i as u64 + 1;
            let recorded = ts("2026-01-10T00:00:00Z").saturating_add_micros(i as i64);
            Envelope {
                event_id: EventId::from_log_position(3, position),
                stream: payload.stream(),
                stream_version: 1,
                position,
                recorded_at: RecordedAt(recorded),
                effective_at: payload.effective_at().unwrap_or(EffectiveAt(recorded)),
                trace: Trace {
                    correlation_id: Some(Arc::from("req-1")),
                    causation_id: None,
                    actor: Some(Arc::from("teller-7")),
                },
                schema_version: LedgerEvent::SCHEMA_VERSION,
                payload,
            }
        })
        .collect()
}

const GOLDEN_V1: &str = include_str!("golden/ledger_events_v1.jsonl");

#[test]
fn golden_v1_decodes_to_the_same_events() {
    let expected = envelopes();
    if std::env::var("UC_BLESS").is_ok() {
        let text: String = expected
            .iter()
            .map(|e| String::from_utf8(encode(e)).unwrap() + "\n")
            .collect();
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/ledger_events_v1.jsonl"
            ),
            text,
        )
        .unwrap();
        return;
    }
    let decoded: Vec<Envelope<LedgerEvent>> = GOLDEN_V1
        .lines()
        .map(|l| decode(l.as_bytes()).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(decoded, expected);
    let types: std::collections::BTreeSet<_> = decoded.iter().map(|e| e.event_type()).collect();
    assert_eq!(types.len(), 12, "every event type has a golden record");
}

#[test]
fn encode_then_decode_is_identity() {
    for e in envelopes() {
        assert_eq!(decode::<LedgerEvent>(&encode(&e)).unwrap(), e);
    }
}

#[test]
fn bad_records_are_typed_errors() {
    assert!(matches!(
        decode::<LedgerEvent>(b"not json"),
        Err(CodecError::Malformed(_))
    ));
    let line = GOLDEN_V1.lines().next().unwrap();
    let future = line.replace("\"schema_version\":1", "\"schema_version\":9");
    assert!(matches!(
        decode::<LedgerEvent>(future.as_bytes()),
        Err(CodecError::FromTheFuture { .. })
    ));
    let old = line.replace("\"schema_version\":1", "\"schema_version\":0");
    assert!(matches!(
        decode::<LedgerEvent>(old.as_bytes()),
        Err(CodecError::MissingUpcaster { .. })
    ));
    let wrong_type = line.replace(
        "\"event_type\":\"account_opened\"",
        "\"event_type\":\"account_closed\"",
    );
    assert!(matches!(
        decode::<LedgerEvent>(wrong_type.as_bytes()),
        Err(CodecError::Payload { .. })
    ));
    let bad_amount = GOLDEN_V1
        .lines()
        .nth(5)
        .unwrap()
        .replacen("\"10.50\"", "\"10.505\"", 1);
    assert!(matches!(
        decode::<LedgerEvent>(bad_amount.as_bytes()),
        Err(CodecError::Payload { .. })
    ));
}

/// A domain at schema version 3 whose version-1 payloads named the field `amt` and whose
/// version-2 payloads stored cents as a number: the chain lifts both.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Demo {
    Paid { amount: String },
}

impl DomainEvent for Demo {
    const SCHEMA_VERSION: u16 = 3;
    fn event_type(&self) -> &'static str {
        "paid"
    }
    fn stream(&self) -> StreamId {
        "demo".parse().unwrap()
    }
    fn effective_at(&self) -> Option<EffectiveAt> {
        None
    }
    fn upcasters() -> &'static [Upcaster] {
        fn v1(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
            let o = v.as_object_mut().ok_or("not an object")?;
            let amt = o.remove("amt").ok_or("no amt")?;
            o.insert("cents".into(), amt);
            Ok(v)
        }
        fn v2(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
            let o = v.as_object_mut().ok_or("not an object")?;
            let cents = o
                .remove("cents")
                .and_then(|c| c.as_i64())
                .ok_or("no cents")?;
            o.insert(
                "amount".into(),
                format!("{}.{:02}", cents / 100, cents % 100).into(),
            );
            Ok(v)
        }
        &[
            Upcaster {
                event_type: "paid",
                from_version: 2,
                upcast: v2,
            },
            Upcaster {
                event_type: "paid",
                from_version: 1,
                upcast: v1,
            },
        ]
    }
}

#[test]
fn upcasters_lift_old_payloads_in_order() {
    let v1 = serde_json::json!({"type": "paid", "amt": 1050});
    let v2 = serde_json::json!({"type": "paid", "cents": 1050});
    let v3 = serde_json::json!({"type": "paid", "amount": "10.50"});
    let want = Demo::Paid {
        amount: "10.50".into(),
    };
    assert_eq!(decode_payload::<Demo>("paid", 1, v1).unwrap(), want);
    assert_eq!(decode_payload::<Demo>("paid", 2, v2).unwrap(), want);
    assert_eq!(decode_payload::<Demo>("paid", 3, v3).unwrap(), want);
    let broken = serde_json::json!({"type": "paid", "oops": 1});
    assert!(matches!(
        decode_payload::<Demo>("paid", 1, broken),
        Err(CodecError::Upcast { .. })
    ));
}
