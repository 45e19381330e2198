//! `bedrock-keyd token` as a credential helper runs it: the fast path from every kind
//! of sink, replacement of a key with too little left, one mint for many concurrent
//! callers, the per-user cache, and raw key files of older versions.
//!
//! Credentials come from a container credentials endpoint on 127.0.0.1 that counts its
//! requests, so "loads no credentials" is observed, not assumed. Where a call must not
//! load credentials, it is also run with none available at all: it can only succeed
//! from the sink.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use bedrock_keyd::daemon::token::{CacheIdentity, cache_file_name};
use bedrock_keyd::key::MintedKey;
use bedrock_keyd::key::decode::decode;
use bedrock_keyd::key::mint::mint;
use bedrock_keyd::key::{Lifetime, Region};

use crate::fake_http::{FakeServer, Reply, creds_json, in_secs};
use crate::util::{self, TestEnv};

const REGION: &str = "us-west-2";

/// A container credentials endpoint whose credentials expire in `secs`.
fn endpoint(secs: u64) -> FakeServer {
    let (_, expiry) = in_secs(secs);
    let doc = creds_json(
        "ASIATOKENHELPERAAAAA",
        "tokenHelperSecret/0123456789abcdefghijkl",
        "tokenHelperSessionToken-0123456789",
        &expiry,
    );
    FakeServer::start(move |_| Reply::Json(doc.clone()))
}

/// `bedrock-keyd` with credentials from `server` and nothing else.
fn with_endpoint(env: &TestEnv, server: &FakeServer) -> Command {
    let mut cmd = env.cmd();
    cmd.env(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        server.url("/v1/credentials"),
    );
    cmd
}

/// `bedrock-keyd` with no credentials anywhere: it can only serve from a sink.
fn without_credentials(env: &TestEnv) -> Command {
    env.cmd()
}

fn token(cmd: &mut Command, args: &[&str]) -> Output {
    cmd.arg("token").args(args).output().unwrap()
}

/// The key a successful `token` printed (raw format: the key and a newline).
fn printed(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        util::stderr(out)
    );
    let text = util::stdout(out);
    let key = text.strip_suffix('\n').expect("a newline after the key");
    assert!(key.starts_with("bedrock-api-key-") && !key.contains('\n'));
    key.to_owned()
}

fn path_arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A key signed with the example credentials at `signed`, living `lifetime`.
fn key_signed_at(signed: SystemTime, lifetime: Duration) -> MintedKey {
    let creds = Credentials::new(
        util::EXAMPLE_ACCESS_KEY_ID,
        util::EXAMPLE_SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    mint(
        &creds,
        &Region::new(REGION).unwrap(),
        Lifetime::new(lifetime).unwrap(),
        signed,
    )
    .unwrap()
}

#[test]
fn two_calls_print_the_same_key_and_the_second_loads_no_credentials() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let file = env.path().join("k.key");
    let args = ["--region", REGION, "--file", path_arg(&file)];

    let first = printed(&token(&mut with_endpoint(&env, &server), &args));
    let fetched = server.requests().len();
    assert!(fetched >= 1, "the first call loads credentials");
    // The file holds exactly the key: no newline for readers that take it verbatim.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);

    let second = printed(&token(&mut with_endpoint(&env, &server), &args));
    assert_eq!(second, first);
    assert_eq!(
        server.requests().len(),
        fetched,
        "the second call loaded credentials"
    );
    // And with no credentials at all, the sink still serves it.
    assert_eq!(
        printed(&token(&mut without_credentials(&env), &args)),
        first
    );
}

#[test]
fn a_key_with_less_than_min_valid_left_is_replaced() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let file = env.path().join("k.key");
    // A key with 20 minutes left is in the sink.
    let short = key_signed_at(
        SystemTime::now() - Duration::from_secs(40 * 60),
        Duration::from_secs(3600),
    );
    std::fs::write(&file, short.key.expose()).unwrap();
    let args = ["--region", REGION, "--file", path_arg(&file)];

    // Enough for 15 minutes: served as it is.
    let served = printed(&token(
        &mut without_credentials(&env),
        &[&args[..], &["--min-valid", "15m"]].concat(),
    ));
    assert_eq!(served, short.key.expose());

    // Not enough for 30 minutes: replaced, in the sink too.
    let out = token(
        &mut with_endpoint(&env, &server),
        &[&args[..], &["--min-valid", "30m"]].concat(),
    );
    let fresh = printed(&out);
    assert_ne!(fresh, short.key.expose());
    let decoded = decode(&fresh).unwrap();
    assert_eq!(decoded.access_key_id, "ASIATOKENHELPERAAAAA");
    assert!(decoded.remaining(SystemTime::now()) >= Duration::from_secs(30 * 60));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), fresh);
}

