//! systemd readiness protocol (`sd_notify`): `READY=1`, `STATUS=`, `WATCHDOG=1`,
//! `RELOADING=1`, `STOPPING=1`.
//!
//! - `READY=1` is sent once every key has been delivered once (the [`StatusBoard`]
//!   says so), never before: units ordered `After=bedrock-keyd.service` start with a
//!   key in place. Keys that keep failing keep the unit "activating" until systemd's
//!   `TimeoutStartSec=` decides.
//! - `STATUS=` follows the board: "3 keys fresh; next refresh …", "minting the
//!   first key: …", "key x failing: …". Only changes are sent.
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` (systemd's own recommendation), from a
//!   task on the daemon's runtime: a wedged runtime stops pinging and systemd
//!   restarts the service.
//! - Around a reload: `RELOADING=1` with `MONOTONIC_USEC=` (systemd ≥ 253 wants it to
//!   tell this reload from an older one; 252 ignores it), then `READY=1` once the new
//!   config runs (or was rejected and the old one kept). Readiness after a reload means
//!   "the daemon is serving its config"; per-key health is `STATUS=` and `/readyz`.
//! - `STOPPING=1` when SIGTERM/SIGINT arrives.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset. Datagrams are sent by a thread
//! of their own (see [`Systemd`]); a send that fails is logged at debug and otherwise
//! ignored: losing a status line must never stop the daemon.
//! Messages never carry a key: only names, counts, instants and error causes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::daemon::{KeyStatus, StatusBoard};
use crate::time::rfc3339;

/// systemd recommends pinging at half the watchdog interval, so one late ping does
/// not trip it.
const WATCHDOG_FRACTION: u32 = 2;
/// A status line longer than this is cut: systemd shows it in one line of
/// `systemctl status`, and an error chain can be long.
const MAX_STATUS_CHARS: usize = 200;

/// The systemd notifier of one `run`.
///
/// Datagrams go out from a thread of their own: a send to a unix datagram socket
/// blocks while the receiver's queue is full (10 datagrams by default), and a busy or
/// wedged service manager must never stall the daemon's single-threaded runtime. The
/// thread takes messages from a bounded queue; when that is full too, a message is
/// dropped (and logged at debug), never waited for.
pub struct Systemd {
    link: Option<Link>,
    /// Signalled by the sender thread once its queue is closed and drained.
    drained: Option<std::sync::mpsc::Receiver<()>>,
}

/// A handle that queues messages for the sender thread.
#[derive(Clone)]
struct Link(std::sync::mpsc::SyncSender<Vec<String>>);

/// Messages waiting for the sender thread; a stalled manager loses the newest ones.
const QUEUE: usize = 64;
/// How long `finish` waits for queued messages (`STOPPING=1`) to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

impl Link {
    fn send(&self, states: &[NotifyState<'_>]) {
        let lines = states.iter().map(ToString::to_string).collect();
        if self.0.try_send(lines).is_err() {
            tracing::debug!("systemd notification dropped: the service manager is not reading");
        }
    }
}

impl Systemd {
    /// Enabled when `NOTIFY_SOCKET` is set (systemd `Type=notify` sets it); starts the
    /// sender thread then.
    pub fn from_env() -> Self {
        let disabled = Self {
            link: None,
            drained: None,
        };
        if std::env::var_os("NOTIFY_SOCKET").is_none_or(|v| v.is_empty()) {
            return disabled;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<String>>(QUEUE);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                for lines in rx {
                    let states: Vec<NotifyState<'_>> =
                        lines.iter().map(|l| NotifyState::Custom(l)).collect();
                    if let Err(e) = sd_notify::notify(&states) {
                        tracing::debug!(error = %e, "cannot send a systemd notification");
                    }
                }
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => Self {
                link: Some(Link(tx)),
                drained: Some(done_rx),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the systemd notifier thread; not notifying systemd");
                disabled
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.link.is_some()
    }

    /// Starts the task that sends `READY=1` after the first complete delivery, keeps
    /// `STATUS=` current and pings the watchdog. `None` without `NOTIFY_SOCKET`.
    /// Abort (and await) the handle before [`Systemd::finish`].
    pub fn spawn(&self, board: Arc<StatusBoard>, clock: Arc<dyn Clock>) -> Option<JoinHandle<()>> {
        let link = self.link.clone()?;
        let watchdog = watchdog_interval();
        if let Some(every) = watchdog {
            tracing::debug!(
                every_ms = every.as_millis() as u64,
                "systemd watchdog enabled"
            );
        }
        Some(tokio::spawn(supervise(link, board, clock, watchdog)))
    }

    /// `RELOADING=1` before a config reload.
    pub fn reloading(&self) {
        let Some(link) = &self.link else { return };
        let mut states = vec![NotifyState::Reloading];
        // MONOTONIC_USEC comes from CLOCK_MONOTONIC; without it the reload still works
        // on systemd 252 and is merely less precise on ≥ 253.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        states.push(NotifyState::Status("reloading the configuration"));
        link.send(&states);
    }

    /// `READY=1` after a reload was applied or rejected.
    pub fn reloaded(&self, board: &StatusBoard, now: SystemTime) {
        let Some(link) = &self.link else { return };
        let line = status_line(&board.snapshot(), now);
        link.send(&[NotifyState::Ready, NotifyState::Status(&line)]);
    }

    /// `STOPPING=1` when shutdown begins.
    pub fn stopping(&self) {
        if let Some(link) = &self.link {
            link.send(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping: finishing any write in progress"),
            ]);
        }
    }

    /// Lets queued messages (`STOPPING=1`) go out before the process exits, waiting at
    /// most `FLUSH_TIMEOUT`. Call after the [`Systemd::spawn`] task has ended, since
    /// it holds a handle to the queue.
    pub fn finish(mut self) {
        self.link = None;
        if let Some(drained) = self.drained.take() {
            let _ = drained.recv_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// Half of `WATCHDOG_USEC` when systemd enabled the watchdog for this process.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / WATCHDOG_FRACTION)
}

async fn supervise(
    link: Link,
    board: Arc<StatusBoard>,
    clock: Arc<dyn Clock>,
    watchdog: Option<Duration>,
) {
    let mut changes = board.subscribe();
    let mut ready = false;
    let mut last_status = String::new();
    let mut ticker = watchdog.map(|every| {
        let mut t = tokio::time::interval(every);
        // After a stall, one ping is enough; a burst would hide nothing.
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        if !ready && board.all_delivered() {
            ready = true;
            last_status = status_line(&board.snapshot(), clock.now());
            tracing::info!("every key delivered once: telling systemd READY=1");
            link.send(&[NotifyState::Ready, NotifyState::Status(&last_status)]);
        } else {
            let line = status_line(&board.snapshot(), clock.now());
            if line != last_status {
                link.send(&[NotifyState::Status(&line)]);
                last_status = line;
            }
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    // Only if the board's sender were dropped; this task holds the
                    // board, so in practice it runs until `run` aborts it.
                    return;
                }
            }
            () = tick(ticker.as_mut()) => link.send(&[NotifyState::Watchdog]),
        }
    }
}

async fn tick(ticker: Option<&mut tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What `systemctl status` shows: a failing key first, else keys still waiting for
/// their first delivery, else how many are fresh and when the next refresh is due.
pub fn status_line(keys: &BTreeMap<String, KeyStatus>, now: SystemTime) -> String {
    let line = if keys.is_empty() {
        "no keys".to_owned()
    } else if let Some((name, status)) = keys.iter().find(|(_, s)| s.last_error.is_some()) {
        let cause = status.last_error.as_deref().unwrap_or_default();
        let retry = status
            .next_attempt
            .map(|t| format!("; retry at {}", rfc3339(t)))
            .unwrap_or_default();
        let others = keys.len() - 1;
        let more = if others > 0 {
            let ready = keys
                .iter()
                .filter(|(n, s)| *n != name && s.is_ready(now))
                .count();
            format!(" ({ready} of {others} other keys fresh)")
        } else {
            String::new()
        };
        format!("key {name} failing{more}{retry}: {cause}")
    } else {
        let waiting: Vec<&str> = keys
            .iter()
            .filter(|(_, s)| s.held.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !waiting.is_empty() {
            format!("minting the first key: {}", waiting.join(", "))
        } else {
            let fresh = keys.values().filter(|s| s.is_ready(now)).count();
            let next = keys.values().filter_map(|s| s.next_attempt).min();
            let plural = if keys.len() == 1 { "key" } else { "keys" };
            let mut line = if fresh == keys.len() {
                format!("{fresh} {plural} fresh")
            } else {
                format!("{fresh} of {} {plural} fresh", keys.len())
            };
            if let Some(next) = next {
                line.push_str(&format!("; next refresh {}", rfc3339(next)));
            }
            line
        }
    };
    truncate(line)
}

fn truncate(mut line: String) -> String {
    if line.chars().count() > MAX_STATUS_CHARS {
        line = line.chars().take(MAX_STATUS_CHARS - 1).collect();
        line.push('…');
    }
    // One line: systemd would cut at a newline anyway, and a datagram field must not
    // contain one (it separates fields).
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{RefreshPolicy, Validity};
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_680_000 + secs)
    }

    fn board() -> StatusBoard {
        let b = StatusBoard::new();
        b.register("alpha", RefreshPolicy::default());
        b.register("beta", RefreshPolicy::default());
        b
    }

    #[test]
    fn status_lines_say_what_the_daemon_does() {
        let b = board();
        assert_eq!(
            status_line(&b.snapshot(), t(0)),
            "minting the first key: alpha, beta"
        );
        for name in ["alpha", "beta"] {
            b.update(name, |s| {
                s.held = Some(Validity::new(t(0), t(3600)));
                s.next_attempt = Some(t(1800));
            });
        }
        assert_eq!(
            status_line(&b.snapshot(), t(1)),
            "2 keys fresh; next refresh 2026-11-26T08:30:00Z"
        );
        b.update("beta", |s| {
            s.last_error = Some("credentials: access denied\nsecond line".into());
            s.next_attempt = Some(t(1830));
        });
        assert_eq!(
            status_line(&b.snapshot(), t(1)),
            "key beta failing (1 of 1 other keys fresh); retry at 2026-11-26T08:30:30Z: credentials: access denied second line"
        );
        b.update("beta", |s| s.last_error = Some("x".repeat(500)));
        assert_eq!(
            status_line(&b.snapshot(), t(1)).chars().count(),
            MAX_STATUS_CHARS
        );
    }

    #[test]
    fn no_op_without_notify_socket() {
        let s = Systemd {
            link: None,
            drained: None,
        };
        assert!(!s.enabled());
        let b = Arc::new(board());
        assert!(
            s.spawn(b.clone(), Arc::new(crate::clock::FakeClock::new(t(0))))
                .is_none()
        );
        s.reloading();
        s.reloaded(&b, t(0));
        s.stopping();
        s.finish();
    }
}
