//! Warnings: something a successful request did that the caller probably wants
//! to know about (a subscription to a type the catalog does not have, an event
//! of a deprecated type). They never change the outcome.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::patterns::SubscriptionIssue;

/// One warning about a request that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Warning {
    /// What kind: `unknown-event-type` or `deprecated-event-type`.
    #[schema(example = "unknown-event-type")]
    pub kind: String,
    /// What it concerns, e.g. the subscription pattern or the event type.
    pub subject: String,
    /// A sentence for people.
    pub detail: String,
}

impl Warning {
    /// The warning about an endpoint's subscription.
    pub fn subscription(issue: &SubscriptionIssue<'_>) -> Self {
        match issue {
            SubscriptionIssue::Unknown(p) => Warning {
                kind: "unknown-event-type".into(),
                subject: (*p).into(),
                detail: format!(
                    "no event type in the catalog matches `{p}`; the endpoint receives nothing for it until one is published"
                ),
            },
            SubscriptionIssue::Deprecated(p) => Warning {
                kind: "deprecated-event-type".into(),
                subject: (*p).into(),
                detail: format!("every event type that `{p}` matches is deprecated"),
            },
        }
    }

    /// The warning about an event of a deprecated type.
    pub fn deprecated_event_type(event_type: &str) -> Self {
        Warning {
            kind: "deprecated-event-type".into(),
            subject: event_type.into(),
            detail: format!("the event type `{event_type}` is deprecated; the event was accepted"),
        }
    }
}
