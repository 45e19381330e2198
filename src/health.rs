//! The HTTP endpoint of `run` (only when `listen` is configured): `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! - `/healthz`: 200 while the process runs (the runtime answers at all).
//! - `/readyz`: 200 when every key is ready ([`KeyStatus::is_ready`]: held, valid and
//!   before its renewal deadline, i.e. valid beyond `min_remaining` for most keys);
//!   otherwise 503 with one line per unready key saying why. The same rule and the
//!   same words as `bedrock-keyd status` ([`unready_reason`]).
//! - `/metrics`: Prometheus text exposition format 0.0.4 (see [`render_metrics`]).
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
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::clock::Clock;
use crate::daemon::{KeyStatus, StatusBoard};
use crate::schedule::{self, RefreshPolicy, Validity};
use crate::time::rfc3339;

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
            body: render_metrics(&board.snapshot(), now, ProcessStats::read().as_ref()),
        },
    }
}

fn readyz(keys: &BTreeMap<String, KeyStatus>, now: SystemTime) -> Response {
    if keys.is_empty() {
        return Response::text(503, "not ready: no key is running\n");
    }
    let unready: Vec<String> = keys
        .iter()
        .filter_map(|(name, s)| {
            unready_reason(now, s.held, &s.policy).map(|why| format!("key {name}: {why}"))
        })
        .collect();
    if unready.is_empty() {
        let plural = if keys.len() == 1 { "key" } else { "keys" };
        Response::text(200, format!("ready: {} {plural} fresh\n", keys.len()))
    } else {
        Response::text(503, format!("not ready:\n{}\n", unready.join("\n")))
    }
}

/// Why a key holding `held` is not ready at `now` under `policy`, or `None` when it is.
/// `/readyz` and `bedrock-keyd status` both judge with this, so they agree.
pub fn unready_reason(
    now: SystemTime,
    held: Option<Validity>,
    policy: &RefreshPolicy,
) -> Option<String> {
    let Some(held) = held else {
        return Some("no key delivered yet".to_owned());
    };
    if schedule::is_ready(now, Some(held), policy) {
        return None;
    }
    if now >= held.expiry {
        return Some(format!(
            "expired at {} ({} ago)",
            rfc3339(held.expiry),
            crate::duration::format(now.duration_since(held.expiry).unwrap_or_default())
        ));
    }
    let left = crate::duration::format(held.expiry.duration_since(now).unwrap_or_default());
    Some(if policy.is_capped(held.lifetime()) {
        format!(
            "only {left} left (expires at {}); past its renewal deadline {}",
            rfc3339(held.expiry),
            rfc3339(schedule::renew_deadline(held, policy))
        )
    } else {
        format!(
            "only {left} left (expires at {}), less than min_remaining {}",
            rfc3339(held.expiry),
            crate::duration::format(policy.min_remaining())
        )
    })
}

/// The process basics of the Prometheus client conventions, from `/proc` (Linux).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub start_time_seconds: f64,
    pub resident_memory_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
}

impl ProcessStats {
    /// `None` where `/proc` is unavailable (macOS) or unreadable.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // proc(5) numbers fields from 1 with the pid; `rest` starts at field 3 (state).
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = clock_ticks()?;
        let (utime, stime, starttime, rss_pages) = (field(14)?, field(15)?, field(22)?, field(24)?);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<u64>()
            .ok()?;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(Self {
            start_time_seconds: boot as f64 + starttime as f64 / ticks,
            resident_memory_bytes: rss_pages * page,
            cpu_seconds: (utime + stime) as f64 / ticks,
            open_fds,
        })
    }
}

fn clock_ticks() -> Option<f64> {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map(|t| t as f64)
}

