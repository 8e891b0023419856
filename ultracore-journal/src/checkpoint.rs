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
//!
//! # Links
//!
//! Rewriting the whole index after every snapshot costs O(events) each time (346 MB at 9.6 M
//! events). So the file above is the *base* of a chain, and each later checkpoint writes only
//! a *link* (`index.checkpoint.1`, `.2`, …): the events since the chain's last checkpoint, each
//! as its location and the two keys the stream index files it by (stream hash, position of the
//! stream's first event), plus the segments' covered lengths and folds and the last
//! transaction time as of its end. A link names its base (events covered and the base file's
//! CRC) and the number of events before it, so a link of another chain, or one that does not
//! follow on, is never applied: load stops at the first link that is missing, damaged or out
//! of place, and the scan at open decodes the rest (a whole link whose keys cannot fit the
//! index cannot come from a crash, and refuses the whole checkpoint). A new base is written once the links would
//! cover as many events as the base (or [`LINKS_MAX`] links exist), then the links of the old
//! chain are removed; so the bytes written for checkpoints stay O(events) in all.
//!
//! Link file: `magic "UCJCKLN1"`, `format: u16`, 6 reserved bytes, `base events`, `base crc`,
//! `link number`, `events before`, `has_time`, `last_recorded_at`, `segments: u64` then each
//! covered length and fold, `events: u64` then `(location, hash, first)` per event, and the
//! CRC32C of everything before it.

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
const LINK_MAGIC: &[u8; 8] = b"UCJCKLN1";
/// Links at most in one chain: then the next checkpoint writes a new base.
pub const LINKS_MAX: u64 = 64;

/// What a link names its base by: the events it covers and the CRC32C that ends its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BaseId {
    pub events: u64,
    pub crc: u32,
}

/// The events after the chain's previous checkpoint (see the module doc).
pub(crate) struct Link {
    pub base: BaseId,
    /// 1 for the first link after the base.
    pub number: u64,
    /// Events covered before this link (the base's and earlier links').
    pub before: u64,
    /// As in [`Checkpoint`], as of this link's end.
    pub segments: Vec<(u64, u32)>,
    pub last_recorded_at: Option<RecordedAt>,
    /// Per event, in position order: its location, its stream's hash and the position of its
    /// stream's first event.
    pub events: Vec<[u64; 3]>,
}

/// A chain as loaded: the checkpoint it adds up to, its base and the links applied.
pub(crate) struct Loaded {
    pub checkpoint: Checkpoint,
    pub base: BaseId,
    pub links: u64,
    /// Why a link file that exists was not applied, if one was not (the chain should not be
    /// extended then: the next checkpoint is a new base, which removes every link file).
    pub link_ignored: Option<String>,
}

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

fn link_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{FILE_NAME}.{number}"))
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

/// Writes `cp` atomically into `dir` as the base of a new chain; the caller then removes the
/// old chain's links ([`remove_links`]).
pub(crate) fn save(dir: &Path, cp: &Checkpoint) -> Result<BaseId, JournalError> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let io = JournalError::io(&tmp);
    let write = || -> std::io::Result<u32> {
        let mut w = create(&tmp, MAGIC)?;
        let (seed, mask) = (cp.streams.seed(), cp.streams.mask());
        w.u64(seed)?;
        w.u64(mask)?;
        w.u64(streams::hash_with(seed, mask, CHECK_INPUT))?;
        put_head(&mut w, cp.last_recorded_at, &cp.segments)?;
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
        finish(w)
    };
    let crc = write().map_err(io)?;
    let dest = path(dir);
    fs::rename(&tmp, &dest).map_err(JournalError::io(&dest))?;
    sync_dir(dir)?;
    Ok(BaseId {
        events: cp.locations.len() as u64,
        crc,
    })
}

/// Creates (or truncates) `path` and writes the head every checkpoint file starts with.
fn create(path: &Path, magic: &[u8; 8]) -> std::io::Result<CrcWriter<BufWriter<fs::File>>> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, f),
        crc: 0,
    };
    w.put(magic)?;
    w.put(&FORMAT.to_le_bytes())?;
    w.put(&[0; 6])?;
    Ok(w)
}

/// Appends the CRC, syncs; returns the CRC.
fn finish(w: CrcWriter<BufWriter<fs::File>>) -> std::io::Result<u32> {
    let crc = w.crc;
    let mut f = w.inner.into_inner().map_err(|e| e.into_error())?;
    f.write_all(&crc.to_le_bytes())?;
    f.sync_all()?;
    Ok(crc)
}

