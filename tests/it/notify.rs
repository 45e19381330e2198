//! Dependents of `bedrock-keyd run`, as real processes: a helper that counts SIGHUPs
//! and re-reads the key file on each must see exactly the keys the daemon minted, in
//! order, each after the file held it (a signal before the write would show the
//! previous key twice; a missed one would leave a gap). Pid-file, process-name and
//! command notifications each get that test; pid files without a usable pid never
//! signal anyone.
//!
//! Keys live 6 s and are re-minted every 3 s (`refresh_at = 0.5`, no jitter); the
//! notification follows a delivery after the 1 s debounce, so consecutive keys are
//! never folded together and the assertions can be exact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::daemon::{Daemon, wait_for, wait_until};
use crate::util::{self, TestEnv};

/// How many rotations each test watches.
const ROTATIONS: usize = 3;

/// The absolute path of a Python 3 interpreter (for shebangs), if there is one.
pub fn python() -> Option<PathBuf> {
    let python = util::python_with("hashlib")?;
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.is_absolute().then_some(path)
}

/// Writes an executable Python script `name` in `dir` with a shebang to `python`, so
/// the kernel names the process after the script (`/proc/PID/comm`).
pub fn script(dir: &Path, name: &str, python: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!{}\n{body}", python.display())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The fingerprint bedrock-keyd logs for a key, computed in Python.
pub const FINGERPRINT_PY: &str = r#"
import hashlib
def fingerprint(key):
    return "sha256:" + hashlib.sha256(key.strip().encode()).hexdigest()[:16]
"#;

/// A dependent: on each SIGHUP it re-reads the key file and appends the key's
/// fingerprint to OUT. Writes its pid to PIDFILE (atomically) and creates OUT.ready
/// once the handler is in place.
pub const HUP_COUNTER: &str = r#"
import os, signal, sys
keyfile, out, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]
def on_hup(signum, frame):
    try:
        with open(keyfile) as f:
            seen = fingerprint(f.read())
    except OSError as e:
        seen = "unreadable: %s" % e
    with open(out, "a") as f:
        f.write(seen + "\n")
signal.signal(signal.SIGHUP, on_hup)
with open(pidfile + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(pidfile + ".tmp", pidfile)
open(out + ".ready", "w").close()
while True:
    signal.pause()
"#;

/// A command dependent: appends the fingerprint of the key file's key to OUT and
/// its environment (one JSON object per line) to ENV.
const RECORDER: &str = r#"
import json, os, sys
keyfile, out, env = sys.argv[1], sys.argv[2], sys.argv[3]
with open(keyfile) as f:
    seen = fingerprint(f.read())
with open(env, "a") as f:
    f.write(json.dumps(dict(os.environ)) + "\n")
with open(out, "a") as f:
    f.write(seen + "\n")
"#;

/// A process name unique to this test run, at most 15 bytes (comm's limit).
fn unique_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("kd{tag}{:08x}", nanos ^ std::process::id())
}

/// A running helper process, killed on drop.
pub struct Helper(pub Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the HUP counter as `name` and waits until it is ready.
fn start_counter(
    dir: &Path,
    python: &Path,
    name: &str,
    key: &Path,
    out: &Path,
) -> (Helper, PathBuf) {
    let exe = script(dir, name, python, &format!("{FINGERPRINT_PY}{HUP_COUNTER}"));
    let pid_file = dir.join(format!("{name}.pid"));
    let child = Command::new(&exe)
        .arg(key)
        .arg(out)
        .arg(&pid_file)
        .env_clear()
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let helper = Helper(child);
    wait_until(Duration::from_secs(10), "the helper to start", || {
        Path::new(&format!("{}.ready", out.display())).exists()
    });
    (helper, pid_file)
}

/// The lines of a file (none if it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The fingerprints of the keys a log says were minted and delivered, in order.
pub fn minted(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("key minted and delivered"))
        .filter_map(|l| {
            let at = l.find("fingerprint=")? + "fingerprint=".len();
            Some(l[at..].split_whitespace().next()?.to_owned())
        })
        .collect()
}

