//! When to re-mint a key, when to retry after a failure, and whether a key is healthy.
//!
//! Everything here is a pure function of wall-clock instants, a [`RefreshPolicy`] and a
//! [`JitterSample`] drawn by the caller: no clock is read and no randomness is drawn
//! inside (except by [`JitterSample::random`], which the caller invokes), so every rule
//! is tested exhaustively with hand-picked instants.
//!
//! The rules (see "Refresh policy" in the design contract):
//! - A key issued at `issued` and expiring at `expiry` (its *effective* expiry, which
//!   short signing credentials may bring forward) is re-minted at
//!   `issued + refresh_at × lifetime`, moved by `± jitter` of that delay so a fleet
//!   does not mint in lockstep, and never later than `expiry − min_remaining`.
//! - A key too short for that guard (a key capped by short credentials: less than
//!   [`MIN_REFRESH_DELAY`] between issuance and `expiry − min_remaining`) re-mints at
//!   its `refresh_at` point instead, and is healthy until the end of its jitter window.
//! - Instants are wall-clock ([`SystemTime`]): a host that slept through a deadline
//!   finds it in the past and re-mints at once. A clock that jumped *backwards*
//!   (now before `issued`) never makes the daemon sleep longer than the planned delay.
//! - After a failure: jittered exponential backoff that never sleeps past the key's
//!   renewal deadline; once past it, retries come at least every
//!   [`DEFAULT_OVERDUE_RETRY_MAX`] but never faster than [`MIN_OVERDUE_RETRY`].

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// Re-mint halfway through a key's life: a failed refresh still leaves half the
/// lifetime to recover in.
pub const DEFAULT_REFRESH_AT: f64 = 0.5;
/// ±10 % of the refresh delay: enough to spread a fleet started together, small
/// enough that the schedule stays predictable.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Dependents always get a key with at least five minutes left: longer than a typical
/// request or stream, shorter than any sensible lifetime.
pub const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(5 * 60);
/// The `min_remaining` in force when none is set: [`DEFAULT_MIN_REMAINING`], or a
/// quarter of a shorter-than-20-minute `lifetime` (whole seconds, at least 1s), so
/// that a short key asked for on purpose (`--lifetime 2m`) is not refused for a
/// default its user never chose. A quarter leaves the rest of the lifetime for
/// `refresh_at` and jitter.
pub fn default_min_remaining(lifetime: Duration) -> Duration {
    let quarter = Duration::from_secs(lifetime.as_secs() / 4).max(Duration::from_secs(1));
    DEFAULT_MIN_REMAINING.min(quarter)
}
/// Jitter beyond half of the delay would make the schedule meaningless (a refresh at
/// 0 % or 200 % of the planned delay).
pub const MAX_JITTER: f64 = 0.5;
/// A refresh is never planned sooner than this after issuance merely to honour
/// `min_remaining`; a key whose guard window is shorter counts as capped by short
/// credentials and re-mints at its `refresh_at` point, so a source handing out
/// credentials barely longer than `min_remaining` cannot make us mint in a tight loop.
pub const MIN_REFRESH_DELAY: Duration = Duration::from_secs(10);

/// First retry after a failure comes after about a second: transient errors (a
/// dropped connection, a throttled STS call) usually clear that fast.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Retries slow down to one every five minutes at most: a broken source is not
/// hammered, and a fixed one (an operator ran `aws sso login`) is noticed soon.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Once a key is past its renewal deadline (or there is none yet), every second
/// counts, so retries come at least this often.
pub const DEFAULT_OVERDUE_RETRY_MAX: Duration = Duration::from_secs(30);
/// …but never faster than this, so a key past its deadline cannot busy-loop.
pub const MIN_OVERDUE_RETRY: Duration = Duration::from_secs(1);

/// How a key is refreshed: validated, so it cannot hold a nonsensical value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    refresh_at: f64,
    jitter: f64,
    min_remaining: Duration,
}

