//! The target locks ([`crate::sink::lock`]) a command holds: `run` all of its file and
//! env-file targets for its lifetime, `once` those of one key around its write.
//!
//! `run` takes every lock before the first mint, so a second daemon on the same
//! target fails at start (exit 73, naming the holder's pid) instead of flipping the
//! file with the first one for ever. A reload takes the locks of the targets it adds
//! before it stops anything (a reload that cannot have them is rejected, and the
//! running config stays) and lets go of those it drops only after their key tasks
//! stopped. Keyring sinks have no file to lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::KeyConfig;
use crate::sink::SinkSpec;
use crate::sink::lock::{LockError, TargetLock};
use crate::sink::path::Policy;

/// How long `once` waits for another writer of its target (a daemon's write or
/// another `once`): a write holds the lock for milliseconds, so ten seconds lets a
/// burst of hundreds of concurrent `once` runs through one by one, while a target
/// held by a running daemon is reported within a time a cron job or an init
/// container can afford.
pub const ONCE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The file targets of some sinks, in a stable order.
pub fn targets<'a>(sinks: impl IntoIterator<Item = &'a SinkSpec>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = sinks
        .into_iter()
        .filter_map(|spec| match spec {
            SinkSpec::File(f) => Some(f.path.clone()),
            SinkSpec::EnvFile(e) => Some(e.path.clone()),
            SinkSpec::Keyring(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Locks held, by target.
#[derive(Debug, Default)]
pub struct HeldLocks {
    held: BTreeMap<PathBuf, TargetLock>,
}

impl HeldLocks {
    /// Every target of `keys`, now, or the first one someone else holds.
    pub fn take_all(keys: &[KeyConfig]) -> Result<Self, LockError> {
        let mut locks = Self::default();
        let added = locks.take_added(keys)?;
        locks.held.extend(added);
        Ok(locks)
    }

    /// The locks of the targets of `keys` not held yet, without keeping them: the
    /// caller adds them with [`HeldLocks::replace`] once the new config applies.
    /// Targets whose lock cannot be had for another reason than a holder are left
    /// out (`lock_one`) and tried again at the next reload.
    pub fn take_added(&self, keys: &[KeyConfig]) -> Result<Vec<(PathBuf, TargetLock)>, LockError> {
        let mut added = Vec::new();
        for target in targets(keys.iter().flat_map(|k| &k.sinks)) {
            if !self.held.contains_key(&target)
                && let Some(lock) = lock_one(&target, TargetLock::try_acquire)?
            {
                added.push((target, lock));
            }
        }
        Ok(added)
    }

    /// Keeps `added` and lets go of every lock whose target is not in `keys`.
    pub fn replace(&mut self, keys: &[KeyConfig], added: Vec<(PathBuf, TargetLock)>) {
        self.held.extend(added);
        let wanted = targets(keys.iter().flat_map(|k| &k.sinks));
        self.held.retain(|target, _| wanted.contains(target));
    }
}

/// `once` and `token`: the locks of `targets` (see [`targets`]), in order, waiting up
/// to `wait` in all for other writers.
pub fn take_within(targets: &[PathBuf], wait: Duration) -> Result<Vec<TargetLock>, LockError> {
    let start = std::time::Instant::now();
    let mut locks = Vec::new();
    for target in targets {
        let locked = lock_one(target, |t| {
            TargetLock::acquire_within(t, wait.saturating_sub(start.elapsed()))
        });
        match locked {
            Ok(lock) => locks.extend(lock),
            // Say how long the caller waited in all, not what was left for this target.
            Err(LockError::Held { target, pid, .. }) => {
                return Err(LockError::Held {
                    target,
                    pid,
                    waited: Some(wait),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(locks)
}

/// One target's lock; `Err` only when another writer holds it. Where no lock file can
/// be had (its directory is missing, read-only or full; the path is one the write
/// will refuse; a lock file that is not ours), the write goes ahead without the lock
/// and reports the real problem itself, and a daemon keeps running and retrying, as
/// for any failed write. The safe walk comes first so that no lock file is ever
/// created where the write would not go.
fn lock_one(
    target: &Path,
    acquire: impl Fn(&Path) -> Result<TargetLock, LockError>,
) -> Result<Option<TargetLock>, LockError> {
    if let Err(e) = crate::sink::path::resolve(target, false, Policy::Strict) {
        tracing::debug!(target = %target.display(), error = %e, "no lock for a target the write will refuse");
        return Ok(None);
    }
    match acquire(target) {
        Ok(lock) => Ok(Some(lock)),
        Err(held @ LockError::Held { .. }) => Err(held),
        Err(e) => {
            tracing::warn!(target = %target.display(), error = %e, "writing without the target's lock");
            Ok(None)
        }
    }
}
