//! Credential sources end to end: the real binary against real local servers (a
//! container credentials endpoint, a fake IMDS, moto's STS) and temp HOMEs.
//!
//! Everything listens on and talks to 127.0.0.1 only: `TestEnv::cmd()` clears the
//! environment and disables IMDS; the one IMDS test points it at a local fake.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bedrock_keyd::clock::time::{parse_rfc3339, rfc3339};
use bedrock_keyd::key::decode::{DecodedKey, decode};
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};

use crate::fake_http::{FakeServer, Reply, creds_json, http_get, in_secs};
use crate::util::{self, TestEnv};

struct Minted {
    json: serde_json::Value,
    key: String,
    decoded: DecodedKey,
    stderr: String,
}

/// Runs `mint --format json ARGS`, asserting success.
fn mint_json(cmd: &mut Command, args: &[&str]) -> Minted {
    let out = cmd
        .args(["mint", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = json["key"].as_str().unwrap().to_owned();
    let decoded = decode(&key).unwrap();
    Minted {
        json,
        key,
        decoded,
        stderr: util::stderr(&out),
    }
}

fn assert_no_secrets(stderr: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !stderr.contains(secret),
            "a secret ({}…) appeared in the log",
            &secret[..6.min(secret.len())]
        );
    }
}

/// Re-signs with `credentials` at the key's own instant and lifetime: equal bytes
/// prove the key was signed with exactly those credentials.
fn assert_signed_with(minted: &Minted, id: &str, secret: &str, token: Option<&str>) {
    let credentials = Credentials::new(id, secret, token.map(str::to_owned), None, "test");
    let again = mint(
        &credentials,
        &Region::new(&minted.decoded.region).unwrap(),
        Lifetime::new(minted.decoded.lifetime).unwrap(),
        minted.decoded.issued_at,
    )
    .unwrap();
    assert_eq!(again.key.expose(), minted.key, "not signed with {id}");
}

fn write_file(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

// ---------------------------------------------------------------------------------
// Container credentials endpoint (ECS / EKS Pod Identity).

const POD_TOKEN: &str = "eks-pod-identity-token.abc123";

fn container_env(env: &TestEnv, server: &FakeServer) -> Command {
    let token_file = env.path().join("eks-pod-identity-token");
    if !token_file.exists() {
        // Written as the EKS agent does: no trailing newline (it is sent verbatim).
        write_file(&token_file, POD_TOKEN);
    }
    let mut cmd = env.cmd();
    cmd.env(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        server.url("/v1/credentials"),
    )
    .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
    .env("AWS_REGION", "us-west-2");
    cmd
}

#[test]
fn container_credentials_cap_the_key_and_rotated_ones_are_used() {
    let env = TestEnv::new();
    let (expiry_a, expiry_a_text) = in_secs(20 * 60);
    let doc_a = creds_json(
        "ASIACONTAINERAAAAAAA",
        "containerSecretA/0123456789abcdefghijklmn",
        "containerSessionTokenA-0123456789",
        &expiry_a_text,
    );
    let server = FakeServer::start(move |_| Reply::Json(doc_a.clone()));

    // Trace logging everywhere: the secrets must still not appear.
    let a = mint_json(container_env(&env, &server).env("RUST_LOG", "trace"), &[]);
    assert_eq!(a.decoded.access_key_id, "ASIACONTAINERAAAAAAA");
    assert!(a.decoded.has_session_token);
    // 20-minute credentials, 12 h asked for: the key ends when they do.
    assert_eq!(a.json["expires_at"], expiry_a_text.as_str());
    assert_eq!(a.json["credentials_expires_at"], expiry_a_text.as_str());
    assert_eq!(a.decoded.expires_at, expiry_a);
    assert!(a.decoded.lifetime <= Duration::from_secs(1200));
    assert!(a.decoded.lifetime >= Duration::from_secs(1190));
    assert_signed_with(
        &a,
        "ASIACONTAINERAAAAAAA",
        "containerSecretA/0123456789abcdefghijklmn",
        Some("containerSessionTokenA-0123456789"),
    );
    assert!(a.stderr.contains("key minted"), "{}", a.stderr);
    assert_no_secrets(
        &a.stderr,
        &[
            "containerSecretA/0123456789abcdefghijklmn",
            "containerSessionTokenA-0123456789",
            &a.key,
            &a.key["bedrock-api-key-".len()..],
            POD_TOKEN,
        ],
    );

    let requests = server.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/v1/credentials")
        );
        assert_eq!(r.header("authorization"), Some(POD_TOKEN));
    }

    // The agent rotates the credentials: the next mint signs with the new ones.
    let (expiry_b, expiry_b_text) = in_secs(40 * 60);
    let doc_b = creds_json(
        "ASIACONTAINERBBBBBBB",
        "containerSecretB/0123456789abcdefghijklmn",
        "containerSessionTokenB-0123456789",
        &expiry_b_text,
    );
    server.set(move |_| Reply::Json(doc_b.clone()));
    let b = mint_json(&mut container_env(&env, &server), &[]);
    assert_eq!(b.decoded.access_key_id, "ASIACONTAINERBBBBBBB");
    assert_eq!(b.decoded.expires_at, expiry_b);
    assert_eq!(b.json["credentials_expires_at"], expiry_b_text.as_str());
    assert_signed_with(
        &b,
        "ASIACONTAINERBBBBBBB",
        "containerSecretB/0123456789abcdefghijklmn",
        Some("containerSessionTokenB-0123456789"),
    );
}