/// `bedrock-keyd run --config CONFIG` with the example credentials, and a bearer
/// token in its environment that must never reach a command dependent.
fn run(env: &TestEnv, config: &Path) -> Command {
    let mut cmd = env.cmd_with_example_creds();
    cmd.env("AWS_BEARER_TOKEN_BEDROCK", "inherited-token-marker")
        .args(["run", "--config"])
        .arg(config);
    cmd
}

/// A config with one key `k` (raw file `key`) rotating every 3 s, notifying `notify`.
fn config(env: &TestEnv, key: &Path, notify: &str) -> PathBuf {
    let path = env.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[defaults]\nregion = \"eu-west-1\"\nlifetime = \"6s\"\nmin_remaining = \"2s\"\nrefresh_at = 0.5\njitter = 0.0\n\n\
             [[key]]\nname = \"k\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}\"\n\n[[key.notify]]\n{notify}\n",
            key.display()
        ),
    )
    .unwrap();
    path
}

/// Runs the daemon until `out` holds ROTATIONS lines, then checks that they are
/// exactly the first keys minted, in order; returns the daemon's log.
fn assert_every_key_announced_once(env: &TestEnv, config: &Path, out: &Path) -> String {
    let mut daemon = Daemon::start(env, run(env, config));
    let seen_all = wait_for(Duration::from_secs(40), || {
        if lines(out).len() >= ROTATIONS {
            return Some(());
        }
        assert!(daemon.alive(), "the daemon exited\n{}", daemon.log());
        None
    });
    assert!(
        seen_all.is_some(),
        "the dependent saw {:?}\n{}",
        lines(out),
        daemon.log()
    );
    let minted_now = minted(&daemon.log());
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log());
    let log = daemon.log();
    let seen = lines(out);
    let minted_all = minted(&log);
    assert!(minted_now.len() >= ROTATIONS, "{log}");
    // Exactly the minted keys, in order, each once: no signal came before its write
    // (that would repeat the previous key) and none was missed.
    assert_eq!(
        seen[..ROTATIONS],
        minted_all[..ROTATIONS],
        "seen by the dependent vs minted\n{log}"
    );
    // Whatever happened until the stop: still a prefix, at most the last key (inside
    // its debounce window at SIGTERM) unannounced.
    assert_eq!(seen[..], minted_all[..seen.len()], "{log}");
    assert!(
        minted_all.len() - seen.len() <= 1,
        "{seen:?} vs {minted_all:?}\n{log}"
    );
    util::assert_no_key_in(&log);
    log
}

#[test]
fn pid_file_dependent_sees_every_key_after_it_is_written() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the dependent helper");
    };
    let env = TestEnv::new();
    let (key, out) = (env.path().join("k.key"), env.path().join("seen"));
    let (_helper, pid_file) = start_counter(env.path(), &python, &unique_name("p"), &key, &out);
    let config = config(
        &env,
        &key,
        &format!("pid_file = \"{}\"\nsignal = \"HUP\"", pid_file.display()),
    );
    let log = assert_every_key_announced_once(&env, &config, &out);
    assert!(log.contains("dependent notified"), "{log}");
    assert!(
        log.contains("signal=SIGHUP"),
        "which signal went where: {log}"
    );
}

#[test]
fn process_name_dependent_sees_every_key_after_it_is_written() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the dependent helper");
    };
    let env = TestEnv::new();
    let (key, out) = (env.path().join("k.key"), env.path().join("seen"));
    let name = unique_name("n");
    let (helper, _) = start_counter(env.path(), &python, &name, &key, &out);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", helper.0.id())).unwrap();
    assert_eq!(comm.trim(), name, "the helper is named after its script");
    let config = config(
        &env,
        &key,
        &format!("process = \"{name}\"\nsignal = \"HUP\""),
    );
    let log = assert_every_key_announced_once(&env, &config, &out);
    assert!(
        log.contains(&format!("pid={}", helper.0.id())),
        "which pid was signalled: {log}"
    );
}

