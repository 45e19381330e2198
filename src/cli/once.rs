//! `bedrock-keyd once`: one round of minting and delivery, then exit (the work is
//! [`crate::daemon::once`], on the daemon's refresh path).
//!
//! For init containers, cron and CI: every key of the config (or the single key the
//! flags describe) is minted and written to all its sinks. Every sink is attempted
//! even when an earlier one fails, so one broken target does not keep the key from
//! the others; the exit code then reports the failure. With `--if-valid-for`, a key
//! whose sinks all still hold a key valid that long is left alone: an init container
//! hands over to the sidecar without a double mint.
//!
//! After a complete delivery the key's dependents are notified at once (no debounce:
//! there is only one delivery). A dependent that cannot be told makes the exit code 1
//! after every key was handled; a missing pid file is "pending", not a failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::flags::{KeyFlags, NoProxyFlags, PolicyFlags};
use super::{CliError, block_on};
use crate::clock::SystemClock;

/// Mint every key once, write it to all its sinks, notify its dependents, and exit.
///
/// Keys come from the config file, or from flags for a single key (--file, --env-file,
/// --keyring name its sinks; then no config file is read). Files are replaced
/// atomically (temp file, fsync, rename), created with exactly the configured mode
/// whatever the umask, and left untouched when they already hold the key.
///
/// Dependents ([[key.notify]], or --pid-file/--signal) are told right after the
/// delivery; a missing pid file means the dependent has not started and is not an
/// error.
///
/// Exit codes: 0 all delivered (or left alone by --if-valid-for), 1 a dependent could
/// not be notified, 69 credentials unavailable, 73 a sink could not be written, 78
/// the config is invalid.
///
/// Example: bedrock-keyd once --region us-east-1 --file /run/app/bedrock.key
#[derive(Debug, Args)]
pub struct OnceArgs {
    #[command(flatten)]
    keys: KeyFlags,

    /// Leave a key alone when every one of its sinks already holds a key valid for at
    /// least this long (e.g. 30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    if_valid_for: Option<Duration>,

    #[command(flatten)]
    no_proxy: NoProxyFlags,
}

impl OnceArgs {
    /// The config to run: the file, or the single key the flags describe. `once`
    /// refreshes nothing, so it has no refresh flags: the defaults stand in.
    pub fn resolve(&self) -> super::Resolved {
        self.keys.resolve(&PolicyFlags::default())
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::clock::duration::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: OnceArgs, config: super::Resolved) -> Result<ExitCode, CliError> {
    // Usage and config errors first: nothing is minted for a setup that cannot work.
    args.no_proxy.refuse("once")?;
    let (_, config) = config?;
    // A key served only by a proxy has nothing to write: `once` skips it (its proxy
    // lives in `run`), and refuses a config where that leaves nothing to do.
    if config.keys.iter().all(|k| k.sinks.is_empty()) {
        return Err(CliError::Usage(
            "nothing to write: every key has only [[key.proxy]] and no [[key.sink]]; a proxy is served by `bedrock-keyd run`".to_owned(),
        ));
    }
    block_on(async {
        let clock = SystemClock::one_shot();
        crate::daemon::once::run(&config, args.if_valid_for, &clock).await
    })??;
    Ok(ExitCode::SUCCESS)
}
