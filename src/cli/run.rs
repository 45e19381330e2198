//! `bedrock-keyd run`: the long-running service.
//!
//! Starts one task per key (see [`crate::daemon`]) and then only routes events:
//! - SIGTERM/SIGINT: stop every key task after the write in progress, exit 0;
//! - SIGHUP: re-read the config and re-mint every key now (an invalid config is
//!   logged and rejected: the running one stays, and its keys are re-minted);
//! - the config file changed on disk: reload as for SIGHUP when the new config
//!   differs from the running one (keys restart, which re-mints them);
//! - a sink file was deleted or altered: write the current key back;
//! - `~/.aws/config`, `~/.aws/credentials` or the SSO cache changed: rebuild the
//!   credential sources and re-mint.
//!
//! Bursts of file events are debounced, so an editor's write-rename-chmod dance gives
//! one reload.
//!
//! Operations: under systemd ([`crate::sdnotify`]) `READY=1` follows the first
//! complete delivery of every key, reloads are bracketed by `RELOADING=1`/`READY=1`,
//! and shutdown starts with `STOPPING=1`. With `listen` set, [`crate::health`] serves
//! `/healthz`, `/readyz` and `/metrics` (bound once at start; a reload that changes
//! `listen` is logged and takes effect at the next start). Keys with proxies get them
//! from [`crate::service::proxy`], bound at start the same way; the daemon publishes
//! each delivered key to them ([`crate::service::proxy::Publish`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::flags::{KeyFlags, PolicyFlags, ProxyFlags};
use super::{CliError, block_on};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigLocation};
use crate::daemon::locks::HeldLocks;
use crate::daemon::{
    Backend, Command, KeySet, OnDelivered, Runtime, StatusBoard, SystemBackend, random_jitter,
};
use crate::notify::Dependents;
use crate::schedule::Backoff;
use crate::sdnotify::Systemd;
use crate::service::proxy::{CurrentKeys, Proxies, Publish};
use crate::watch::{self, Change, Targets, Watches};

/// Editors replace a file in several steps; reload once they are done.
const CONFIG_DEBOUNCE: Duration = Duration::from_millis(300);
/// Coalesces the events of one deletion or rewrite; well inside the one second in
/// which a damaged sink must be restored.
const RESTORE_DEBOUNCE: Duration = Duration::from_millis(100);
/// A burst of SIGHUPs (a script looping over `systemctl reload`) is one reload.
const HUP_DEBOUNCE: Duration = Duration::from_millis(200);
/// `aws sso login` and `aws configure` touch several files in a row.
const AWS_FILES_DEBOUNCE: Duration = Duration::from_secs(1);

/// Keep every configured key fresh, until stopped.
///
/// Each key is minted at start, then re-minted at refresh_at of its effective lifetime
/// (± jitter) and never later than min_remaining before it expires; failures keep the
/// last good key in place and are retried with backoff. Deadlines follow the wall
/// clock, so a laptop that slept through one re-mints on wake.
///
/// After every sink of a key holds a new key, its dependents ([[key.notify]], or
/// --pid-file/--signal) are told, at most once per second per key (a burst of
/// refreshes gives one notification, of the latest key).
///
/// With --proxy (or [[key.proxy]]), also serves a local Bedrock endpoint per key:
/// clients send a constant local token and each request is forwarded with the current
/// key, so programs that read a key only once never see it expire.
///
/// Signals: SIGHUP reloads the config and re-mints now; SIGTERM/SIGINT finish any
/// write in progress and exit 0.
///
/// Example: bedrock-keyd run --config /etc/bedrock-keyd/config.toml
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    keys: KeyFlags,

    #[command(flatten)]
    policy: PolicyFlags,

    #[command(flatten)]
    proxy: ProxyFlags,

    /// Serve /healthz, /readyz and /metrics on this IP address and port, e.g.
    /// 127.0.0.1:9464 (single-key mode; with a config file, set `listen` there)
    /// [default: no listener].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
}

/// As the config file's `listen`: an IP address and a non-zero port, no host names.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address and port such as 127.0.0.1:9464"))?;
    if addr.port() == 0 {
        return Err(format!(
            "{s:?} has port 0; give the port to scrape, e.g. 9464"
        ));
    }
    Ok(addr)
}

