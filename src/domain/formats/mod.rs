//! Built-in formats: how a delivery's body is rendered for its endpoint.
//!
//! `standard` sends the Standard Webhooks envelope (`{id, type, timestamp, data}`)
//! exactly as it was stored at ingestion. `discord` and `slack` turn that
//! envelope into a readable chat message at send time (their webhooks answer the
//! envelope with 400): the event type, then the payload's top-level fields in the
//! order they were published, each value truncated with an ellipsis so that every
//! limit the destination documents holds (see [`discord`] and [`slack`]).
//!
//! Lengths are counted in characters (Unicode scalar values), never bytes, and a
//! cut never splits a character or an escape sequence.
//!
//! A transformation (per-endpoint JavaScript, a later feature) runs *after* the
//! format: it is handed the body this module rendered. An endpoint that wants to
//! build its own message from the raw event sets `format: standard`.

pub mod discord;
pub mod slack;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// How an endpoint's deliveries are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The Standard Webhooks envelope, as stored.
    #[default]
    Standard,
    /// A Discord execute-webhook body: `{content, embeds, allowed_mentions}`.
    Discord,
    /// A Slack incoming-webhook body: `{text, blocks}`.
    Slack,
}

/// Every format, in the order the API documents them.
pub const FORMATS: [Format; 3] = [Format::Standard, Format::Discord, Format::Slack];

