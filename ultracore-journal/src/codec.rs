//! The journal's binary encoding: record frames (length, CRC32C), record bodies (one append
//! batch each), event heads (the envelope in postcard), and [`JournalEvent`], which gives an
//! event type a versioned binary payload form with its own upcasting decoder.
//!
//! A frame is `[body_len: u32 LE][body_crc: u32 LE][head_crc: u32 LE][body]`, where `body_crc`
//! is the CRC32C of the body and `head_crc` the CRC32C of the first 8 bytes, so a damaged
//! length is caught before it is trusted. A body is `[first_position: u64 LE][count: u32 LE]`
//! followed by `count` events, each `[len: u32 LE][head (postcard)][payload]`. Positions are
//! implied (`first_position + i`), which keeps them contiguous by construction.
//!
//! Every function here is pure (bytes in, values out) so the fuzz target `journal_record`
//! drives exactly the code that recovery and reads run.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ultracore_core::event::{Envelope, Trace};
use ultracore_core::ids::{EventId, StreamId};
use ultracore_core::time::{EffectiveAt, RecordedAt};

/// Bytes in a frame header: body length, body CRC, header CRC.
pub const FRAME_HEADER_LEN: usize = 12;
/// Bytes before the first event in a body: first position, event count.
pub const BODY_HEADER_LEN: usize = 12;
/// Longest body the journal writes or accepts. Keeps a damaged length from asking for gigabytes
/// and keeps every event offset of a segment inside `u32`.
pub const RECORD_LEN_MAX: usize = 1 << 30;
/// Longest single event (head and payload), as in core's JSON codec.
pub const EVENT_LEN_MAX: usize = ultracore_core::event::ENCODED_EVENT_LEN_MAX;

const _: () = assert!(RECORD_LEN_MAX < u32::MAX as usize / 2);
const _: () = assert!(EVENT_LEN_MAX < RECORD_LEN_MAX);

/// An event type the journal can store: its payload's binary form, versioned.
///
/// The journal writes every payload in the form of [`JournalEvent::SCHEMA_VERSION`] and stores
/// that number in the event's head. A later build that changes the payload's shape bumps the
/// version and keeps a decoder for each older one: `decode_payload` matches on the stored
/// version, decodes the old shape (a frozen copy of the old type) and converts it to the
/// current one. That conversion is the upcaster; the log itself is never rewritten.
pub trait JournalEvent: Clone + Send + Sync + 'static {
    /// The payload form this build writes.
    const SCHEMA_VERSION: u16;
    /// Appends the payload's binary form to `out`.
    fn encode_payload(&self, out: &mut Vec<u8>);
    /// Decodes a payload written in `schema_version`'s form, upcasting it to the current type.
    fn decode_payload(schema_version: u16, bytes: &[u8]) -> Result<Self, String>;
}

/// Why bytes are not a valid record or event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the frame announces.
    #[error("incomplete record")]
    Incomplete,
    /// The frame header fails its checksum (the length cannot be trusted).
    #[error("record header checksum mismatch")]
    HeaderChecksum,
    /// The body fails its checksum.
    #[error("record body checksum mismatch")]
    BodyChecksum,
    /// Checksums pass but the content is not a valid record (a bug or a foreign file).
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// A record frame checked against its checksums.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The body.
    pub body: &'a [u8],
    /// Bytes the frame occupies (header + body).
    pub len: usize,
}

/// Checks the frame at the start of `buf` (which may hold more after it).
pub fn check_frame(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return Err(DecodeError::Incomplete);
    };
    if crc32c::crc32c(&head[..8]) != le_u32(head, 8) {
        return Err(DecodeError::HeaderChecksum);
    }
    let body_len = le_u32(head, 0) as usize;
    if !(BODY_HEADER_LEN..=RECORD_LEN_MAX).contains(&body_len) {
        return Err(DecodeError::Malformed(format!("body length {body_len}")));
    }
    let Some(body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + body_len) else {
        return Err(DecodeError::Incomplete);
    };
    if crc32c::crc32c(body) != le_u32(head, 4) {
        return Err(DecodeError::BodyChecksum);
    }
    Ok(Frame {
        body,
        len: FRAME_HEADER_LEN + body_len,
    })
}

/// One event of a body: its offset within the body and its bytes (length prefix included).
pub type BodyEvent<'a> = (usize, &'a [u8]);

/// The events of a checked body: the first position and each event's bytes with its offset
/// within the body.
pub fn split_body(body: &[u8]) -> Result<(u64, Vec<BodyEvent<'_>>), DecodeError> {
    let malformed = |s: &str| DecodeError::Malformed(s.to_string());
    if body.len() < BODY_HEADER_LEN {
        return Err(malformed("body shorter than its header"));
    }
    let first = le_u64(body, 0);
    let count = le_u32(body, 8) as usize;
    if first == 0 {
        return Err(malformed("first position 0"));
    }
    if count == 0 || count > ultracore_core::limits::EVENTS_PER_APPEND_MAX {
        return Err(malformed("event count out of range"));
    }
    if first.checked_add(count as u64).is_none() {
        return Err(malformed("positions overflow"));
    }
    let mut events = Vec::with_capacity(count);
    let mut at = BODY_HEADER_LEN;
    for _ in 0..count {
        let len = body
            .get(at..at + 4)
            .map(|b| le_u32(b, 0) as usize)
            .ok_or_else(|| malformed("event length past the body"))?;
        if len > EVENT_LEN_MAX {
            return Err(malformed("event too long"));
        }
        let bytes = body
            .get(at..at + 4 + len)
            .ok_or_else(|| malformed("event past the body"))?;
        events.push((at, bytes));
        at += 4 + len;
    }
    if at != body.len() {
        return Err(malformed("bytes after the last event"));
    }
    Ok((first, events))
}