/// Runs `mint ARGS` expecting failure; returns (output, elapsed). The debug log
/// records whether the error is retryable.
fn failing_mint(cmd: &mut Command, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = cmd
        .env("RUST_LOG", "bedrock_keyd=debug")
        .arg("mint")
        .args(args)
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[test]
fn container_endpoint_failures_are_retryable_errors_within_a_bound() {
    // 6 s is the container source's bound (CONTAINER_TIMEOUT); the rest is slack
    // for process start-up on a loaded 2-core CI machine.
    const BOUND: Duration = Duration::from_secs(12);
    let cases = [
        ("500", Reply::Status(500)),
        ("garbage", Reply::Garbage),
        ("hanging", Reply::Hang),
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(name, reply)| {
            std::thread::spawn(move || {
                let env = TestEnv::new();
                let server = FakeServer::start(move |_| reply.clone());
                let (out, elapsed) = failing_mint(&mut container_env(&env, &server), &[]);
                (name, out, elapsed, server.requests().len())
            })
        })
        .collect();
    for handle in handles {
        let (name, out, elapsed, requests) = handle.join().unwrap();
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(69), "{name}: {err}");
        assert!(requests >= 1, "{name}: the endpoint was never asked");
        assert!(elapsed < BOUND, "{name}: took {elapsed:?}");
        assert!(
            err.contains("container credentials endpoint (http://127.0.0.1:"),
            "{name}: the error must name the source: {err}"
        );
        assert!(
            err.contains("credential endpoint unreachable or failing") || err.contains("timed out"),
            "{name}: {err}"
        );
        assert!(err.contains("retryable=true"), "{name}: {err}");
        if name == "hanging" {
            assert!(elapsed >= Duration::from_secs(2), "{name}: {elapsed:?}");
        }
    }
}

#[test]
fn already_expired_container_credentials_are_an_error_not_a_dead_key() {
    let env = TestEnv::new();
    let expired = rfc3339(SystemTime::now() - Duration::from_secs(90));
    let doc = creds_json(
        "ASIACONTAINEREXPIRED",
        "containerSecretX/0123456789abcdefghijklmn",
        "containerSessionTokenX-0123456789",
        &expired,
    );
    let server = FakeServer::start(move |_| Reply::Json(doc.clone()));
    let (out, _) = failing_mint(&mut container_env(&env, &server), &[]);
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(out.stdout.is_empty(), "no key may be printed");
    assert!(
        err.contains("container credentials endpoint (http://127.0.0.1:")
            && err.contains("(access key ASIACONTAINEREXPIRED) that expired at"),
        "{err}"
    );
    assert!(err.contains("retryable=true"), "{err}");
}

#[test]
fn container_token_file_with_a_newline_is_a_precise_configuration_error() {
    let env = TestEnv::new();
    let server = FakeServer::start(|_| Reply::Status(500));
    write_file(
        &env.path().join("eks-pod-identity-token"),
        &format!("{POD_TOKEN}\n"),
    );
    let (out, _) = failing_mint(&mut container_env(&env, &server), &[]);
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("ends with a newline"), "{err}");
    assert!(err.contains("retryable=false"), "{err}");
    assert!(!err.contains(POD_TOKEN), "{err}");
    assert!(server.requests().is_empty());
}

