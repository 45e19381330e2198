//! Operations of `bedrock-keyd run` as a real process: the systemd notify protocol
//! against a fake `NOTIFY_SOCKET`, and `/healthz`, `/readyz`, `/metrics` against a
//! credentials endpoint that goes down and comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::daemon::{ContainerCreds, Daemon, read_key, wait_for};
use crate::fake_http::{FakeServer, Reply};
use crate::util::{self, TestEnv};

const CREDS: ContainerCreds = ContainerCreds {
    token: "health-test-token",
    access_key_id: "ASIAHEALTHEXAMPLE001",
    secret: "health-test-secret",
    session_token: "health-test-session-token",
};

/// The endpoint's 2-minute credentials (so every mint fetches anew), or a 500 while
/// `down`; the first answer comes after `first_delay`.
fn credential_endpoint(down: Arc<AtomicBool>, first_delay: Duration) -> FakeServer {
    let first = AtomicBool::new(true);
    FakeServer::start(move |request| {
        if first.swap(false, Ordering::SeqCst) {
            std::thread::sleep(first_delay);
        }
        if down.load(Ordering::SeqCst) {
            return Reply::Status(500);
        }
        CREDS.reply(request)
    })
}

/// A key file holding a complete, unexpired key from the endpoint's credentials.
fn holds_valid_key(path: &Path) -> bool {
    read_key(path, CREDS.access_key_id, "eu-west-1").is_some()
}

/// GET over HTTP/1.1; `None` while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

// ---------------------------------------------------------------------------------
// systemd notify

/// The fake systemd end of `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self { socket, path }
    }

    /// The next datagram, if one arrives within the read timeout.
    fn recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Receives until `done` holds for a datagram (returned last) or `limit` passes.
    fn until(&self, limit: Duration, done: impl Fn(&str) -> bool) -> (Vec<String>, bool) {
        let started = Instant::now();
        let mut seen = Vec::new();
        while started.elapsed() < limit {
            if let Some(msg) = self.recv() {
                let hit = done(&msg);
                seen.push(msg);
                if hit {
                    return (seen, true);
                }
            }
        }
        (seen, false)
    }
}

fn has(msg: &str, field: &str) -> bool {
    msg.lines().any(|l| l == field)
}

