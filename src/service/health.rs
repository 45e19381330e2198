//! The HTTP endpoint of `run` (only when `listen` is configured): `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! - `/healthz`: 200 while the process runs (the runtime answers at all).
//! - `/readyz`: 200 when every key is ready ([`KeyStatus::is_ready`]: held, valid and
//!   before its renewal deadline, i.e. valid beyond `min_remaining` for most keys);
//!   otherwise 503 with one line per unready key saying why. The same rule and the
//!   same words as `bedrock-keyd status` ([`crate::daemon::unready_reason`]).
//! - `/metrics`: Prometheus text exposition format 0.0.4 (see [`metrics::render`]).
//!
//! This module is the HTTP side only: the readiness wording lives beside the status
//! board ([`crate::daemon::status`]), the metrics text in [`super::metrics`].
//!
//! A deliberately tiny HTTP/1.1 server on tokio's `TcpListener` instead of a web
//! framework: three read-only GET routes, one response per connection
//! (`Connection: close`), a bounded request head, and no way for other local users to
//! starve the probes (issue 13): every connection is accepted at once, its request
//! head must arrive within [`HEAD_TIMEOUT`], and past [`MAX_OPEN_CONNECTIONS`] the
//! oldest connection is dropped to make room for the new one. Idle or trickling
//! connections therefore cost a file descriptor for at most a second and never keep
//! a probe waiting in the kernel's accept queue. Nothing served ever contains a key:
//! the board holds no key, only names, instants and counters.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use super::metrics::{self, ProcessStats};
use crate::clock::Clock;
use crate::daemon::{KeyStatus, StatusBoard, readiness};

/// A GET request head is a few hundred bytes; anything beyond 8 KiB is not a
/// Prometheus scrape or a probe.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// The whole request head must arrive within this of the accept. Probes (kubelet,
/// curl, Prometheus) send it in their first packet; a connection that sends nothing
/// or trickles bytes is idle or hostile, and is closed before it can pile up.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Writing the answer (a few KiB at most, which the socket buffer takes at once) must
/// finish within this, so a client that never reads cannot hold a connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Open connections at most; beyond it the oldest is dropped to make room. Far above
/// what a scraper and a few probes need, and far below the 1024 file descriptors a
/// service gets by default, so a flood cannot starve the sinks of descriptors.
pub const MAX_OPEN_CONNECTIONS: usize = 256;
/// The content type of the text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on {addr} for /healthz, /readyz and /metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl HealthError {
    /// A port in use may be freed; retrying (systemd's restart) can help.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// Binds `addr` and serves until the handle is aborted. Binding happens before this
/// returns, so a taken port fails the start instead of a background task.
pub async fn spawn(
    addr: SocketAddr,
    board: Arc<StatusBoard>,
    clock: Arc<dyn Clock>,
) -> Result<JoinHandle<()>, HealthError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(listen = %bound, "serving /healthz, /readyz and /metrics");
    Ok(tokio::spawn(serve(listener, board, clock)))
}

async fn serve(listener: TcpListener, board: Arc<StatusBoard>, clock: Arc<dyn Clock>) {
    serve_with(listener, board, clock, MAX_OPEN_CONNECTIONS).await;
}

/// [`serve`] with the connection cap as a parameter, for tests.
async fn serve_with(
    listener: TcpListener,
    board: Arc<StatusBoard>,
    clock: Arc<dyn Clock>,
    max_open: usize,
) {
    // Oldest first. Always accepting, and shedding the oldest, rather than waiting for
    // a free slot: a waiting probe is exactly what an attacker wants.
    let mut open: VecDeque<AbortHandle> = VecDeque::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accepting a health/metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        open.retain(|task| !task.is_finished());
        while open.len() >= max_open.max(1) {
            if let Some(oldest) = open.pop_front() {
                // Dropping its future closes the socket.
                oldest.abort();
            }
        }
        let (board, clock) = (board.clone(), clock.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = handle(stream, &board, &*clock).await {
                tracing::debug!(error = %e, "health/metrics connection failed");
            }
        });
        open.push_back(task.abort_handle());
    }
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    board: &StatusBoard,
    clock: &dyn Clock,
) -> std::io::Result<()> {
    let response = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => match find_head_end(&head) {
            Some(end) => respond(&head[..end], board, clock.now()),
            None => Response::text(431, "request header too large\n"),
        },
        // Closed before a complete request head: nothing to answer.
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no complete request head within {HEAD_TIMEOUT:?}"),
            ));
        }
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let allow = if response.status == 405 {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n{}",
        response.status,
        response.content_type,
        response.body.len(),
        response.body
    );
    let write = async {
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not take the answer",
            ))
        })
}

/// Reads until the end of the request head or past [`MAX_REQUEST_BYTES`]; `None` when
/// the client closes first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if find_head_end(&head).is_some() || head.len() > MAX_REQUEST_BYTES {
            return Ok(Some(head));
        }
    }
}

/// The end of the request head (`\r\n\r\n`, or a bare `\n\n` from a lax client).
fn find_head_end(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| head.windows(2).position(|w| w == b"\n\n"))
}