/// The envelope fields, in the order they are written. Positions are implied by the record.
#[derive(Serialize)]
struct HeadRef<'a> {
    stream: &'a StreamId,
    stream_version: u64,
    recorded_at: RecordedAt,
    effective_at: EffectiveAt,
    event_id: EventId,
    correlation_id: &'a Option<Arc<str>>,
    causation_id: &'a Option<Arc<str>>,
    actor: &'a Option<Arc<str>>,
    schema_version: u16,
}

#[derive(Deserialize)]
struct Head {
    stream: StreamId,
    stream_version: u64,
    recorded_at: RecordedAt,
    effective_at: EffectiveAt,
    event_id: EventId,
    correlation_id: Option<Arc<str>>,
    causation_id: Option<Arc<str>>,
    actor: Option<Arc<str>>,
    schema_version: u16,
}

/// The prefix of [`Head`] that recovery needs to rebuild the index.
#[derive(Deserialize)]
struct ScanHead {
    stream: StreamId,
    stream_version: u64,
    recorded_at: RecordedAt,
}

/// [`ScanHead`] with the stream name borrowed from the record (no allocation, no parse).
#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow)]
    stream: &'a str,
    stream_version: u64,
    recorded_at: RecordedAt,
}

/// What the index needs from one event, the stream as the text stored in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawKey<'a> {
    /// Its stream's name (as [`StreamId`]'s `Display` writes it).
    pub stream: &'a str,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its transaction time.
    pub recorded_at: RecordedAt,
}

/// What the index needs from one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    /// Its stream.
    pub stream: StreamId,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its transaction time.
    pub recorded_at: RecordedAt,
}

/// A batch's events as one frame, plus where each event starts within it.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    /// The whole frame, ready to write.
    pub frame: Vec<u8>,
    /// Offset of each event's length prefix from the start of the frame.
    pub event_offsets: Vec<u32>,
}

/// Why a batch cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An event or the whole batch exceeds the limits.
    #[error("{0}")]
    TooLarge(String),
    /// An envelope claims a schema version other than the one this build writes.
    #[error("event {index} has schema version {found}; this journal writes {writes}")]
    SchemaVersion {
        /// Index in the batch.
        index: usize,
        /// What the envelope says.
        found: u16,
        /// What the codec writes.
        writes: u16,
    },
}

/// Encodes a batch as one frame. Positions are not checked here (the writer validates the
/// batch before writing); the frame implies `events[0].position + i` for event `i`.
pub fn encode_record<E: JournalEvent>(
    events: &[Envelope<E>],
) -> Result<EncodedRecord, EncodeError> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + BODY_HEADER_LEN + events.len() * 160);
    frame.resize(FRAME_HEADER_LEN, 0);
    let first = events.first().map_or(0, |e| e.position);
    frame.extend_from_slice(&first.to_le_bytes());
    frame.extend_from_slice(&(events.len() as u32).to_le_bytes());
    let mut event_offsets = Vec::with_capacity(events.len());
    for (index, env) in events.iter().enumerate() {
        if env.schema_version != E::SCHEMA_VERSION {
            return Err(EncodeError::SchemaVersion {
                index,
                found: env.schema_version,
                writes: E::SCHEMA_VERSION,
            });
        }
        let start = frame.len();
        event_offsets.push(start as u32);
        frame.extend_from_slice(&[0; 4]);
        let head = HeadRef {
            stream: &env.stream,
            stream_version: env.stream_version,
            recorded_at: env.recorded_at,
            effective_at: env.effective_at,
            event_id: env.event_id,
            correlation_id: &env.trace.correlation_id,
            causation_id: &env.trace.causation_id,
            actor: &env.trace.actor,
            schema_version: env.schema_version,
        };
        frame = postcard::to_extend(&head, frame)
            .map_err(|e| EncodeError::TooLarge(format!("event {index} head: {e}")))?;
        env.payload.encode_payload(&mut frame);
        let len = frame.len() - start - 4;
        if len > EVENT_LEN_MAX {
            return Err(EncodeError::TooLarge(format!(
                "event {index} encodes to {len} bytes; at most {EVENT_LEN_MAX}"
            )));
        }
        frame[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        if frame.len() - FRAME_HEADER_LEN > RECORD_LEN_MAX {
            return Err(EncodeError::TooLarge(format!(
                "the batch encodes to more than {RECORD_LEN_MAX} bytes"
            )));
        }
    }
    let body_len = (frame.len() - FRAME_HEADER_LEN) as u32;
    let body_crc = crc32c::crc32c(&frame[FRAME_HEADER_LEN..]);
    frame[0..4].copy_from_slice(&body_len.to_le_bytes());
    frame[4..8].copy_from_slice(&body_crc.to_le_bytes());
    let head_crc = crc32c::crc32c(&frame[0..8]);
    frame[8..12].copy_from_slice(&head_crc.to_le_bytes());
    Ok(EncodedRecord {
        frame,
        event_offsets,
    })
}

