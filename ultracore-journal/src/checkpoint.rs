//! The index checkpoint: the in-memory index (event locations, stream index, last
//! transaction time) as of some position, in one file (`index.checkpoint`), so that open
//! decodes only the events after it.
//!
//! A checkpoint is a cache, never trusted blindly. Open uses it only if it passes its own
//! checksum, was made with the same hash (seed, mask and a test vector: a changed hash
//! function would otherwise mis-file streams), and agrees with the segments: every record it
//! covers is still read and checksummed, and each covered event must sit exactly where the
//! checkpoint says. Anything else and open rebuilds the index from a full scan.
//!
//! File: `magic "UCJCKPT1"`, `format: u16`, 6 reserved bytes, `seed`, `mask`, `hash check`,
//! `has_time: u64`, `last_recorded_at: i64`, `segments: u64` then each covered length and checksum fold,
//! `events: u64` then each location, the 256 shards (`slots: u64`, `len: u64`, then
//! `(hash, value)` per slot), `lists: u64` then each list (`len: u64`, positions), and the
//! CRC32C of everything before it; all little endian. Written to a temp file, synced, renamed
//! over the old one, directory synced.

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ultracore_core::time::{RecordedAt, Timestamp};

use crate::codec::{le_u32, le_u64};
use crate::error::JournalError;
use crate::segment::sync_dir;
use crate::streams::{self, Shard, Slot, StreamIndex, SHARDS};

const MAGIC: &[u8; 8] = b"UCJCKPT1";
const FORMAT: u16 = 1;
/// The checkpoint's file name in the journal directory.
pub const FILE_NAME: &str = "index.checkpoint";
const CHECK_INPUT: &[u8] = b"ultracore-journal index checkpoint hash check";

/// The index as of a position.
pub(crate) struct Checkpoint {
    /// Bytes covered of each segment, from the first (the last may go on after), and the
    /// fold of the body checksums of the records in them (`segment::fold_crc`).
    pub segments: Vec<(u64, u32)>,
    /// Location of each covered event.
    pub locations: Vec<u64>,
    pub last_recorded_at: Option<RecordedAt>,
    pub streams: StreamIndex,
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.inner.write_all(b)
    }

    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn u64s(&mut self, vs: &[u64]) -> std::io::Result<()> {
        let mut chunk = Vec::with_capacity(8 * 8192);
        for part in vs.chunks(8192) {
            chunk.clear();
            for v in part {
                chunk.extend_from_slice(&v.to_le_bytes());
            }
            self.put(&chunk)?;
        }
        Ok(())
    }
}

