//! The secret-leak net under the whole suite (issue 8: "run the whole integration
//! suite with `RUST_LOG=trace` and assert no key, secret access key or session token
//! appears in any captured log or error").
//!
//! Every `bedrock-keyd` a test starts is `util::bin()`, a wrapper script that execs
//! the real binary (same pid, argv and exit status) with `RUST_LOG=trace` unless the
//! test chose a level itself, and copies its stderr (every log line and error it
//! prints) into the log directory of the test's `TestEnv`. The wrapper also records
//! the secrets the process was given through its environment: secret access key,
//! session token, bearer token, container authorization token, and the contents of
//! the container and web identity token files.
//! When the `TestEnv` is dropped at the end of the test, its logs are scanned for:
//! - anything shaped like a key (`bedrock-api-key-`, a key's base64 payload, a
//!   presigned URL's signature or token parameter);
//! - every secret the suite handed out: those in the processes' environments, in
//!   `~/.aws` files of the test's home, in credential documents served by the fake
//!   endpoints (`fake_http::creds_json`), and those registered with `register_secret`
//!   (STS answers, credential_process output);
//! - moto's session tokens by their fixed prefix.
//!
//! Doing it per test rather than as a second pass of the suite keeps CI at one run,
//! and a finding names the test that leaked.
//!
//! The copy is asynchronous (`tee`): a test reads a process's stderr until EOF
//! (`output()`, `$(…)` in a script), never "right after it exited".
//!
//! Stdout is not scanned: `mint` prints the key there because the user asked for it.
//! Keys in sink files are the product, not a leak. Tests of what a user sees by
//! default (an error is exactly one line) run at the default level
//! (`util::at_default_log_level`), and are still scanned. One test opts out of the
//! wrapper with `util::real_bin()`: `status::works_without_home_or_any_environment`,
//! which needs an empty environment and asserts that stderr stays empty.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::util::{self, TestEnv};

/// The environment variable through which `TestEnv::cmd()` tells the wrapper where
/// to put the log. The wrapper removes it before exec.
pub const LOG_DIR_VAR: &str = "BEDROCK_KEYD_TEST_LOG_DIR";

/// `RUST_LOG` value with which a test asks the wrapper for the default level (no
/// `RUST_LOG` at all): `util::at_default_log_level`.
pub const DEFAULT_LEVEL: &str = "@default";

/// The prefix of every key. Error messages may name it ("it does not start with
/// \"bedrock-api-key-\""); a key is the prefix followed by its base64 payload.
const KEY_PREFIX: &str = "bedrock-api-key-";

/// Strings no log may contain whatever the test did.
const KEY_MARKERS: &[&str] = &[
    // base64 of "bedrock.amazonaws.com/?Action=": the start of every key's payload.
    "YmVkcm9jay5hbWF6b25hd3MuY29t",
    "X-Amz-Signature=",
    "X-Amz-Security-Token=",
    "X-Amz-Credential=",
    // moto's STS session tokens all begin with this.
    "FQoGZXIvYXdzE",
];

static SECRETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Adds a secret the suite handed to a `bedrock-keyd` some other way than its
/// environment or `~/.aws` (an STS answer, a credential document, a process's JSON).
pub fn register_secret(secret: &str) {
    if secret.len() >= 8 {
        SECRETS.lock().unwrap().insert(secret.to_owned());
    }
}

