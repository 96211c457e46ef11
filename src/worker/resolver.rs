//! The HTTP client's DNS resolver: resolves, drops every address the SSRF policy
//! forbids, and hands the connector only checked addresses. Because the client
//! connects to exactly what this returns, there is no window between check and
//! connect for a rebinding DNS answer. Answers are cached briefly per host.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::dns::Name;

use crate::domain::ssrf::{SsrfError, SsrfPolicy};

/// How long a checked answer is reused (getaddrinfo gives no TTL; keep it short).
const CACHE_TTL: Duration = Duration::from_secs(30);

/// When a host was resolved, and its checked addresses.
type Cached = (Instant, Vec<SocketAddr>);

/// A boxed error of the connector stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// SSRF-enforcing resolver with a small cache.
#[derive(Clone)]
pub struct CheckedResolver {
    policy: SsrfPolicy,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl CheckedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: SsrfPolicy) -> Self {
        Self {
            policy,
            cache: Arc::default(),
        }
    }

    async fn resolve(self, host: String) -> Result<Vec<SocketAddr>, BoxError> {
        if let Some((at, addrs)) = self
            .cache
            .lock()
            .map_err(|_| "resolver cache poisoned")?
            .get(&host)
        {
            if at.elapsed() < CACHE_TTL {
                return Ok(addrs.clone());
            }
        }
        if host == "localhost" || host.ends_with(".localhost") {
            // Resolve like the registration check does: loopback, which only an
            // allow-list entry can exempt.
            self.policy.check_url(&format!("http://{host}/"))?;
        }
        let resolved: Vec<SocketAddr> =
            tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
        if resolved.is_empty() {
            return Err(Box::new(SsrfError::Unresolvable(host)));
        }
        // Fail closed: if any address is forbidden, refuse the host entirely,
        // rather than silently using the rest.
        for a in &resolved {
            self.policy.check_ip(a.ip())?;
        }
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(host, (Instant::now(), resolved.clone()));
        }
        Ok(resolved)
    }
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let this = self.clone();
        Box::pin(async move { Ok(this.resolve(host).await?.into_iter()) })
    }
}
