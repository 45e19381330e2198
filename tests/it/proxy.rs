//! The local Bedrock proxy (`run --proxy`, `[[key.proxy]]`) in front of the Bedrock
//! stand-in (`tests/standin`), which checks every key's signature itself: auth (401 and
//! nothing upstream), forwarding over HTTP/1.1, h2c and TLS, refusal of forward-proxy
//! requests, streaming chunk by chunk across a rotation, and the faults (upstream down,
//! slow, resetting; a client hanging up; a thousand idle connections) after which the
//! daemon's descriptors and memory return to their baseline.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, wait_for};
use crate::standin::{Standin, curl_to, status_of};
use crate::util::{self, TestEnv};

const BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;

/// A daemon serving a proxy (and health) in front of a stand-in.
struct Setup {
    env: TestEnv,
    standin: Standin,
    daemon: Daemon,
    port: u16,
    health: u16,
    token_file: PathBuf,
    tls: bool,
}

/// How [`Setup::launch`] starts the daemon; the default is [`Setup::start`]'s.
#[derive(Default)]
struct Launch<'a> {
    tls: bool,
    extra: &'a [&'a str],
    /// Start without credentials: no key is ever minted.
    no_credentials: bool,
    /// Instead of the stand-in.
    upstream: Option<String>,
}

impl Setup {
    /// `extra`: more `run` arguments (e.g. `--lifetime 20s`). `None` when the stand-in
    /// cannot run here (skipped).
    fn start(tls: bool, extra: &[&str]) -> Option<Self> {
        Self::launch(Launch {
            tls,
            extra,
            ..Launch::default()
        })
    }

    fn launch(how: Launch) -> Option<Self> {
        let standin = Standin::start()?;
        let env = TestEnv::new();
        let port = util::free_port();
        let health = util::free_port();
        let token_file = env.path().join("proxy/token");
        let mut cmd = if how.no_credentials {
            env.cmd()
        } else {
            env.cmd_with_example_creds()
        };
        let upstream = how.upstream.unwrap_or_else(|| standin.url());
        cmd.env("AWS_CA_BUNDLE", standin.ca_cert())
            .args(["run", "--region", "us-west-2", "--jitter", "0"])
            .args(["--proxy", &format!("127.0.0.1:{port}")])
            .arg("--proxy-token-file")
            .arg(&token_file)
            .args(["--proxy-upstream", &upstream])
            .args(["--listen", &format!("127.0.0.1:{health}")])
            .args(how.extra);
        if how.tls {
            cmd.arg("--proxy-tls");
        }
        let mut daemon = Daemon::start(&env, cmd);
        let ready = if how.no_credentials {
            // No key is ever minted: wait for the listener instead.
            "proxy listening"
        } else {
            "key minted and delivered"
        };
        daemon.poll(Duration::from_secs(20), ready, |log| log.contains(ready));
        Some(Self {
            env,
            standin,
            daemon,
            port,
            health,
            token_file,
            tls: how.tls,
        })
    }

    fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).unwrap()
    }

    fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.token_file.with_file_name("proxy.crt")
    }

    /// curl through the proxy with the local token (or `token`).
    fn curl(&self, path: &str, token: Option<&str>, headers: &[&str]) -> Output {
        curl_to(&self.base(), &self.ca(), path, token, headers, BODY)
    }

    fn call(&self, path: &str, headers: &[&str]) -> Output {
        self.curl(path, Some(&self.token()), headers)
    }

    fn health(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}{path}", self.health))
            .output()
            .unwrap();
        util::stdout(&out)
    }

    /// A raw HTTP/1.1 exchange on the proxy's port (plain TCP only).
    fn raw(&self, request: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn stop(mut self) {
        let token = self.token();
        let code = self.daemon.stop();
        let log = self.daemon.log();
        assert_eq!(code, Some(0), "{log}");
        assert!(!log.contains(&token), "the local token reached the log");
        util::assert_no_key_in(&log);
        drop(self.env);
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn proxy_forwards_with_the_current_key_and_refuses_wrong_tokens_and_forward_proxy_requests() {
    let Some(s) = Setup::start(false, &[]) else {
        return;
    };
    let token = s.token();
    assert_eq!(token.len(), 64, "256 random bits as hex");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&s.token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let ok = s.call("/model/m/converse", &[]);
    assert_eq!(status_of(&ok), 200, "{}", util::stdout(&ok));
    assert!(util::stdout(&ok).contains("hello from the stand-in"));
    let seen = s.standin.requests().len();

    // Wrong or missing token: 401 with a JSON body, and the stand-in sees nothing.
    for token in [Some("wrong"), None, Some(&token[..63])] {
        let out = s.curl("/model/m/converse", token, &[]);
        assert_eq!(status_of(&out), 401, "{}", util::stdout(&out));
        assert!(util::stdout(&out).contains("\"message\""));
    }
    // A forward-proxy request: absolute form and CONNECT are refused, nothing forwarded.
    let absolute = s.raw(&format!(
        "POST http://example.com/model/m/converse HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    ));
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    let connect = s.raw(&format!(
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nAuthorization: Bearer {token}\r\n\r\n"
    ));
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert_eq!(
        s.standin.requests().len(),
        seen,
        "the upstream saw a refused request"
    );

    // HTTP/2 with prior knowledge (what an h2-only client does on plain TCP).
    let hdr = s.env.path().join("auth");
    std::fs::write(&hdr, format!("Authorization: Bearer {token}\n")).unwrap();
    let h2 = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .arg("-H")
        .arg(format!("@{}", hdr.display()))
        .args(["--data-binary", BODY])
        .arg(format!("{}/model/m/converse", s.base()))
        .output()
        .unwrap();
    assert!(
        util::stdout(&h2).ends_with("2 200"),
        "{}",
        util::stdout(&h2)
    );

    // Upstream answers pass through unchanged.
    let throttled = s.call("/model/m/converse", &["x-standin-status: 429"]);
    assert_eq!(status_of(&throttled), 429);

    let metrics = s.health("/metrics");
    assert!(
        metrics.contains("bedrock_keyd_proxy_requests_total{key=\"default\",class=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("class=\"4xx\"} 6"), "{metrics}");
    s.stop();
}

#[test]
fn proxy_over_tls_with_its_own_certificate_http1_and_h2() {
    let Some(s) = Setup::start(true, &[]) else {
        return;
    };
    assert!(s.ca().exists());
    let ok = s.call("/model/m/converse", &[]);
    assert_eq!(status_of(&ok), 200, "{}", util::stdout(&ok));
    let hdr = s.env.path().join("auth");
    std::fs::write(&hdr, format!("Authorization: Bearer {}\n", s.token())).unwrap();
    let h2 = Command::new("curl")
        .args(["-sS", "--http2", "-w", "\n%{http_version} %{http_code}"])
        .arg("--cacert")
        .arg(s.ca())
        .arg("-H")
        .arg(format!("@{}", hdr.display()))
        .args(["--data-binary", BODY])
        .arg(format!("{}/model/m/converse", s.base()))
        .output()
        .unwrap();
    assert!(
        util::stdout(&h2).ends_with("2 200"),
        "{}",
        util::stdout(&h2)
    );
    s.stop();
}

/// Times at which each of `n` SSE chunks (`chunk i`) reached curl's stdout.
fn stream_arrivals(s: &Setup, n: usize, interval_ms: u64) -> (Vec<Duration>, bool) {
    let hdr = s.env.path().join("stream-hdr");
    std::fs::write(
        &hdr,
        format!(
            "Authorization: Bearer {}\nx-standin-chunks: {n}\nx-standin-interval-ms: {interval_ms}\nContent-Type: application/json\n",
            s.token()
        ),
    )
    .unwrap();
    let mut child = Command::new("curl")
        .args(["-sS", "--no-buffer", "--max-time", "60"])
        .arg("-H")
        .arg(format!("@{}", hdr.display()))
        .args([
            "--data-binary",
            r#"{"model":"m","stream":true,"messages":[]}"#,
        ])
        .arg(format!("{}/openai/v1/chat/completions", s.base()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let got = out.read(&mut buf).unwrap();
        if got == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..got]));
        while arrivals.len() < n && text.contains(&format!("chunk {} ", arrivals.len())) {
            arrivals.push(start.elapsed());
        }
    }
    let ok = child.wait().unwrap().success() && text.contains("[DONE]");
    (arrivals, ok)
}

#[test]
fn streamed_chunks_arrive_one_by_one_and_a_rotation_does_not_cut_the_stream() {
    // 20-second keys re-minted at half their life: a rotation every 10 s.
    let Some(s) = Setup::start(
        false,
        &[
            "--lifetime",
            "20s",
            "--refresh-at",
            "0.5",
            "--min-remaining",
            "5s",
        ],
    ) else {
        return;
    };
    let n = 13;
    let (arrivals, ok) = stream_arrivals(&s, n, 1000);
    assert!(ok, "the stream was cut");
    assert_eq!(arrivals.len(), n);
    // Each chunk 1 s after the one before: within 100 ms of when it was sent.
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(900) && gap < Duration::from_millis(1100),
            "chunks were not passed on one by one: {arrivals:?}"
        );
    }
    // A rotation happened during those 13 s, and the next request uses the new key.
    let minted = s.daemon.log().matches("key minted and delivered").count();
    assert!(
        minted >= 2,
        "no rotation during the stream\n{}",
        s.daemon.log()
    );
    let after = s.call("/model/m/converse", &[]);
    assert_eq!(status_of(&after), 200);
    let fps = s.standin.accepted_fingerprints();
    assert!(fps.len() >= 2, "{fps:?}");
    s.stop();
}