/// The wrapper script, written once per test run.
pub fn wrapper() -> PathBuf {
    static WRAPPER: OnceLock<PathBuf> = OnceLock::new();
    WRAPPER
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("leak-wrapper-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            // Named like the real binary, so a process list looks the same before exec.
            let path = dir.join("bedrock-keyd");
            let real = util::real_bin();
            // Absolute paths only: some tests run with an empty PATH. `tee -p` keeps
            // copying into the log when the test stops reading stderr, and the log's
            // `.done` marker says the copy is complete (the scan waits for it).
            let script = format!(
                r#"#!/bin/bash
# Test harness wrapper (tests/it/leaks.rs); not part of the product.
dir=${{{var}:?this bedrock-keyd was started without a TestEnv log directory (tests/it/leaks.rs)}}
unset {var}
/bin/mkdir -p "$dir"
log="$dir/$$.log"
{{
  printf '%s\n' "${{AWS_SECRET_ACCESS_KEY-}}" "${{AWS_SESSION_TOKEN-}}" \
    "${{AWS_BEARER_TOKEN_BEDROCK-}}" "${{AWS_CONTAINER_AUTHORIZATION_TOKEN-}}"
  for f in "${{AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE-}}" "${{AWS_WEB_IDENTITY_TOKEN_FILE-}}"; do
    if [ -f "$f" ]; then /bin/cat "$f"; echo; fi
  done
}} > "$log.secrets"
if [ "${{RUST_LOG-}}" = '{default}' ]; then unset RUST_LOG; else export RUST_LOG="${{RUST_LOG-trace}}"; fi
exec 2> >(/usr/bin/tee -p -a "$log" >&2; : > "$log.done")
exec '{real}' "$@"
"#,
                var = LOG_DIR_VAR,
                default = DEFAULT_LEVEL,
                real = real.display(),
            );
            let tmp = dir.join(".bedrock-keyd.tmp");
            std::fs::write(&tmp, script).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            path
        })
        .clone()
}

/// One secret or marker found in one log.
#[derive(Debug)]
pub struct Finding {
    pub log: PathBuf,
    pub what: String,
}

/// Scans every log under `logs` against the markers, the registered secrets, the
/// secrets the wrapper recorded, and `extra`.
pub fn scan(logs: &Path, extra: &[String]) -> Vec<Finding> {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let logs: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    wait_for_copies(&logs);

    let mut secrets: BTreeSet<String> = SECRETS.lock().unwrap().clone();
    secrets.extend(extra.iter().filter(|s| s.len() >= 8).cloned());
    secrets.insert(util::EXAMPLE_SECRET_ACCESS_KEY.to_owned());
    for p in paths
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".secrets"))
    {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        secrets.extend(text.lines().filter(|l| l.len() >= 8).map(str::to_owned));
    }

    let mut findings = Vec::new();
    for log in logs {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        let keys = text.match_indices(KEY_PREFIX).any(|(at, _)| {
            text[at + KEY_PREFIX.len()..]
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        });
        if keys {
            findings.push(Finding {
                log: log.clone(),
                what: "a key (\"bedrock-api-key-\" and a payload)".to_owned(),
            });
        }
        for marker in KEY_MARKERS {
            if text.contains(marker) {
                findings.push(Finding {
                    log: log.clone(),
                    what: format!("key marker {marker:?}"),
                });
            }
        }
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                // The finding names the secret by its length, not its value: the
                // report itself must not become the leak.
                findings.push(Finding {
                    log: log.clone(),
                    what: format!(
                        "a {}-character secret starting {:?}",
                        secret.len(),
                        &secret[..4]
                    ),
                });
            }
        }
    }
    findings
}

