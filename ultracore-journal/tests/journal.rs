//! The journal as an `EventStore`: core's contract suite, reopening, group commit, rollover,
//! and recovery from torn tails and from damage (which must stop open, naming file and offset).

mod support;

use std::fs;
use std::path::Path;
use std::sync::Mutex;

use futures_executor::block_on;
use support::{batch, event_at, open, open_with, segments};
use ultracore_core::event::Envelope;
use ultracore_core::ledger::LedgerEvent;
use ultracore_core::store::{EventStore, StoreError};
use ultracore_core::testing::contract::event_store_contract;
use ultracore_journal::{codec, Journal, JournalConfig, JournalError};

fn all(j: &Journal<LedgerEvent>) -> Vec<Envelope<LedgerEvent>> {
    let mut out: Vec<Envelope<LedgerEvent>> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.position);
        let page = block_on(j.read_all(after, 10_000)).expect("read_all");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Appends batches of these sizes; returns every event written.
fn fill(j: &Journal<LedgerEvent>, sizes: &[u64]) -> Vec<Envelope<LedgerEvent>> {
    let mut at = block_on(j.last_position()).expect("position");
    let mut written = Vec::new();
    for &n in sizes {
        let b = batch(at, n);
        written.extend(b.events.clone());
        let r = block_on(j.append(b)).expect("append");
        assert_eq!(r.last_position, at + n);
        at += n;
    }
    written
}

#[test]
fn journal_passes_the_store_contract() {
    let dirs = Mutex::new(Vec::new());
    block_on(event_store_contract(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = open(dir.path());
        dirs.lock().expect("lock").push(dir);
        j
    }));
}

#[test]
fn journal_reopened_passes_the_store_contract() {
    // Every check runs on a journal that was created, closed and opened again, so the
    // recovery scan's index (not only the writer's) answers the contract.
    let dirs = Mutex::new(Vec::new());
    block_on(event_store_contract(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        let (j, report) = open(dir.path());
        assert_eq!(report.events, 0);
        dirs.lock().expect("lock").push(dir);
        j
    }));
}

#[test]
fn reopen_gives_the_same_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, report) = open(dir.path());
    assert_eq!(report.events, 0);
    let written = fill(&j, &[1, 5, 40, 3, 200]);
    assert_eq!(all(&j), written);
    drop(j);
    let (j, report) = open(dir.path());
    assert_eq!(report.events, written.len() as u64);
    assert_eq!(report.records, 5);
    assert_eq!(report.torn_tail, None);
    assert_eq!(all(&j), written);
    assert_eq!(block_on(j.last_position()), Ok(written.len() as u64));
    // Streams are indexed again at open: versions continue, reads by stream agree.
    let stream = written[0].stream.clone();
    let by_stream = block_on(j.read_stream(&stream, 1, 1_000)).expect("read_stream");
    let want: Vec<_> = written
        .iter()
        .filter(|e| e.stream == stream)
        .cloned()
        .collect();
    assert_eq!(by_stream, want);
    let more = fill(&j, &[7]);
    drop(j);
    let (j, _) = open(dir.path());
    assert_eq!(all(&j), [written, more].concat());
}

#[test]
fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    // Pipelined submits: each expects the position the previous one will reach, so all are
    // valid, and they queue up while the writer syncs.
    let mut pending = Vec::new();
    let mut at = 0;
    for i in 0..200 {
        let n = 1 + i % 4;
        pending.push(j.submit(batch(at, n)));
        at += n;
    }
    for p in pending {
        block_on(p).expect("append");
    }
    let stats = j.stats();
    assert_eq!(stats.appends, 200);
    assert_eq!(stats.events, at);
    assert!(
        stats.syncs < 100,
        "200 queued appends took {} syncs: no group commit",
        stats.syncs
    );
    assert_eq!(all(&j).len() as u64, at);
}

#[test]
fn a_refused_batch_in_a_group_does_not_stop_the_next_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    let first = j.submit(batch(0, 2));
    let stale = j.submit(batch(0, 1)); // fenced: the log will be at 2
    let next = j.submit(batch(2, 3));
    assert!(block_on(first).is_ok());
    assert_eq!(
        block_on(stale),
        Err(StoreError::PositionConflict {
            expected: 0,
            actual: 2
        })
    );
    assert_eq!(block_on(next).map(|r| r.last_position), Ok(5));
    drop(j);
    let (j, _) = open(dir.path());
    assert_eq!(all(&j).len(), 5);
}

