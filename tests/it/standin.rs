//! The Bedrock stand-in (`tests/standin/bedrock_standin.py`) as every Rust test uses it:
//! started with the test Python, waited for through its port file, stopped on drop; and
//! the tests that show it accepts exactly the keys Amazon Bedrock would (ours and the
//! official generator's) and refuses tampered, expired and future ones.
//!
//! The stand-in verifies the SigV4 signature itself, with the example secret, so a client
//! test that passes against it proves the key reached it intact and valid.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{self, EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, TestEnv};

/// One line of the stand-in's `requests.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// First 16 hex digits of the SHA-256 of the bearer value; `None` without one.
    pub key_fingerprint: Option<String>,
    pub why: Option<String>,
    /// Unix seconds when the request was answered.
    pub time: f64,
}

/// A running stand-in; killed on drop.
pub struct Standin {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
}

/// Why a stand-in cannot run here (for `util::skip`).
pub fn missing() -> Option<String> {
    if python().is_none() {
        return Some("no python3 for the Bedrock stand-in".into());
    }
    if Command::new("openssl")
        .arg("version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        return Some("openssl (the stand-in's certificate) is not installed".into());
    }
    None
}

fn python() -> Option<PathBuf> {
    util::python_with("ssl")
}

impl Standin {
    /// An HTTPS stand-in accepting keys signed with the example credentials. `None` (after
    /// `util::skip`) when Python or openssl is missing.
    pub fn start() -> Option<Self> {
        Self::start_with(true)
    }

    /// `tls: false` serves plain HTTP (`--plain-http`).
    pub fn start_with(tls: bool) -> Option<Self> {
        if let Some(why) = missing() {
            util::skip(&why);
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("standin")
            .tempdir()
            .unwrap();
        let mut cmd = Command::new(python().unwrap());
        cmd.arg(util::repo_root().join("tests/standin/bedrock_standin.py"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--secret-key", EXAMPLE_SECRET_ACCESS_KEY])
            .args(["--access-key-id", EXAMPLE_ACCESS_KEY_ID])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
            ));
        if !tls {
            cmd.arg("--plain-http");
        }
        let mut child = cmd.spawn().expect("start the stand-in");
        let port_file = dir.path().join("port");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().expect("port file");
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("stand-in exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "stand-in did not start in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        Some(Self {
            child,
            dir,
            port,
            tls,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT` (or `http://` with `start_with(false)`), no trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificate clients must trust (`AWS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`, curl --cacert).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("requests.jsonl line"))
            .collect()
    }

    /// The distinct key fingerprints of accepted requests, in first-seen order.
    pub fn accepted_fingerprints(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.requests() {
            if let (200, Some(fp)) = (r.status, r.key_fingerprint)
                && !out.contains(&fp)
            {
                out.push(fp);
            }
        }
        out
    }

    /// `curl` POSTing `body` to `path` with `Authorization: Bearer <key>` (none when
    /// `key` is `None`) and extra headers; prints `<body>\n<status>`.
    pub fn curl(&self, path: &str, key: Option<&str>, headers: &[&str], body: &str) -> Output {
        curl_to(&self.url(), &self.ca_cert(), path, key, headers, body)
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl against any Bedrock-shaped endpoint (the stand-in, or a proxy in front of it). The
/// key goes in through a header file (`-H @file`), never on the command line.
pub fn curl_to(
    base: &str,
    ca: &Path,
    path: &str,
    key: Option<&str>,
    headers: &[&str],
    body: &str,
) -> Output {
    let hdr_dir = tempfile::tempdir().unwrap();
    let hdr = hdr_dir.path().join("h");
    let mut lines = String::new();
    if let Some(k) = key {
        lines.push_str(&format!("Authorization: Bearer {k}\n"));
    }
    for h in headers {
        lines.push_str(h);
        lines.push('\n');
    }
    lines.push_str("Content-Type: application/json\n");
    std::fs::write(&hdr, lines).unwrap();
    Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .arg("-H")
        .arg(format!("@{}", hdr.display()))
        .args(["--data-binary", body])
        .arg(format!("{base}{path}"))
        .output()
        .expect("run curl")
}

/// The HTTP status curl reported (the last line of `curl_to`'s output).
pub fn status_of(o: &Output) -> u16 {
    util::stdout(o)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// A key from `bedrock-keyd mint` with the example credentials.
pub fn mint_key(env: &TestEnv, lifetime: &str) -> String {
    let out = env
        .cmd_with_example_creds()
        .args(["mint", "--region", "us-west-2", "--lifetime", lifetime])
        .output()
        .unwrap();
    assert!(out.status.success(), "mint: {}", util::stderr(&out));
    util::stdout(&out).trim().to_owned()
}

/// A key from the official generator (through the oracle script), signed at `signed_at`.
fn official_key(signed_at: u64, expires: u64, session_token: Option<&str>) -> Option<String> {
    let python = util::python_with("aws_bedrock_token_generator")?;
    let case = serde_json::json!({
        "access_key_id": EXAMPLE_ACCESS_KEY_ID,
        "secret_access_key": EXAMPLE_SECRET_ACCESS_KEY,
        "session_token": session_token,
        "region": "eu-central-1",
        "expires": expires,
        "signed_at": signed_at,
    });
    let out = util::run_with_stdin(
        Command::new(python).arg(util::repo_root().join("tests/oracle/bedrock_token_oracle.py")),
        format!("{case}\n").as_bytes(),
    );
    assert!(out.status.success(), "oracle: {}", util::stderr(&out));
    Some(util::stdout(&out).trim().to_owned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The key's presigned URL with `f` applied, re-encoded: a key whose signature no longer
/// matches what it signs.
fn tampered(key: &str, f: impl Fn(&str) -> String) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = key.strip_prefix("bedrock-api-key-").unwrap();
    let url = String::from_utf8(b64.decode(payload).unwrap()).unwrap();
    format!("bedrock-api-key-{}", b64.encode(f(&url)))
}

fn converse(s: &Standin, key: Option<&str>) -> (u16, String) {
    let o = s.curl("/model/m/converse", key, &[], "{}");
    (status_of(&o), util::stdout(&o))
}

#[test]
fn standin_accepts_minted_keys_and_rejects_tampered_expired_and_future_ones() {
    let Some(s) = Standin::start() else { return };
    let env = TestEnv::new();
    let key = mint_key(&env, "15m");

    let (status, body) = converse(&s, Some(&key));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from the stand-in"), "{body}");

    // Tampered: another expiry, another region, another access key id, a flipped signature.
    let cases = [
        (
            tampered(&key, |u| {
                u.replace("X-Amz-Expires=900", "X-Amz-Expires=901")
            }),
            "bad signature",
        ),
        (
            tampered(&key, |u| u.replace("us-west-2", "us-east-1")),
            "bad signature",
        ),
        (
            tampered(&key, |u| {
                u.replace(EXAMPLE_ACCESS_KEY_ID, "AKIAIOSFODNN7EXAMPLF")
            }),
            "unknown access key id",
        ),
        (
            tampered(&key, |u| {
                let i = u.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
                let flipped = if &u[i..i + 1] == "0" { "1" } else { "0" };
                format!("{}{flipped}{}", &u[..i], &u[i + 1..])
            }),
            "bad signature",
        ),
        (
            tampered(&key, |u| {
                u.replace("%2Fbedrock%2Faws4_request", "%2Fs3%2Faws4_request")
            }),
            "credential scope",
        ),
        (format!("{key}x"), "base64"),
        ("bedrock-api-key-".to_owned(), "not a bedrock api key"),
    ];
    for (bad, why) in &cases {
        let (status, body) = converse(&s, Some(bad));
        assert_eq!(status, 403, "{why}: {body}");
        assert!(body.contains(why), "expected {why:?} in {body}");
    }
    let (status, body) = converse(&s, None);
    assert_eq!(status, 403);
    assert!(body.contains("missing"), "{body}");

    // Expired and future keys from the official generator, signed with the right secret.
    let Some(expired) = official_key(now() - 1000, 900, None) else {
        return util::skip("aws-bedrock-token-generator is not installed");
    };
    let (status, body) = converse(&s, Some(&expired));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("expired"), "{body}");
    let future = official_key(now() + 1000, 900, None).unwrap();
    let (status, body) = converse(&s, Some(&future));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("future"), "{body}");

    // The log names each request's key by fingerprint and every refusal's reason.
    let seen = s.requests();
    assert_eq!(seen.len(), cases.len() + 4);
    assert_eq!(seen[0].status, 200);
    assert!(seen[1..].iter().all(|r| r.status == 403 && r.why.is_some()));
    let fp = sha256_16(&key);
    assert_eq!(seen[0].key_fingerprint.as_deref(), Some(fp.as_str()));
}

#[test]
fn standin_accepts_the_official_generators_keys() {
    let Some(s) = Standin::start() else { return };
    for token in [None, Some("IQoJb3JpZ2luX2VjEXAMPLE/+=session")] {
        let Some(key) = official_key(now(), 900, token) else {
            return util::skip("aws-bedrock-token-generator is not installed");
        };
        let (status, body) = converse(&s, Some(&key));
        assert_eq!(status, 200, "session token {token:?}: {body}");
    }
}

#[test]
fn standin_streams_and_obeys_its_knobs() {
    let Some(s) = Standin::start() else { return };
    let env = TestEnv::new();
    let key = mint_key(&env, "15m");

    // 3 chunks 300 ms apart: the whole answer takes at least 600 ms.
    let t = Instant::now();
    let o = s.curl(
        "/openai/v1/chat/completions",
        Some(&key),
        &["x-standin-chunks: 3", "x-standin-interval-ms: 300"],
        r#"{"model":"m","stream":true,"messages":[]}"#,
    );
    assert_eq!(status_of(&o), 200, "{}", util::stdout(&o));
    assert!(t.elapsed() >= Duration::from_millis(600));
    let text = util::stdout(&o);
    assert_eq!(text.matches("data: {").count(), 3, "{text}");
    assert!(text.contains("data: [DONE]"));

    let o = s.curl(
        "/model/m/converse",
        Some(&key),
        &["x-standin-status: 429"],
        "{}",
    );
    assert_eq!(status_of(&o), 429);

    // A reset after one chunk: curl sees the connection die.
    let o = s.curl(
        "/model/m/converse-stream",
        Some(&key),
        &["x-standin-chunks: 5", "x-standin-reset-after: 1"],
        "{}",
    );
    assert!(!o.status.success(), "curl should fail on a reset stream");

    // The stand-in keeps serving afterwards; stats count everything.
    assert_eq!(converse(&s, Some(&key)).0, 200);
    let o = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(s.ca_cert())
        .arg(format!("{}/_standin/stats", s.url()))
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stats["requests"], 4, "{stats}");
    assert_eq!(stats["by_status"]["429"], 1, "{stats}");
}

fn sha256_16(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
