//! The local Bedrock proxy: programs that read a key once (boto3, the Anthropic SDK,
//! the AWS SDK for JavaScript, Claude Code) are configured with a constant local
//! token and this endpoint; each request is forwarded to Amazon Bedrock with the key
//! current at that moment, so clients never see a rotation.
//!
//! - [`crate::config::proxy`]: what `[[key.proxy]]` and `run --proxy` say (validated, no
//!   side effects; config's types, which this module serves);
//! - [`current`]: the key each proxy uses, published by the daemon after delivery;
//! - [`token`]: the local token file; [`tls`]: the listener's certificate and the
//!   upstream's trust roots;
//! - [`forward`]: one request (auth, key swap, forwarding, streaming);
//! - [`metrics`]: counters for `/metrics`;
//! - this module: binding the listeners and serving connections.
//!
//! Listeners are bound once, at start (a bad token file or a taken port fails the
//! start); a config reload that changes them is logged and applies at the next start,
//! as for the health listener. Connections are capped ([`MAX_CONNECTIONS`]) and a
//! client must start talking within [`FIRST_BYTE_TIMEOUT`] and finish each request
//! head within [`HEADER_READ_TIMEOUT`] (also the keep-alive idle limit), so idle or
//! trickling clients cannot exhaust the daemon. HTTP/1.1 and HTTP/2 are served on every listener (h2c with prior
//! knowledge on plain TCP and sockets, ALPN on TLS).

pub mod current;
pub mod forward;
pub mod metrics;
pub mod tls;
pub mod token;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The validated `[[key.proxy]]` types live with the config that produces them.
pub use crate::config::proxy::{Listen, ProxySpec, Upstream};
pub use current::{CurrentKeys, Publish};

use crate::clock::Clock;
use forward::Forwarder;

/// Connections served at once per listener; more wait in the kernel's backlog. A
/// thousand idle clients fit, with room for working ones.
pub const MAX_CONNECTIONS: usize = 2048;
/// A connection that sends nothing (no TLS hello, no request) for this long is
/// closed. Clients connect when they have a request to send.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// The TLS handshake, once started, must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1 request head must arrive within this (slowloris). hyper also counts an
/// idle keep-alive connection's wait for its next request against it, so it is
/// also the idle timeout: 60 s, as load balancers commonly use, so a client's pooled
/// connection is rarely closed under a request it is just sending.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP/2 connections are pinged when quiet this long, and closed when a ping goes
/// unanswered for [`H2_PING_TIMEOUT`]: a peer that vanished does not hold a slot.
const H2_PING_INTERVAL: Duration = Duration::from_secs(60);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Upstream connect timeout: Bedrock answers a TCP handshake in milliseconds; a
/// black-holed route should become a 502, not a hung client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle upstream connections kept for reuse (per host), and for how long.
const POOL_IDLE_PER_HOST: usize = 64;
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {listen} for the proxy: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

/// The running listeners of every proxy; dropping or [`Proxies::stop`] ends them.
#[derive(Default)]
pub struct Proxies {
    tasks: Vec<JoinHandle<()>>,
}

