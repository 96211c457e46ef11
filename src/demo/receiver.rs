//! The demo's receiver: a webhook consumer on loopback that verifies every
//! signature, like a real one must, and answers as its mode says.

use std::collections::{HashSet, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::DemoControl;
use crate::domain::signing::{verify, Secret};

/// The path the demo endpoint delivers to.
pub const PATH: &str = "/demo/prices";
/// How many received requests the receiver remembers.
pub const LOG_CAPACITY: usize = 200;
/// How many acknowledged event ids it remembers to recognise redeliveries (about
/// an hour of the demo's traffic).
pub const ACKED_CAPACITY: usize = 10_000;
/// Longest a request waits in `timeouts` mode. HookIt gives up long before
/// (the demo endpoint's timeout is 2 s); the bound only keeps abandoned requests
/// from piling up.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `200 OK`.
    Up,
    /// `500 Internal Server Error`.
    Errors,
    /// No answer: the request hangs until the sender's timeout.
    Timeouts,
}

impl Mode {
    /// The name used by the API and the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Up => "up",
            Mode::Errors => "errors",
            Mode::Timeouts => "timeouts",
        }
    }
}

impl FromStr for Mode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "up" => Ok(Mode::Up),
            "errors" => Ok(Mode::Errors),
            "timeouts" => Ok(Mode::Timeouts),
            _ => Err(()),
        }
    }
}

/// One request as the receiver saw it (no payload: only what identifies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// `webhook-id`: the event id, the same on every retry.
    pub event_id: String,
    /// The envelope's `type`, when the body is one.
    pub event_type: String,
    /// Whether a signature matched.
    pub verified: bool,
    /// Whether this event had already been acknowledged (a redelivery: HookIt
    /// delivers at least once, and a receiver deduplicates on `webhook-id`), as
    /// far as the last [`ACKED_CAPACITY`] acknowledgements tell.
    pub duplicate: bool,
    /// The status answered; None in `timeouts` mode.
    pub answered: Option<u16>,
}

/// The receiver's state, shared by its HTTP handler and the API's demo switch.
pub struct Receiver {
    mode: watch::Sender<Mode>,
    /// The endpoint's current signing secret; None until the setup installs it.
    secret: RwLock<Option<Secret>>,
    log: Mutex<Log>,
    shutdown: CancellationToken,
}

/// The recent requests, and the ids of the events acknowledged with a 200.
#[derive(Default)]
struct Log {
    recent: VecDeque<Received>,
    acked: HashSet<String>,
    acked_order: VecDeque<String>,
}

impl DemoControl for Receiver {
    fn mode(&self) -> String {
        self.current_mode().as_str().to_string()
    }

    fn set_mode(&self, mode: &str) -> bool {
        match mode.parse() {
            Ok(m) => {
                self.mode.send_replace(m);
                true
            }
            Err(()) => false,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
}

impl Receiver {
    /// A receiver in `up` mode; `shutdown` also ends requests held in `timeouts` mode.
    pub fn new(shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            mode: watch::Sender::new(Mode::Up),
            secret: RwLock::new(None),
            log: Mutex::new(Log::default()),
            shutdown,
        })
    }

    /// The current mode.
    pub fn current_mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Installs the secret signatures are checked against (at start, and after a
    /// rotation).
    pub fn set_secret(&self, secret: Secret) {
        *self.secret.write().unwrap_or_else(|p| p.into_inner()) = Some(secret);
    }

    /// The last [`LOG_CAPACITY`] requests, oldest first.
    pub fn recent(&self) -> Vec<Received> {
        self.log_lock().recent.iter().cloned().collect()
    }

    fn log_lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The receiver's routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().route(PATH, post(handle)).with_state(self)
    }

    /// Serves on a free loopback port until shutdown; returns the URL to deliver to.
    pub async fn serve(self: Arc<Self>) -> anyhow::Result<(String, JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on loopback for the demo receiver")?;
        let url = format!("http://{}{PATH}", listener.local_addr()?);
        let shutdown = self.shutdown.clone();
        let app = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
            {
                warn!(error = %e, "demo receiver stopped");
            }
        });
        Ok((url, task))
    }

    /// Checks the Standard Webhooks headers against the installed secret.
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("missing {name} header"))
        };
        let (id, timestamp, signature) = (
            header("webhook-id")?,
            header("webhook-timestamp")?,
            header("webhook-signature")?,
        );
        let guard = self.secret.read().unwrap_or_else(|p| p.into_inner());
        let secret = guard.as_ref().ok_or("no signing secret installed yet")?;
        verify(
            secret,
            id,
            timestamp,
            signature,
            body,
            Utc::now().timestamp(),
        )
        .map_err(|e| e.to_string())
    }

    /// Appends to the bounded log; tells whether the event was acknowledged before.
    fn record(&self, mut r: Received) -> bool {
        let mut log = self.log_lock();
        r.duplicate = r.verified && log.acked.contains(&r.event_id);
        let duplicate = r.duplicate;
        if r.verified && r.answered == Some(200) && !duplicate {
            if log.acked_order.len() == ACKED_CAPACITY {
                if let Some(old) = log.acked_order.pop_front() {
                    log.acked.remove(&old);
                }
            }
            log.acked.insert(r.event_id.clone());
            log.acked_order.push_back(r.event_id.clone());
        }
        if log.recent.len() == LOG_CAPACITY {
            log.recent.pop_front();
        }
        log.recent.push_back(r);
        duplicate
    }
}

