//! `bedrock-keyd exec` with real child processes: restarts with the new key in the
//! environment, signal mode with a sink file, signal forwarding, exit status.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::daemon::{Daemon, wait_until};
use crate::notify::{FINGERPRINT_PY, HUP_COUNTER, lines, minted, python, script};
use crate::util::{self, TestEnv};

/// Ends a child whose bedrock-keyd died (a failed test kills it with SIGKILL), so
/// no helper outlives its test.
const PARENT_WATCH: &str = r#"
import os, threading, time
def _watch(parent=os.getppid()):
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
"#;

/// Ignores SIGTERM; appends "PID FINGERPRINT" to OUT at start.
const STUBBORN_CHILD: &str = r#"
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "a") as f:
    f.write("%d %s\n" % (os.getpid(), fingerprint(os.environ["AWS_BEARER_TOKEN_BEDROCK"])))
while True:
    signal.pause()
"#;

/// Reads its key from the environment only, once at start: appends
/// "FINGERPRINT REGION" to OUT, then waits to be stopped.
const ENV_CHILD: &str = r#"
import os, signal, sys
key = os.environ["AWS_BEARER_TOKEN_BEDROCK"]
assert key.startswith("bedrock-api-key-")
with open(sys.argv[1], "a") as f:
    f.write("%s %s\n" % (fingerprint(key), os.environ["AWS_REGION"]))
while True:
    signal.pause()
"#;

/// Records the signals it gets; exits 5 on SIGTERM.
const SIGNAL_CHILD: &str = r#"
import signal, sys
out = sys.argv[1]
def record(name):
    with open(out, "a") as f:
        f.write(name + "\n")
def on_term(signum, frame):
    record("TERM")
    sys.exit(5)
signal.signal(signal.SIGHUP, lambda s, f: record("HUP"))
signal.signal(signal.SIGTERM, on_term)
record("ready")
while True:
    signal.pause()
"#;

/// `bedrock-keyd exec ARGS -- COMMAND` with example credentials, in the background.
fn start(env: &TestEnv, args: &[&str], command: &[&Path]) -> Daemon {
    let mut cmd = env.cmd_with_example_creds();
    cmd.arg("exec").args(args).arg("--").args(command);
    Daemon::start(env, cmd)
}

/// Keys of 6 s, re-minted every 3 s.
const ROTATING: [&str; 8] = [
    "--region",
    "eu-west-1",
    "--lifetime",
    "6s",
    "--min-remaining",
    "2s",
    "--jitter",
    "0",
];

#[test]
fn exec_restarts_the_command_with_each_new_key() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the child helper");
    };
    let env = TestEnv::new();
    let out = env.path().join("seen");
    let exe = script(
        env.path(),
        "env-child",
        &python,
        &format!("{FINGERPRINT_PY}{PARENT_WATCH}{ENV_CHILD}"),
    );
    let mut exec = start(
        &env,
        &[&ROTATING[..], &["--grace", "2s"]].concat(),
        &[&exe, &out],
    );
    wait_until(Duration::from_secs(30), "three starts", || {
        lines(&out).len() >= 3
    });
    let log = exec.log();
    let minted = minted(&log);
    let seen: Vec<String> = lines(&out);
    for (i, line) in seen.iter().take(3).enumerate() {
        let (fingerprint, region) = line.split_once(' ').unwrap();
        assert_eq!(fingerprint, minted[i], "start {i} got key {i}\n{log}");
        assert_eq!(region, "eu-west-1");
    }
    assert!(log.contains("new key: restarting the command"), "{log}");

    // SIGTERM goes to the command, whose default action kills it: 128 + 15.
    exec.signal(Signal::SIGTERM);
    assert_eq!(
        exec.exit_within(Duration::from_secs(10)).code(),
        Some(143),
        "{}",
        exec.log()
    );
    util::assert_no_key_in(&exec.log());
}

#[test]
fn exec_kills_a_command_that_ignores_sigterm_after_the_grace_period() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the child helper");
    };
    let env = TestEnv::new();
    let out = env.path().join("starts");
    let exe = script(
        env.path(),
        "stubborn",
        &python,
        &format!("{FINGERPRINT_PY}{PARENT_WATCH}{STUBBORN_CHILD}"),
    );
    let mut exec = start(
        &env,
        &[&ROTATING[..], &["--grace", "500ms"]].concat(),
        &[&exe, &out],
    );
    wait_until(Duration::from_secs(30), "two starts", || {
        lines(&out).len() >= 2
    });
    let log = exec.log();
    assert!(
        log.contains("did not stop within the grace period"),
        "{log}"
    );
    let starts = lines(&out);
    let minted = minted(&log);
    let (first, second) = (&starts[0], &starts[1]);
    let first_pid: i32 = first.split(' ').next().unwrap().parse().unwrap();
    assert!(
        kill(Pid::from_raw(first_pid), None).is_err(),
        "the first command is gone"
    );
    assert_eq!(first.split(' ').nth(1), Some(minted[0].as_str()));
    assert_eq!(second.split(' ').nth(1), Some(minted[1].as_str()));
    // It ignores the forwarded SIGTERM too; SIGINT's default action ends it.
    exec.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    exec.signal(Signal::SIGINT);
    assert_eq!(
        exec.exit_within(Duration::from_secs(10)).code(),
        Some(130),
        "{}",
        exec.log()
    );
}

