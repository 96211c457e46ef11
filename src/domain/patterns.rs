//! Event types and subscription patterns. The SQL function
//! `hookit_event_type_matches` implements the same rule inside the ingestion query.

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
}