/// Writes `cp` atomically into `dir`.
pub(crate) fn save(dir: &Path, cp: &Checkpoint) -> Result<(), JournalError> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let io = JournalError::io(&tmp);
    let write = || -> std::io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut w = CrcWriter {
            inner: BufWriter::with_capacity(1 << 20, f),
            crc: 0,
        };
        w.put(MAGIC)?;
        w.put(&FORMAT.to_le_bytes())?;
        w.put(&[0; 6])?;
        let (seed, mask) = (cp.streams.seed(), cp.streams.mask());
        w.u64(seed)?;
        w.u64(mask)?;
        w.u64(streams::hash_with(seed, mask, CHECK_INPUT))?;
        w.u64(u64::from(cp.last_recorded_at.is_some()))?;
        w.u64(cp.last_recorded_at.map_or(0, |t| t.0.as_micros()) as u64)?;
        w.u64(cp.segments.len() as u64)?;
        let flat: Vec<u64> = cp
            .segments
            .iter()
            .flat_map(|&(l, f)| [l, u64::from(f)])
            .collect();
        w.u64s(&flat)?;
        w.u64(cp.locations.len() as u64)?;
        w.u64s(&cp.locations)?;
        let (shards, lists) = cp.streams.parts();
        for sh in shards {
            w.u64(sh.slots.len() as u64)?;
            w.u64(sh.len as u64)?;
            let flat: Vec<u64> = sh.slots.iter().flat_map(|s| [s.hash, s.value]).collect();
            w.u64s(&flat)?;
        }
        w.u64(lists.len() as u64)?;
        for l in lists {
            w.u64(l.len() as u64)?;
            w.u64s(l)?;
        }
        let crc = w.crc;
        let mut f = w.inner.into_inner().map_err(|e| e.into_error())?;
        f.write_all(&crc.to_le_bytes())?;
        f.sync_all()
    };
    write().map_err(io)?;
    let dest = path(dir);
    fs::rename(&tmp, &dest).map_err(JournalError::io(&dest))?;
    sync_dir(dir)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u64(&mut self) -> Result<u64, String> {
        let v = self
            .b
            .get(self.at..self.at + 8)
            .map(|s| le_u64(s, 0))
            .ok_or("truncated")?;
        self.at += 8;
        Ok(v)
    }

    fn count(&mut self, each: usize) -> Result<usize, String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "count")?;
        if n.checked_mul(each)
            .is_none_or(|b| b > self.b.len() - self.at)
        {
            return Err("count past the end".into());
        }
        Ok(n)
    }

    fn u64s(&mut self, n: usize) -> Result<Vec<u64>, String> {
        let bytes = self.b.get(self.at..self.at + 8 * n).ok_or("truncated")?;
        self.at += 8 * n;
        Ok(bytes.chunks_exact(8).map(|c| le_u64(c, 0)).collect())
    }
}

/// The checkpoint in `dir`, if there is one that is intact and made with this hash mask.
/// `Err` says why a checkpoint file was not usable (the caller reports it and scans).
pub(crate) fn load(dir: &Path, mask: u64) -> Result<Option<Checkpoint>, String> {
    let p = path(dir);
    let b = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    if b.len() < 24 || &b[..8] != MAGIC {
        return Err("not a checkpoint".into());
    }
    let (content, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(content) != le_u32(crc, 0) {
        return Err("checksum mismatch".into());
    }
    if u16::from_le_bytes([b[8], b[9]]) != FORMAT {
        return Err("unknown format".into());
    }
    let mut r = Reader { b: content, at: 16 };
    let seed = r.u64()?;
    if r.u64()? != mask {
        return Err("made with another hash mask".into());
    }
    if r.u64()? != streams::hash_with(seed, mask, CHECK_INPUT) {
        return Err("made with another hash function".into());
    }
    let has_time = r.u64()?;
    let micros = r.u64()? as i64;
    let last_recorded_at = match has_time {
        0 => None,
        1 => Some(RecordedAt(
            Timestamp::from_micros(micros).ok_or("bad last time")?,
        )),
        _ => return Err("bad time flag".into()),
    };
    let n = r.count(16)?;
    let segments = r
        .u64s(2 * n)?
        .chunks_exact(2)
        .map(|c| Ok((c[0], u32::try_from(c[1]).map_err(|_| "bad fold")?)))
        .collect::<Result<Vec<_>, String>>()?;
    let n = r.count(8)?;
    let locations = r.u64s(n)?;
    let mut shards = Vec::with_capacity(SHARDS);
    for _ in 0..SHARDS {
        let slots = r.count(16)?;
        let len = r.u64()? as usize;
        let flat = r.u64s(2 * slots)?;
        shards.push(Shard {
            slots: flat
                .chunks_exact(2)
                .map(|c| Slot {
                    hash: c[0],
                    value: c[1],
                })
                .collect(),
            len,
        });
    }
    let n = r.count(8)?;
    let mut lists = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.count(8)?;
        lists.push(r.u64s(len)?);
    }
    if r.at != content.len() {
        return Err("bytes after the end".into());
    }
    let streams = StreamIndex::from_parts(seed, mask, shards, lists)?;
    if locations.len() as u64 > 0 && segments.is_empty() {
        return Err("events without segments".into());
    }
    Ok(Some(Checkpoint {
        segments,
        locations,
        last_recorded_at,
        streams,
    }))
}
