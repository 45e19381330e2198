//! Real Bedrock clients (tests/clients: boto3, the Anthropic Python SDK, the AWS SDK for
//! JavaScript v3, curl, LiteLLM) as long-lived processes against the stand-in: directly
//! with a minted key, through `run --proxy` while 20-second keys rotate (issue 15), and
//! LiteLLM re-reading a rotating `--file` sink (issue 16).
//!
//! Each client calls about once a second for the whole run and prints `ok …` or
//! `fail <status> …` per call and a final `tally ok=N fail=M`; the tests require every
//! call to succeed, from one process per client (never restarted), and the stand-in to
//! have accepted several distinct keys (it verifies each one's signature itself).
//! A missing client (Python package, node_modules, curl) skips with `util::skip`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::daemon::wait_for;
use crate::standin::{self, Standin};
use crate::util::{self, TestEnv};

/// One of the client scripts of tests/clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Client {
    Boto3,
    Anthropic,
    Js,
    Curl,
    Litellm,
}

impl Client {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Client::Boto3 => "boto3",
            Client::Anthropic => "anthropic",
            Client::Js => "js",
            Client::Curl => "curl",
            Client::Litellm => "litellm",
        }
    }

    /// The command that runs this client, or why it cannot run here.
    fn command(self) -> Result<Command, String> {
        let dir = util::repo_root().join("tests/clients");
        let python = |module: &str, script: &str| {
            util::python_with(module)
                .map(|py| {
                    let mut c = Command::new(py);
                    c.arg(dir.join(script));
                    c
                })
                .ok_or_else(|| format!("no Python with {module} (.ci/run installs it in .venv)"))
        };
        match self {
            Client::Boto3 => python("boto3", "boto3_client.py"),
            Client::Anthropic => python("anthropic", "anthropic_client.py"),
            Client::Litellm => python("litellm", "litellm_client.py"),
            Client::Js => {
                let sdk = dir.join("js/node_modules/@aws-sdk/client-bedrock-runtime");
                if !sdk.exists() {
                    return Err(
                        "the AWS SDK for JavaScript is not installed (npm ci in tests/clients/js)"
                            .into(),
                    );
                }
                if !runs(Command::new("node").arg("--version")) {
                    return Err("node is not installed".into());
                }
                let mut c = Command::new("node");
                c.arg(dir.join("js/client.mjs"));
                Ok(c)
            }
            Client::Curl => {
                if !runs(Command::new("curl").arg("--version")) {
                    return Err("curl is not installed".into());
                }
                Ok(Command::new(dir.join("curl_client.sh")))
            }
        }
    }
}

fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The commands for `clients`, or `None` after `util::skip` when one is missing.
pub(crate) fn commands(clients: &[Client]) -> Option<Vec<(Client, Command)>> {
    let mut out = Vec::new();
    for &client in clients {
        match client.command() {
            Ok(cmd) => out.push((client, cmd)),
            Err(why) => {
                util::skip(&why);
                return None;
            }
        }
    }
    Some(out)
}

/// A client process started by `spawn`, its output going to a file.
pub(crate) struct Running {
    pub(crate) client: Client,
    pub(crate) child: Child,
    pub(crate) out: PathBuf,
}

/// Where and how a client calls: the base URL, the CA bundle it trusts, and its key
/// (the token a client is configured with once, in `AWS_BEARER_TOKEN_BEDROCK`).
pub(crate) struct Target<'a> {
    pub(crate) endpoint: String,
    pub(crate) ca: &'a Path,
    pub(crate) token: Option<&'a str>,
    /// For the JS SDK: NodeHttpHandler (HTTP/1.1) instead of its default HTTP/2 one.
    pub(crate) js_http1: bool,
    /// More environment for the client (after the environment is cleared).
    pub(crate) env: Vec<(&'static str, PathBuf)>,
}