#[test]
fn exec_signal_mode_tells_the_command_to_reread_the_sink() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the child helper");
    };
    let env = TestEnv::new();
    let (key, out) = (env.path().join("k.key"), env.path().join("seen"));
    let exe = script(
        env.path(),
        "hup-child",
        &python,
        &format!("{FINGERPRINT_PY}{PARENT_WATCH}{HUP_COUNTER}"),
    );
    let pid_file = env.path().join("child.pid");
    let key_arg = key.to_str().unwrap();
    let mut exec = start(
        &env,
        &[
            &ROTATING[..],
            &["--file", key_arg, "--on-refresh", "signal:HUP"],
        ]
        .concat(),
        &[&exe, &key, &out, &pid_file],
    );
    wait_until(Duration::from_secs(30), "two re-reads", || {
        lines(&out).len() >= 2
    });
    let log = exec.log();
    let minted = minted(&log);
    // The first key came with the start; every later one by SIGHUP after the write.
    assert_eq!(lines(&out)[..2], minted[1..3], "{log}");
    assert!(log.contains("signalling the command"), "{log}");
    assert!(!log.contains("restarting"), "{log}");
    exec.signal(Signal::SIGTERM);
    assert_eq!(exec.exit_within(Duration::from_secs(10)).code(), Some(143));
    util::assert_no_key_in(&exec.log());
}

#[test]
fn exec_forwards_signals_and_exits_with_the_command_status() {
    let Some(python) = python() else {
        return util::skip("python3 is needed for the child helper");
    };
    let env = TestEnv::new();
    let out = env.path().join("signals");
    let exe = script(
        env.path(),
        "sig-child",
        &python,
        &format!("{PARENT_WATCH}{SIGNAL_CHILD}"),
    );
    let mut exec = start(
        &env,
        &["--region", "us-east-1", "--lifetime", "1h"],
        &[&exe, &out],
    );
    wait_until(Duration::from_secs(10), "the command", || {
        lines(&out) == ["ready"]
    });
    exec.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(5), "the forwarded SIGHUP", || {
        lines(&out) == ["ready", "HUP"]
    });
    // SIGHUP is forwarded only: no re-mint, no restart.
    assert_eq!(minted(&exec.log()).len(), 1, "{}", exec.log());
    exec.signal(Signal::SIGTERM);
    assert_eq!(
        exec.exit_within(Duration::from_secs(10)).code(),
        Some(5),
        "{}",
        exec.log()
    );
    assert_eq!(lines(&out), ["ready", "HUP", "TERM"]);
}

#[test]
fn exec_exit_status_is_the_command_status() {
    let env = TestEnv::new();
    let sh = Path::new("/bin/sh");
    for (script, code) in [("exit 7", 7), ("exit 0", 0), ("kill -USR1 $$", 128 + 10)] {
        let out = env
            .cmd_with_example_creds()
            .args(["exec", "--region", "us-east-1", "--"])
            .arg(sh)
            .args(["-c", script])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{script}: {}",
            util::stderr(&out)
        );
    }
    // The key reaches the command's environment, and only there.
    let out = env
        .cmd_with_example_creds()
        .args(["exec", "--region", "us-east-1", "--", "sh", "-c"])
        .arg("case \"$AWS_BEARER_TOKEN_BEDROCK\" in bedrock-api-key-*) echo \"key for $AWS_REGION\";; esac")
        .output()
        .unwrap();
    assert_eq!(util::stdout(&out), "key for us-east-1\n");
    util::assert_no_key_in(&util::stderr(&out));
}

#[test]
fn exec_usage_errors() {
    let env = TestEnv::new();
    let run = |args: &[&str]| {
        let out = env
            .cmd_with_example_creds()
            .arg("exec")
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), util::stderr(&out))
    };
    // Signal mode needs a sink the command can re-read.
    let (code, err) = run(&[
        "--region",
        "us-east-1",
        "--on-refresh",
        "signal:HUP",
        "--",
        "true",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no sink"), "{err}");
    let (code, err) = run(&[
        "--region",
        "us-east-1",
        "--on-refresh",
        "signal:KILL",
        "--",
        "true",
    ]);
    assert_eq!(code, Some(2), "{err}");
    // A failure that retrying cannot fix, before the first key: exit, not hang.
    let (code, err) = run(&["--profile", "nosuch", "--region", "us-east-1", "--", "true"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no key for the command"), "{err}");
    // A command is required.
    let (code, err) = run(&["--region", "us-east-1"]);
    assert_eq!(code, Some(2), "{err}");
    // A config with several keys needs --key.
    let config = env.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nregion = \"us-east-1\"\n[[key]]\nname = \"a\"\n[[key.sink]]\ntype = \"file\"\npath = \"{d}/a.key\"\n\
             [[key]]\nname = \"b\"\n[[key.sink]]\ntype = \"file\"\npath = \"{d}/b.key\"\n",
            d = env.path().display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, err) = run(&["--config", config, "--", "true"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--key"), "{err}");
    let (code, err) = run(&[
        "--config",
        config,
        "--key",
        "b",
        "--",
        "sh",
        "-c",
        "test -s b.key",
    ]);
    assert_eq!(code, Some(0), "{err}");
}
