//! The bugs a new user hit on the first day (issue 17), each pinned by the behaviour
//! that was wrong: a relative `--config` that was never watched, `exec` leaving the
//! command's children behind, a defaulted `min_remaining` refusing short lifetimes,
//! SIGHUP not re-minting when the config on disk is broken, and `check` passing a
//! key whose region can come from nowhere.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::daemon::{ContainerCreds, Daemon, read_key, wait_for, wait_until};
use crate::util::{self, TestEnv};

const CREDS: ContainerCreds = ContainerCreds {
    token: "first-day-token",
    access_key_id: "ASIAFIRSTDAYEXAMPLE1",
    secret: "first-day-secret",
    session_token: "first-day-session-token",
};

/// A config of one key per name, each written to `NAME.key` in `dir`.
fn config_text(dir: &Path, names: &[&str]) -> String {
    let mut text = String::from("[defaults]\nregion = \"eu-west-1\"\nlifetime = \"1h\"\n");
    for name in names {
        text.push_str(&format!(
            "\n[[key]]\nname = \"{name}\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}/{name}.key\"\n",
            dir.display()
        ));
    }
    text
}

fn read_valid(path: &Path) -> Option<String> {
    read_key(path, CREDS.access_key_id, "eu-west-1")
}

/// Bug 1: `run --config config.toml` (relative to the working directory) reloads on an
/// edit as an absolute path does. Before the fix the watch got an empty directory and
/// edits were ignored.
#[test]
fn a_relative_config_path_is_watched() {
    let env = TestEnv::new();
    let server = CREDS.endpoint();
    let dir = env.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(env.path().join("config.toml"), config_text(&dir, &["one"])).unwrap();
    // TestEnv::cmd() runs in env.path(): the relative path names the file above.
    let mut daemon = Daemon::start(&env, CREDS.run(&env, &server, Path::new("config.toml")));
    wait_for(Duration::from_secs(10), || read_valid(&dir.join("one.key")))
        .unwrap_or_else(|| panic!("no first key\n{}", daemon.log()));

    // An edit, no signal: the new key appears.
    std::fs::write(
        env.path().join("config.toml"),
        config_text(&dir, &["one", "two"]),
    )
    .unwrap();
    if wait_for(Duration::from_secs(5), || read_valid(&dir.join("two.key"))).is_none() {
        panic!(
            "the edit of a relative --config was not picked up\n{}",
            daemon.log()
        );
    }
    assert!(daemon.alive());
    daemon.stop_cleanly(&CREDS.secrets());
}

/// Bug 4: SIGHUP re-mints every key even when the config on disk is invalid: the reload
/// is rejected, the running config stays, and its keys are re-minted (what the README
/// promises for SIGHUP).
#[test]
fn sighup_re_mints_even_when_the_config_on_disk_is_invalid() {
    let env = TestEnv::new();
    let server = CREDS.endpoint();
    let dir = env.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let config = env.path().join("config.toml");
    std::fs::write(&config, config_text(&dir, &["one"])).unwrap();
    let path = dir.join("one.key");
    let mut daemon = Daemon::start(&env, CREDS.run(&env, &server, &config));
    let first = wait_for(Duration::from_secs(10), || read_valid(&path))
        .unwrap_or_else(|| panic!("no first key\n{}", daemon.log()));

    std::fs::write(&config, "[[key]]\nname = \"x\"\nlifetyme = \"1h\"\n").unwrap();
    // Let the watcher's own (rejected, not forced) reload of the edit pass first, and
    // a second go by so a new key differs from the first (keys are signed to the second).
    daemon.poll(
        Duration::from_secs(5),
        "the edit's rejected reload",
        |log| log.contains("config reload rejected"),
    );
    std::thread::sleep(Duration::from_millis(1100));
    daemon.signal(Signal::SIGHUP);
    let second = wait_for(Duration::from_secs(5), || {
        read_valid(&path).filter(|k| *k != first)
    });
    assert!(
        second.is_some(),
        "SIGHUP with an invalid config did not re-mint\n{}",
        daemon.log()
    );
    assert!(daemon.alive());
    daemon.stop_cleanly(&CREDS.secrets());
}

