//! The secret itself: a short-term Amazon Bedrock API key and the facts about it.
//!
//! [`ApiKey`] is the only type that holds the key value. Its `Debug` and `Display`
//! print a short fingerprint (a truncated SHA-256), never the value, and the memory is
//! zeroized on drop, so a key cannot leak through a log line, an error or a panic
//! message by accident. Code that really must hand the value out (a sink, `mint`'s
//! stdout) calls [`ApiKey::expose`], which is easy to grep for.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::clock::duration;

pub mod decode;
pub mod format;
pub mod mint;

/// Every key starts with this; the rest is base64 of a presigned URL.
pub const KEY_PREFIX: &str = "bedrock-api-key-";

/// A requested key lifetime: 1 s … 12 h, whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lifetime(Duration);

/// Why a lifetime was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    #[error("lifetime {0} is shorter than the minimum of 1s")]
    TooShort(String),
    #[error("lifetime {0} is longer than the maximum of 12h that Amazon Bedrock accepts")]
    TooLong(String),
    #[error("lifetime {0} is not a whole number of seconds")]
    Fractional(String),
    #[error(transparent)]
    Parse(#[from] duration::ParseDurationError),
}

impl Lifetime {
    /// The longest lifetime Amazon Bedrock accepts for a short-term key
    /// (`X-Amz-Expires`).
    pub const MAX: Lifetime = Lifetime(Duration::from_secs(12 * 60 * 60));

    pub fn new(duration: Duration) -> Result<Self, LifetimeError> {
        Self::checked(duration, || duration::format(duration))
    }

    /// `duration` if Bedrock accepts it; errors show `shown()`: what the user wrote
    /// when there is such a text (`43200001ms`, which [`duration::format`] would
    /// round to a misleading `12h`).
    fn checked(duration: Duration, shown: impl FnOnce() -> String) -> Result<Self, LifetimeError> {
        let shown = shown();
        if duration < Duration::from_secs(1) {
            Err(LifetimeError::TooShort(shown))
        } else if duration > Self::MAX.0 {
            Err(LifetimeError::TooLong(shown))
        } else if duration.subsec_nanos() != 0 {
            Err(LifetimeError::Fractional(shown))
        } else {
            Ok(Self(duration))
        }
    }

    pub fn from_secs(secs: u64) -> Result<Self, LifetimeError> {
        Self::new(Duration::from_secs(secs))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Lifetime {
    type Err = LifetimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::checked(duration::parse(s)?, || s.trim().to_owned())
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&duration::format(self.0))
    }
}

/// An AWS region name as it appears in a SigV4 credential scope, e.g. `us-west-2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

/// Why a region name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a region name; expected lowercase letters, digits and dashes, e.g. us-east-1"
)]
pub struct RegionError(String);

impl Region {
    pub fn new(name: &str) -> Result<Self, RegionError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(RegionError(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Region {
    type Err = RegionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key names appear in logs, metric labels, keyring accounts and possibly file
/// names: short and plain.
pub const MAX_KEY_NAME_LEN: usize = 64;

/// A key name: 1–64 of `A–Z a–z 0–9 . _ -`, starting with a letter or digit.
///
/// Safe as a log field, a Prometheus label value, a keyring account and a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    pub fn new(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= MAX_KEY_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not a key name: use 1 to {MAX_KEY_NAME_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit (it appears in logs, metrics and the keyring account)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A short-term Amazon Bedrock API key (`bedrock-api-key-…`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// Wraps a key value. The value is not validated here; [`crate::key::decode`] does that.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The key value, for the few places that must deliver it (sinks, `mint`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible name for this key, safe to log.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.expose())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fingerprint())
    }
}

/// The first 8 bytes of SHA-256 over the key, hex: enough to tell keys apart in logs,
/// far too little to help anyone forge or recover one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    pub fn of(value: &str) -> Self {
        let digest = Sha256::digest(value.as_bytes());
        let mut short = [0u8; 8];
        short.copy_from_slice(&digest[..8]);
        Self(short)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What is known about a key besides its value. Nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// The AWS region the key is scoped to.
    pub region: String,
    /// The access key id of the credentials that signed it.
    pub access_key_id: String,
    /// The signing instant (`X-Amz-Date`), whole seconds.
    pub issued_at: SystemTime,
    /// `issued_at + X-Amz-Expires`: the key's true expiry.
    pub expires_at: SystemTime,
    /// Whether a session token is embedded (temporary credentials).
    pub has_session_token: bool,
}

impl KeyMeta {
    /// The lifetime the key was signed with (`X-Amz-Expires`).
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default()
    }

    /// Time left at `now`; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// A freshly minted key with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedKey {
    pub key: ApiKey,
    pub meta: KeyMeta,
    /// The signing credentials' own expiry, when they have one.
    pub credentials_expiry: Option<SystemTime>,
    /// The lifetime that was asked for; `meta.lifetime()` may be shorter when the
    /// credentials expire first.
    pub requested_lifetime: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let key = ApiKey::new("bedrock-api-key-c2VjcmV0".to_owned());
        for shown in [format!("{key:?}"), format!("{key}"), format!("{key:#?}")] {
            assert!(!shown.contains("c2VjcmV0"), "{shown}");
            assert!(shown.contains("sha256:"), "{shown}");
        }
    }

    #[test]
    fn fingerprint_is_stable_and_distinguishes_keys() {
        let a = Fingerprint::of("a");
        assert_eq!(a, Fingerprint::of("a"));
        assert_ne!(a, Fingerprint::of("b"));
        assert_eq!(a.to_string().len(), "sha256:".len() + 16);
    }
}