#[test]
fn no_credentials_lists_every_source_tried() {
    let env = TestEnv::new();
    let (out, elapsed) = failing_mint(&mut env.cmd(), &["--region", "us-east-1"]);
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    for source in [
        "environment variables",
        "profile \"default\"",
        "web identity token",
        "container credentials endpoint",
        "EC2 instance metadata: disabled by AWS_EC2_METADATA_DISABLED",
    ] {
        assert!(err.contains(source), "{source}: {err}");
    }
    assert!(err.contains("retryable=false"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn environment_credentials_last_the_requested_lifetime_unless_an_expiration_is_set() {
    let env = TestEnv::new();
    let minted = mint_json(
        env.cmd_with_example_creds()
            .env("AWS_SESSION_TOKEN", "envSessionToken-0123"),
        &["--region", "us-east-1", "--lifetime", "3h"],
    );
    assert_eq!(minted.decoded.lifetime, Duration::from_secs(3 * 3600));
    assert_eq!(
        minted.json["credentials_expires_at"],
        serde_json::Value::Null
    );

    // As `aws configure export-credentials --format env` and aws-vault set it.
    let (expiry, expiry_text) = in_secs(15 * 60);
    let minted = mint_json(
        env.cmd_with_example_creds()
            .env("AWS_SESSION_TOKEN", "envSessionToken-0123")
            .env("AWS_CREDENTIAL_EXPIRATION", &expiry_text),
        &["--region", "us-east-1", "--lifetime", "3h"],
    );
    assert_eq!(minted.decoded.expires_at, expiry);
    assert_eq!(minted.json["credentials_expires_at"], expiry_text.as_str());
    assert_signed_with(
        &minted,
        util::EXAMPLE_ACCESS_KEY_ID,
        util::EXAMPLE_SECRET_ACCESS_KEY,
        Some("envSessionToken-0123"),
    );
}

// ---------------------------------------------------------------------------------
// IMDS, against a local fake (the only test that leaves IMDS enabled).

#[test]
fn imds_expired_credentials_are_an_error_not_a_stretched_key() {
    let env = TestEnv::new();
    let (_, expired_text) = in_secs(0);
    let expired_text = rfc3339(parse_rfc3339(&expired_text).unwrap() - Duration::from_secs(60));
    let document = Arc::new(Mutex::new(creds_json(
        "ASIAIMDSAAAAAAAAAAAA",
        "imdsSecret/0123456789abcdefghijklmnopqrstu",
        "imdsSessionToken-0123456789",
        &expired_text,
    )));
    let doc = document.clone();
    let server = FakeServer::start(move |r| {
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/latest/api/token") => Reply::ImdsToken("imds-session-token".to_owned()),
            // IMDSv2: every read carries the session token.
            _ if r.header("x-aws-ec2-metadata-token") != Some("imds-session-token") => {
                Reply::Status(401)
            }
            ("GET", "/latest/meta-data/iam/security-credentials/") => {
                Reply::Text("ec2-role".to_owned())
            }
            ("GET", "/latest/meta-data/iam/security-credentials/ec2-role") => {
                Reply::Json(doc.lock().unwrap().clone())
            }
            _ => Reply::Status(404),
        }
    });
    let imds = |env: &TestEnv| {
        let mut cmd = env.cmd();
        cmd.env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url("/"))
            .env("AWS_REGION", "eu-north-1");
        cmd
    };

    // The SDK's IMDS provider would hand these out with an invented expiry 15 min
    // ahead ("static stability"), making a key that is dead on arrival.
    let (out, _) = failing_mint(&mut imds(&env), &[]);
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("EC2 instance metadata"), "{err}");
    assert!(err.contains("expired at"), "{err}");
    assert!(err.contains("retryable=true"), "{err}");

    let (expiry, expiry_text) = in_secs(25 * 60);
    *document.lock().unwrap() = creds_json(
        "ASIAIMDSBBBBBBBBBBBB",
        "imdsSecret/0123456789abcdefghijklmnopqrstu",
        "imdsSessionToken-0123456789",
        &expiry_text,
    );
    let minted = mint_json(&mut imds(&env), &[]);
    assert_eq!(minted.decoded.access_key_id, "ASIAIMDSBBBBBBBBBBBB");
    assert_eq!(minted.decoded.expires_at, expiry);
    assert_eq!(minted.json["credentials_expires_at"], expiry_text.as_str());
}

