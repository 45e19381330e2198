//! `bedrock-keyd run` as a real process: three keys signed with 2-minute credentials
//! from a local container-credentials endpoint, rotating; reloads, restores, stops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bedrock_keyd::key::decode::decode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::daemon::{ContainerCreds, Daemon, read_key, temp_files, wait_for};
use crate::util::{self, TestEnv};

const CREDS: ContainerCreds = ContainerCreds {
    token: "pod-identity-token",
    access_key_id: "ASIARUNTESTEXAMPLE01",
    secret: "run-test-secret",
    session_token: "run-test-session-token",
};

fn config_text(dir: &Path, keys: &[&str]) -> String {
    let mut text = String::from(
        "[defaults]\nregion = \"eu-west-1\"\nlifetime = \"6s\"\nmin_remaining = \"2s\"\nrefresh_at = 0.5\njitter = 0.0\n",
    );
    for (i, name) in keys.iter().enumerate() {
        let sink = match i % 3 {
            0 => format!("type = \"file\"\npath = \"{}/{name}.key\"", dir.display()),
            1 => format!(
                "type = \"file\"\nformat = \"json\"\npath = \"{}/{name}.json\"",
                dir.display()
            ),
            _ => format!(
                "type = \"env-file\"\npath = \"{}/{name}.env\"",
                dir.display()
            ),
        };
        text.push_str(&format!(
            "\n[[key]]\nname = \"{name}\"\n[[key.sink]]\n{sink}\n"
        ));
    }
    text
}

fn sink_path(dir: &Path, i: usize, name: &str) -> PathBuf {
    match i % 3 {
        0 => dir.join(format!("{name}.key")),
        1 => dir.join(format!("{name}.json")),
        _ => dir.join(format!("{name}.env")),
    }
}

/// The key in a sink file, signed with the endpoint's credentials (see `read_key`).
fn read_valid(path: &Path) -> Option<String> {
    read_key(path, CREDS.access_key_id, "eu-west-1")
}

/// Polls `paths` until each has held `rotations` distinct keys or `limit` passes.
fn watch_rotations(
    paths: &[PathBuf],
    rotations: usize,
    limit: Duration,
) -> BTreeMap<PathBuf, usize> {
    let mut seen: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    wait_for(limit, || {
        for path in paths {
            if let Some(key) = read_valid(path) {
                seen.entry(path.clone()).or_default().insert(key);
            }
        }
        paths
            .iter()
            .all(|p| seen.get(p).is_some_and(|s| s.len() >= rotations))
            .then_some(())
    });
    paths
        .iter()
        .map(|p| (p.clone(), seen.get(p).map_or(0, BTreeSet::len)))
        .collect()
}