/// Bug 3: the built-in `min_remaining` (5m) shrinks for short lifetimes instead of
/// turning them into a usage error; only an explicit one ≥ the lifetime is refused.
#[test]
fn a_short_lifetime_is_not_refused_for_the_default_min_remaining() {
    let env = TestEnv::new();
    let key = env.path().join("k");
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "us-east-1",
            "--lifetime",
            "61s",
            "--file",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    assert!(key.exists());

    // `run` with a 2-minute key starts and delivers.
    let run_key = env.path().join("run.key");
    let mut cmd = env.cmd_with_example_creds();
    cmd.args(["run", "--region", "us-east-1", "--lifetime", "2m", "--file"])
        .arg(&run_key);
    let mut daemon = Daemon::start(&env, cmd);
    daemon.poll(Duration::from_secs(10), "the first key", |log| {
        log.contains("key minted and delivered")
    });
    daemon.stop_cleanly(&[util::EXAMPLE_SECRET_ACCESS_KEY]);

    // An explicit min_remaining ≥ the lifetime is still an error.
    let out = env
        .cmd_with_example_creds()
        .args(["run", "--region", "us-east-1", "--lifetime", "2m"])
        .args(["--min-remaining", "5m", "--file"])
        .arg(&run_key)
        .output()
        .unwrap();
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--min-remaining 5m must be shorter than the lifetime 2m"),
        "{err}"
    );

    // `check` shows the value in force: a quarter of a 2m lifetime.
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(env.path(), &["short"]).replace("\"1h\"", "\"2m\""),
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = util::stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    assert!(
        text.contains("never later than 30s before expiry"),
        "{text}"
    );
}

/// Bug 3, second half: `once` refreshes nothing, so it offers no refresh flags (nor do
/// `mint` and `token`).
#[test]
fn once_and_mint_offer_no_refresh_flags() {
    let env = TestEnv::new();
    let help = env.cmd().args(["once", "--help"]).output().unwrap();
    let help = util::stdout(&help);
    for flag in ["--refresh-at", "--jitter", "--min-remaining"] {
        assert!(!help.contains(flag), "once --help lists {flag}\n{help}");
        for command in ["once", "mint", "token"] {
            let out = env
                .cmd_with_example_creds()
                .args([command, "--region", "us-east-1", flag, "1", "--file", "k"])
                .output()
                .unwrap();
            let err = util::stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{command} {flag}: {err}");
            assert!(
                err.contains(&format!("unexpected argument '{flag}'")),
                "{err}"
            );
        }
    }
    // `run` and `exec` keep them.
    for command in ["run", "exec"] {
        let help = env.cmd().args([command, "--help"]).output().unwrap();
        assert!(util::stdout(&help).contains("--min-remaining"), "{command}");
    }
}

