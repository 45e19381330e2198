//! The long-running service: one task per key, each minting, delivering and sleeping
//! until its next wall-clock deadline.
//!
//! A key task loops: wait (until the deadline, a clock jump, a command, or shutdown)
//! → refresh (credentials → mint → every sink) → plan the next attempt with
//! [`crate::schedule`]. A refresh in progress is never interrupted: shutdown is only
//! noticed while waiting, so SIGTERM finishes the write under way and then exits.
//! On failure the last good key stays in every sink (sinks never replace a key
//! partially) and the task retries with the schedule's backoff.
//!
//! Everything that touches the outside world comes in through seams: a [`Backend`]
//! builds credential sources and sinks, a [`Clock`] tells wall time and its jumps, and
//! a jitter source draws samples. Tests run the real loop with fakes, tokio's paused
//! clock and a fake wall clock.

pub mod locks;
pub mod status;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use crate::clock::{self, Clock};
use crate::config::KeyConfig;
use crate::credentials::{CredentialSource, CredentialsError, SourceSpec};
use crate::key::MintedKey;
use crate::mint::MintError;
use crate::schedule::{self, Backoff, JitterSample, Validity};
use crate::sink::{Sink, SinkError, SinkSpec, WriteOutcome};

pub use status::{KeyStatus, StatusBoard};

/// Builds the parts of a key that touch the outside world.
pub trait Backend: Send + Sync + 'static {
    type Source: CredentialSource;

    /// A credential source for `spec` (loads SDK configuration once).
    fn source(
        &self,
        spec: &SourceSpec,
    ) -> impl std::future::Future<Output = Result<Self::Source, CredentialsError>> + Send;

    /// A writer for `spec`.
    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn Sink>, SinkError>;

    /// Forget whatever was built from the previous config (a reload starts afresh).
    fn reset(&self) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
}

/// Called after every sink of a key holds a new key (dependents are told here).
pub trait OnDelivered: Send + Sync + 'static {
    fn delivered(
        &self,
        key: &KeyConfig,
        minted: &MintedKey,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// No dependents to tell.
pub struct NoDependents;

impl OnDelivered for NoDependents {
    async fn delivered(&self, _key: &KeyConfig, _minted: &MintedKey) {}
}

/// What can be asked of a running key task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Mint now (SIGHUP, changed upstream credentials).
    RefreshNow,
    /// Rebuild the credential source (its files changed), then mint now.
    ReloadCredentials,
    /// Write the current key again where a sink lost or altered it.
    Restore,
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Mint(#[from] MintError),
    #[error("{}", join_sink_errors(.0))]
    Sinks(Vec<SinkError>),
    #[error("a sink task panicked or was cancelled: {0}")]
    SinkTask(String),
}

fn join_sink_errors(errors: &[SinkError]) -> String {
    errors
        .iter()
        .map(|e| crate::credentials::error_chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

impl RefreshError {
    /// Whether waiting and retrying can fix it (a throttled STS can; access denied
    /// cannot, until an operator acts).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Credentials(e) => e.is_retryable(),
            // Expired credentials: a fresh fetch may fix it.
            Self::Mint(MintError::CredentialsExpired { .. }) => true,
            Self::Mint(_) => false,
            Self::Sinks(errors) => errors.iter().all(SinkError::is_retryable),
            Self::SinkTask(_) => true,
        }
    }
}

/// Draws jitter samples; injectable so tests are deterministic.
pub type Jitter = Arc<dyn Fn() -> JitterSample + Send + Sync>;

/// Shared context of all key tasks.
pub struct Runtime<B: Backend, D: OnDelivered> {
    pub backend: Arc<B>,
    pub dependents: Arc<D>,
    pub clock: Arc<dyn Clock>,
    pub jitter: Jitter,
    pub status: Arc<StatusBoard>,
    pub backoff: Backoff,
}

impl<B: Backend, D: OnDelivered> Clone for Runtime<B, D> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            dependents: self.dependents.clone(),
            clock: self.clock.clone(),
            jitter: self.jitter.clone(),
            status: self.status.clone(),
            backoff: self.backoff,
        }
    }
}

