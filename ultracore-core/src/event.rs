//! The event envelope every store keeps, the `DomainEvent` trait, and the versioned codec
//! with its upcaster chain.
//!
//! Wire form: a JSON object with the envelope fields and the payload under `payload`. On
//! decode, the payload goes through the upcasters registered for its type, from its stored
//! `schema_version` up to the current one, before it is deserialised: old events never need
//! rewriting (they cannot be: the log is immutable).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{EventId, StreamId};
use crate::time::{EffectiveAt, RecordedAt};

/// A domain's event type: what the envelope and the codec need to know about it.
pub trait DomainEvent: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// The event's type name (stable; part of the wire format).
    fn event_type(&self) -> &'static str;
    /// The schema version this code writes (shared by every event type of the domain).
    const SCHEMA_VERSION: u16;
    /// The stream (aggregate) the event belongs to.
    fn stream(&self) -> StreamId;
    /// Valid time, when the event has one.
    fn effective_at(&self) -> Option<EffectiveAt>;
    /// Upcasters for older schema versions, in any order.
    fn upcasters() -> &'static [Upcaster];
}

/// A pure function that lifts a stored payload of `event_type` from `from_version` to
/// `from_version + 1`.
#[derive(Clone, Copy)]
pub struct Upcaster {
    /// The event type it applies to.
    pub event_type: &'static str,
    /// The version it reads.
    pub from_version: u16,
    /// The transformation.
    pub upcast: fn(Value) -> Result<Value, String>,
}

/// Who and why: request context copied onto every event of a command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The request's correlation id (e.g. `X-Request-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Arc<str>>,
    /// The event or command that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Arc<str>>,
    /// The authenticated principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Arc<str>>,
}

/// A recorded event with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<E> {
    /// Unique id.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// 1-based version within the stream.
    pub stream_version: u64,
    /// 1-based position in the whole log; strictly increasing.
    pub position: u64,
    /// Transaction time; strictly increasing with position.
    pub recorded_at: RecordedAt,
    /// Valid time (the recorded time for events that have none of their own).
    pub effective_at: EffectiveAt,
    /// Request context.
    pub trace: Trace,
    /// Schema version of the payload as written.
    pub schema_version: u16,
    /// The event.
    pub payload: E,
}

impl<E: DomainEvent> Envelope<E> {
    /// The payload's type name.
    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }
}

/// Why bytes could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Not valid JSON of the envelope shape.
    #[error("malformed event record: {0}")]
    Malformed(String),
    /// Written by a newer version of the software.
    #[error("event {event_type} has schema version {found}, newer than the supported {supported}")]
    FromTheFuture {
        /// Type name.
        event_type: String,
        /// Stored version.
        found: u16,
        /// Newest this build reads.
        supported: u16,
    },
    /// An old version with no upcaster to lift it.
    #[error("no upcaster for {event_type} version {version}")]
    MissingUpcaster {
        /// Type name.
        event_type: String,
        /// Stored version.
        version: u16,
    },
    /// An upcaster refused the payload.
    #[error("upcasting {event_type} from version {version} failed: {reason}")]
    Upcast {
        /// Type name.
        event_type: String,
        /// Stored version.
        version: u16,
        /// Why.
        reason: String,
    },
    /// The payload does not match its type's schema.
    #[error("payload of {event_type} does not match its schema: {reason}")]
    Payload {
        /// Type name.
        event_type: String,
        /// Why.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope<P> {
    event_id: EventId,
    stream: StreamId,
    stream_version: u64,
    position: u64,
    recorded_at: RecordedAt,
    effective_at: EffectiveAt,
    #[serde(default)]
    trace: Trace,
    event_type: String,
    schema_version: u16,
    payload: P,
}

/// Longest encoded event the decoder accepts.
pub const ENCODED_EVENT_LEN_MAX: usize = 1 << 20;

/// Encodes an envelope as one JSON document.
pub fn encode<E: DomainEvent>(env: &Envelope<E>) -> Vec<u8> {
    let wire = WireEnvelope {
        event_id: env.event_id,
        stream: env.stream.clone(),
        stream_version: env.stream_version,
        position: env.position,
        recorded_at: env.recorded_at,
        effective_at: env.effective_at,
        trace: env.trace.clone(),
        event_type: env.payload.event_type().to_string(),
        schema_version: env.schema_version,
        payload: &env.payload,
    };
    // Serialising these plain data types to a Vec cannot fail (no maps with non-string keys,
    // no custom serialisers that error).
    serde_json::to_vec(&wire).expect("ledger events always serialise to JSON")
}

/// Decodes one JSON document into an envelope, upcasting old payloads.
pub fn decode<E: DomainEvent>(bytes: &[u8]) -> Result<Envelope<E>, CodecError> {
    if bytes.len() > ENCODED_EVENT_LEN_MAX {
        return Err(CodecError::Malformed("record too large".into()));
    }
    let wire: WireEnvelope<Value> =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let payload = decode_payload::<E>(&wire.event_type, wire.schema_version, wire.payload)?;
    Ok(Envelope {
        event_id: wire.event_id,
        stream: wire.stream,
        stream_version: wire.stream_version,
        position: wire.position,
        recorded_at: wire.recorded_at,
        effective_at: wire.effective_at,
        trace: wire.trace,
        schema_version: wire.schema_version,
        payload,
    })
}

/// Lifts a stored payload to the current schema and deserialises it.
pub fn decode_payload<E: DomainEvent>(
    event_type: &str,
    schema_version: u16,
    mut payload: Value,
) -> Result<E, CodecError> {
    let current = current_version::<E>();
    if schema_version > current {
        return Err(CodecError::FromTheFuture {
            event_type: event_type.to_string(),
            found: schema_version,
            supported: current,
        });
    }
    let mut v = schema_version;
    while v < current {
        let up = E::upcasters()
            .iter()
            .find(|u| u.event_type == event_type && u.from_version == v)
            .ok_or_else(|| CodecError::MissingUpcaster {
                event_type: event_type.to_string(),
                version: v,
            })?;
        payload = (up.upcast)(payload).map_err(|reason| CodecError::Upcast {
            event_type: event_type.to_string(),
            version: v,
            reason,
        })?;
        v += 1;
    }
    let e: E = serde_json::from_value(payload).map_err(|e| CodecError::Payload {
        event_type: event_type.to_string(),
        reason: e.to_string(),
    })?;
    if e.event_type() != event_type {
        return Err(CodecError::Payload {
            event_type: event_type.to_string(),
            reason: format!("payload is a {}", e.event_type()),
        });
    }
    Ok(e)
}

fn current_version<E: DomainEvent>() -> u16 {
    E::SCHEMA_VERSION
}