/// Bug 5: `check` fails as the run would (78, "no AWS region") when it can see that
/// a key's region can come from nowhere: no `region`, no AWS_REGION or
/// AWS_DEFAULT_REGION, no region in the profile, instance metadata disabled.
#[test]
fn check_fails_for_a_key_without_any_region() {
    let env = TestEnv::new();
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[key]]\nname = \"k\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}/k.key\"\n",
            env.path().display()
        ),
    )
    .unwrap();
    let check = |cmd: &mut std::process::Command| {
        let out = cmd
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (out.status.code(), util::stderr(&out))
    };
    // TestEnv disables instance metadata and sets no region.
    let (code, err) = check(&mut env.cmd());
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("no AWS region"), "{err}");
    assert!(err.contains("key \"k\""), "{err}");
    // A config key is told about the config file, not about --region, which a config
    // file excludes.
    assert!(err.contains("set `region = \"…\"` for the key"), "{err}");
    assert!(!err.contains("--region"), "{err}");

    // The run gives the same message.
    let out = env
        .cmd_with_example_creds()
        .args(["once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let run_err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{run_err}");
    let message = err
        .lines()
        .last()
        .unwrap()
        .split("no AWS region")
        .nth(1)
        .unwrap();
    assert!(run_err.contains(message), "check: {err}\nrun: {run_err}");

    // Any of the places a region can come from is enough.
    let (code, err) = check(env.cmd().env("AWS_REGION", "eu-west-3"));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check(env.cmd().env("AWS_DEFAULT_REGION", "eu-west-3"));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check(env.cmd().env_remove("AWS_EC2_METADATA_DISABLED"));
    assert_eq!(code, Some(0), "instance metadata may know: {err}");
    std::fs::create_dir_all(env.home().join(".aws")).unwrap();
    std::fs::write(
        env.home().join(".aws/config"),
        "[default]\nregion = eu-north-1\n",
    )
    .unwrap();
    let (code, err) = check(&mut env.cmd());
    assert_eq!(code, Some(0), "{err}");
}

/// Bug 2: `exec` runs the command in its own process group and stops the whole group
/// on a restart and on SIGTERM: a shell's child does not outlive it.
#[test]
fn exec_leaves_no_descendant_behind() {
    let env = TestEnv::new();
    // GNU sleep adds its arguments: the second one marks this test's processes.
    let marker = format!("0.{}{}", std::process::id(), 7);
    let leftovers = Sleepers(marker.clone());
    let mut cmd = env.cmd_with_example_creds();
    cmd.args(["exec", "--region", "eu-west-1", "--lifetime", "6s"])
        .args([
            "--min-remaining",
            "2s",
            "--jitter",
            "0",
            "--grace",
            "2s",
            "--",
        ])
        .args(["sh", "-c", &format!("sleep 300 {marker}; true")]);
    let mut exec = Daemon::start(&env, cmd);
    exec.poll(Duration::from_secs(30), "two restarts", |log| {
        log.matches("command started with the key").count() >= 3
    });
    // Give the third shell a moment to start its sleep.
    wait_until(Duration::from_secs(5), "the current sleep", || {
        !leftovers.pids().is_empty()
    });
    let running = leftovers.pids();
    assert_eq!(
        running.len(),
        1,
        "sleeps left by restarts: {running:?}\n{}",
        exec.log()
    );

    exec.signal(Signal::SIGTERM);
    exec.exit_within(Duration::from_secs(10));
    wait_until(
        Duration::from_secs(3),
        "no sleep left after SIGTERM",
        || leftovers.pids().is_empty(),
    );
}

/// The `sleep` processes carrying a marker argument; killed when dropped, so a failing
/// test leaves none behind.
struct Sleepers(String);

impl Sleepers {
    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            // Exactly `sleep 300 MARKER`; a zombie has an empty cmdline and is gone.
            if args.len() >= 3 && args[0].ends_with(b"sleep") && args[2] == self.0.as_bytes() {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Friction: `AWS_PROFILE=prd` (a typo) gives the message `--profile prd` gives, with
/// or without a region, instead of "no AWS region" or SDK jargon about a "source
/// profile".
#[test]
fn a_typo_in_aws_profile_is_named() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.home().join(".aws")).unwrap();
    std::fs::write(
        env.home().join(".aws/config"),
        "[profile prod]\nregion = eu-west-1\n",
    )
    .unwrap();
    let flag = env
        .cmd()
        .args(["mint", "--profile", "prd"])
        .output()
        .unwrap();
    let expected = util::stderr(&flag);
    assert!(
        expected.contains("AWS profile \"prd\" not found in"),
        "{expected}"
    );
    for region in [None, Some("eu-west-1")] {
        let mut cmd = env.cmd();
        cmd.env("AWS_PROFILE", "prd").arg("mint");
        if let Some(region) = region {
            cmd.args(["--region", region]);
        }
        let out = cmd.output().unwrap();
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), flag.status.code(), "{region:?}: {err}");
        assert!(
            err.contains("AWS profile \"prd\" not found in"),
            "{region:?}: {err}"
        );
    }
    // The profile that exists works through the variable.
    let out = env
        .cmd()
        .env("AWS_PROFILE", "prod")
        .args(["mint", "--region", "eu-west-1"])
        .output()
        .unwrap();
    let err = util::stderr(&out);
    assert!(err.contains("profile \"prod\": no credentials in"), "{err}");
}