/// Why a refresh policy was refused. Messages say what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "{0} is not a fraction strictly between 0 and 1 (e.g. 0.5: re-mint halfway through the key's life)"
    )]
    RefreshAt(f64),
    #[error("{0} is not a fraction between 0 and {MAX_JITTER} (e.g. 0.1 for ±10 %)")]
    Jitter(f64),
    #[error("must be at least 1s (a key is re-minted this long before it expires)")]
    MinRemainingZero,
}

impl RefreshPolicy {
    pub fn new(refresh_at: f64, jitter: f64, min_remaining: Duration) -> Result<Self, PolicyError> {
        // Written so that NaN fails every comparison and is refused.
        if !(refresh_at > 0.0 && refresh_at < 1.0) {
            return Err(PolicyError::RefreshAt(refresh_at));
        }
        if !((0.0..=MAX_JITTER).contains(&jitter)) {
            return Err(PolicyError::Jitter(jitter));
        }
        if min_remaining < Duration::from_secs(1) {
            return Err(PolicyError::MinRemainingZero);
        }
        Ok(Self {
            refresh_at,
            jitter,
            min_remaining,
        })
    }

    /// Fraction of the effective lifetime after which the key is re-minted.
    pub fn refresh_at(&self) -> f64 {
        self.refresh_at
    }

    /// ± fraction of the refresh delay by which a refresh is moved at random.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// A key is re-minted at least this long before it expires.
    pub fn min_remaining(&self) -> Duration {
        self.min_remaining
    }

    /// The delay from issuance to the refresh of a key with this effective `lifetime`,
    /// for `jitter` (the same rule [`next_refresh`] applies).
    pub fn refresh_delay(&self, lifetime: Duration, jitter: JitterSample) -> Duration {
        let factor = self.refresh_at * (1.0 + self.jitter * jitter.get());
        let planned = scale(lifetime, factor);
        planned.min(self.deadline_delay(lifetime))
    }

    /// The delay from issuance to the renewal deadline of a key with this lifetime:
    /// `lifetime − min_remaining`, or for a key too short for that guard, the end of
    /// its jitter window (at most the lifetime itself).
    pub fn deadline_delay(&self, lifetime: Duration) -> Duration {
        match lifetime.checked_sub(self.min_remaining) {
            Some(window) if window >= MIN_REFRESH_DELAY => window,
            _ => scale(lifetime, (self.refresh_at * (1.0 + self.jitter)).min(1.0)),
        }
    }

    /// Whether a key with this effective lifetime is too short for `min_remaining` and
    /// re-mints at its `refresh_at` point instead.
    pub fn is_capped(&self, lifetime: Duration) -> bool {
        !matches!(lifetime.checked_sub(self.min_remaining), Some(w) if w >= MIN_REFRESH_DELAY)
    }
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_at: DEFAULT_REFRESH_AT,
            jitter: DEFAULT_JITTER,
            min_remaining: DEFAULT_MIN_REMAINING,
        }
    }
}

impl fmt::Display for RefreshPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {}% of the effective lifetime ±{}%, never later than {} before expiry",
            percent(self.refresh_at),
            percent(self.jitter),
            crate::duration::format(self.min_remaining)
        )
    }
}

fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round() as i64)
    } else {
        format!("{p:.1}")
    }
}

/// A random draw in `[-1, 1]` that moves a refresh (or a retry) within its jitter
/// window. Drawn by the caller so the schedule stays a pure function.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct JitterSample(f64);

impl JitterSample {
    /// No jitter: exactly the planned instant.
    pub const ZERO: JitterSample = JitterSample(0.0);
    /// The earliest end of the window.
    pub const MIN: JitterSample = JitterSample(-1.0);
    /// The latest end of the window.
    pub const MAX: JitterSample = JitterSample(1.0);

