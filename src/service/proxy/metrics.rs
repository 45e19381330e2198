//! The proxy's counters, rendered into `/metrics` by [`crate::health`].
//!
//! Atomics only, so the request path never takes a lock: per proxied key, requests
//! by status class (`2xx` … `5xx`, the proxy's own 401/502/503 included), requests
//! in flight (until the response body ends), and the time to the upstream's
//! response head as a sum and a count (a mean per scrape interval; Bedrock's own
//! latency dwarfs any bucket layout we would pick).
//!
//! The set of proxied keys is process-wide ([`registry`]): the health endpoint's
//! signature stays as it is until issue 14 moves both into the service layer.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The counters of one proxied key.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    pub key: String,
    /// Index 0 = 1xx … 4 = 5xx.
    by_class: [AtomicU64; 5],
    in_flight: AtomicU64,
    upstream_micros: AtomicU64,
    upstream_count: AtomicU64,
}

impl ProxyMetrics {
    /// Registers the counters of `key` (one set per key, shared by its listeners).
    pub fn for_key(key: &str) -> Arc<Self> {
        let mut all = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = all.iter().find(|m| m.key == key) {
            return m.clone();
        }
        let m = Arc::new(Self {
            key: key.to_owned(),
            ..Self::default()
        });
        all.push(m.clone());
        m
    }

    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
    }

    pub fn upstream(&self, took: Duration) {
        self.upstream_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.upstream_count.fetch_add(1, Relaxed);
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight; decrements on drop.
pub struct InFlight(Arc<ProxyMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Every proxied key's counters.
pub fn registry() -> &'static Mutex<Vec<Arc<ProxyMetrics>>> {
    static ALL: OnceLock<Mutex<Vec<Arc<ProxyMetrics>>>> = OnceLock::new();
    ALL.get_or_init(Mutex::default)
}

/// Appends the proxy families (nothing when no key has a proxy).
pub fn render(out: &mut String, escape: impl Fn(&str) -> String) {
    let all = registry().lock().unwrap_or_else(|e| e.into_inner()).clone();
    if all.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP bedrock_keyd_proxy_requests_total Requests answered by the local proxy, by status class.\n# TYPE bedrock_keyd_proxy_requests_total counter"
    );
    for m in &all {
        for (i, n) in m.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "bedrock_keyd_proxy_requests_total{{key=\"{}\",class=\"{}xx\"}} {}",
                escape(&m.key),
                i + 1,
                n.load(Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP bedrock_keyd_proxy_in_flight Requests the local proxy is serving now (until the response body ends).\n# TYPE bedrock_keyd_proxy_in_flight gauge"
    );
    for m in &all {
        let _ = writeln!(
            out,
            "bedrock_keyd_proxy_in_flight{{key=\"{}\"}} {}",
            escape(&m.key),
            m.in_flight.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP bedrock_keyd_proxy_upstream_seconds Time from forwarding a request to the upstream's response head.\n# TYPE bedrock_keyd_proxy_upstream_seconds summary"
    );
    for m in &all {
        let key = escape(&m.key);
        let _ = writeln!(
            out,
            "bedrock_keyd_proxy_upstream_seconds_sum{{key=\"{key}\"}} {}\nbedrock_keyd_proxy_upstream_seconds_count{{key=\"{key}\"}} {}",
            m.upstream_micros.load(Relaxed) as f64 / 1e6,
            m.upstream_count.load(Relaxed)
        );
    }
}
