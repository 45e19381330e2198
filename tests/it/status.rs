//! `bedrock-keyd status` as a real process: exit codes, one line per failing sink,
//! `--json`, config mode judged like `/readyz`, and no dependence on HOME.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};
use bedrock_keyd::key::{MintedKey, format as keyfile};

use crate::util::{self, TestEnv};

/// A key signed `ago` before now that lives `lifetime`.
fn key_signed(ago: Duration, lifetime: Duration) -> MintedKey {
    key_signed_at(SystemTime::now() - ago, lifetime)
}

/// A key signed at `at` (the future, too: what a machine with a wrong clock, or a
/// forger, makes) that lives `lifetime`.
fn key_signed_at(at: SystemTime, lifetime: Duration) -> MintedKey {
    let creds = Credentials::new(
        util::EXAMPLE_ACCESS_KEY_ID,
        util::EXAMPLE_SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    mint(
        &creds,
        &Region::new("us-west-2").unwrap(),
        Lifetime::new(lifetime).unwrap(),
        at,
    )
    .unwrap()
}

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

struct Files {
    valid: PathBuf,
    json: PathBuf,
    env_file: PathBuf,
    expired: PathBuf,
    short: PathBuf,
    garbage: PathBuf,
    empty: PathBuf,
    missing: PathBuf,
}

fn files(dir: &Path) -> Files {
    let fresh = key_signed(Duration::ZERO, HOUR);
    let f = Files {
        valid: dir.join("valid.key"),
        json: dir.join("valid.json"),
        env_file: dir.join("app.env"),
        expired: dir.join("expired.key"),
        short: dir.join("short.key"),
        garbage: dir.join("garbage.key"),
        empty: dir.join("empty.key"),
        missing: dir.join("missing.key"),
    };
    std::fs::write(&f.valid, keyfile::raw(&fresh.key).as_bytes()).unwrap();
    std::fs::write(&f.json, keyfile::json(&fresh.key, &fresh.meta).as_bytes()).unwrap();
    std::fs::write(
        &f.env_file,
        format!(
            "# app\nOTHER=1\nAWS_BEARER_TOKEN_BEDROCK={}\n",
            fresh.key.expose()
        ),
    )
    .unwrap();
    let expired = key_signed(2 * HOUR, HOUR);
    std::fs::write(&f.expired, keyfile::raw(&expired.key).as_bytes()).unwrap();
    // 2 minutes left.
    let short = key_signed(58 * MIN, HOUR);
    std::fs::write(&f.short, keyfile::raw(&short.key).as_bytes()).unwrap();
    std::fs::write(&f.garbage, "hello world\n").unwrap();
    std::fs::write(&f.empty, "").unwrap();
    f
}

fn status(env: &TestEnv, args: &[&str], paths: &[&Path]) -> (i32, String, String) {
    let mut cmd = env.cmd();
    cmd.arg("status").args(args);
    for p in paths {
        cmd.arg("--file").arg(p);
    }
    let out = cmd.output().unwrap();
    let (o, e) = (util::stdout(&out), util::stderr(&out));
    // The "not a key" message names the prefix a key must have, quoted; that is
    // not a key.
    util::assert_no_key_in(&o);
    util::assert_no_key_in(&e.replace("\"bedrock-api-key-\"", "PREFIX"));
    (out.status.code().unwrap_or(-1), o, e)
}

#[test]
fn exit_codes_and_one_line_per_failing_sink() {
    let env = TestEnv::new();
    let f = files(env.path());

    // Valid, in every sink format: exit 0 and silent.
    let (code, out, err) = status(&env, &[], &[&f.valid, &f.json, &f.env_file]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));

    let cases: [(&Path, &str); 5] = [
        (&f.expired, "expired at "),
        (&f.short, "only "),
        (&f.garbage, "holds no valid key: not a Bedrock API key"),
        (&f.empty, "holds no valid key: no key: the input is empty"),
        (&f.missing, "no such file"),
    ];
    for (path, why) in cases {
        let (code, out, err) = status(&env, &[], &[path]);
        assert_eq!(code, 3, "{}: {err}", path.display());
        assert_eq!(out, "");
        let expected = format!("bedrock-keyd: error: file {}: {why}", path.display());
        assert!(
            err.starts_with(&expected),
            "{err:?} should start with {expected:?}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let (_, _, err) = status(&env, &[], &[&f.short]);
    assert!(
        err.contains("less than 5m (the default --min-valid)"),
        "{err}"
    );

    // Several failures: a summary line, then one line per failing sink; the valid
    // sink is not listed.
    let (code, _, err) = status(&env, &[], &[&f.valid, &f.expired, &f.missing]);
    assert_eq!(code, 3);
    assert!(
        err.starts_with("bedrock-keyd: error: 2 of 3 sinks fail the probe:"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(!err.contains("valid.key"), "{err}");

    // --min-valid moves the bar both ways.
    assert_eq!(status(&env, &["--min-valid", "1m"], &[&f.short]).0, 0);
    assert_eq!(status(&env, &["--min-valid", "2h"], &[&f.valid]).0, 3);
    // --verbose reports successes too.
    let (code, out, _) = status(&env, &["-v"], &[&f.valid]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("ok: file {}: valid for ", f.valid.display())),
        "{out}"
    );
    // Usage errors are 2, not 3.
    assert_eq!(status(&env, &["--min-valid", "soon"], &[&f.valid]).0, 2);
}

#[test]
fn json_report() {
    let env = TestEnv::new();
    let f = files(env.path());
    let (code, out, _) = status(&env, &["--json"], &[&f.valid, &f.short, &f.missing]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["checked_at"].as_str().unwrap().ends_with('Z'));
    let sinks = v["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 3);
    assert_eq!(sinks[0]["ok"], true);
    assert_eq!(sinks[0]["state"], "valid");
    assert_eq!(sinks[0]["region"], "us-west-2");
    assert!(sinks[0]["remaining_seconds"].as_u64().unwrap() > 3500);
    assert!(
        sinks[0]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(sinks[1]["state"], "short");
    assert!(sinks[1]["expires_at"].is_string());
    assert_eq!(sinks[2]["state"], "missing");
    assert!(sinks[2].get("expires_at").is_none());
    assert_eq!(
        sinks[2]["sink"],
        format!("file {}", f.missing.display()).as_str()
    );

    let (code, out, _) = status(&env, &["--json"], &[&f.valid]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
}

#[test]
fn config_mode_judges_each_key_by_its_policy_like_readyz() {
    let env = TestEnv::new();
    let f = files(env.path());
    let config = env.path().join("config.toml");
    let write_config = |short_min_remaining: &str| {
        std::fs::write(
            &config,
            format!(
                "[defaults]\nregion = \"us-west-2\"\n\
                 [[key]]\nname = \"main\"\n\
                 [[key.sink]]\ntype = \"file\"\npath = \"{}\"\n\
                 [[key.sink]]\ntype = \"env-file\"\npath = \"{}\"\n\
                 [[key]]\nname = \"batch\"\nmin_remaining = \"{short_min_remaining}\"\n\
                 [[key.sink]]\ntype = \"file\"\nformat = \"json\"\npath = \"{}\"\n",
                f.valid.display(),
                f.env_file.display(),
                f.short.display(),
            ),
        )
        .unwrap();
    };
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .args(["status", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), util::stderr(&out))
    };

    // "batch" holds a key with 2 minutes left: fine with min_remaining 1m…
    write_config("1m");
    let (code, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    // …not with 5m, in the words /readyz uses.
    write_config("5m");
    let (code, err) = run(&[]);
    assert_eq!(code, 3);
    assert!(
        err.contains(&format!("key batch: file {}: only ", f.short.display()))
            && err.contains("less than min_remaining 5m"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // --min-valid overrides every key's policy.
    assert_eq!(run(&["--min-valid", "1m"]).0, 0);
    // The env-file sink is read through its variable.
    std::fs::write(&f.env_file, "AWS_BEARER_TOKEN_BEDROCK=\nOTHER=1\n").unwrap();
    let (code, err) = run(&["--min-valid", "1m"]);
    assert_eq!(code, 3);
    assert!(
        err.contains(&format!(
            "key main: env-file {} (AWS_BEARER_TOKEN_BEDROCK): holds no valid key",
            f.env_file.display()
        )),
        "{err}"
    );
    std::fs::write(&f.env_file, "# app\nOTHER=1\n").unwrap();
    let (code, err) = run(&["--min-valid", "1m"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("(AWS_BEARER_TOKEN_BEDROCK): no AWS_BEARER_TOKEN_BEDROCK= line in it"),
        "{err}"
    );
    // A broken config is a config error (78), not a failed probe.
    std::fs::write(&config, "[[key]]\nnam = 1\n").unwrap();
    assert_eq!(run(&[]).0, 78);
}

#[test]
fn works_without_home_or_any_environment() {
    let env = TestEnv::new();
    let f = files(env.path());
    // An exec probe in a scratch image: no HOME, no PATH, nothing. The real binary:
    // the leak wrapper would add RUST_LOG and its log directory to the environment.
    // Its stderr is asserted empty below, which covers leaks too.
    let out = std::process::Command::new(util::real_bin())
        .env_clear()
        .args(["status", "--min-valid", "5m", "--file"])
        .arg(&f.valid)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn keyring_sinks_are_read_through_the_keyring() {
    if !util::have("keyctl") {
        return util::skip("keyctl not found (apt-get install keyutils)");
    }
    let env = TestEnv::new();
    // Unique per run: the kernel's persistent keyring is shared by the user's processes.
    let account = format!("status-{}", std::process::id());
    std::fs::write(
        env.path().join("config.toml"),
        format!(
            "[[key]]\nname = \"k\"\nregion = \"us-west-2\"\nlifetime = \"1h\"\n\
             [[key.sink]]\ntype = \"keyring\"\nservice = \"bedrock-keyd-test\"\naccount = \"{account}\"\nbackend = \"keyutils\"\n"
        ),
    )
    .unwrap();
    let script = r#"
err=$("$BKD" status --config config.toml 2>&1); rc=$?; printf '%s\nbefore=%s\n' "$err" "$rc"
"$BKD" once --config config.toml 2>/dev/null
"$BKD" status --config config.toml --json; echo "after=$?"
keyctl purge user "keyring:$ACCOUNT@bedrock-keyd-test" >/dev/null 2>&1 || true
"#;
    // A fresh anonymous session keyring: nothing leaks into the caller's keyrings.
    let out = env
        .scripting("keyctl")
        .args(["session", "-", "sh", "-c", script])
        .env("ACCOUNT", &account)
        .output()
        .unwrap();
    let stdout = util::stdout(&out);
    util::assert_no_key_in(&stdout);
    assert!(
        stdout.contains(&format!(
            "key k: keyring bedrock-keyd-test:{account} (keyutils): no key stored in the keyring\nbefore=3"
        )),
        "{stdout}\n{}",
        util::stderr(&out)
    );
    assert!(stdout.contains("\"state\": \"valid\""), "{stdout}");
    assert!(stdout.contains("after=0"), "{stdout}");
}

/// A key whose signing time lies more than 5 minutes ahead would otherwise count as
/// valid until long after it can have been minted (issue 13): `inspect` and `status`
/// exit 3 saying so, `once --if-valid-for` replaces it. Up to 5 minutes is clock skew.
#[test]
fn a_key_signed_in_the_future_is_invalid_for_inspect_status_and_once() {
    let env = TestEnv::new();
    let future = env.path().join("future.key");
    let skewed = env.path().join("skewed.key");
    let signed_at = SystemTime::now() + HOUR;
    std::fs::write(
        &future,
        keyfile::raw(&key_signed_at(signed_at, HOUR).key).as_bytes(),
    )
    .unwrap();
    std::fs::write(
        &skewed,
        keyfile::raw(&key_signed_at(SystemTime::now() + 2 * MIN, HOUR).key).as_bytes(),
    )
    .unwrap();
    let issued = bedrock_keyd::clock::time::rfc3339(signed_at);

    let inspect = |path: &Path, json: bool| {
        let mut cmd = env.cmd();
        cmd.args(["inspect", "--file"]).arg(path);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = inspect(&future, false);
    assert_eq!(out.status.code(), Some(3), "{}", util::stderr(&out));
    let expected =
        format!("bedrock-keyd: error: the key is signed in the future: issued at {issued}, ");
    assert!(
        util::stderr(&out).starts_with(&expected),
        "{}",
        util::stderr(&out)
    );
    assert!(util::stdout(&out).contains("but signed in the future: invalid"));
    let out = inspect(&future, true);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["signed_in_future"], true);
    let out = inspect(&skewed, true);
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["signed_in_future"], false);

    let (code, _, err) = status(&env, &[], &[&future]);
    assert_eq!(code, 3, "{err}");
    let expected = format!(
        "bedrock-keyd: error: file {}: is signed in the future: issued at {issued}, ",
        future.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert_eq!(status(&env, &[], &[&skewed]).0, 0);

    // once --if-valid-for does not keep it: a key signed now replaces it.
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "us-west-2",
            "--lifetime",
            "1h",
            "--if-valid-for",
            "5m",
            "--file",
        ])
        .arg(&future)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    assert!(
        util::stderr(&out).contains("signed in the future"),
        "{}",
        util::stderr(&out)
    );
    let text = std::fs::read_to_string(&future).unwrap();
    let decoded = bedrock_keyd::key::decode::decode(text.trim()).unwrap();
    assert!(
        decoded.issued_at <= SystemTime::now(),
        "the future key was kept"
    );
}
