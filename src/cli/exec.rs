//! `bedrock-keyd exec`: the command line of [`crate::service::exec`], which runs a
//! command with the key in its environment and keeps it fresh.
//!
//! Where the key comes from:
//! - `--config PATH`: every key of that file is kept fresh (sinks, notifications);
//!   the command gets the only key, or the one named by `--key`. exec reads a config
//!   file only when `--config` names it, so a stray default config cannot decide
//!   which key a command sees;
//! - otherwise the key flags describe one key, and sinks are optional: with no
//!   `--file`/`--env-file`/`--keyring` the key lives only in the command's environment.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::flags::{KeyFlags, PolicyFlags};
use super::{CliError, block_on};
use crate::config::{Config, KeyConfig};
use crate::service::exec::{Ended, Exec, OnRefresh};
use crate::service::signals::Signals;

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

fn parse_on_refresh(s: &str) -> Result<OnRefresh, String> {
    if s == "restart" {
        return Ok(OnRefresh::Restart);
    }
    match s.strip_prefix("signal:") {
        Some(sig) => sig
            .parse()
            .map(OnRefresh::Signal)
            .map_err(|e: crate::dependents::SignalError| e.to_string()),
        None => Err("use \"restart\" or \"signal:SIG\", e.g. signal:HUP".to_owned()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::clock::duration::parse(s).map_err(|e| e.to_string())
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
    let exec = Exec {
        command: args.command,
        on_refresh: args.on_refresh,
        grace: args.grace,
    };
    let ended = block_on(async move {
        let signals = Signals::install().map_err(crate::service::ServiceError::Signals)?;
        crate::service::exec::run(&config, &name, &exec, signals).await
    })??;
    Ok(match ended {
        Ended::Code(code) => super::exit::child(code),
        Ended::Signal(sig) => super::exit::signalled(sig),
        Ended::Unknown => ExitCode::FAILURE,
    })
}
