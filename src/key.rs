//! The secret itself: a short-term Amazon Bedrock API key and the facts about it.
//!
//! [`ApiKey`] is the only type that holds the key value. Its `Debug` and `Display`
//! print a short fingerprint (a truncated SHA-256), never the value, and the memory is
//! zeroized on drop, so a key cannot leak through a log line, an error or a panic
//! message by accident. Code that really must hand the value out (a sink, `mint`'s
//! stdout) calls [`ApiKey::expose`], which is easy to grep for.

use std::fmt;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Every key starts with this; the rest is base64 of a presigned URL.
pub const KEY_PREFIX: &str = "bedrock-api-key-";

/// The longest lifetime Amazon Bedrock accepts for a short-term key (`X-Amz-Expires`).
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// A short-term Amazon Bedrock API key (`bedrock-api-key-…`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// Wraps a key value. The value is not validated here; [`crate::inspect`] does that.
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
