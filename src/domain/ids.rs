//! Prefixed, time-ordered public ids (`evt_`, `ep_`, `dlv_`, `batch_`): a UUIDv7 rendered in
//! Crockford base32, so ids sort by creation time as strings and as UUIDs.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The kind of object an id names; fixes its prefix.
pub trait IdKind: Copy + Send + Sync + 'static {
    /// The prefix including the underscore, e.g. `evt_`.
    const PREFIX: &'static str;
}

/// Marker for event ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKind;
/// Marker for endpoint ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointKind;
/// Marker for delivery ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKind;

impl IdKind for EventKind {
    const PREFIX: &'static str = "evt_";
}
impl IdKind for EndpointKind {
    const PREFIX: &'static str = "ep_";
}
impl IdKind for DeliveryKind {
    const PREFIX: &'static str = "dlv_";
}
/// Marker for the ids of FIFO batches (the `webhook-id` of a batched request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchKind;
impl IdKind for BatchKind {
    const PREFIX: &'static str = "batch_";
}

/// A public id: a UUID with a type-specific prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id<K: IdKind>(Uuid, PhantomData<K>);

/// Id of an event (`evt_…`).
pub type EventId = Id<EventKind>;
/// Id of an endpoint (`ep_…`).
pub type EndpointId = Id<EndpointKind>;
/// Id of a delivery (`dlv_…`).
pub type DeliveryId = Id<DeliveryKind>;
/// Id of a FIFO batch (`batch_…`), drawn when the batch is formed (see
/// `db::deliveries::batch`).
pub type BatchId = Id<BatchKind>;

impl<K: IdKind> Id<K> {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7(), PhantomData)
    }
    /// Wraps a UUID read from the database.
    pub fn from_uuid(u: Uuid) -> Self {
        Self(u, PhantomData)
    }
    /// The UUID stored in the database.
    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

/// The smallest UUIDv7 of the millisecond `unix_ms`: every id drawn at that
/// instant or later sorts at or above it, every id drawn earlier below it. Lets
/// a query bound a range of time-ordered ids by time (retention scans the
/// events' primary key this way).
pub fn v7_floor(unix_ms: u64) -> Uuid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
    Uuid::from_bytes(b)
}

impl<K: IdKind> Default for Id<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: IdKind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = self.0.as_u128();
        let mut out = [0u8; 26];
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(v & 31) as usize];
            v >>= 5;
        }
        f.write_str(K::PREFIX)?;
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl<K: IdKind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not an id of the expected kind.
#[derive(Debug, thiserror::Error)]
#[error("not a valid {prefix}… id")]
pub struct BadId {
    /// The prefix that was expected.
    pub prefix: &'static str,
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        let bad = BadId { prefix: K::PREFIX };
        let rest = s
            .strip_prefix(K::PREFIX)
            .ok_or(BadId { prefix: K::PREFIX })?;
        if rest.len() != 26 {
            return Err(bad);
        }
        let mut v: u128 = 0;
        for (i, c) in rest.bytes().enumerate() {
            let d = ALPHABET
                .iter()
                .position(|a| *a == c.to_ascii_uppercase())
                .ok_or(BadId { prefix: K::PREFIX })? as u128;
            // The first character carries only the top 3 bits of 128.
            if i == 0 && d > 7 {
                return Err(BadId { prefix: K::PREFIX });
            }
            v = (v << 5) | d;
        }
        Ok(Self(Uuid::from_u128(v), PhantomData))
    }
}

impl<K: IdKind> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_by_time() {
        let a = EventId::new();
        let b = EventId::new();
        let sa = a.to_string();
        assert!(sa.starts_with("evt_") && sa.len() == 30);
        assert_eq!(sa.parse::<EventId>().unwrap(), a);
        assert!(sa <= b.to_string());
        assert!("ep_0000".parse::<EndpointId>().is_err());
        assert!(sa.parse::<EndpointId>().is_err());
        assert!("evt_ZZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<EventId>().is_err());
        // Lower case is accepted, as Crockford base32 is case-insensitive.
        assert_eq!(
            sa.to_lowercase()
                .replace("EVT_", "evt_")
                .parse::<EventId>()
                .unwrap(),
            a
        );
    }

    #[test]
    fn v7_floor_bounds_ids_by_their_millisecond() {
        let ms = |u: Uuid| {
            let (secs, nanos) = u.get_timestamp().unwrap().to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        };
        let id = Uuid::now_v7();
        let t = ms(id);
        assert!(v7_floor(t) <= id);
        assert!(id < v7_floor(t + 1));
        assert!(v7_floor(t - 1) < v7_floor(t));
        assert_eq!(v7_floor(t).as_bytes()[..6], id.as_bytes()[..6]);
    }
}
