//! `FileSnapshotStore`: core's [`SnapshotStore`] on files. Each save writes a new file named
//! after its scope and position (temp file, fsync, rename, directory fsync), so a crash leaves
//! the old snapshots and maybe the new one, never a mix; then all but the newest
//! [`SNAPSHOTS_KEPT`] of that scope are deleted. `load` returns the newest one that passes its
//! checks, so one damaged file costs a longer replay, not a full one.
//!
//! File: `magic "UCSNAPSH"`, `format_version: u16`, `scope_len: u16`, scope bytes,
//! `position: u64`, `schema_fingerprint: u64`, `body_len: u64`, body, `crc32c` of everything
//! before it; little endian. Name: `<scope>.<position, 20 digits>.snapshot` (a scope with
//! other characters than `A-Z a-z 0-9 - _` is written as `x-<hex>`). A file named
//! `<scope>.snapshot` (one file per scope, written before pruning existed) is still read.
//! When every file of a scope fails a check, `load` reports `StoreError::Corrupt`; the engine
//! then replays the log (snapshots are a cache).
//!
//! The IO is synchronous inside the async methods: snapshots are written rarely, and keeping
//! the crate runtime-agnostic matters more than not blocking an executor thread for that time
//! (the server calls them from a blocking thread).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ultracore_core::store::{Snapshot, SnapshotStore, StoreError};

use crate::codec::{le_u32, le_u64};
use crate::error::JournalError;
use crate::segment::sync_dir;

const MAGIC: &[u8; 8] = b"UCSNAPSH";
const FORMAT_VERSION: u16 = 1;
/// Longest scope name.
pub const SCOPE_LEN_MAX: usize = 200;

/// How many snapshots of one scope a save leaves on disk: the newest, and one to fall back on
/// if the newest turns out damaged.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Snapshots as files in one directory.
pub struct FileSnapshotStore {
    dir: PathBuf,
}

impl FileSnapshotStore {
    /// Uses (and creates) `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileSnapshotStore, JournalError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(JournalError::io(&dir))?;
        Ok(FileSnapshotStore { dir })
    }

    /// The file that holds `scope`'s snapshot at `position`.
    pub fn path_of(&self, scope: &str, position: u64) -> PathBuf {
        self.dir
            .join(format!("{}.{position:020}.snapshot", file_stem(scope)))
    }

    /// `scope`'s snapshot files and the positions they hold, newest first.
    pub fn files_of(&self, scope: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        let unavailable = |e: std::io::Error| {
            StoreError::Unavailable(format!("snapshots {}: {e}", self.dir.display()))
        };
        let stem = file_stem(scope);
        let legacy = format!("{stem}.snapshot");
        let mut files = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(unavailable)? {
            let item = item.map_err(unavailable)?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let position = if name == legacy {
                // Its position is in its header.
                let mut start = vec![0u8; 20 + SCOPE_LEN_MAX];
                let n = File::open(item.path())
                    .and_then(|mut f| read_up_to(&mut f, &mut start))
                    .map_err(unavailable)?;
                match head(&start[..n]) {
                    Some((s, position)) if s == scope => position,
                    _ => 0,
                }
            } else {
                let digits = name
                    .strip_prefix(stem.as_str())
                    .and_then(|r| r.strip_prefix('.'))
                    .and_then(|r| r.strip_suffix(".snapshot"));
                match digits.filter(|d| d.len() == 20).map(str::parse::<u64>) {
                    Some(Ok(position)) => position,
                    _ => continue,
                }
            };
            files.push((position, item.path()));
        }
        files.sort_by(|a, b| b.cmp(a));
        Ok(files)
    }

    /// Deletes all but the newest `keep` files of `scope`.
    fn prune(&self, scope: &str, keep: usize) -> Result<(), StoreError> {
        let files = self.files_of(scope)?;
        if files.len() <= keep {
            return Ok(());
        }
        for (_, path) in files.into_iter().skip(keep) {
            fs::remove_file(&path).map_err(|e| {
                StoreError::Unavailable(format!("snapshot {}: {e}", path.display()))
            })?;
        }
        sync_dir(&self.dir).map_err(StoreError::from)
    }
}

/// The file-name form of a scope.
fn file_stem(scope: &str) -> String {
    let plain = !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        scope.to_string()
    } else {
        let hex: String = scope.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    }
}

/// Everything in a snapshot file before the body (the body and the checksum are written
/// after it as they are: the body is never copied).
fn header(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.scope.len() + 44);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(s.scope.len() as u16).to_le_bytes());
    out.extend_from_slice(s.scope.as_bytes());
    out.extend_from_slice(&s.position.to_le_bytes());
    out.extend_from_slice(&s.schema_fingerprint.to_le_bytes());
    out.extend_from_slice(&(s.bytes.len() as u64).to_le_bytes());
    out
}