#[test]
fn proxy_without_a_key_answers_503_and_sends_nothing() {
    let Some(s) = Setup::launch(Launch {
        no_credentials: true,
        ..Launch::default()
    }) else {
        return;
    };
    let out = s.call("/model/m/converse", &[]);
    assert_eq!(status_of(&out), 503, "{}", util::stdout(&out));
    assert!(util::stdout(&out).contains("no Bedrock key yet"));
    assert!(s.standin.requests().is_empty());
    s.stop();
}

#[test]
fn upstream_down_is_a_502_with_the_reason() {
    let dead = util::free_port();
    let Some(s) = Setup::launch(Launch {
        upstream: Some(format!("http://127.0.0.1:{dead}")),
        ..Launch::default()
    }) else {
        return;
    };
    let out = s.call("/model/m/converse", &[]);
    assert_eq!(status_of(&out), 502, "{}", util::stdout(&out));
    assert!(
        util::stdout(&out).contains("cannot reach the upstream"),
        "{}",
        util::stdout(&out)
    );
    s.stop();
}

#[test]
fn faults_slow_resetting_hung_up_and_idle_clients_leave_no_trace() {
    let Some(s) = Setup::start(false, &[]) else {
        return;
    };
    let pid = s.daemon.child.id();
    // Warm up: the pool's connection, TLS roots, the first request's allocations.
    for _ in 0..3 {
        assert_eq!(status_of(&s.call("/model/m/converse", &[])), 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (fd0, rss0) = (fds(pid), rss_kib(pid));

    std::thread::scope(|scope| {
        // Slow: one answer takes 3 s; others and the health endpoint are not held up.
        let slow = scope.spawn(|| s.call("/model/m/converse", &["x-standin-delay-ms: 3000"]));
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        assert_eq!(status_of(&s.call("/model/m/converse", &[])), 200);
        assert!(s.health("/healthz").contains("ok"));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "held up by a slow request"
        );
        assert_eq!(status_of(&slow.join().unwrap()), 200);
    });

    // Resetting mid-stream: the client sees an error, the proxy serves the next one.
    let reset = s.call(
        "/model/m/converse-stream",
        &["x-standin-chunks: 5", "x-standin-reset-after: 2"],
    );
    assert!(!reset.status.success(), "{}", util::stdout(&reset));
    assert_eq!(status_of(&s.call("/model/m/converse", &[])), 200);

    // A client hanging up mid-stream.
    let hdr = s.env.path().join("hang");
    std::fs::write(
        &hdr,
        format!(
            "Authorization: Bearer {}\nx-standin-chunks: 10\nx-standin-interval-ms: 300\n",
            s.token()
        ),
    )
    .unwrap();
    let hung = Command::new("curl")
        .args(["-sS", "--max-time", "1"])
        .arg("-H")
        .arg(format!("@{}", hdr.display()))
        .args(["--data-binary", r#"{"stream":true}"#])
        .arg(format!("{}/openai/v1/chat/completions", s.base()))
        .output()
        .unwrap();
    assert!(!hung.status.success());
    assert_eq!(status_of(&s.call("/model/m/converse", &[])), 200);

    // A thousand idle connections, twice: others and the health endpoint keep working.
    let mut after = Vec::new();
    for _ in 0..2 {
        let idle: Vec<TcpStream> = (0..1000)
            .map(|_| TcpStream::connect(("127.0.0.1", s.port)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        assert_eq!(status_of(&s.call("/model/m/converse", &[])), 200);
        assert!(s.health("/healthz").contains("ok"));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            fds(pid) >= fd0 + 1000,
            "the idle connections were not accepted"
        );
        drop(idle);
        // Descriptors return exactly (give the stream of the hung-up client time to end).
        let settled = wait_for(Duration::from_secs(10), || (fds(pid) <= fd0).then_some(()));
        assert!(
            settled.is_some(),
            "descriptors: {} before, {} after",
            fd0,
            fds(pid)
        );
        after.push(rss_kib(pid));
    }
    let metrics = s.health("/metrics");
    assert!(
        metrics.contains("bedrock_keyd_proxy_in_flight{key=\"default\"} 0"),
        "{metrics}"
    );
    // Memory: the allocator keeps some of what the first thousand used (glibc does not
    // hand every freed page back), but a second thousand must not add to it: nothing
    // is held per connection once it is gone.
    let (rss1, rss2) = (after[0], after[1]);
    assert!(
        rss1 < rss0 + 8 * 1024,
        "RSS {rss0} KiB before, {rss1} KiB after"
    );
    assert!(
        rss2 < rss1 + 1024,
        "RSS grew again: {rss0} -> {rss1} -> {rss2} KiB"
    );
    eprintln!("RSS {rss0} -> {rss1} -> {rss2} KiB, descriptors back to {fd0}");
    s.stop();
}

fn write_config(dir: &Path, proxy: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[key]]\nname = \"default\"\nregion = \"us-west-2\"\n\n[[key.proxy]]\n{proxy}token_file = \"{}\"\n",
            dir.join("token").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn non_loopback_listen_is_a_config_error_naming_the_line() {
    let env = TestEnv::new();
    let config = write_config(env.path(), "listen = \"0.0.0.0:8790\"\n");
    for command in ["run", "check"] {
        let out = env
            .cmd()
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{}", util::stderr(&out));
        let err = util::stderr(&out);
        assert!(err.contains("config.toml:6"), "{err}");
        assert!(err.contains("loopback"), "{err}");
    }
    let out = env
        .cmd()
        .args([
            "run",
            "--proxy",
            "192.168.0.1:8790",
            "--proxy-token-file",
            "t",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
}

#[test]
fn check_shows_proxies_and_once_and_mint_refuse_them() {
    let env = TestEnv::new();
    let config = write_config(
        env.path(),
        "listen = \"unix:/run/bk-test.sock\"\ntls = true\n",
    );
    let out = env
        .cmd()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    let text = util::stdout(&out);
    assert!(
        text.contains("https on unix socket /run/bk-test.sock (mode 0600)"),
        "{text}"
    );
    assert!(text.contains("sinks:    none"), "{text}");

    let out = env
        .cmd_with_example_creds()
        .args(["once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
    assert!(util::stderr(&out).contains("nothing to write"));
    let out = env
        .cmd()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
    assert!(util::stderr(&out).contains("nothing to probe"));
    for command in [&["once", "--file", "k"][..], &["mint"][..], &["token"][..]] {
        let out = env
            .cmd_with_example_creds()
            .args(command)
            .args(["--region", "us-west-2", "--proxy", "127.0.0.1:8790"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
        assert!(
            util::stderr(&out).contains("cannot serve a proxy"),
            "{}",
            util::stderr(&out)
        );
    }
}

#[test]
fn proxy_on_a_unix_socket_with_its_mode_removed_at_exit() {
    let Some(standin) = Standin::start() else {
        return;
    };
    let env = TestEnv::new();
    let sock = env.path().join("bedrock.sock");
    let token_file = env.path().join("token");
    let mut cmd = env.cmd_with_example_creds();
    cmd.env("AWS_CA_BUNDLE", standin.ca_cert())
        .args(["run", "--region", "us-west-2"])
        .arg("--proxy")
        .arg(format!("unix:{}", sock.display()))
        .arg("--proxy-token-file")
        .arg(&token_file)
        .args(["--proxy-upstream", &standin.url()]);
    let mut daemon = Daemon::start(&env, cmd);
    daemon.poll(Duration::from_secs(20), "the first key", |log| {
        log.contains("key minted and delivered")
    });
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let hdr = env.path().join("auth");
    let token = std::fs::read_to_string(&token_file).unwrap();
    std::fs::write(&hdr, format!("Authorization: Bearer {token}\n")).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&sock)
        .arg("-H")
        .arg(format!("@{}", hdr.display()))
        .args(["--data-binary", BODY])
        .arg("http://localhost/model/m/converse")
        .output()
        .unwrap();
    assert_eq!(status_of(&out), 200, "{}", util::stdout(&out));
    assert_eq!(daemon.stop(), Some(0));
    assert!(!sock.exists(), "the socket outlived the daemon");
}

#[test]
fn after_a_reload_the_proxy_serves_the_restarted_keys_and_keeps_its_address() {
    let Some(standin) = Standin::start() else {
        return;
    };
    let env = TestEnv::new();
    let port = util::free_port();
    let config = env.path().join("config.toml");
    let write = |lifetime: &str, port: u16| {
        std::fs::write(
            &config,
            format!(
                "[[key]]\nname = \"default\"\nregion = \"us-west-2\"\nlifetime = \"{lifetime}\"\nmin_remaining = \"1m\"\n\n[[key.proxy]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{}\"\ntoken_file = \"{}\"\n",
                standin.url(),
                env.path().join("token").display()
            ),
        )
        .unwrap();
    };
    write("1h", port);
    let mut cmd = env.cmd_with_example_creds();
    cmd.env("AWS_CA_BUNDLE", standin.ca_cert())
        .args(["run", "--config"])
        .arg(&config);
    let mut daemon = Daemon::start(&env, cmd);
    daemon.poll(Duration::from_secs(20), "the first key", |log| {
        log.contains("key minted and delivered")
    });
    let token = std::fs::read_to_string(env.path().join("token")).unwrap();
    let call = || {
        status_of(&curl_to(
            &format!("http://127.0.0.1:{port}"),
            &standin.ca_cert(),
            "/model/m/converse",
            Some(&token),
            &[],
            BODY,
        ))
    };
    assert_eq!(call(), 200);
    // A new lifetime restarts the key (a new key); a new port is not applied.
    write("2h", util::free_port());
    daemon.poll(Duration::from_secs(20), "the reload", |log| {
        log.matches("key minted and delivered").count() >= 2
    });
    assert!(
        daemon.log().contains("the proxies changed"),
        "{}",
        daemon.log()
    );
    assert_eq!(call(), 200);
    let fps = standin.accepted_fingerprints();
    assert_eq!(
        fps.len(),
        2,
        "the restarted key's new key was not used: {fps:?}"
    );
    assert_eq!(daemon.stop(), Some(0));
}