async fn handle(
    State(rx): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let event_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let event_type = serde_json::from_slice::<Envelope>(&body)
        .map(|e| e.kind)
        .unwrap_or_default();
    let verified = match rx.check(&headers, &body) {
        Ok(()) => true,
        Err(reason) => {
            warn!(%event_id, %reason, "demo receiver refused a request: bad signature");
            false
        }
    };
    let mode = rx.current_mode();
    let (status, text) = match (verified, mode) {
        (false, _) => (Some(StatusCode::UNAUTHORIZED), "invalid signature"),
        (true, Mode::Up) => (Some(StatusCode::OK), "ok"),
        (true, Mode::Errors) => (
            Some(StatusCode::INTERNAL_SERVER_ERROR),
            "demo receiver is in errors mode",
        ),
        (true, Mode::Timeouts) => (None, ""),
    };
    let duplicate = rx.record(Received {
        at: Utc::now(),
        event_id: event_id.clone(),
        event_type: event_type.clone(),
        verified,
        duplicate: false,
        answered: status.map(|s| s.as_u16()),
    });
    if verified {
        info!(
            %event_id,
            mode = mode.as_str(),
            duplicate,
            "demo receiver got {}",
            if event_type.is_empty() { "a request" } else { &event_type }
        );
    }
    if let Some(status) = status {
        return (status, text);
    }
    // `timeouts`: hold the request until the sender gives up (its connection is
    // then dropped), the mode changes, or the demo stops.
    let mut modes = rx.mode.subscribe();
    tokio::select! {
        _ = modes.wait_for(|m| *m != Mode::Timeouts) => {}
        _ = tokio::time::sleep(HANG_LIMIT) => {}
        _ = rx.shutdown.cancelled() => {}
    }
    (StatusCode::SERVICE_UNAVAILABLE, "demo receiver timed out")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn signed(secret: &Secret, id: &str, body: &str) -> Request<Body> {
        let ts = Utc::now().timestamp();
        Request::post(PATH)
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", secret.sign(id, ts, body.as_bytes()))
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    const BODY: &str = r#"{"id":"evt_1","type":"price.updated","timestamp":"2025-01-01T00:00:00.000Z","data":{"ticker":"BTC"}}"#;

    #[tokio::test]
    async fn answers_by_mode_and_refuses_bad_signatures() {
        let rx = Receiver::new(CancellationToken::new());
        let secret = Secret::generate();
        rx.set_secret(secret.clone());
        let send = |req| rx.clone().router().oneshot(req);

        assert_eq!(
            send(signed(&secret, "evt_1", BODY)).await.unwrap().status(),
            200
        );
        assert!(DemoControl::set_mode(&*rx, "errors"));
        assert_eq!(
            send(signed(&secret, "evt_2", BODY)).await.unwrap().status(),
            500
        );
        assert!(!DemoControl::set_mode(&*rx, "sideways"));
        assert_eq!(DemoControl::mode(&*rx), "errors");

        let wrong = Secret::generate();
        assert_eq!(
            send(signed(&wrong, "evt_3", BODY)).await.unwrap().status(),
            401
        );
        let unsigned = Request::post(PATH).body(Body::from(BODY)).unwrap();
        assert_eq!(send(unsigned).await.unwrap().status(), 401);

        let log = rx.recent();
        assert_eq!(log.len(), 4);
        assert_eq!(log[0].event_type, "price.updated");
        assert_eq!(
            log.iter().map(|r| r.verified).collect::<Vec<_>>(),
            [true, true, false, false]
        );
        assert_eq!(log[1].answered, Some(500));
    }

    #[tokio::test]
    async fn flags_redeliveries_and_keeps_a_bounded_log() {
        let rx = Receiver::new(CancellationToken::new());
        let secret = Secret::generate();
        rx.set_secret(secret.clone());
        for _ in 0..2 {
            let res = rx
                .clone()
                .router()
                .oneshot(signed(&secret, "evt_same", BODY))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        assert_eq!(
            rx.recent().iter().map(|r| r.duplicate).collect::<Vec<_>>(),
            [false, true]
        );
        for i in 0..LOG_CAPACITY + 5 {
            rx.record(Received {
                at: Utc::now(),
                event_id: format!("evt_{i}"),
                event_type: String::new(),
                verified: true,
                duplicate: false,
                answered: Some(200),
            });
        }
        let log = rx.recent();
        assert_eq!(log.len(), LOG_CAPACITY);
        // Out of the request log, but still known as acknowledged.
        assert!(rx.log_lock().acked.contains("evt_same"));
        assert_eq!(
            log.last().unwrap().event_id,
            format!("evt_{}", LOG_CAPACITY + 4)
        );
    }

    #[tokio::test]
    async fn timeouts_mode_holds_the_request_until_the_mode_changes() {
        let rx = Receiver::new(CancellationToken::new());
        let secret = Secret::generate();
        rx.set_secret(secret.clone());
        rx.mode.send_replace(Mode::Timeouts);
        let pending = tokio::spawn(rx.clone().router().oneshot(signed(&secret, "evt_1", BODY)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !pending.is_finished(),
            "a request in timeouts mode must hang"
        );
        assert!(DemoControl::set_mode(&*rx, "up"));
        let res = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("released when the mode changes")
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(rx.recent()[0].answered, None);
    }
}
