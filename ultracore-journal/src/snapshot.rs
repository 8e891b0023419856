//! `FileSnapshotStore`: core's [`SnapshotStore`] on files, one per scope, replaced atomically
//! (temp file, fsync, rename, directory fsync) so a crash leaves the old snapshot or the new
//! one, never a mix.
//!
//! File: `magic "UCSNAPSH"`, `format_version: u16`, `scope_len: u16`, scope bytes,
//! `position: u64`, `schema_fingerprint: u64`, `body_len: u64`, body, `crc32c` of everything
//! before it; little endian. A file that fails a check is reported as `StoreError::Corrupt`;
//! the engine then replays the log (snapshots are a cache).
//!
//! The IO is synchronous inside the async methods: snapshots are written rarely, and keeping
//! the crate runtime-agnostic matters more than not blocking an executor thread for that time.

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

    /// The file that holds `scope`'s snapshot.
    pub fn path_of(&self, scope: &str) -> PathBuf {
        let plain = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let name = if plain {
            scope.to_string()
        } else {
            let hex: String = scope.bytes().map(|b| format!("{b:02x}")).collect();
            format!("x-{hex}")
        };
        self.dir.join(format!("{name}.snapshot"))
    }
}

fn encode(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.bytes.len() + s.scope.len() + 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(s.scope.len() as u16).to_le_bytes());
    out.extend_from_slice(s.scope.as_bytes());
    out.extend_from_slice(&s.position.to_le_bytes());
    out.extend_from_slice(&s.schema_fingerprint.to_le_bytes());
    out.extend_from_slice(&(s.bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&s.bytes);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
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

fn decode(path: &Path, b: &[u8]) -> Result<Snapshot, StoreError> {
    let bad = |why: &str| StoreError::Corrupt(format!("snapshot {}: {why}", path.display()));
    if b.len() < 4 {
        return Err(bad("too short"));
    }
    let (content, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(content) != le_u32(crc, 0) {
        return Err(bad("checksum mismatch"));
    }
    let (scope, position) = head(content).ok_or_else(|| bad("bad header"))?;
    let at = 20 + scope.len();
    let fields = content.get(at..at + 16).ok_or_else(|| bad("truncated"))?;
    let schema_fingerprint = le_u64(fields, 0);
    let body_len = le_u64(fields, 8);
    let body = &content[at + 16..];
    if body.len() as u64 != body_len {
        return Err(bad("body length mismatch"));
    }
    Ok(Snapshot {
        scope,
        position,
        schema_fingerprint,
        bytes: body.into(),
    })
}

#[async_trait]
impl SnapshotStore for FileSnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        if snapshot.scope.len() > SCOPE_LEN_MAX {
            return Err(StoreError::InvalidBatch(format!(
                "snapshot scope longer than {SCOPE_LEN_MAX} bytes"
            )));
        }
        let path = self.path_of(&snapshot.scope);
        let unavailable = |e: std::io::Error| {
            StoreError::Unavailable(format!("snapshot {}: {e}", path.display()))
        };
        // Keep a newer snapshot (as the in-memory store does): a slow saver must not replace it.
        if let Ok(mut f) = File::open(&path) {
            let mut start = vec![0u8; 20 + SCOPE_LEN_MAX];
            let n = read_up_to(&mut f, &mut start).map_err(unavailable)?;
            if let Some((scope, position)) = head(&start[..n]) {
                if scope == snapshot.scope && position > snapshot.position {
                    return Ok(());
                }
            }
        }
        let tmp = path.with_extension("snapshot.tmp");
        let bytes = encode(&snapshot);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(unavailable)?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(unavailable)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(unavailable)?;
        sync_dir(&self.dir).map_err(StoreError::from)
    }

    async fn load(&self, scope: &str) -> Result<Option<Snapshot>, StoreError> {
        let path = self.path_of(scope);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "snapshot {}: {e}",
                    path.display()
                )))
            }
        };
        let snap = decode(&path, &bytes)?;
        if snap.scope != scope {
            return Err(StoreError::Corrupt(format!(
                "snapshot {} holds scope {:?}",
                path.display(),
                snap.scope
            )));
        }
        Ok(Some(snap))
    }
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