#[test]
fn the_region_comes_from_instance_metadata_last_and_its_absence_is_a_config_error() {
    // Neither --region, AWS_REGION nor a profile region: instance metadata is asked.
    let env = TestEnv::new();
    let server = FakeServer::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", "/latest/api/token") => Reply::ImdsToken("imds-session-token".to_owned()),
        ("GET", "/latest/meta-data/placement/region")
            if r.header("x-aws-ec2-metadata-token") == Some("imds-session-token") =>
        {
            Reply::Text("ap-southeast-2".to_owned())
        }
        _ => Reply::Status(404),
    });
    let minted = mint_json(
        env.cmd_with_example_creds()
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url("/")),
        &[],
    );
    assert_eq!(minted.decoded.region, "ap-southeast-2");

    // Without instance metadata either, it is a configuration error that says what to do.
    let (out, _) = failing_mint(&mut env.cmd_with_example_creds(), &[]);
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("no AWS region: pass --region, set AWS_REGION"),
        "{err}"
    );
}

#[test]
fn a_machine_without_imds_is_not_stalled() {
    // Hanging IMDS (a black-holed 169.254.169.254) and refused connections (no IMDS
    // at all): both end quickly, naming instance metadata.
    let hanging = FakeServer::start(|_| Reply::Hang);
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/")
    };
    for (name, endpoint) in [("hanging", hanging.url("/")), ("refused", refused)] {
        let env = TestEnv::new();
        let (out, elapsed) = failing_mint(
            env.cmd()
                .env_remove("AWS_EC2_METADATA_DISABLED")
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint),
            &["--region", "us-east-1"],
        );
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(69), "{name}: {err}");
        // Not an outage to retry: there is simply no IMDS here.
        assert!(
            err.contains("no AWS credentials found (tried: ")
                && err.contains("EC2 instance metadata: unreachable: "),
            "{name}: {err}"
        );
        // IMDS_TIMEOUT is 5 s; the rest is process start-up on a loaded machine.
        assert!(elapsed < Duration::from_secs(9), "{name}: took {elapsed:?}");
    }
}

// ---------------------------------------------------------------------------------
// A real STS: moto.

