//! The service layer: what `run` and `exec` serve around the key tasks of
//! [`crate::daemon`].
//!
//! - [`health`]: `/healthz`, `/readyz` and `/metrics` over HTTP ([`metrics`] renders
//!   the metrics text);
//! - [`systemd`]: readiness, status, watchdog and reload notifications;
//! - [`watch`]: file watching (config, sink files, AWS files);
//! - [`proxy`]: the local Bedrock proxy.

pub mod health;
pub mod metrics;
pub mod proxy;
pub mod systemd;
pub mod watch;