#[test]
fn segments_roll_over_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig {
        segment_size_max: 4096,
        ..JournalConfig::default()
    };
    let (j, _) = open_with(dir.path(), config.clone());
    let sizes: Vec<u64> = (0..60).map(|i| 1 + i % 7).collect();
    let written = fill(&j, &sizes);
    let files = segments(dir.path());
    assert!(files.len() > 3, "only {} segments", files.len());
    for f in &files[..files.len() - 1] {
        assert!(fs::metadata(f).expect("meta").len() <= 4096);
    }
    assert_eq!(all(&j), written);
    drop(j);
    let (j, report) = open_with(dir.path(), config);
    assert_eq!(report.segments, files.len());
    assert_eq!(all(&j), written);
    // A batch that straddles no boundary is found whole in one segment after reopening.
    let r = block_on(j.read_all(100, 50)).expect("read");
    assert_eq!(r, written[100..150].to_vec());
}

/// Length of the segment before and after appending one more batch of `n` events.
/// Where the records of a segment file end: the file may go on with preallocated zeros.
fn data_end(file: &Path) -> u64 {
    let bytes = fs::read(file).expect("read");
    let mut at = ultracore_journal::segment::SEGMENT_HEADER_LEN;
    while let Ok(frame) = codec::check_frame(&bytes[at..]) {
        at += frame.len;
    }
    at as u64
}

/// Appends one batch of `n` events; returns the byte range of its record in the first segment.
fn last_record_bounds(dir: &Path, j: &Journal<LedgerEvent>, n: u64) -> (u64, u64) {
    let file = &segments(dir)[0];
    let before = data_end(file);
    fill(j, &[n]);
    let after = data_end(file);
    assert!(after > before, "the batch was written to the first segment");
    (before, after)
}

/// The layouts a segment can have on disk: grown by each append, or preallocated with zeros.
fn layouts() -> [(&'static str, JournalConfig); 2] {
    [
        (
            "growing",
            JournalConfig {
                preallocate_bytes: 0,
                ..JournalConfig::default()
            },
        ),
        ("preallocated", JournalConfig::default()),
    ]
}

#[test]
fn torn_tail_is_truncated_and_reported_at_every_byte_offset_of_the_last_record() {
    for (layout, config) in layouts() {
        torn_tail_at_every_byte_offset(layout, config);
    }
}

/// A crash mid-write into a grown file leaves the file cut short; into preallocated space it
/// leaves the record's first bytes followed by the zeros the write did not reach.
fn torn_tail_at_every_byte_offset(layout: &str, config: JournalConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), config.clone());
    let kept = fill(&j, &[3, 4]);
    let (start, end) = last_record_bounds(dir.path(), &j, 5);
    drop(j);
    let file = segments(dir.path())[0].clone();
    let full = fs::read(&file).expect("read");
    if layout == "growing" {
        assert_eq!(full.len() as u64, end);
    } else {
        assert!(
            full.len() as u64 > end,
            "zeros preallocated after the records"
        );
    }
    for cut in start..end {
        let mut torn_file = full.clone();
        if layout == "growing" {
            torn_file.truncate(cut as usize);
        } else {
            torn_file[cut as usize..end as usize].fill(0);
        }
        fs::write(&file, &torn_file).expect("write");
        let (j, report) = open_with(dir.path(), config.clone());
        let torn = report.torn_tail.clone();
        // What the crash left of the record: up to its last non-zero byte (a record whose
        // first bytes are zeros and nothing else is indistinguishable from unwritten space).
        let left = full[start as usize..cut as usize]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i as u64 + 1);
        if cut == start || (layout == "preallocated" && left == 0) {
            assert_eq!(
                torn, None,
                "{layout}, cut at {cut}: nothing of the record is there"
            );
        } else {
            let torn =
                torn.unwrap_or_else(|| panic!("{layout}, cut at {cut}: no torn tail reported"));
            assert_eq!(torn.offset, start, "{layout}, cut at {cut}");
            assert_eq!(torn.bytes_discarded, left, "{layout}, cut at {cut}");
            assert_eq!(torn.file, file);
            assert_eq!(fs::metadata(&file).expect("meta").len(), start);
        }
        assert_eq!(
            all(&j),
            kept,
            "{layout}, cut at {cut}: the whole last batch is gone"
        );
        assert_eq!(data_end(&file), start);
        // The journal goes on from the truncated end.
        assert_eq!(
            block_on(j.append(batch(7, 1))).map(|r| r.last_position),
            Ok(8)
        );
        drop(j);
    }
}