fn put_head<W: Write>(
    w: &mut CrcWriter<W>,
    last_recorded_at: Option<RecordedAt>,
    segments: &[(u64, u32)],
) -> std::io::Result<()> {
    w.u64(u64::from(last_recorded_at.is_some()))?;
    w.u64(last_recorded_at.map_or(0, |t| t.0.as_micros()) as u64)?;
    w.u64(segments.len() as u64)?;
    let flat: Vec<u64> = segments
        .iter()
        .flat_map(|&(l, f)| [l, u64::from(f)])
        .collect();
    w.u64s(&flat)
}

/// Writes `link` atomically into `dir`; returns its size in bytes.
pub(crate) fn save_link(dir: &Path, link: &Link) -> Result<u64, JournalError> {
    let dest = link_path(dir, link.number);
    let tmp = dest.with_extension(format!("{}.tmp", link.number));
    let write = || -> std::io::Result<()> {
        let mut w = create(&tmp, LINK_MAGIC)?;
        w.u64(link.base.events)?;
        w.u64(u64::from(link.base.crc))?;
        w.u64(link.number)?;
        w.u64(link.before)?;
        put_head(&mut w, link.last_recorded_at, &link.segments)?;
        w.u64(link.events.len() as u64)?;
        w.u64s(link.events.as_flattened())?;
        finish(w).map(|_| ())
    };
    write().map_err(JournalError::io(&tmp))?;
    fs::rename(&tmp, &dest).map_err(JournalError::io(&dest))?;
    sync_dir(dir)?;
    Ok(fs::metadata(&dest).map_or(0, |m| m.len()))
}

/// The link files (and leftover temp files of one) in `dir`: number and path.
fn link_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let prefix = format!("{FILE_NAME}.");
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(JournalError::io(dir))? {
        let e = e.map_err(JournalError::io(dir))?;
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if let Ok(number) = rest.strip_suffix(".tmp").unwrap_or(rest).parse::<u64>() {
            out.push((number, e.path()));
        }
    }
    Ok(out)
}

/// Removes every link file (and leftover temp file of one) in `dir`.
pub(crate) fn remove_links(dir: &Path) -> Result<(), JournalError> {
    let files = link_files(dir)?;
    for (_, path) in &files {
        fs::remove_file(path).map_err(JournalError::io(path))?;
    }
    if !files.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
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

/// Reads a file that ends with the CRC32C of the rest and starts with `magic` and [`FORMAT`]:
/// its content without the CRC, and the CRC.
fn checked(b: &[u8], magic: &[u8; 8]) -> Result<u32, String> {
    if b.len() < 20 || &b[..8] != magic {
        return Err("not a checkpoint".into());
    }
    let (content, crc) = b.split_at(b.len() - 4);
    let crc = le_u32(crc, 0);
    if crc32c::crc32c(content) != crc {
        return Err("checksum mismatch".into());
    }
    if u16::from_le_bytes([b[8], b[9]]) != FORMAT {
        return Err("unknown format".into());
    }
    Ok(crc)
}

/// What a base and a link both start with: the last transaction time and the segments covered.
type Head = (Option<RecordedAt>, Vec<(u64, u32)>);

impl Reader<'_> {
    fn head(&mut self) -> Result<Head, String> {
        let has_time = self.u64()?;
        let micros = self.u64()? as i64;
        let last_recorded_at = match has_time {
            0 => None,
            1 => Some(RecordedAt(
                Timestamp::from_micros(micros).ok_or("bad last time")?,
            )),
            _ => return Err("bad time flag".into()),
        };
        let n = self.count(16)?;
        let segments = self
            .u64s(2 * n)?
            .chunks_exact(2)
            .map(|c| Ok((c[0], u32::try_from(c[1]).map_err(|_| "bad fold")?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok((last_recorded_at, segments))
    }
}

/// The checkpoint chain in `dir`, if there is a base that is intact and made with this hash
/// mask, with every link after it that is intact and follows on (see the module doc).
/// `Err` says why the base was not usable (the caller reports it and scans).
pub(crate) fn load(dir: &Path, mask: u64) -> Result<Option<Loaded>, String> {
    let Some((mut checkpoint, base)) = load_base(dir, mask)? else {
        return Ok(None);
    };
    let mut links = 0;
    let mut link_ignored = None;
    loop {
        let p = link_path(dir, links + 1);
        let b = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                link_ignored = Some(format!("{}: {e}", p.display()));
                break;
            }
        };
        // A link that is not whole or not in place ends the chain before it (the scan at
        // open decodes its events); one that is but whose keys do not fit the index cannot be
        // explained by a crash, and the whole checkpoint is refused.
        let link = match parse_link(&b, base, links + 1, &checkpoint) {
            Ok(link) => link,
            Err(why) => {
                link_ignored = Some(format!("{}: {why}", p.display()));
                break;
            }
        };
        apply_link(link, &mut checkpoint).map_err(|why| format!("{}: {why}", p.display()))?;
        links += 1;
    }
    if link_ignored.is_none() {
        // Links after a missing one (or a temp file) are not applied either: say so, so
        // that the caller starts a new chain and they are removed.
        let mut later: Vec<u64> = link_files(dir)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|&n| n > links)
            .collect();
        later.sort_unstable();
        later.dedup();
        if !later.is_empty() {
            link_ignored = Some(format!(
                "link {} is missing; not applied: links {later:?}",
                links + 1
            ));
        }
    }
    Ok(Some(Loaded {
        checkpoint,
        base,
        links,
        link_ignored,
    }))
}