    /// A sample clamped into `[-1, 1]` (NaN counts as 0).
    pub fn new(value: f64) -> Self {
        if value.is_nan() {
            Self::ZERO
        } else {
            Self(value.clamp(-1.0, 1.0))
        }
    }

    /// Maps a uniform draw from `[0, 1)` onto `[-1, 1)`.
    pub fn from_unit(unit: f64) -> Self {
        Self::new(unit * 2.0 - 1.0)
    }

    /// A fresh uniform draw. Uses the standard library's randomly keyed SipHash (each
    /// `RandomState` gets new keys), which is plenty for spreading timers and needs
    /// no extra dependency; it is not for secrets.
    pub fn random() -> Self {
        let bits = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // 53 random bits → a uniform f64 in [0, 1).
        Self::from_unit((bits >> 11) as f64 / (1u64 << 53) as f64)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// How far after the checking machine's clock a key's signing instant may lie: clock
/// skew between two machines (NTP keeps it far below; SigV4 itself tolerates 5
/// minutes). A key signed later than that was forged, or minted on a machine whose
/// clock is wrong, and would otherwise count as valid until a date it was never
/// meant to reach.
pub const MAX_SIGNED_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The validity window of the key the sinks hold: when it was signed and its
/// effective expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub issued: SystemTime,
    pub expiry: SystemTime,
}

impl Validity {
    pub fn new(issued: SystemTime, expiry: SystemTime) -> Self {
        Self { issued, expiry }
    }

    /// The effective lifetime (zero if the expiry is not after issuance).
    pub fn lifetime(&self) -> Duration {
        self.expiry.duration_since(self.issued).unwrap_or_default()
    }

    /// How far ahead of `now` the key was signed, when that is more than
    /// [`MAX_SIGNED_AHEAD`]: such a key is invalid whatever its expiry says (`inspect`,
    /// `status`, `once --if-valid-for`). `None` for a key signed at most that far ahead.
    pub fn signed_in_future(&self, now: SystemTime) -> Option<Duration> {
        let ahead = self.issued.duration_since(now).ok()?;
        (ahead > MAX_SIGNED_AHEAD).then_some(ahead)
    }
}

impl From<&crate::key::KeyMeta> for Validity {
    fn from(meta: &crate::key::KeyMeta) -> Self {
        Self::new(meta.issued_at, meta.expires_at)
    }
}

/// When to re-mint a key the sinks hold, given the wall clock `now`.
///
/// Never before `now` (a deadline slept through is due at once, i.e. `now`); at or
/// before [`renew_deadline`] whenever that is still ahead. If the clock jumped back
/// before `issued`, the planned delay is counted from `now`, so the daemon never
/// sleeps longer than a key's refresh delay.
pub fn next_refresh(
    now: SystemTime,
    held: Validity,
    policy: &RefreshPolicy,
    jitter: JitterSample,
) -> SystemTime {
    let delay = policy.refresh_delay(held.lifetime(), jitter);
    at_delay(now, held.issued, delay)
}

/// The instant by which the key must have been replaced to meet the policy: its
/// `expiry − min_remaining`, or for a key capped by short credentials the end of its
/// refresh jitter window. Past it, the key is not ready.
pub fn renew_deadline(held: Validity, policy: &RefreshPolicy) -> SystemTime {
    add(
        held.issued,
        policy.deadline_delay(held.lifetime()),
        held.expiry,
    )
}

/// Jittered exponential backoff between failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure (before jitter).
    pub initial: Duration,
    /// The delay stops doubling here.
    pub max: Duration,
    /// Upper bound once the key is past its renewal deadline or there is no key yet.
    pub overdue_max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
            overdue_max: DEFAULT_OVERDUE_RETRY_MAX,
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 for the first): `initial`
    /// doubled per further failure up to `max`, then "equal jitter": a sample of -1
    /// gives half of it, +1 all of it.
    pub fn delay(&self, failures: u32, jitter: JitterSample) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let full = self
            .initial
            .checked_mul(1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        scale(full, 0.75 + 0.25 * jitter.get())
    }
}

