//! The original live demo, for real: the `hookit demo` binary, as an operator
//! runs it, with `--discord-webhook` at the fake Discord (which enforces
//! Discord's body contract and its 429s) and `--prices` at a fake spot-price
//! API on loopback, in Coinbase's shape. No internet needed.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hookit::domain::crypto::MasterKey;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::common::chat::ChatFake;
use crate::common::{eventually, fresh_database};

const WAIT: Duration = Duration::from_secs(90);
/// The webhook's token: it must appear in no log line and no banner.
const TOKEN: &str = "t0ken-that-must-never-be-logged";

/// What the fake price API answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PriceMode {
    Up,
    /// 503, as an unreachable upstream behind a proxy.
    Down,
    /// 200 with a page that is no JSON.
    Garbage,
}

#[derive(Clone)]
struct PriceApi {
    base: String,
    mode: Arc<Mutex<PriceMode>>,
    asked: Arc<AtomicUsize>,
}

/// The fake's prices, by pair, as Coinbase writes them (decimal strings).
fn spot_price(pair: &str) -> Option<&'static str> {
    match pair {
        "BTC-USD" => Some("97001.25"),
        "ETH-USD" => Some("3456.78"),
        "SOL-USD" => Some("187.5"),
        _ => None,
    }
}

async fn spot(State(api): State<PriceApi>, Path(pair): Path<String>) -> Response {
    api.asked.fetch_add(1, Ordering::SeqCst);
    let mode = *api.mode.lock().unwrap();
    match (mode, spot_price(&pair)) {
        (PriceMode::Down, _) => {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response()
        }
        (PriceMode::Garbage, _) => (StatusCode::OK, "<html>maintenance</html>").into_response(),
        (PriceMode::Up, None) => StatusCode::NOT_FOUND.into_response(),
        (PriceMode::Up, Some(amount)) => {
            let base = pair.trim_end_matches("-USD");
            Json(json!({"data": {"amount": amount, "base": base, "currency": "USD"}}))
                .into_response()
        }
    }
}

impl PriceApi {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = PriceApi {
            base: format!("http://{}", listener.local_addr().unwrap()),
            mode: Arc::new(Mutex::new(PriceMode::Up)),
            asked: Arc::default(),
        };
        let app = Router::new()
            .route("/v2/prices/{pair}/spot", get(spot))
            .with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        api
    }

    fn template(&self) -> String {
        format!("{}/v2/prices/{{symbol}}-USD/spot", self.base)
    }

    fn set(&self, mode: PriceMode) {
        *self.mode.lock().unwrap() = mode;
    }
}

fn hookit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hookit"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOOKIT_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    c
}

/// Collects a child's output, line by line.
fn collect(out: impl AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let mut t = sink.lock().unwrap();
            t.push_str(&l);
            t.push('\n');
        }
    });
    text
}

