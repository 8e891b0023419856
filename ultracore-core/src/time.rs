//! Time on the two axes: `Timestamp`, the `EffectiveAt` (valid time) and `RecordedAt`
//! (transaction time) newtypes, and the injected `Clock`.
//!
//! The core never reads the system clock: whoever drives it passes a [`Clock`] (or a `now`).
//! Timestamps are whole microseconds since the Unix epoch, UTC, so they order, hash and
//! subtract exactly, and cross JSON as RFC 3339 strings.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant: whole microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// Why a timestamp could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid timestamp: expected RFC 3339 between years 1 and 9999 (e.g. 2026-11-25T10:00:00Z)"
)]
pub struct TimestampError;

impl TimestampError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        "invalid_timestamp"
    }
}

impl Timestamp {
    /// The earliest representable instant (0001-01-01T00:00:00Z).
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// The latest representable instant (9999-12-31T23:59:59.999999Z).
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From microseconds since the epoch; `None` outside [`Timestamp::MIN`, `Timestamp::MAX`].
    pub const fn from_micros(micros: i64) -> Option<Timestamp> {
        if micros < Self::MIN.0 || micros > Self::MAX.0 {
            None
        } else {
            Some(Timestamp(micros))
        }
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// From whole seconds since the epoch; `None` when out of range.
    pub const fn from_secs(secs: i64) -> Option<Timestamp> {
        match secs.checked_mul(1_000_000) {
            Some(m) => Self::from_micros(m),
            None => None,
        }
    }

    /// This instant plus `micros` (may be negative), saturating at the representable range.
    pub fn saturating_add_micros(self, micros: i64) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(micros)
                .clamp(Self::MIN.0, Self::MAX.0),
        )
    }

    /// Parses RFC 3339 (any offset; normalised to UTC; sub-microsecond digits are rejected).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimestampError> {
        if s.len() > 64 {
            return Err(TimestampError);
        }
        let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| TimestampError)?;
        let nanos = dt.unix_timestamp_nanos();
        if nanos % 1_000 != 0 {
            return Err(TimestampError);
        }
        let micros = i64::try_from(nanos / 1_000).map_err(|_| TimestampError)?;
        Timestamp::from_micros(micros).ok_or(TimestampError)
    }

    fn to_offset_date_time(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000).ok()
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, e.g. `2026-11-25T10:00:00Z` or `2026-11-25T10:00:00.000001Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .to_offset_date_time()
            .and_then(|dt| dt.format(&Rfc3339).ok())
        {
            Some(s) => f.write_str(&s),
            // Unreachable for values built through the constructors, which bound the range.
            None => write!(f, "@{}us", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_i64(self.0);
        }
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let micros = i64::deserialize(d)?;
            return Timestamp::from_micros(micros)
                .ok_or_else(|| serde::de::Error::custom(TimestampError));
        }
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Valid time: when a fact takes effect in the world. Chosen by the caller (default: now).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EffectiveAt(pub Timestamp);

/// Transaction time: when the ledger learned a fact. Assigned at append, strictly increasing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordedAt(pub Timestamp);

impl fmt::Display for EffectiveAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RecordedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The source of "now". Injected everywhere time is needed, so tests are deterministic.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// A clock that only moves when told to: for tests, simulations and deterministic replays.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(AtomicI64::new(start.as_micros()))
    }
    /// Sets the time (it may go backwards; the store still keeps recorded_at increasing).
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_micros(), Ordering::SeqCst);
    }
    /// Moves the clock forward by `micros`.
    pub fn advance_micros(&self, micros: i64) {
        let now = Timestamp(self.0.load(Ordering::SeqCst)).saturating_add_micros(micros);
        self.0.store(now.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_normalises_offsets() {
        let t = Timestamp::parse_rfc3339("2026-11-25T10:00:00.000001+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-25T09:00:00.000001Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn rejects_garbage_and_nanoseconds() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("2026-11-25T10:00:00.000000001Z").is_err());
        assert!(Timestamp::parse_rfc3339("").is_err());
    }

    #[test]
    fn bounds_hold() {
        assert_eq!(Timestamp::MIN.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999999Z");
        assert!(Timestamp::from_micros(Timestamp::MAX.as_micros() + 1).is_none());
    }
}