#[test]
fn a_last_record_that_fails_its_checksum_is_a_torn_tail() {
    for (layout, config) in layouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = open_with(dir.path(), config.clone());
        let kept = fill(&j, &[2]);
        let (start, end) = last_record_bounds(dir.path(), &j, 4);
        drop(j);
        let file = segments(dir.path())[0].clone();
        let mut bytes = fs::read(&file).expect("read");
        bytes[(end - 3) as usize] ^= 0x10; // inside the body of the last record
        fs::write(&file, &bytes).expect("write");
        let (j, report) = open_with(dir.path(), config);
        let torn = report.torn_tail.expect("reported");
        assert_eq!(
            (torn.offset, torn.bytes_discarded),
            (start, end - start),
            "{layout}"
        );
        assert_eq!(all(&j), kept, "{layout}");
    }
}

#[test]
fn zeros_after_the_records_end_the_log_and_are_written_over() {
    // Zeros after the last record are preallocated space (or space a file system allocated
    // when the file grew and whose data never landed before a crash): the log ends there,
    // nothing is discarded, and appends go on at the end of the records.
    for (layout, config) in layouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = open_with(dir.path(), config.clone());
        let mut kept = fill(&j, &[2, 2]);
        drop(j);
        let file = segments(dir.path())[0].clone();
        let mut bytes = fs::read(&file).expect("read");
        let end = data_end(&file);
        bytes.extend_from_slice(&[0u8; 300]);
        fs::write(&file, &bytes).expect("write");
        let (j, report) = open_with(dir.path(), config.clone());
        assert_eq!(report.torn_tail, None, "{layout}");
        assert_eq!(report.bytes, end, "{layout}");
        assert_eq!(all(&j), kept, "{layout}");
        kept.extend(fill(&j, &[3]));
        drop(j);
        assert!(
            data_end(&file) > end,
            "{layout}: written at the end of the records"
        );
        let (j, report) = open_with(dir.path(), config);
        assert_eq!(report.torn_tail, None, "{layout}");
        assert_eq!(all(&j), kept, "{layout}");
    }
}

#[test]
fn a_torn_record_followed_by_preallocated_zeros_is_cut_and_the_log_goes_on() {
    // A group write of several records into preallocated space, of which only the first
    // bytes landed: the torn record is cut, and the journal writes over the space again.
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    let kept = fill(&j, &[2]);
    let (start, end) = last_record_bounds(dir.path(), &j, 50);
    drop(j);
    let file = segments(dir.path())[0].clone();
    let mut bytes = fs::read(&file).expect("read");
    let mid = ((start + end) / 2) as usize;
    bytes[mid..end as usize].fill(0);
    fs::write(&file, &bytes).expect("write");
    let (j, report) = open(dir.path());
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(start));
    assert_eq!(all(&j), kept);
    let more = fill(&j, &[7]);
    drop(j);
    let (j, report) = open(dir.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(all(&j), [kept, more].concat());
}

fn expect_corrupt(dir: &Path, config: JournalConfig) -> (std::path::PathBuf, u64, String) {
    match Journal::<LedgerEvent>::open(dir, config) {
        Err(e @ JournalError::Corrupt { .. }) => {
            assert_eq!(e.code(), "journal_corrupt");
            let msg = e.to_string();
            match e {
                JournalError::Corrupt { file, offset, .. } => (file, offset, msg),
                _ => unreachable!(),
            }
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("a damaged journal opened"),
    }
}

#[test]
fn a_bit_flip_in_the_middle_stops_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    fill(&j, &[3]);
    let (start, end) = last_record_bounds(dir.path(), &j, 4);
    fill(&j, &[2]);
    drop(j);
    let file = segments(dir.path())[0].clone();
    let pristine = fs::read(&file).expect("read");
    // Every byte of the middle record: header (length, checksums) and body.
    for at in start..end {
        let mut bytes = pristine.clone();
        bytes[at as usize] ^= 0x01;
        fs::write(&file, &bytes).expect("write");
        let (f, offset, msg) = expect_corrupt(dir.path(), JournalConfig::default());
        assert_eq!(f, file, "flip at {at}");
        assert_eq!(offset, start, "flip at {at}: the damaged record's offset");
        assert!(msg.contains(&file.display().to_string()) && msg.contains(&start.to_string()));
        // Nothing was changed on disk by the failed open.
        assert_eq!(fs::read(&file).expect("read"), bytes);
    }
    fs::write(&file, &pristine).expect("write");
    assert_eq!(open(dir.path()).1.events, 9);
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_never_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig {
        segment_size_max: 4096,
        ..JournalConfig::default()
    };
    let (j, _) = open_with(dir.path(), config.clone());
    fill(&j, &vec![5; 40]);
    drop(j);
    let files = segments(dir.path());
    assert!(files.len() >= 2);
    // Cut the end of the first segment's last record: in the last segment this would be a
    // torn tail.
    let first = &files[0];
    let bytes = fs::read(first).expect("read");
    let end = data_end(first) as usize;
    fs::write(first, &bytes[..end - 10]).expect("write");
    let (f, _, _) = expect_corrupt(dir.path(), config.clone());
    assert_eq!(&f, first);
    fs::write(first, &bytes).expect("restore");
    // A missing segment in the middle is refused too.
    fs::remove_file(&files[1]).expect("remove");
    let (f, _, msg) = expect_corrupt(dir.path(), config);
    assert!(msg.contains("missing"), "{msg}");
    assert_eq!(f, files[2]);
}

