//! Reconcile errors and how long to wait before retrying each kind.
//!
//! Only transient failures are errors here. A spec the controller cannot honour
//! (a URL the SSRF policy refuses, a missing Secret) is not an error: the
//! reconciler reports it in `.status` and requeues slowly itself, so it never
//! reaches the fast exponential backoff below.

use std::time::Duration;

use kube::runtime::finalizer;

/// Why a reconcile failed; the object is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// The database failed.
    #[error("database call failed: {0}")]
    Store(#[source] crate::error::Error),
    /// The object lacks metadata every stored object has (name, namespace, uid).
    #[error("the object has no {0}")]
    Incomplete(&'static str),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl From<crate::error::Error> for Error {
    fn from(e: crate::error::Error) -> Self {
        Error::Store(e)
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                Error::Kube(e)
            }
            finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => {
                Error::Incomplete("name")
            }
        }
    }
}

/// Longest wait between retries of a failing object.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Error {
    /// Metric label of the error kind (`hookit_controller_reconcile_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "kube_conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "kube_forbidden",
            Error::Kube(_) => "kube",
            Error::Store(
                crate::error::Error::Unavailable(_) | crate::error::Error::DatabaseDown(_),
            ) => "database_unavailable",
            Error::Store(_) => "database",
            Error::Incomplete(_) => "incomplete_object",
        }
    }

    /// First retry delay for this kind; doubled per consecutive failure.
    fn base_delay(&self) -> Duration {
        match self.kind() {
            // Someone else changed the object in between: the next try usually works.
            "kube_conflict" => Duration::from_millis(500),
            "kube" => Duration::from_secs(2),
            "database_unavailable" => Duration::from_secs(5),
            // A permission missing from the RBAC rules will not fix itself quickly.
            "kube_forbidden" => Duration::from_secs(30),
            "database" => Duration::from_secs(10),
            _ => MAX_BACKOFF,
        }
    }

    /// Delay before retry number `failures` (1 for the first failure in a row).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.base_delay().saturating_mul(factor).min(MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("nope", "Reason").with_code(code),
        )))
    }

    #[test]
    fn backoff_depends_on_the_kind_and_doubles_to_a_cap() {
        let conflict = api_error(409);
        assert_eq!(conflict.kind(), "kube_conflict");
        assert_eq!(conflict.backoff(1), Duration::from_millis(500));
        assert_eq!(conflict.backoff(3), Duration::from_secs(2));
        let db = Error::Store(crate::error::Error::Unavailable(sqlx::Error::PoolTimedOut));
        assert_eq!(db.kind(), "database_unavailable");
        assert_eq!(db.backoff(1), Duration::from_secs(5));
        assert_eq!(db.backoff(2), Duration::from_secs(10));
        assert_eq!(db.backoff(40), MAX_BACKOFF);
        assert_eq!(api_error(403).backoff(1), Duration::from_secs(30));
    }
}