pub(crate) fn spawn(
    client: Client,
    mut cmd: Command,
    target: &Target,
    secs: u64,
    extra: &[&str],
    scratch: &Path,
) -> Running {
    let out = scratch.join(format!("{}.out", client.name()));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Node prints a support-policy warning for node 20; it is not the client's output.
        .env("NODE_NO_WARNINGS", "1")
        .env("NODE_EXTRA_CA_CERTS", target.ca)
        .env("AWS_CA_BUNDLE", target.ca)
        .args(["--endpoint", &target.endpoint])
        .arg("--ca")
        .arg(target.ca)
        .args(["--duration", &secs.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap());
    if let Some(token) = target.token {
        cmd.env("AWS_BEARER_TOKEN_BEDROCK", token);
    }
    cmd.envs(target.env.iter().map(|(k, v)| (k, v)));
    if client == Client::Js && target.js_http1 {
        cmd.arg("--http1");
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", client.name()));
    Running { client, child, out }
}

impl Running {
    /// Waits for the end of the run (bounded) and checks every call succeeded and there
    /// were at least `min_calls`. Returns the output for further checks.
    pub(crate) fn finish(mut self, limit: Duration, min_calls: usize) -> String {
        let status = wait_for(limit, || self.child.try_wait().unwrap());
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default();
        let name = self.client.name();
        util::assert_no_key_in(&out);
        util::assert_no_key_in(&err);
        let status =
            status.unwrap_or_else(|| panic!("{name} still running after {limit:?}\n{out}\n{err}"));
        let failures: Vec<&str> = out.lines().filter(|l| l.starts_with("fail")).collect();
        assert!(
            failures.is_empty(),
            "{name}: {} failed calls, first: {}\n{err}",
            failures.len(),
            failures[0]
        );
        let oks = out.lines().filter(|l| l.starts_with("ok ")).count();
        assert!(
            status.success() && oks >= min_calls,
            "{name}: {status}, {oks} calls succeeded (want ≥ {min_calls})\n{out}\n{err}"
        );
        assert!(
            out.lines()
                .last()
                .is_some_and(|l| l.starts_with("tally ok=")),
            "{name}: no tally\n{out}\n{err}"
        );
        out
    }
}

/// Every client once, concurrently, straight at the stand-in with a key from `mint`:
/// proves the scripts and the stand-in before anything stands between them. LiteLLM
/// reads the key from a file written here without a trailing newline.
#[test]
fn real_clients_call_the_standin_directly_with_a_minted_key() {
    let all = [
        Client::Boto3,
        Client::Anthropic,
        Client::Js,
        Client::Curl,
        Client::Litellm,
    ];
    let Some(cmds) = commands(&all) else {
        return;
    };
    let Some(s) = Standin::start() else { return };
    let env = TestEnv::new();
    let key = standin::mint_key(&env, "15m");
    let secrets = env.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let key_file = secrets.join("bedrock.key");
    std::fs::write(&key_file, &key).unwrap();
    let ca = s.ca_cert();
    // The stand-in speaks HTTP/1.1 only; the SDK's default HTTP/2 handler fails on it.
    let target = Target {
        endpoint: s.url(),
        ca: &ca,
        token: Some(&key),
        js_http1: true,
        env: vec![("LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS", secrets.clone())],
    };
    let key_arg = ["--key-file", key_file.to_str().unwrap()];
    let running: Vec<Running> = cmds
        .into_iter()
        .map(|(client, cmd)| {
            let extra: &[&str] = if client == Client::Litellm {
                &key_arg
            } else {
                &[]
            };
            spawn(client, cmd, &target, 4, extra, env.path())
        })
        .collect();
    for r in running {
        // LiteLLM takes ~10 s to import on this machine before its first call.
        r.finish(Duration::from_secs(90), 2);
    }
    let seen = s.requests();
    assert!(seen.iter().all(|r| r.status == 200), "{seen:?}");
    // Each SDK's streaming call reached its streaming route.
    for route in [
        "/converse-stream",
        "/invoke-with-response-stream",
        "/converse",
    ] {
        assert!(
            seen.iter().any(|r| r.path.ends_with(route)),
            "no {route} in {seen:?}"
        );
    }
    assert_eq!(s.accepted_fingerprints().len(), 1);
}
