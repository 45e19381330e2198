//! What every key is doing, for readiness (`READY=1`, `/readyz`), metrics and `STATUS=`.
//!
//! Key tasks write here after each attempt; readers take a snapshot. A `watch`
//! channel tells observers (systemd notifier, tests) that something changed, so
//! nobody polls.
//!
//! The readiness wording lives here too ([`readiness`], [`unready_reason`]): `/readyz`
//! and `bedrock-keyd status` both speak with it, so they cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::clock::time::rfc3339;
use crate::schedule::{self, RefreshPolicy, Validity, is_ready};

/// One key's state.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyStatus {
    pub policy: RefreshPolicy,
    /// The key every sink holds (the last complete delivery).
    pub held: Option<Validity>,
    /// When the last complete delivery happened.
    pub last_refresh: Option<SystemTime>,
    pub refresh_ok: u64,
    pub refresh_err: u64,
    pub notify_ok: u64,
    pub notify_err: u64,
    /// When the next attempt is planned.
    pub next_attempt: Option<SystemTime>,
    /// The cause of the last failure, cleared by a success.
    pub last_error: Option<String>,
    /// Whether the last error can heal by itself (retrying helps).
    pub last_error_retryable: bool,
}

impl KeyStatus {
    fn new(policy: RefreshPolicy) -> Self {
        Self {
            policy,
            held: None,
            last_refresh: None,
            refresh_ok: 0,
            refresh_err: 0,
            notify_ok: 0,
            notify_err: 0,
            next_attempt: None,
            last_error: None,
            last_error_retryable: true,
        }
    }

    /// Valid beyond the policy's renewal deadline at `now` (`/readyz`).
    pub fn is_ready(&self, now: SystemTime) -> bool {
        is_ready(now, self.held, &self.policy)
    }
}

/// The shared board of key states.
pub struct StatusBoard {
    keys: Mutex<BTreeMap<String, KeyStatus>>,
    changed: watch::Sender<u64>,
}

impl StatusBoard {
    pub fn new() -> Self {
        Self {
            keys: Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
        }
    }

    /// Registers (or resets) a key. Called when a key task starts.
    pub fn register(&self, name: &str, policy: RefreshPolicy) {
        self.lock().insert(name.to_owned(), KeyStatus::new(policy));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets keys not in `names` (after a reload removed them).
    pub fn retain(&self, names: &[String]) {
        self.lock().retain(|k, _| names.contains(k));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Applies `f` to a key's status and tells observers.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut KeyStatus)) {
        if let Some(status) = self.lock().get_mut(name) {
            f(status);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn snapshot(&self) -> BTreeMap<String, KeyStatus> {
        self.lock().clone()
    }

    /// True once every registered key has been delivered at least once.
    pub fn all_delivered(&self) -> bool {
        let keys = self.lock();
        !keys.is_empty() && keys.values().all(|k| k.held.is_some())
    }

    /// A receiver that changes whenever any key's status does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, KeyStatus>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self::new()
    }
}

/// The `/readyz` verdict for every key on the board: `Ok` with "ready: N keys fresh",
/// or `Err` with "not ready:" and one line per unready key saying why.
pub fn readiness(keys: &BTreeMap<String, KeyStatus>, now: SystemTime) -> Result<String, String> {
    if keys.is_empty() {
        return Err("not ready: no key is running\n".to_owned());
    }
    let unready: Vec<String> = keys
        .iter()
        .filter_map(|(name, s)| {
            unready_reason(now, s.held, &s.policy).map(|why| format!("key {name}: {why}"))
        })
        .collect();
    if unready.is_empty() {
        let plural = if keys.len() == 1 { "key" } else { "keys" };
        Ok(format!("ready: {} {plural} fresh\n", keys.len()))
    } else {
        Err(format!("not ready:\n{}\n", unready.join("\n")))
    }
}

/// Why a key holding `held` is not ready at `now` under `policy`, or `None` when it is.
/// `/readyz` and `bedrock-keyd status` both judge with this, so they agree.
pub fn unready_reason(
    now: SystemTime,
    held: Option<Validity>,
    policy: &RefreshPolicy,
) -> Option<String> {
    let Some(held) = held else {
        return Some("no key delivered yet".to_owned());
    };
    if schedule::is_ready(now, Some(held), policy) {
        return None;
    }
    if now >= held.expiry {
        return Some(format!(
            "expired at {} ({} ago)",
            rfc3339(held.expiry),
            crate::clock::duration::format(now.duration_since(held.expiry).unwrap_or_default())
        ));
    }
    let left = crate::clock::duration::format(held.expiry.duration_since(now).unwrap_or_default());
    Some(if policy.is_capped(held.lifetime()) {
        format!(
            "only {left} left (expires at {}); past its renewal deadline {}",
            rfc3339(held.expiry),
            rfc3339(schedule::renew_deadline(held, policy))
        )
    } else {
        format!(
            "only {left} left (expires at {}), less than min_remaining {}",
            rfc3339(held.expiry),
            crate::clock::duration::format(policy.min_remaining())
        )
    })
}

/// Fixtures for the unit tests of what reads the board (`/readyz`, `/metrics`): a
/// fixed instant, a policy, and a board with two keys (one with a quote in its name,
/// for the escaping).
#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::StatusBoard;
    use crate::schedule::RefreshPolicy;

    pub fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_680_000 + secs)
    }

    pub fn policy(min_remaining: u64) -> RefreshPolicy {
        RefreshPolicy::new(0.5, 0.0, Duration::from_secs(min_remaining)).unwrap()
    }

    pub fn board() -> StatusBoard {
        let b = StatusBoard::new();
        b.register("alpha", policy(300));
        b.register("be\"ta", policy(300));
        b
    }
}