#[test]
fn a_header_bit_flip_stops_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    fill(&j, &[2]);
    drop(j);
    let file = segments(dir.path())[0].clone();
    let mut bytes = fs::read(&file).expect("read");
    bytes[17] ^= 0x04; // the segment's first position
    fs::write(&file, &bytes).expect("write");
    let (f, offset, _) = expect_corrupt(dir.path(), JournalConfig::default());
    assert_eq!((f, offset), (file.clone(), 0));
    bytes[17] ^= 0x04;
    bytes[8] = 9; // a format version from the future
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    fs::write(&file, &bytes).expect("write");
    match Journal::<LedgerEvent>::open(dir.path(), JournalConfig::default()) {
        Err(JournalError::UnsupportedFormat { found: 9, .. }) => {}
        Err(e) => panic!("expected UnsupportedFormat, got {e}"),
        Ok(_) => panic!("opened a future format"),
    }
}

#[test]
fn multi_event_batch_is_atomic_across_a_crash() {
    // One engine batch of many events is one record: cutting the file anywhere inside it
    // (what a crash mid-write leaves) loses the whole batch, never a prefix of it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    let kept = fill(&j, &[10]);
    let (start, end) = last_record_bounds(dir.path(), &j, 1_000);
    drop(j);
    let file = segments(dir.path())[0].clone();
    let full = fs::read(&file).expect("read");
    for cut in [
        start + 1,
        start + 12,
        start + 500,
        (start + end) / 2,
        end - 1,
    ] {
        fs::write(&file, &full[..cut as usize]).expect("write");
        let (j, report) = open(dir.path());
        assert!(report.torn_tail.is_some());
        let got = all(&j);
        assert_eq!(got, kept, "cut at {cut} left part of the batch");
    }
    fs::write(&file, &full).expect("write");
    let (j, _) = open(dir.path());
    assert_eq!(all(&j).len(), 1_010);
    assert_eq!(all(&j)[1_009], event_at(1_010, 11, 1_010));
}

#[test]
fn wait_for_wakes_on_commit_from_another_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| block_on(j.wait_for(0)));
        std::thread::sleep(std::time::Duration::from_millis(50));
        block_on(j.append(batch(0, 1))).expect("append");
        assert_eq!(waiter.join().expect("join"), Ok(()));
    });
}

#[test]
fn a_wrong_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    let mut b = batch(0, 2);
    b.events[1].schema_version = 99;
    assert!(matches!(
        block_on(j.append(b)),
        Err(StoreError::InvalidBatch(_))
    ));
    assert_eq!(block_on(j.last_position()), Ok(0));
}

/// A journal whose stream hash keeps no bits at all: every stream collides with every other,
/// so each lookup must tell streams apart by the names stored in the log.
fn colliding() -> JournalConfig {
    JournalConfig {
        stream_hash_mask: 0,
        ..JournalConfig::default()
    }
}

#[test]
fn every_stream_colliding_still_passes_the_store_contract_before_and_after_reopen() {
    let dirs = Mutex::new(Vec::new());
    block_on(event_store_contract(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = open_with(dir.path(), colliding());
        dirs.lock().expect("lock").push(dir);
        j
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), colliding());
    let written = fill(&j, &[1, 5, 40, 3, 20]);
    drop(j);
    let (j, report) = open_with(dir.path(), colliding());
    assert_eq!(report.events, written.len() as u64);
    // Every stream reads back exactly its own events, and versions continue after reopen.
    let mut streams: Vec<_> = written.iter().map(|e| e.stream.clone()).collect();
    streams.dedup();
    for s in &streams {
        let want: Vec<_> = written.iter().filter(|e| &e.stream == s).cloned().collect();
        assert_eq!(block_on(j.read_stream(s, 1, 1_000)).expect("read"), want);
    }
    let more = fill(&j, &[50]);
    assert_eq!(all(&j), [written, more].concat());
}

fn small_segments() -> JournalConfig {
    JournalConfig {
        segment_size_max: 4096,
        ..JournalConfig::default()
    }
}

