//! The rotation runs of the real clients (tests/clients): through `run --proxy` while
//! 20-second keys rotate (issue 15), and LiteLLM re-reading a rotating `--file` sink
//! (issue 16). The harness is in `clients`.

use std::time::Duration;

use crate::clients::{Client, Running, Target, commands, spawn};
use crate::daemon::Daemon;
use crate::standin::{self, Standin};
use crate::util::{self, TestEnv};

/// How long the clients run against a rotating daemon, and the key lifetime: 60 s of
/// 20-second keys re-minted at half-life is about 6 keys, ≥ 3 even with jitter and
/// start-up (the Done-when of issues 15 and 16: ≥ 2 rotations).
const ROTATION_RUN_SECS: u64 = 60;
const ROTATION_FLAGS: &[&str] = &[
    "--region",
    "us-west-2",
    "--lifetime",
    "20s",
    "--min-remaining",
    "5s",
];

/// `run --proxy` with TLS in front of the stand-in while keys rotate every ~10 s: boto3,
/// the Anthropic SDK, the JS SDK (its default HTTP/2 handler: the proxy offers h2) and
/// curl, all at once, configured once with the local token, and every call succeeds.
#[test]
fn real_clients_keep_working_through_the_proxy_while_keys_rotate() {
    let Some(cmds) = commands(&[Client::Boto3, Client::Anthropic, Client::Js, Client::Curl]) else {
        return;
    };
    let Some(s) = Standin::start() else { return };
    let env = TestEnv::new();
    let port = util::free_port();
    let token_file = env.path().join("proxy/proxy.token");
    std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
    let mut cmd = env.cmd_with_example_creds();
    cmd.arg("run")
        .args(ROTATION_FLAGS)
        .args(["--proxy", &format!("127.0.0.1:{port}")])
        .arg("--proxy-token-file")
        .arg(&token_file)
        .arg("--proxy-tls")
        .args(["--proxy-upstream", &s.url()])
        // The stand-in's self-signed certificate, as a corporate CA would be given.
        .env("AWS_CA_BUNDLE", s.ca_cert());
    let mut daemon = Daemon::start(&env, cmd);
    let cert = token_file.with_file_name("proxy.crt");
    daemon.poll(
        Duration::from_secs(20),
        "the proxy's token and certificate",
        |_| token_file.exists() && cert.exists(),
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    let endpoint = format!("https://127.0.0.1:{port}");
    daemon.poll(Duration::from_secs(20), "the proxy to answer", |_| {
        let o = standin::curl_to(
            &endpoint,
            &cert,
            "/model/m/converse",
            Some(token),
            &[],
            "{}",
        );
        standin::status_of(&o) == 200
    });
    let warmup = s.requests().len();

    let target = Target {
        endpoint: endpoint.clone(),
        ca: &cert,
        token: Some(token),
        js_http1: false,
        env: Vec::new(),
    };
    let running: Vec<Running> = cmds
        .into_iter()
        .map(|(client, cmd)| spawn(client, cmd, &target, ROTATION_RUN_SECS, &[], env.path()))
        .collect();
    let pids: Vec<u32> = running.iter().map(|r| r.child.id()).collect();
    for r in running {
        // One call a second for 60 s: well over 40 even on a loaded machine.
        let name = r.client.name();
        let out = r.finish(Duration::from_secs(ROTATION_RUN_SECS + 60), 40);
        eprintln!("{name}: {}", out.lines().last().unwrap_or_default());
    }
    // Still the four processes started above: `finish` waited on exactly those pids.
    assert_eq!(pids.len(), 4);
    assert!(daemon.alive(), "the daemon died\n{}", daemon.log());

    let seen = &s.requests()[warmup..];
    let keys = every_call_ok_across_two_rotations(seen, &s, &daemon);
    eprintln!(
        "{} requests through the proxy, {keys} distinct keys",
        seen.len()
    );
    daemon.stop_cleanly(&[util::EXAMPLE_SECRET_ACCESS_KEY, token]);
}

/// LiteLLM with `api_key: oidc/file/<the sink>` re-reads the file per call and sends it
/// verbatim: while `run` rotates the key every ~10 s, one LiteLLM process keeps
/// succeeding for 60 s. Needs the raw format without a trailing newline (issue 16):
/// with one, every call fails with "Illegal header value".
#[test]
fn litellm_reads_the_rotating_key_file_on_every_call() {
    let Some(mut cmds) = commands(&[Client::Litellm]) else {
        return;
    };
    let Some(s) = Standin::start() else { return };
    let env = TestEnv::new();
    let secrets = env.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let key_file = secrets.join("bedrock.key");
    let mut cmd = env.cmd_with_example_creds();
    cmd.arg("run")
        .args(ROTATION_FLAGS)
        .arg("--file")
        .arg(&key_file);
    let mut daemon = Daemon::start(&env, cmd);
    daemon.poll(Duration::from_secs(20), "the first key", |_| {
        key_file.exists()
    });

    let (client, cmd) = cmds.remove(0);
    let ca = s.ca_cert();
    let target = Target {
        endpoint: s.url(),
        ca: &ca,
        token: None,
        js_http1: false,
        env: vec![("LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS", secrets.clone())],
    };
    let key_arg = key_file.to_str().unwrap();
    let r = spawn(
        client,
        cmd,
        &target,
        ROTATION_RUN_SECS,
        &["--key-file", key_arg],
        env.path(),
    );
    // LiteLLM takes ~10 s to import before its first call.
    let out = r.finish(Duration::from_secs(ROTATION_RUN_SECS + 90), 40);
    eprintln!("litellm: {}", out.lines().last().unwrap_or_default());

    let keys = every_call_ok_across_two_rotations(&s.requests(), &s, &daemon);
    eprintln!("{keys} distinct keys seen by the stand-in");
    daemon.stop_cleanly(&[util::EXAMPLE_SECRET_ACCESS_KEY]);
}

/// The Done-when of issues 15 and 16: every call the stand-in saw succeeded, signed by
/// at least 3 keys (≥ 2 rotations). Returns how many keys it saw.
fn every_call_ok_across_two_rotations(
    seen: &[standin::Seen],
    s: &Standin,
    daemon: &Daemon,
) -> usize {
    assert!(seen.iter().all(|r| r.status == 200), "{seen:?}");
    let fingerprints = s.accepted_fingerprints();
    assert!(
        fingerprints.len() >= 3,
        "the stand-in saw {} keys, want ≥ 3 (≥ 2 rotations)\n{}",
        fingerprints.len(),
        daemon.log()
    );
    fingerprints.len()
}
