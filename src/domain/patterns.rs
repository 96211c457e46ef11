//! Event types and subscription patterns. Inside the ingestion query the same
//! rule is an array overlap: an endpoint matches when one of its patterns is in
//! [`candidates`] of the event type (computed here and sent with each event;
//! the SQL function `hookit_event_type_patterns` of migration 0003 computes the
//! same, and is no longer called on the hot path).

/// Longest accepted event type or pattern.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Checks an event type: dot-separated segments of `[A-Za-z0-9_-]`.
pub fn validate_event_type(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > MAX_EVENT_TYPE_LEN {
        return Err(format!("must be 1 to {MAX_EVENT_TYPE_LEN} characters"));
    }
    for seg in t.split('.') {
        if seg.is_empty() {
            return Err("must not have empty dot-separated segments".into());
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("may contain only letters, digits, '_', '-' and '.'".into());
        }
    }
    Ok(())
}

/// Checks a subscription pattern: an event type, `prefix.*`, or `*`.
pub fn validate_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    match p.strip_suffix(".*") {
        Some(prefix) => validate_event_type(prefix),
        None => validate_event_type(p),
    }
}

/// Every pattern that matches `event_type`: `*`, the type, and `<prefix>.*` for
/// each proper dot-prefix. For valid patterns, `matches(p, t)` holds exactly when
/// `p` is one of these.
pub fn candidates(event_type: &str) -> Vec<String> {
    let mut out = vec!["*".to_string(), event_type.to_string()];
    for (i, _) in event_type.match_indices('.') {
        out.push(format!("{}.*", &event_type[..i]));
    }
    out
}

/// Whether `event_type` matches `pattern`.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" || pattern == event_type {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix),
        _ => false,
    }
}

/// Something to tell the owner of an endpoint about one of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionIssue<'a> {
    /// No type in the catalog matches the pattern.
    Unknown(&'a str),
    /// Every type in the catalog that the pattern matches is deprecated.
    Deprecated(&'a str),
}

/// The subscriptions in `patterns` that the tenant's catalog (names, and
/// whether each is deprecated) does not back, in the order given. `*` matches
/// anything and is never reported; `prefix.*` is backed when any type matches.
///
/// An empty catalog backs everything: a tenant that has not started a catalog
/// has not opted in to it, and would otherwise be warned about every endpoint.
pub fn subscription_issues<'a>(
    patterns: &'a [String],
    catalog: &[(String, bool)],
) -> Vec<SubscriptionIssue<'a>> {
    if catalog.is_empty() {
        return Vec::new();
    }
    patterns
        .iter()
        .filter(|p| p.as_str() != "*")
        .filter_map(|p| {
            let matched: Vec<bool> = catalog
                .iter()
                .filter(|(name, _)| matches(p, name))
                .map(|(_, deprecated)| *deprecated)
                .collect();
            if matched.is_empty() {
                Some(SubscriptionIssue::Unknown(p.as_str()))
            } else if matched.iter().all(|d| *d) {
                Some(SubscriptionIssue::Deprecated(p.as_str()))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_rules() {
        assert!(matches("*", "a.b"));
        assert!(matches("order.*", "order.created"));
        assert!(matches("order.*", "order.item.added"));
        assert!(!matches("order.*", "order"));
        assert!(!matches("order.*", "orders.created"));
        assert!(matches("user.created", "user.created"));
        assert!(!matches("user.created", "user.deleted"));
        assert!(validate_pattern("order.*").is_ok());
        assert!(validate_pattern("*").is_ok());
        assert!(validate_pattern("order*").is_err());
        assert!(validate_event_type("a..b").is_err());
        assert!(validate_event_type("a b").is_err());
        assert!(validate_event_type(&"a".repeat(129)).is_err());
    }

    #[test]
    fn the_candidates_are_exactly_the_matching_patterns() {
        let types = ["a", "a.b", "a.b.c", "order.item.added", "x-y_z.q"];
        let patterns = [
            "*",
            "a",
            "a.*",
            "a.b",
            "a.b.*",
            "a.b.c",
            "a.b.c.*",
            "b.*",
            "order.*",
            "order.item.*",
            "order.item.added",
            "orders.*",
            "x-y_z.*",
            "x.*",
        ];
        for t in types {
            let c = candidates(t);
            for p in patterns {
                assert_eq!(matches(p, t), c.iter().any(|x| x == p), "{p} vs {t}: {c:?}");
            }
        }
        assert_eq!(candidates("a.b.c"), ["*", "a.b.c", "a.*", "a.b.*"]);
    }

    #[test]
    fn subscriptions_are_checked_against_the_catalog() {
        let catalog = [
            ("order.created".to_string(), false),
            ("order.paid".to_string(), true),
            ("invoice.legacy".to_string(), true),
        ];
        let patterns: Vec<String> = [
            "*",
            "order.*",
            "order.created",
            "order.paid",
            "invoice.*",
            "refund.*",
            "user.created",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            subscription_issues(&patterns, &catalog),
            [
                SubscriptionIssue::Deprecated("order.paid"),
                SubscriptionIssue::Deprecated("invoice.*"),
                SubscriptionIssue::Unknown("refund.*"),
                SubscriptionIssue::Unknown("user.created"),
            ]
        );
        assert!(subscription_issues(&patterns, &[]).is_empty());
    }
}
