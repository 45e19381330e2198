//! The real key loop, simulated: tokio's paused clock, a fake wall clock, a fake
//! credential source handing out 10-minute credentials, and an in-memory sink that
//! records every key it held and when.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::clock::{Clock, FakeClock};
use bedrock_keyd::config::{Config, KeyConfig};
use bedrock_keyd::credentials::{CredentialSource, CredentialsError, SourceSpec};
use bedrock_keyd::daemon::{Backend, KeySet, NoDependents, Runtime, StatusBoard};
use bedrock_keyd::key::KeyName;
use bedrock_keyd::key::{ApiKey, KeyMeta};
use bedrock_keyd::key::{Lifetime, Region};
use bedrock_keyd::schedule::{Backoff, JitterSample, RefreshPolicy};
use bedrock_keyd::service::proxy::CurrentKeys;
use bedrock_keyd::sink::{FileSpec, Sink, SinkError, SinkSpec, WriteOutcome};

const CREDENTIAL_VALIDITY: Duration = Duration::from_secs(10 * 60);

fn base() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Hands out credentials valid for 10 minutes from "now", or fails while `down`.
struct FakeSource {
    clock: FakeClock,
    region: Region,
    down: Arc<AtomicBool>,
    fetches: Arc<AtomicU64>,
}

impl CredentialSource for FakeSource {
    fn region(&self) -> &Region {
        &self.region
    }

    async fn credentials(&self, _want: Duration) -> Result<Credentials, CredentialsError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(CredentialsError::Provider {
                origin: "fake container endpoint".to_owned(),
                detail: "credential endpoint returned 500".to_owned(),
                retryable: true,
            });
        }
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(Credentials::new(
            format!("ASIAFAKE{n:012}"),
            "secret",
            Some("token".to_owned()),
            Some(self.clock.now() + CREDENTIAL_VALIDITY),
            "fake",
        ))
    }
}

/// Remembers every key it was given, with the wall time of the write.
#[derive(Default)]
struct MemorySink {
    writes: Mutex<Vec<(SystemTime, KeyMeta)>>,
}

struct SinkHandle {
    inner: Arc<MemorySink>,
    clock: FakeClock,
}

impl Sink for SinkHandle {
    fn describe(&self) -> String {
        "memory".to_owned()
    }
    fn write(&self, _key: &ApiKey, meta: &KeyMeta) -> Result<WriteOutcome, SinkError> {
        self.inner
            .writes
            .lock()
            .unwrap()
            .push((self.clock.now(), meta.clone()));
        Ok(WriteOutcome::Written)
    }
    fn read(&self) -> Result<Option<ApiKey>, SinkError> {
        Ok(None)
    }
}

struct FakeBackend {
    clock: FakeClock,
    sink: Arc<MemorySink>,
    down: Arc<AtomicBool>,
    fetches: Arc<AtomicU64>,
}

impl Backend for FakeBackend {
    type Source = FakeSource;
    async fn source(&self, _spec: &SourceSpec) -> Result<FakeSource, CredentialsError> {
        Ok(FakeSource {
            clock: self.clock.clone(),
            region: Region::new("us-east-1").unwrap(),
            down: self.down.clone(),
            fetches: self.fetches.clone(),
        })
    }
    fn sink(&self, _spec: &SinkSpec) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::new(SinkHandle {
            inner: self.sink.clone(),
            clock: self.clock.clone(),
        }))
    }
}

struct Sim {
    clock: FakeClock,
    sink: Arc<MemorySink>,
    down: Arc<AtomicBool>,
    status: Arc<StatusBoard>,
    keys: KeySet,
}

