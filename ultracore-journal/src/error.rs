//! Errors of opening a journal or a snapshot directory, with stable codes (`docs/errors/`),
//! and the recovery report that says what open repaired.

use std::path::PathBuf;

use ultracore_core::store::StoreError;

/// Why a journal could not be opened. Appends and reads report [`StoreError`]s instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file system refused an operation.
    #[error("journal I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Stored data fails a check at a place where it cannot be a torn write: in the middle of
    /// the log, or in a segment that is not the last. Nothing was changed on disk.
    #[error("journal corrupt: {file} at byte {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the damaged record (or header) in that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A segment was written in a format this build does not read (a newer release).
    #[error(
        "journal segment {file} has format version {found}; this build reads up to {supported}"
    )]
    UnsupportedFormat {
        /// The segment file.
        file: PathBuf,
        /// Its format version.
        found: u16,
        /// The newest this build reads.
        supported: u16,
    },
    /// The configuration is out of range.
    #[error("invalid journal configuration: {0}")]
    Config(String),
    /// Another `Journal` (in this process or another) holds the directory.
    #[error("journal directory {dir} is locked by another process{}: only one journal (one writer) may open it", .holder.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    Locked {
        /// The journal directory.
        dir: PathBuf,
        /// The PID the holder wrote into the lock file, if it could be read.
        holder: Option<u32>,
    },
}

impl JournalError {
    /// The stable code of this error (a page in `docs/errors/`).
    pub fn code(&self) -> &'static str {
        match self {
            JournalError::Io { .. } => "journal_io",
            JournalError::Corrupt { .. } => "journal_corrupt",
            JournalError::UnsupportedFormat { .. } => "journal_unsupported_format",
            JournalError::Config(_) => "journal_config",
            JournalError::Locked { .. } => "journal_locked",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> JournalError {
        let path = path.into();
        move |source| JournalError::Io { path, source }
    }
}

impl From<JournalError> for StoreError {
    fn from(e: JournalError) -> StoreError {
        match e {
            JournalError::Io { .. } | JournalError::Locked { .. } => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Corrupt(e.to_string()),
        }
    }
}

/// A torn tail found and cut off at open: the end of the last segment held an incomplete or
/// checksum-failing last record, which a crash mid-write leaves behind. Its batch was never
/// acknowledged (acknowledgement follows the sync of the whole record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Where the torn record started; the file now ends here.
    pub offset: u64,
    /// Bytes of the torn write removed: from `offset` to the last non-zero byte (zeros after
    /// it are preallocated or never-written space, also removed).
    pub bytes_discarded: u64,
    /// What was wrong with them.
    pub reason: String,
}

/// What [`crate::Journal::open`] found and repaired. Callers should log it; a torn tail is
/// normal after a crash, but an operator may want to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Records (append batches) found intact.
    pub records: u64,
    /// Events found intact.
    pub events: u64,
    /// Bytes of intact data read.
    pub bytes: u64,
    /// The torn tail that was truncated, if there was one.
    pub torn_tail: Option<TornTail>,
    /// The position an index checkpoint covered, if open started from one (events up to it
    /// were checksummed and located but not decoded).
    pub checkpoint: Option<u64>,
    /// Why an index checkpoint file was not used (damaged, made with another hash, or
    /// disagreeing with the segments); the index was then rebuilt from a full scan.
    pub checkpoint_ignored: Option<String>,
    /// Links of the checkpoint's chain applied after its base (`checkpoint` counts them in).
    pub checkpoint_links: u64,
    /// Why the chain ended before a link file that exists (damaged, of an older chain, or out
    /// of place): the events from there on were decoded by the scan instead.
    pub checkpoint_link_ignored: Option<String>,
}
