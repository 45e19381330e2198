//! The key each proxy forwards with: published by the daemon after every sink holds
//! a new key, read by the proxy once per request.
//!
//! One `tokio::sync::watch` per key name: the key task writes, any number of proxy
//! connections read without waiting on each other. What is published is ready to
//! use: the `Authorization` header value is built once per key (marked sensitive so
//! hyper never logs or HPACK-indexes it), so the hot path is a read lock and an `Arc`
//! clone. A request takes the key current when it starts and keeps it to the end, so
//! a rotation never cuts a stream; the next request gets the new key at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::HeaderValue;
use tokio::sync::watch;

use crate::config::KeyConfig;
use crate::daemon::OnDelivered;
use crate::key::{Fingerprint, MintedKey};

/// A key as the proxy uses it.
pub struct CurrentKey {
    /// `Bearer bedrock-api-key-…`, sensitive.
    pub bearer: HeaderValue,
    pub fingerprint: Fingerprint,
    pub expires_at: SystemTime,
    pub region: String,
    /// Bedrock runtime in the key's region (the default upstream), parsed once here
    /// rather than per request; `None` if the region makes no valid host name.
    pub region_upstream: Option<super::Upstream>,
}

impl CurrentKey {
    fn new(minted: &MintedKey) -> Option<Self> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", minted.key.expose())).ok()?;
        bearer.set_sensitive(true);
        Some(Self {
            bearer,
            fingerprint: minted.key.fingerprint(),
            expires_at: minted.meta.expires_at,
            region: minted.meta.region.clone(),
            region_upstream: super::Upstream::for_region(&minted.meta.region).ok(),
        })
    }
}

/// What a proxy watches: nothing until the first delivery.
pub type KeyWatch = watch::Receiver<Option<Arc<CurrentKey>>>;

/// The current key of every key that has a proxy.
#[derive(Default)]
pub struct CurrentKeys {
    keys: Mutex<HashMap<String, watch::Sender<Option<Arc<CurrentKey>>>>>,
}

impl CurrentKeys {
    /// The watch of `name`, created on first use (by the proxy, before its key's
    /// first delivery).
    pub fn watch(&self, name: &str) -> KeyWatch {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.entry(name.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Publishes `minted` as `name`'s current key, if a proxy serves that key (keys
    /// without one are not kept here: one copy less of the secret in memory).
    pub fn publish(&self, name: &str, minted: &MintedKey) {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = keys.get(name) {
            // A key that cannot be a header value cannot be a Bearer token either;
            // minting never produces one (base64 and a fixed prefix).
            if let Some(current) = CurrentKey::new(minted) {
                tx.send_replace(Some(Arc::new(current)));
            }
        }
    }
}

/// An [`OnDelivered`] that publishes each delivered key to the proxies, then tells
/// the dependents (`inner`).
pub struct Publish<D> {
    pub keys: Arc<CurrentKeys>,
    pub inner: D,
}

impl<D: OnDelivered> OnDelivered for Publish<D> {
    async fn delivered(&self, key: &KeyConfig, minted: &MintedKey) {
        self.keys.publish(key.name.as_str(), minted);
        self.inner.delivered(key, minted).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{ApiKey, KeyMeta};
    use std::time::Duration;

    fn minted(value: &str) -> MintedKey {
        let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        MintedKey {
            key: ApiKey::new(value.to_owned()),
            meta: KeyMeta {
                region: "us-west-2".to_owned(),
                access_key_id: "AKIDEXAMPLE".to_owned(),
                issued_at,
                expires_at: issued_at + Duration::from_secs(60),
                has_session_token: false,
            },
            credentials_expiry: None,
            requested_lifetime: Duration::from_secs(60),
        }
    }

    #[test]
    fn only_watched_keys_are_kept_and_the_latest_wins() {
        let keys = CurrentKeys::default();
        keys.publish("other", &minted("bedrock-api-key-b3RoZXI="));
        assert!(keys.keys.lock().unwrap().is_empty(), "no proxy, no copy");

        let watch = keys.watch("k");
        assert!(watch.borrow().is_none(), "503 until the first delivery");
        keys.publish("k", &minted("bedrock-api-key-Zmlyc3Q="));
        let first = watch.borrow().clone().unwrap();
        keys.publish("k", &minted("bedrock-api-key-c2Vjb25k"));
        let second = watch.borrow().clone().unwrap();
        assert_ne!(first.fingerprint, second.fingerprint);
        assert_eq!(second.bearer, "Bearer bedrock-api-key-c2Vjb25k");
        assert!(second.bearer.is_sensitive());
        assert_eq!(
            second.region_upstream.as_ref().unwrap().to_string(),
            "https://bedrock-runtime.us-west-2.amazonaws.com"
        );
        // A request that took the first key keeps it.
        assert_eq!(first.bearer, "Bearer bedrock-api-key-Zmlyc3Q=");
    }
}
