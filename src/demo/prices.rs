//! A real spot-price source for the demo: which URL to ask for each symbol,
//! where the price is in its JSON answer, and one bounded, timed-out request.
//!
//! The default is Coinbase's public spot price, no key needed:
//! `GET https://api.coinbase.com/v2/prices/BTC-USD/spot` answers
//! `{"data": {"amount": "97012.35", "base": "BTC", "currency": "USD"}}`.
//! The URL is the operator's own configuration, like `DATABASE_URL`, so the
//! webhook SSRF policy does not apply to it; it is still never logged in full
//! (a template may carry an API key in its query).

use std::time::Duration;

use serde_json::Value;

use super::options::OptionError;

/// The name `--prices` takes for the default source.
pub const COINBASE: &str = "coinbase";
/// Coinbase's spot-price URL template.
pub const COINBASE_TEMPLATE: &str = "https://api.coinbase.com/v2/prices/{symbol}-USD/spot";
/// Where Coinbase puts the price (a decimal string).
pub const COINBASE_PATH: &str = "/data/amount";
/// The placeholder a template must contain.
pub const PLACEHOLDER: &str = "{symbol}";
/// Largest answer read: a spot price is a few hundred bytes.
pub const MAX_ANSWER: usize = 64 * 1024;

const FLAG: &str = "--prices";
const VAR: &str = "HOOKIT_DEMO_PRICES";

/// A configured price source.
#[derive(Clone)]
pub struct PriceSource {
    template: String,
    path: Vec<String>,
    name: String,
    timeout: Duration,
}

impl std::fmt::Debug for PriceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceSource")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Splits a JSON pointer (`/data/amount`, RFC 6901 escapes) or a dotted path
/// (`data.amount`) into its keys; a numeric key also indexes an array.
pub fn parse_path(raw: &str) -> Result<Vec<String>, String> {
    let raw = raw.trim();
    let keys: Vec<String> = if let Some(pointer) = raw.strip_prefix('/') {
        pointer
            .split('/')
            .map(|k| k.replace("~1", "/").replace("~0", "~"))
            .collect()
    } else {
        raw.split('.').map(str::to_string).collect()
    };
    if raw.is_empty() || keys.iter().any(String::is_empty) {
        return Err("must be a JSON pointer like /data/amount or a dotted path like data.amount, with no empty key".into());
    }
    Ok(keys)
}

/// The price at `path` in `body`: a JSON number or numeric string, finite and
/// positive. The error says what was wrong, without echoing the answer.
pub fn extract(body: &[u8], path: &[String]) -> Result<f64, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    let mut at = &v;
    for key in path {
        let next = match at {
            Value::Object(m) => m.get(key),
            Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        at = next.ok_or_else(|| format!("the answer has nothing at /{}", path.join("/")))?;
    }
    let price = match at {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match price {
        Some(p) if p.is_finite() && p > 0.0 => Ok(p),
        _ => Err(format!(
            "the value at /{} is not a positive number",
            path.join("/")
        )),
    }
}

impl PriceSource {
    /// `source` is `coinbase` or a URL template with `{symbol}`; `path` defaults
    /// to Coinbase's `/data/amount`.
    pub fn parse(source: &str, path: Option<&str>, timeout: Duration) -> Result<Self, OptionError> {
        let source = source.trim();
        let template = if source.eq_ignore_ascii_case(COINBASE) {
            COINBASE_TEMPLATE.to_string()
        } else {
            source.to_string()
        };
        if !template.contains(PLACEHOLDER) {
            return Err(OptionError::new(
                FLAG,
                VAR,
                format!("must be `{COINBASE}` or a URL template containing {PLACEHOLDER}, like {COINBASE_TEMPLATE}"),
            ));
        }
        let url = url::Url::parse(&template.replace(PLACEHOLDER, "BTC"))
            .map_err(|_| OptionError::new(FLAG, VAR, "is not a URL template"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OptionError::new(
                FLAG,
                VAR,
                "must be an http or https URL template",
            ));
        }
        let name = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(OptionError::new(FLAG, VAR, "has no host")),
        };
        let path = parse_path(path.unwrap_or(COINBASE_PATH))
            .map_err(|e| OptionError::new("--price-path", "HOOKIT_DEMO_PRICE_PATH", e))?;
        Ok(Self {
            template,
            path,
            name,
            timeout,
        })
    }

    /// The URL for `symbol`.
    pub fn url(&self, symbol: &str) -> String {
        self.template.replace(PLACEHOLDER, symbol)
    }

    /// A name for logs and payloads: the source's host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long a request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Asks a [`PriceSource`] over HTTP.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    source: PriceSource,
}

