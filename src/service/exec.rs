//! `exec`'s supervisor: runs a command with the key in its environment and keeps it
//! fresh (the clap side is `cli/exec.rs`).
//!
//! The key loop is the daemon's (one task per key, same schedule, sinks, notifies);
//! the command's key is handed over in memory by the [`OnDelivered`] hook, so it
//! reaches the command only after every sink of that key holds it. This is the one
//! place a child process gets the key (`AWS_BEARER_TOKEN_BEDROCK`), because the user
//! asked for exactly that.
//!
//! On each new key: [`OnRefresh::Restart`] sends SIGTERM, waits the grace period,
//! sends SIGKILL if needed and starts the command again with the new key;
//! [`OnRefresh::Signal`] sends the signal and the command re-reads the key from a sink
//! (so it needs one). SIGHUP, SIGINT and SIGTERM ([`super::signals`]) are forwarded to
//! the command (SIGHUP does not re-mint here); after SIGINT/SIGTERM, exec ends with the
//! command's status once it ends (after SIGTERM, SIGKILL follows the grace period
//! later if it has not).
//!
//! The command leads its own process group and every signal goes to the group, so
//! what it started (a shell's children) stops with it; after the command itself has
//! ended on a restart or stop, the rest of the group gets until the end of the grace
//! period, then SIGKILL. When stdin is a terminal the command stays in our group
//! instead: a background group is stopped when it reads the terminal.
//! When the command ends on its own, exec reports how ([`Ended`]); the CLI turns that
//! into its exit code. exec does not watch sink or AWS files (`run` does).

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{self as nix_signal, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ServiceError;
use super::signals::{Received, Signals};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, KeyConfig};
use crate::daemon::locks::HeldLocks;
use crate::daemon::{KeySet, OnDelivered, Runtime, StatusBoard, SystemBackend, random_jitter};
use crate::dependents::send::{BEARER_TOKEN_VARIABLE, describe, to_nix};
use crate::dependents::{Dependents, Signal};
use crate::key::{ApiKey, MintedKey};
use crate::schedule::Backoff;

/// What exec does with the command when a new key arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefresh {
    Restart,
    Signal(Signal),
}

/// The command exec supervises and how.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The program and its arguments (run without a shell).
    pub command: Vec<OsString>,
    pub on_refresh: OnRefresh,
    /// How long a restart or a stop waits after SIGTERM before SIGKILL.
    pub grace: Duration,
}

/// How the command (or exec before it started) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Code(i32),
    /// Signal N killed it (or stopped exec before the command started).
    Signal(i32),
    /// Neither (not expected on Unix).
    Unknown,
}

/// Keeps every key of `config` fresh and runs `exec.command` with the key named
/// `name`, until the command ends; `signals` are forwarded to it.
pub async fn run(
    config: &Config,
    name: &str,
    exec: &Exec,
    signals: Signals,
) -> Result<Ended, ServiceError> {
    // One writer per target, as for `run`: held until exec returns.
    let _locks = HeldLocks::take_all(&config.keys)?;
    let status = Arc::new(StatusBoard::new());
    let (tx, rx) = watch::channel(None);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let rt = Runtime {
        backend: Arc::new(SystemBackend::new(clock.clone())),
        dependents: Arc::new(Handover {
            dependents: Dependents::new(status.clone()),
            name: name.to_owned(),
            tx,
        }),
        clock,
        jitter: random_jitter(),
        status: status.clone(),
        backoff: Backoff::default(),
    };
    let keys = KeySet::start(&rt, &config.keys);
    let result = Supervisor {
        args: exec,
        name,
        status: &status,
        keys: rx,
    }
    .run(signals)
    .await;
    keys.stop().await;
    result
}

/// The key the command gets, with what it needs besides the value.
#[derive(Clone)]
struct EnvKey {
    key: ApiKey,
    region: String,
}

/// Notifies the key's dependents and hands the command's key to the supervisor.
struct Handover {
    dependents: Dependents,
    name: String,
    tx: watch::Sender<Option<EnvKey>>,
}