#[test]
fn a_key_signed_in_the_future_or_for_another_region_is_not_served() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let file = env.path().join("k.key");
    let args = ["--region", REGION, "--file", path_arg(&file)];
    let future = key_signed_at(
        SystemTime::now() + Duration::from_secs(3600),
        Duration::from_secs(3600),
    );
    std::fs::write(&file, future.key.expose()).unwrap();
    let fresh = printed(&token(&mut with_endpoint(&env, &server), &args));
    assert_ne!(fresh, future.key.expose());

    let out = token(
        &mut with_endpoint(&env, &server),
        &["--region", "eu-central-1", "--file", path_arg(&file)],
    );
    assert_eq!(decode(&printed(&out)).unwrap().region, "eu-central-1");
}

#[test]
fn credentials_expiring_before_min_valid_print_nothing_and_exit_69() {
    let env = TestEnv::new();
    // Credentials with 20 minutes left cannot sign a key that lasts 30.
    let server = endpoint(20 * 60);
    let file = env.path().join("k.key");
    let out = token(
        &mut with_endpoint(&env, &server),
        &[
            "--region",
            REGION,
            "--file",
            path_arg(&file),
            "--min-valid",
            "30m",
        ],
    );
    assert_eq!(out.status.code(), Some(69), "{}", util::stderr(&out));
    assert!(out.stdout.is_empty());
    let err = util::stderr(&out);
    assert!(err.contains("less than the 30m asked for"), "{err}");
    assert!(!file.exists(), "nothing is written");
    // 15 minutes they can.
    let out = token(
        &mut with_endpoint(&env, &server),
        &[
            "--region",
            REGION,
            "--file",
            path_arg(&file),
            "--min-valid",
            "15m",
        ],
    );
    printed(&out);
}

#[test]
fn twenty_concurrent_calls_against_an_empty_sink_mint_once() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let file = env.path().join("k.key");
    let children: Vec<_> = (0..20)
        .map(|_| {
            with_endpoint(&env, &server)
                .args(["token", "--region", REGION, "--file", path_arg(&file)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| printed(&c.wait_with_output().unwrap()))
        .collect();
    assert!(
        outputs.iter().all(|k| *k == outputs[0]),
        "20 identical keys"
    );
    // One mint: one credential fetch (the container provider makes one request).
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), outputs[0]);
}

#[test]
fn env_file_sink_serves_the_fast_path() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let env_file = env.path().join("app.env");
    std::fs::write(&env_file, "# app settings\nOTHER=1\n").unwrap();
    let args = ["--region", REGION, "--env-file", path_arg(&env_file)];
    let first = printed(&token(&mut with_endpoint(&env, &server), &args));
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!("# app settings\nOTHER=1\nAWS_BEARER_TOKEN_BEDROCK={first}\n")
    );
    assert_eq!(
        printed(&token(&mut without_credentials(&env), &args)),
        first
    );
}