#[test]
fn systemd_ready_after_first_delivery_then_watchdog_reload_and_stop() {
    let env = TestEnv::new();
    let down = Arc::new(AtomicBool::new(false));
    // The first credentials answer takes a second: READY=1 must wait for it.
    let server = credential_endpoint(down, Duration::from_millis(1200));
    let dir = env.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let (alpha, beta) = (dir.join("alpha.key"), dir.join("beta.json"));
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nregion = \"eu-west-1\"\nlifetime = \"1h\"\nmin_remaining = \"30s\"\n\
             [[key]]\nname = \"alpha\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}\"\n\
             [[key]]\nname = \"beta\"\n[[key.sink]]\ntype = \"file\"\nformat = \"json\"\npath = \"{}\"\n",
            alpha.display(),
            beta.display()
        ),
    )
    .unwrap();
    let notify = NotifySocket::bind(env.path());
    let started = Instant::now();
    let mut cmd = CREDS.run(&env, &server, &config);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        // 400 ms watchdog: pings every ~200 ms.
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Daemon::start(&env, cmd);

    // READY=1 only once both keys are in their files.
    let (before, ready) = notify.until(Duration::from_secs(20), |m| has(m, "READY=1"));
    let files_at_ready = (holds_valid_key(&alpha), holds_valid_key(&beta));
    let ready_after = started.elapsed();
    assert!(ready, "no READY=1: {before:?}\n{}", daemon.log());
    assert_eq!(
        files_at_ready,
        (true, true),
        "READY=1 came before both sinks held a valid key"
    );
    assert!(
        ready_after >= Duration::from_millis(1000),
        "READY=1 after {ready_after:?}, before the delayed first credentials could have arrived"
    );
    let ready_msg = before.last().unwrap();
    assert!(
        ready_msg.contains("STATUS=2 keys fresh; next refresh "),
        "{ready_msg:?}"
    );
    assert!(
        before
            .iter()
            .any(|m| m.starts_with("STATUS=minting the first key")),
        "{before:?}"
    );

    // Watchdog pings every ~200 ms: about 10 in 2 s.
    let window = Instant::now();
    let mut pings = 0;
    while window.elapsed() < Duration::from_secs(2) {
        if notify.recv().is_some_and(|m| has(&m, "WATCHDOG=1")) {
            pings += 1;
        }
    }
    assert!(
        (6..=14).contains(&pings),
        "{pings} watchdog pings in 2 s, expected ~10"
    );

    // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
    daemon.signal(Signal::SIGHUP);
    let (seen, reloading) = notify.until(Duration::from_secs(10), |m| has(m, "RELOADING=1"));
    assert!(reloading, "no RELOADING=1: {seen:?}\n{}", daemon.log());
    let reload_msg = seen.last().unwrap();
    assert!(
        reload_msg.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "{reload_msg:?}"
    );
    let (seen, ready) = notify.until(Duration::from_secs(10), |m| has(m, "READY=1"));
    assert!(
        ready,
        "no READY=1 after the reload: {seen:?}\n{}",
        daemon.log()
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal(Signal::SIGTERM);
    let (seen, stopping) = notify.until(Duration::from_secs(10), |m| has(m, "STOPPING=1"));
    assert!(stopping, "no STOPPING=1: {seen:?}\n{}", daemon.log());
    let status = daemon.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    // Nothing sent to systemd names a key.
    util::assert_no_key_in(&format!("{before:?}{seen:?}"));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_no_listener_is_opened() {
    let env = TestEnv::new();
    let server = credential_endpoint(Arc::new(AtomicBool::new(false)), Duration::ZERO);
    let key = env.path().join("k.key");
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[key]]\nname = \"k\"\nregion = \"eu-west-1\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&env, CREDS.run(&env, &server, &config));
    assert!(
        wait_for(Duration::from_secs(20), || holds_valid_key(&key)
            .then_some(()))
        .is_some(),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("serving /healthz"),
        "{}",
        daemon.log()
    );
}

// ---------------------------------------------------------------------------------
// HTTP

/// One parsed sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict parser of the Prometheus text exposition format 0.0.4: every line is a
/// well-formed `# HELP`, `# TYPE` or sample; every sample belongs to a family whose
/// TYPE came first, each family is declared once and is contiguous, label values are
/// correctly escaped, values are Go floats, no series repeats, the text ends in `\n`.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    fn name_ok(n: &str) -> bool {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let arg = parts.next().unwrap_or("");
            if kw != "HELP" && kw != "TYPE" {
                // A plain comment.
                continue;
            }
            if !name_ok(name) {
                return Err(err("bad metric name"));
            }
            let valid_type = ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg);
            match kw {
                "HELP" if !helps.insert(name.to_owned()) => return Err(err("second HELP")),
                "TYPE" if !valid_type => return Err(err("bad type")),
                "TYPE" if types.insert(name.to_owned(), arg.to_owned()).is_some() => {
                    return Err(err("second TYPE"));
                }
                _ => {}
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    closed.insert(c);
                }
                if closed.contains(name) {
                    return Err(err("family is not contiguous"));
                }
                current = Some(name.to_owned());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // name{labels} value
        let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if !name_ok(name) {
            return Err(err("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let end: usize;
            loop {
                // label name
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .ok_or_else(|| err("open labels"))?;
                if inner[start..].starts_with('}') {
                    end = start + 1;
                    break;
                }
                let eq = inner[start..]
                    .find('=')
                    .ok_or_else(|| err("label without ="))?
                    + start;
                let lname = &inner[start..eq];
                if !name_ok(lname) || lname.contains(':') {
                    return Err(err("bad label name"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars
                        .next()
                        .ok_or_else(|| err("unterminated label value"))?
                    {
                        (_, '\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => return Err(err("bad escape")),
                        },
                        (_, '"') => break,
                        (_, '\n') => return Err(err("raw newline in label value")),
                        (_, c) => value.push(c),
                    }
                }
                if labels.insert(lname.to_owned(), value).is_some() {
                    return Err(err("repeated label"));
                }
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    _ => return Err(err("expected , or }")),
                }
            }
            rest = &inner[end..];
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before value"))?;
        let mut fields = rest.split(' ');
        let raw = fields.next().unwrap_or("");
        let value = match raw {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|_| err("bad value"))?,
        };
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(err("bad timestamp"));
        }
        if fields.next().is_some() {
            return Err(err("trailing fields"));
        }
        if !types.contains_key(name) || current.as_deref() != Some(name) {
            return Err(err("sample outside its family's TYPE"));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(err("repeated series"));
        }
        samples.push((name.to_owned(), labels, value));
    }
    Ok(samples)
}

fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn exposition_parser_is_strict() {
    let ok = "# HELP a x\n# TYPE a gauge\na{k=\"v\\\"\\\\\\n\"} 1.5\na 2\n";
    let samples = parse_exposition(ok).unwrap();
    assert_eq!(samples[0].1["k"], "v\"\\\n");
    for bad in [
        "a 1\n",                                   // no TYPE
        "# TYPE a gauge\na{k=\"v} 1\n",            // unterminated
        "# TYPE a gauge\na{k=\"\\x\"} 1\n",        // bad escape
        "# TYPE a gauge\na one\n",                 // bad value
        "# TYPE a gauge\na 1\na 2\n",              // repeated series
        "# TYPE a gauge\n# TYPE b gauge\na 1\n",   // not contiguous
        "# TYPE a gauge\na 1",                     // no final newline
        "# TYPE a gauge\n# TYPE a counter\na 1\n", // second TYPE
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
    }
}

/// A config with one 12 s key re-minted every 3 s, unready 2 s before expiry
/// (`min_remaining`), and a listener on `port`. 12 s − 2 s is the shortest guard
/// window that is not "capped" (`schedule::MIN_REFRESH_DELAY`), so there are 7 s of
/// slack between a refresh and the renewal deadline even on a loaded CI machine.
fn short_key_config(env: &TestEnv, port: u16) -> (PathBuf, PathBuf) {
    let key = env.path().join("alpha.key");
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[[key]]\nname = \"alpha\"\nregion = \"eu-west-1\"\n\
             lifetime = \"12s\"\nmin_remaining = \"2s\"\nrefresh_at = 0.25\njitter = 0.0\n\
             [[key.sink]]\ntype = \"file\"\npath = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    (config, key)
}