impl OnDelivered for Handover {
    async fn delivered(&self, key: &KeyConfig, minted: &MintedKey) {
        self.dependents.delivered(key, minted).await;
        if key.name.as_str() == self.name {
            self.tx.send_if_modified(|held| {
                // The same key again (re-minted within the same second): nothing new.
                if held.as_ref().is_some_and(|h| h.key == minted.key) {
                    return false;
                }
                *held = Some(EnvKey {
                    key: minted.key.clone(),
                    region: minted.meta.region.clone(),
                });
                true
            });
        }
    }
}

struct Supervisor<'a> {
    args: &'a Exec,
    name: &'a str,
    status: &'a StatusBoard,
    keys: watch::Receiver<Option<EnvKey>>,
}

impl Supervisor<'_> {
    async fn run(mut self, mut signals: Signals) -> Result<Ended, ServiceError> {
        let mut board = self.status.subscribe();

        // The first start waits for the first key.
        let first = loop {
            tokio::select! {
                changed = self.keys.changed() => {
                    changed.map_err(|_| ServiceError::Exec("the key task ended".to_owned()))?;
                    if let Some(key) = self.keys.borrow_and_update().clone() {
                        break key;
                    }
                }
                _ = board.changed() => {
                    if let Some(cause) = self.hopeless() {
                        return Err(ServiceError::Exec(format!(
                            "no key for the command: {cause}"
                        )));
                    }
                }
                received = signals.recv() => match received {
                    // Nothing started yet: stop as the command would have.
                    Received::Term => return Ok(Ended::Signal(NixSignal::SIGTERM as i32)),
                    Received::Int => return Ok(Ended::Signal(NixSignal::SIGINT as i32)),
                    Received::Hup => tracing::debug!("SIGHUP before the command started: nothing to forward"),
                },
            }
        };

        let mut child = self.spawn(&first)?;
        // Set while a restart waits for the old command to end.
        let mut restarting = false;
        let mut stopping = false;
        // When to SIGKILL the command (and its group) that was asked to stop.
        let mut kill_at: Option<Instant> = None;
        loop {
            tokio::select! {
                // The command's own end wins over a key arriving at the same moment.
                biased;
                status = child.process.wait() => {
                    let status = status.map_err(|e| ServiceError::Exec(format!("waiting for the command: {e}")))?;
                    if restarting || stopping {
                        // What the command started goes with it: nothing of the old
                        // command outlives a restart or the end of exec.
                        let deadline = kill_at.take().unwrap_or_else(|| Instant::now() + self.args.grace);
                        child.end_group(deadline).await;
                    }
                    if restarting && !stopping {
                        restarting = false;
                        let key = self.keys.borrow_and_update().clone();
                        let Some(key) = key else {
                            return Err(ServiceError::Exec("the key vanished".to_owned()));
                        };
                        tracing::info!(status = %describe(status), "the command stopped; starting it with the new key");
                        child = self.spawn(&key)?;
                        continue;
                    }
                    tracing::info!(status = %describe(status), "the command ended");
                    return Ok(exit_code(status));
                }
                changed = self.keys.changed(), if !restarting && !stopping => {
                    if changed.is_err() {
                        // The key loop ended (it does not, short of a panic): keep the
                        // command running with the key it has.
                        tracing::error!("the key task ended; the command keeps its current key");
                        stopping = true;
                        continue;
                    }
                    match self.args.on_refresh {
                        OnRefresh::Restart => {
                            tracing::info!(grace = %crate::clock::duration::format(self.args.grace), "new key: restarting the command (SIGTERM)");
                            child.signal(NixSignal::SIGTERM);
                            restarting = true;
                            kill_at = Some(Instant::now() + self.args.grace);
                        }
                        OnRefresh::Signal(sig) => {
                            self.keys.borrow_and_update();
                            tracing::info!(signal = %sig, "new key in the sinks: signalling the command");
                            child.signal(to_nix(sig));
                        }
                    }
                }
                () = sleep_until(kill_at) => {
                    tracing::warn!(grace = %crate::clock::duration::format(self.args.grace), "the command did not stop within the grace period; SIGKILL");
                    child.signal(NixSignal::SIGKILL);
                    kill_at = None;
                }
                received = signals.recv() => match received {
                    Received::Term => {
                        tracing::info!(grace = %crate::clock::duration::format(self.args.grace), "SIGTERM: forwarded to the command; exiting when it ends (SIGKILL after the grace period)");
                        child.signal(NixSignal::SIGTERM);
                        stopping = true;
                        kill_at = Some(Instant::now() + self.args.grace);
                    }
                    Received::Int => {
                        tracing::info!("SIGINT: forwarded to the command; exiting when it ends");
                        child.signal(NixSignal::SIGINT);
                        stopping = true;
                    }
                    Received::Hup => {
                        tracing::info!("SIGHUP: forwarded to the command");
                        child.signal(NixSignal::SIGHUP);
                    }
                },
            }
        }
    }

    /// The cause, when the key failed in a way retrying cannot fix before it ever
    /// existed (a wrong profile, access denied): waiting would only hang.
    fn hopeless(&self) -> Option<String> {
        let snapshot = self.status.snapshot();
        let status = snapshot.get(self.name)?;
        if status.held.is_none() && !status.last_error_retryable {
            status.last_error.clone()
        } else {
            None
        }
    }

    fn spawn(&self, key: &EnvKey) -> Result<Running, ServiceError> {
        let (program, rest) = self
            .args
            .command
            .split_first()
            .ok_or(ServiceError::NoCommand)?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(rest)
            .env(BEARER_TOKEN_VARIABLE, key.key.expose())
            .env("AWS_REGION", &key.region);
        // Its own process group, so a restart or stop reaches what the command started
        // (a shell's children), as consul-template and Vault Agent do. Not when stdin
        // is a terminal: a command outside the terminal's foreground group is stopped
        // when it reads the terminal, and Ctrl-C reaches the whole group there anyway.
        let own_group = !std::io::stdin().is_terminal();
        if own_group {
            command.process_group(0);
        }
        let process = command.spawn().map_err(|e| {
            ServiceError::Exec(format!("cannot start {}: {e}", program.to_string_lossy()))
        })?;
        let pid = process
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0);
        tracing::info!(
            command = %program.to_string_lossy(),
            pid,
            fingerprint = %key.key.fingerprint(),
            "command started with the key in AWS_BEARER_TOKEN_BEDROCK"
        );
        Ok(Running {
            process,
            // A child's pid is never ≤ 1; checked anyway so a bug cannot signal every
            // process (-1) or our own group (0).
            group: (own_group && pid > 1).then(|| Pid::from_raw(pid)),
        })
    }
}

