//! The audit log: one JSON line per request (principal, action, resource, decision, outcome,
//! correlation id, time), append-only and hash-chained: each record carries the SHA-256 of the
//! previous record's hash followed by its own canonical JSON, so changing, removing or
//! reordering any record breaks every later link. [`verify`] checks the chain and names the
//! first broken link.
//!
//! One writer thread owns the file. Requests hand it records over a channel and wait for its
//! answer; the thread takes everything queued, writes it, and syncs once for the whole group
//! (group commit), so no answer leaves the server before its audit record is durable.
//!
//! The writer keeps [`PREALLOCATE_BYTES`] of empty lines (`\n` bytes, synced) ahead of the
//! records and writes over them, so syncing a group flushes data only, never the file's size
//! (on ext4 that saves a journal commit per sync). The file thus ends with blank lines, which
//! line-oriented tools and `jq` skip; the chain check treats them as the end of the log.
//!
//! Reads (`GET /v1/audit`) go through [`AuditLog::read`], which seeks: an in-memory sparse
//! index holds the byte offset of every [`INDEX_STRIDE`]-th record, is rebuilt by the chain
//! check at open and extended by the writer after each sync, so a page anywhere in the log
//! costs at most `INDEX_STRIDE - 1` skipped lines plus the page, and shows only durable
//! records.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// Records preallocated for a page.
const AUDIT_PAGE_PREALLOC: usize = 1_024;
/// Bytes of padding (empty lines) the writer keeps written ahead of the records.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;
/// The padding byte: an empty line, never part of a record.
const PAD: u8 = b'\n';
/// Records written per group (one `write` + one sync).
const RECORDS_PER_SYNC_MAX: usize = 4_096;
/// Records waiting for the writer before senders wait too (back-pressure).
const QUEUE_MAX: usize = 65_536;
/// Longest audit line accepted when reading (bytes); longer lines are a broken link.
const LINE_BYTES_MAX: usize = 64 * 1024;
/// Records per entry of the in-memory sparse index (8 bytes per this many records).
pub const INDEX_STRIDE: u64 = 128;
/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the request layer knows about a request when it ends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Transaction time of the record (RFC 3339).
    pub time: String,
    /// `X-Request-Id`, taken or generated.
    pub correlation_id: String,
    /// Token subject, if authenticated.
    pub principal: Option<String>,
    /// Token role, if authenticated.
    pub role: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// Policy action, once known.
    pub action: Option<String>,
    /// The resource acted on (account or entry id), once known.
    pub resource: Option<String>,
    /// `allow`, `deny`, or `none` (no decision reached: unauthenticated or malformed).
    pub decision: String,
    /// HTTP status answered.
    pub status: u16,
    /// `ok` or the problem code.
    pub outcome: String,
}

/// One record as stored: sequence number and chain link around an [`AuditEvent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// `hash` of the previous record (`GENESIS_HASH` for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) of `prev_hash` followed by the canonical JSON of this record without
    /// `hash` (the fields in the order above).
    pub hash: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    #[serde(flatten)]
    event: &'a AuditEvent,
    prev_hash: &'a str,
}

fn chain_hash(seq: u64, event: &AuditEvent, prev_hash: &str) -> String {
    let body = serde_json::to_vec(&Canonical {
        seq,
        event,
        prev_hash,
    })
    .expect("audit events serialise");
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(&body);
    crate::util::hex(&h.finalize())
}

/// Why the audit log could not be opened, written or verified.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// IO.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The chain is broken.
    #[error("audit log {path}: broken link at line {line} (seq {seq:?}): {reason}")]
    Broken {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the first bad record.
        line: u64,
        /// Its sequence number, if it could be read.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// The writer has stopped.
    #[error("audit writer stopped")]
    Stopped,
}

/// The end of a verified chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEnd {
    /// Records in the log.
    pub records: u64,
    /// Hash of the last record (`GENESIS_HASH` if none).
    pub last_hash: String,
    /// Byte length of the valid prefix.
    pub valid_len: u64,
    /// Bytes after the valid prefix that form an unterminated last line (a torn write).
    pub torn_tail: u64,
}

/// Checks every link of the log at `path`. A missing file is an empty, valid log.
pub fn verify(path: &Path) -> Result<ChainEnd, AuditError> {
    scan(path, |_, _| {})
}

