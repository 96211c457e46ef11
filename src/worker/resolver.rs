//! The HTTP client's DNS resolver: resolves, drops every address the SSRF policy
//! forbids, and hands the client only checked addresses. Because the client
//! connects to exactly what this returns, there is no window between check and
//! connect for a rebinding DNS answer. Answers are cached briefly per host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::ssrf::{SsrfError, SsrfPolicy};

/// How long a checked answer is reused (getaddrinfo gives no TTL; keep it short).
const CACHE_TTL: Duration = Duration::from_secs(30);

/// When a host was resolved, and its checked addresses.
type Cached = (Instant, Vec<SocketAddr>);

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
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
            if let Some((at, addrs)) = this
                .cache
                .lock()
                .map_err(|_| "resolver cache poisoned")?
                .get(&host)
            {
                if at.elapsed() < CACHE_TTL {
                    let addrs: Addrs = Box::new(addrs.clone().into_iter());
                    return Ok(addrs);
                }
            }
            if host == "localhost" || host.ends_with(".localhost") {
                // Resolve like the registration check does: loopback, which only an
                // allow-list entry can exempt.
                this.policy.check_url(&format!("http://{host}/"))?;
            }
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if resolved.is_empty() {
                return Err(Box::new(SsrfError::Unresolvable(host))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            // Fail closed: if any address is forbidden, refuse the host entirely,
            // rather than silently using the rest.
            for a in &resolved {
                this.policy.check_ip(a.ip())?;
            }
            if let Ok(mut c) = this.cache.lock() {
                if c.len() > 10_000 {
                    c.clear();
                }
                c.insert(host, (Instant::now(), resolved.clone()));
            }
            let addrs: Addrs = Box::new(resolved.into_iter());
            Ok(addrs)
        })
    }
}