/// The link file `b`, checked to be whole and to be link `number` of the chain on `base`
/// following on from `cp`.
fn parse_link(b: &[u8], base: BaseId, number: u64, cp: &Checkpoint) -> Result<Link, String> {
    checked(b, LINK_MAGIC)?;
    let content = &b[..b.len() - 4];
    let mut r = Reader { b: content, at: 16 };
    let named = BaseId {
        events: r.u64()?,
        crc: u32::try_from(r.u64()?).map_err(|_| "bad base crc")?,
    };
    if named != base {
        return Err("a link of another chain".into());
    }
    if r.u64()? != number {
        return Err("numbered out of place".into());
    }
    let before = r.u64()?;
    if before != cp.locations.len() as u64 {
        return Err("does not follow on from the link before".into());
    }
    let (last_recorded_at, segments) = r.head()?;
    let n = r.count(24)?;
    let flat = r.u64s(3 * n)?;
    if r.at != content.len() {
        return Err("bytes after the end".into());
    }
    Ok(Link {
        base,
        number,
        before,
        segments,
        last_recorded_at,
        events: flat.chunks_exact(3).map(|e| [e[0], e[1], e[2]]).collect(),
    })
}

/// Adds `link`'s events to `cp`. On `Err`, `cp` is half-changed: the caller refuses the whole
/// checkpoint.
fn apply_link(link: Link, cp: &mut Checkpoint) -> Result<(), String> {
    if link.segments.len() < cp.segments.len()
        || cp
            .segments
            .iter()
            .zip(&link.segments)
            .any(|(old, new)| new.0 < old.0)
    {
        return Err("covers less of the segments than the link before".into());
    }
    if link.last_recorded_at < cp.last_recorded_at {
        return Err("transaction time goes back".into());
    }
    for (i, &[location, hash, first]) in link.events.iter().enumerate() {
        cp.streams
            .try_push(hash, first, link.before + 1 + i as u64)?;
        cp.locations.push(location);
    }
    cp.segments = link.segments;
    cp.last_recorded_at = link.last_recorded_at;
    Ok(())
}

/// The chain's base in `dir`, if there is one that is intact and made with this hash mask.
fn load_base(dir: &Path, mask: u64) -> Result<Option<(Checkpoint, BaseId)>, String> {
    let p = path(dir);
    let b = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    parse_base(&b, mask).map(Some)
}

/// The bytes of a chain's files, as `Journal::open` reads them: a base, then links in order, each
/// applied until one is refused. Returns the events covered and the links applied, or why the
/// whole checkpoint is refused. What the fuzz target `index_checkpoint` runs on arbitrary bytes:
/// it may refuse, never panic.
pub fn decode_files(base: &[u8], links: &[&[u8]], mask: u64) -> Result<(u64, u64), String> {
    let (mut cp, id) = parse_base(base, mask)?;
    let mut applied = 0;
    for b in links {
        let Ok(link) = parse_link(b, id, applied + 1, &cp) else {
            break;
        };
        apply_link(link, &mut cp)?;
        applied += 1;
    }
    Ok((cp.locations.len() as u64, applied))
}

/// A base file's bytes, checked to be whole and made with this hash mask.
fn parse_base(b: &[u8], mask: u64) -> Result<(Checkpoint, BaseId), String> {
    let crc = checked(b, MAGIC)?;
    let content = &b[..b.len() - 4];
    let mut r = Reader { b: content, at: 16 };
    let seed = r.u64()?;
    if r.u64()? != mask {
        return Err("made with another hash mask".into());
    }
    if r.u64()? != streams::hash_with(seed, mask, CHECK_INPUT) {
        return Err("made with another hash function".into());
    }
    let (last_recorded_at, segments) = r.head()?;
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
    let base = BaseId {
        events: locations.len() as u64,
        crc,
    };
    Ok((
        Checkpoint {
            segments,
            locations,
            last_recorded_at,
            streams,
        },
        base,
    ))
}