/// A running `hookit demo`.
struct Demo {
    child: Child,
    base: String,
    key: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the binary with `args` on a fresh database; waits for its banner.
    async fn start(args: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = hookit()
            .arg("demo")
            .args(args)
            .env("DATABASE_URL", fresh_database().await)
            .env("HOOKIT_MASTER_KEY", MasterKey::generate_base64())
            .env("HOOKIT_DATA_DIR", dir.path())
            .env("HOOKIT_LISTEN", "127.0.0.1:0")
            // The fake Discord lives on loopback: the operator's allowance, as in
            // the chat tests (the demo itself adds only 127.0.0.1/32, and only
            // after the channel URL was checked).
            .env("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let banner = |s: &Arc<Mutex<String>>| s.lock().unwrap().clone();
        eventually("the demo's banner and API key", WAIT, || async {
            banner(&stdout).lines().any(|l| l.starts_with("hk_"))
        })
        .await;
        let text = banner(&stdout);
        let key = text
            .lines()
            .rev()
            .find(|l| l.starts_with("hk_"))
            .unwrap()
            .to_string();
        let base = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Dashboard:"))
            .expect("the banner names the dashboard")
            .trim()
            .trim_end_matches('/')
            .to_string();
        Self {
            child,
            base,
            key,
            stdout,
            stderr,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn banner(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn deliveries(&self, query: &str) -> Vec<Value> {
        let (status, page) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/deliveries?limit=1000&{query}"),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["data"].as_array().cloned().unwrap_or_default()
    }

    /// The endpoint of the Discord channel.
    async fn discord_endpoint(&self) -> Value {
        let (status, page) = self.call(reqwest::Method::GET, "/v1/endpoints").await;
        assert_eq!(status, 200);
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["format"] == "discord")
            .cloned()
            .expect("the demo created a discord endpoint")
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// SIGTERM; the demo must stop cleanly.
    async fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}\n{}", self.log());
    }
}

/// A Discord message's embed fields, by name.
fn fields(body: &[u8]) -> (Value, std::collections::HashMap<String, String>) {
    let m: Value = serde_json::from_slice(body).unwrap();
    let f = m["embeds"][0]["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap().replace('\\', ""),
                        f["value"].as_str().unwrap().replace('\\', ""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (m, f)
}

fn webhook_id(headers: &axum::http::HeaderMap) -> String {
    headers["webhook-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn real_prices_reach_discord_pause_holds_resume_delivers_and_a_redriven_dead_letter_arrives()
{
    let discord = ChatFake::discord().await;
    let prices = PriceApi::start().await;
    let webhook = discord.url(&format!("/api/webhooks/4242/{TOKEN}"));
    let demo = Demo::start(&[
        "--discord-webhook".into(),
        webhook,
        "--prices".into(),
        prices.template(),
        "--interval".into(),
        "2s".into(),
    ])
    .await;

    // Real prices, readable, within Discord's contract (the fake refuses
    // anything else with 400, and answers 429s the demo must pace below).
    let seen = discord.wait_accepted(3, WAIT).await;
    assert!(seen.rejected.is_empty(), "refused: {:?}", seen.rejected);
    let mut by_ticker = std::collections::HashMap::new();
    for (_, body) in &seen.accepted {
        let (m, f) = fields(body);
        assert_eq!(m["content"], "**price.updated**");
        assert_eq!(
            f["source"], "127.0.0.1",
            "a real price, not a simulated one: {m}"
        );
        by_ticker.insert(f["ticker"].clone(), f["price"].clone());
    }
    for (ticker, pair) in [("BTC", "BTC-USD"), ("ETH", "ETH-USD"), ("SOL", "SOL-USD")] {
        let shown: f64 = by_ticker[ticker].parse().unwrap();
        let real: f64 = spot_price(pair).unwrap().parse().unwrap();
        assert_eq!(shown, real, "{ticker}");
    }
    let ep = demo.discord_endpoint().await;
    let id = ep["id"].as_str().unwrap().to_string();
    assert_eq!(ep["max_in_flight"], 1);

    // Pause: new deliveries are held, none reaches Discord, no attempt is spent.
    let (status, _) = demo
        .call(reqwest::Method::POST, &format!("/v1/endpoints/{id}/pause"))
        .await;
    assert_eq!(status, 200);
    let held = |d: &Value| d["status"] == "pending" && d["next_attempt_at"].is_null();
    let count_held = |ds: &[Value]| ds.iter().filter(|d| held(d)).count();
    // Settled: something is held and everything else was delivered, so nothing
    // claimed before the pause can still be on its way to the fake.
    let settled = eventually_deliveries(&demo, &id, |ds| {
        count_held(ds) >= 1 && ds.iter().all(|d| held(d) || d["status"] == "succeeded")
    })
    .await;
    let at_hold = discord.seen().accepted.len();
    // Two more rounds are held while the fake receives nothing more.
    let target = count_held(&settled) + 6;
    let held_now = eventually_deliveries(&demo, &id, |ds| count_held(ds) >= target).await;
    assert_eq!(
        discord.seen().accepted.len(),
        at_hold,
        "nothing delivered while paused"
    );
    let held_ids: Vec<String> = held_now
        .iter()
        .filter(|d| held(d))
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    // No budget spent while held (a request answered 429 before the pause is
    // numbered but spends nothing).
    assert!(held_now
        .iter()
        .filter(|d| held(d))
        .all(|d| d["attempts"] == d["rate_limited"]));

    // Resume: the held deliveries are delivered, paced below Discord's limit.
    let (status, _) = demo
        .call(reqwest::Method::POST, &format!("/v1/endpoints/{id}/resume"))
        .await;
    assert_eq!(status, 200);
    eventually_deliveries(&demo, &id, |ds| {
        held_ids.iter().all(|h| {
            ds.iter()
                .any(|d| d["id"] == *h && d["status"] == "succeeded")
        })
    })
    .await;
    let seen = discord.wait_accepted(at_hold + held_ids.len(), WAIT).await;
    assert!(seen.rejected.is_empty());

    // Discord has an outage: deliveries are retried and dead-lettered.
    discord.set_outage(true);
    let dead =
        eventually_deliveries(&demo, &id, |ds| ds.iter().any(|d| d["status"] == "dead")).await;
    discord.set_outage(false);
    let dead = dead.into_iter().find(|d| d["status"] == "dead").unwrap();
    let spent = dead["attempts"].as_i64().unwrap() - dead["rate_limited"].as_i64().unwrap();
    assert_eq!(spent, 4, "the endpoint's whole budget: {dead}");
    assert_eq!(dead["last_status_code"], 500);
    assert!(discord.seen().failed_in_outage >= 4);

    // Redriven once Discord is back, the dead letter arrives.
    let dead_id = dead["id"].as_str().unwrap();
    let event_id = dead["event_id"].as_str().unwrap().to_string();
    let (status, body) = demo
        .call(
            reqwest::Method::POST,
            &format!("/v1/deliveries/{dead_id}/redrive"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "the redriven dead letter arrives in Discord",
        WAIT,
        || async {
            discord
                .seen()
                .accepted
                .iter()
                .any(|(h, _)| webhook_id(h) == event_id)
        },
    )
    .await;
    eventually_deliveries(&demo, &id, |ds| {
        ds.iter()
            .any(|d| d["id"] == dead_id && d["status"] == "succeeded")
    })
    .await;
    assert!(discord.seen().rejected.is_empty());

    // The token is in no log line and not in the banner; the redacted URL is.
    let (log, banner) = (demo.log(), demo.banner());
    assert!(
        !log.contains(TOKEN) && !banner.contains(TOKEN),
        "the webhook token leaked"
    );
    assert!(banner.contains("/api/webhooks/4242/…"), "{banner}");
    assert!(log.contains("demo chat channel ready"), "{log}");
    demo.stop().await;
}

/// Waits (bounded) until the Discord endpoint's deliveries satisfy `pred`.
async fn eventually_deliveries(
    demo: &Demo,
    endpoint: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ds = demo.deliveries(&format!("endpoint_id={endpoint}")).await;
        if pred(&ds) {
            return ds;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; last: {ds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_failing_price_source_falls_back_to_simulated_prices_and_comes_back() {
    let discord = ChatFake::discord().await;
    let prices = PriceApi::start().await;
    let demo = Demo::start(&[
        "--discord-webhook".into(),
        discord.url(&format!("/api/webhooks/7/{TOKEN}")),
        "--prices".into(),
        prices.template(),
        "--price-path".into(),
        "data.amount".into(),
        "--interval".into(),
        "2s".into(),
        "--price-timeout".into(),
        "2s".into(),
    ])
    .await;
    let source_of = |body: &[u8]| fields(body).1.get("source").cloned().unwrap_or_default();
    eventually("a real price in Discord", WAIT, || async {
        discord
            .seen()
            .accepted
            .iter()
            .any(|(_, b)| source_of(b) == "127.0.0.1")
    })
    .await;
    assert_eq!(demo.metric("hookit_demo_price_source_up").await, Some(1.0));

    for mode in [PriceMode::Garbage, PriceMode::Down] {
        prices.set(mode);
        let before = discord.seen().accepted.len();
        eventually("the fallback is logged", WAIT, || async {
            demo.log()
                .matches("falling back to simulated prices")
                .count()
                >= if mode == PriceMode::Garbage { 1 } else { 2 }
        })
        .await;
        // Simulated prices keep the channel going meanwhile…
        eventually("a simulated price in Discord", WAIT, || async {
            discord.seen().accepted[before..]
                .iter()
                .any(|(_, b)| source_of(b) == "simulated")
        })
        .await;
        assert_eq!(demo.metric("hookit_demo_price_source_up").await, Some(0.0));
        // …and the source, asked again after a backoff, comes back.
        let asked = prices.asked.load(Ordering::SeqCst);
        eventually("the source is asked again", WAIT, || async {
            prices.asked.load(Ordering::SeqCst) > asked
        })
        .await;
        prices.set(PriceMode::Up);
        eventually("real prices again", WAIT, || async {
            demo.log().matches("price source answering again").count()
                >= if mode == PriceMode::Garbage { 1 } else { 2 }
        })
        .await;
        let after = discord.seen().accepted.len();
        eventually("a real price in Discord again", WAIT, || async {
            discord.seen().accepted[after..]
                .iter()
                .any(|(_, b)| source_of(b) == "127.0.0.1")
        })
        .await;
    }
    let log = demo.log();
    assert!(log.contains("not JSON"), "the reason is logged: {log}");
    assert!(log.contains("HTTP 503"), "{log}");
    assert!(
        !log.contains("/v2/prices/"),
        "the source's URL is not logged: {log}"
    );
    assert_eq!(
        demo.metric("hookit_demo_price_fallbacks_total").await,
        Some(2.0)
    );
    assert!(discord.seen().rejected.is_empty());
    demo.stop().await;
}

#[tokio::test]
async fn bad_demo_flags_fail_at_start_naming_the_flag_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    for (args, allow, flag) in [
        (
            vec![
                "--discord-webhook".to_string(),
                format!("http://discord.com/api/webhooks/1/{TOKEN}"),
            ],
            false,
            "--discord-webhook",
        ),
        (
            vec![
                "--discord-webhook".to_string(),
                format!("https://discord.com/webhooks/{TOKEN}"),
            ],
            false,
            "--discord-webhook",
        ),
        // Loopback only where HOOKIT_ALLOW_PRIVATE_TARGETS allows it.
        (
            vec![
                "--discord-webhook".to_string(),
                format!("http://127.0.0.1:9/api/webhooks/1/{TOKEN}"),
            ],
            false,
            "--discord-webhook",
        ),
        (
            vec![
                "--slack-webhook".to_string(),
                format!("https://hooks.slack.com/{TOKEN}"),
            ],
            true,
            "--slack-webhook",
        ),
        (
            vec![
                "--prices".to_string(),
                "https://api.example.com/spot".to_string(),
            ],
            false,
            "--prices",
        ),
        (
            vec![
                "--prices".to_string(),
                "--price-path".to_string(),
                "a..b".to_string(),
            ],
            false,
            "--price-path",
        ),
        (
            vec!["--interval".to_string(), "200ms".to_string()],
            false,
            "--interval",
        ),
        (
            vec![
                "--prices".to_string(),
                "--price-timeout".to_string(),
                "soon".to_string(),
            ],
            false,
            "--price-timeout",
        ),
    ] {
        let mut cmd = hookit();
        cmd.arg("demo")
            .args(&args)
            .env("HOOKIT_DATA_DIR", dir.path());
        if allow {
            cmd.env("HOOKIT_ALLOW_PRIVATE_TARGETS", "127.0.0.0/8");
        }
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("refused at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {flag} (")),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains(TOKEN),
            "{args:?} echoed the token: {stderr}"
        );
    }
    // The webhook URL also comes from the environment, as a secret would.
    let out = hookit()
        .arg("demo")
        .env("HOOKIT_DATA_DIR", dir.path())
        .env(
            "HOOKIT_DEMO_DISCORD_WEBHOOK",
            format!("https://discord.com/api/hooks/{TOKEN}"),
        )
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HOOKIT_DEMO_DISCORD_WEBHOOK") && !stderr.contains(TOKEN),
        "{stderr}"
    );
}
