//! Receivers written against the raw socket, for what a well-behaved HTTP server
//! would never do.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Connection counters of a raw TCP receiver.
#[derive(Default)]
pub(super) struct RawStats {
    /// Connections accepted.
    pub(super) connections: AtomicUsize,
    /// Sockets of connections whose handler is still running.
    live: Mutex<HashSet<RawFd>>,
    /// Most connections the client held open at once, counted at each accept
    /// (for a black hole: the requests in flight; see [`OpenGuard::new`]).
    pub(super) max_open: AtomicUsize,
    /// Connections the client closed while we were still writing.
    pub(super) closed_by_client: AtomicUsize,
    /// Connections on which we gave up writing because the client stopped reading.
    pub(super) stalled: AtomicUsize,
    pub(super) max_bytes_sent: AtomicU64,
}

/// Registers a connection as open for as long as its handler runs.
impl RawStats {
    /// Connections whose handler is still running.
    pub(super) fn open(&self) -> usize {
        self.live.lock().unwrap().len()
    }
}

pub(super) struct OpenGuard {
    stats: Arc<RawStats>,
    fd: RawFd,
}

impl OpenGuard {
    /// Registers `stream`, then records how many registered connections the client
    /// still holds open, this one included.
    ///
    /// Counted from the kernel's state of each socket (`TCP_INFO`), not from our
    /// handlers: a handler notices a close only when it next runs, possibly after
    /// the next connection was accepted, whereas the kernel has processed the FIN of
    /// a connection the client closed before it opened the next one.
    fn new(stats: &Arc<RawStats>, stream: &TcpStream) -> Self {
        let fd = stream.as_raw_fd();
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let mut live = stats.live.lock().unwrap();
        live.insert(fd);
        let held = live.iter().filter(|fd| established(**fd)).count();
        stats.max_open.fetch_max(held, Ordering::SeqCst);
        Self {
            stats: stats.clone(),
            fd,
        }
    }

    /// The receiver's counters.
    pub(super) fn stats(&self) -> &RawStats {
        &self.stats
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        // Before the stream (and its fd) is closed: a registered fd is always valid.
        self.stats.live.lock().unwrap().remove(&self.fd);
    }
}

/// `TCP_ESTABLISHED` of the kernel's `enum tcp_state` (libc does not export it).
const TCP_ESTABLISHED: u8 = 1;

/// Whether the peer of socket `fd` has not closed its side: ESTABLISHED, not
/// CLOSE_WAIT (FIN received) or CLOSE (reset).
fn established(fd: RawFd) -> bool {
    // SAFETY: `fd` is a registered, open socket (see OpenGuard), and `info` and
    // `len` describe a buffer of the size passed.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        );
        rc == 0 && info.tcpi_state == TCP_ESTABLISHED
    }
}

/// How a raw receiver misbehaves.
#[derive(Clone, Copy, Debug)]
pub(super) enum Misbehaviour {
    /// Reads the request and never answers: open connections = requests in flight.
    BlackHole,
    /// This status, then a chunked body that never ends.
    EndlessBody(u16),
    /// A status line, then header lines that never end.
    EndlessHeaders,
    /// The whole response one byte per 200 ms.
    DripAll,
    /// Headers at once, then the body one byte per 200 ms.
    DripBody,
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// Close as soon as the connection is accepted.
    CloseAtOnce,
}

/// A receiver written against the raw socket, for what a well-behaved HTTP server
/// would never do. Returns its URL and counters.
pub(super) async fn raw_receiver(mode: Misbehaviour) -> (String, Arc<RawStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let stats = Arc::new(RawStats::default());
    let s = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let open = OpenGuard::new(&s, &stream);
            tokio::spawn(misbehave(stream, mode, open));
        }
    });
    (url, stats)
}

/// Reads one request (head and content-length body), bounded in size and time.
pub(super) async fn read_request(stream: &mut TcpStream) -> bool {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return true;
                }
            }
            if buf.len() > 1 << 20 {
                return false;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or(false)
}

/// Writes `piece` over and over until the client closes (the expected end) or stops
/// reading for long (a stall, counted), for at most 30 s.
pub(super) async fn write_forever(stream: &mut TcpStream, piece: &[u8], stats: &RawStats) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, stream.write_all(piece)).await {
            Ok(Ok(())) => sent += piece.len() as u64,
            Ok(Err(_)) => {
                stats.closed_by_client.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Err(_) => {
                stats.stalled.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    stats.max_bytes_sent.fetch_max(sent, Ordering::SeqCst);
}

/// Writes `bytes` one at a time, 200 ms apart, until done or the client closes.
pub(super) async fn drip(stream: &mut TcpStream, bytes: &[u8], stats: &RawStats) {
    for b in bytes {
        if stream.write_all(&[*b]).await.is_err() {
            stats.closed_by_client.fetch_add(1, Ordering::SeqCst);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn misbehave(mut stream: TcpStream, mode: Misbehaviour, open: OpenGuard) {
    let stats = open.stats();
    if let Misbehaviour::CloseAtOnce = mode {
        return;
    }
    if !read_request(&mut stream).await {
        return;
    }
    match mode {
        Misbehaviour::BlackHole => {
            // Until the client gives up and closes (bounded: the attempt timeout).
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        Misbehaviour::EndlessBody(status) => {
            let head = format!("HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                write_forever(&mut stream, chunk.as_bytes(), stats).await;
            }
        }
        Misbehaviour::EndlessHeaders => {
            if stream.write_all(b"HTTP/1.1 200 OK\r\n").await.is_ok() {
                let line = format!("x-filler: {}\r\n", "y".repeat(1000));
                write_forever(&mut stream, line.as_bytes(), stats).await;
            }
        }
        Misbehaviour::DripAll => {
            drip(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                stats,
            )
            .await
        }
        Misbehaviour::DripBody => {
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                .await
                .is_ok()
            {
                drip(&mut stream, &[b'z'; 100], stats).await;
            }
        }
        Misbehaviour::Garbage => {
            let _ = stream
                .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe not http at all \x1b[31m\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
        }
        Misbehaviour::CloseAtOnce => unreachable!("handled above"),
    }
}
