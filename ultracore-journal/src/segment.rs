//! Segment files: naming, the 32-byte header, creation (with directory fsync), and the
//! recovery scan that rebuilds the index at open and cuts off a torn tail.
//!
//! Header: `magic "UCJOURNL"`, `format_version: u16`, 2 reserved bytes, `sequence: u32`,
//! `first_position: u64`, 4 reserved bytes, `crc32c` of the preceding 28 bytes; all little
//! endian. Records (see [`crate::codec`]) follow back to back.
//!
//! After the records a segment may hold zeros: space the writer preallocated (written as
//! zeros and synced ahead of use, so that syncing an append only flushes data and never the
//! file's size; see `JournalConfig::preallocate_bytes`). A scan ends cleanly where only zeros
//! remain; no record can start with zeros only, since its header checksum would not match.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ultracore_core::time::RecordedAt;

use crate::codec::{self, DecodeError, RawKey, FRAME_HEADER_LEN};
use crate::error::{JournalError, TornTail};

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// The segment format this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"UCJOURNL";
const SUFFIX: &str = ".ujl";

/// The file name of segment `sequence`.
pub fn file_name(sequence: u32) -> String {
    format!("{sequence:010}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, sorted by sequence.
pub fn list(dir: &Path) -> Result<Vec<(u32, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(JournalError::io(dir))? {
        let entry = entry.map_err(JournalError::io(dir))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_name) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn header(sequence: u32, first_position: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&sequence.to_le_bytes());
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Fsyncs a directory so a file created (or renamed) in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(JournalError::io(dir))
}

/// Creates segment `sequence` whose first record holds `first_position`: writes and syncs the
/// header, then syncs the directory. Returns the file opened for writing (at explicit
/// offsets: the writer writes over preallocated zeros).
pub fn create(dir: &Path, sequence: u32, first_position: u64) -> Result<File, JournalError> {
    let path = dir.join(file_name(sequence));
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(JournalError::io(&path))?;
    f.write_all(&header(sequence, first_position))
        .and_then(|_| f.sync_all())
        .map_err(JournalError::io(&path))?;
    sync_dir(dir)?;
    Ok(f)
}

/// Writes `fill` bytes over `from..to` of `file` and syncs them (with the file's size): space
/// written ahead of appends, so that an append's sync flushes data only. The journal fills
/// with zeros; the server's audit log with empty lines.
pub fn fill_ahead(file: &File, from: u64, to: u64, fill: u8) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let chunk = vec![fill; (to.saturating_sub(from)).min(64 * 1024) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

/// One event found by the scan.
pub struct Scanned<'a> {
    /// Offset of the event (its length prefix) in the file.
    pub offset: u32,
    /// Stream (as stored), version, time; `None` for events before `decode_from` (covered by
    /// an index checkpoint: their record is checked, their head is not decoded).
    pub key: Option<RawKey<'a>>,
}

/// What the scan of one segment found.
pub struct SegmentScan {
    /// Length of the intact part (the file's length after any truncation).
    pub len: u64,
    /// Records found.
    pub records: u64,
    /// A torn tail that was cut off.
    pub torn: Option<TornTail>,
    /// [`fold_crc`] over the body checksums of its intact records, in order.
    pub crc_fold: u32,
    /// The same over the records that start before `decode_from`.
    pub crc_fold_covered: u32,
}

/// Folds a record's body checksum into a segment's running value: what binds an index
/// checkpoint to the exact records it covers.
pub fn fold_crc(fold: u32, body_crc: u32) -> u32 {
    crc32c::crc32c_append(fold, &body_crc.to_le_bytes())
}

/// Checks one segment and calls `on_event` for each event in order. `next_position` is the
/// position the segment's first record must start at; `is_last` allows a torn tail (which is
/// then truncated). Everything else that fails a check is [`JournalError::Corrupt`]. Heads of
/// events in records that start before byte `decode_from` are not decoded (their records'
/// checksums and positions are still checked).
///
/// The segment is read into `buf` (cleared first): a caller that scans many segments passes
/// the same buffer each time, so each segment is read into memory already mapped instead of
/// a fresh allocation whose every page faults and is zeroed (a tenth of the journal's
/// recovery CPU at 10 M events).
pub fn scan_with(
    buf: &mut Vec<u8>,
    path: &Path,
    sequence: u32,
    next_position: u64,
    is_last: bool,
    decode_from: u64,
    mut on_event: impl FnMut(u64, Scanned<'_>) -> Result<(), String>,
) -> Result<SegmentScan, JournalError> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(JournalError::io(path))?;
    let buf: &[u8] = buf;
    let corrupt = |offset: usize, reason: String| JournalError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if buf.len() < SEGMENT_HEADER_LEN {
        if is_last {
            // Created but its header never became durable: start it again.
            rewrite_header(path, sequence, next_position)?;
            return Ok(SegmentScan {
                len: SEGMENT_HEADER_LEN as u64,
                records: 0,
                crc_fold: 0,
                crc_fold_covered: 0,
                torn: Some(TornTail {
                    file: path.to_path_buf(),
                    offset: 0,
                    bytes_discarded: buf.len() as u64,
                    reason: "incomplete segment header (rewritten)".into(),
                }),
            });
        }
        return Err(corrupt(0, "segment shorter than its header".into()));
    }
    check_header(path, &buf[..SEGMENT_HEADER_LEN], sequence, next_position)?;
    let mut at = SEGMENT_HEADER_LEN;
    let mut position = next_position;
    let mut records = 0;
    let (mut crc_fold, mut crc_fold_covered) = (0, 0);
    while at < buf.len() {
        let rest = &buf[at..];
        if rest[0] == 0 && rest.iter().all(|&b| b == 0) {
            // Preallocated space never written: the end of the records, not damage.
            break;
        }
        let frame = match codec::check_frame(rest) {
            Ok(frame) => frame,
            Err(e) => {
                if is_last && is_torn(rest, &e) {
                    // What was written ends at the last non-zero byte; zeros after it are
                    // preallocated space, not part of the torn write.
                    let written = at + rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    let torn = truncate(path, at as u64, written as u64, e.to_string())?;
                    return Ok(SegmentScan {
                        len: at as u64,
                        records,
                        torn: Some(torn),
                        crc_fold,
                        crc_fold_covered,
                    });
                }
                return Err(corrupt(at, e.to_string()));
            }
        };
        let (first, events) =
            codec::split_body(frame.body).map_err(|e| corrupt(at, e.to_string()))?;
        if first != position {
            return Err(corrupt(
                at,
                format!("record starts at position {first}, expected {position}"),
            ));
        }
        let decode = at as u64 >= decode_from;
        let body_crc = codec::le_u32(rest, 4);
        crc_fold = fold_crc(crc_fold, body_crc);
        if !decode {
            crc_fold_covered = fold_crc(crc_fold_covered, body_crc);
        }
        for (rel, bytes) in events {
            let offset = at + FRAME_HEADER_LEN + rel;
            let key = if decode {
                Some(codec::scan_event_raw(bytes).map_err(|e| corrupt(offset, e.to_string()))?)
            } else {
                None
            };
            let offset = u32::try_from(offset)
                .map_err(|_| corrupt(offset, "segment longer than 4 GiB".into()))?;
            on_event(position, Scanned { offset, key }).map_err(|r| corrupt(offset as usize, r))?;
            position += 1;
        }
        records += 1;
        at += frame.len;
    }
    Ok(SegmentScan {
        len: at as u64,
        records,
        torn: None,
        crc_fold,
        crc_fold_covered,
    })
}

/// Whether a failed frame at the end of the last segment is what a crash mid-write leaves:
/// too short for what it announces, a body that fails its checksum followed by nothing but
/// zeros (the end of the file, or preallocated space the write did not reach), or a header
/// that fails its checksum followed by nothing but zeros (space the file system allocated,
/// or the writer preallocated, but never written). A failure followed by more data is
/// damage, not a torn write.
fn is_torn(rest: &[u8], e: &DecodeError) -> bool {
    match e {
        DecodeError::Incomplete => true,
        DecodeError::BodyChecksum => {
            let end = FRAME_HEADER_LEN + codec::le_u32(rest, 0) as usize;
            rest.get(end..)
                .is_some_and(|after| after.iter().all(|&b| b == 0))
        }
        // A header persisted only in part (it may cross a sector boundary) is followed by
        // nothing but the zeros of the unwritten rest.
        DecodeError::HeaderChecksum => rest[FRAME_HEADER_LEN.min(rest.len())..]
            .iter()
            .all(|&b| b == 0),
        DecodeError::Malformed(_) => false,
    }
}

fn truncate(path: &Path, at: u64, len: u64, reason: String) -> Result<TornTail, JournalError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(JournalError::io(path))?;
    f.set_len(at)
        .and_then(|_| f.sync_all())
        .map_err(JournalError::io(path))?;
    Ok(TornTail {
        file: path.to_path_buf(),
        offset: at,
        bytes_discarded: len - at,
        reason,
    })
}

fn rewrite_header(path: &Path, sequence: u32, first_position: u64) -> Result<(), JournalError> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(JournalError::io(path))?;
    f.write_all(&header(sequence, first_position))
        .and_then(|_| f.sync_all())
        .map_err(JournalError::io(path))
}