impl RunArgs {
    /// The config to run: the key flags (with `--proxy` as a delivery target) or the
    /// config file.
    pub fn resolve(&self) -> super::Resolved {
        self.keys
            .resolve_with_proxies(&self.policy, self.proxy.specs()?)
    }
}

pub fn run(args: RunArgs, config: super::Resolved) -> Result<ExitCode, CliError> {
    let (location, mut config) = config?;
    if let Some(addr) = args.listen {
        if let Some(location) = &location {
            return Err(CliError::Usage(format!(
                "--listen only applies to a single key given by --file, --env-file or --keyring; with a config file ({}), set listen there",
                location.path.display()
            )));
        }
        config.listen = Some(addr);
    }
    block_on(async move {
        let status = Arc::new(StatusBoard::new());
        let current = Arc::new(CurrentKeys::default());
        let rt = Runtime {
            backend: Arc::new(SystemBackend::default()),
            // Proxies get each key as soon as every sink holds it; dependents after.
            dependents: Arc::new(Publish {
                keys: current.clone(),
                inner: Dependents::new(status.clone()),
            }),
            clock: Arc::new(SystemClock::new()) as Arc<dyn Clock>,
            jitter: random_jitter(),
            status,
            backoff: Backoff::default(),
        };
        serve(rt, location, config, &current).await
    })?
}

/// Runs until SIGTERM/SIGINT.
pub async fn serve<B: Backend, D: OnDelivered>(
    rt: Runtime<B, D>,
    location: Option<ConfigLocation>,
    config: Config,
    current: &CurrentKeys,
) -> Result<ExitCode, CliError> {
    let signal_error = |e: std::io::Error| CliError::Runtime(format!("cannot handle signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_error)?;
    // One writer per target: a second daemon on one of ours stops here, naming us.
    let locks = HeldLocks::take_all(&config.keys)?;

    // Bound before any key starts, so a taken port fails the start at once.
    let health = match config.listen {
        Some(addr) => Some(
            crate::health::spawn(addr, rt.status.clone(), rt.clock.clone())
                .await
                .map_err(|e| CliError::Runtime(e.to_string()))?,
        ),
        None => None,
    };
    // Bound before any key starts too: a taken port or a bad token file fails the
    // start, and a client never finds the port closed while the first key is minted
    // (it gets 503 until then).
    let proxies = Proxies::start(&config.keys, current, rt.clock.clone())
        .await
        .map_err(|e| CliError::Runtime(crate::credentials::error_chain(&e)))?;
    let systemd = Systemd::from_env();

    let config_path = location.as_ref().map(|l| l.path.clone());
    let (tx, mut changes) = mpsc::unbounded_channel();
    let mut state = State {
        keys: KeySet::start(&rt, &config.keys),
        watches: start_watches(config_path.as_deref(), &config, tx.clone()),
        config,
        locks,
    };
    let notifier = systemd.spawn(rt.status.clone(), rt.clock.clone());
    tracing::info!(
        keys = state.config.keys.len(),
        config = %config_path.as_deref().map_or_else(|| "command-line flags".into(), |p| p.display().to_string()),
        "bedrock-keyd running"
    );

    let mut hup_at: Option<Instant> = None;
    let mut reload_at: Option<Instant> = None;
    let mut restore_at: Option<Instant> = None;
    let mut restore: BTreeSet<String> = BTreeSet::new();
    let mut aws_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: finishing any write in progress, then exiting");
                systemd.stopping();
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: finishing any write in progress, then exiting");
                systemd.stopping();
                break;
            }
            _ = hup.recv() => {
                hup_at.get_or_insert(Instant::now() + HUP_DEBOUNCE);
            }
            () = sleep_until(hup_at) => {
                hup_at = None;
                tracing::info!("SIGHUP: reloading the config and re-minting every key");
                systemd.reloading();
                state.reload(&rt, config_path.as_deref(), true, &tx).await;
                systemd.reloaded(&rt.status, rt.clock.now());
            }
            Some(change) = changes.recv() => match change {
                Change::Config => reload_at = Some(Instant::now() + CONFIG_DEBOUNCE),
                Change::Sink(name) => {
                    restore.insert(name);
                    restore_at.get_or_insert(Instant::now() + RESTORE_DEBOUNCE);
                }
                Change::AwsFiles => aws_at = Some(Instant::now() + AWS_FILES_DEBOUNCE),
            },
            () = sleep_until(reload_at) => {
                reload_at = None;
                tracing::info!("the config file changed on disk; reloading");
                systemd.reloading();
                state.reload(&rt, config_path.as_deref(), false, &tx).await;
                systemd.reloaded(&rt.status, rt.clock.now());
            }
            () = sleep_until(restore_at) => {
                restore_at = None;
                for name in std::mem::take(&mut restore) {
                    state.keys.send(&name, Command::Restore);
                }
            }
            () = sleep_until(aws_at) => {
                aws_at = None;
                tracing::info!("AWS config, credentials or SSO cache changed; re-reading credentials");
                state.keys.broadcast(Command::ReloadCredentials);
            }
        }
    }
    drop(state.watches);
    state.keys.stop().await;
    proxies.stop().await;
    for task in [notifier, health].into_iter().flatten() {
        task.abort();
        // Returns once the task is gone (it holds the notifier's queue).
        let _ = task.await;
    }
    systemd.finish();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

