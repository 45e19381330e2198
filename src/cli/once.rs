//! `bedrock-keyd once`: one round of minting and delivery, then exit.
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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::flags::{KeyFlags, NoProxyFlags, PolicyFlags};
use super::{CliError, block_on};
use crate::config::KeyConfig;
use crate::credentials::{CredentialSource, SdkSource};
use crate::daemon::StatusBoard;
use crate::daemon::locks::ONCE_LOCK_WAIT;
use crate::daemon::{RefreshError, deliver_here};
use crate::mint::mint;
use crate::notify::Dependents;
use crate::sink::Sink;

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
    crate::duration::parse(s).map_err(|e| e.to_string())
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
        let mut first_error = None;
        let status = Arc::new(StatusBoard::new());
        for key in &config.keys {
            status.register(key.name.as_str(), key.policy);
        }
        let dependents = Dependents::new(status);
        for key in &config.keys {
            let span = tracing::info_span!("key", key = %key.name);
            let _enter = span.enter();
            if key.sinks.is_empty() {
                tracing::info!(
                    "no sink, only a proxy: nothing to write; skipped (`run` serves the proxy)"
                );
                continue;
            }
            if let Err(e) = once(key, args.if_valid_for, &dependents).await {
                if config.keys.len() > 1 {
                    tracing::error!(error = %crate::credentials::error_chain(&e), "key not delivered");
                }
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(ExitCode::SUCCESS),
            Some(e) => Err(e),
        }
    })?
}

async fn once(
    key: &KeyConfig,
    if_valid_for: Option<Duration>,
    dependents: &Dependents,
) -> Result<(), CliError> {
    let sinks: Vec<Arc<dyn Sink>> = key
        .sinks
        .iter()
        .map(|spec| Arc::from(crate::sink::build(spec)))
        .collect();
    if let Some(wanted) = if_valid_for
        && let Some(remaining) = held_everywhere(&sinks, wanted)
    {
        tracing::info!(
            remaining = %crate::duration::format(remaining),
            "every sink holds a key valid for at least {}; left alone",
            crate::duration::format(wanted)
        );
        return Ok(());
    }
    let source = SdkSource::new(&key.source).await?;
    let credentials = source.credentials(key.lifetime.get()).await?;
    let minted = mint(
        &credentials,
        source.region(),
        key.lifetime,
        SystemTime::now(),
    )?;
    crate::mint::log_minted(&minted);
    // One writer per target: another `once` or a daemon may be writing it now. Held
    // (on this thread, which has nothing else to do) until the key is delivered.
    let locks = crate::daemon::locks::take_within(
        &crate::daemon::locks::targets(&key.sinks),
        ONCE_LOCK_WAIT,
    )?;
    let delivered = deliver_here(&sinks, &minted);
    drop(locks);
    match delivered {
        Ok(_) => {}
        Err(RefreshError::Sinks(failures)) => {
            return Err(CliError::Sinks(super::SinkFailures {
                failures,
                total: sinks.len(),
            }));
        }
        Err(e) => return Err(CliError::Runtime(crate::credentials::error_chain(&e))),
    }
    let tally = dependents.notify_now(key, &minted).await;
    if tally.err > 0 {
        return Err(CliError::Runtime(format!(
            "the key was delivered, but {} of {} dependents could not be notified (see the log)",
            tally.err,
            key.notify.len()
        )));
    }
    Ok(())
}

/// The smallest remaining validity across the sinks, if every sink holds a valid key
/// with at least `wanted` left.
fn held_everywhere(sinks: &[Arc<dyn Sink>], wanted: Duration) -> Option<Duration> {
    let now = SystemTime::now();
    let mut least: Option<Duration> = None;
    for sink in sinks {
        let key = match sink.read() {
            Ok(Some(key)) => key,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(sink = %sink.describe(), error = %e, "cannot read the held key");
                return None;
            }
        };
        let decoded = crate::inspect::decode(key.expose()).ok()?;
        if let Some(why @ crate::inspect::Invalidity::SignedInFuture { .. }) =
            decoded.invalid_at(now)
        {
            tracing::warn!(sink = %sink.describe(), "the held key {why}; replacing it");
            return None;
        }
        let remaining = decoded.remaining(now);
        if remaining < wanted {
            return None;
        }
        least = Some(least.map_or(remaining, |l| l.min(remaining)));
    }
    least
}
