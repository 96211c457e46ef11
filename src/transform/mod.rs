//! Per-endpoint transformations: the user's JavaScript `handler(webhook)` run in
//! an embedded, sandboxed QuickJS (through `rquickjs`) before a delivery is sent.
//!
//! - [`engine`]: one compiled handler in its own runtime, with its limits.
//! - [`pool`]: the engine threads, their fair queue and their caches.
//! - `domain::transform`: what the handler sees and may return, checked.
//!
//! Why QuickJS and not Boa: both were measured on our handler shapes
//! (`bench/js-engines`, figures in docs/transformations.md). QuickJS has a heap
//! cap and an interrupt handler, which a sandbox for other people's code needs,
//! and was faster on every shape; Boa offers loop-iteration and recursion limits
//! only.

mod engine;
mod pool;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use uuid::Uuid;

pub use engine::Limits;

pub use crate::domain::transform::code_sha;
use crate::domain::transform::{self as checked, Rewritten, TransformError, MAX_SOURCE_BYTES};
use pool::{Job, Pool};

/// Runs transformations for one process. Cheap to clone.
#[derive(Clone)]
pub struct Transformer {
    pool: Arc<Pool>,
    _shutdown: Arc<Shutdown>,
    limits: Limits,
}

/// Stops the engine threads when the last handle goes.
struct Shutdown(Arc<Pool>);

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Transformer {
    /// Starts `threads` engine threads with these limits.
    pub fn start(threads: usize, limits: Limits) -> std::io::Result<Self> {
        let pool = Pool::start(threads, limits)?;
        Ok(Transformer {
            _shutdown: Arc::new(Shutdown(pool.clone())),
            pool,
            limits,
        })
    }

    /// The limits each call runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    async fn submit(
        &self,
        key: Uuid,
        code: Arc<str>,
        input: Option<String>,
        uncached: bool,
    ) -> Result<Option<String>, TransformError> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            sha: code_sha(&code),
            code,
            input,
            uncached,
            reply: tx,
        };
        self.pool
            .submit(key, job)
            .map_err(|_| TransformError::Unavailable)?;
        rx.await.unwrap_or(Err(TransformError::Unavailable))
    }

    /// Runs an endpoint's handler on `input` (see `domain::transform::input_json`)
    /// with its compiled form cached, and checks what it returned.
    pub async fn run(
        &self,
        endpoint: Uuid,
        code: Arc<str>,
        input: String,
    ) -> Result<Rewritten, TransformError> {
        let out = self.submit(endpoint, code, Some(input), false).await?;
        checked::parse_output(out.as_deref())
    }

    /// Checks that `code` compiles and defines `handler` (on write, by the API and
    /// the controller). `key` spreads the checks of different tenants.
    pub async fn check(&self, key: Uuid, code: &str) -> Result<(), TransformError> {
        check_size(code)?;
        self.submit(key, Arc::from(code), None, true)
            .await
            .map(drop)
    }

    /// One run of `code` on `input` from a fresh compile, nothing kept: the
    /// "test a transformation" call.
    pub async fn try_once(
        &self,
        key: Uuid,
        code: &str,
        input: String,
    ) -> Result<Rewritten, TransformError> {
        check_size(code)?;
        let out = self.submit(key, Arc::from(code), Some(input), true).await?;
        checked::parse_output(out.as_deref())
    }
}

fn check_size(code: &str) -> Result<(), TransformError> {
    if code.len() > MAX_SOURCE_BYTES {
        return Err(TransformError::Compile(format!(
            "the code is {} bytes; at most {MAX_SOURCE_BYTES} are accepted",
            code.len()
        )));
    }
    Ok(())
}

/// A fairness key for work that is not an endpoint's, derived from a name (the
/// tenant): the same name always queues behind itself.
pub fn key_for(name: &str) -> Uuid {
    let d = Sha256::digest(name.as_bytes());
    Uuid::from_slice(&d[..16]).expect("16 bytes")
}
