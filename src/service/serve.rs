//! The long-running service of `run`: [`serve`] starts one task per key (see
//! [`crate::daemon`]) and then only routes events:
//! - the shutdown future resolves (SIGTERM/SIGINT under `run`): stop every key task
//!   after the write in progress, return;
//! - a reload request (SIGHUP): re-read the config and re-mint every key now (an
//!   invalid config is logged and rejected: the running one stays, and its keys are
//!   re-minted);
//! - the config file changed on disk: reload as for SIGHUP when the new config
//!   differs from the running one (keys restart, which re-mints them);
//! - a sink file was deleted or altered: write the current key back;
//! - `~/.aws/config`, `~/.aws/credentials` or the SSO cache changed: rebuild the
//!   credential sources and re-mint.
//!
//! Bursts of file events are debounced, so an editor's write-rename-chmod dance gives
//! one reload.
//!
//! Operations: under systemd ([`super::systemd`]) `READY=1` follows the first
//! complete delivery of every key, reloads are bracketed by `RELOADING=1`/`READY=1`,
//! and shutdown starts with `STOPPING=1`. With `listen` set, [`super::health`] serves
//! `/healthz`, `/readyz` and `/metrics` (bound once at start; a reload that changes
//! `listen` is logged and takes effect at the next start). Keys with proxies get them
//! from [`super::proxy`], bound at start the same way; the daemon publishes each
//! delivered key to them ([`super::proxy::Publish`]).
//!
//! Shutdown and reloads are arguments, not signals read here: `run` passes the
//! signals ([`super::signals::for_serve`]), tests pass triggers of their own.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ServiceError;
use super::proxy::{CurrentKeys, Proxies, Publish};
use super::signals::{self, Signals};
use super::systemd::Systemd;
use super::watch::{self, Change, Targets, Watches};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigLocation};
use crate::daemon::locks::HeldLocks;
use crate::daemon::{
    Backend, Command, KeySet, OnDelivered, Runtime, StatusBoard, SystemBackend, random_jitter,
};
use crate::dependents::Dependents;
use crate::schedule::Backoff;

/// Editors replace a file in several steps; reload once they are done.
const CONFIG_DEBOUNCE: Duration = Duration::from_millis(300);
/// Coalesces the events of one deletion or rewrite; well inside the one second in
/// which a damaged sink must be restored.
const RESTORE_DEBOUNCE: Duration = Duration::from_millis(100);
/// A burst of SIGHUPs (a script looping over `systemctl reload`) is one reload.
const HUP_DEBOUNCE: Duration = Duration::from_millis(200);
/// `aws sso login` and `aws configure` touch several files in a row.
const AWS_FILES_DEBOUNCE: Duration = Duration::from_secs(1);

/// `run`: serves `config` with the real credential providers, sinks and wall clock
/// until SIGTERM or SIGINT; SIGHUP reloads.
pub async fn run(location: Option<ConfigLocation>, config: Config) -> Result<(), ServiceError> {
    let signals = Signals::install().map_err(ServiceError::Signals)?;
    let status = Arc::new(StatusBoard::new());
    let current = Arc::new(CurrentKeys::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let rt = Runtime {
        backend: Arc::new(SystemBackend::new(clock.clone())),
        // Proxies get each key as soon as every sink holds it; dependents after.
        dependents: Arc::new(Publish {
            keys: current.clone(),
            inner: Dependents::new(status.clone()),
        }),
        clock,
        jitter: random_jitter(),
        status,
        backoff: Backoff::default(),
    };
    let (shutdown, reloads) = signals::for_serve(signals);
    serve(rt, location, config, &current, shutdown, reloads).await
}

/// Serves `config` until `shutdown` resolves, then returns once every key task has
/// finished the write in progress. Each message on `reloads` is a SIGHUP: re-read the
/// config at `location` (when there is one) and re-mint every key. `current` is where
/// the proxies read each key (the daemon's [`OnDelivered`] hook publishes there).
pub async fn serve<B: Backend, D: OnDelivered>(
    rt: Runtime<B, D>,
    location: Option<ConfigLocation>,
    config: Config,
    current: &CurrentKeys,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::UnboundedReceiver<()>,
) -> Result<(), ServiceError> {
    // One writer per target: a second daemon on one of ours stops here, naming us.
    let locks = HeldLocks::take_all(&config.keys)?;

    // Bound before any key starts, so a taken port fails the start at once.
    let health = match config.listen {
        Some(addr) => Some(super::health::spawn(addr, rt.status.clone(), rt.clock.clone()).await?),
        None => None,
    };
    // Bound before any key starts too: a taken port or a bad token file fails the
    // start, and a client never finds the port closed while the first key is minted
    // (it gets 503 until then).
    let proxies = Proxies::start(&config.keys, current, rt.clock.clone()).await?;
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
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                systemd.stopping();
                break;
            }
            Some(()) = reloads.recv() => {
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
    Ok(())
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
