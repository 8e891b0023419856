//! Crash test: a child process (this test binary, re-executed with `UC_JOURNAL_CRASH_DIR`)
//! appends from several threads and prints `ACK first last` after each append returns; the
//! parent kills it with SIGKILL at a random moment, reopens the journal and checks that every
//! acknowledged batch is there, every event is the one written at its position, and no batch
//! is there in part.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_executor::block_on;
use support::{batch, batch_of, event_at};
use ultracore_core::store::EventStore;
use ultracore_journal::{Journal, JournalConfig};

const CHILD_ENV: &str = "UC_JOURNAL_CRASH_DIR";
const THREADS: u64 = 6;

/// The child's work. Runs only when re-executed by `acknowledged_appends_survive_sigkill`;
/// as a plain test it returns at once.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("UC_JOURNAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let config = JournalConfig {
        segment_size_max: 256 << 10, // rollovers happen during the run
        ..JournalConfig::default()
    };
    let (journal, _) = Journal::open(Path::new(&dir), config).expect("child opens");
    // Submission order = position order: a sequencer hands out positions and submits under
    // its lock, and the writer keeps that order; the waits for durability overlap.
    let sequencer = Mutex::new((0u64, seed));
    let deadline = Instant::now() + Duration::from_secs(30);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while Instant::now() < deadline {
                    let (pending, first, last) = {
                        let mut g = sequencer.lock().expect("lock");
                        g.1 =
                            g.1.wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                        let n = 1 + (g.1 >> 33) % 40;
                        let after = g.0;
                        g.0 += n;
                        (journal.submit(batch(after, n)), after + 1, after + n)
                    };
                    block_on(pending).expect("child append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {first} {last}").expect("stdout");
                    out.flush().expect("flush");
                }
            });
        }
    });
}

fn run_once(seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .env("UC_JOURNAL_CRASH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let acks = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let stdout = child.stdout.take().expect("stdout");
    let reader = {
        let acks = acks.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ACK") {
                    continue;
                }
                let first = parts.next().and_then(|s| s.parse().ok()).expect("first");
                let last = parts.next().and_then(|s| s.parse().ok()).expect("last");
                acks.lock().expect("lock").push((first, last));
            }
        })
    };
    // Wait for the child to be under way, then kill it after a random delay.
    let start = Instant::now();
    while acks.lock().expect("lock").len() < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "seed {seed}: child never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(seed % 400));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    reader.join().expect("reader");
    let acks = acks.lock().expect("lock").clone();

    let (journal, report) = Journal::<ultracore_core::ledger::LedgerEvent>::open(
        dir.path(),
        JournalConfig {
            segment_size_max: 256 << 10,
            ..JournalConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
    let last = block_on(journal.last_position()).expect("position");
    let max_ack = acks.iter().map(|a| a.1).max().expect("acks");
    assert!(
        last >= max_ack,
        "seed {seed}: acknowledged up to {max_ack}, recovered {last} ({report:?})"
    );
    let mut position = 0;
    while position < last {
        let page = block_on(journal.read_all(position, 10_000)).expect("read");
        for e in page {
            position += 1;
            assert_eq!(e.position, position);
            let (first, end) = batch_of(&e);
            assert!(
                end <= last,
                "seed {seed}: batch {first}..={end} is there only up to {last}"
            );
            assert_eq!(
                e,
                event_at(position, first, end),
                "seed {seed}: event {position}"
            );
        }
    }
    eprintln!(
        "seed {seed}: {} acks up to {max_ack}, recovered {last} events in {} segments, torn tail: {:?}",
        acks.len(),
        report.segments,
        report.torn_tail.as_ref().map(|t| t.bytes_discarded)
    );
    for (first, end) in acks {
        let got = block_on(journal.read_all(first - 1, (end - first + 1) as usize)).expect("read");
        assert_eq!(
            got.len() as u64,
            end - first + 1,
            "seed {seed}: ack {first}..={end}"
        );
        assert!(got.iter().all(|e| batch_of(e) == (first, end)));
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    for i in 0..3 {
        let seed = base.wrapping_add(i * 7919);
        eprintln!("crash seed {seed}");
        run_once(seed);
    }
}
