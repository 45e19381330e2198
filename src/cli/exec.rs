//! `bedrock-keyd exec`: run a command with the key in its environment and keep it
//! fresh.
//!
//! The key loop is the daemon's (one task per key, same schedule, sinks, notifies);
//! the command's key is handed over in memory by the [`OnDelivered`] hook, so it
//! reaches the command only after every sink of that key holds it. This is the one
//! place a child process gets the key (`AWS_BEARER_TOKEN_BEDROCK`), because the user
//! asked for exactly that.
//!
//! Where the key comes from:
//! - `--config PATH`: every key of that file is kept fresh (sinks, notifications);
//!   the command gets the only key, or the one named by `--key`. exec reads a config
//!   file only when `--config` names it, so a stray default config cannot decide
//!   which key a command sees;
//! - otherwise the key flags describe one key, and sinks are optional: with no
//!   `--file`/`--env-file`/`--keyring` the key lives only in the command's environment.
//!
//! On each new key: `restart` sends SIGTERM, waits `--grace`, sends SIGKILL if needed
//! and starts the command again with the new key; `signal:SIG` sends SIG and the
//! command re-reads the key from a sink (so it needs one). SIGHUP, SIGINT and SIGTERM
//! sent to bedrock-keyd are forwarded to the command (SIGHUP does not re-mint here);
//! after SIGINT/SIGTERM, bedrock-keyd exits with the command's status once it ends
//! (after SIGTERM, SIGKILL follows `--grace` later if it has not).
//!
//! The command leads its own process group and every signal goes to the group, so
//! what it started (a shell's children) stops with it; after the command itself has
//! ended on a restart or stop, the rest of the group gets until the end of the grace
//! period, then SIGKILL. When stdin is a terminal the command stays in our group
//! instead: a background group is stopped when it reads the terminal.
//! When the command ends on its own, bedrock-keyd exits with its exit code, or 128+N
//! if signal N killed it. exec does not watch sink or AWS files (`run` does).

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{self as nix_signal, Signal as NixSignal};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::time::Instant;

use super::flags::{KeyFlags, PolicyFlags};
use super::{CliError, block_on};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, KeyConfig};
use crate::daemon::{KeySet, OnDelivered, Runtime, StatusBoard, SystemBackend, random_jitter};
use crate::key::{ApiKey, MintedKey};
use crate::notify::send::{BEARER_TOKEN_VARIABLE, describe, to_nix};
use crate::notify::{Dependents, Signal};
use crate::schedule::Backoff;

/// Ten seconds is what Docker and Kubernetes give a container between SIGTERM and
/// SIGKILL by default (Kubernetes: 30 s; a reload should be quicker than a pod stop).
const DEFAULT_GRACE: &str = "10s";

/// Run CMD with AWS_BEARER_TOKEN_BEDROCK (and AWS_REGION) set, and keep the key fresh.
///
/// The first start waits for the first key. On each new key, restart mode (default)
/// stops CMD gracefully (SIGTERM, --grace, then SIGKILL) and starts it again with the
/// new key; signal:SIG mode sends SIG and CMD re-reads the key from a sink file (give
/// --file or --env-file). SIGHUP, SIGINT and SIGTERM are forwarded to CMD (after
/// SIGTERM, SIGKILL follows --grace later). CMD runs in its own process group (unless
/// stdin is a terminal), and signals reach the whole group. Exits with CMD's exit
/// code (128+N when signal N killed it).
///
/// Without --config, the key flags describe the key and sinks are optional: with none,
/// the key lives only in CMD's environment. With --config, every key of the file is
/// kept fresh and CMD gets the one named by --key (needed when there are several).
///
/// Example: bedrock-keyd exec --region us-east-1 --lifetime 1h -- python app.py
///
/// Example: bedrock-keyd exec --region us-east-1 --file /run/app/key --on-refresh signal:HUP -- app
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    keys: KeyFlags,

    #[command(flatten)]
    policy: PolicyFlags,

    /// With --config: the key CMD gets [default: the config's only key].
    #[arg(long = "key", value_name = "NAME", requires = "config")]
    key_name: Option<String>,

    /// On each new key: "restart" CMD with the new key, or "signal:SIG" (e.g.
    /// signal:HUP) to tell CMD to re-read it from a sink file.
    #[arg(long, value_name = "restart|signal:SIG", default_value = "restart", value_parser = parse_on_refresh)]
    on_refresh: OnRefresh,

    /// How long a restart or a stop (SIGTERM) waits after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_GRACE, value_parser = parse_duration)]
    grace: Duration,

    /// The command and its arguments, after `--` (run without a shell).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

impl ExecArgs {
    /// The config `--config` names, resolved (`Cli::resolve_config`); `None` without
    /// `--config`, when the key flags describe the key.
    pub fn resolve_config(&self) -> Option<super::Resolved> {
        self.keys
            .config
            .is_some()
            .then(|| self.keys.resolve(&self.policy))
    }
}

/// What exec does with the command when a new key arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefresh {
    Restart,
    Signal(Signal),
}