/// Everything a reader can see: the whole log and every stream read by name.
fn observed(
    j: &Journal<LedgerEvent>,
) -> (Vec<Envelope<LedgerEvent>>, Vec<Vec<Envelope<LedgerEvent>>>) {
    let log = all(j);
    let mut names: Vec<_> = log.iter().map(|e| e.stream.clone()).collect();
    names.sort_by_key(|s| s.to_string());
    names.dedup();
    let streams = names
        .iter()
        .map(|s| block_on(j.read_stream(s, 1, 10_000)).expect("read_stream"))
        .collect();
    (log, streams)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("dir") {
        let e = e.expect("entry");
        fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn an_index_checkpoint_is_used_and_answers_like_a_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), small_segments());
    fill(&j, &[1, 5, 40, 3, 200, 7, 60]);
    let covered = j.checkpoint().expect("checkpoint");
    assert_eq!(covered, 316);
    fill(&j, &[9, 100, 2]); // after the checkpoint: decoded at open
    drop(j);
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.checkpoint, Some(316));
    assert_eq!(report.checkpoint_ignored, None);
    assert_eq!(report.events, 427);
    let with_checkpoint = observed(&j);
    // Stream versions carry on from the checkpoint's index (the generator's streams recur).
    let more = fill(&j, &[30]);
    drop(j);
    fs::remove_file(dir.path().join("index.checkpoint")).expect("remove");
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.checkpoint, None);
    let (log, streams) = observed(&j);
    assert_eq!(log[..427], with_checkpoint.0[..]);
    assert_eq!(log[427..], more[..]);
    assert_eq!(streams.iter().map(Vec::len).sum::<usize>(), 457);
    assert!(with_checkpoint.1.iter().all(|s| !s.is_empty()));
}

#[test]
fn a_damaged_checkpoint_is_ignored_and_the_log_is_scanned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), small_segments());
    fill(&j, &[10, 20, 30]);
    j.checkpoint().expect("checkpoint");
    let want = observed(&j);
    drop(j);
    let path = dir.path().join("index.checkpoint");
    let len = fs::metadata(&path).expect("meta").len() as usize;
    for at in [0, 9, 40, len / 2, len - 1] {
        let mut b = fs::read(&path).expect("read");
        let good = b.clone();
        b[at] ^= 0x10;
        fs::write(&path, &b).expect("write");
        let (j, report) = open_with(dir.path(), small_segments());
        assert_eq!(report.checkpoint, None, "flip at {at}");
        assert!(report.checkpoint_ignored.is_some(), "flip at {at}");
        assert_eq!(observed(&j), want);
        drop(j);
        fs::write(&path, &good).expect("restore");
    }
    let (_, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.checkpoint, Some(60));
}

#[test]
fn a_checkpoint_ahead_of_the_log_or_of_another_log_is_never_used() {
    // Ahead: a copy of the directory taken before the checkpoint's last events.
    let dir = tempfile::tempdir().expect("tempdir");
    let earlier = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), small_segments());
    fill(&j, &[10, 20]);
    copy_dir(dir.path(), earlier.path());
    fill(&j, &[5]);
    j.checkpoint().expect("checkpoint");
    drop(j);
    fs::copy(
        dir.path().join("index.checkpoint"),
        earlier.path().join("index.checkpoint"),
    )
    .expect("copy");
    let (j, report) = open_with(earlier.path(), small_segments());
    assert_eq!(report.checkpoint, None);
    assert!(report.checkpoint_ignored.is_some());
    assert_eq!(report.events, 30);
    assert_eq!(all(&j).len(), 30);
    drop(j);

    // Another log with exactly the same layout (same sizes, so the same locations) but other
    // bytes: the checksum fold tells them apart.
    let other = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(other.path(), small_segments());
    let mut at = 0;
    for n in [10, 20, 5] {
        let mut b = batch(at, n);
        for e in &mut b.events {
            if e.trace.actor.is_some() {
                e.trace.actor = Some("TESTER".into()); // same length, other bytes
            }
        }
        block_on(j.append(b)).expect("append");
        at += n;
    }
    let want = observed(&j);
    drop(j);
    fs::copy(
        dir.path().join("index.checkpoint"),
        other.path().join("index.checkpoint"),
    )
    .expect("copy");
    let (j, report) = open_with(other.path(), small_segments());
    assert_eq!(report.checkpoint, None);
    assert!(report.checkpoint_ignored.is_some());
    assert_eq!(observed(&j), want);
}

#[test]
fn a_checkpoint_with_colliding_hashes_is_exact_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), colliding());
    fill(&j, &[3, 40, 7]);
    j.checkpoint().expect("checkpoint");
    fill(&j, &[11]);
    let want = observed(&j);
    drop(j);
    let (j, report) = open_with(dir.path(), colliding());
    assert_eq!(report.checkpoint, Some(50));
    assert_eq!(observed(&j), want);
    // A checkpoint made with another hash is not used.
    drop(j);
    let (_, report) = open_with(dir.path(), JournalConfig::default());
    assert_eq!(report.checkpoint, None);
    assert!(report.checkpoint_ignored.is_some());
}