impl Proxies {
    /// Binds every proxy of every key. Nothing is served until the key's first
    /// delivery (503 until then).
    pub async fn start(
        keys: &[crate::config::KeyConfig],
        current: &CurrentKeys,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ProxyError> {
        let mut proxies = Self::default();
        if keys.iter().any(|k| !k.proxies.is_empty()) {
            raise_fd_limit();
        }
        for key in keys {
            for spec in &key.proxies {
                let task = start_one(key.name.as_str(), spec, current, clock.clone()).await?;
                proxies.tasks.push(task);
            }
        }
        Ok(proxies)
    }

    /// Stops accepting; connections in progress end with the runtime.
    pub async fn stop(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn start_one(
    key: &str,
    spec: &ProxySpec,
    current: &CurrentKeys,
    clock: Arc<dyn Clock>,
) -> Result<JoinHandle<()>, ProxyError> {
    let token = token::LocalToken::load_or_create(&spec.token_file)?;
    let acceptor = if spec.tls {
        let config = tls::server_config(&spec.token_file, clock.now())?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    } else {
        None
    };
    let mut bundles: Vec<PathBuf> = std::env::var_os("AWS_CA_BUNDLE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    bundles.extend(spec.ca_bundle.clone());
    let client_tls = tls::client_config(&bundles)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .build(connector);
    let forwarder = Arc::new(Forwarder {
        key_name: key.to_owned(),
        token,
        current: current.watch(key),
        upstream: spec.upstream.clone(),
        client,
        clock,
        metrics: metrics::ProxyMetrics::for_key(key),
    });
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    server
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let conn = Arc::new(Conn {
        forwarder,
        acceptor,
        server,
    });
    let upstream = spec.upstream.as_ref().map_or_else(
        || "Bedrock runtime in the key's region".to_owned(),
        |u| u.to_string(),
    );
    let bind_error = |source| ProxyError::Bind {
        listen: spec.listen.to_string(),
        source,
    };
    let task = match &spec.listen {
        Listen::Tcp(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            tracing::info!(key, listen = %addr, %upstream, tls = spec.tls, token_file = %spec.token_file.display(), "proxy listening");
            tokio::spawn(accept_loop(listener, conn))
        }
        Listen::Unix { path, mode } => {
            remove_stale_socket(path).map_err(bind_error)?;
            let listener = UnixListener::bind(path).map_err(bind_error)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.bits()))
                .map_err(bind_error)?;
            tracing::info!(key, listen = %spec.listen, %upstream, tls = spec.tls, token_file = %spec.token_file.display(), "proxy listening");
            let guard = RemoveOnDrop(path.clone());
            tokio::spawn(async move {
                let _guard = guard;
                accept_loop(listener, conn).await;
            })
        }
    };
    Ok(task)
}

/// A socket file left by a previous run that was killed is removed; anything else
/// at the path is an error (never delete a user's file).
fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is serving this socket",
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(_) => Ok(()),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What each connection of a listener shares.
struct Conn {
    forwarder: Arc<Forwarder>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    server: auto::Builder<TokioExecutor>,
}

/// TCP and unix listeners alike.
trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<Self::Io>> + Send;
    fn readable(io: &Self::Io) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
    async fn readable(io: &Self::Io) -> std::io::Result<()> {
        io.readable().await
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
    async fn readable(io: &Self::Io) -> std::io::Result<()> {
        io.readable().await
    }
}

async fn accept_loop<L: Accept>(listener: L, conn: Arc<Conn>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let io = match listener.accept().await {
            Ok(io) => io,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a proxy connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = conn.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(FIRST_BYTE_TIMEOUT, L::readable(&io)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
            // Boxed: a task is allocated at the size of its largest state, and an idle
            // connection (waiting above) should not pay for hyper's and rustls' state.
            Box::pin(handshake_and_serve(io, conn)).await;
        });
    }
}

async fn handshake_and_serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    conn: Arc<Conn>,
) {
    match &conn.acceptor {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(tls)) => serve(tls, &conn).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "proxy TLS handshake failed"),
                Err(_) => tracing::debug!("proxy TLS handshake timed out"),
            }
        }
        None => serve(io, &conn).await,
    }
}

async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: I, conn: &Conn) {
    let forwarder = conn.forwarder.clone();
    let service = hyper::service::service_fn(move |req| forwarder.clone().handle(req));
    if let Err(e) = conn
        .server
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %e, "proxy connection ended with an error");
    }
}

/// Each client connection is a descriptor: lift the soft limit to the hard one (a
/// shell's 1024 would otherwise cap the proxy well below [`MAX_CONNECTIONS`]).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want
            && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard)
        {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
}
