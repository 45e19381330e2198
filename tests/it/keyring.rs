//! The keyring sink against real keyrings: gnome-keyring as the Secret Service (in a
//! private D-Bus session) and the kernel keyring (in a private session keyring).
//!
//! Each test runs `bedrock-keyd once --keyring …` twice with different regions, so the
//! second key replaces the first, and reads the entry back after each run with the
//! consumer's own tool (`secret-tool`, `keyctl`), comparing it with the same key
//! written to a file by the same run.

use std::process::Command;

use crate::util::{self, TestEnv};

/// Runs `once` twice (store, then replace) and `read_back` after each; returns the
/// script's stdout: `file key`, `keyring value` pairs, one per line, `|`-separated.
fn store_read_replace(
    env: &TestEnv,
    wrapper: &[&str],
    backend: &str,
    read_back: &str,
    cleanup: &str,
) -> String {
    let script = format!(
        r#"set -e
for region in us-east-1 eu-central-1; do
  "$BKD" once --region "$region" --keyring bedrock-keyd-test:$ACCOUNT --keyring-backend {backend} --file k.key
  printf '%s|%s\n' "$(cat k.key)" "$({read_back})"
done
{cleanup}"#
    );
    let out = env
        .scripting(wrapper[0])
        .args(&wrapper[1..])
        .args(["sh", "-c", &script])
        // Unique per run: the kernel's persistent keyring is shared by every process
        // of the user, including a concurrent run of this test.
        .env("ACCOUNT", format!("alice-{}", std::process::id()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{backend}: {}\n{}",
        util::stdout(&out),
        util::stderr(&out)
    );
    util::stdout(&out)
}

fn assert_round_trips(output: &str) {
    let pairs: Vec<(&str, &str)> = output.lines().map(|l| l.split_once('|').unwrap()).collect();
    assert_eq!(pairs.len(), 2, "{output}");
    for ((file, stored), region) in pairs.iter().zip(["us-east-1", "eu-central-1"]) {
        assert_eq!(file, stored, "the keyring holds what the file holds");
        assert_eq!(
            bedrock_keyd::key::decode::decode(stored).unwrap().region,
            region
        );
    }
    assert_ne!(pairs[0].1, pairs[1].1, "the second run replaced the key");
}

#[test]
fn secret_service_store_read_back_replace_read_back() {
    for tool in [
        "dbus-run-session",
        "gnome-keyring-daemon",
        "secret-tool",
        "dbus-send",
    ] {
        if !util::have(tool) {
            return util::skip(&format!(
                "{tool} not found (apt-get install gnome-keyring libsecret-tools dbus)"
            ));
        }
    }
    let env = TestEnv::new();
    let helper = util::repo_root().join("tests/scripts/with-keyring.sh");
    let output = store_read_replace(
        &env,
        &["dbus-run-session", "--", "sh", helper.to_str().unwrap()],
        "secret-service",
        "secret-tool lookup service bedrock-keyd-test username $ACCOUNT",
        // The keyring lives and dies with the private D-Bus session.
        "",
    );
    assert_round_trips(&output);
}

#[test]
fn kernel_keyring_store_read_back_replace_read_back() {
    if !util::have("keyctl") {
        return util::skip("keyctl not found (apt-get install keyutils)");
    }
    let env = TestEnv::new();
    // A fresh anonymous session keyring: nothing leaks into the caller's keyrings.
    let output = store_read_replace(
        &env,
        &["keyctl", "session", "-"],
        "keyutils",
        "keyctl pipe %user:keyring:$ACCOUNT@bedrock-keyd-test",
        // The store also links the key into the user's persistent keyring, which
        // outlives the session: remove it.
        "keyctl purge user keyring:$ACCOUNT@bedrock-keyd-test >/dev/null",
    );
    assert_round_trips(&output);
}

#[test]
fn secret_service_from_a_tokio_blocking_thread() {
    // How the daemon will use the sink: the library, from `spawn_blocking`.
    for tool in ["dbus-run-session", "gnome-keyring-daemon", "dbus-send"] {
        if !util::have(tool) {
            return util::skip(&format!(
                "{tool} not found (apt-get install gnome-keyring dbus)"
            ));
        }
    }
    let helper = util::repo_root().join("tests/scripts/with-keyring.sh");
    let out = Command::new("dbus-run-session")
        .args(["--", "sh", helper.to_str().unwrap()])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sinks::helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BEDROCK_KEYD_TEST_HELPER", "keyring-in-tokio")
        .env("BEDROCK_KEYD_TEST_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert!(
        util::stdout(&out).contains("1 passed"),
        "{}",
        util::stdout(&out)
    );
}