/// Waits (bounded) until the wrapper's copy of each log is complete: the test may
/// drop its `TestEnv` a moment after killing the daemon, before `tee` drained it.
fn wait_for_copies(logs: &[&PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    for log in logs {
        let mut done = log.as_os_str().to_owned();
        done.push(".done");
        while !Path::new(&done).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Secrets written into the files of `home/.aws` (profiles, SSO caches).
pub fn secrets_in_aws_files(home: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![home.join(".aws")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines() {
                if let Some((name, value)) = line.split_once('=') {
                    let name = name.trim();
                    if name == "aws_secret_access_key" || name == "aws_session_token" {
                        out.push(value.trim().to_owned());
                    }
                }
            }
            // JSON caches (SSO): "accessToken", "secretAccessKey", "sessionToken".
            if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) {
                for field in [
                    "accessToken",
                    "secretAccessKey",
                    "sessionToken",
                    "refreshToken",
                ] {
                    if let Some(v) = doc.get(field).and_then(|v| v.as_str()) {
                        out.push(v.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// Called from `TestEnv`'s drop: fails the test when any of its logs leaked.
pub fn assert_clean(env: &TestEnv) {
    let findings = scan(&env.logs(), &secrets_in_aws_files(&env.home()));
    if !findings.is_empty() {
        let list: Vec<String> = findings
            .iter()
            .map(|f| format!("  {}: {}", f.log.display(), f.what))
            .collect();
        // Keep the logs for the post-mortem: the TempDir would delete them.
        let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "leaked-logs-{}-{}",
            std::process::id(),
            env.path().file_name().unwrap().to_string_lossy()
        ));
        let _ = std::process::Command::new("cp")
            .arg("-a")
            .arg(env.logs())
            .arg(&kept)
            .status();
        panic!(
            "secret leak: bedrock-keyd wrote secrets to its logs (copied to {}):\n{}",
            kept.display(),
            list.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The net catches what it is meant to: a planted key, a planted secret from the
    /// environment, a registered one, and none in a clean log.
    #[test]
    fn the_scanner_finds_planted_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path();
        std::fs::write(
            logs.join("1.log"),
            "INFO all good\nerror: it does not start with \"bedrock-api-key-\"\n",
        )
        .unwrap();
        std::fs::write(logs.join("1.log.done"), "").unwrap();
        assert!(scan(logs, &[]).is_empty());

        std::fs::write(logs.join("2.log"), "DEBUG token=bedrock-api-key-abc\n").unwrap();
        std::fs::write(logs.join("2.log.done"), "").unwrap();
        std::fs::write(logs.join("3.log"), "TRACE s=envSecret/12345\n").unwrap();
        std::fs::write(logs.join("3.log.done"), "").unwrap();
        std::fs::write(logs.join("3.log.secrets"), "envSecret/12345\n\n").unwrap();
        register_secret("registeredSecret-0987");
        std::fs::write(logs.join("4.log"), "x registeredSecret-0987 y").unwrap();
        std::fs::write(logs.join("4.log.done"), "").unwrap();
        std::fs::write(logs.join("5.log"), "profile fileSecret-5555").unwrap();
        std::fs::write(logs.join("5.log.done"), "").unwrap();
        let found: Vec<String> = scan(logs, &["fileSecret-5555".to_owned()])
            .into_iter()
            .map(|f| f.log.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["2.log", "3.log", "4.log", "5.log"]);
    }

    /// The wrapper really sits between the tests and the binary: the log gets the
    /// process's stderr, at TRACE when the test set no level, with its environment's
    /// secret recorded; and an explicit level is left alone.
    #[test]
    fn every_run_is_captured_at_trace() {
        let env = TestEnv::new();
        let out = env
            .cmd_with_example_creds()
            .args(["once", "--region", "us-east-1", "--file", "k.key"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", util::stderr(&out));
        let logs: Vec<PathBuf> = std::fs::read_dir(env.logs())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let log = logs
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("a captured log");
        wait_for_copies(&[log]);
        let text = std::fs::read_to_string(log).unwrap();
        assert_eq!(text, util::stderr(&out), "the log is the process's stderr");
        assert!(text.contains("TRACE") || text.contains("DEBUG"), "{text}");
        let recorded = std::fs::read_to_string(log.with_extension("log.secrets")).unwrap();
        assert!(recorded.contains(util::EXAMPLE_SECRET_ACCESS_KEY));

        let quiet = env
            .cmd_with_example_creds()
            .env("RUST_LOG", "warn")
            .args(["once", "--region", "us-east-1", "--file", "k2.key"])
            .output()
            .unwrap();
        assert!(quiet.status.success());
        assert!(quiet.stderr.is_empty(), "{}", util::stderr(&quiet));
    }
}
