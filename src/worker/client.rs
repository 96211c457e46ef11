//! The HTTP client deliveries go out on: hyper's pooled keep-alive client over a
//! connector that resolves through the SSRF-checked [`CheckedResolver`] and tags
//! every connection with a signal that fires once its socket is closed.
//!
//! Why the signal: a request the worker abandons (it timed out, or its response
//! was cut off at the excerpt limit) is closed by its connection's own task, a
//! moment *after* the request future is dropped. Until then the receiver still
//! holds that request open. Were the endpoint's slot freed at once, the next
//! delivery could open a new connection before the old one is closed, and the
//! receiver would see one request more than the endpoint's cap (it did: 9 open
//! against a cap of 8, about one run in two). So a send that abandons its request
//! waits for [`Closed`] before it returns and the slot is freed. reqwest does not
//! expose its connections, so this is hyper-util's client directly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::resolver::{BoxError, CheckedResolver};

/// Longest the worker waits for an abandoned request's connection to close. Its
/// task closes it as soon as it runs, so this bounds a pathological scheduler
/// stall, not a network wait.
pub const CLOSE_BOUND: Duration = Duration::from_secs(2);

/// The pooled client of one worker process.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// Builds the client: TLS with the webpki roots, HTTP/1.1 and (by ALPN) HTTP/2,
/// keep-alive pools per host, no proxy, no redirects (hyper follows none).
pub fn build(resolver: CheckedResolver, connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(resolver);
    // The TLS layer wraps this connector, so it must accept https URIs too.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("the ring provider supports the default protocol versions")
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(Connector { inner: https })
}

/// The connector: checked resolution and TLS, then a [`Tracked`] stream.
#[derive(Clone)]
pub struct Connector {
    inner: HttpsConnector<HttpConnector<CheckedResolver>>,
}

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Tracked<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            metrics::counter!("hookit_connections_opened_total").increment(1);
            Ok(Tracked {
                io,
                closed: CancelOnDrop(CancellationToken::new()),
            })
        })
    }
}

/// Cancelled once the connection's socket is closed (see [`Tracked`]).
#[derive(Clone)]
pub struct Closed(CancellationToken);

impl Closed {
    /// Resolves when the socket is closed.
    pub async fn wait(self) {
        self.0.cancelled().await
    }
}

struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A connection stream that signals its own closing. Fields drop in declaration
/// order, so `io` (the socket: `close(2)`) is gone before `closed` fires.
pub struct Tracked<S> {
    io: S,
    closed: CancelOnDrop,
}

impl<S: Connection> Connection for Tracked<S> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(Closed(self.closed.0.clone()))
    }
}

impl<S: Read + Unpin> Read for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: Write + Unpin> Write for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// What the worker needs of an HTTP/1 connection that served a request it
/// abandons: poisoned (never reused), and a signal for its closing. `None` when
/// no connection was assigned yet, or for HTTP/2, where an abandoned request is a
/// reset stream and the connection stays up for the others.
pub fn abandon(capture: &hyper_util::client::legacy::connect::CaptureConnection) -> Option<Closed> {
    let meta = capture.connection_metadata();
    let c = meta.as_ref()?;
    if c.is_negotiated_h2() {
        return None;
    }
    c.poison();
    let mut ext = http::Extensions::new();
    c.get_extras(&mut ext);
    ext.remove::<Closed>()
}
