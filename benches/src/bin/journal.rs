//! The embedded journal alone, durable (fdatasync per group), on the local disk:
//!
//! - `append [appenders] [events_per_batch] [total_events]`: appender threads take prepared
//!   batches of transfer events in log order, submit them (the journal encodes on the
//!   submitting thread) and wait for durability; the writer thread group-commits whatever is
//!   queued. Reports durable events/s, syncs and events per sync.
//! - `scan [events]`: builds a journal of that many transfer events once (kept in
//!   `$UC_BENCH_DIR`, default `/var/tmp/uc-journal-bench`), then times `Journal::open`
//!   (checksums, head decode, index rebuild) and a full `read_all` decode of every event.
//!
//! - `restart [events]`: builds (once, in `$UC_BENCH_DIR/restart-<events>`) a ledger log of
//!   10,000 account openings then transfers between them, with a file snapshot of the ledger
//!   taken 100,000 events before the end, then times a restart: `Journal::open` plus
//!   `Engine::open_with_snapshot` (snapshot load, decode, tail replay), each part alone too.
//!   `restart <events> <end> <first>` runs rounds `first..end` only (even: without the
//!   journal's index checkpoint, odd: with it); at 10 M events one round per process keeps
//!   the peak memory to one ledger (`restart 10000000 1 0`, then `restart 10000000 2 1`).
//!
//! `cargo run --release -p ultracore-benches --bin journal -- append 16 128 2000000`
//! `cargo run --release -p ultracore-benches --bin journal -- scan 10000000`
//! `cargo run --release -p ultracore-benches --bin journal -- restart 10000000`
//! `cargo run --release -p ultracore-benches --bin journal -- open 10000000` (the journal
//! part of the restart log alone: 3 opens without, 3 with the index checkpoint)

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
// Linked for its global allocator: with `--features mimalloc` this binary runs on the server's
// optional allocator (the library sets it), which matters for the restart numbers.
use ultracore_benches as _;

use futures_executor::block_on;
use ultracore_core::engine::{Engine, EngineConfig, OpenedFrom};
use ultracore_core::event::{DomainEvent, Envelope, Trace};
use ultracore_core::ids::{AccountId, EntryId, EventId};
use ultracore_core::ledger::{
    AccountKind, Direction, Ledger, LedgerConfig, LedgerEvent, Metadata, Posting,
};
use ultracore_core::money::{Amount, Currency};
use ultracore_core::store::SnapshotStore;
use ultracore_core::store::{AppendBatch, EventStore};
use ultracore_core::time::ManualClock;
use ultracore_core::time::{EffectiveAt, RecordedAt, Timestamp};
use ultracore_journal::{FileSnapshotStore, Journal, JournalConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "append".into());
    let mut num = |default: u64| -> u64 {
        args.next()
            .and_then(|a| a.replace('_', "").parse().ok())
            .unwrap_or(default)
    };
    match mode.as_str() {
        "append" => {
            let appenders = num(16);
            let batch = num(128);
            let total = num(2_000_000);
            append(appenders as usize, batch, total);
        }
        "scan" => scan(num(10_000_000)),
        "encode" => encode(num(1_000_000)),
        "restart" => {
            let events = num(10_000_000);
            let rounds = num(4);
            let first = num(0);
            restart(events, first..rounds)
        }
        "open" => open_only(num(10_000_000)),
        other => eprintln!("unknown mode {other}: append | scan | encode | restart"),
    }
}

fn bench_dir() -> PathBuf {
    std::env::var_os("UC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/uc-journal-bench"))
}

