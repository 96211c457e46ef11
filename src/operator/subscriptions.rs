//! The `EventTypesKnown` condition of a WebhookEndpoint: whether the event types
//! it subscribes to are in its namespace's (its tenant's) event-type catalog.
//! What the REST API answers as `warnings` when an endpoint is written, as a
//! condition, since a resource has no response body to carry them.
//!
//! It is computed at every apply from the spec and the catalog, and its
//! transition time kept while its status holds, so an unchanged endpoint with
//! an unchanged catalog yields the same condition and no status write. A catalog
//! change alone does not trigger a reconcile: the condition follows at the
//! endpoint's next one (a spec change, its change feed, or the hourly resync).

use super::crd::{Condition, WebhookEndpointStatus};
use crate::domain::patterns::{subscription_issues, SubscriptionIssue};

/// The condition's type.
pub const EVENT_TYPES_KNOWN: &str = "EventTypesKnown";

/// The condition for subscriptions `patterns` against `catalog` (names, and
/// whether each is deprecated).
pub(super) fn event_types_condition(
    previous: &WebhookEndpointStatus,
    patterns: &[String],
    catalog: &[(String, bool)],
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let issues = subscription_issues(patterns, catalog);
    let pick = |deprecated: bool| -> Vec<&str> {
        issues
            .iter()
            .filter_map(|i| match (i, deprecated) {
                (SubscriptionIssue::Unknown(p), false)
                | (SubscriptionIssue::Deprecated(p), true) => Some(*p),
                _ => None,
            })
            .collect()
    };
    let (unknown, deprecated) = (pick(false), pick(true));
    let also_deprecated = if deprecated.is_empty() {
        String::new()
    } else {
        format!("; only deprecated types match: {}", deprecated.join(", "))
    };
    let (status, reason, message) = if !unknown.is_empty() {
        (
            "False",
            "UnknownEventTypes",
            format!(
                "no event type in the namespace's catalog matches: {}{also_deprecated}; the endpoint is applied regardless",
                unknown.join(", ")
            ),
        )
    } else if !deprecated.is_empty() {
        (
            "True",
            "DeprecatedEventTypes",
            format!("only deprecated types match: {}", deprecated.join(", ")),
        )
    } else if catalog.is_empty() {
        (
            "True",
            "NoCatalog",
            "the namespace has no event-type catalog; subscriptions are not checked".into(),
        )
    } else {
        (
            "True",
            "Known",
            "every subscription matches a type in the catalog".into(),
        )
    };
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == EVENT_TYPES_KNOWN && c.status == status)
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    Condition {
        type_: EVENT_TYPES_KNOWN.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<(String, bool)> {
        vec![
            ("order.created".into(), false),
            ("order.legacy".into(), true),
        ]
    }

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_subscriptions_make_it_false_and_name_them() {
        let c = event_types_condition(
            &WebhookEndpointStatus::default(),
            &patterns(&["order.*", "refund.*", "order.legacy"]),
            &catalog(),
            Some(3),
            "2026-12-07T00:00:00Z",
        );
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "UnknownEventTypes")
        );
        assert!(
            c.message.contains("refund.*") && c.message.contains("order.legacy"),
            "{}",
            c.message
        );
        assert_eq!(c.observed_generation, Some(3));
    }

    #[test]
    fn the_transition_time_holds_while_the_status_does() {
        let first = event_types_condition(
            &WebhookEndpointStatus::default(),
            &patterns(&["order.created"]),
            &catalog(),
            Some(1),
            "2026-12-07T00:00:00Z",
        );
        assert_eq!(first.reason, "Known");
        let previous = WebhookEndpointStatus {
            conditions: vec![first.clone()],
            ..Default::default()
        };
        let again = event_types_condition(
            &previous,
            &patterns(&["order.created"]),
            &catalog(),
            Some(1),
            "2026-12-07T01:00:00Z",
        );
        assert_eq!(again, first);
        let flipped = event_types_condition(
            &previous,
            &patterns(&["nope.nope"]),
            &catalog(),
            Some(2),
            "2026-12-07T02:00:00Z",
        );
        assert_eq!(flipped.last_transition_time, "2026-12-07T02:00:00Z");
        let none = event_types_condition(&previous, &patterns(&["x"]), &[], Some(2), "t");
        assert_eq!(
            (none.status.as_str(), none.reason.as_str()),
            ("True", "NoCatalog")
        );
    }
}