#[test]
fn command_dependent_sees_every_key_but_never_gets_it() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the dependent helper");
    };
    let env = TestEnv::new();
    let (key, out, envs) = (
        env.path().join("k.key"),
        env.path().join("seen"),
        env.path().join("envs"),
    );
    let exe = script(
        env.path(),
        "recorder",
        &python,
        &format!("{FINGERPRINT_PY}{RECORDER}"),
    );
    let config = config(
        &env,
        &key,
        &format!(
            "command = [\"{}\", \"{}\", \"{}\", \"{}\"]\ntimeout = \"10s\"",
            exe.display(),
            key.display(),
            out.display(),
            envs.display()
        ),
    );
    let log = assert_every_key_announced_once(&env, &config, &out);
    assert!(log.contains("notify command finished"), "{log}");
    let dumps = std::fs::read_to_string(&envs).unwrap();
    util::assert_no_key_in(&dumps);
    for line in dumps.lines() {
        let vars: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(vars.get("AWS_BEARER_TOKEN_BEDROCK").is_none(), "{line}");
        assert_eq!(vars["BEDROCK_KEYD_KEY_NAME"], "k");
        assert_eq!(vars["BEDROCK_KEYD_REGION"], "eu-west-1");
        let expires = vars["BEDROCK_KEYD_EXPIRES_AT"].as_str().unwrap();
        assert!(
            bedrock_keyd::clock::time::parse_rfc3339(expires).is_some(),
            "{expires}"
        );
    }
}

#[test]
fn pid_files_without_a_usable_pid_signal_nothing() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the bystander helper");
    };
    let env = TestEnv::new();
    let dir = env.path();
    let contents = ["", "abc", "0", "1", "-1"];
    let mut text = String::from(
        "[defaults]\nregion = \"eu-west-1\"\nlifetime = \"6s\"\nmin_remaining = \"2s\"\nrefresh_at = 0.5\njitter = 0.0\n",
    );
    for (i, content) in contents.iter().enumerate() {
        let pid_file = dir.join(format!("bad{i}.pid"));
        std::fs::write(&pid_file, content).unwrap();
        text.push_str(&format!(
            "\n[[key]]\nname = \"k{i}\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}\"\n[[key.notify]]\npid_file = \"{}\"\n",
            dir.join(format!("k{i}.key")).display(),
            pid_file.display()
        ));
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();

    // The daemon leads its own process group, with a bystander in it: a signal to
    // the group (pid 0) would reach both; to every process (-1), the bystander too.
    let mut daemon = Daemon::start_in_own_group(&env, run(&env, &config));
    let (key, out) = (dir.join("k0.key"), dir.join("bystander.seen"));
    let exe = script(
        dir,
        "bystander",
        &python,
        &format!("{FINGERPRINT_PY}{HUP_COUNTER}"),
    );
    let bystander = {
        use std::os::unix::process::CommandExt as _;
        Command::new(&exe)
            .arg(&key)
            .arg(&out)
            .arg(dir.join("bystander.pid"))
            .env_clear()
            .process_group(daemon.pid().as_raw())
            .spawn()
            .unwrap()
    };
    let _bystander = Helper(bystander);

    // Two rounds of notifications for every key (at ~1 s and ~4 s).
    wait_until(Duration::from_secs(20), "two failed rounds", || {
        daemon.log().matches("notifying a dependent failed").count() >= 2 * contents.len()
    });
    assert!(daemon.alive(), "{}", daemon.log());
    let log = daemon.log();
    assert!(lines(&out).is_empty(), "the bystander was signalled\n{log}");
    assert!(
        !log.contains("SIGHUP: reloading"),
        "the daemon signalled itself\n{log}"
    );
    assert!(!log.contains("dependent notified"), "{log}");
    for reason in [
        "empty",
        "not a number",
        "own process group",
        "init",
        "negative",
    ] {
        assert!(log.contains(reason), "{reason}\n{log}");
    }
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log());
}