/// Splits one event's bytes (with its length prefix) into the prefix-free content.
fn event_content(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let len = bytes
        .get(..4)
        .map(|b| le_u32(b, 0) as usize)
        .ok_or(DecodeError::Incomplete)?;
    if len > EVENT_LEN_MAX {
        return Err(DecodeError::Malformed("event too long".into()));
    }
    bytes.get(4..4 + len).ok_or(DecodeError::Incomplete)
}

/// Length of the event starting at `bytes` (prefix included), read from its prefix.
pub fn event_len(bytes: &[u8]) -> Result<usize, DecodeError> {
    event_content(bytes).map(|c| c.len() + 4)
}

/// Decodes one event (starting with its length prefix) that sits at `position`.
pub fn decode_event<E: JournalEvent>(
    bytes: &[u8],
    position: u64,
) -> Result<Envelope<E>, DecodeError> {
    let content = event_content(bytes)?;
    let (head, payload): (Head, &[u8]) = postcard::take_from_bytes(content)
        .map_err(|e| DecodeError::Malformed(format!("event head: {e}")))?;
    let payload = E::decode_payload(head.schema_version, payload)
        .map_err(|e| DecodeError::Malformed(format!("payload: {e}")))?;
    Ok(Envelope {
        event_id: head.event_id,
        stream: head.stream,
        stream_version: head.stream_version,
        position,
        recorded_at: head.recorded_at,
        effective_at: head.effective_at,
        trace: Trace {
            correlation_id: head.correlation_id,
            causation_id: head.causation_id,
            actor: head.actor,
        },
        schema_version: head.schema_version,
        payload,
    })
}

/// Decodes only what the index needs (stream, version, time) from one event.
pub fn scan_event(bytes: &[u8]) -> Result<EventKey, DecodeError> {
    let content = event_content(bytes)?;
    let (h, _): (ScanHead, &[u8]) = postcard::take_from_bytes(content)
        .map_err(|e| DecodeError::Malformed(format!("event head: {e}")))?;
    Ok(EventKey {
        stream: h.stream,
        stream_version: h.stream_version,
        recorded_at: h.recorded_at,
    })
}

/// Like [`scan_event`], without building a [`StreamId`]: what the recovery scan uses. The
/// name is not checked against the id rules here (a full decode, which every read does, does).
pub fn scan_event_raw(bytes: &[u8]) -> Result<RawKey<'_>, DecodeError> {
    let content = event_content(bytes)?;
    let (h, _): (RawHead<'_>, &[u8]) = postcard::take_from_bytes(content)
        .map_err(|e| DecodeError::Malformed(format!("event head: {e}")))?;
    Ok(RawKey {
        stream: h.stream,
        stream_version: h.stream_version,
        recorded_at: h.recorded_at,
    })
}

/// Bytes from an event's start that always hold its stream name: the length prefix, the
/// name's length (a varint) and the longest stream name.
pub const STREAM_NAME_SPAN: usize = 4 + 10 + ultracore_core::limits::ID_LEN_MAX + 16;

/// The stream name of the event at the start of `bytes` (length prefix included), reading no
/// further than the name, so `bytes` may be just the event's first [`STREAM_NAME_SPAN`]
/// bytes. The index confirms a hash match with it.
pub fn event_stream(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let len = bytes
        .get(..4)
        .map(|b| le_u32(b, 0) as usize)
        .ok_or(DecodeError::Incomplete)?;
    let content = &bytes[4..bytes.len().min(4 + len)];
    let mut name_len: u64 = 0;
    for (i, &b) in content.iter().enumerate().take(10) {
        name_len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = i + 1;
            let end = usize::try_from(name_len)
                .ok()
                .and_then(|n| n.checked_add(start))
                .ok_or_else(|| DecodeError::Malformed("stream name length".into()))?;
            return content.get(start..end).ok_or(DecodeError::Incomplete);
        }
    }
    Err(DecodeError::Incomplete)
}

/// Decodes a whole frame at the start of `buf` into its events; returns them and the frame's
/// length. What recovery, the fuzz target and tests use to read one record.
pub fn decode_record<E: JournalEvent>(
    buf: &[u8],
) -> Result<(Vec<Envelope<E>>, usize), DecodeError> {
    let frame = check_frame(buf)?;
    let (first, events) = split_body(frame.body)?;
    let decoded = events
        .iter()
        .enumerate()
        .map(|(i, (_, bytes))| decode_event(bytes, first + i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((decoded, frame.len))
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}
