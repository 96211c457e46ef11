//! Configuration: parsed and validated once in `main`, then passed down. Nothing
//! deeper in the crate reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::domain::crypto::MasterKey;
use crate::domain::retry::RetryPolicy;

mod otel;
pub use otel::{OtlpProtocol, Root, SamplerChoice, TracingConfig};

/// A configuration variable that could not be used; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What it was set to (never printed for secrets).
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines when stderr is a terminal, JSON otherwise: a person
    /// running `hookit standalone` reads text, a collector parses JSON.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// Whether to write JSON, given whether stderr is a terminal.
    pub fn json(self, stderr_is_terminal: bool) -> bool {
        match self {
            LogFormat::Auto => !stderr_is_terminal,
            LogFormat::Json => true,
            LogFormat::Text => false,
        }
    }
}

/// Everything the roles need to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`; None means "start the embedded Postgres" (standalone only).
    pub database_url: Option<String>,
    /// `HOOKIT_LISTEN`: the API's address.
    pub listen: SocketAddr,
    /// `HOOKIT_METRICS_LISTEN`: health and metrics of `worker`/`controller`.
    pub metrics_listen: Option<SocketAddr>,
    /// `HOOKIT_MASTER_KEY`.
    pub master_key: Option<MasterKey>,
    /// `HOOKIT_ALLOW_PRIVATE_TARGETS`.
    pub allow_private_targets: Vec<IpNet>,
    /// `HOOKIT_RETRY_BASE`, `HOOKIT_RETRY_CAP`, `HOOKIT_MAX_ATTEMPTS`.
    pub retry: RetryPolicy,
    /// `HOOKIT_LEASE`.
    pub lease: Duration,
    /// `HOOKIT_MAX_PAYLOAD` in bytes.
    pub max_payload: usize,
    /// `HOOKIT_MAX_BATCH_BODY` in bytes: largest `POST /v1/events/batch` body.
    pub max_batch_body: usize,
    /// `HOOKIT_WORKER_CONCURRENCY`: deliveries in flight per worker process.
    pub worker_concurrency: usize,
    /// `HOOKIT_ENDPOINT_CONCURRENCY`: default in-flight cap per endpoint per worker.
    pub endpoint_concurrency: usize,
    /// `HOOKIT_REQUEST_TIMEOUT`: total time of one attempt.
    pub request_timeout: Duration,
    /// `HOOKIT_CONNECT_TIMEOUT`.
    pub connect_timeout: Duration,
    /// `HOOKIT_RETENTION`: how long succeeded events and attempt logs are kept.
    pub retention: Duration,
    /// `HOOKIT_DB_POOL`: connections per process.
    pub db_pool: u32,
    /// `HOOKIT_DATA_DIR`: where the embedded Postgres and generated master key live.
    pub data_dir: Option<PathBuf>,
    /// `HOOKIT_LOG_FORMAT`: `json`, `text`, or unset for text on a terminal and
    /// JSON otherwise.
    pub log_format: LogFormat,
    /// `HOOKIT_MAX_ENDPOINTS`: endpoints per tenant.
    pub max_endpoints_per_tenant: i64,
    /// `HOOKIT_SHUTDOWN_GRACE`: how long in-flight deliveries may finish on SIGTERM.
    pub shutdown_grace: Duration,
    /// `HOOKIT_DISABLE_AFTER`: an endpoint failing continuously this long is disabled.
    pub disable_after: Duration,
    /// `HOOKIT_CIRCUIT_THRESHOLD`: consecutive failures that open an endpoint's circuit.
    pub circuit_threshold: i32,
    /// `HOOKIT_CIRCUIT_PROBE`: first probe interval of an open circuit (doubles per failed probe).
    pub circuit_probe: Duration,
    /// `HOOKIT_OPS_WEBHOOK_URL`: where HookIt sends its own operational events.
    pub ops_webhook_url: Option<String>,
    /// `HOOKIT_OPS_WEBHOOK_SECRET`: their signing secret (`whsec_…`; generated if unset).
    pub ops_webhook_secret: Option<crate::domain::signing::Secret>,
    /// `POD_NAME`: the controller replica's identity in leader election.
    pub pod_name: Option<String>,
    /// `POD_NAMESPACE`: where the controller's leader-election Lease lives.
    pub pod_namespace: Option<String>,
    /// `HOOKIT_WATCH_NAMESPACE`: the controller reconciles only this namespace (default: all).
    pub watch_namespace: Option<String>,
    /// `HOOKIT_CONTROLLER_LEASE`: how long the controller leader's Lease holds without
    /// renewal, i.e. the longest takeover time after a leader dies (whole seconds, >= 2s).
    pub controller_lease: Duration,
    /// `HOOKIT_CONTROLLER_RESYNC`: how often the controller looks for
    /// WebhookEndpoints whose status (delivery figures, circuit state) the
    /// database has moved away from, and refreshes those (only those).
    pub controller_resync: Duration,
    /// `HOOKIT_TRANSFORM_TIMEOUT`: time budget of one transformation call.
    pub transform_timeout: Duration,
    /// `HOOKIT_TRANSFORM_MEMORY`: heap cap of one transformation, in bytes.
    pub transform_memory: usize,
    /// `HOOKIT_TRANSFORM_THREADS`: engine threads per process (at least 2, so one
    /// runaway handler cannot hold every transformation up).
    pub transform_threads: usize,
    /// The `OTEL_*` variables (see [`otel`]): None, the default, exports no spans.
    pub tracing: Option<TracingConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("defaults are valid")
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Reads variables through `get`, so tests can pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let duration = |var: &'static str, default: &str| -> Result<Duration, ConfigError> {
            let v = get(var).unwrap_or_else(|| default.to_string());
            let d = humantime::parse_duration(&v).map_err(|e| ConfigError {
                var,
                value: v.clone(),
                reason: format!("{e} (use forms like 200ms, 10s, 1h)"),
            })?;
            if d.is_zero() {
                return Err(ConfigError {
                    var,
                    value: v,
                    reason: "must be greater than zero".into(),
                });
            }
            Ok(d)
        };
        let number =
            |var: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(var) {
                    None => Ok(default),
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if (min..=max).contains(&n) => Ok(n),
                        _ => Err(ConfigError {
                            var,
                            value: v,
                            reason: format!("must be a whole number from {min} to {max}"),
                        }),
                    },
                }
            };
        let addr =
            |var: &'static str, default: Option<&str>| -> Result<Option<SocketAddr>, ConfigError> {
                match get(var).or(default.map(str::to_string)) {
                    None => Ok(None),
                    Some(v) => v.parse().map(Some).map_err(|_| ConfigError {
                        var,
                        value: v,
                        reason: "must be an address like 127.0.0.1:8080 or [::]:8080".into(),
                    }),
                }
            };

        let master_key = match get("HOOKIT_MASTER_KEY") {
            None => None,
            Some(v) => Some(MasterKey::from_base64(&v).map_err(|e| ConfigError {
                var: "HOOKIT_MASTER_KEY",
                value: "<redacted>".into(),
                reason: format!("{e} (generate one with: openssl rand -base64 32)"),
            })?),
        };
        let mut allow = Vec::new();
        if let Some(v) = get("HOOKIT_ALLOW_PRIVATE_TARGETS") {
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let net: IpNet = part
                    .parse()
                    .or_else(|_| part.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError {
                        var: "HOOKIT_ALLOW_PRIVATE_TARGETS",
                        value: v.clone(),
                        reason: format!("`{part}` is not a CIDR like 127.0.0.0/8 or ::1/128"),
                    })?;
                allow.push(net);
            }
        }
        let max_payload = match get("HOOKIT_MAX_PAYLOAD") {
            None => 256 * 1024,
            Some(v) => parse_size(&v)
                .filter(|n| (1024..=64 << 20).contains(n))
                .ok_or_else(|| ConfigError {
                    var: "HOOKIT_MAX_PAYLOAD",
                    value: v.clone(),
                    reason: "must be a size from 1KiB to 64MiB, like 256KiB or 1MiB".into(),
                })?,
        };
        // 1,000 items of about 8 KiB each by default; never less than one
        // single-publish body, so any event that can be published alone fits.
        let max_batch_body = match get("HOOKIT_MAX_BATCH_BODY") {
            None => 8 << 20,
            Some(v) => parse_size(&v)
                .filter(|n| (64 * 1024..=256 << 20).contains(n))
                .ok_or_else(|| ConfigError {
                    var: "HOOKIT_MAX_BATCH_BODY",
                    value: v.clone(),
                    reason: "must be a size from 64KiB to 256MiB, like 8MiB".into(),
                })?,
        }
        .max(max_payload + 4096);
        let transform_memory = match get("HOOKIT_TRANSFORM_MEMORY") {
            None => 16 << 20,
            Some(v) => parse_size(&v)
                .filter(|n| (1 << 20..=1 << 30).contains(n))
                .ok_or_else(|| ConfigError {
                    var: "HOOKIT_TRANSFORM_MEMORY",
                    value: v.clone(),
                    reason: "must be a size from 1MiB to 1024MiB, like 16MiB".into(),
                })?,
        };
        let transform_timeout = duration("HOOKIT_TRANSFORM_TIMEOUT", "50ms")?;
        if transform_timeout > Duration::from_secs(5) {
            return Err(ConfigError {
                var: "HOOKIT_TRANSFORM_TIMEOUT",
                value: humantime::format_duration(transform_timeout).to_string(),
                reason: "must be at most 5s (it holds an engine thread)".into(),
            });
        }
        let retry = RetryPolicy {
            base: duration("HOOKIT_RETRY_BASE", "10s")?,
            cap: duration("HOOKIT_RETRY_CAP", "1h")?,
            max_attempts: number("HOOKIT_MAX_ATTEMPTS", 6, 1, 100)? as u32,
        };
        if retry.cap < retry.base {
            return Err(ConfigError {
                var: "HOOKIT_RETRY_CAP",
                value: humantime::format_duration(retry.cap).to_string(),
                reason: "must not be shorter than HOOKIT_RETRY_BASE".into(),
            });
        }
        let log_format = match get("HOOKIT_LOG_FORMAT").as_deref() {
            None | Some("auto") => LogFormat::Auto,
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError {
                    var: "HOOKIT_LOG_FORMAT",
                    value: other.into(),
                    reason: "must be json, text or auto".into(),
                })
            }
        };
        let controller_lease = duration("HOOKIT_CONTROLLER_LEASE", "15s")?;
        if controller_lease < Duration::from_secs(2) {
            return Err(ConfigError {
                var: "HOOKIT_CONTROLLER_LEASE",
                value: humantime::format_duration(controller_lease).to_string(),
                reason: "must be at least 2s".into(),
            });
        }
        Ok(Self {
            database_url: get("DATABASE_URL"),
            listen: addr("HOOKIT_LISTEN", Some("127.0.0.1:8080"))?.expect("has a default"),
            metrics_listen: addr("HOOKIT_METRICS_LISTEN", None)?,
            master_key,
            allow_private_targets: allow,
            retry,
            lease: duration("HOOKIT_LEASE", "60s")?,
            max_payload,
            max_batch_body,
            worker_concurrency: number("HOOKIT_WORKER_CONCURRENCY", 1024, 1, 10_000)? as usize,
            endpoint_concurrency: number("HOOKIT_ENDPOINT_CONCURRENCY", 64, 1, 10_000)? as usize,
            request_timeout: duration("HOOKIT_REQUEST_TIMEOUT", "15s")?,
            connect_timeout: duration("HOOKIT_CONNECT_TIMEOUT", "5s")?,
            retention: duration("HOOKIT_RETENTION", "30d")?,
            db_pool: number("HOOKIT_DB_POOL", 16, 2, 1000)? as u32,
            data_dir: get("HOOKIT_DATA_DIR").map(PathBuf::from),
            log_format,
            max_endpoints_per_tenant: number("HOOKIT_MAX_ENDPOINTS", 1000, 1, 1_000_000)? as i64,
            shutdown_grace: duration("HOOKIT_SHUTDOWN_GRACE", "30s")?,
            disable_after: duration("HOOKIT_DISABLE_AFTER", "5days")?,
            circuit_threshold: number("HOOKIT_CIRCUIT_THRESHOLD", 20, 1, 10_000)? as i32,
            circuit_probe: duration("HOOKIT_CIRCUIT_PROBE", "5s")?,
            ops_webhook_url: get("HOOKIT_OPS_WEBHOOK_URL"),
            ops_webhook_secret: match get("HOOKIT_OPS_WEBHOOK_SECRET") {
                None => None,
                Some(v) => {
                    Some(
                        crate::domain::signing::Secret::parse(&v).map_err(|e| ConfigError {
                            var: "HOOKIT_OPS_WEBHOOK_SECRET",
                            value: "<redacted>".into(),
                            reason: e.to_string(),
                        })?,
                    )
                }
            },
            pod_name: get("POD_NAME"),
            pod_namespace: get("POD_NAMESPACE"),
            watch_namespace: get("HOOKIT_WATCH_NAMESPACE"),
            controller_lease,
            controller_resync: duration("HOOKIT_CONTROLLER_RESYNC", "60s")?,
            transform_timeout,
            transform_memory,
            transform_threads: number("HOOKIT_TRANSFORM_THREADS", 2, 2, 64)? as usize,
            tracing: otel::from_lookup(&get)?,
        })
    }

    /// Starts the engine threads for transformations with these limits.
    pub fn transformer(&self) -> std::io::Result<crate::transform::Transformer> {
        crate::transform::Transformer::start(
            self.transform_threads,
            crate::transform::Limits {
                time: self.transform_timeout,
                memory: self.transform_memory,
            },
        )
    }

    /// The SSRF policy these settings describe.
    pub fn ssrf_policy(&self) -> crate::domain::ssrf::SsrfPolicy {
        crate::domain::ssrf::SsrfPolicy::new(self.allow_private_targets.clone())
    }
}