fn link(dir: &Path, n: u64) -> std::path::PathBuf {
    dir.join(format!("index.checkpoint.{n}"))
}

/// The checkpoint files in `dir`: the base's size and the link numbers.
fn checkpoint_files(dir: &Path) -> (Option<u64>, Vec<u64>) {
    let base = fs::metadata(dir.join("index.checkpoint"))
        .ok()
        .map(|m| m.len());
    let mut links: Vec<u64> = fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().into_string().ok()?;
            name.strip_prefix("index.checkpoint.")?.parse().ok()
        })
        .collect();
    links.sort_unstable();
    (base, links)
}

/// What a full scan of `dir` sees (a copy without its checkpoint files).
fn scanned(
    dir: &Path,
    config: JournalConfig,
) -> (Vec<Envelope<LedgerEvent>>, Vec<Vec<Envelope<LedgerEvent>>>) {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(dir, copy.path());
    for e in fs::read_dir(copy.path()).expect("dir") {
        let e = e.expect("entry");
        if e.file_name()
            .to_string_lossy()
            .starts_with("index.checkpoint")
        {
            fs::remove_file(e.path()).expect("remove");
        }
    }
    let (j, report) = open_with(copy.path(), config);
    assert_eq!(report.checkpoint, None);
    observed(&j)
}

#[test]
fn later_checkpoints_are_links_of_a_chain_and_open_like_a_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), small_segments());
    fill(&j, &[1, 5, 40, 3, 200, 7, 60]);
    assert_eq!(j.checkpoint().expect("base"), 316);
    let (base, links) = checkpoint_files(dir.path());
    assert_eq!(links, Vec::<u64>::new());
    fill(&j, &[9, 30]);
    assert_eq!(j.checkpoint().expect("link 1"), 355);
    assert_eq!(j.checkpoint().expect("nothing new"), 355);
    fill(&j, &[2, 70]);
    assert_eq!(j.checkpoint().expect("link 2"), 427);
    assert_eq!(checkpoint_files(dir.path()), (base, vec![1, 2]));
    // A link holds only its own events: 24 bytes each and a head.
    let link_1 = fs::metadata(link(dir.path(), 1)).expect("link 1").len();
    assert!(link_1 < 39 * 24 + 200, "{link_1} bytes");
    assert!(link_1 * 4 < base.expect("base"), "{link_1} vs {base:?}");
    fill(&j, &[11]); // after the last link: decoded at open
    drop(j);

    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.checkpoint, Some(427));
    assert_eq!(report.checkpoint_links, 2);
    assert_eq!(report.checkpoint_link_ignored, None);
    assert_eq!(report.events, 438);
    assert_eq!(observed(&j), scanned(dir.path(), small_segments()));
    // The chain goes on across the reopen; its next link holds the events decoded at open.
    fill(&j, &[5]);
    assert_eq!(j.checkpoint().expect("link 3"), 443);
    fill(&j, &[3]);
    drop(j);
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!((report.checkpoint, report.checkpoint_links), (Some(443), 3));
    assert_eq!(report.events, 446);
    assert_eq!(observed(&j), scanned(dir.path(), small_segments()));

    // Once the links would cover as many events as the base: a new base, the links removed.
    fill(&j, &[300]);
    assert_eq!(j.checkpoint().expect("new base"), 746);
    let (new_base, links) = checkpoint_files(dir.path());
    assert!(new_base > base, "{new_base:?} vs {base:?}");
    assert_eq!(links, Vec::<u64>::new());
    drop(j);
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!((report.checkpoint, report.checkpoint_links), (Some(746), 0));
    assert_eq!(observed(&j), scanned(dir.path(), small_segments()));
}

#[test]
fn a_chain_has_at_most_links_max_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(dir.path());
    fill(&j, &[200, 200, 200]);
    j.checkpoint().expect("base");
    let max = ultracore_journal::checkpoint::LINKS_MAX;
    for n in 1..=max {
        fill(&j, &[1]);
        j.checkpoint().expect("link");
        assert_eq!(checkpoint_files(dir.path()).1.len() as u64, n);
    }
    fill(&j, &[1]);
    assert_eq!(j.checkpoint().expect("new base"), 600 + max + 1);
    assert_eq!(checkpoint_files(dir.path()).1, Vec::<u64>::new());
    drop(j);
    let (_, report) = open(dir.path());
    assert_eq!((report.checkpoint, report.checkpoint_links), (Some(665), 0));
}

