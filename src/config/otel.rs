//! The OpenTelemetry variables (`OTEL_*`), read with the rest of the
//! configuration so a bad value stops the process at start with its name, rather
//! than the SDK's habit of logging it and falling back to a default.
//!
//! Tracing is off unless an OTLP endpoint is set. What is honoured, per the
//! OpenTelemetry environment-variable specification:
//! `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`),
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `…_PROTOCOL` (`http/protobuf` or
//! `http/json`), `…_HEADERS`, `…_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`. (`OTEL_RESOURCE_ATTRIBUTES`
//! is read by the SDK's resource detector.)

use std::fmt;
use std::time::Duration;

use super::ConfigError;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`, the specification's default.
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// This fraction of trace ids.
    Ratio(f64),
    /// Follow the publisher's sampled flag when a `traceparent` came with the
    /// event; otherwise decide by the inner choice (the default: ParentBased(AlwaysOn)).
    ParentBased(Root),
}

/// The decision for traces that start here (no parent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// This fraction of trace ids.
    Ratio(f64),
}

/// Span export settings; `Config::tracing` is None when tracing is off.
#[derive(Clone, PartialEq)]
pub struct TracingConfig {
    /// The full URL spans are POSTed to (…/v1/traces).
    pub endpoint: String,
    /// Protobuf or JSON.
    pub protocol: OtlpProtocol,
    /// Extra request headers (often a vendor's API key: never logged).
    pub headers: Vec<(String, String)>,
    /// Time limit of one export request.
    pub timeout: Duration,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Which traces are kept.
    pub sampler: SamplerChoice,
}

impl fmt::Debug for TracingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are credentials; their names are not.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("TracingConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .finish()
    }
}

/// Reads the variables through `get`; Ok(None) when tracing is off.
pub fn from_lookup(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<TracingConfig>, ConfigError> {
    let bad = |var: &'static str, value: &str, reason: &str| ConfigError {
        var,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    match get("OTEL_SDK_DISABLED").map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "true" => return Ok(None),
        Some(v) if v == "false" => {}
        Some(v) => return Err(bad("OTEL_SDK_DISABLED", &v, "must be true or false")),
        None => {}
    }
    match get("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "none" => return Ok(None),
        Some(v) if v == "otlp" => {}
        Some(v) => {
            return Err(bad(
                "OTEL_TRACES_EXPORTER",
                &v,
                "HookIt exports traces over OTLP only: use otlp, or none to turn tracing off",
            ))
        }
        None => {}
    }
    // The signal-specific variable wins; the generic endpoint is a base URL
    // that gets the signal's path appended (the specification's rule).
    let (var, endpoint) = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    match url::Url::parse(&endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            return Err(bad(
                var,
                &get(var).unwrap_or_default(),
                "must be an http:// or https:// URL, e.g. http://otel-collector:4318",
            ))
        }
    }
    let (var, protocol) = signal_or_generic(get, "PROTOCOL");
    let protocol = match protocol.as_deref().map(str::trim) {
        None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some("http/json") => OtlpProtocol::HttpJson,
        Some("grpc") => {
            return Err(bad(
                var,
                "grpc",
                "HookIt exports OTLP over HTTP: use http/protobuf (a collector's port 4318) or http/json",
            ))
        }
        Some(v) => return Err(bad(var, v, "must be http/protobuf or http/json")),
    };
    let (var, headers) = signal_or_generic(get, "HEADERS");
    let headers = match headers {
        None => Vec::new(),
        // The value is never echoed: it usually carries a credential.
        Some(v) => parse_headers(&v).ok_or_else(|| {
            bad(
                var,
                "<redacted>",
                "must be comma-separated name=value pairs (values URL-encoded)",
            )
        })?,
    };
    let (var, timeout) = signal_or_generic(get, "TIMEOUT");
    let timeout = match timeout {
        None => Duration::from_secs(10),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if (1..=600_000).contains(&ms) => Duration::from_millis(ms),
            _ => {
                return Err(bad(
                    var,
                    &v,
                    "must be whole milliseconds from 1 to 600000 (the specification's unit)",
                ))
            }
        },
    };
    let service_name = get("OTEL_SERVICE_NAME")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hookit".into());
    Ok(Some(TracingConfig {
        endpoint,
        protocol,
        headers,
        timeout,
        service_name,
        sampler: sampler(get)?,
    }))
}

/// `OTEL_EXPORTER_OTLP_TRACES_<what>`, else `OTEL_EXPORTER_OTLP_<what>`, with
/// the name of the one that was set.
fn signal_or_generic(
    get: &dyn Fn(&str) -> Option<String>,
    what: &'static str,
) -> (&'static str, Option<String>) {
    let (specific, generic) = match what {
        "PROTOCOL" => (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        "HEADERS" => (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        _ => (
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
    };
    match get(specific) {
        Some(v) => (specific, Some(v)),
        None => (generic, get(generic)),
    }
}

/// `a=b,c=d%20e` (W3C baggage-like, values percent-encoded).
fn parse_headers(v: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = pair.split_once('=')?;
        let k = k.trim();
        let val = percent_decode(val.trim())?;
        if k.is_empty()
            || http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(&val).is_err()
        {
            return None;
        }
        out.push((k.to_string(), val));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn sampler(get: &dyn Fn(&str) -> Option<String>) -> Result<SamplerChoice, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        match get("OTEL_TRACES_SAMPLER_ARG") {
            // The specification's default for the ratio samplers.
            None => Ok(1.0),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(ConfigError {
                    var: "OTEL_TRACES_SAMPLER_ARG",
                    value: v,
                    reason: "must be a number from 0 to 1 (the fraction of traces kept)".into(),
                }),
            },
        }
    };
    let Some(name) = get("OTEL_TRACES_SAMPLER") else {
        return Ok(SamplerChoice::ParentBased(Root::AlwaysOn));
    };
    Ok(match name.trim() {
        "always_on" => SamplerChoice::AlwaysOn,
        "always_off" => SamplerChoice::AlwaysOff,
        "traceidratio" => SamplerChoice::Ratio(ratio()?),
        "parentbased_always_on" => SamplerChoice::ParentBased(Root::AlwaysOn),
        "parentbased_always_off" => SamplerChoice::ParentBased(Root::AlwaysOff),
        "parentbased_traceidratio" => SamplerChoice::ParentBased(Root::Ratio(ratio()?)),
        other => {
            return Err(ConfigError {
                var: "OTEL_TRACES_SAMPLER",
                value: other.to_string(),
                reason: "must be always_on, always_off, traceidratio, parentbased_always_on, \
                         parentbased_always_off or parentbased_traceidratio"
                    .into(),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<Option<TracingConfig>, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_lookup(&|k| m.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set_and_off_when_disabled() {
        assert!(read(&[]).unwrap().is_none());
        assert!(read(&[("OTEL_SERVICE_NAME", "x")]).unwrap().is_none());
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(read(&[base]).unwrap().is_some());
        assert!(read(&[base, ("OTEL_SDK_DISABLED", "true")])
            .unwrap()
            .is_none());
        assert!(read(&[base, ("OTEL_TRACES_EXPORTER", "none")])
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_generic_endpoint_gets_the_traces_path_and_the_specific_one_is_used_as_is() {
        let c = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.service_name, "hookit");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.sampler, SamplerChoice::ParentBased(Root::AlwaysOn));
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://t.example/custom",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_SERVICE_NAME", "hookit-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=s%3Dcret, x-team=core",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "https://t.example/custom");
        assert_eq!(c.protocol, OtlpProtocol::HttpJson);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.service_name, "hookit-eu");
        assert_eq!(c.sampler, SamplerChoice::ParentBased(Root::Ratio(0.25)));
        assert_eq!(
            c.headers,
            vec![
                ("x-api-key".into(), "s=cret".into()),
                ("x-team".into(), "core".into())
            ]
        );
        // Debug (and so any log of the config) names the headers, never their values.
        let dbg = format!("{c:?}");
        assert!(
            dbg.contains("x-api-key") && !dbg.contains("s=cret"),
            "{dbg}"
        );
    }

    #[test]
    fn bad_values_name_their_variable_and_never_echo_headers() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                &[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[base, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            (
                &[base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                &[base, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                &[
                    base,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                &[base, ("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (&[base, ("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
            (
                &[
                    base,
                    (
                        "OTEL_EXPORTER_OTLP_HEADERS",
                        "authorization=Bearer%0Atopsecret",
                    ),
                ],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
        ];
        for (vars, var) in cases {
            let e = read(vars).expect_err(var);
            assert_eq!(e.var, *var, "{e}");
            assert!(!e.to_string().contains("topsecret"), "{e}");
        }
    }
}