impl Fetcher {
    /// A client for `source`, with its timeout.
    pub fn new(source: PriceSource) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(source.timeout)
            .connect_timeout(source.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("hookit-demo/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, source })
    }

    /// The source asked.
    pub fn source(&self) -> &PriceSource {
        &self.source
    }

    /// The current price of `symbol`, or why there is none (never the URL).
    pub async fn price(&self, symbol: &str) -> Result<f64, String> {
        let mut resp = self
            .http
            .get(self.source.url(symbol))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("{symbol}: HTTP {}", resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(format!(
                    "{symbol}: the answer is larger than {MAX_ANSWER} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        extract(&body, &self.source.path).map_err(|e| format!("{symbol}: {e}"))
    }
}

/// A transport error without its URL.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        let mut msg = String::from("request failed");
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = std::error::Error::source(s);
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        parse_path(p).unwrap()
    }

    #[test]
    fn paths_are_pointers_or_dotted() {
        assert_eq!(path("/data/amount"), ["data", "amount"]);
        assert_eq!(path("data.amount"), ["data", "amount"]);
        assert_eq!(path("/a~1b/c~0d"), ["a/b", "c~d"]);
        assert_eq!(path("bitcoin.usd"), ["bitcoin", "usd"]);
        for bad in ["", "/", "a..b", "/a//b", "."] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prices_are_read_from_numbers_and_numeric_strings() {
        let coinbase = br#"{"data": {"amount": "97012.35", "base": "BTC", "currency": "USD"}}"#;
        assert_eq!(extract(coinbase, &path(COINBASE_PATH)), Ok(97012.35));
        assert_eq!(
            extract(br#"{"bitcoin": {"usd": 64000}}"#, &path("bitcoin.usd")),
            Ok(64000.0)
        );
        assert_eq!(extract(br#"{"p": [1, 2.5]}"#, &path("p.1")), Ok(2.5));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let p = path(COINBASE_PATH);
        for (body, why) in [
            (&b"<html>down</html>"[..], "not JSON"),
            (br#"{"data": {}}"#, "nothing at /data/amount"),
            (br#"{"data": {"amount": "n/a"}}"#, "not a positive number"),
            (br#"{"data": {"amount": -3}}"#, "not a positive number"),
            (br#"{"data": {"amount": "NaN"}}"#, "not a positive number"),
            (
                br#"{"data": {"amount": {"v": 1}}}"#,
                "not a positive number",
            ),
        ] {
            let e = extract(body, &p).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn sources_are_coinbase_or_templates() {
        let t = Duration::from_secs(5);
        let c = PriceSource::parse("coinbase", None, t).unwrap();
        assert_eq!(
            c.url("ETH"),
            "https://api.coinbase.com/v2/prices/ETH-USD/spot"
        );
        assert_eq!(c.name(), "api.coinbase.com");
        let own =
            PriceSource::parse("http://127.0.0.1:9/p/{symbol}?key=k", Some("price"), t).unwrap();
        assert_eq!(own.url("SOL"), "http://127.0.0.1:9/p/SOL?key=k");
        assert!(!format!("{own:?}").contains("key=k"));
        for (src, path, flag) in [
            ("https://example.com/spot", None, "--prices"),
            ("ftp://example.com/{symbol}", None, "--prices"),
            ("{symbol}", None, "--prices"),
            ("coinbase", Some("a..b"), "--price-path"),
        ] {
            assert_eq!(
                PriceSource::parse(src, path, t).unwrap_err().flag,
                flag,
                "{src}"
            );
        }
    }
}