/// The scope and position at the start of a snapshot file, without reading its body.
fn head(b: &[u8]) -> Option<(String, u64)> {
    if b.get(..8)? != MAGIC || u16::from_le_bytes([*b.get(8)?, *b.get(9)?]) != FORMAT_VERSION {
        return None;
    }
    let scope_len = u16::from_le_bytes([b[10], b[11]]) as usize;
    let scope = std::str::from_utf8(b.get(12..12 + scope_len)?).ok()?;
    let position = le_u64(b.get(12 + scope_len..20 + scope_len)?, 0);
    Some((scope.to_string(), position))
}

#[async_trait]
impl SnapshotStore for FileSnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        if snapshot.scope.len() > SCOPE_LEN_MAX {
            return Err(StoreError::InvalidBatch(format!(
                "snapshot scope longer than {SCOPE_LEN_MAX} bytes"
            )));
        }
        // Keep a newer snapshot (as the in-memory store does): a slow saver must not replace it.
        let files = self.files_of(&snapshot.scope)?;
        if files.first().is_some_and(|(p, _)| *p > snapshot.position) {
            return Ok(());
        }
        let path = self.path_of(&snapshot.scope, snapshot.position);
        let unavailable = |e: std::io::Error| {
            StoreError::Unavailable(format!("snapshot {}: {e}", path.display()))
        };
        let tmp = path.with_extension("snapshot.tmp");
        let head = header(&snapshot);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &snapshot.bytes);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(unavailable)?;
        f.write_all(&head)
            .and_then(|_| f.write_all(&snapshot.bytes))
            .and_then(|_| f.write_all(&crc.to_le_bytes()))
            .and_then(|_| f.sync_all())
            .map_err(unavailable)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(unavailable)?;
        sync_dir(&self.dir).map_err(StoreError::from)?;
        self.prune(&snapshot.scope, SNAPSHOTS_KEPT)
    }

    async fn load(&self, scope: &str) -> Result<Option<Snapshot>, StoreError> {
        let mut first_error = None;
        for (_, path) in self.files_of(scope)? {
            match load_file(&path, scope) {
                Ok(snap) => return Ok(Some(snap)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    async fn remove(&self, scope: &str) -> Result<(), StoreError> {
        self.prune(scope, 0)
    }
}

/// Reads and checks one snapshot file of `scope`. The body is read straight into the buffer
/// the snapshot keeps (no copy of it), after the header's length has been checked against the
/// file's, so a damaged length cannot make it allocate more than the file holds.
fn load_file(path: &Path, scope: &str) -> Result<Snapshot, StoreError> {
    let unavailable =
        |e: std::io::Error| StoreError::Unavailable(format!("snapshot {}: {e}", path.display()));
    let bad = |why: &str| StoreError::Corrupt(format!("snapshot {}: {why}", path.display()));
    let mut f = File::open(path).map_err(unavailable)?;
    let file_len = f.metadata().map_err(unavailable)?.len();
    // Magic, format version and scope length, then the scope, position, schema and body length.
    let mut head = vec![0u8; 12];
    if read_up_to(&mut f, &mut head).map_err(unavailable)? < head.len() {
        return Err(bad("too short"));
    }
    if head[..8] != MAGIC[..] || u16::from_le_bytes([head[8], head[9]]) != FORMAT_VERSION {
        return Err(bad("bad header"));
    }
    let scope_len = u16::from_le_bytes([head[10], head[11]]) as usize;
    if scope_len > SCOPE_LEN_MAX {
        return Err(bad("bad header"));
    }
    head.resize(12 + scope_len + 24, 0);
    if read_up_to(&mut f, &mut head[12..]).map_err(unavailable)? < scope_len + 24 {
        return Err(bad("truncated"));
    }
    let fields = &head[12 + scope_len..];
    let (schema_fingerprint, body_len) = (le_u64(fields, 8), le_u64(fields, 16));
    if Some(file_len) != body_len.checked_add(head.len() as u64 + 4) {
        return Err(bad("body length mismatch"));
    }
    let mut bytes = Vec::with_capacity(body_len as usize);
    (&mut f)
        .take(body_len)
        .read_to_end(&mut bytes)
        .map_err(unavailable)?;
    let mut crc = [0u8; 4];
    if bytes.len() as u64 != body_len || read_up_to(&mut f, &mut crc).map_err(unavailable)? < 4 {
        return Err(bad("truncated"));
    }
    if crc32c::crc32c_append(crc32c::crc32c(&head), &bytes) != le_u32(&crc, 0) {
        return Err(bad("checksum mismatch"));
    }
    let (found, position) = self::head(&head).ok_or_else(|| bad("bad header"))?;
    if found != scope {
        return Err(StoreError::Corrupt(format!(
            "snapshot {} holds scope {found:?}",
            path.display()
        )));
    }
    Ok(Snapshot {
        scope: scope.to_string(),
        position,
        schema_fingerprint,
        bytes: bytes.into(),
    })
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