#[test]
fn a_link_that_fails_to_write_makes_the_next_checkpoint_a_new_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, link_1) = base_and_one_link(dir.path());
    assert_eq!(link_1, 160);
    // A directory where link 2's temp file goes: the write fails, and the keys of its events
    // (handed over to it) are gone with it.
    let blocker = dir.path().join("index.checkpoint.2.tmp");
    fs::create_dir(&blocker).expect("mkdir");
    fill(&j, &[20]);
    assert!(j.checkpoint().is_err());
    fs::remove_dir(&blocker).expect("rmdir");
    fill(&j, &[5]);
    // So the next checkpoint covers everything as a new base, and the old links go.
    assert_eq!(j.checkpoint().expect("new base"), 185);
    assert_eq!(checkpoint_files(dir.path()).1, Vec::<u64>::new());
    fill(&j, &[3]);
    assert_eq!(j.checkpoint().expect("link 1 of the new chain"), 188);
    drop(j);
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!((report.checkpoint, report.checkpoint_links), (Some(188), 1));
    assert_eq!(report.checkpoint_link_ignored, None);
    assert_eq!(observed(&j), scanned(dir.path(), small_segments()));
}

#[test]
fn a_damaged_or_foreign_link_ends_the_chain_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = open_with(dir.path(), small_segments());
    fill(&j, &[100, 50]);
    j.checkpoint().expect("base");
    for n in [10, 20, 30] {
        fill(&j, &[n]);
        j.checkpoint().expect("link");
    }
    fill(&j, &[4]);
    drop(j);
    let want = scanned(dir.path(), small_segments());
    let path = link(dir.path(), 2);
    let good = fs::read(&path).expect("read");
    for at in [0, 9, 17, 40, good.len() / 2, good.len() - 1] {
        let mut b = good.clone();
        b[at] ^= 0x04;
        fs::write(&path, &b).expect("write");
        let (j, report) = open_with(dir.path(), small_segments());
        assert_eq!(report.checkpoint, Some(160), "flip at {at}");
        assert_eq!(report.checkpoint_links, 1, "flip at {at}");
        let why = report.checkpoint_link_ignored.expect("reported");
        assert!(why.contains("index.checkpoint.2"), "{why}");
        assert_eq!(observed(&j), want, "flip at {at}");
    }
    // Link 2 of another chain (as after a crash between a new base and removing the old links):
    // never applied.
    let other = tempfile::tempdir().expect("tempdir");
    let (j, _) = base_and_one_link(other.path());
    fill(&j, &[20]);
    j.checkpoint().expect("link 2");
    drop(j);
    fs::copy(link(other.path(), 2), &path).expect("copy");
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!((report.checkpoint, report.checkpoint_links), (Some(160), 1));
    let why = report.checkpoint_link_ignored.expect("reported");
    assert!(why.contains("another chain"), "{why}");
    assert_eq!(observed(&j), want);
    // Without link 1, links 2 and 3 are not applied either.
    drop(j);
    fs::write(&path, &good).expect("restore");
    fs::remove_file(link(dir.path(), 1)).expect("remove");
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!((report.checkpoint, report.checkpoint_links), (Some(150), 0));
    let why = report.checkpoint_link_ignored.expect("reported");
    assert!(
        why.contains("link 1 is missing") && why.contains("[2, 3]"),
        "{why}"
    );
    assert_eq!(observed(&j), want);
    // Writing the next checkpoint there starts a new chain: the stale links go.
    fill(&j, &[1]);
    assert_eq!(j.checkpoint().expect("base"), 215);
    assert_eq!(checkpoint_files(dir.path()).1, Vec::<u64>::new());

    // A crash while a link was being written leaves its temp file (never renamed, so never
    // read as a link): the chain stays usable up to it, and the next checkpoint is a new base
    // that removes it.
    fill(&j, &[7]);
    assert_eq!(j.checkpoint().expect("link 1"), 222);
    fill(&j, &[3]);
    drop(j);
    fs::write(dir.path().join("index.checkpoint.2.tmp"), b"UCJCKLN1 torn").expect("write");
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!((report.checkpoint, report.checkpoint_links), (Some(222), 1));
    let why = report.checkpoint_link_ignored.expect("reported");
    assert!(why.contains("link 2 is missing"), "{why}");
    assert_eq!(report.events, 225);
    fill(&j, &[1]);
    assert_eq!(j.checkpoint().expect("new base"), 226);
    assert!(!dir.path().join("index.checkpoint.2.tmp").exists());
    assert_eq!(checkpoint_files(dir.path()).1, Vec::<u64>::new());
}

/// A journal in `dir` (small segments) with a base checkpoint of 150 events and one link of 10
/// more; returns it and the position the link covers.
fn base_and_one_link(dir: &Path) -> (Journal<LedgerEvent>, u64) {
    let (j, _) = open_with(dir, small_segments());
    fill(&j, &[100, 50]);
    j.checkpoint().expect("base");
    fill(&j, &[10]);
    let link = j.checkpoint().expect("link 1");
    (j, link)
}