fn parse_on_refresh(s: &str) -> Result<OnRefresh, String> {
    if s == "restart" {
        return Ok(OnRefresh::Restart);
    }
    match s.strip_prefix("signal:") {
        Some(sig) => sig
            .parse()
            .map(OnRefresh::Signal)
            .map_err(|e: crate::notify::SignalError| e.to_string()),
        None => Err("use \"restart\" or \"signal:SIG\", e.g. signal:HUP".to_owned()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// The config to run (`config`, resolved from `--config`, or the single key of the
/// flags) and the name of the key the command gets.
fn resolve(args: &ExecArgs, config: Option<super::Resolved>) -> Result<(Config, String), CliError> {
    let config = match config {
        Some(resolved) => resolved?.1,
        None => Config::single(args.keys.single_key(&args.policy, false)?),
    };
    let key: &KeyConfig = match &args.key_name {
        Some(name) => config.key(name).ok_or_else(|| {
            CliError::Usage(format!(
                "--key {name}: the config has no key named {name:?}"
            ))
        })?,
        None => match config.keys.as_slice() {
            [only] => only,
            keys => {
                return Err(CliError::Usage(format!(
                    "the config has {} keys; name the one the command gets with --key NAME",
                    keys.len()
                )));
            }
        },
    };
    if let OnRefresh::Signal(sig) = args.on_refresh
        && key.sinks.is_empty()
    {
        return Err(CliError::Usage(format!(
            "--on-refresh signal:{} tells the command to re-read the key, but key {} has no sink to read it from: add --file or --env-file, or use --on-refresh restart",
            sig.short_name(),
            key.name
        )));
    }
    let name = key.name.to_string();
    Ok((config, name))
}

/// `config`: the resolved `--config`, `None` for a single key given by flags.
pub fn run(args: ExecArgs, config: Option<super::Resolved>) -> Result<ExitCode, CliError> {
    let (config, name) = resolve(&args, config)?;
    // One writer per target, as for `run`: held until exec returns.
    let _locks = crate::daemon::locks::HeldLocks::take_all(&config.keys)?;
    block_on(async move {
        let status = Arc::new(StatusBoard::new());
        let (tx, rx) = watch::channel(None);
        let rt = Runtime {
            backend: Arc::new(SystemBackend::default()),
            dependents: Arc::new(Handover {
                dependents: Dependents::new(status.clone()),
                name: name.clone(),
                tx,
            }),
            clock: Arc::new(SystemClock::new()) as Arc<dyn Clock>,
            jitter: random_jitter(),
            status: status.clone(),
            backoff: Backoff::default(),
        };
        let keys = KeySet::start(&rt, &config.keys);
        let result = Supervisor {
            args: &args,
            name: &name,
            status: &status,
            keys: rx,
        }
        .run()
        .await;
        keys.stop().await;
        result
    })?
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
    args: &'a ExecArgs,
    name: &'a str,
    status: &'a StatusBoard,
    keys: watch::Receiver<Option<EnvKey>>,
}

impl Supervisor<'_> {
    async fn run(mut self) -> Result<ExitCode, CliError> {
        let signal_error =
            |e: std::io::Error| CliError::Runtime(format!("cannot handle signals: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
        let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let mut hup = signal(SignalKind::hangup()).map_err(signal_error)?;
        let mut board = self.status.subscribe();

        // The first start waits for the first key.
        let first = loop {
            tokio::select! {
                changed = self.keys.changed() => {
                    changed.map_err(|_| CliError::Runtime("the key task ended".to_owned()))?;
                    if let Some(key) = self.keys.borrow_and_update().clone() {
                        break key;
                    }
                }
                _ = board.changed() => {
                    if let Some(cause) = self.hopeless() {
                        return Err(CliError::Runtime(format!(
                            "no key for the command: {cause}"
                        )));
                    }
                }
                // Nothing started yet: stop as the command would have.
                _ = term.recv() => return Ok(super::exit::signalled(NixSignal::SIGTERM as i32)),
                _ = int.recv() => return Ok(super::exit::signalled(NixSignal::SIGINT as i32)),
                _ = hup.recv() => tracing::debug!("SIGHUP before the command started: nothing to forward"),
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
                    let status = status.map_err(|e| CliError::Runtime(format!("waiting for the command: {e}")))?;
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
                            return Err(CliError::Runtime("the key vanished".to_owned()));
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
                            tracing::info!(grace = %crate::duration::format(self.args.grace), "new key: restarting the command (SIGTERM)");
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
                    tracing::warn!(grace = %crate::duration::format(self.args.grace), "the command did not stop within the grace period; SIGKILL");
                    child.signal(NixSignal::SIGKILL);
                    kill_at = None;
                }
                _ = term.recv() => {
                    tracing::info!(grace = %crate::duration::format(self.args.grace), "SIGTERM: forwarded to the command; exiting when it ends (SIGKILL after the grace period)");
                    child.signal(NixSignal::SIGTERM);
                    stopping = true;
                    kill_at = Some(Instant::now() + self.args.grace);
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: forwarded to the command; exiting when it ends");
                    child.signal(NixSignal::SIGINT);
                    stopping = true;
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: forwarded to the command");
                    child.signal(NixSignal::SIGHUP);
                }
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

    fn spawn(&self, key: &EnvKey) -> Result<Running, CliError> {
        let (program, rest) = self
            .args
            .command
            .split_first()
            .ok_or_else(|| CliError::Usage("no command given after --".to_owned()))?;
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
            CliError::Runtime(format!("cannot start {}: {e}", program.to_string_lossy()))
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

fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => super::exit::child(code),
        (None, Some(sig)) => super::exit::signalled(sig),
        _ => ExitCode::FAILURE,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