impl Format {
    /// The name used in the API, the CRD and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Discord => "discord",
            Format::Slack => "slack",
        }
    }

    /// Requests in flight per endpoint when the endpoint sets no `max_in_flight`.
    /// Chat webhooks are rate-limited per webhook, a few requests a second, and
    /// post messages in the order they arrive: one at a time lets each response's
    /// rate-limit headers pace the next request (no burst of 429s) and keeps
    /// messages in order within a worker.
    pub fn default_in_flight(self) -> Option<usize> {
        match self {
            Format::Standard => None,
            Format::Discord | Format::Slack => Some(1),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of [`FORMATS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("format must be one of standard, discord or slack, not `{0}`")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        FORMATS
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFormat(s.chars().take(64).collect()))
    }
}

/// Why a body could not be rendered (the stored envelope is not one HookIt wrote).
#[derive(Debug, thiserror::Error)]
#[error("the event envelope does not parse: {0}")]
pub struct RenderError(#[from] serde_json::Error);

/// Renders the stored envelope for `format`: borrowed as is for `standard`.
pub fn render(format: Format, envelope: &str) -> Result<Cow<'_, str>, RenderError> {
    match format {
        Format::Standard => Ok(Cow::Borrowed(envelope)),
        Format::Discord => Ok(Cow::Owned(discord::render(&Event::parse(envelope)?))),
        Format::Slack => Ok(Cow::Owned(slack::render(&Event::parse(envelope)?))),
    }
}

/// The envelope, parsed for rendering.
#[derive(Debug)]
pub struct Event {
    /// `evt_…`
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// RFC 3339 time of the event.
    pub timestamp: String,
    /// The payload.
    pub data: Data,
}

/// A payload: its top-level fields in publication order, or a non-object value.
#[derive(Debug)]
pub enum Data {
    /// A JSON object's members, in the order they were published.
    Fields(Vec<(String, Value)>),
    /// Any other JSON value.
    Other(Value),
}

impl Event {
    /// Parses an envelope `{id, type, timestamp, data}`.
    pub fn parse(envelope: &str) -> Result<Self, RenderError> {
        #[derive(Deserialize)]
        struct Envelope<'a> {
            id: String,
            #[serde(rename = "type")]
            kind: String,
            timestamp: String,
            #[serde(borrow)]
            data: &'a RawValue,
        }
        let e: Envelope<'_> = serde_json::from_str(envelope)?;
        let data = match serde_json::from_str::<Ordered>(e.data.get()) {
            Ok(Ordered(fields)) => Data::Fields(fields),
            Err(_) => Data::Other(serde_json::from_str(e.data.get())?),
        };
        Ok(Event {
            id: e.id,
            event_type: e.kind,
            timestamp: e.timestamp,
            data,
        })
    }
}

/// A JSON object's members in document order (serde_json's `Map` sorts them).
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The ellipsis that marks a cut.
pub const ELLIPSIS: char = '…';

/// A value as a reader wants it: a string without its quotes, anything else as
/// compact JSON (nested objects and arrays included).
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `raw` escaped by `escape` and cut to at most `max` characters, ending in
/// [`ELLIPSIS`] when cut. Escapes are atomic: a cut never leaves half of one.
pub fn fit(raw: &str, max: usize, escape: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(raw.len().min(max.saturating_mul(4)));
    let mut piece = String::new();
    let mut len = 0;
    // Byte length of `out` at the last boundary that leaves room for the ellipsis.
    let mut keep = 0;
    for c in raw.chars() {
        piece.clear();
        escape(c, &mut piece);
        let n = piece.chars().count();
        if len + n > max {
            if max == 0 {
                return String::new();
            }
            out.truncate(keep);
            out.push(ELLIPSIS);
            return out;
        }
        out.push_str(&piece);
        len += n;
        if len < max {
            keep = out.len();
        }
    }
    out
}

/// No escaping.
pub fn verbatim(c: char, out: &mut String) {
    out.push(c);
}

/// Characters of `s`.
pub fn chars(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_their_names() {
        for f in FORMATS {
            assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        }
        let e = "teams".parse::<Format>().unwrap_err();
        assert!(e.to_string().contains("standard, discord or slack"));
        assert_eq!(Format::default(), Format::Standard);
    }

    #[test]
    fn standard_is_the_envelope_untouched() {
        let env = r#"{"id":"evt_1","type":"a.b","timestamp":"t","data":{"z":1,"a":2}}"#;
        assert!(matches!(render(Format::Standard, env).unwrap(), Cow::Borrowed(s) if s == env));
    }

    #[test]
    fn parse_keeps_publication_order_and_other_values() {
        let e = Event::parse(
            r#"{"id":"evt_1","type":"a.b","timestamp":"t","data":{"z":1,"a":{"y":2,"b":3},"m":"x"}}"#,
        )
        .unwrap();
        let Data::Fields(f) = e.data else { panic!() };
        let keys: Vec<_> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(display(&f[1].1), r#"{"b":3,"y":2}"#);
        assert_eq!(display(&f[2].1), "x");
        let e =
            Event::parse(r#"{"id":"evt_1","type":"a.b","timestamp":"t","data":[1,2]}"#).unwrap();
        assert!(matches!(e.data, Data::Other(Value::Array(_))));
        assert!(Event::parse("not json").is_err());
    }

    #[test]
    fn fit_counts_characters_and_never_splits_one() {
        assert_eq!(fit("hello", 5, verbatim), "hello");
        assert_eq!(fit("hello!", 5, verbatim), "hell…");
        assert_eq!(fit("", 5, verbatim), "");
        // Four-byte characters: 3 of them plus the ellipsis, valid UTF-8.
        let s = fit(&"😀".repeat(10), 4, verbatim);
        assert_eq!(s, "😀😀😀…");
        assert_eq!(chars(&s), 4);
        let s = fit(&"é".repeat(3000), 1024, verbatim);
        assert_eq!(chars(&s), 1024);
        assert!(s.ends_with(ELLIPSIS));
        assert_eq!(fit("abc", 0, verbatim), "");
        assert_eq!(fit("abc", 1, verbatim), "…");
    }

    #[test]
    fn fit_keeps_escapes_whole() {
        let amp = |c: char, out: &mut String| match c {
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        };
        assert_eq!(fit("a&b", 7, amp), "a&amp;b");
        // "a&amp;" is 6 characters: with the ellipsis it would be 7 > 6.
        assert_eq!(fit("a&b", 6, amp), "a…");
        assert_eq!(fit("&&&&", 11, amp), "&amp;&amp;…");
    }
}
