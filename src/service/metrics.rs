//! The `/metrics` text: the Prometheus text exposition format 0.0.4, rendered from
//! the status board (per key) and `/proc` (process basics), plus the local proxies'
//! counters. Pure apart from [`ProcessStats::read`]; the HTTP side is
//! [`super::health`]. Nothing rendered ever contains a key: the board holds none.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::daemon::KeyStatus;

/// The process basics of the Prometheus client conventions, from `/proc` (Linux).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub start_time_seconds: f64,
    pub resident_memory_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
}

impl ProcessStats {
    /// `None` where `/proc` is unavailable (macOS) or unreadable.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // proc(5) numbers fields from 1 with the pid; `rest` starts at field 3 (state).
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = clock_ticks()?;
        let (utime, stime, starttime, rss_pages) = (field(14)?, field(15)?, field(22)?, field(24)?);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<u64>()
            .ok()?;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| u64::try_from(p).ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(Self {
            start_time_seconds: boot as f64 + starttime as f64 / ticks,
            resident_memory_bytes: rss_pages * page,
            cpu_seconds: (utime + stime) as f64 / ticks,
            open_fds,
        })
    }
}

fn clock_ticks() -> Option<f64> {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map(|t| t as f64)
}

/// The metrics in the Prometheus text exposition format 0.0.4. Per key:
///
/// - `bedrock_keyd_key_expiry_timestamp_seconds` (gauge): when the key the sinks hold
///   expires; absent until the first delivery;
/// - `bedrock_keyd_key_ready` (gauge, 0/1): `/readyz` for this key;
/// - `bedrock_keyd_refresh_total{result="success|failure"}` (counter);
/// - `bedrock_keyd_last_refresh_timestamp_seconds` (gauge): the last complete delivery;
/// - `bedrock_keyd_next_refresh_timestamp_seconds` (gauge): the next planned attempt;
/// - `bedrock_keyd_notify_total{result="success|failure"}` (counter): dependents told;
///
/// plus `process_*` basics when `process` is given.
pub fn render(
    keys: &BTreeMap<String, KeyStatus>,
    now: SystemTime,
    process: Option<&ProcessStats>,
) -> String {
    let mut out = String::new();
    let seconds = |t: SystemTime| -> f64 {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    };
    family(
        &mut out,
        "bedrock_keyd_key_expiry_timestamp_seconds",
        "gauge",
        "Expiry of the key every sink holds, in seconds since the Unix epoch.",
        keys.iter()
            .filter_map(|(k, s)| s.held.map(|h| (labels(k, None), seconds(h.expiry)))),
    );
    family(
        &mut out,
        "bedrock_keyd_key_ready",
        "gauge",
        "1 when the key is valid beyond its renewal deadline (min_remaining), else 0.",
        keys.iter()
            .map(|(k, s)| (labels(k, None), f64::from(u8::from(s.is_ready(now))))),
    );
    family(
        &mut out,
        "bedrock_keyd_refresh_total",
        "counter",
        "Refresh attempts (mint and deliver to every sink) by result.",
        keys.iter().flat_map(|(k, s)| {
            [
                (labels(k, Some("success")), s.refresh_ok as f64),
                (labels(k, Some("failure")), s.refresh_err as f64),
            ]
        }),
    );
    family(
        &mut out,
        "bedrock_keyd_last_refresh_timestamp_seconds",
        "gauge",
        "When every sink last received a new key, in seconds since the Unix epoch.",
        keys.iter()
            .filter_map(|(k, s)| s.last_refresh.map(|t| (labels(k, None), seconds(t)))),
    );
    family(
        &mut out,
        "bedrock_keyd_next_refresh_timestamp_seconds",
        "gauge",
        "When the next refresh (or retry) is planned, in seconds since the Unix epoch.",
        keys.iter()
            .filter_map(|(k, s)| s.next_attempt.map(|t| (labels(k, None), seconds(t)))),
    );
    family(
        &mut out,
        "bedrock_keyd_notify_total",
        "counter",
        "Dependent notifications after a delivery, by result.",
        keys.iter().flat_map(|(k, s)| {
            [
                (labels(k, Some("success")), s.notify_ok as f64),
                (labels(k, Some("failure")), s.notify_err as f64),
            ]
        }),
    );
    if let Some(p) = process {
        let single = |v: f64| std::iter::once((String::new(), v));
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            single(p.start_time_seconds),
        );
        family(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            single(p.resident_memory_bytes as f64),
        );
        family(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            single(p.cpu_seconds),
        );
        family(
            &mut out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            single(p.open_fds as f64),
        );
    }
    // The local proxies' counters (nothing when no key has a proxy).
    super::proxy::metrics::render(&mut out, escape);
    out
}

/// Writes one metric family: `# HELP`, `# TYPE`, then its samples.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, f64)>,
) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {}", number(value));
    }
}

/// `{key="…"}` or `{key="…",result="…"}`, values escaped as the format requires.
fn labels(key: &str, result: Option<&str>) -> String {
    match result {
        Some(r) => format!("{{key=\"{}\",result=\"{}\"}}", escape(key), escape(r)),
        None => format!("{{key=\"{}\"}}", escape(key)),
    }
}

/// Label value escaping of the text format: backslash, double quote, line feed.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, others with Rust's shortest
/// round-tripping form (both valid Go `ParseFloat` input).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Validity;

    use crate::daemon::status::fixtures::{board, t};

    #[test]
    fn metrics_format() {
        let b = board();
        b.update("alpha", |s| {
            s.held = Some(Validity::new(t(0), t(3600)));
            s.last_refresh = Some(t(0));
            s.next_attempt = Some(t(1800));
            s.refresh_ok = 2;
            s.refresh_err = 1;
            s.notify_ok = 3;
        });
        let stats = ProcessStats {
            start_time_seconds: 1.5,
            resident_memory_bytes: 4096,
            cpu_seconds: 0.25,
            open_fds: 7,
        };
        let text = render(&b.snapshot(), t(5), Some(&stats));
        for line in [
            "# TYPE bedrock_keyd_key_expiry_timestamp_seconds gauge",
            "bedrock_keyd_key_expiry_timestamp_seconds{key=\"alpha\"} 1795683600",
            "bedrock_keyd_key_ready{key=\"alpha\"} 1",
            "bedrock_keyd_key_ready{key=\"be\\\"ta\"} 0",
            "bedrock_keyd_refresh_total{key=\"alpha\",result=\"success\"} 2",
            "bedrock_keyd_refresh_total{key=\"alpha\",result=\"failure\"} 1",
            "bedrock_keyd_notify_total{key=\"alpha\",result=\"success\"} 3",
            "bedrock_keyd_last_refresh_timestamp_seconds{key=\"alpha\"} 1795680000",
            "bedrock_keyd_next_refresh_timestamp_seconds{key=\"alpha\"} 1795681800",
            "process_start_time_seconds 1.5",
            "process_cpu_seconds_total 0.25",
            "process_open_fds 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn process_stats_on_linux() {
        if cfg!(target_os = "linux") {
            let p = ProcessStats::read().expect("/proc");
            assert!(p.resident_memory_bytes > 0 && p.open_fds > 0);
            assert!(p.start_time_seconds > 1.0e9);
        }
    }
}