/// A running key task.
pub struct KeyHandle {
    pub config: KeyConfig,
    commands: mpsc::UnboundedSender<Command>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyHandle {
    /// Asks the task to do something; false if it has ended.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// Asks the task to stop after any refresh in progress, and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// All key tasks of one config.
pub struct KeySet {
    keys: BTreeMap<String, KeyHandle>,
}

impl KeySet {
    /// No keys (a placeholder while a reload swaps sets).
    pub fn empty() -> Self {
        Self {
            keys: BTreeMap::new(),
        }
    }

    /// Starts one task per key. Each mints at once.
    pub fn start<B: Backend, D: OnDelivered>(rt: &Runtime<B, D>, keys: &[KeyConfig]) -> Self {
        let names: Vec<String> = keys.iter().map(|k| k.name.to_string()).collect();
        rt.status.retain(&names);
        let keys = keys
            .iter()
            .map(|k| (k.name.to_string(), spawn_key(rt.clone(), k.clone())))
            .collect();
        Self { keys }
    }

    /// Sends `command` to every key.
    pub fn broadcast(&self, command: Command) {
        for handle in self.keys.values() {
            handle.send(command);
        }
    }

    /// Sends `command` to one key.
    pub fn send(&self, name: &str, command: Command) {
        if let Some(handle) = self.keys.get(name) {
            handle.send(command);
        }
    }

    pub fn configs(&self) -> impl Iterator<Item = &KeyConfig> {
        self.keys.values().map(|h| &h.config)
    }

    /// Stops every task, each after its refresh in progress.
    pub async fn stop(self) {
        for (_, handle) in self.keys {
            handle.stop().await;
        }
    }
}

fn spawn_key<B: Backend, D: OnDelivered>(rt: Runtime<B, D>, config: KeyConfig) -> KeyHandle {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    rt.status.register(config.name.as_str(), config.policy);
    let span = tracing::info_span!("key", key = %config.name);
    let task = tokio::spawn(
        KeyTask {
            rt,
            config: config.clone(),
            commands: commands_rx,
            stop: stop_rx,
        }
        .run()
        .instrument(span),
    );
    KeyHandle {
        config,
        commands: commands_tx,
        stop: stop_tx,
        task,
    }
}

struct KeyTask<B: Backend, D: OnDelivered> {
    rt: Runtime<B, D>,
    config: KeyConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    stop: watch::Receiver<bool>,
}

/// What the task holds between attempts.
struct Parts<S> {
    source: Option<S>,
    sinks: Vec<Arc<dyn Sink>>,
}

impl<B: Backend, D: OnDelivered> KeyTask<B, D> {
    async fn run(mut self) {
        let name = self.config.name.to_string();
        let mut parts: Parts<B::Source> = Parts {
            source: None,
            sinks: Vec::new(),
        };
        let mut held: Option<MintedKey> = None;
        let mut failures: u32 = 0;
        let mut last_reported: Option<String> = None;
        let mut next = self.rt.clock.now();
        // The same deadline on the monotonic clock: whichever comes first wins, so a
        // wall clock set backwards cannot stretch a planned delay, and a suspend
        // (which stops the monotonic clock) is caught by the wall deadline.
        let mut due = tokio::time::Instant::now();

        loop {
            // Wait for the deadline, a command, a clock jump or a stop.
            while self.rt.clock.now() < next && tokio::time::Instant::now() < due {
                tokio::select! {
                    biased;
                    _ = self.stop.changed() => return,
                    command = self.commands.recv() => {
                        let Some(first) = command else { return };
                        // A burst (a SIGHUP storm, a restore racing a refresh) is one
                        // event: take everything queued and act once per kind.
                        let mut pending = vec![first];
                        while let Ok(more) = self.commands.try_recv() {
                            pending.push(more);
                        }
                        if pending.contains(&Command::ReloadCredentials)
                            && let Some(source) = &parts.source
                        {
                            source.invalidate();
                        }
                        if pending.iter().any(|c| matches!(c, Command::RefreshNow | Command::ReloadCredentials)) {
                            due = tokio::time::Instant::now();
                        } else if let Some(minted) = &held {
                            self.restore(&parts.sinks, minted).await;
                        }
                    }
                    // Returns on the deadline or on a clock jump; the loop re-checks.
                    _ = clock::sleep_until(&*self.rt.clock, next) => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            if *self.stop.borrow() {
                return;
            }

            // Refresh: never interrupted, so a stop waits for the write to finish.
            let started = self.rt.clock.now();
            match self.refresh(&mut parts).await {
                Ok(minted) => {
                    failures = 0;
                    last_reported = None;
                    let validity = Validity::from(&minted.meta);
                    let now = self.rt.clock.now();
                    next = schedule::next_refresh(
                        now,
                        validity,
                        &self.config.policy,
                        (self.rt.jitter)(),
                    );
                    due = tokio::time::Instant::now() + schedule::sleep_until(now, next);
                    tracing::info!(
                        region = %minted.meta.region,
                        expires_at = %crate::time::rfc3339(minted.meta.expires_at),
                        credentials_expire_at = %minted.credentials_expiry.map(crate::time::rfc3339).unwrap_or_else(|| "never".to_owned()),
                        next_refresh = %crate::time::rfc3339(next),
                        fingerprint = %minted.key.fingerprint(),
                        "key minted and delivered"
                    );
                    self.rt.status.update(&name, |s| {
                        s.held = Some(validity);
                        s.last_refresh = Some(now);
                        s.refresh_ok += 1;
                        s.next_attempt = Some(next);
                        s.last_error = None;
                        s.last_error_retryable = true;
                    });
                    self.rt.dependents.delivered(&self.config, &minted).await;
                    held = Some(minted);
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let retryable = err.is_retryable();
                    if !retryable {
                        // Retrying quickly cannot help; check back at the slow pace.
                        failures = failures.max(16);
                    }
                    let held_validity = held.as_ref().map(|m| Validity::from(&m.meta));
                    let now = self.rt.clock.now();
                    next = schedule::retry_at(
                        now,
                        failures,
                        held_validity,
                        &self.config.policy,
                        &self.rt.backoff,
                        (self.rt.jitter)(),
                    );
                    due = tokio::time::Instant::now() + schedule::sleep_until(now, next);
                    let cause = crate::credentials::error_chain(&err);
                    let lapses = held_validity.is_some_and(|v| schedule::expires_by(v, next));
                    // Each distinct failure is logged once; repeats go to debug.
                    if last_reported.as_deref() != Some(cause.as_str()) {
                        // No promise of another look here: `exec` gives up on a first
                        // failure that retrying cannot fix; `next_retry` says when `run`
                        // looks again.
                        let kind = if retryable {
                            "will retry"
                        } else {
                            "will not heal by retrying: fix the cause"
                        };
                        // Before the first key there is no "last good key" to keep.
                        let consequence = if held.is_some() {
                            "the last good key stays in place"
                        } else {
                            "no key delivered yet"
                        };
                        tracing::error!(
                            error = %cause,
                            attempt_started = %crate::time::rfc3339(started),
                            next_retry = %crate::time::rfc3339(next),
                            failures,
                            "refresh failed ({kind}); {consequence}"
                        );
                        last_reported = Some(cause.clone());
                    } else {
                        tracing::debug!(error = %cause, next_retry = %crate::time::rfc3339(next), failures, "refresh failed again");
                    }
                    if lapses {
                        tracing::warn!(
                            expires_at = %held.as_ref().map(|m| crate::time::rfc3339(m.meta.expires_at)).unwrap_or_default(),
                            "the key will expire before the next attempt; it is reported unready"
                        );
                    }
                    self.rt.status.update(&name, |s| {
                        s.refresh_err += 1;
                        s.next_attempt = Some(next);
                        s.last_error = Some(cause);
                        s.last_error_retryable = retryable;
                    });
                }
            }
        }
    }

    async fn refresh(&self, parts: &mut Parts<B::Source>) -> Result<MintedKey, RefreshError> {
        if parts.sinks.is_empty() {
            parts.sinks = self
                .config
                .sinks
                .iter()
                .map(|spec| self.rt.backend.sink(spec))
                .collect::<Result<_, _>>()
                .map_err(|e| RefreshError::Sinks(vec![e]))?;
        }
        // Built once and kept: the source caches credentials and decides itself
        // when to fetch again. Invalidated on ReloadCredentials.
        let source = match parts.source.take() {
            Some(source) => source,
            None => self.rt.backend.source(&self.config.source).await?,
        };
        let source = parts.source.insert(source);
        let credentials = source.credentials(self.config.lifetime.get()).await?;
        let minted = crate::mint::mint(
            &credentials,
            source.region(),
            self.config.lifetime,
            self.rt.clock.now(),
        )?;
        deliver(&parts.sinks, &minted).await?;
        Ok(minted)
    }

    /// Writes the held key again: sinks that still hold it do nothing.
    async fn restore(&self, sinks: &[Arc<dyn Sink>], minted: &MintedKey) {
        match deliver(sinks, minted).await {
            Ok(outcomes) if outcomes.contains(&WriteOutcome::Written) => {
                tracing::warn!(
                    fingerprint = %minted.key.fingerprint(),
                    "a sink lost or altered its key; restored it"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::error!(
                error = %crate::credentials::error_chain(&err),
                "restoring a sink failed"
            ),
        }
    }
}

/// Writes `minted` to every sink on a blocking thread. Every sink is attempted; the
/// result is an error if any failed (those keep their previous key).
pub async fn deliver(
    sinks: &[Arc<dyn Sink>],
    minted: &MintedKey,
) -> Result<Vec<WriteOutcome>, RefreshError> {
    let sinks = sinks.to_vec();
    let key = minted.key.clone();
    let meta = minted.meta.clone();
    // Keep the key's span on the blocking thread, so sink logs say which key.
    let span = tracing::Span::current();
    let results = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        write_each(&sinks, &key, &meta)
    })
    .await
    .map_err(|e| RefreshError::SinkTask(e.to_string()))?;
    sink_outcomes(results)
}

/// [`deliver`] on the calling thread, for a caller with nothing else to run meanwhile
/// (`once` handles its keys one after the other). It spares the blocking thread, which
/// on a one-shot run costs more than the writes: a `clone`, a stack, a malloc arena
/// and the hand-overs between the threads (see BENCHMARKS.md, "Side by side").
pub fn deliver_here(
    sinks: &[Arc<dyn Sink>],
    minted: &MintedKey,
) -> Result<Vec<WriteOutcome>, RefreshError> {
    sink_outcomes(write_each(sinks, &minted.key, &minted.meta))
}

/// Writes the key to every sink in order, logging each outcome.
fn write_each(
    sinks: &[Arc<dyn Sink>],
    key: &crate::key::ApiKey,
    meta: &crate::key::KeyMeta,
) -> Vec<Result<WriteOutcome, SinkError>> {
    sinks
        .iter()
        .map(|sink| {
            let result = sink.write(key, meta);
            match &result {
                Ok(WriteOutcome::Written) => {
                    tracing::info!(sink = %sink.describe(), "sink written")
                }
                Ok(WriteOutcome::Unchanged) => {
                    tracing::debug!(sink = %sink.describe(), "sink already holds the key")
                }
                Err(_) => {}
            }
            result
        })
        .collect()
}

/// The outcomes, or every sink error when any sink failed.
fn sink_outcomes(
    results: Vec<Result<WriteOutcome, SinkError>>,
) -> Result<Vec<WriteOutcome>, RefreshError> {
    let mut outcomes = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(outcomes)
    } else {
        Err(RefreshError::Sinks(errors))
    }
}

/// The default jitter source.
pub fn random_jitter() -> Jitter {
    Arc::new(JitterSample::random)
}

/// The real world: SDK credential sources and the file, env-file and keyring sinks.
///
/// Keys with the same source spec share one [`SdkSource`](crate::credentials::SdkSource),
/// built once: a thousand keys signed by one role hold one role session and one SDK
/// setup, not a thousand.
#[derive(Default)]
pub struct SystemBackend {
    sources: tokio::sync::Mutex<
        std::collections::HashMap<SourceSpec, Arc<crate::credentials::SdkSource>>,
    >,
}

impl Backend for SystemBackend {
    type Source = Arc<crate::credentials::SdkSource>;

    async fn source(&self, spec: &SourceSpec) -> Result<Self::Source, CredentialsError> {
        // Held across the build, so keys starting together wait for one build.
        let mut sources = self.sources.lock().await;
        if let Some(source) = sources.get(spec) {
            return Ok(source.clone());
        }
        let source = Arc::new(crate::credentials::SdkSource::new(spec).await?);
        sources.insert(spec.clone(), source.clone());
        Ok(source)
    }

    async fn reset(&self) {
        self.sources.lock().await.clear();
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::from(crate::sink::build(spec)))
    }
}