/// When to retry after `failures` consecutive failed attempts (1 for the first).
///
/// With a key held and its renewal deadline ahead, the retry comes no later than
/// that deadline. Past it, or with no key at all, retries come every
/// [`MIN_OVERDUE_RETRY`] … `overdue_max`: soon, but never a busy loop.
pub fn retry_at(
    now: SystemTime,
    failures: u32,
    held: Option<Validity>,
    policy: &RefreshPolicy,
    backoff: &Backoff,
    jitter: JitterSample,
) -> SystemTime {
    let delay = backoff.delay(failures, jitter);
    let until_deadline = held.and_then(|h| renew_deadline(h, policy).duration_since(now).ok());
    let delay = match until_deadline {
        Some(left) if !left.is_zero() => delay.min(left),
        _ => delay.min(backoff.overdue_max).max(MIN_OVERDUE_RETRY),
    };
    add(now, delay, now)
}

/// Whether the key the sinks hold meets the policy at `now`: it is valid and its
/// renewal deadline has not passed (for most keys: valid beyond `min_remaining`).
/// This is `/readyz` and `status`.
pub fn is_ready(now: SystemTime, held: Option<Validity>, policy: &RefreshPolicy) -> bool {
    held.is_some_and(|h| now < renew_deadline(h, policy) && now < h.expiry)
}

/// Whether the held key will have expired by `at` (e.g. the next attempt): such a
/// key is reported unready before it lapses.
pub fn expires_by(held: Validity, at: SystemTime) -> bool {
    held.expiry <= at
}