#[test]
fn run_rotates_reloads_restores_and_stops_cleanly() {
    let env = TestEnv::new();
    let server = CREDS.endpoint();
    let dir = env.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let config = env.path().join("config.toml");
    let names = ["alpha", "beta", "gamma"];
    std::fs::write(&config, config_text(&dir, &names)).unwrap();
    let paths: Vec<PathBuf> = names
        .iter()
        .enumerate()
        .map(|(i, n)| sink_path(&dir, i, n))
        .collect();

    let mut daemon = Daemon::start(&env, CREDS.run(&env, &server, &config));

    // All three sinks rotate several times (every ~3 s).
    let counts = watch_rotations(&paths, 4, Duration::from_secs(30));
    assert!(
        counts.values().all(|&n| n >= 4),
        "rotations: {counts:?}\n{}",
        daemon.log()
    );

    // A broken config on SIGHUP (and on the file change) is rejected; the daemon keeps
    // running the old one and keeps rotating.
    std::fs::write(&config, "[[key]]\nname = \"x\"\nlifetyme = \"1h\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.alive(), "{}", daemon.log());
    assert!(
        daemon.log().contains("config reload rejected"),
        "{}",
        daemon.log()
    );
    let counts = watch_rotations(&paths, 2, Duration::from_secs(15));
    assert!(
        counts.values().all(|&n| n >= 2),
        "after a bad reload: {counts:?}"
    );

    // A good config with a fourth key is applied.
    let names4 = ["alpha", "beta", "gamma", "delta"];
    std::fs::write(&config, config_text(&dir, &names4)).unwrap();
    daemon.signal(Signal::SIGHUP);
    let delta = sink_path(&dir, 3, "delta");
    wait_for(Duration::from_secs(10), || read_valid(&delta))
        .unwrap_or_else(|| panic!("delta never appeared\n{}", daemon.log()));

    // A deleted sink file is restored within a second.
    std::fs::remove_file(&paths[1]).unwrap();
    wait_for(Duration::from_secs(1), || paths[1].exists().then_some(()))
        .unwrap_or_else(|| panic!("not restored within 1 s\n{}", daemon.log()));
    read_valid(&paths[1]).expect("restored file holds a valid key");

    // SIGTERM: exit 0, no secret in the log, every file complete.
    daemon.stop_cleanly(&CREDS.secrets());
    for path in paths.iter().chain([&delta]) {
        read_valid(path).expect("a complete key after SIGTERM");
    }
    let leftovers = temp_files(&dir);
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

/// The init-container → sidecar hand-off: `once --config` delivers every key, and
/// `--if-valid-for` leaves keys that are still good alone.
#[test]
fn once_with_a_config_and_if_valid_for() {
    let env = TestEnv::new();
    let dir = env.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nregion = \"us-east-2\"\nlifetime = \"1h\"\n\n\
             [[key]]\nname = \"one\"\n[[key.sink]]\ntype = \"file\"\npath = \"{d}/one.key\"\n\n\
             [[key]]\nname = \"two\"\n[[key.sink]]\ntype = \"env-file\"\npath = \"{d}/two.env\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let once = |extra: &[&str]| {
        let out = env
            .cmd_with_example_creds()
            .args(["once", "--config"])
            .arg(&config)
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), util::stderr(&out))
    };
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();

    let (code, log) = once(&[]);
    assert_eq!(code, Some(0), "{log}");
    let (one, two) = (read("one.key"), read("two.env"));
    assert_eq!(
        decode(one.trim()).unwrap().lifetime,
        Duration::from_secs(3600)
    );
    assert!(two.starts_with("AWS_BEARER_TOKEN_BEDROCK=bedrock-api-key-"));

    // Still valid for 30 min: nothing is minted or written.
    let (code, log) = once(&["--if-valid-for", "30m"]);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("left alone"), "{log}");
    assert_eq!(
        (read("one.key"), read("two.env")),
        (one.clone(), two.clone())
    );

    // Not valid for 2 h: both are re-minted (signed a second later at least).
    std::thread::sleep(Duration::from_millis(1100));
    let (code, log) = once(&["--if-valid-for", "2h"]);
    assert_eq!(code, Some(0), "{log}");
    assert_ne!(read("one.key"), one);
    assert_ne!(read("two.env"), two);

    // A missing sink file is not "still valid".
    std::fs::remove_file(dir.join("one.key")).unwrap();
    let before_two = read("two.env");
    let (code, log) = once(&["--if-valid-for", "30m"]);
    assert_eq!(code, Some(0), "{log}");
    assert!(dir.join("one.key").exists());
    assert_eq!(read("two.env"), before_two, "the other key was left alone");
    util::assert_no_key_in(&log);

    // Key flags next to --config are refused rather than ignored.
    let (code, log) = once(&["--region", "us-west-2"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--region"), "{log}");
}

/// Rewriting `~/.aws/credentials` re-mints keys with the new credentials, without a
/// signal and long before the refresh point.
#[test]
fn changed_aws_credentials_files_re_mint() {
    let env = TestEnv::new();
    let aws = env.home().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    let write_creds = |id: &str| {
        // Replace the file the way editors and `aws configure` do: write aside, rename.
        let tmp = aws.join("credentials.new");
        crate::leaks::register_secret(&format!("secret-{id}"));
        std::fs::write(
            &tmp,
            format!("[work]\naws_access_key_id = {id}\naws_secret_access_key = secret-{id}\n"),
        )
        .unwrap();
        std::fs::rename(&tmp, aws.join("credentials")).unwrap();
    };
    write_creds("AKIAFIRSTEXAMPLE0001");
    let key_file = env.path().join("work.key");
    let child = env
        .cmd()
        .args([
            "run",
            "--profile",
            "work",
            "--region",
            "us-east-1",
            "--lifetime",
            "1h",
            "--file",
        ])
        .arg(&key_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let access_key_id = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| decode(t.trim()).ok())
            .map(|d| d.access_key_id)
    };
    let key_from = |id: &str| {
        let started = Instant::now();
        wait_for(Duration::from_secs(10), || {
            (access_key_id(&key_file).as_deref() == Some(id)).then_some(())
        })
        .unwrap_or_else(|| panic!("no key from {id}"));
        started.elapsed()
    };
    key_from("AKIAFIRSTEXAMPLE0001");
    write_creds("AKIASECONDEXAMPLE002");
    let took = key_from("AKIASECONDEXAMPLE002");
    assert!(took < Duration::from_secs(5), "re-minted after {took:?}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    let log = util::stderr(&out);
    assert!(!log.contains("secret-AKIA"), "a secret leaked into the log");
}

/// 100 SIGHUPs in a second: the daemon stays up, coalesces them into a handful of
/// re-mints, and the key file is complete throughout.
#[test]
fn a_sighup_storm_is_coalesced() {
    let env = TestEnv::new();
    let server = CREDS.endpoint();
    let dir = env.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let config = env.path().join("config.toml");
    // A long lifetime: every mint below is caused by the storm.
    let text = config_text(&dir, &["storm"]).replace("lifetime = \"6s\"", "lifetime = \"1h\"");
    std::fs::write(&config, text).unwrap();
    let path = sink_path(&dir, 0, "storm");
    let mut daemon = Daemon::start(&env, CREDS.run(&env, &server, &config));
    wait_for(Duration::from_secs(10), || read_valid(&path))
        .unwrap_or_else(|| panic!("{}", daemon.log()));
    for _ in 0..100 {
        daemon.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(10));
        read_valid(&path).expect("a complete key during the storm");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.alive(), "{}", daemon.log());
    let mints = daemon.log().matches("key minted and delivered").count();
    // 100 signals over ~1.5 s, reloads debounced by 200 ms: about eight re-mints.
    assert!(
        (2..=20).contains(&mints),
        "{mints} mints for 100 SIGHUPs\n{}",
        daemon.log()
    );
    assert_eq!(daemon.stop(), Some(0));
    read_valid(&path).expect("a complete key after the storm");
}