struct State {
    config: Config,
    keys: KeySet,
    watches: Option<Watches>,
    /// The target locks of `config`'s sinks, held while it runs.
    locks: HeldLocks,
}

impl State {
    /// Applies a new config when it is valid; `forced` (SIGHUP) re-mints even when
    /// nothing changed.
    async fn reload<B: Backend, D: OnDelivered>(
        &mut self,
        rt: &Runtime<B, D>,
        path: Option<&Path>,
        forced: bool,
        tx: &mpsc::UnboundedSender<Change>,
    ) {
        let Some(path) = path else {
            // Single-key mode: no config to re-read; credentials and keys anew.
            if forced {
                self.keys.broadcast(Command::ReloadCredentials);
            }
            return;
        };
        let new = match crate::config::load(path) {
            Ok(new) => new,
            Err(e) => {
                if forced {
                    // SIGHUP promises a re-mint; a broken edit on disk must not take
                    // that away: the running config's keys are minted anew.
                    tracing::error!(error = %e, "config reload rejected; re-minting every key with the running config");
                    self.keys.broadcast(Command::ReloadCredentials);
                } else {
                    tracing::error!(error = %e, "config reload rejected; the running config stays");
                }
                return;
            }
        };
        if new == self.config {
            if forced {
                // Same config: re-read credentials too (an operator may have fixed
                // ~/.aws before `systemctl reload`), then re-mint.
                self.keys.broadcast(Command::ReloadCredentials);
            }
            return;
        }
        // The targets it adds are ours before anything stops: a reload onto a target
        // another writer holds is rejected like an invalid config.
        let added = match self.locks.take_added(&new.keys) {
            Ok(added) => added,
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; the running config stays");
                return;
            }
        };
        let keys = std::mem::replace(&mut self.keys, KeySet::empty());
        keys.stop().await;
        rt.backend.reset().await;
        self.locks.replace(&new.keys, added);
        self.keys = KeySet::start(rt, &new.keys);
        self.watches = start_watches(Some(path), &new, tx.clone());
        let proxies = |c: &Config| -> Vec<_> {
            c.keys
                .iter()
                .map(|k| (k.name.clone(), k.proxies.clone()))
                .collect()
        };
        if proxies(&new) != proxies(&self.config) {
            // Like `listen`: clients keep a working endpoint until a deliberate restart.
            tracing::warn!(
                "the proxies changed; they keep their addresses and settings until a restart"
            );
        }
        if new.listen != self.config.listen {
            // The listener is bound once at start and not rebound: scrapers keep a
            // working target until an operator restarts on purpose.
            tracing::warn!(
                "`listen` changed; the health/metrics listener keeps its address until a restart"
            );
        }
        tracing::info!(keys = new.keys.len(), "config reloaded");
        self.config = new;
    }
}

fn start_watches(
    config_path: Option<&Path>,
    config: &Config,
    tx: mpsc::UnboundedSender<Change>,
) -> Option<Watches> {
    let targets = Targets::for_config(config_path, &config.keys, |name| std::env::var_os(name));
    match watch::start(targets, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; sinks will not be restored on change and config edits need SIGHUP");
            None
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