fn start(jitter: f64) -> Sim {
    let clock = FakeClock::new(base());
    let sink = Arc::new(MemorySink::default());
    let down = Arc::new(AtomicBool::new(false));
    let backend = FakeBackend {
        clock: clock.clone(),
        sink: sink.clone(),
        down: down.clone(),
        fetches: Arc::new(AtomicU64::new(0)),
    };
    let status = Arc::new(StatusBoard::new());
    let rt = Runtime {
        backend: Arc::new(backend),
        dependents: Arc::new(NoDependents),
        clock: Arc::new(clock.clone()),
        jitter: if jitter == 0.0 {
            Arc::new(|| JitterSample::ZERO)
        } else {
            Arc::new(JitterSample::random)
        },
        status: status.clone(),
        backoff: Backoff::default(),
    };
    let key = KeyConfig::new(
        KeyName::new("sim").unwrap(),
        SourceSpec::default(),
        Lifetime::MAX,
        RefreshPolicy::new(0.5, jitter, Duration::from_secs(5 * 60)).unwrap(),
        vec![SinkSpec::File(FileSpec {
            path: "/nonexistent/sim.key".into(),
            format: Default::default(),
            access: Default::default(),
        })],
        vec![],
    )
    .unwrap();
    let keys = KeySet::start(&rt, &[key]);
    Sim {
        clock,
        sink,
        down,
        status,
        keys,
    }
}

/// Checks that from the first write on, the sink always held a valid key: each write
/// came before the previous key expired, and the last one is valid at `end`.
fn assert_never_lapsed(writes: &[(SystemTime, KeyMeta)], end: SystemTime) {
    assert!(!writes.is_empty());
    for pair in writes.windows(2) {
        let (_, previous) = &pair[0];
        let (at, next) = &pair[1];
        assert!(
            *at < previous.expires_at,
            "gap: key expired at {:?}, next written at {:?}",
            previous.expires_at,
            at
        );
        assert!(next.expires_at > *at, "a dead key was written");
    }
    assert!(writes.last().unwrap().1.expires_at > end);
}

#[tokio::test(start_paused = true)]
async fn forty_eight_hours_with_ten_minute_credentials() {
    let sim = start(0.0);
    // One second past 48 h, so the mint due at exactly 48 h has happened.
    tokio::time::sleep(Duration::from_secs(48 * 3600 + 1)).await;
    let end = sim.clock.now();
    sim.keys.stop().await;
    let writes = sim.sink.writes.lock().unwrap().clone();
    assert_never_lapsed(&writes, end);
    // Credentials cap every key at 10 minutes; refresh_at 0.5 re-mints every 5:
    // one mint at start, then 12 an hour for 48 hours.
    assert_eq!(writes.len(), 1 + 48 * 12, "mints");
    for (at, meta) in &writes {
        assert_eq!(
            meta.expires_at.duration_since(*at).unwrap(),
            CREDENTIAL_VALIDITY
        );
    }
    let status = sim.status.snapshot()["sim"].clone();
    assert_eq!(status.refresh_ok, 1 + 48 * 12);
    assert_eq!(status.refresh_err, 0);
}

#[tokio::test(start_paused = true)]
async fn forty_eight_hours_with_jitter_stays_within_its_bounds() {
    let sim = start(0.1);
    tokio::time::sleep(Duration::from_secs(48 * 3600)).await;
    let end = sim.clock.now();
    sim.keys.stop().await;
    let writes = sim.sink.writes.lock().unwrap().clone();
    assert_never_lapsed(&writes, end);
    // Each delay is 5 min ± 10 %, but never past expiry − min_remaining (5 min);
    // counted from the signing second, so a write may be up to 1 s off.
    for pair in writes.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0).unwrap();
        assert!(
            gap >= Duration::from_secs(269) && gap <= Duration::from_secs(301),
            "{gap:?}"
        );
    }
    let count = writes.len() as u64;
    assert!(
        (48 * 3600 / 300..=1 + 48 * 3600 / 270).contains(&count),
        "{count} mints"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_keeps_the_last_key_and_recovers() {
    let sim = start(0.0);
    // Just before the first refresh point, the credential endpoint goes down for 3 min.
    tokio::time::sleep(Duration::from_secs(4 * 60)).await;
    sim.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3 * 60)).await;
    let during = sim.status.snapshot()["sim"].clone();
    assert!(during.refresh_err >= 3, "retried with backoff: {during:?}");
    assert!(during.last_error.as_deref().unwrap().contains("500"));
    assert_eq!(
        sim.sink.writes.lock().unwrap().len(),
        1,
        "the good key stays"
    );
    sim.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let end = sim.clock.now();
    let writes = sim.sink.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 2, "recovered with one mint");
    assert_never_lapsed(&writes, end);
    sim.keys.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_clock_jump_past_expiry_re_mints_at_once() {
    let sim = start(0.0);
    tokio::time::sleep(Duration::from_secs(60)).await;
    // The laptop slept for 13 hours.
    sim.clock.jump(Duration::from_secs(13 * 3600), true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let writes = sim.sink.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 2, "re-minted on wake");
    assert!(writes[1].1.expires_at > sim.clock.now());
    // And the wall clock going back an hour does not stall the schedule.
    sim.clock.jump(Duration::from_secs(3600), false);
    tokio::time::sleep(Duration::from_secs(5 * 60 + 1)).await;
    assert_eq!(sim.sink.writes.lock().unwrap().len(), 3);
    sim.keys.stop().await;
}