fn status_exit(env: &TestEnv, config: &Path) -> (i32, String) {
    let out = env
        .cmd()
        .args(["status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), util::stderr(&out))
}

#[test]
fn readyz_follows_the_credentials_endpoint_and_metrics_track_refreshes() {
    let env = TestEnv::new();
    let down = Arc::new(AtomicBool::new(false));
    let server = credential_endpoint(down.clone(), Duration::ZERO);
    let port = util::free_port();
    let (config, _key) = short_key_config(&env, port);
    let daemon = Daemon::start(&env, CREDS.run(&env, &server, &config));

    assert_eq!(
        wait_for(Duration::from_secs(10), || get(port, "/healthz")).map(|r| r.0),
        Some(200),
        "{}",
        daemon.log()
    );
    assert_eq!(get(port, "/nope").map(|r| r.0), Some(404));
    let ready = wait_for(Duration::from_secs(15), || {
        get(port, "/readyz").filter(|r| r.0 == 200)
    });
    assert!(ready.is_some(), "never ready\n{}", daemon.log());
    assert_eq!(
        status_exit(&env, &config).0,
        0,
        "status disagrees with /readyz"
    );

    // The expiry gauge moves forward with every refresh (every 3 s).
    let mut expiries = Vec::new();
    let started = Instant::now();
    while expiries.len() < 3 && started.elapsed() < Duration::from_secs(20) {
        let (code, body) = get(port, "/metrics").expect("metrics");
        assert_eq!(code, 200);
        let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let expiry = metric(
            &samples,
            "bedrock_keyd_key_expiry_timestamp_seconds",
            &[("key", "alpha")],
        )
        .expect("expiry gauge");
        if expiries.last() != Some(&expiry) {
            if let Some(last) = expiries.last() {
                assert!(
                    expiry > *last,
                    "expiry went backwards: {expiries:?} then {expiry}"
                );
            }
            expiries.push(expiry);
        }
        for name in [
            "process_start_time_seconds",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(
                metric(&samples, name, &[]).is_some_and(|v| v > 0.0),
                "{name}\n{body}"
            );
        }
        assert_eq!(
            metric(&samples, "bedrock_keyd_key_ready", &[("key", "alpha")]),
            Some(1.0)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        expiries.len() >= 3,
        "expiry gauge: {expiries:?}\n{}",
        daemon.log()
    );
    util::assert_no_key_in(&get(port, "/metrics").unwrap().1);

    // Endpoint down: the key cannot be renewed before min_remaining → 503, naming it.
    down.store(true, Ordering::SeqCst);
    let unready = wait_for(Duration::from_secs(15), || {
        get(port, "/readyz").filter(|r| r.0 == 503)
    })
    .unwrap_or_else(|| panic!("never unready\n{}", daemon.log()));
    assert!(unready.1.contains("key alpha: "), "{}", unready.1);
    util::assert_no_key_in(&unready.1);
    let (code, stderr) = status_exit(&env, &config);
    assert_eq!(code, 3, "status disagrees with /readyz: {stderr}");
    assert!(stderr.contains("key alpha: file "), "{stderr}");
    // The attempt under way may still be retrying inside the SDK; it fails soon.
    let samples = wait_for(Duration::from_secs(15), || {
        let samples = parse_exposition(&get(port, "/metrics")?.1).unwrap();
        metric(
            &samples,
            "bedrock_keyd_refresh_total",
            &[("key", "alpha"), ("result", "failure")],
        )
        .is_some_and(|v| v >= 1.0)
        .then_some(samples)
    })
    .unwrap_or_else(|| panic!("no failed refresh counted\n{}", daemon.log()));
    assert_eq!(
        metric(&samples, "bedrock_keyd_key_ready", &[("key", "alpha")]),
        Some(0.0)
    );

    // Back up: ready again, and status agrees.
    down.store(false, Ordering::SeqCst);
    let ready = wait_for(Duration::from_secs(40), || {
        get(port, "/readyz").filter(|r| r.0 == 200)
    });
    assert!(
        ready.is_some(),
        "not ready after recovery\n{}",
        daemon.log()
    );
    assert_eq!(
        status_exit(&env, &config).0,
        0,
        "status disagrees with /readyz"
    );
}

#[test]
fn single_key_mode_listens_with_the_listen_flag() {
    let env = TestEnv::new();
    let port = util::free_port();
    let key = env.path().join("k.key");
    let mut cmd = env.cmd_with_example_creds();
    cmd.args(["run", "--region", "eu-west-1", "--lifetime", "1h", "--file"])
        .arg(&key)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let mut daemon = Daemon::start(&env, cmd);
    let ready = wait_for(Duration::from_secs(10), || {
        get(port, "/readyz").filter(|r| r.0 == 200)
    });
    assert_eq!(ready.map(|r| r.1), Some("ready: 1 key fresh\n".to_owned()));
    assert_eq!(get(port, "/healthz"), Some((200, "ok\n".to_owned())));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.exit_within(Duration::from_secs(10)).success());

    // With a config file, listen belongs in the file: a usage error, not ignored.
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        "[[key]]\nname = \"k\"\n[[key.sink]]\ntype = \"file\"\npath = \"/tmp/x.key\"\n",
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:9464"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
    // Port 0 is refused as in the config file.
    let out = env
        .cmd()
        .args(["run", "--file", "x.key", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
}

/// The reference parser too: Python's `prometheus_client` (installed by `.ci/run`).
#[test]
fn metrics_parse_with_prometheus_client() {
    let Some(python) = util::python_with("prometheus_client.parser") else {
        return util::skip(
            "Python with prometheus_client not found (pip install prometheus-client)",
        );
    };
    let env = TestEnv::new();
    let port = util::free_port();
    let key = env.path().join("k.key");
    let mut cmd = env.cmd_with_example_creds();
    cmd.args([
        "run",
        "--name",
        "main.key-1",
        "--region",
        "eu-west-1",
        "--lifetime",
        "1h",
        "--file",
    ])
    .arg(&key)
    .args(["--listen", &format!("127.0.0.1:{port}")]);
    let _daemon = Daemon::start(&env, cmd);
    wait_for(Duration::from_secs(10), || {
        get(port, "/readyz").filter(|r| r.0 == 200)
    })
    .expect("ready");
    let (_, body) = get(port, "/metrics").unwrap();
    let file = env.path().join("metrics.txt");
    std::fs::write(&file, &body).unwrap();
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in f.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{f.type} {s.name} {labels} {s.value}")
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{body}", util::stderr(&out));
    let parsed = util::stdout(&out);
    let expiry = parse_exposition(&body).unwrap();
    let expiry = metric(
        &expiry,
        "bedrock_keyd_key_expiry_timestamp_seconds",
        &[("key", "main.key-1")],
    )
    .unwrap();
    for line in [
        format!("gauge bedrock_keyd_key_expiry_timestamp_seconds key=main.key-1 {expiry}"),
        "gauge bedrock_keyd_key_ready key=main.key-1 1".to_owned(),
        "counter bedrock_keyd_refresh_total key=main.key-1,result=success 1".to_owned(),
        "counter bedrock_keyd_refresh_total key=main.key-1,result=failure 0".to_owned(),
        "counter bedrock_keyd_notify_total key=main.key-1,result=success 0".to_owned(),
    ] {
        assert!(parsed.lines().any(|l| l == line), "{line}\n{parsed}");
    }
    for name in [
        "gauge process_start_time_seconds",
        "gauge process_resident_memory_bytes",
        "counter process_cpu_seconds_total",
        "gauge process_open_fds",
        "gauge bedrock_keyd_last_refresh_timestamp_seconds",
        "gauge bedrock_keyd_next_refresh_timestamp_seconds",
    ] {
        assert!(
            parsed.lines().any(|l| l.starts_with(name)),
            "{name}\n{parsed}"
        );
    }
}

/// A service manager that never reads its socket (its queue holds 10 datagrams) must
/// not stall the daemon: it still serves, refreshes and stops promptly.
#[test]
fn a_notify_socket_nobody_reads_does_not_stall_the_daemon() {
    let env = TestEnv::new();
    let server = credential_endpoint(Arc::new(AtomicBool::new(false)), Duration::ZERO);
    let port = util::free_port();
    let (config, key) = short_key_config(&env, port);
    let notify = NotifySocket::bind(env.path());
    let mut cmd = CREDS.run(&env, &server, &config);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        // A ping every 10 ms: the socket's queue is full within a tenth of a second.
        .env("WATCHDOG_USEC", "20000");
    let mut daemon = Daemon::start(&env, cmd);
    let first = wait_for(Duration::from_secs(10), || {
        holds_valid_key(&key).then(|| std::fs::read_to_string(&key).unwrap())
    })
    .unwrap_or_else(|| panic!("no key\n{}", daemon.log()));
    // Well past the point where sends would block: a refresh still happens (every
    // 3 s) and the endpoint still answers.
    let rotated = wait_for(Duration::from_secs(10), || {
        let now = std::fs::read_to_string(&key).ok()?;
        (now != first && holds_valid_key(&key)).then_some(())
    });
    assert!(rotated.is_some(), "no refresh\n{}", daemon.log());
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    let stop = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.exit_within(Duration::from_secs(10));
    assert!(status.success());
    // At most the one-second flush of queued notifications, plus slack.
    assert!(
        stop.elapsed() < Duration::from_secs(4),
        "{:?}",
        stop.elapsed()
    );
    drop(notify);
}

// ---------------------------------------------------------------------------------
// Probes under a connection flood (issue 13)

/// Holds `idle` connections that never send a byte and `slow` ones that trickle one
/// byte every 500 ms, reconnecting whichever the server closes (or refused), so the
/// pressure lasts; prints `open N` once it has tried them all. Python's standard library only: it
/// runs as `nobody`, who cannot read the test's directory or a venv under /root.
const FLOOD: &str = r#"
import selectors, socket, sys, time
host, port, idle, slow, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
sel = selectors.DefaultSelector()
missing = []
def connect(kind):
    try:
        s = socket.create_connection((host, port), timeout=2)
    except OSError:
        missing.append(kind)
        return
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, kind)
for _ in range(idle):
    connect("idle")
for _ in range(slow):
    connect("slow")
print("open", len(sel.get_map()), flush=True)
end = time.monotonic() + seconds
trickle = time.monotonic()
while time.monotonic() < end:
    retry, missing[:] = list(missing), []
    for kind in retry:
        connect(kind)
    for key, _ in sel.select(timeout=0.05):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            connect(key.data)
    if time.monotonic() >= trickle:
        trickle += 0.5
        for key in list(sel.get_map().values()):
            if key.data == "slow":
                try:
                    key.fileobj.send(b"G")
                except OSError:
                    pass
"#;

/// The flood as an unprivileged local user: `nobody` when the tests run as root,
/// else the test's own (already unprivileged) user.
fn flood_command() -> Option<std::process::Command> {
    if nix::unistd::geteuid().is_root() {
        // The system interpreter: nobody cannot enter /root, where a venv may live.
        let python = Path::new("/usr/bin/python3");
        if !python.exists() || !Path::new("/usr/sbin/runuser").exists() {
            return None;
        }
        let mut cmd = std::process::Command::new("/usr/sbin/runuser");
        cmd.args(["-u", "nobody", "--"]).arg(python);
        Some(cmd)
    } else {
        util::python_with("selectors").map(std::process::Command::new)
    }
}

/// A Kubernetes liveness probe times out after 1 s by default and restarts the pod
/// after three failures: other local users holding hundreds of idle or slow
/// connections must not keep `/healthz` or `/readyz` from answering.
#[test]
fn probes_answer_within_2s_while_hundreds_of_idle_and_slow_connections_are_open() {
    let Some(mut flood) = flood_command() else {
        return util::skip("python3 (and runuser when root) not found for the connection flood");
    };
    let env = TestEnv::new();
    let port = util::free_port();
    let key = env.path().join("k.key");
    let mut cmd = env.cmd_with_example_creds();
    cmd.args(["run", "--region", "eu-west-1", "--lifetime", "1h", "--file"])
        .arg(&key)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let daemon = Daemon::start(&env, cmd);
    wait_for(Duration::from_secs(10), || {
        get(port, "/readyz").filter(|r| r.0 == 200)
    })
    .unwrap_or_else(|| panic!("never ready\n{}", daemon.log()));

    let mut attacker = flood
        .args([
            "-c",
            FLOOD,
            "127.0.0.1",
            &port.to_string(),
            "300",
            "50",
            "30",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(attacker.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.starts_with("open "),
        "the flood could not start: {line:?}"
    );

    // Over several seconds: the first idle connections time out meanwhile and are
    // replaced, so the probes meet a server that is busy shedding, too.
    let mut timings = Vec::new();
    for _ in 0..6 {
        for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready: 1 key fresh\n")] {
            let started = Instant::now();
            let answer = get(port, path);
            let took = started.elapsed();
            timings.push((path, took));
            assert_eq!(
                answer,
                Some((200, body.to_owned())),
                "{path} during the flood after {took:?}\n{}",
                daemon.log()
            );
            assert!(
                took < Duration::from_secs(2),
                "{path} took {took:?} during the flood"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        attacker.try_wait().unwrap().is_none(),
        "the flood ended early"
    );
    let _ = attacker.kill();
    let _ = attacker.wait();
    eprintln!(
        "{} connections at first; probe timings: {timings:?}",
        line.trim()
    );
    daemon.stop_cleanly(&[]);
}