#[test]
fn missing_pid_file_is_pending_and_then_notified() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the dependent helper");
    };
    let env = TestEnv::new();
    let (key, out) = (env.path().join("k.key"), env.path().join("seen"));
    let name = unique_name("m");
    let pid_file = env.path().join(format!("{name}.pid"));
    let config = config(
        &env,
        &key,
        &format!("pid_file = \"{}\"", pid_file.display()),
    );
    // The daemon first, the dependent later: the first key finds no pid file.
    let mut daemon = Daemon::start(&env, run(&env, &config));
    wait_until(Duration::from_secs(10), "the first key", || key.exists());
    std::thread::sleep(Duration::from_millis(1500));
    let (_helper, _) = start_counter(env.path(), &python, &name, &key, &out);
    wait_until(Duration::from_secs(15), "a notification", || {
        !lines(&out).is_empty()
    });
    let log = daemon.log();
    assert!(!log.contains("notifying a dependent failed"), "{log}");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn once_notifies_after_delivery() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the dependent helper");
    };
    let env = TestEnv::new();
    let (key, out) = (env.path().join("k.key"), env.path().join("seen"));
    let (_helper, pid_file) = start_counter(env.path(), &python, &unique_name("o"), &key, &out);
    let output = env
        .cmd_with_example_creds()
        .args(["once", "--region", "us-east-1", "--file"])
        .arg(&key)
        .arg("--pid-file")
        .arg(&pid_file)
        .args(["--signal", "HUP"])
        .output()
        .unwrap();
    let log = util::stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    wait_until(Duration::from_secs(5), "the signal", || {
        !lines(&out).is_empty()
    });
    let written = std::fs::read_to_string(&key).unwrap();
    let fingerprint = bedrock_keyd::key::Fingerprint::of(written.trim()).to_string();
    assert_eq!(lines(&out), vec![fingerprint]);

    // A pid file with no usable pid: delivered, but exit 1 with the reason.
    std::fs::write(&pid_file, "garbage").unwrap();
    let output = env
        .cmd_with_example_creds()
        .args(["once", "--region", "us-east-1", "--file"])
        .arg(&key)
        .arg("--pid-file")
        .arg(&pid_file)
        .output()
        .unwrap();
    let log = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("not a number"), "{log}");
    util::assert_no_key_in(&log);
}

#[test]
fn systemd_unit_dependent_runs_systemctl() {
    // A stand-in systemctl on PATH records its arguments.
    let env = TestEnv::new();
    let bin = env.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let record = env.path().join("systemctl.args");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let fake = bin.join("systemctl");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$@\" >> '{}'\n", record.display()),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let key = env.path().join("k.key");
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[key]]\nname = \"k\"\nregion = \"us-east-1\"\nlifetime = \"1h\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}\"\n\
             [[key.notify]]\nsystemd_unit = \"myapp.service\"\n[[key.notify]]\nsystemd_unit = \"other.service\"\naction = \"USR1\"\n",
            key.display()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = env
        .cmd_with_example_creds()
        .env("PATH", path)
        .args(["once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));
    // Root talks to the system manager; no XDG_RUNTIME_DIR in the clean env either.
    assert_eq!(
        lines(&record),
        vec![
            "reload-or-restart -- myapp.service",
            "kill --signal=SIGUSR1 -- other.service"
        ]
    );
}

#[test]
fn a_sighup_storm_gives_one_notification_of_the_latest_key() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the dependent helper");
    };
    let env = TestEnv::new();
    let (key, out) = (env.path().join("k.key"), env.path().join("seen"));
    let (_helper, pid_file) = start_counter(env.path(), &python, &unique_name("s"), &key, &out);
    // A long lifetime: only the SIGHUPs re-mint.
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[key]]\nname = \"k\"\nregion = \"us-east-1\"\nlifetime = \"1h\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}\"\n[[key.notify]]\npid_file = \"{}\"\n",
            key.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&env, run(&env, &config));
    wait_until(Duration::from_secs(10), "the first notification", || {
        lines(&out).len() == 1
    });
    // Re-mint in a different second than the first key, so the storm's key is new.
    std::thread::sleep(Duration::from_millis(1100));
    // Spaced beyond the daemon's own SIGHUP coalescing (200 ms), so each one re-mints
    // and delivers; all within the 1 s notification window.
    for _ in 0..3 {
        daemon.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let log = daemon.log();
    let minted = minted(&log);
    assert!(
        minted.len() >= 3,
        "the storm delivered several times\n{log}"
    );
    let seen = lines(&out);
    assert_eq!(
        seen.len(),
        2,
        "one notification for the storm: {seen:?}\n{log}"
    );
    assert_eq!(seen[1], minted[minted.len() - 1], "the latest key\n{log}");
    assert_eq!(daemon.stop(), Some(0));
}
