//! The service layer: what `run` and `exec` serve around the key tasks of
//! [`crate::daemon`]. The CLI only parses arguments, builds the runtime and maps
//! [`ServiceError`] to an exit code.
//!
//! - [`serve`]: `run`'s loop (reloads, file watches, restores, shutdown);
//! - [`signals`]: SIGTERM, SIGINT and SIGHUP, set up once for `run` and `exec`;
//! - [`exec`]: `exec`'s supervisor of the command that gets the key;
//! - [`health`]: `/healthz`, `/readyz` and `/metrics` over HTTP ([`metrics`] renders
//!   the metrics text);
//! - [`systemd`]: readiness, status, watchdog and reload notifications;
//! - [`watch`]: file watching (config, sink files, AWS files);
//! - [`proxy`]: the local Bedrock proxy.

pub mod exec;
pub mod health;
pub mod metrics;
pub mod proxy;
mod serve;
pub mod signals;
pub mod systemd;
pub mod watch;

pub use serve::{run, serve};

/// Why the service could not start or keep going. The CLI decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
    /// A target is held by another writer.
    #[error(transparent)]
    Locked(#[from] crate::sink::lock::LockError),
    #[error(transparent)]
    Health(#[from] health::HealthError),
    /// The whole cause chain, as the proxy's errors wrap I/O and TLS ones.
    #[error("{}", crate::error::error_chain(.0))]
    Proxy(#[from] proxy::ProxyError),
    /// `exec`: no command after `--` (clap requires one; kept as a usage error).
    #[error("no command given after --")]
    NoCommand,
    /// `exec`: the command or the key loop could not go on.
    #[error("{0}")]
    Exec(String),
}