/// Writes `b` to `path` with its last 4 bytes made the CRC32C of the rest (as a checkpoint file
/// ends).
fn write_with_crc(path: &Path, mut b: Vec<u8>) {
    let end = b.len() - 4;
    let crc = crc32c::crc32c(&b[..end]);
    b[end..].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &b).expect("write");
}

#[test]
fn a_whole_link_whose_keys_do_not_fit_the_index_is_refused_with_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (j, _) = base_and_one_link(dir.path());
    drop(j);
    let want = scanned(dir.path(), small_segments());
    let path = link(dir.path(), 1);
    let good = fs::read(&path).expect("read");
    // The first event's record: its location, hash, first position. Each damaged in turn, the
    // file's checksum made right again.
    let segments = u64::from_le_bytes(good[64..72].try_into().expect("8 bytes")) as usize;
    let events_at = 72 + 16 * segments;
    assert_eq!(
        u64::from_le_bytes(good[events_at..events_at + 8].try_into().expect("8 bytes")),
        10
    );
    let first_event = events_at + 8;
    for (field, value) in [(1, 2u64), (1, 0), (2, 152), (2, 0), (2, 149)] {
        let mut b = good.clone();
        let at = first_event + 8 * field;
        b[at..at + 8].copy_from_slice(&value.to_le_bytes());
        write_with_crc(&path, b);
        let (j, report) = open_with(dir.path(), small_segments());
        assert_eq!(report.checkpoint, None, "field {field} = {value}");
        let why = report.checkpoint_ignored.expect("reported");
        assert!(why.contains("index.checkpoint.1"), "{why}");
        assert_eq!(observed(&j), want);
    }
    // A wrong location passes the keys but not the scan through the checkpoint.
    let mut b = good.clone();
    b[first_event] ^= 1;
    write_with_crc(&path, b);
    let (j, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.checkpoint, None);
    assert!(report.checkpoint_ignored.is_some());
    assert_eq!(observed(&j), want);
}

#[test]
fn random_appends_checkpoints_and_reopens_always_open_like_a_full_scan() {
    let mut links_applied = 0;
    for (seed, config) in (0..12u64).map(|s| {
        (
            s,
            if s % 3 == 0 {
                colliding()
            } else {
                small_segments()
            },
        )
    }) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = ultracore_core::testing::rng::Rng::new(seed);
        let (mut j, _) = open_with(dir.path(), config.clone());
        for step in 0..40 {
            match rng.below(10) {
                0..=5 => {
                    let sizes: Vec<u64> =
                        (0..1 + rng.below(3)).map(|_| 1 + rng.below(40)).collect();
                    fill(&j, &sizes);
                }
                6..=8 => {
                    let covered = j.checkpoint().expect("checkpoint");
                    assert_eq!(covered, block_on(j.last_position()).expect("position"));
                }
                _ => {
                    let events = block_on(j.last_position()).expect("position");
                    drop(j);
                    let (reopened, report) = open_with(dir.path(), config.clone());
                    assert_eq!(report.events, events, "seed {seed} step {step}");
                    assert_eq!(report.checkpoint_ignored, None, "seed {seed} step {step}");
                    assert_eq!(
                        report.checkpoint_link_ignored, None,
                        "seed {seed} step {step}"
                    );
                    links_applied += report.checkpoint_links;
                    j = reopened;
                    assert_eq!(
                        observed(&j),
                        scanned(dir.path(), config.clone()),
                        "seed {seed} step {step}"
                    );
                }
            }
        }
    }
    assert!(
        links_applied > 10,
        "{links_applied} links applied at reopens"
    );
}

#[test]
fn a_second_open_of_the_same_directory_fails_at_once_naming_it_and_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path()).0;
    fill(&first, &[3]);
    let started = std::time::Instant::now();
    let err = Journal::<LedgerEvent>::open(dir.path(), JournalConfig::default())
        .err()
        .expect("a second open in the same process is refused");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "no waiting"
    );
    match &err {
        JournalError::Locked { dir: d, holder } => {
            assert_eq!(d, dir.path());
            assert_eq!(*holder, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(err.code(), "journal_locked");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("PID {}", std::process::id())),
        "{message}"
    );
    // The refused open changed nothing, and the holder still works.
    fill(&first, &[2]);
    assert_eq!(all(&first).len(), 5);
    // Dropping the holder releases the lock.
    drop(first);
    let (again, report) = open(dir.path());
    assert_eq!(report.events, 5);
    assert_eq!(all(&again).len(), 5);
}