/// [`verify`], calling `each(seq, byte offset)` for every valid record.
fn scan(path: &Path, mut each: impl FnMut(u64, u64)) -> Result<ChainEnd, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ChainEnd {
                records: 0,
                last_hash: GENESIS_HASH.to_string(),
                valid_len: 0,
                torn_tail: 0,
            })
        }
        Err(e) => return Err(io(e)),
    };
    let mut reader = BufReader::new(file);
    let mut end = ChainEnd {
        records: 0,
        last_hash: GENESIS_HASH.to_string(),
        valid_len: 0,
        torn_tail: 0,
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if n == 0 {
            return Ok(end);
        }
        let lineno = end.records + 1;
        let broken = |seq, reason: String| AuditError::Broken {
            path: path.to_path_buf(),
            line: lineno,
            seq,
            reason,
        };
        if line == [PAD] {
            // Preallocated space: the records end here, and nothing but padding may follow.
            if only_padding(&mut reader).map_err(io)? {
                return Ok(end);
            }
            return Err(broken(None, "data after an empty line".into()));
        }
        if line.last() != Some(&b'\n') {
            if n > LINE_BYTES_MAX {
                return Err(broken(None, "line too long".into()));
            }
            // The last write did not finish; it was never acknowledged.
            end.torn_tail = n as u64;
            return Ok(end);
        }
        let text = &line[..line.len() - 1];
        let rec: AuditRecord = match serde_json::from_slice(text) {
            Ok(rec) => rec,
            // A write into preallocated space that did not finish: the start of a line, ended
            // by the padding after it, then nothing but padding.
            Err(_) if only_padding(&mut reader).map_err(io)? => {
                end.torn_tail = text.len() as u64;
                return Ok(end);
            }
            Err(e) => return Err(broken(None, format!("not an audit record: {e}"))),
        };
        if rec.seq != end.records + 1 {
            return Err(broken(
                Some(rec.seq),
                format!("expected seq {}", end.records + 1),
            ));
        }
        if rec.prev_hash != end.last_hash {
            return Err(broken(
                Some(rec.seq),
                "prev_hash does not match the previous record".into(),
            ));
        }
        let expected = chain_hash(rec.seq, &rec.event, &rec.prev_hash);
        if rec.hash != expected {
            return Err(broken(
                Some(rec.seq),
                "hash does not match the record".into(),
            ));
        }
        // The stored line must be exactly the canonical form: no extra or reordered fields.
        if serde_json::to_vec(&rec).ok().as_deref() != Some(text) {
            return Err(broken(
                Some(rec.seq),
                "record is not in canonical form".into(),
            ));
        }
        each(rec.seq, end.valid_len);
        end.records = rec.seq;
        end.last_hash = rec.hash;
        end.valid_len += n as u64;
    }
}

/// Where the durable records are: the byte offset of records 1, 1 + [`INDEX_STRIDE`], …, and
/// how many records (and bytes) are durable.
#[derive(Debug, Default)]
struct SparseIndex {
    /// `offsets[k]` is the offset of record `k * INDEX_STRIDE + 1`.
    offsets: Vec<u64>,
    records: u64,
    len: u64,
}

impl SparseIndex {
    /// Records that record `seq` starts at `offset` (kept if it is on the stride).
    fn note(&mut self, seq: u64, offset: u64) {
        if (seq - 1).is_multiple_of(INDEX_STRIDE) {
            debug_assert_eq!(self.offsets.len() as u64, (seq - 1) / INDEX_STRIDE);
            self.offsets.push(offset);
        }
    }

    /// Where to start reading records after `after`: (offset, seq of the record there, durable
    /// length); `None` if there are none.
    fn start(&self, after: u64) -> Option<(u64, u64, u64)> {
        if after >= self.records {
            return None;
        }
        // Record `after + 1` exists, so the index entry of its block does too.
        let k = after / INDEX_STRIDE;
        let offset = *self.offsets.get(usize::try_from(k).ok()?)?;
        Some((offset, k * INDEX_STRIDE + 1, self.len))
    }
}