/// The transfer event at `position`: an entry of two postings between two of 10,000
/// accounts, on its own entry stream (as the ledger writes them).
fn transfer_at(position: u64) -> Envelope<LedgerEvent> {
    let t = Timestamp::from_micros(1_767_225_600_000_000 + position as i64).expect("time");
    let a = position.wrapping_mul(2_654_435_761) % 10_000;
    let b = (a + 1 + position % 9_999) % 10_000;
    let amount =
        Amount::from_minor(1 + (position % 100_000) as i128, Currency::USD).expect("amount");
    let posting = |acct: u64, direction| Posting {
        account: AccountId::new(&format!("a{acct}")).expect("id"),
        direction,
        amount,
    };
    let payload = LedgerEvent::EntryPosted {
        id: EntryId::new(&format!("t{position}")).expect("id"),
        postings: Arc::from(vec![
            posting(a, Direction::Debit),
            posting(b, Direction::Credit),
        ]),
        effective_at: EffectiveAt(t),
        metadata: Metadata::new(),
        reversal_of: None,
        fingerprint: position.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    };
    Envelope {
        event_id: EventId::from_log_position(1, position),
        stream: payload.stream(),
        stream_version: 1,
        position,
        recorded_at: RecordedAt(t),
        effective_at: EffectiveAt(t),
        trace: Trace::default(),
        schema_version: <LedgerEvent as DomainEvent>::SCHEMA_VERSION,
        payload,
    }
}

fn batch_at(after: u64, n: u64) -> AppendBatch<LedgerEvent> {
    AppendBatch {
        expected_position: after,
        expectations: Vec::new(),
        events: (after + 1..=after + n).map(transfer_at).collect(),
    }
}

