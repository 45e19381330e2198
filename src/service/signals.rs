//! The signals `run` and `exec` answer to (SIGTERM, SIGINT, SIGHUP), set up in one
//! place.
//!
//! [`Signals::install`] registers the handlers; from then on the process no longer
//! dies of these signals, so it is called before anything that must be cleaned up
//! starts. `run` turns them into a shutdown future and a stream of reload requests
//! ([`for_serve`]), which is what [`super::serve`] takes, so tests can drive `serve`
//! with triggers of their own; `exec` forwards them to its command.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

/// One of the signals we handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Term,
    Int,
    Hup,
}

impl Received {
    pub fn name(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Int => "SIGINT",
            Self::Hup => "SIGHUP",
        }
    }
}

/// The handlers of SIGTERM, SIGINT and SIGHUP.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Registers the three handlers (needs a tokio runtime with I/O enabled).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal to arrive.
    pub async fn recv(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Term,
            _ = self.int.recv() => Received::Int,
            _ = self.hup.recv() => Received::Hup,
        }
    }
}

/// What `serve` is driven by under `run`: a future that resolves at the first
/// SIGTERM or SIGINT, and one message per SIGHUP.
pub fn for_serve(mut signals: Signals) -> (impl Future<Output = ()>, mpsc::UnboundedReceiver<()>) {
    let (hup_tx, hup_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        loop {
            match signals.recv().await {
                Received::Hup => {
                    let _ = hup_tx.send(());
                }
                stop => {
                    tracing::info!(
                        "{}: finishing any write in progress, then exiting",
                        stop.name()
                    );
                    let _ = stop_tx.send(());
                    return;
                }
            }
        }
    });
    (
        async move {
            let _ = stop_rx.await;
        },
        hup_rx,
    )
}