/// Friction: the messages a first session meets, each saying what is true and what to
/// do.
#[test]
fn first_session_messages() {
    let env = TestEnv::new();
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        (out.status.code(), util::stdout(&out), util::stderr(&out))
    };
    let mint = |lifetime: &str| {
        run(env.cmd_with_example_creds().args([
            "mint",
            "--region",
            "us-east-1",
            "--lifetime",
            lifetime,
        ]))
    };

    // Lifetimes: zero reads as written; a bare number is offered as seconds.
    let (code, _, err) = mint("0s");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("lifetime 0s is shorter than the minimum of 1s"),
        "{err}"
    );
    let (code, _, err) = mint("3600");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("for seconds write 3600s or 1h"), "{err}");
    assert!(!err.contains("3600m"), "{err}");

    // Key flags next to a config file: one flag, singular.
    let (code, _, err) =
        run(env
            .cmd()
            .args(["once", "--config", "c.toml", "--region", "us-west-2"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--region only applies to a single key given by --file, --env-file or --keyring; with a config file, set it there"),
        "{err}"
    );

    // status: the default bar is not presented as a flag the user gave; -v reports a
    // failure once.
    let (code, key, err) = mint("2m");
    assert_eq!(code, Some(0), "{err}");
    let short = env.path().join("short.key");
    std::fs::write(&short, key).unwrap();
    let (code, out, err) = run(env.cmd().arg("status").arg("--file").arg(&short));
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("less than 5m (the default --min-valid)"),
        "{err}"
    );
    assert!(!err.contains("--min-valid 5m"), "{err}");
    // At the default log level, as a user sees it (the tests' default is TRACE).
    let mut verbose = env.cmd();
    util::at_default_log_level(&mut verbose)
        .args(["status", "-v", "--file"])
        .arg(&short);
    let (code, out, err) = run(&mut verbose);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(out, "", "the failure is on stderr only");
    assert_eq!(err.lines().count(), 1, "{err}");

    // inspect with a file name as the key: use --file.
    let (code, _, err) = run(env.cmd().args(["inspect", "short.key"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "\"short.key\" looks like a file, not a key: read a key file with --file short.key"
        ),
        "{err}"
    );
}

/// Friction: a first failure does not speak of a "last good key" there is not, and
/// `exec`, which gives up on a failure that retrying cannot fix, does not promise to
/// keep checking.
#[test]
fn a_first_failure_says_there_is_no_key_yet() {
    let env = TestEnv::new();
    let mut cmd = env.cmd();
    cmd.args(["run", "--region", "us-east-1", "--file", "k"]);
    let mut daemon = Daemon::start(&env, cmd);
    daemon.poll(Duration::from_secs(10), "the first failure", |log| {
        log.contains("refresh failed")
    });
    let log = daemon.log();
    assert!(log.contains("no key delivered yet"), "{log}");
    assert!(!log.contains("last good key"), "{log}");
    daemon.stop_cleanly(&[]);

    let out = env
        .cmd()
        .args(["exec", "--region", "us-east-1", "--", "true"])
        .output()
        .unwrap();
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("no key for the command"), "{log}");
    assert!(!log.contains("still checking"), "{log}");
    assert!(!log.contains("last good key"), "{log}");
}