enum Msg {
    Record(Box<AuditEvent>, oneshot::Sender<Result<(), String>>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer and the reader's index; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    path: PathBuf,
    index: Arc<RwLock<SparseIndex>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit message")
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, verifies the whole chain, truncates a torn tail
    /// (reported in the returned `ChainEnd`), and starts the writer thread.
    pub fn open(path: &Path) -> Result<(AuditLog, ChainEnd), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut index = SparseIndex::default();
        let end = scan(path, |seq, offset| index.note(seq, offset))?;
        index.records = end.records;
        index.len = end.valid_len;
        let index = Arc::new(RwLock::new(index));
        let mut opts = OpenOptions::new();
        opts.create(true).truncate(false).read(true).write(true);
        #[cfg(unix)]
        {
            // Records name principals and resources: readable by the owner only.
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(io)?;
        if end.torn_tail > 0 {
            file.set_len(end.valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::Start(end.valid_len)).map_err(io)?;
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let state = (end.records, end.last_hash.clone());
        let p = path.to_path_buf();
        let for_writer = index.clone();
        std::thread::Builder::new()
            .name("ultracore-audit".into())
            .spawn(move || writer(file, p, state, for_writer, rx))
            .map_err(io)?;
        Ok((
            AuditLog {
                tx,
                path: path.to_path_buf(),
                index,
            },
            end,
        ))
    }

    /// Up to `limit` durable records with `seq > after`. It seeks to the indexed record at or
    /// before `after + 1` and reads from there, so its cost does not grow with `after`. It does
    /// file IO: call it from a blocking thread.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let start = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .start(after);
        let Some((offset, mut seq, len)) = start else {
            return Ok(Vec::new());
        };
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        // Only the durable part: a group being written is not shown before its sync.
        let mut reader = BufReader::new(file.take(len - offset));
        let mut out = Vec::with_capacity(limit.min(AUDIT_PAGE_PREALLOC));
        let mut line = Vec::new();
        while out.len() < limit {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            // Sequence numbers equal line numbers, so the lines before `after` are skipped
            // without parsing; the first one parsed must then carry the expected number.
            if seq > after {
                let rec: AuditRecord = serde_json::from_slice(&line).map_err(|e| {
                    io(std::io::Error::other(format!(
                        "record {seq} does not parse: {e}"
                    )))
                })?;
                if rec.seq != seq {
                    return Err(io(std::io::Error::other(format!(
                        "record {} found where the index expects {seq}",
                        rec.seq
                    ))));
                }
                out.push(rec);
            }
            seq += 1;
        }
        Ok(out)
    }

    /// Appends `event` and returns once it is durable.
    pub async fn append(&self, event: AuditEvent) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Record(Box::new(event), tx))
            .await
            .map_err(|_| AuditError::Stopped)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            }),
            Err(_) => Err(AuditError::Stopped),
        }
    }

    /// Waits until everything sent before this call is durable.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether the rest of `r` is padding only.
fn only_padding(r: &mut impl Read) -> std::io::Result<bool> {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(true),
            n if buf[..n].iter().all(|&b| b == PAD) => {}
            _ => return Ok(false),
        }
    }
}

/// Writes padding from `*allocated` up to at least `need` bytes ([`PREALLOCATE_BYTES`] more)
/// and syncs it, size included, unless the file already has `need` bytes.
fn preallocate(file: &File, allocated: &mut u64, need: u64, write: u64) -> std::io::Result<()> {
    if need <= *allocated {
        return Ok(());
    }
    if write >= ultracore_journal::PREALLOCATE_WRITE_MAX {
        *allocated = need; // the write grows the file
        return Ok(());
    }
    let target = need.max(*allocated + PREALLOCATE_BYTES);
    ultracore_journal::segment::fill_ahead(file, *allocated, target, PAD)?;
    *allocated = target;
    Ok(())
}