/// A `moto_server` on a free 127.0.0.1 port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Option<Self> {
        let exe = moto_server()?;
        let port = util::free_port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let moto = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not listen on 127.0.0.1:{port} within 30s");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The sessions STS handed out, from moto's state API.
    fn assumed_roles(&self) -> Vec<serde_json::Value> {
        let data: serde_json::Value =
            serde_json::from_str(&http_get(self.port, "/moto-api/data.json")).unwrap();
        data["sts"]["AssumedRole"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn session(&self, session_name: &str) -> serde_json::Value {
        let sessions = self.assumed_roles();
        let found: Vec<_> = sessions
            .iter()
            .filter(|s| s["session_name"] == session_name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "sessions named {session_name}: {sessions:?}"
        );
        for field in ["secret_access_key", "session_token"] {
            if let Some(secret) = found[0][field].as_str() {
                crate::leaks::register_secret(secret);
            }
        }
        found[0].clone()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server` next to `$BEDROCK_KEYD_PYTHON`, in `./.venv`, or on PATH.
fn moto_server() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(python) = std::env::var_os("BEDROCK_KEYD_PYTHON")
        && let Some(dir) = Path::new(&python).parent()
    {
        candidates.push(dir.join("moto_server"));
    }
    candidates.push(util::repo_root().join(".venv/bin/moto_server"));
    candidates.push(PathBuf::from("moto_server"));
    candidates.into_iter().find(|exe| {
        Command::new(exe)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Checks a key against the session STS returned: same access key id, signed with
/// its secret and token, capped at its expiry, which is `session_secs` away.
fn assert_signed_by_session(minted: &Minted, session: &serde_json::Value, session_secs: u64) {
    let id = session["access_key_id"].as_str().unwrap();
    let secret = session["secret_access_key"].as_str().unwrap();
    let token = session["session_token"].as_str().unwrap();
    assert_eq!(minted.decoded.access_key_id, id);
    assert!(minted.decoded.has_session_token);
    assert_signed_with(minted, id, secret, Some(token));
    // The 12 h key is capped to the session: the key's expiry is the credentials'.
    assert_eq!(
        minted.json["expires_at"],
        minted.json["credentials_expires_at"]
    );
    let lifetime = minted.decoded.lifetime.as_secs();
    assert!(
        (session_secs - 10..=session_secs).contains(&lifetime),
        "lifetime {lifetime}s, session {session_secs}s"
    );
    assert_no_secrets(&minted.stderr, &[secret, token, &minted.key]);
}

#[test]
fn role_arn_on_top_of_static_credentials_signs_with_the_sts_session() {
    let Some(moto) = Moto::start() else {
        return util::skip("moto_server not found (pip install 'moto[server]')");
    };
    let env = TestEnv::new();
    // Temporary base credentials: their session token travels to STS in a header.
    let base_token = "baseSessionToken-0123456789abcdef";
    let minted = mint_json(
        env.cmd_with_example_creds()
            .env("AWS_SESSION_TOKEN", base_token)
            .env("AWS_ENDPOINT_URL_STS", moto.url())
            .env("RUST_LOG", "trace"),
        &[
            "--region",
            "ap-southeast-2",
            "--role-arn",
            "arn:aws:iam::123456789012:role/bedrock-invoke",
            "--external-id",
            "ext-42",
            "--role-session-name",
            "it-static-role",
            "--role-session-duration",
            "3h",
        ],
    );
    let session = moto.session("it-static-role");
    assert_eq!(
        session["role_arn"],
        "arn:aws:iam::123456789012:role/bedrock-invoke"
    );
    assert_eq!(session["external_id"], "ext-42");
    assert_ne!(minted.decoded.access_key_id, util::EXAMPLE_ACCESS_KEY_ID);
    assert_eq!(minted.decoded.region, "ap-southeast-2");
    // The session length asked for is what STS granted, and what caps the key.
    assert_signed_by_session(&minted, &session, 3 * 3600);
    assert_no_secrets(
        &minted.stderr,
        &[util::EXAMPLE_SECRET_ACCESS_KEY, base_token],
    );
}

#[test]
fn web_identity_token_file_signs_with_the_sts_session() {
    let Some(moto) = Moto::start() else {
        return util::skip("moto_server not found (pip install 'moto[server]')");
    };
    let env = TestEnv::new();
    // A JWT-shaped token, as the kubelet projects it for IRSA.
    let token_file = env.path().join("irsa-token");
    write_file(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwIn0.c2lnbmF0dXJl",
    );
    let minted = mint_json(
        env.cmd()
            .env("AWS_ENDPOINT_URL_STS", moto.url())
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
            .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa")
            .env("AWS_ROLE_SESSION_NAME", "it-web-identity")
            .env("AWS_REGION", "us-east-2")
            .env("RUST_LOG", "trace"),
        &[],
    );
    let session = moto.session("it-web-identity");
    assert_eq!(session["role_arn"], "arn:aws:iam::123456789012:role/irsa");
    // STS's default session length: 1 h.
    assert_signed_by_session(&minted, &session, 3600);
}

#[test]
fn access_denied_assuming_a_role_is_a_precise_permanent_error() {
    // A stand-in STS that refuses, in STS's own error format (moto's differs).
    let server = FakeServer::start(|_| {
        Reply::Xml(
            403,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
             <Type>Sender</Type><Code>AccessDenied</Code><Message>User: \
             arn:aws:iam::123456789012:user/dev is not authorized to perform: sts:AssumeRole \
             on resource: arn:aws:iam::123456789012:role/locked</Message></Error>\
             <RequestId>4b1c</RequestId></ErrorResponse>"
                .to_owned(),
        )
    });
    let env = TestEnv::new();
    let (out, elapsed) = failing_mint(
        env.cmd_with_example_creds()
            .env("AWS_ENDPOINT_URL_STS", server.url("")),
        &[
            "--region",
            "us-east-1",
            "--role-arn",
            "arn:aws:iam::123456789012:role/locked",
        ],
    );
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("error: access denied assuming role arn:aws:iam::123456789012:role/locked: ")
            && err.contains("not authorized to perform: sts:AssumeRole"),
        "{err}"
    );
    assert!(err.contains("retryable=false"), "{err}");
    // A refusal is not retried.
    assert_eq!(server.requests().len(), 1);
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(!err.contains(util::EXAMPLE_SECRET_ACCESS_KEY));
}

// ---------------------------------------------------------------------------------
// Profiles in a temp HOME.

const PROFILE_KEY_ID: &str = "AKIAPROFILESTATIC001";
const PROFILE_SECRET: &str = "profileStaticSecret/0123456789abcdefghijk";

fn write_profiles(env: &TestEnv, process_expiry: &str) {
    let home = env.home();
    let script = env.path().join("creds-process.sh");
    crate::leaks::register_secret("processSecret/0123456789abcdefghijklmn");
    crate::leaks::register_secret("processSessionToken-0123456789");
    write_file(
        &script,
        &format!(
            "#!/bin/sh\ncat <<'EOF'\n{}\nEOF\n",
            serde_json::json!({
                "Version": 1,
                "AccessKeyId": "ASIAPROCESS000000001",
                "SecretAccessKey": "processSecret/0123456789abcdefghijklmn",
                "SessionToken": "processSessionToken-0123456789",
                "Expiration": process_expiry,
            })
        ),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    write_file(
        &home.join(".aws/credentials"),
        &format!(
            "[static]\naws_access_key_id = {PROFILE_KEY_ID}\naws_secret_access_key = {PROFILE_SECRET}\n"
        ),
    );
    write_file(
        &home.join(".aws/config"),
        &format!(
            "[profile static]\nregion = eu-west-1\n\n\
             [profile chained]\nrole_arn = arn:aws:iam::123456789012:role/chained\n\
             source_profile = static\nrole_session_name = it-profile-chain\nregion = eu-west-2\n\
             duration_seconds = 7200\n\n\
             [profile process]\ncredential_process = {}\nregion = eu-west-3\n\n\
             [profile orphan]\nrole_arn = arn:aws:iam::123456789012:role/orphan\n\
             source_profile = ghost\nregion = eu-west-1\n",
            script.display()
        ),
    );
}

#[test]
fn profiles_static_role_chain_and_credential_process() {
    let env = TestEnv::new();
    let (process_expiry, process_expiry_text) = in_secs(30 * 60);
    write_profiles(&env, &process_expiry_text);

    // A static profile: no expiry, the key lives its requested lifetime, and the
    // profile's region is used. An explicit --profile beats environment credentials.
    let minted = mint_json(
        env.cmd_with_example_creds().env("RUST_LOG", "trace"),
        &["--profile", "static", "--lifetime", "2h"],
    );
    assert_eq!(minted.decoded.access_key_id, PROFILE_KEY_ID);
    assert_eq!(minted.decoded.region, "eu-west-1");
    assert_eq!(minted.decoded.lifetime, Duration::from_secs(7200));
    assert!(!minted.decoded.has_session_token);
    assert_eq!(
        minted.json["credentials_expires_at"],
        serde_json::Value::Null
    );
    assert_signed_with(&minted, PROFILE_KEY_ID, PROFILE_SECRET, None);
    assert_no_secrets(&minted.stderr, &[PROFILE_SECRET, &minted.key]);

    // AWS_PROFILE selects it too, through the default chain.
    let minted = mint_json(env.cmd().env("AWS_PROFILE", "static"), &[]);
    assert_eq!(minted.decoded.access_key_id, PROFILE_KEY_ID);

    // credential_process: its Expiration caps the key.
    let minted = mint_json(
        env.cmd().env("RUST_LOG", "trace"),
        &["--profile", "process"],
    );
    assert_eq!(minted.decoded.access_key_id, "ASIAPROCESS000000001");
    assert_eq!(minted.decoded.region, "eu-west-3");
    assert_eq!(minted.decoded.expires_at, process_expiry);
    assert_eq!(
        minted.json["credentials_expires_at"],
        process_expiry_text.as_str()
    );
    assert_signed_with(
        &minted,
        "ASIAPROCESS000000001",
        "processSecret/0123456789abcdefghijklmn",
        Some("processSessionToken-0123456789"),
    );
    assert_no_secrets(
        &minted.stderr,
        &[
            "processSecret/0123456789abcdefghijklmn",
            "processSessionToken-0123456789",
        ],
    );

    // source_profile + role_arn: one STS AssumeRole signed with the static profile.
    let Some(moto) = Moto::start() else {
        return util::skip("moto_server not found (pip install 'moto[server]')");
    };
    let minted = mint_json(
        env.cmd()
            .env("AWS_ENDPOINT_URL_STS", moto.url())
            .env("RUST_LOG", "trace"),
        &["--profile", "chained"],
    );
    let session = moto.session("it-profile-chain");
    assert_eq!(
        session["role_arn"],
        "arn:aws:iam::123456789012:role/chained"
    );
    assert_eq!(minted.decoded.region, "eu-west-2");
    // duration_seconds is not read by the SDK: 1 h, and a warning says so.
    assert_signed_by_session(&minted, &session, 3600);
    assert!(
        minted.stderr.contains("ignores duration_seconds"),
        "{}",
        minted.stderr
    );
    assert_no_secrets(&minted.stderr, &[PROFILE_SECRET]);
}

#[test]
fn sso_profile_uses_the_cached_token_and_the_portal_credentials() {
    let env = TestEnv::new();
    let home = env.home();
    let (expiry, expiry_text) = in_secs(45 * 60);
    let expiry_ms = expiry.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let portal = FakeServer::start(move |r| {
        if r.path.starts_with("/federation/credentials")
            && r.path.contains("role_name=BedrockUser")
            && r.path.contains("account_id=123456789012")
            && r.header("x-amz-sso_bearer_token") == Some("sso-access-token-0123")
        {
            Reply::Json(
                serde_json::json!({"roleCredentials": {
                    "accessKeyId": "ASIASSOPORTAL0000001",
                    "secretAccessKey": "ssoSecret/0123456789abcdefghijklmnopq",
                    "sessionToken": "ssoSessionToken-0123456789",
                    "expiration": expiry_ms,
                }})
                .to_string(),
            )
        } else {
            Reply::Status(403)
        }
    });
    write_file(
        &home.join(".aws/config"),
        "[profile sso]\nsso_session = corp\nsso_account_id = 123456789012\n\
         sso_role_name = BedrockUser\nregion = us-west-2\n\n\
         [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\
         sso_region = us-east-1\n",
    );
    // What `aws sso login` leaves behind: the token cached under sha1(session name).
    let sha1 = Command::new("sh")
        .args(["-c", "printf corp | sha1sum | cut -d' ' -f1"])
        .output()
        .unwrap();
    let cache = home.join(format!(
        ".aws/sso/cache/{}.json",
        String::from_utf8_lossy(&sha1.stdout).trim()
    ));
    let (_, token_expiry) = in_secs(8 * 3600);
    write_file(
        &cache,
        &serde_json::json!({
            "accessToken": "sso-access-token-0123",
            "expiresAt": token_expiry,
            "region": "us-east-1",
            "startUrl": "https://corp.awsapps.com/start",
        })
        .to_string(),
    );
    let minted = mint_json(
        env.cmd()
            .env("AWS_ENDPOINT_URL_SSO", portal.url(""))
            .env("RUST_LOG", "trace"),
        &["--profile", "sso"],
    );
    assert_eq!(minted.decoded.access_key_id, "ASIASSOPORTAL0000001");
    assert_eq!(minted.decoded.region, "us-west-2");
    assert_eq!(minted.decoded.expires_at, expiry);
    assert_eq!(minted.json["credentials_expires_at"], expiry_text.as_str());
    assert_signed_with(
        &minted,
        "ASIASSOPORTAL0000001",
        "ssoSecret/0123456789abcdefghijklmnopq",
        Some("ssoSessionToken-0123456789"),
    );
    assert_no_secrets(
        &minted.stderr,
        &[
            "ssoSecret/0123456789abcdefghijklmnopq",
            "ssoSessionToken-0123456789",
            "sso-access-token-0123",
        ],
    );
}

#[test]
fn a_missing_profile_is_a_precise_error_with_exit_69() {
    let env = TestEnv::new();
    let (_, expiry) = in_secs(1800);
    write_profiles(&env, &expiry);
    let home = env.home();

    for args in [
        &["mint", "--profile", "nope", "--region", "us-east-1"][..],
        // No region either: the profile is what is wrong, not the region.
        &["mint", "--profile", "nope"][..],
    ] {
        // At the default log level: the whole of stderr is the one line a user sees.
        let out = util::at_default_log_level(&mut env.cmd())
            .args(args)
            .output()
            .unwrap();
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {err}");
        assert_eq!(
            err.trim(),
            format!(
                "bedrock-keyd: error: AWS profile \"nope\" not found in {h}/.aws/config, {h}/.aws/credentials",
                h = home.display()
            ),
            "{args:?}"
        );
    }

    // A source_profile that does not exist names both profiles.
    let out = env
        .cmd()
        .args(["mint", "--profile", "orphan"])
        .output()
        .unwrap();
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("AWS profile \"orphan\"") && err.contains("\"ghost\" is not found"),
        "{err}"
    );

    // AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE are the files named.
    let out = env
        .cmd()
        .env("AWS_CONFIG_FILE", env.path().join("cfg"))
        .env("AWS_SHARED_CREDENTIALS_FILE", env.path().join("creds"))
        .args(["mint", "--profile", "static"])
        .output()
        .unwrap();
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(&format!(
            "not found in {p}/cfg, {p}/creds",
            p = env.path().display()
        )),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------
// Redaction (issue 13)

/// What a failing `credential_process` prints to stderr: a password manager that
/// echoes what it had, shaped like real credentials (fake ones).
const LEAKY_KEY_ID: &str = "AKIAZZLEAKYPROCESS01";
const LEAKY_SECRET: &str = "leakyProcessSecret/K7MDENG+bPxRfiCY01234";
const LEAKY_TOKEN: &str = "IQoJb3JpZ2luX2VjELeakyProcessToken//////////wEaCXVzLWVhc3QtMSJHMEUCIQD0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP";

/// A profile `leaky` whose `credential_process` prints the fake credentials above to
/// stderr and exits 1.
fn leaky_profile(env: &TestEnv) {
    for secret in [LEAKY_KEY_ID, LEAKY_SECRET, LEAKY_TOKEN] {
        crate::leaks::register_secret(secret);
    }
    let script = env.path().join("leaky-process.sh");
    write_file(
        &script,
        &format!(
            "#!/bin/sh\necho \"vault: login refused for {LEAKY_KEY_ID} with secret {LEAKY_SECRET} (session {LEAKY_TOKEN})\" >&2\nexit 1\n"
        ),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    write_file(
        &env.home().join(".aws/config"),
        &format!(
            "[profile leaky]\ncredential_process = {}\nregion = eu-west-1\n",
            script.display()
        ),
    );
}

fn assert_redacted(stderr: &str) {
    assert_no_secrets(stderr, &[LEAKY_KEY_ID, LEAKY_SECRET, LEAKY_TOKEN]);
    // The rest of the process's message is still there to act on.
    assert!(
        stderr.contains("vault: login refused for [redacted access key id] with secret [redacted secret] (session [redacted session token])"),
        "{stderr}"
    );
}

#[test]
fn a_failing_credential_process_has_the_secrets_in_its_stderr_redacted() {
    let env = TestEnv::new();
    leaky_profile(&env);
    let key = env.path().join("k.key");

    for command in ["mint", "once"] {
        let mut cmd = env.cmd();
        cmd.args([command, "--profile", "leaky"]);
        if command == "once" {
            cmd.arg("--file").arg(&key);
        }
        // At the default level, as a user sees it: the final error.
        let out = util::at_default_log_level(&mut cmd).output().unwrap();
        assert_eq!(out.status.code(), Some(69), "{}", util::stderr(&out));
        assert_redacted(&util::stderr(&out));
    }

    // run: the WARN of each failed attempt.
    let mut cmd = env.cmd();
    cmd.args(["run", "--profile", "leaky", "--file"]).arg(&key);
    let mut daemon = crate::daemon::Daemon::start(&env, cmd);
    daemon.poll(Duration::from_secs(20), "a failed attempt logged", |log| {
        log.contains("login refused")
    });
    daemon.stop();
    assert_redacted(&daemon.log());
}
