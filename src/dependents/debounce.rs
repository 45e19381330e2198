//! [`Dependents`]: the daemon's [`OnDelivered`] hook that tells every dependent of a
//! key, debounced, and counts the results on the status board.
//!
//! **Debounce.** The first delivery of a key opens a window of [`DEBOUNCE`]; when it
//! closes, the key's notifications are sent once, for the latest key delivered by
//! then. Deliveries during the window (a SIGHUP storm, a restore plus a refresh) are
//! folded into that one notification; deliveries while notifications are being sent
//! open the next window. So a burst gives one notification, no delivery is left
//! unannounced, and a notification is never sent before every sink held the key it
//! announces (the hook runs only after a complete delivery). A newer key may be
//! mid-write when an older one is announced: its own notification follows.
//!
//! The key task is never held up: the hook records the delivery and returns; a
//! per-key background task sends. Notifications still pending when the process
//! exits are dropped (the dependent already has the previous key's announcement).
//! Only the key's public facts are kept here (name, region, expiry), never the key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument as _;

use super::NotifySpec;
use super::send::{self, Delivery, Outcome};
use crate::config::KeyConfig;
use crate::daemon::{OnDelivered, StatusBoard};
use crate::key::MintedKey;

/// Long enough to fold a SIGHUP storm or a restore-plus-refresh into one
/// notification; short against any key lifetime, so dependents are barely delayed.
pub const DEBOUNCE: Duration = Duration::from_secs(1);

/// Tells dependents about new keys; see the module doc.
#[derive(Clone)]
pub struct Dependents {
    inner: Arc<Inner>,
}

struct Inner {
    status: Arc<StatusBoard>,
    window: Duration,
    keys: Mutex<HashMap<String, Slot>>,
}

/// One key's notification state.
#[derive(Default)]
struct Slot {
    /// The latest delivery not announced yet, with the specs current at that time.
    latest: Option<(Vec<NotifySpec>, Delivery)>,
    /// Whether a sender task is running for this key.
    sending: bool,
}

/// How one round of notifications went, for `once`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: u64,
    pub err: u64,
    pub pending: u64,
}

impl Dependents {
    /// Notifications counted on `status`, debounced by [`DEBOUNCE`].
    pub fn new(status: Arc<StatusBoard>) -> Self {
        Self::with_window(status, DEBOUNCE)
    }

    /// With another debounce window (tests).
    pub fn with_window(status: Arc<StatusBoard>, window: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                status,
                window,
                keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends every notification of `key` now, without debouncing (`once`).
    pub async fn notify_now(&self, key: &KeyConfig, minted: &MintedKey) -> Tally {
        self.inner
            .send_all(&key.notify, &delivery(key, minted))
            .await
    }
}

fn delivery(key: &KeyConfig, minted: &MintedKey) -> Delivery {
    Delivery {
        key_name: key.name.to_string(),
        region: minted.meta.region.clone(),
        expires_at: minted.meta.expires_at,
    }
}

impl Inner {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends each spec once and counts the results on the board.
    async fn send_all(&self, specs: &[NotifySpec], delivery: &Delivery) -> Tally {
        let mut tally = Tally::default();
        for spec in specs {
            match send::send(spec, delivery).await {
                Ok(Outcome::Sent) => tally.ok += 1,
                Ok(Outcome::Pending(why)) => {
                    tally.pending += 1;
                    tracing::debug!(dependent = %spec, "{why}; nobody to notify yet");
                }
                Err(e) => {
                    tally.err += 1;
                    tracing::error!(
                        dependent = %spec,
                        error = %crate::error::error_chain(&e),
                        "notifying a dependent failed"
                    );
                }
            }
        }
        if tally.ok + tally.err > 0 {
            self.status.update(&delivery.key_name, |s| {
                s.notify_ok += tally.ok;
                s.notify_err += tally.err;
            });
        }
        tally
    }