/// How long to sleep from `now` until `at` (zero if `at` has passed).
pub fn sleep_until(now: SystemTime, at: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

/// `issued + delay`, counted from `now` when the clock is before `issued`, and
/// never before `now`.
fn at_delay(now: SystemTime, issued: SystemTime, delay: Duration) -> SystemTime {
    if now < issued {
        add(now, delay, now)
    } else {
        add(issued, delay, now).max(now)
    }
}

/// `t + d`, or `fallback` if that is not representable.
fn add(t: SystemTime, d: Duration, fallback: SystemTime) -> SystemTime {
    t.checked_add(d).unwrap_or(fallback)
}

/// `d × factor` for a non-negative factor, saturating instead of panicking.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    const S: Duration = Duration::from_secs(1);
    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_680_000)
    }

    fn key(lifetime: Duration) -> Validity {
        Validity::new(t0(), t0() + lifetime)
    }

    fn secs_after(t: SystemTime) -> f64 {
        t.duration_since(t0()).unwrap().as_secs_f64()
    }

    #[test]
    fn defaults_match_the_contract() {
        let p = RefreshPolicy::default();
        assert_eq!(p.refresh_at(), 0.5);
        assert_eq!(p.jitter(), 0.1);
        assert_eq!(p.min_remaining(), 5 * MIN);
        assert_eq!(
            p.to_string(),
            "at 50% of the effective lifetime ±10%, never later than 5m before expiry"
        );
    }

    #[test]
    fn policy_bounds() {
        let m = 5 * MIN;
        for bad in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(
                RefreshPolicy::new(bad, 0.1, m).map_err(|e| matches!(e, PolicyError::RefreshAt(_))),
                Err(true),
                "{bad}"
            );
        }
        for bad in [-0.01, 0.51, 1.0, f64::NAN] {
            assert!(
                matches!(RefreshPolicy::new(0.5, bad, m), Err(PolicyError::Jitter(_))),
                "{bad}"
            );
        }
        assert_eq!(
            RefreshPolicy::new(0.5, 0.1, Duration::from_millis(999)),
            Err(PolicyError::MinRemainingZero)
        );
        assert!(RefreshPolicy::new(0.01, 0.0, S).is_ok());
        assert!(RefreshPolicy::new(0.99, 0.5, S).is_ok());
    }

    #[test]
    fn twelve_hour_key_refreshes_at_half_life_within_jitter_bounds() {
        let p = RefreshPolicy::default();
        let k = key(12 * HOUR);
        assert_eq!(
            next_refresh(t0(), k, &p, JitterSample::ZERO),
            t0() + 6 * HOUR
        );
        // ±10 % of the 6 h delay: 5h24m … 6h36m.
        assert_eq!(
            next_refresh(t0(), k, &p, JitterSample::MIN),
            t0() + 5 * HOUR + 24 * MIN
        );
        assert_eq!(
            next_refresh(t0(), k, &p, JitterSample::MAX),
            t0() + 6 * HOUR + 36 * MIN
        );
        // The deadline is expiry − min_remaining; the key is ready until then.
        assert_eq!(renew_deadline(k, &p), t0() + 11 * HOUR + 55 * MIN);
        assert!(!p.is_capped(k.lifetime()));
    }

    #[test]
    fn jitter_never_pushes_past_expiry_minus_min_remaining() {
        let p = RefreshPolicy::new(0.9, 0.5, 5 * MIN).unwrap();
        let k = key(HOUR);
        // Planned 54 min ± 27 min, but never after 55 min.
        assert_eq!(
            next_refresh(t0(), k, &p, JitterSample::MAX),
            t0() + 55 * MIN
        );
        assert_eq!(
            next_refresh(t0(), k, &p, JitterSample::MIN),
            t0() + 27 * MIN
        );
    }

    #[test]
    fn credential_capped_one_hour() {
        // Requested 12 h, but the credentials expire after 1 h: the 1 h is what counts.
        let p = RefreshPolicy::default();
        let k = key(HOUR);
        assert_eq!(
            next_refresh(t0(), k, &p, JitterSample::ZERO),
            t0() + 30 * MIN
        );
        assert_eq!(
            next_refresh(t0(), k, &p, JitterSample::MAX),
            t0() + 33 * MIN
        );
        assert_eq!(renew_deadline(k, &p), t0() + 55 * MIN);
    }

    #[test]
    fn credential_capped_fifteen_minutes() {
        let p = RefreshPolicy::default();
        let k = key(15 * MIN);
        let at = next_refresh(t0(), k, &p, JitterSample::ZERO);
        assert_eq!(secs_after(at), 450.0);
        assert_eq!(
            secs_after(next_refresh(t0(), k, &p, JitterSample::MAX)),
            495.0
        );
        assert_eq!(renew_deadline(k, &p), t0() + 10 * MIN);
        assert!(!p.is_capped(k.lifetime()));
    }

    #[test]
    fn credential_capped_two_minutes_falls_back_to_refresh_at() {
        // min_remaining (5m) is longer than the whole key: re-mint at its half-life.
        let p = RefreshPolicy::default();
        let k = key(2 * MIN);
        assert!(p.is_capped(k.lifetime()));
        assert_eq!(next_refresh(t0(), k, &p, JitterSample::ZERO), t0() + MIN);
        assert_eq!(
            secs_after(next_refresh(t0(), k, &p, JitterSample::MIN)),
            54.0
        );
        assert_eq!(
            secs_after(next_refresh(t0(), k, &p, JitterSample::MAX)),
            66.0
        );
        // Healthy until the end of its jitter window, never beyond the expiry.
        assert_eq!(secs_after(renew_deadline(k, &p)), 66.0);
        assert!(is_ready(t0() + MIN, Some(k), &p));
        assert!(!is_ready(t0() + 67 * S, Some(k), &p));
    }

    #[test]
    fn a_guard_window_shorter_than_the_floor_counts_as_capped() {
        // 5m5s key, 5m min_remaining: capping would mean re-minting after 5 s.
        let p = RefreshPolicy::default();
        let k = key(5 * MIN + 5 * S);
        assert!(p.is_capped(k.lifetime()));
        assert_eq!(
            secs_after(next_refresh(t0(), k, &p, JitterSample::ZERO)),
            152.5
        );
        // A 5m10s key is guarded: 10 s is the smallest refresh delay the guard may force.
        let k = key(5 * MIN + 10 * S);
        assert!(!p.is_capped(k.lifetime()));
        assert_eq!(
            secs_after(next_refresh(t0(), k, &p, JitterSample::ZERO)),
            10.0
        );
    }

    #[test]
    fn deadline_of_a_capped_key_never_exceeds_its_expiry() {
        let p = RefreshPolicy::new(0.9, 0.5, 5 * MIN).unwrap();
        let k = key(MIN);
        assert_eq!(renew_deadline(k, &p), k.expiry);
        assert_eq!(next_refresh(t0(), k, &p, JitterSample::MAX), k.expiry);
    }

    #[test]
    fn a_slept_through_deadline_is_due_at_once() {
        let p = RefreshPolicy::default();
        let k = key(12 * HOUR);
        // The laptop slept from t0 + 1h to t0 + 9h: the refresh point (6h) has passed.
        let wake = t0() + 9 * HOUR;
        assert_eq!(next_refresh(wake, k, &p, JitterSample::ZERO), wake);
        assert!(is_ready(wake, Some(k), &p));
    }

    #[test]
    fn clock_jumps_forward_past_expiry() {
        let p = RefreshPolicy::default();
        let k = key(HOUR);
        let now = t0() + 3 * HOUR;
        assert_eq!(next_refresh(now, k, &p, JitterSample::MAX), now);
        assert!(!is_ready(now, Some(k), &p));
        assert!(expires_by(k, now));
        // A failed attempt then retries soon, but not in a busy loop.
        let b = Backoff::default();
        for failures in 1..40 {
            let at = retry_at(now, failures, Some(k), &p, &b, JitterSample::MIN);
            let delay = at.duration_since(now).unwrap();
            assert!(
                (MIN_OVERDUE_RETRY..=DEFAULT_OVERDUE_RETRY_MAX).contains(&delay),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn clock_jumps_backward() {
        let p = RefreshPolicy::default();
        let k = key(12 * HOUR);
        // Five hours before the key was issued: sleep the planned 6 h from now, not 11 h.
        let now = t0() - 5 * HOUR;
        assert_eq!(next_refresh(now, k, &p, JitterSample::ZERO), now + 6 * HOUR);
        assert!(sleep_until(now, next_refresh(now, k, &p, JitterSample::MAX)) <= 12 * HOUR);
        assert!(is_ready(now, Some(k), &p));
        // A small step back after some time has passed: still at most the planned delay.
        let now = t0() + HOUR - 2 * MIN;
        assert_eq!(
            next_refresh(now, k, &p, JitterSample::ZERO),
            t0() + 6 * HOUR
        );
    }

    #[test]
    fn backoff_grows_exponentially_to_its_cap() {
        let b = Backoff::default();
        let full: Vec<u64> = (1..=12)
            .map(|n| b.delay(n, JitterSample::MAX).as_secs())
            .collect();
        assert_eq!(full, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // Equal jitter: between half and all of the full delay.
        assert_eq!(b.delay(4, JitterSample::MIN), 4 * S);
        assert_eq!(b.delay(4, JitterSample::ZERO), 6 * S);
        assert_eq!(b.delay(u32::MAX, JitterSample::MAX), DEFAULT_BACKOFF_MAX);
        assert_eq!(b.delay(0, JitterSample::MAX), S);
    }

    #[test]
    fn backoff_never_sleeps_past_the_renewal_deadline() {
        let p = RefreshPolicy::default();
        let b = Backoff::default();
        let k = key(HOUR);
        // The refresh at 30 min failed for the 12th time, 54 min in: 1 min to the deadline.
        let now = t0() + 54 * MIN;
        assert_eq!(
            retry_at(now, 12, Some(k), &p, &b, JitterSample::MAX),
            t0() + 55 * MIN
        );
        // Early failures are not stretched to the deadline.
        assert_eq!(
            retry_at(now, 1, Some(k), &p, &b, JitterSample::MAX),
            now + S
        );
        // Past the deadline (4 min left on the key): at most every 30 s.
        let now = t0() + 56 * MIN;
        assert_eq!(
            retry_at(now, 12, Some(k), &p, &b, JitterSample::MAX),
            now + 30 * S
        );
        assert!(!is_ready(now, Some(k), &p));
        assert!(!expires_by(k, now + 30 * S));
    }

    #[test]
    fn backoff_without_any_key_is_overdue() {
        let p = RefreshPolicy::default();
        let b = Backoff::default();
        let now = t0();
        assert_eq!(retry_at(now, 1, None, &p, &b, JitterSample::MIN), now + S);
        assert_eq!(
            retry_at(now, 20, None, &p, &b, JitterSample::MAX),
            now + 30 * S
        );
        assert!(!is_ready(now, None, &p));
    }

    #[test]
    fn jitter_samples() {
        assert_eq!(JitterSample::new(3.0), JitterSample::MAX);
        assert_eq!(JitterSample::new(f64::NAN), JitterSample::ZERO);
        assert_eq!(JitterSample::from_unit(0.0), JitterSample::MIN);
        assert_eq!(JitterSample::from_unit(0.5), JitterSample::ZERO);
        let draws: Vec<f64> = (0..64).map(|_| JitterSample::random().get()).collect();
        assert!(draws.iter().all(|d| (-1.0..=1.0).contains(d)));
        assert!(draws.iter().any(|d| *d < 0.0) && draws.iter().any(|d| *d > 0.0));
    }

    /// 48 hours of a key whose credentials last 10 minutes (renewed at each mint):
    /// every refresh comes before `expiry − min_remaining`, the sinks never hold an
    /// expired key, and the number of mints is what the policy predicts.
    #[test]
    fn forty_eight_hours_of_ten_minute_credentials() {
        let p = RefreshPolicy::default();
        let end = t0() + 48 * HOUR;
        let run = |jitter: &dyn Fn() -> JitterSample| {
            let mut now = t0();
            let mut held = key(10 * MIN);
            let mut mints = 1u32;
            while now < end {
                let next = next_refresh(now, held, &p, jitter());
                assert!(next > now && next <= held.expiry - p.min_remaining());
                assert!(is_ready(now, Some(held), &p));
                now = next;
                held = Validity::new(now, now + 10 * MIN);
                mints += 1;
            }
            mints
        };
        // 10 min credentials: planned at 5m ± 30s, capped at 5m (expiry − 5m).
        assert_eq!(run(&|| JitterSample::ZERO), 48 * 12 + 1);
        assert_eq!(run(&|| JitterSample::MAX), 48 * 12 + 1);
        // Only the early half of the window is reachable: 4m30s … 5m between mints.
        let random = run(&JitterSample::random);
        assert!(
            (48 * 12 + 1..=48 * 60 * 60 / 270 + 1).contains(&random),
            "{random}"
        );
    }

    /// A credential outage after a refresh point: retries never let the key lapse
    /// while the outage is shorter than the time the key had left.
    #[test]
    fn an_outage_shorter_than_the_remaining_validity_is_ridden_out() {
        let p = RefreshPolicy::default();
        let b = Backoff::default();
        let held = key(HOUR);
        let outage_ends = t0() + 50 * MIN;
        let mut now = next_refresh(t0(), held, &p, JitterSample::ZERO);
        let mut failures = 0;
        while now < outage_ends {
            failures += 1;
            let next = retry_at(now, failures, Some(held), &p, &b, JitterSample::MAX);
            assert!(
                next <= renew_deadline(held, &p),
                "{failures}: sleeps past the deadline"
            );
            now = next;
        }
        assert!(now < held.expiry && is_ready(now, Some(held), &p));
        // 1 s, 2 s, … 256 s (8m31s in all), then every 5 minutes: 12 failed attempts
        // in the 20-minute outage, and the first attempt after it comes at 53m31s.
        assert_eq!(failures, 12);
        assert_eq!(now, t0() + 53 * MIN + 31 * S);
    }

    fn policies() -> impl Strategy<Value = RefreshPolicy> {
        (0.01f64..0.99, 0.0f64..=0.5, 1u64..7200)
            .prop_map(|(r, j, m)| RefreshPolicy::new(r, j, Duration::from_secs(m)).unwrap())
    }

    proptest! {
        #[test]
        fn next_refresh_is_sane(
            policy in policies(),
            lifetime in 0u64..=43_200,
            offset in -86_400i64..=86_400,
            jitter in -1.0f64..=1.0,
        ) {
            let k = key(Duration::from_secs(lifetime));
            let now = if offset >= 0 {
                t0() + Duration::from_secs(offset as u64)
            } else {
                t0() - Duration::from_secs(offset.unsigned_abs())
            };
            let next = next_refresh(now, k, &policy, JitterSample::new(jitter));
            // Never in the past.
            prop_assert!(next >= now);
            // Never later than the renewal deadline while that is ahead.
            let deadline = renew_deadline(k, &policy);
            if now >= k.issued && deadline > now {
                prop_assert!(next <= deadline);
            }
            // Never past the expiry when the expiry is ahead (and the clock sane).
            if now >= k.issued && k.expiry > now {
                prop_assert!(next <= k.expiry);
            }
            // Never a sleep longer than the key's whole lifetime.
            prop_assert!(sleep_until(now, next) <= k.lifetime());
            // The guard holds for every key long enough for it.
            if !policy.is_capped(k.lifetime()) && now <= k.issued + MIN_REFRESH_DELAY {
                let left = k.expiry.duration_since(next.max(k.issued)).unwrap_or_default();
                prop_assert!(left >= policy.min_remaining() || now < k.issued);
            }
        }

        #[test]
        fn retries_are_bounded(
            policy in policies(),
            lifetime in 0u64..=43_200,
            elapsed in 0u64..=100_000,
            failures in 1u32..200,
            jitter in -1.0f64..=1.0,
            held in any::<bool>(),
        ) {
            let k = key(Duration::from_secs(lifetime));
            let now = t0() + Duration::from_secs(elapsed);
            let b = Backoff::default();
            let held = held.then_some(k);
            let at = retry_at(now, failures, held, &policy, &b, JitterSample::new(jitter));
            let delay = sleep_until(now, at);
            prop_assert!(at > now, "a retry is never immediate");
            prop_assert!(delay <= DEFAULT_BACKOFF_MAX);
            match held.map(|h| renew_deadline(h, &policy)) {
                Some(deadline) if deadline > now => prop_assert!(at <= deadline),
                _ => prop_assert!((MIN_OVERDUE_RETRY..=DEFAULT_OVERDUE_RETRY_MAX).contains(&delay)),
            }
        }
    }

    #[test]
    fn a_key_signed_more_than_5m_ahead_is_signed_in_the_future() {
        let t = |secs: u64| t0() + Duration::from_secs(secs);
        let held = Validity::new(t(1000), t(4600));
        assert_eq!(held.signed_in_future(t(1000)), None);
        assert_eq!(held.signed_in_future(t(5000)), None);
        // Exactly 5 minutes ahead is clock skew; a second more is not.
        assert_eq!(held.signed_in_future(t(700)), None);
        assert_eq!(held.signed_in_future(t(699)), Some(301 * S));
    }
}