/// Parses `256KiB`, `1MiB`, `1000`, `64kb`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    /// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT[_<port>]`,
    /// `<SERVICE>_PORT` and `<SERVICE>_PORT_<n>_<PROTO>[_…]` for every Service in the
    /// namespace unless a pod turns service links off. The chart does, but a pod
    /// spec written by hand may not, and a Service named `hookit` is common: no
    /// setting may ever have a name of those shapes.
    #[test]
    fn no_setting_is_named_like_a_service_link_variable() {
        let read = std::sync::Mutex::new(Vec::<String>::new());
        Config::from_lookup(|k| {
            read.lock().unwrap().push(k.to_string());
            None
        })
        .unwrap();
        let read = read.into_inner().unwrap();
        assert!(read.len() > 20, "the lookup saw the settings: {read:?}");
        let link = |v: &str| {
            v.contains("_SERVICE_HOST")
                || v.contains("_SERVICE_PORT")
                || v.ends_with("_PORT")
                || v.split("_PORT_").nth(1).is_some_and(|rest| {
                    rest.split('_')
                        .next()
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
        };
        let clashing: Vec<&String> = read.iter().filter(|v| link(v)).collect();
        assert!(
            clashing.is_empty(),
            "named like service links: {clashing:?}"
        );
        assert!(
            link("HOOKIT_PORT")
                && link("HOOKIT_PORT_80_TCP_ADDR")
                && link("HOOKIT_SERVICE_PORT_HTTP")
        );
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.retry, RetryPolicy::default());
        assert_eq!(c.lease, Duration::from_secs(60));
        assert_eq!(c.max_payload, 256 * 1024);
        assert_eq!(c.max_batch_body, 8 << 20);
        assert_eq!(c.transform_timeout, Duration::from_millis(50));
        assert_eq!(c.transform_memory, 16 << 20);
        assert_eq!(c.transform_threads, 2);
        assert!(c.master_key.is_none() && c.database_url.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, val) in [
            ("HOOKIT_RETRY_BASE", "soon"),
            ("HOOKIT_LEASE", "0s"),
            ("HOOKIT_MASTER_KEY", "c2hvcnQ="),
            ("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8,nope"),
            ("HOOKIT_MAX_PAYLOAD", "lots"),
            ("HOOKIT_MAX_BATCH_BODY", "1KiB"),
            ("HOOKIT_MAX_ATTEMPTS", "0"),
            ("HOOKIT_LISTEN", "8080"),
            ("HOOKIT_TRANSFORM_TIMEOUT", "10s"),
            ("HOOKIT_TRANSFORM_MEMORY", "100KiB"),
            ("HOOKIT_TRANSFORM_THREADS", "1"),
        ] {
            let e = cfg(&[(var, val)]).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(var));
        }
        let e = cfg(&[("HOOKIT_MASTER_KEY", "c2VjcmV0LXNlY3JldA==")]).unwrap_err();
        assert!(
            !e.to_string().contains("c2VjcmV0"),
            "the key must not be echoed"
        );
    }

    #[test]
    fn parses_sizes_durations_and_cidrs() {
        let c = cfg(&[
            ("HOOKIT_MAX_PAYLOAD", "1MiB"),
            ("HOOKIT_RETRY_BASE", "200ms"),
            ("HOOKIT_RETRY_CAP", "2s"),
            (
                "HOOKIT_ALLOW_PRIVATE_TARGETS",
                "127.0.0.0/8, ::1/128,10.0.0.5",
            ),
        ])
        .unwrap();
        assert_eq!(c.max_payload, 1 << 20);
        assert_eq!(c.retry.base, Duration::from_millis(200));
        assert_eq!(c.allow_private_targets.len(), 3);
        assert_eq!(parse_size("256KiB"), Some(262144));
        assert_eq!(parse_size("12x"), None);
    }

    #[test]
    fn controller_settings() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.controller_lease, Duration::from_secs(15));
        assert_eq!(c.controller_resync, Duration::from_secs(60));
        assert!(c.watch_namespace.is_none() && c.pod_name.is_none());
        let c = cfg(&[
            ("POD_NAME", "hookit-0"),
            ("HOOKIT_WATCH_NAMESPACE", "payments"),
        ])
        .unwrap();
        assert_eq!(c.pod_name.as_deref(), Some("hookit-0"));
        assert_eq!(c.watch_namespace.as_deref(), Some("payments"));
        for (var, val) in [
            ("HOOKIT_CONTROLLER_LEASE", "1s"),
            ("HOOKIT_CONTROLLER_RESYNC", "never"),
        ] {
            assert_eq!(cfg(&[(var, val)]).unwrap_err().var, var);
        }
    }
}