fn check_header(
    path: &Path,
    h: &[u8],
    sequence: u32,
    first_position: u64,
) -> Result<(), JournalError> {
    let corrupt = |reason: String| JournalError::Corrupt {
        file: path.to_path_buf(),
        offset: 0,
        reason,
    };
    if &h[0..8] != MAGIC {
        return Err(corrupt("not a journal segment (bad magic)".into()));
    }
    if crc32c::crc32c(&h[..28]) != codec::le_u32(h, 28) {
        return Err(corrupt("segment header checksum mismatch".into()));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version > FORMAT_VERSION || version == 0 {
        return Err(JournalError::UnsupportedFormat {
            file: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let seq = codec::le_u32(h, 12);
    let first = codec::le_u64(h, 16);
    if seq != sequence {
        return Err(corrupt(format!(
            "header names segment {seq}, file name {sequence}"
        )));
    }
    if first != first_position {
        return Err(corrupt(format!(
            "segment starts at position {first}, the previous one ends before {first_position}"
        )));
    }
    Ok(())
}

/// Checks that transaction time increases, for the scan.
pub fn check_time(last: &mut Option<RecordedAt>, t: RecordedAt) -> Result<(), String> {
    if last.is_some_and(|l| t <= l) {
        return Err("recorded_at does not increase".into());
    }
    *last = Some(t);
    Ok(())
}
