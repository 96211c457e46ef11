//! The crate's error type. Sources are kept; the API layer turns each kind into a
//! problem-details response (see `api::problem`).

use crate::domain::{crypto::CryptoError, ssrf::SsrfError};

/// Everything that can go wrong below the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database error that is not one of the mapped kinds below.
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    /// The database cannot be reached (down, restarting, pool exhausted).
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database is known to be down (see `db::availability`): refused without
    /// trying, so nothing was written.
    #[error("the database has been unreachable for {} ms", .0.as_millis())]
    DatabaseDown(std::time::Duration),
    /// The object does not exist for this tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the object's state. `slug` names the problem type.
    #[error("{detail}")]
    Conflict {
        /// Problem type slug.
        slug: &'static str,
        /// Human-readable explanation.
        detail: String,
    },
    /// The request is well-formed but not acceptable. `slug` names the problem type.
    #[error("{detail}")]
    Invalid {
        /// Problem type slug.
        slug: &'static str,
        /// Human-readable explanation.
        detail: String,
    },
    /// The target URL was refused by the SSRF policy.
    #[error(transparent)]
    Ssrf(#[from] SsrfError),
    /// A stored secret does not decrypt: wrong master key.
    #[error("a stored secret does not decrypt: is HOOKIT_MASTER_KEY the one it was written with?")]
    Crypto(#[from] CryptoError),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(slug: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            slug,
            detail: detail.into(),
        }
    }
    /// Shorthand for [`Error::Conflict`].
    pub fn conflict(slug: &'static str, detail: impl Into<String>) -> Self {
        Error::Conflict {
            slug,
            detail: detail.into(),
        }
    }
}

/// Whether a database error means "cannot reach or use the database right now"
/// (answered 503 with Retry-After) rather than a fault in the request or the code.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("57P01" | "57P02" | "57P03" | "53300")
        ),
        _ => false,
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Error::Unavailable(e)
        } else {
            Error::Db(e)
        }
    }
}

/// Result with the crate error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