/// Runs `script` under `wrapper` with the example credentials in `$CREDS` (to be put
/// in the environment of one command only) and the binary in `$BKD`.
fn keyring_script(env: &TestEnv, wrapper: &[&str], script: &str) -> Output {
    let out = env
        .clean(wrapper[0])
        .args(&wrapper[1..])
        .args(["sh", "-c", script])
        .env(
            "CREDS",
            format!(
                "AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={}",
                util::EXAMPLE_ACCESS_KEY_ID,
                util::EXAMPLE_SECRET_ACCESS_KEY
            ),
        )
        .env("BKD", util::bin())
        .env("ACCOUNT", format!("token-{}", std::process::id()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        util::stdout(&out),
        util::stderr(&out)
    );
    out
}

/// The first call mints with credentials, the second has none: both print one key.
fn assert_keyring_serves(output: &Output) {
    let text = util::stdout(output);
    let keys: Vec<&str> = text.lines().collect();
    assert_eq!(keys.len(), 2, "{text}");
    assert_eq!(keys[0], keys[1]);
    assert_eq!(decode(keys[0]).unwrap().region, REGION);
}

#[test]
fn secret_service_keyring_serves_the_fast_path() {
    for tool in ["dbus-run-session", "gnome-keyring-daemon", "dbus-send"] {
        if !util::have(tool) {
            return util::skip(&format!(
                "{tool} not found (apt-get install gnome-keyring dbus)"
            ));
        }
    }
    let env = TestEnv::new();
    let helper = util::repo_root().join("tests/scripts/with-keyring.sh");
    let out = keyring_script(
        &env,
        &["dbus-run-session", "--", "sh", helper.to_str().unwrap()],
        &format!(
            r#"set -e
args="token --region {REGION} --keyring bedrock-keyd-test:$ACCOUNT --keyring-backend secret-service"
env $CREDS "$BKD" $args
"$BKD" $args"#
        ),
    );
    assert_keyring_serves(&out);
}

#[test]
fn kernel_keyring_serves_the_fast_path() {
    if !util::have("keyctl") {
        return util::skip("keyctl not found (apt-get install keyutils)");
    }
    let env = TestEnv::new();
    let out = keyring_script(
        &env,
        &["keyctl", "session", "-"],
        &format!(
            r#"set -e
args="token --region {REGION} --keyring bedrock-keyd-test:$ACCOUNT --keyring-backend keyutils"
env $CREDS "$BKD" $args
"$BKD" $args
keyctl purge user keyring:$ACCOUNT@bedrock-keyd-test >/dev/null"#
        ),
    );
    assert_keyring_serves(&out);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A runtime dir as systemd makes it: 0700, the user's own.
fn runtime_dir(env: &TestEnv) -> PathBuf {
    let dir = env.path().join("run-user");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn no_sink_calls_reuse_a_private_per_user_cache() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let run = runtime_dir(&env);
    let call = |cmd: &mut Command, args: &[&str]| token(cmd.env("XDG_RUNTIME_DIR", &run), args);
    let first = printed(&call(
        &mut with_endpoint(&env, &server),
        &["--region", REGION],
    ));
    let cache = run.join("bedrock-keyd");
    assert_eq!(mode(&cache), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), first);

    // Reused without credentials.
    assert_eq!(
        printed(&call(&mut without_credentials(&env), &["--region", REGION])),
        first
    );
    // With no flags and no config file, the same key: the region from the
    // environment is the same identity.
    assert_eq!(
        printed(&call(
            without_credentials(&env).env("AWS_REGION", REGION),
            &[]
        )),
        first
    );
    // Another region or lifetime is another key, in another file.
    let other = printed(&call(
        &mut with_endpoint(&env, &server),
        &["--region", "eu-central-1", "--lifetime", "1h"],
    ));
    assert_ne!(other, first);
    assert_eq!(
        std::fs::read_dir(&cache)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with('.')
            })
            .count(),
        2
    );

    // Without XDG_RUNTIME_DIR: the user's cache directory under HOME.
    let out = token(&mut with_endpoint(&env, &server), &["--region", REGION]);
    printed(&out);
    assert_eq!(mode(&env.home().join(".cache/bedrock-keyd")), 0o700);
}

#[test]
fn a_cache_dir_other_users_may_enter_is_refused() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let run = runtime_dir(&env);
    let cache = run.join("bedrock-keyd");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = token(
        with_endpoint(&env, &server).env("XDG_RUNTIME_DIR", &run),
        &["--region", REGION],
    );
    assert_eq!(out.status.code(), Some(73), "{}", util::stderr(&out));
    assert!(
        util::stderr(&out).contains("lets other users in"),
        "{}",
        util::stderr(&out)
    );
    assert!(out.stdout.is_empty());

    // Nor is a valid key found there served: anyone could have put it there.
    let planted = key_signed_at(SystemTime::now(), Duration::from_secs(3600));
    let name = cache_file_name(&CacheIdentity {
        region: Some(REGION.to_owned()),
        lifetime: Duration::from_secs(12 * 3600),
        ..CacheIdentity::default()
    });
    std::fs::write(cache.join(name), planted.key.expose()).unwrap();
    let out = token(
        without_credentials(&env).env("XDG_RUNTIME_DIR", &run),
        &["--region", REGION],
    );
    assert_eq!(out.status.code(), Some(73), "{}", util::stderr(&out));
    assert!(out.stdout.is_empty());
    // Once the directory is private again, the same file serves.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = token(
        without_credentials(&env).env("XDG_RUNTIME_DIR", &run),
        &["--region", REGION],
    );
    assert_eq!(printed(&out), planted.key.expose());
}