/// The metrics in the Prometheus text exposition format 0.0.4. Per key:
///
/// - `bedrock_keyd_key_expiry_timestamp_seconds` (gauge): when the key the sinks hold
///   expires; absent until the first delivery;
/// - `bedrock_keyd_key_ready` (gauge, 0/1): `/readyz` for this key;
/// - `bedrock_keyd_refresh_total{result="success|failure"}` (counter);
/// - `bedrock_keyd_last_refresh_timestamp_seconds` (gauge): the last complete delivery;
/// - `bedrock_keyd_next_refresh_timestamp_seconds` (gauge): the next planned attempt;
/// - `bedrock_keyd_notify_total{result="success|failure"}` (counter): dependents told;
///
/// plus `process_*` basics when `process` is given.
pub fn render_metrics(
    keys: &BTreeMap<String, KeyStatus>,
    now: SystemTime,
    process: Option<&ProcessStats>,
) -> String {
    let mut out = String::new();
    let seconds = |t: SystemTime| -> f64 {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    };
    family(
        &mut out,
        "bedrock_keyd_key_expiry_timestamp_seconds",
        "gauge",
        "Expiry of the key every sink holds, in seconds since the Unix epoch.",
        keys.iter()
            .filter_map(|(k, s)| s.held.map(|h| (labels(k, None), seconds(h.expiry)))),
    );
    family(
        &mut out,
        "bedrock_keyd_key_ready",
        "gauge",
        "1 when the key is valid beyond its renewal deadline (min_remaining), else 0.",
        keys.iter()
            .map(|(k, s)| (labels(k, None), f64::from(u8::from(s.is_ready(now))))),
    );
    family(
        &mut out,
        "bedrock_keyd_refresh_total",
        "counter",
        "Refresh attempts (mint and deliver to every sink) by result.",
        keys.iter().flat_map(|(k, s)| {
            [
                (labels(k, Some("success")), s.refresh_ok as f64),
                (labels(k, Some("failure")), s.refresh_err as f64),
            ]
        }),
    );
    family(
        &mut out,
        "bedrock_keyd_last_refresh_timestamp_seconds",
        "gauge",
        "When every sink last received a new key, in seconds since the Unix epoch.",
        keys.iter()
            .filter_map(|(k, s)| s.last_refresh.map(|t| (labels(k, None), seconds(t)))),
    );
    family(
        &mut out,
        "bedrock_keyd_next_refresh_timestamp_seconds",
        "gauge",
        "When the next refresh (or retry) is planned, in seconds since the Unix epoch.",
        keys.iter()
            .filter_map(|(k, s)| s.next_attempt.map(|t| (labels(k, None), seconds(t)))),
    );
    family(
        &mut out,
        "bedrock_keyd_notify_total",
        "counter",
        "Dependent notifications after a delivery, by result.",
        keys.iter().flat_map(|(k, s)| {
            [
                (labels(k, Some("success")), s.notify_ok as f64),
                (labels(k, Some("failure")), s.notify_err as f64),
            ]
        }),
    );
    if let Some(p) = process {
        let single = |v: f64| std::iter::once((String::new(), v));
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            single(p.start_time_seconds),
        );
        family(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            single(p.resident_memory_bytes as f64),
        );
        family(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            single(p.cpu_seconds),
        );
        family(
            &mut out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            single(p.open_fds as f64),
        );
    }
    // The local proxies' counters (nothing when no key has a proxy).
    crate::service::proxy::metrics::render(&mut out, escape);
    out
}

/// Writes one metric family: `# HELP`, `# TYPE`, then its samples.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, f64)>,
) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {}", number(value));
    }
}

/// `{key="…"}` or `{key="…",result="…"}`, values escaped as the format requires.
fn labels(key: &str, result: Option<&str>) -> String {
    match result {
        Some(r) => format!("{{key=\"{}\",result=\"{}\"}}", escape(key), escape(r)),
        None => format!("{{key=\"{}\"}}", escape(key)),
    }
}

/// Label value escaping of the text format: backslash, double quote, line feed.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, others with Rust's shortest
/// round-tripping form (both valid Go `ParseFloat` input).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_680_000 + secs)
    }

    fn policy(min_remaining: u64) -> RefreshPolicy {
        RefreshPolicy::new(0.5, 0.0, Duration::from_secs(min_remaining)).unwrap()
    }

    fn board() -> StatusBoard {
        let b = StatusBoard::new();
        b.register("alpha", policy(300));
        b.register("be\"ta", policy(300));
        b
    }

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

    #[test]
    fn metrics_format() {
        let b = board();
        b.update("alpha", |s| {
            s.held = Some(Validity::new(t(0), t(3600)));
            s.last_refresh = Some(t(0));
            s.next_attempt = Some(t(1800));
            s.refresh_ok = 2;
            s.refresh_err = 1;
            s.notify_ok = 3;
        });
        let stats = ProcessStats {
            start_time_seconds: 1.5,
            resident_memory_bytes: 4096,
            cpu_seconds: 0.25,
            open_fds: 7,
        };
        let text = render_metrics(&b.snapshot(), t(5), Some(&stats));
        for line in [
            "# TYPE bedrock_keyd_key_expiry_timestamp_seconds gauge",
            "bedrock_keyd_key_expiry_timestamp_seconds{key=\"alpha\"} 1795683600",
            "bedrock_keyd_key_ready{key=\"alpha\"} 1",
            "bedrock_keyd_key_ready{key=\"be\\\"ta\"} 0",
            "bedrock_keyd_refresh_total{key=\"alpha\",result=\"success\"} 2",
            "bedrock_keyd_refresh_total{key=\"alpha\",result=\"failure\"} 1",
            "bedrock_keyd_notify_total{key=\"alpha\",result=\"success\"} 3",
            "bedrock_keyd_last_refresh_timestamp_seconds{key=\"alpha\"} 1795680000",
            "bedrock_keyd_next_refresh_timestamp_seconds{key=\"alpha\"} 1795681800",
            "process_start_time_seconds 1.5",
            "process_cpu_seconds_total 0.25",
            "process_open_fds 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
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

    #[test]
    fn process_stats_on_linux() {
        if cfg!(target_os = "linux") {
            let p = ProcessStats::read().expect("/proc");
            assert!(p.resident_memory_bytes > 0 && p.open_fds > 0);
            assert!(p.start_time_seconds > 1.0e9);
        }
    }
}