/// A sink whose first write takes a while (on the blocking pool, as every delivery
/// does) and says when it starts.
struct SlowSink {
    started: Arc<tokio::sync::Notify>,
    finished: Arc<Mutex<Vec<SystemTime>>>,
    clock: FakeClock,
}

impl Sink for SlowSink {
    fn describe(&self) -> String {
        "slow memory".to_owned()
    }
    fn write(&self, _key: &ApiKey, _meta: &KeyMeta) -> Result<WriteOutcome, SinkError> {
        self.started.notify_one();
        // Real time on the blocking thread: the shutdown lands in the middle of it.
        std::thread::sleep(Duration::from_millis(200));
        self.finished.lock().unwrap().push(self.clock.now());
        Ok(WriteOutcome::Written)
    }
    fn read(&self) -> Result<Option<ApiKey>, SinkError> {
        Ok(None)
    }
}

struct SlowBackend {
    inner: FakeBackend,
    sink: Arc<SlowSink>,
}

impl Backend for SlowBackend {
    type Source = FakeSource;
    async fn source(&self, spec: &SourceSpec) -> Result<FakeSource, CredentialsError> {
        self.inner.source(spec).await
    }
    fn sink(&self, _spec: &SinkSpec) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(self.sink.clone())
    }
}

/// `serve` in-process on the paused clock, with a shutdown future of the test's own:
/// it fires while the first write is in progress, and `serve` returns only after that
/// write has finished, with the key counted as delivered.
#[tokio::test(start_paused = true)]
async fn serve_returns_after_the_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(base());
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(Mutex::new(Vec::new()));
    let backend = SlowBackend {
        inner: FakeBackend {
            clock: clock.clone(),
            sink: Arc::new(MemorySink::default()),
            down: Arc::new(AtomicBool::new(false)),
            fetches: Arc::new(AtomicU64::new(0)),
        },
        sink: Arc::new(SlowSink {
            started: started.clone(),
            finished: finished.clone(),
            clock: clock.clone(),
        }),
    };
    let status = Arc::new(StatusBoard::new());
    let rt = Runtime {
        backend: Arc::new(backend),
        dependents: Arc::new(NoDependents),
        clock: Arc::new(clock.clone()),
        jitter: Arc::new(|| JitterSample::ZERO),
        status: status.clone(),
        backoff: Backoff::default(),
    };
    let key = KeyConfig::new(
        KeyName::new("served").unwrap(),
        SourceSpec::default(),
        Lifetime::MAX,
        RefreshPolicy::new(0.5, 0.0, Duration::from_secs(5 * 60)).unwrap(),
        vec![SinkSpec::File(FileSpec {
            path: dir.path().join("served.key"),
            format: Default::default(),
            access: Default::default(),
        })],
        vec![],
    )
    .unwrap();
    let (_reload, reloads) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = {
        let started = started.clone();
        async move { started.notified().await }
    };
    let served = bedrock_keyd::service::serve(
        rt,
        None,
        Config::single(key),
        &CurrentKeys::default(),
        shutdown,
        reloads,
    )
    .await;
    served.expect("serve");
    assert_eq!(
        finished.lock().unwrap().len(),
        1,
        "the write in progress finished"
    );
    let status = status.snapshot()["served"].clone();
    assert_eq!(status.refresh_ok, 1, "and counted as delivered: {status:?}");
}