fn writer(
    mut file: File,
    path: PathBuf,
    state: (u64, String),
    index: Arc<RwLock<SparseIndex>>,
    mut rx: mpsc::Receiver<Msg>,
) {
    let (mut seq, mut last_hash) = state;
    // Records end at the durable length; the file may go on with padding.
    let mut written = index.read().unwrap_or_else(|p| p.into_inner()).len;
    let mut allocated = file.metadata().map_or(written, |m| m.len()).max(written);
    let mut starts = Vec::new();
    let mut failed: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < RECORDS_PER_SYNC_MAX {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        let mut buf = Vec::new();
        starts.clear();
        let (mut next_seq, mut next_hash) = (seq, last_hash.clone());
        for m in &group {
            if let Msg::Record(event, _) = m {
                next_seq += 1;
                starts.push((next_seq, buf.len() as u64));
                let hash = chain_hash(next_seq, event, &next_hash);
                let rec = AuditRecord {
                    seq: next_seq,
                    event: (**event).clone(),
                    prev_hash: std::mem::replace(&mut next_hash, hash.clone()),
                    hash,
                };
                serde_json::to_writer(&mut buf, &rec).expect("audit records serialise");
                buf.push(b'\n');
            }
        }
        // After one failed write the file's tail is unknown: refuse everything from then on
        // (fail closed) rather than write records that would not chain.
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None if buf.is_empty() => Ok(()),
            None => preallocate(
                &file,
                &mut allocated,
                written + buf.len() as u64,
                buf.len() as u64,
            )
            .and_then(|()| file.write_all(&buf))
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", path.display())),
        };
        match &result {
            Ok(()) => {
                seq = next_seq;
                last_hash = next_hash;
                written += buf.len() as u64;
                // Before the answers: a reader that saw its own request answered finds it.
                let mut ix = index.write().unwrap_or_else(|p| p.into_inner());
                let base = ix.len;
                for &(s, at) in &starts {
                    ix.note(s, base + at);
                }
                ix.records = seq;
                ix.len = base + buf.len() as u64;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit write failed; refusing further requests");
                failed = Some(e.clone());
            }
        }
        for m in group {
            match m {
                Msg::Record(_, reply) => {
                    let _ = reply.send(result.clone());
                }
                Msg::Flush(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            time: "2026-01-01T00:00:00Z".into(),
            correlation_id: format!("req-{i}"),
            principal: Some("ana".into()),
            role: Some("customer".into()),
            method: "GET".into(),
            path: "/v1/accounts/a".into(),
            action: Some("account_read".into()),
            resource: Some("a".into()),
            decision: "allow".into(),
            status: 200,
            outcome: "ok".into(),
        }
    }

    async fn write_log(path: &Path, n: u64) {
        let (log, _) = AuditLog::open(path).unwrap();
        let mut tasks = Vec::new();
        for i in 0..n {
            let log = log.clone();
            tasks.push(tokio::spawn(async move { log.append(event(i)).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn chain_verifies_and_survives_reopen() {
        let path = crate::util::temp_dir("audit").join("audit.log");
        write_log(&path, 50).await;
        write_log(&path, 10).await;
        let end = verify(&path).unwrap();
        assert_eq!(end.records, 60);
        let (log, _) = AuditLog::open(&path).unwrap();
        let page = log.read(55, 100).unwrap();
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![56, 57, 58, 59, 60]
        );
    }

    /// Every record of the log, parsed from the whole file (the reference for paging).
    fn all_records(path: &Path) -> Vec<AuditRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Where the records end (the padding after them starts).
    fn records_end(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap()
            .trim_end_matches('\n')
            .len()
            + 1
    }

    fn check_pages(log: &AuditLog, all: &[AuditRecord]) {
        let n = all.len() as u64;
        let s = INDEX_STRIDE;
        for after in [
            0,
            1,
            s - 1,
            s,
            s + 1,
            2 * s,
            7 * s + 3,
            n - s,
            n - 2,
            n - 1,
            n,
            n + 5,
        ] {
            for limit in [1, 2, s as usize, 1_000] {
                let page = log.read(after, limit).unwrap();
                let want: Vec<AuditRecord> = all
                    .iter()
                    .filter(|r| r.seq > after)
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(page, want, "after {after} limit {limit}");
            }
        }
        // Walking the whole log page by page gives every record once, in order.
        let (mut after, mut walked) = (0, Vec::new());
        loop {
            let page = log.read(after, 97).unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            walked.extend(page);
        }
        assert_eq!(walked, all);
    }

    #[tokio::test]
    async fn pages_seek_through_the_sparse_index_and_match_the_file() {
        let path = crate::util::temp_dir("audit-pages").join("audit.log");
        let (log, _) = AuditLog::open(&path).unwrap();
        assert_eq!(log.read(0, 10).unwrap(), vec![]);
        drop(log);
        // 3,000 records in two sessions: the index is rebuilt at open, then extended by the
        // writer (groups of many records, so strides fall inside groups).
        write_log(&path, 2_000).await;
        let (log, end) = AuditLog::open(&path).unwrap();
        assert_eq!(end.records, 2_000);
        let mut tasks = Vec::new();
        for i in 0..1_000 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move { log.append(event(i)).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let all = all_records(&path);
        assert_eq!(all.len(), 3_000);
        check_pages(&log, &all);
        assert_eq!(
            verify(&path).unwrap().records,
            3_000,
            "the chain still verifies"
        );

        // Reads seek instead of reading from the start: with the first record destroyed (same
        // length, so offsets hold), a late page still reads, while the chain check fails.
        let text = std::fs::read_to_string(&path).unwrap();
        let first_len = text.lines().next().unwrap().len();
        let mut bytes = text.into_bytes();
        bytes[..first_len].fill(b'x');
        std::fs::write(&path, &bytes).unwrap();
        let page = log.read(2_500, 10).unwrap();
        assert_eq!(page, all[2_500..2_510].to_vec());
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 1, .. })
        ));
    }

    #[tokio::test]
    async fn tampering_names_the_first_broken_link() {
        let path = crate::util::temp_dir("audit-tamper").join("audit.log");
        write_log(&path, 5).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        // Change a field of record 3.
        let changed = text.replacen(lines[2], &lines[2].replace("\"GET\"", "\"PUT\""), 1);
        std::fs::write(&path, &changed).unwrap();
        match verify(&path) {
            Err(AuditError::Broken { line, seq, .. }) => assert_eq!((line, seq), (3, Some(3))),
            other => panic!("expected a broken link, got {other:?}"),
        }
        // Remove record 2.
        let removed: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&path, &removed).unwrap();
        match verify(&path) {
            Err(AuditError::Broken { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a broken link, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_file_ends_with_synced_padding_that_is_written_over() {
        let path = crate::util::temp_dir("audit-pad").join("audit.log");
        write_log(&path, 3).await;
        let len = std::fs::metadata(&path).unwrap().len();
        let end = records_end(&path);
        assert!(
            len >= PREALLOCATE_BYTES,
            "padding written ahead: {len} bytes"
        );
        assert_eq!(verify(&path).unwrap().valid_len, end as u64);
        write_log(&path, 2).await;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "written over");
        assert_eq!(all_records(&path).len(), 5);
        assert_eq!(verify(&path).unwrap().records, 5);
        // Anything after the padding is damage, not the end of the log.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 6, .. })
        ));
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_on_open() {
        // Into preallocated space: the start of a line, then the padding it did not reach.
        let path = crate::util::temp_dir("audit-torn-pad").join("audit.log");
        write_log(&path, 3).await;
        let mut bytes = std::fs::read(&path).unwrap();
        let end = records_end(&path);
        bytes[end..end + 12].copy_from_slice(b"{\"seq\":4,\"ti");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(verify(&path).unwrap().torn_tail, 12);
        let (log, opened) = AuditLog::open(&path).unwrap();
        assert_eq!((opened.records, opened.torn_tail), (3, 12));
        drop(log);
        write_log(&path, 1).await;
        assert_eq!(verify(&path).unwrap().records, 4);
        assert_eq!(verify(&path).unwrap().torn_tail, 0);

        // At the end of a file grown by appends (no padding): an unterminated last line.
        let path = crate::util::temp_dir("audit-torn").join("audit.log");
        write_log(&path, 3).await;
        let end = records_end(&path);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(end as u64).unwrap();
        drop(f);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"ti").unwrap();
        drop(f);
        assert_eq!(verify(&path).unwrap().torn_tail, 12);
        let (_log, end) = AuditLog::open(&path).unwrap();
        assert_eq!((end.records, end.torn_tail), (3, 12));
        drop(_log);
        write_log(&path, 1).await;
        assert_eq!(
            verify(&path).unwrap(),
            ChainEnd {
                torn_tail: 0,
                ..verify(&path).unwrap()
            }
        );
        assert_eq!(verify(&path).unwrap().records, 4);
    }
}