    /// The per-key sender: wait a window, announce the latest delivery, repeat while
    /// deliveries keep coming.
    async fn sender(self: Arc<Self>, name: String) {
        loop {
            tokio::time::sleep(self.window).await;
            let next = {
                let mut slots = self.slots();
                let slot = slots.entry(name.clone()).or_default();
                match slot.latest.take() {
                    Some(next) => next,
                    None => {
                        slot.sending = false;
                        return;
                    }
                }
            };
            let (specs, delivery) = next;
            self.send_all(&specs, &delivery).await;
        }
    }
}

impl OnDelivered for Dependents {
    async fn delivered(&self, key: &KeyConfig, minted: &MintedKey) {
        if key.notify.is_empty() {
            return;
        }
        let name = key.name.to_string();
        let start = {
            let mut slots = self.inner.slots();
            let slot = slots.entry(name.clone()).or_default();
            slot.latest = Some((key.notify.clone(), delivery(key, minted)));
            !std::mem::replace(&mut slot.sending, true)
        };
        if start {
            let span = tracing::info_span!("notify", key = %name);
            tokio::spawn(self.inner.clone().sender(name).instrument(span));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::SourceSpec;
    use crate::key::KeyName;
    use crate::key::Lifetime;
    use crate::key::{ApiKey, KeyMeta};
    use crate::schedule::RefreshPolicy;
    use crate::sink::{FileAccess, FileFormat, FileSpec, SinkSpec};
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    fn key(name: &str, notify: Vec<NotifySpec>) -> KeyConfig {
        let sink = SinkSpec::File(FileSpec {
            path: "/nonexistent/k.key".into(),
            format: FileFormat::Raw,
            access: FileAccess::default(),
        });
        KeyConfig::new(
            KeyName::new(name).unwrap(),
            SourceSpec::default(),
            Lifetime::MAX,
            RefreshPolicy::default(),
            vec![sink],
            notify,
        )
        .unwrap()
    }

    fn minted(expires_in: u64) -> MintedKey {
        let now = SystemTime::now();
        MintedKey {
            key: ApiKey::new("bedrock-api-key-dGVzdA==".to_owned()),
            meta: KeyMeta {
                region: "us-east-1".to_owned(),
                access_key_id: "AKIAIOSFODNN7EXAMPLE".to_owned(),
                issued_at: now,
                expires_at: now + Duration::from_secs(expires_in),
                has_session_token: false,
            },
            credentials_expiry: None,
            requested_lifetime: Duration::from_secs(expires_in),
        }
    }

    fn board(name: &str) -> Arc<StatusBoard> {
        let board = Arc::new(StatusBoard::new());
        board.register(name, RefreshPolicy::default());
        board
    }

    fn pid_file(path: &Path) -> NotifySpec {
        NotifySpec::PidFile {
            path: path.to_owned(),
            signal: super::super::Signal::Usr2,
        }
    }

    #[tokio::test]
    async fn bad_pid_files_count_as_errors_and_missing_ones_as_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut specs = Vec::new();
        for (i, content) in ["", "abc", "0", "1", "-1"].iter().enumerate() {
            let path = dir.path().join(format!("{i}.pid"));
            std::fs::write(&path, content).unwrap();
            specs.push(pid_file(&path));
        }
        specs.push(pid_file(&dir.path().join("missing.pid")));
        let status = board("k");
        let deps = Dependents::new(status.clone());
        let tally = deps.notify_now(&key("k", specs), &minted(3600)).await;
        assert_eq!(
            tally,
            Tally {
                ok: 0,
                err: 5,
                pending: 1
            }
        );
        let s = &status.snapshot()["k"];
        assert_eq!((s.notify_ok, s.notify_err), (0, 5));
    }

    #[tokio::test]
    async fn a_burst_gives_one_notification_of_the_latest_key() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // A command that records the expiry it was told about.
        let spec = NotifySpec::Command {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!("echo \"$BEDROCK_KEYD_EXPIRES_AT\" >> {}", log.display()),
            ],
            timeout: Duration::from_secs(10),
        };
        let k = key("k", vec![spec]);
        let status = board("k");
        let deps = Dependents::with_window(status.clone(), Duration::from_millis(300));
        let burst: Vec<MintedKey> = [100, 200, 300, 400].map(minted).into();
        for m in &burst {
            deps.delivered(&k, m).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = crate::clock::time::rfc3339(burst[3].meta.expires_at);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(lines.trim(), last, "one notification, of the latest key");
        assert_eq!(status.snapshot()["k"].notify_ok, 1);

        // A later delivery is announced again.
        deps.delivered(&k, &minted(500)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        assert_eq!(status.snapshot()["k"].notify_ok, 2);
    }
}