fn append(appenders: usize, batch: u64, total: u64) {
    let dir = bench_dir().join(format!("append-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let batches: Vec<AppendBatch<LedgerEvent>> = {
        let t = Instant::now();
        let v: Vec<_> = (0..total / batch)
            .map(|i| batch_at(i * batch, batch))
            .collect();
        eprintln!(
            "prepared {} batches of {batch} events in {:.1} s",
            v.len(),
            t.elapsed().as_secs_f64()
        );
        v
    };
    let events = batches.len() as u64 * batch;
    // `UC_PREALLOCATE_BYTES=0` compares with appends that grow the file.
    let config = JournalConfig {
        preallocate_bytes: std::env::var("UC_PREALLOCATE_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ultracore_journal::PREALLOCATE_BYTES_DEFAULT),
        ..JournalConfig::default()
    };
    let (journal, _) = Journal::<LedgerEvent>::open(&dir, config).expect("open");
    // Log order is submission order: each appender takes the next batch and submits it under
    // one lock (cheap: encoding and queueing), then waits for its sync outside the lock.
    let queue = Mutex::new(batches.into_iter());
    let start = Instant::now();
    let latencies = Mutex::new(Vec::new());
    let finished = Mutex::new(start);
    std::thread::scope(|s| {
        for _ in 0..appenders {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let (pending, t0) = {
                        let mut q = queue.lock().expect("lock");
                        let Some(b) = q.next() else { break };
                        (journal.submit(b), Instant::now())
                    };
                    block_on(pending).expect("durable append");
                    mine.push(t0.elapsed().as_micros() as u64);
                }
                latencies.lock().expect("lock").extend(mine);
                let mut f = finished.lock().expect("lock");
                *f = (*f).max(Instant::now());
            });
        }
        // Progress line (once a second; it does not hold up the measurement's end).
        s.spawn(|| {
            let mut ticks = 0;
            while journal.stats().events < events {
                std::thread::sleep(std::time::Duration::from_millis(20));
                ticks += 1;
                if ticks % 50 == 0 {
                    let st = journal.stats();
                    eprintln!("  {} events durable, {} syncs", st.events, st.syncs);
                }
            }
        });
    });
    let secs = finished
        .lock()
        .expect("lock")
        .duration_since(start)
        .as_secs_f64();
    let st = journal.stats();
    assert_eq!(st.events, events);
    assert_eq!(block_on(journal.last_position()), Ok(events));
    let mut lat = latencies.into_inner().expect("lock");
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "append: {appenders} appenders, {batch} events/batch, {events} events in {secs:.2} s = {:.0} events/s durable",
        events as f64 / secs
    );
    println!(
        "  {} syncs ({:.0}/s), {:.0} events and {:.1} appends per sync, {:.1} MB written ({:.0} B/event, {:.0} MB/s)",
        st.syncs,
        st.syncs as f64 / secs,
        st.events as f64 / st.syncs as f64,
        st.appends as f64 / st.syncs as f64,
        st.bytes as f64 / 1e6,
        st.bytes as f64 / st.events as f64,
        st.bytes as f64 / 1e6 / secs
    );
    println!(
        "  writer thread busy {:.2} s, of which write+fdatasync {:.2} s ({:.0} µs per sync, longest {} µs)",
        st.busy_micros as f64 / 1e6,
        st.sync_micros as f64 / 1e6,
        st.sync_micros as f64 / st.syncs as f64,
        st.sync_micros_max
    );
    println!(
        "  append latency (submit to durable ack) p50 {} µs, p99 {} µs, max {} µs",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    drop(journal);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Encoding alone (what each appender does on its own thread before queueing a batch).
fn encode(events: u64) {
    let batches: Vec<_> = (0..events / 128).map(|i| batch_at(i * 128, 128)).collect();
    let t = Instant::now();
    let mut bytes = 0;
    for b in &batches {
        bytes += ultracore_journal::codec::encode_record(&b.events)
            .expect("encodes")
            .frame
            .len();
    }
    let secs = t.elapsed().as_secs_f64();
    let n = batches.len() as f64 * 128.0;
    println!(
        "encode: {n} events in {secs:.2} s = {:.0} events/s ({:.0} ns/event, {:.0} B/event)",
        n / secs,
        secs * 1e9 / n,
        bytes as f64 / n
    );
}

fn scan(events: u64) {
    let dir = bench_dir().join(format!("scan-{events}"));
    let done = dir.join("complete");
    if !done.exists() {
        build(&dir, events);
        std::fs::write(&done, b"").expect("mark");
    }
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    for round in 0..2 {
        let t = Instant::now();
        let (journal, report) =
            Journal::<LedgerEvent>::open(&dir, JournalConfig::default()).expect("open");
        let open_secs = t.elapsed().as_secs_f64();
        assert_eq!(report.events, events);
        let t = Instant::now();
        let mut after = 0;
        loop {
            let page = block_on(journal.read_all(after, 10_000)).expect("read");
            let Some(last) = page.last() else { break };
            after = last.position;
        }
        let read_secs = t.elapsed().as_secs_f64();
        assert_eq!(after, events);
        println!(
            "scan round {round}: {events} events, {:.0} MB in {} segments",
            bytes as f64 / 1e6,
            report.segments
        );
        println!(
            "  open (checksums + head decode + index): {open_secs:.2} s = {:.0} events/s ({:.0} ns/event)",
            events as f64 / open_secs,
            open_secs * 1e9 / events as f64
        );
        println!(
            "  read_all, full decode of every event: {read_secs:.2} s = {:.0} events/s ({:.0} ns/event)",
            events as f64 / read_secs,
            read_secs * 1e9 / events as f64
        );
    }
}

fn build(dir: &PathBuf, events: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let (journal, _) = Journal::<LedgerEvent>::open(dir, JournalConfig::default()).expect("open");
    let t = Instant::now();
    let batch = 4_096;
    let mut in_flight = std::collections::VecDeque::new();
    let mut after = 0;
    while after < events {
        let n = batch.min(events - after);
        in_flight.push_back(journal.submit(batch_at(after, n)));
        after += n;
        if in_flight.len() >= 8 {
            block_on(in_flight.pop_front().expect("queued")).expect("append");
        }
        if after % 1_000_000 < n {
            eprintln!(
                "building: {after} / {events} events ({:.0} s)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    for p in in_flight {
        block_on(p).expect("append");
    }
    eprintln!(
        "built {events} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Accounts of the restart log.
const RESTART_ACCOUNTS: u64 = 10_000;
/// Events after the snapshot in the restart log.
const RESTART_TAIL: u64 = 100_000;

fn time_at(position: u64) -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000 + position as i64).expect("time")
}

/// The event at `position` of a log the ledger accepts: account `a{p-1}` opened at positions
/// 1..=10,000, then `transfer_at`'s transfers between those accounts.
fn ledger_event_at(position: u64) -> Envelope<LedgerEvent> {
    if position > RESTART_ACCOUNTS {
        return transfer_at(position);
    }
    let t = time_at(position);
    let payload = LedgerEvent::AccountOpened {
        id: AccountId::new(&format!("a{}", position - 1)).expect("id"),
        currency: Currency::USD,
        kind: AccountKind::Asset,
        owner: None,
        branch: None,
        constraints: Box::default(),
        metadata: Metadata::new(),
        opened_at: EffectiveAt(time_at(0)),
        fingerprint: position,
    };
    Envelope {
        event_id: EventId::from_log_position(0, position),
        stream: payload.stream(),
        stream_version: 1,
        position,
        recorded_at: RecordedAt(t),
        effective_at: EffectiveAt(t),
        trace: Trace::default(),
        schema_version: <LedgerEvent as DomainEvent>::SCHEMA_VERSION,
        payload,
    }
}

/// Appends the ledger log's events `after+1..=upto` in pipelined batches of 4,096.
fn append_ledger_log(journal: &Journal<LedgerEvent>, mut after: u64, upto: u64) {
    let t = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    while after < upto {
        let n = 4_096.min(upto - after);
        let batch = AppendBatch {
            expected_position: after,
            expectations: Vec::new(),
            events: (after + 1..=after + n).map(ledger_event_at).collect(),
        };
        in_flight.push_back(journal.submit(batch));
        after += n;
        if in_flight.len() >= 8 {
            block_on(in_flight.pop_front().expect("queued")).expect("append");
        }
        if after % 1_000_000 < n {
            eprintln!(
                "  building: {after} / {upto} events ({:.0} s)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    for p in in_flight {
        block_on(p).expect("append");
    }
}

fn restart(events: u64, rounds: std::ops::Range<u64>) {
    assert!(
        events > RESTART_ACCOUNTS + RESTART_TAIL,
        "at least 110,001 events"
    );
    let dir = bench_dir().join(format!("restart-{events}"));
    let (log, snaps) = (dir.join("journal"), dir.join("snapshots"));
    let done = dir.join("complete");
    let clock = Arc::new(ManualClock::new(time_at(events + 1_000_000)));
    let config = EngineConfig::default();
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        let at_snapshot = events - RESTART_TAIL;
        {
            let (journal, _) = Journal::open(&log, JournalConfig::default()).expect("open");
            append_ledger_log(&journal, 0, at_snapshot);
        }
        eprintln!("  replaying {at_snapshot} events to take the snapshot");
        let (journal, _) = Journal::open(&log, JournalConfig::default()).expect("open");
        let engine =
            block_on(Engine::open(journal, clock.clone(), config.clone())).expect("replay");
        let store = FileSnapshotStore::open(&snaps).expect("snapshots");
        let covered = block_on(engine.save_snapshot(&store)).expect("snapshot");
        assert_eq!(covered, at_snapshot);
        // The journal's index checkpoint goes with the ledger snapshot.
        assert_eq!(
            engine.store().checkpoint().expect("checkpoint"),
            at_snapshot
        );
        drop(engine);
        let (journal, _) = Journal::open(&log, JournalConfig::default()).expect("open");
        append_ledger_log(&journal, at_snapshot, events);
        drop(journal);
        std::fs::write(&done, b"").expect("mark");
        eprintln!("built in {:.1} s", t.elapsed().as_secs_f64());
    }
    let dir_bytes = |d: &PathBuf| -> u64 {
        std::fs::read_dir(d)
            .expect("dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    println!(
        "restart: {events} events ({:.0} MB of journal), snapshot at {} ({:.0} MB), {RESTART_TAIL} events after it",
        dir_bytes(&log) as f64 / 1e6,
        events - RESTART_TAIL,
        dir_bytes(&snaps) as f64 / 1e6
    );
    let store = FileSnapshotStore::open(&snaps).expect("snapshots");
    let cp = log.join("index.checkpoint");
    let aside = log.join("index.checkpoint.aside");
    if !cp.exists() && aside.exists() {
        // A run stopped between moving the checkpoint aside and back.
        std::fs::rename(&aside, &cp).expect("back");
    }
    if !cp.exists() {
        // A log built before checkpoints existed: checkpoint it now (it then covers every
        // event; the report below says which position it covers).
        let (journal, _) =
            Journal::<LedgerEvent>::open(&log, JournalConfig::default()).expect("open");
        journal.checkpoint().expect("checkpoint");
    }
    for round in rounds {
        // Even rounds without the index checkpoint (moved aside), odd ones with it.
        if round % 2 == 0 && cp.exists() {
            std::fs::rename(&cp, &aside).expect("aside");
        } else if round % 2 == 1 && aside.exists() {
            std::fs::rename(&aside, &cp).expect("back");
        }
        // The parts alone.
        let t = Instant::now();
        let snap = block_on(store.load("ledger-0"))
            .expect("load")
            .expect("a snapshot");
        let load = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ledger =
            Ledger::decode_snapshot(LedgerConfig::default(), &snap.bytes).expect("decodes");
        let decode = t.elapsed().as_secs_f64();
        let folded = ledger.position();
        drop((ledger, snap));
        // The whole restart as the server does it: the snapshot loads and decodes on a
        // second thread while this one opens the journal; then the tail replays onto it.
        let start = Instant::now();
        eprintln!("  round {round}: opening the journal while the snapshot decodes...");
        let (snapshot, (journal, report), open) = std::thread::scope(|s| {
            let decoding = s.spawn(|| {
                block_on(Engine::<Journal<LedgerEvent>>::load_snapshot(
                    &store, &config,
                ))
            });
            let opened = Journal::open(&log, JournalConfig::default()).expect("open");
            let open = start.elapsed().as_secs_f64();
            (decoding.join().expect("decoder thread"), opened, open)
        });
        assert_eq!(report.events, events);
        eprintln!(
            "  journal open in {open:.2} s, snapshot ready at {:.2} s; replaying the tail...",
            start.elapsed().as_secs_f64()
        );
        let (engine, from) = block_on(Engine::open_from(
            journal,
            snapshot,
            clock.clone(),
            config.clone(),
        ))
        .expect("engine opens");
        let total = start.elapsed().as_secs_f64();
        assert_eq!(
            from,
            OpenedFrom::Snapshot {
                position: events - RESTART_TAIL
            }
        );
        let position = block_on(engine.read(|l| l.position()));
        assert_eq!(position, events);
        let engine_secs = total - open;
        println!(
            "round {round} ({}): restart {total:.2} s = journal open {open:.2} s (snapshot decoding alongside) + {engine_secs:.2} s more until the engine is up",
            match report.checkpoint {
                Some(p) => format!("index checkpoint at {p}"),
                None => "no index checkpoint: full scan".into(),
            }
        );
        println!(
            "  parts alone: snapshot file load + CRC {load:.2} s, Ledger::decode_snapshot {decode:.2} s ({:.0} ns per folded event)",
            decode * 1e9 / folded as f64,
        );
        drop(engine);
    }
}

/// `Journal::open` of the restart log alone, alternating without and with its checkpoint.
fn open_only(events: u64) {
    let log = bench_dir()
        .join(format!("restart-{events}"))
        .join("journal");
    let (cp, aside) = (
        log.join("index.checkpoint"),
        log.join("index.checkpoint.aside"),
    );
    if !cp.exists() && !aside.exists() {
        let (journal, _) =
            Journal::<LedgerEvent>::open(&log, JournalConfig::default()).expect("open");
        let t = Instant::now();
        let at = journal.checkpoint().expect("checkpoint");
        println!(
            "checkpoint at {at} written in {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    for round in 0..6 {
        if round % 2 == 0 && cp.exists() {
            std::fs::rename(&cp, &aside).expect("aside");
        } else if round % 2 == 1 && aside.exists() {
            std::fs::rename(&aside, &cp).expect("back");
        }
        let t = Instant::now();
        let (journal, report) =
            Journal::<LedgerEvent>::open(&log, JournalConfig::default()).expect("open");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(report.events, events);
        println!(
            "open round {round}: {secs:.2} s ({:.0} ns/event), checkpoint {:?}",
            secs * 1e9 / events as f64,
            report.checkpoint
        );
        drop(journal);
    }
}