/// The response to a request head: routing, separate from I/O so it is unit-tested.
pub fn respond(head: &[u8], board: &StatusBoard, now: SystemTime) -> Response {
    let Ok(head) = std::str::from_utf8(head) else {
        return Response::text(400, "bad request\n");
    };
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "bad request: HTTP/1.x only\n");
    }
    // The query string does not select anything; probes sometimes add one.
    let path = target.split('?').next().unwrap_or(target);
    let known = matches!(path, "/healthz" | "/readyz" | "/metrics");
    if !known {
        return Response::text(404, "not found: try /healthz, /readyz or /metrics\n");
    }
    if method != "GET" {
        return Response::text(405, "method not allowed: GET only\n");
    }
    match path {
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => readyz(&board.snapshot(), now),
        _ => Response {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body: metrics::render(&board.snapshot(), now, ProcessStats::read().as_ref()),
        },
    }
}

fn readyz(keys: &BTreeMap<String, KeyStatus>, now: SystemTime) -> Response {
    match readiness(keys, now) {
        Ok(ready) => Response::text(200, ready),
        Err(unready) => Response::text(503, unready),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Validity;

    use crate::daemon::status::fixtures::{board, t};

    fn get(path: &str, b: &StatusBoard, now: SystemTime) -> Response {
        respond(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes(),
            b,
            now,
        )
    }

    #[test]
    fn routes_and_methods() {
        let b = board();
        assert_eq!(get("/healthz", &b, t(0)).status, 200);
        assert_eq!(get("/healthz?x=1", &b, t(0)).status, 200);
        assert_eq!(get("/nope", &b, t(0)).status, 404);
        assert_eq!(respond(b"POST /readyz HTTP/1.1", &b, t(0)).status, 405);
        assert_eq!(respond(b"GET", &b, t(0)).status, 400);
        assert_eq!(respond(b"GET /healthz SPDY/3", &b, t(0)).status, 400);
        assert_eq!(respond(&[0xff, 0xfe], &b, t(0)).status, 400);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(14));
    }

    #[test]
    fn readyz_names_unready_keys_and_why() {
        let b = board();
        let r = get("/readyz", &b, t(0));
        assert_eq!(r.status, 503);
        assert!(
            r.body.contains("key alpha: no key delivered yet"),
            "{}",
            r.body
        );
        for name in ["alpha", "be\"ta"] {
            b.update(name, |s| s.held = Some(Validity::new(t(0), t(3600))));
        }
        assert_eq!(get("/readyz", &b, t(10)).status, 200);
        // 5 min before expiry is the renewal deadline.
        let r = get("/readyz", &b, t(3301));
        assert_eq!(r.status, 503);
        assert!(
            r.body.contains(
                "only 4m59s left (expires at 2026-11-26T09:00:00Z), less than min_remaining 5m"
            ),
            "{}",
            r.body
        );
        let r = get("/readyz", &b, t(3700));
        assert!(
            r.body
                .contains("expired at 2026-11-26T09:00:00Z (1m40s ago)"),
            "{}",
            r.body
        );
    }

    /// Sends `request` to a live server and returns the whole response.
    async fn exchange(request: &[u8]) -> String {
        let board = Arc::new(board());
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::FakeClock::new(t(0)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, board, clock));
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may answer (and close) before a huge request is fully sent.
        let _ = s.write_all(request).await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        server.abort();
        out
    }

    #[tokio::test]
    async fn over_a_socket() {
        let ok = exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nConnection: close\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        let post = exchange(b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET\r\n"), "{post}");
        // One byte over the cap and no end of head: the server reads all of it before
        // refusing, so no unread data turns its close into a reset.
        let mut huge = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST_BYTES + 1, b'x');
        let big = exchange(&huge).await;
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
        let metrics = exchange(b"GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(
            metrics.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{metrics}"
        );
    }

    /// Past the cap, the oldest connections are closed at once (not after their head
    /// timeout), and a probe that arrives behind them is answered.
    #[tokio::test]
    async fn past_the_cap_the_oldest_connections_are_dropped() {
        let board = Arc::new(board());
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::FakeClock::new(t(0)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_with(listener, board, clock, 4));
        let started = std::time::Instant::now();
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut probe = TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        probe.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        // Accepted in order: 10 idle + the probe over a cap of 4 shed the first 7.
        let mut buf = [0u8; 16];
        for (i, s) in idle.iter_mut().enumerate().take(7) {
            let read = tokio::time::timeout(HEAD_TIMEOUT, s.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0) | Err(_))),
                "connection {i} still open: {read:?}"
            );
        }
        assert!(started.elapsed() < HEAD_TIMEOUT, "{:?}", started.elapsed());
        let last = tokio::time::timeout(Duration::from_millis(100), idle[9].read(&mut buf)).await;
        assert!(
            last.is_err(),
            "the newest idle connection was dropped: {last:?}"
        );
        server.abort();
    }

    /// A connection that sends nothing is closed after the head timeout.
    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_head_timeout() {
        let board = Arc::new(board());
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::FakeClock::new(t(0)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, board, clock));
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hea").await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(HEAD_TIMEOUT * 3, s.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        let took = started.elapsed();
        assert!(took >= HEAD_TIMEOUT && took < HEAD_TIMEOUT * 2, "{took:?}");
        server.abort();
    }
}