/// The command exec runs, and the process group it leads (none on a terminal).
struct Running {
    process: tokio::process::Child,
    group: Option<Pid>,
}

/// How often [`Running::end_group`] looks whether the group is gone: short next to
/// any grace period, rare enough to cost nothing.
const GROUP_POLL: Duration = Duration::from_millis(50);

impl Running {
    /// Sends `sig` to the command's process group, or to the command alone when it has
    /// none, if it is still there.
    fn signal(&self, sig: NixSignal) {
        let result = match self.group {
            Some(group) => nix_signal::killpg(group, sig),
            None => {
                let Some(pid) = self.process.id().and_then(|p| i32::try_from(p).ok()) else {
                    return;
                };
                if pid <= 1 {
                    return;
                }
                nix_signal::kill(Pid::from_raw(pid), sig)
            }
        };
        if let Err(e) = result {
            tracing::debug!(signal = %sig, error = %e, "could not signal the command (it ended?)");
        }
    }

    /// After the command itself ended on a restart or stop: waits until the rest of
    /// its group (which got the same signal) is gone too, and SIGKILLs what is left at
    /// `deadline`.
    async fn end_group(&self, deadline: Instant) {
        let Some(group) = self.group else { return };
        // Signal 0 only tests for members: ESRCH once none is left.
        while nix_signal::killpg(group, None).is_ok() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "processes the command started did not stop within the grace period; SIGKILL"
                );
                let _ = nix_signal::killpg(group, NixSignal::SIGKILL);
                return;
            }
            tokio::time::sleep(GROUP_POLL).await;
        }
    }
}

fn exit_code(status: ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Code(code),
        (None, Some(sig)) => Ended::Signal(sig),
        _ => Ended::Unknown,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
