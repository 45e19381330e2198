//! `once`: one round of minting and delivery for every key of a config, then done
//! (the clap side is `cli/once.rs`).
//!
//! Every sink is attempted even when an earlier one fails, so one broken target does
//! not keep the key from the others; the error then reports the failure. With
//! `if_valid_for`, a key whose sinks all still hold a key valid that long is left
//! alone: an init container hands over to the sidecar without a double mint.
//!
//! The mint is the daemon's ([`super::refresh::mint_now`], on the injected clock);
//! the delivery is [`super::deliver_here`], under the targets' locks. After a complete
//! delivery the key's dependents are notified at once (no debounce: there is only one
//! delivery).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::locks::ONCE_LOCK_WAIT;
use super::{RefreshError, StatusBoard, deliver_here};
use crate::clock::Clock;
use crate::config::{Config, KeyConfig};
use crate::credentials::{CredentialsError, SdkSource};
use crate::dependents::Dependents;
use crate::key::MintedKey;
use crate::key::mint::MintError;
use crate::sink::Sink;
use crate::sink::lock::LockError;

/// Why a key of `once` was not (completely) delivered. The CLI maps each variant to
/// the exit code of the matching `CliError`.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Mint(#[from] MintError),
    /// A target is held by another writer past the wait.
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(transparent)]
    Sinks(SinkFailures),
    #[error("{0}")]
    Runtime(String),
}

/// The sinks `once` could not write (the others were written).
#[derive(Debug)]
pub struct SinkFailures {
    pub failures: Vec<crate::sink::SinkError>,
    /// How many sinks were attempted.
    pub total: usize,
}

impl std::fmt::Display for SinkFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let [only] = self.failures.as_slice() {
            return write!(f, "{only}");
        }
        write!(
            f,
            "{} of {} sinks could not be written: ",
            self.failures.len(),
            self.total
        )?;
        for (i, e) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SinkFailures {}

/// Mints and delivers every key of `config` once, at `clock`'s now; keys with no sink
/// (only a proxy) are skipped. Every key is attempted; the first error is returned.
pub async fn run(
    config: &Config,
    if_valid_for: Option<Duration>,
    clock: &dyn Clock,
) -> Result<(), OnceError> {
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
        if let Err(e) = once(key, if_valid_for, &dependents, clock).await {
            if config.keys.len() > 1 {
                tracing::error!(error = %crate::error::error_chain(&e), "key not delivered");
            }
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

async fn once(
    key: &KeyConfig,
    if_valid_for: Option<Duration>,
    dependents: &Dependents,
    clock: &dyn Clock,
) -> Result<(), OnceError> {
    let sinks: Vec<Arc<dyn Sink>> = key
        .sinks
        .iter()
        .map(|spec| Arc::from(crate::sink::build(spec)))
        .collect();
    if let Some(wanted) = if_valid_for
        && let Some(remaining) = held_everywhere(&sinks, wanted, clock.now())
    {
        tracing::info!(
            remaining = %crate::clock::duration::format(remaining),
            "every sink holds a key valid for at least {}; left alone",
            crate::clock::duration::format(wanted)
        );
        return Ok(());
    }
    let source = SdkSource::new(&key.source).await?;
    let minted: MintedKey =
        super::refresh::mint_now::<_, OnceError>(&source, key.lifetime, clock).await?;
    crate::key::mint::log_minted(&minted);
    // One writer per target: another `once` or a daemon may be writing it now. Held
    // (on this thread, which has nothing else to do) until the key is delivered.
    let locks = super::locks::take_within(&super::locks::targets(&key.sinks), ONCE_LOCK_WAIT)?;
    let delivered = deliver_here(&sinks, &minted);
    drop(locks);
    match delivered {
        Ok(_) => {}
        Err(RefreshError::Sinks(failures)) => {
            return Err(OnceError::Sinks(SinkFailures {
                failures,
                total: sinks.len(),
            }));
        }
        Err(e) => return Err(OnceError::Runtime(crate::error::error_chain(&e))),
    }
    let tally = dependents.notify_now(key, &minted).await;
    if tally.err > 0 {
        return Err(OnceError::Runtime(format!(
            "the key was delivered, but {} of {} dependents could not be notified (see the log)",
            tally.err,
            key.notify.len()
        )));
    }
    Ok(())
}

/// The smallest remaining validity across the sinks, if every sink holds a valid key
/// with at least `wanted` left.
fn held_everywhere(sinks: &[Arc<dyn Sink>], wanted: Duration, now: SystemTime) -> Option<Duration> {
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
        let decoded = crate::key::decode::decode(key.expose()).ok()?;
        if let Some(why @ crate::key::decode::Invalidity::SignedInFuture { .. }) =
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