#[test]
fn a_config_of_several_keys_needs_key_name() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let d = env.path().display();
    let config = env.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nregion = \"{REGION}\"\n\
             [[key]]\nname = \"alpha\"\n[[key.sink]]\ntype = \"file\"\npath = \"{d}/a.key\"\n\
             [[key]]\nname = \"beta\"\n[[key.sink]]\ntype = \"file\"\npath = \"{d}/b.key\"\n"
        ),
    )
    .unwrap();
    let out = token(
        &mut with_endpoint(&env, &server),
        &["--config", path_arg(&config)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        util::stderr(&out).contains("pick one with --key NAME (alpha, beta)"),
        "{}",
        util::stderr(&out)
    );
    let beta = printed(&token(
        &mut with_endpoint(&env, &server),
        &["--config", path_arg(&config), "--key", "beta"],
    ));
    assert_eq!(
        std::fs::read_to_string(env.path().join("b.key")).unwrap(),
        beta
    );
    assert!(!env.path().join("a.key").exists());
    let out = token(
        &mut with_endpoint(&env, &server),
        &["--config", path_arg(&config), "--key", "gamma"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(util::stderr(&out).contains("no key named \"gamma\""));
}

#[test]
fn formats_raw_env_json_and_helper() {
    let env = TestEnv::new();
    let file = env.path().join("k.key");
    let held = key_signed_at(SystemTime::now(), Duration::from_secs(3600));
    std::fs::write(&file, held.key.expose()).unwrap();
    let key = held.key.expose();
    let run = |format: &str| {
        let out = token(
            &mut without_credentials(&env),
            &["--file", path_arg(&file), "--format", format],
        );
        assert!(out.status.success(), "{}", util::stderr(&out));
        util::stdout(&out)
    };
    assert_eq!(run("raw"), format!("{key}\n"));
    assert_eq!(run("env"), format!("AWS_BEARER_TOKEN_BEDROCK={key}\n"));
    let expires_at = bedrock_keyd::clock::time::rfc3339(held.meta.expires_at);
    let helper: serde_json::Value = serde_json::from_str(&run("helper")).unwrap();
    assert_eq!(
        helper,
        serde_json::json!({"token": key, "expires_at": expires_at, "headers": {}})
    );
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json["key"], key);
    assert_eq!(json["region"], REGION);
    assert_eq!(json["expires_at"], expires_at.as_str());
}

/// Raw files of older versions end in a newline: every reader still takes them, and
/// writing the same key leaves them alone.
#[test]
fn raw_files_with_the_old_trailing_newline_keep_working() {
    let env = TestEnv::new();
    let file = env.path().join("old.key");
    let held = key_signed_at(SystemTime::now(), Duration::from_secs(3600));
    let key = held.key.expose();
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let f = path_arg(&file);

    assert_eq!(
        printed(&token(&mut without_credentials(&env), &["--file", f])),
        key
    );
    let out = without_credentials(&env)
        .args(["inspect", "--file", f, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let out = without_credentials(&env)
        .args(["status", "--file", f])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    // `once --if-valid-for` sees the key and leaves it alone (no credentials needed).
    let out = without_credentials(&env)
        .args(["once", "--file", f, "--if-valid-for", "30m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{key}\n"));
}

/// A minted key's dependents are told, as by `once`; a key served from the sink is not
/// news, so nobody is.
#[test]
fn dependents_are_notified_after_a_mint_only() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let file = env.path().join("k.key");
    let pid_file = env.path().join("app.pid");
    let seen = env.path().join("hups");
    let mut app = Command::new("sh")
        .args([
            "-c",
            r#"trap 'echo hup >> "$1"' HUP; echo $$ > "$2"; while :; do sleep 0.05; done"#,
            "sh",
            path_arg(&seen),
            path_arg(&pid_file),
        ])
        .spawn()
        .unwrap();
    // Until the whole pid is written, not merely the file created.
    while !std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n')) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let args = [
        "--region",
        REGION,
        "--file",
        path_arg(&file),
        "--pid-file",
        path_arg(&pid_file),
    ];
    let hups = || {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .lines()
            .count()
    };
    printed(&token(&mut with_endpoint(&env, &server), &args));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hups() < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hups(), 1, "the mint was announced");
    printed(&token(&mut with_endpoint(&env, &server), &args));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hups(), 1, "a key served from the sink is not announced");
    app.kill().unwrap();
    app.wait().unwrap();
}

/// A caller that finds the lock held waits, and then serves what the holder wrote
/// instead of minting again.
#[test]
fn a_caller_waiting_on_the_lock_serves_the_holders_key() {
    let env = TestEnv::new();
    let server = endpoint(3600 * 6);
    let file = env.path().join("k.key");
    let holder = bedrock_keyd::sink::lock::TargetLock::try_acquire(&file).unwrap();
    let waiting = with_endpoint(&env, &server)
        .args(["token", "--region", REGION, "--file", path_arg(&file)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let written = key_signed_at(SystemTime::now(), Duration::from_secs(3600));
    std::fs::write(&file, written.key.expose()).unwrap();
    drop(holder);
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(printed(&out), written.key.expose());
    assert!(server.requests().is_empty(), "it minted anyway");
}
