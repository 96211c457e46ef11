//! A real HTTP receiver on loopback that records every request and answers as
//! the test tells it to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::watch;

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, immediately.
    Status(u16),
    /// This status with a Retry-After header (seconds).
    RetryAfter(u16, u64),
    /// Wait this long, then answer 200.
    Delay(Duration),
    /// Never answer (until the client gives up).
    Hang,
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// Path.
    pub path: String,
}

impl Received {
    /// A header as a string.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

#[derive(Clone)]
struct Shared {
    reply: Arc<Mutex<HashMap<String, Reply>>>,
    default: Arc<Mutex<Reply>>,
    log: Arc<Mutex<Vec<Received>>>,
    count: watch::Sender<usize>,
}

/// The receiver.
pub struct Receiver {
    /// `http://127.0.0.1:port`
    pub base: String,
    shared: Shared,
    count: watch::Receiver<usize>,
}

impl Receiver {
    /// Starts a receiver answering 200.
    pub async fn start() -> Self {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Starts a receiver answering 200 on `listener`.
    pub fn start_on(listener: tokio::net::TcpListener) -> Self {
        let (tx, rx) = watch::channel(0);
        let shared = Shared {
            reply: Arc::default(),
            default: Arc::new(Mutex::new(Reply::Status(200))),
            log: Arc::default(),
            count: tx,
        };
        let app = Router::new()
            .fallback(post(handle))
            .with_state(shared.clone());
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            shared,
            count: rx,
        }
    }

    /// URL of a path on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sets the default reply.
    pub fn set_reply(&self, r: Reply) {
        *self.shared.default.lock().unwrap() = r;
    }

    /// Sets the reply of one path.
    pub fn set_path_reply(&self, path: &str, r: Reply) {
        self.shared
            .reply
            .lock()
            .unwrap()
            .insert(path.to_string(), r);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` requests arrived; returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.count.clone();
        let ok = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        let got = self.received();
        assert!(
            ok.is_ok(),
            "receiver got {} requests, expected {n} within {timeout:?}",
            got.len()
        );
        got
    }
}

async fn handle(
    State(s): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let reply = s
        .reply
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_else(|| s.default.lock().unwrap().clone());
    {
        let mut log = s.log.lock().unwrap();
        log.push(Received {
            headers,
            body,
            path,
        });
        s.count.send_replace(log.len());
    }
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::RetryAfter(code, secs) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Reply::Delay(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}
