//! Page sizes of list endpoints: 1 to [`MAX_PAGE`], checked where the query
//! string is parsed, so an out-of-range `limit` is refused with a message that
//! names it instead of being quietly clamped into a page the caller did not ask for.

use serde::{Deserialize, Deserializer};

/// Largest page a list endpoint returns.
pub const MAX_PAGE: i64 = 1000;
/// Page size when none is given.
pub const DEFAULT_PAGE: i64 = 100;

/// A page size within 1..=[`MAX_PAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(i64);

impl PageLimit {
    /// Checks `n`.
    pub fn new(n: i64) -> Result<Self, String> {
        if (1..=MAX_PAGE).contains(&n) {
            Ok(Self(n))
        } else {
            Err(format!("limit must be between 1 and {MAX_PAGE}, got {n}"))
        }
    }

    /// The size asked for, or the default.
    pub fn or_default(limit: Option<Self>) -> i64 {
        limit.map_or(DEFAULT_PAGE, |l| l.0)
    }
}

impl<'de> Deserialize<'de> for PageLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Query strings carry text; accept it as well as a number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(t) => t.trim().parse::<i64>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "limit must be a whole number between 1 and {MAX_PAGE}, got {t:?}"
                ))
            })?,
        };
        PageLimit::new(n).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sizes_within_the_range_are_accepted() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(-5).unwrap_err().contains("limit"));
        assert!(PageLimit::new(MAX_PAGE + 1).is_err());
        assert_eq!(PageLimit::or_default(Some(PageLimit::new(7).unwrap())), 7);
        assert_eq!(PageLimit::or_default(None), DEFAULT_PAGE);
        let parsed: Result<PageLimit, _> = serde_json::from_str("\"12\"");
        assert_eq!(parsed.unwrap(), PageLimit::new(12).unwrap());
        let bad: Result<PageLimit, _> = serde_json::from_str("\"x\"");
        assert!(bad.unwrap_err().to_string().contains("limit"));
    }
}
