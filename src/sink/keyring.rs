//! The keyring sink: the key as a generic password in an OS keyring.
//!
//! Backends, through the keyring-rs ecosystem (`keyring-core` plus one store crate
//! each, which is how keyring 4 recommends applications that choose their stores to
//! use it):
//! - Linux/BSD Secret Service (gnome-keyring, KWallet, KeePassXC) via
//!   `zbus-secret-service-keyring-store`: pure Rust D-Bus (zbus), so no libdbus and a
//!   static musl build works. Items carry the attributes `service` and `username`;
//! - the Linux kernel keyring via `linux-keyutils-keyring-store`: a `user` key named
//!   `keyring:ACCOUNT@SERVICE` in the session keyring, also linked into the user's
//!   persistent keyring (which outlives the session for a few days) when the kernel
//!   allows; good for headless hosts and systemd `KeyringMode=`;
//! - the macOS login Keychain via `apple-native-keyring-store`.
//!
//! A store is opened for every operation: a keyring daemon that restarted between two
//! refreshes is simply reconnected to. Keyring errors are turned into messages that
//! never carry secret bytes (keyring-core's `BadEncoding` holds the stored secret).

use std::io;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use zeroize::Zeroizing;

use super::{KeyringBackend, KeyringSpec, Sink, SinkError, WriteOutcome};
use crate::key::{ApiKey, KeyMeta};

/// A keyring sink built from its spec.
#[derive(Debug)]
pub struct KeyringSink {
    spec: KeyringSpec,
}

impl KeyringSink {
    pub fn new(spec: &KeyringSpec) -> Self {
        Self { spec: spec.clone() }
    }

    fn err(&self, action: &str, source: io::Error) -> SinkError {
        SinkError::new(self.describe(), action, source)
    }

    fn entry(&self) -> Result<Entry, SinkError> {
        let backend = self.spec.backend.resolve();
        let store = open_store(backend).map_err(|e| {
            self.err(
                &format!("opening the {} keyring", backend.name()),
                safe_error(e),
            )
        })?;
        Entry::new_in_store(&store, &self.spec.service, &self.spec.account)
            .map_err(|e| self.err("addressing the keyring entry", safe_error(e)))
    }

    fn get(&self, entry: &Entry) -> Result<Option<Zeroizing<String>>, keyring_core::Error> {
        match entry.get_password() {
            Ok(p) => Ok(Some(Zeroizing::new(p))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Sink for KeyringSink {
    fn describe(&self) -> String {
        format!(
            "keyring {}:{} ({})",
            self.spec.service,
            self.spec.account,
            self.spec.backend.resolve().name()
        )
    }

    fn write(&self, key: &ApiKey, _meta: &KeyMeta) -> Result<WriteOutcome, SinkError> {
        let entry = self.entry()?;
        // A failed read is not fatal: the write below says what is really wrong.
        if let Ok(Some(current)) = self.get(&entry)
            && current.as_str() == key.expose()
        {
            return Ok(WriteOutcome::Unchanged);
        }
        entry
            .set_password(key.expose())
            .map_err(|e| self.err("storing the key", safe_error(e)))?;
        // Some stores accept a write they cannot serve back (a keyutils key that was
        // not linked anywhere readable): check, so "written" means readable.
        match self.get(&entry) {
            Ok(Some(stored)) if stored.as_str() == key.expose() => Ok(WriteOutcome::Written),
            Ok(_) => Err(self.err(
                "reading the key back after storing it",
                io::Error::other("the keyring does not return the key just stored"),
            )),
            Err(e) => Err(self.err("reading the key back after storing it", safe_error(e))),
        }
    }

    fn read(&self) -> Result<Option<ApiKey>, SinkError> {
        let entry = self.entry()?;
        self.get(&entry)
            .map(|p| p.map(|p| ApiKey::new(p.as_str().to_owned())))
            .map_err(|e| self.err("reading the key", safe_error(e)))
    }
}

/// Opens the store for `backend` (already resolved from `Default`).
fn open_store(backend: KeyringBackend) -> keyring_core::Result<Arc<CredentialStore>> {
    match backend {
        #[cfg(all(
            unix,
            not(any(target_os = "macos", target_os = "ios", target_os = "android"))
        ))]
        KeyringBackend::SecretService => {
            Ok(zbus_secret_service_keyring_store::Store::new()? as Arc<CredentialStore>)
        }
        #[cfg(target_os = "linux")]
        KeyringBackend::Keyutils => {
            Ok(linux_keyutils_keyring_store::Store::new()? as Arc<CredentialStore>)
        }
        #[cfg(target_os = "macos")]
        KeyringBackend::Keychain => {
            Ok(apple_native_keyring_store::keychain::Store::new()? as Arc<CredentialStore>)
        }
        other => Err(keyring_core::Error::NotSupportedByStore(format!(
            "the {} backend is not available on this platform",
            other.name()
        ))),
    }
}

/// A keyring error as an `io::Error` whose message holds no secret bytes.
fn safe_error(err: keyring_core::Error) -> io::Error {
    use keyring_core::Error as E;
    let kind = match &err {
        E::NoStorageAccess(_) => io::ErrorKind::PermissionDenied,
        E::NoEntry => io::ErrorKind::NotFound,
        E::Invalid(..) | E::TooLong(..) => io::ErrorKind::InvalidInput,
        E::NotSupportedByStore(_) | E::NoDefaultStore => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    let message = match &err {
        // Their payloads are the stored secret: say what happened, not what was there.
        E::BadEncoding(_) => "the stored value is not UTF-8 text".to_owned(),
        E::BadDataFormat(..) => "the stored value is malformed".to_owned(),
        E::Ambiguous(items) => format!(
            "{} keyring items match this service and account; remove the extra ones",
            items.len()
        ),
        _ => crate::error::error_chain(&err),
    };
    io::Error::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_errors_never_carry_the_stored_secret() {
        let secret = b"bedrock-api-key-c2VjcmV0\xff".to_vec();
        let shown = safe_error(keyring_core::Error::BadEncoding(secret));
        assert!(!format!("{shown} {shown:?}").contains("c2VjcmV0"));
        let shown = safe_error(keyring_core::Error::BadDataFormat(
            b"c2VjcmV0".to_vec(),
            "bad".into(),
        ));
        assert!(!format!("{shown} {shown:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn backends_parse_and_resolve() {
        assert_eq!("keyutils".parse(), Ok(KeyringBackend::Keyutils));
        assert!("wallet".parse::<KeyringBackend>().is_err());
        assert_ne!(KeyringBackend::Default.resolve(), KeyringBackend::Default);
        let spec = KeyringSpec::new("svc", "acct");
        assert_eq!(spec.backend, KeyringBackend::Default);
        assert_eq!(
            crate::sink::SinkSpec::Keyring(spec).to_string(),
            "keyring svc:acct"
        );
    }
}
