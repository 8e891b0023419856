//! The journal directory lock: an exclusive `flock` on `<dir>/LOCK`, taken before recovery
//! touches anything and held for the journal's life, so a second `Journal::open` on the same
//! directory (another process, or the same one) fails at once with
//! [`JournalError::Locked`] instead of interleaving writes and truncating the other's tail.
//!
//! `flock` locks belong to the open file description: the kernel releases them when the
//! process dies, however it dies (`kill -9` leaves no stale lock), and two opens in one
//! process exclude each other (unlike `fcntl` record locks). The holder writes its PID into the
//! file after locking, only so the refusal can name it; the lock itself is the `flock`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::error::JournalError;

/// Name of the lock file inside the journal directory.
pub const LOCK_FILE: &str = "LOCK";

/// A held directory lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of the journal directory `dir` without waiting.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, JournalError> {
        let path = dir.join(LOCK_FILE);
        match DirLock::try_file(&path).map_err(JournalError::io(&path))? {
            Ok(lock) => Ok(lock),
            Err(holder) => Err(JournalError::Locked {
                dir: dir.to_path_buf(),
                holder,
            }),
        }
    }

    /// Takes an exclusive `flock` on the file `path` (created if absent) without waiting, and
    /// writes this process's id into it. `Ok(Err(holder))` when another open file description
    /// holds it, with the holder's process id if it wrote one. For applications that guard a
    /// directory of their own the same way (the server locks its data directory with it).
    pub fn try_file(path: &Path) -> std::io::Result<Result<DirLock, Option<u32>>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Ok(Err(holder));
            }
            Err(e) => return Err(e.into()),
        }
        // Ours now: record who holds it (best effort, for the message of the next opener).
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        Ok(Ok(DirLock { _file: file }))
    }
}
