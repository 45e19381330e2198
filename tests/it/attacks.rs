//! Attacks by another local user (issue 13): each test does what an unprivileged user
//! on the same machine could do against a root `bedrock-keyd`, with `runuser -u
//! nobody`, or inside a private pid namespace (`unshare --pid`) where a wrong signal
//! cannot hit anything outside the test. The README's "Security" section lists the
//! rules these pin.
//!
//! The scratch directory is made 0755 so that nobody can enter it (`mktemp -d` makes
//! it 0700). Tests that would grow memory without bound on a broken build run under
//! `ulimit -v`, so a regression fails the test instead of the machine.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, TestEnv};

/// How long a command that must not hang may take: `once` against a local file
/// finishes in well under a second; a frozen one never does.
const NO_HANG: Duration = Duration::from_secs(10);
/// The address-space cap for commands that must read a bounded amount: far above what
/// `bedrock-keyd` needs (about 100 MB of mappings), far below what an unbounded read
/// of `/dev/zero` reaches within a second.
const ULIMIT_V_KIB: u64 = 1_000_000;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A test environment that nobody can enter, or why the attack cannot be staged here.
fn attack_env() -> Result<TestEnv, &'static str> {
    if !is_root() {
        return Err("the attacks need root (the daemon) and nobody (the attacker)");
    }
    if !util::have("runuser") {
        return Err("runuser not found (util-linux)");
    }
    let env = TestEnv::new();
    fs::set_permissions(env.path(), fs::Permissions::from_mode(0o755)).unwrap();
    Ok(env)
}

fn nobody() -> (u32, u32) {
    let user = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    (user.uid.as_raw(), user.gid.as_raw())
}

/// A directory owned by nobody, as a user's own directory would be.
fn nobody_dir(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let dir = env.path().join(name);
    fs::create_dir(&dir).unwrap();
    let (uid, gid) = nobody();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    dir
}

/// Runs `script` as nobody in the test's directory.
fn as_nobody(env: &TestEnv, script: &str) {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", script])
        .current_dir(env.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        util::stderr(&out)
    );
}

/// Runs `cmd` with stdin from /dev/null; kills it and fails the test if it is still
/// running after [`NO_HANG`].
fn output_within(cmd: &mut Command, what: &str) -> Output {
    output_in(cmd, what, NO_HANG)
}

/// [`output_within`] with another limit.
fn output_in(cmd: &mut Command, what: &str, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            // The whole group: the wrapper and the binary under it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            panic!("{what} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn once(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = env.cmd_with_example_creds();
    cmd.args(["once", "--region", "us-east-1"]).args(args);
    cmd
}

// ---------------------------------------------------------------------------------
// Pid files

#[test]
fn a_fifo_as_pid_file_does_not_freeze_once() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    nobody_dir(&env, "app");
    as_nobody(&env, "mkfifo app/app.pid");
    let out = output_within(
        &mut once(&env, &["--file", "k", "--pid-file", "app/app.pid"]),
        "once with a FIFO as pid file",
    );
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
    // The key was delivered all the same: only the notification failed.
    assert!(env.path().join("k").exists());
}

#[test]
fn a_pid_file_of_another_user_cannot_aim_at_a_root_process() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    if !util::have("unshare") {
        return util::skip("unshare not found (util-linux)");
    }
    nobody_dir(&env, "app");
    // In a pid namespace of its own: the victim is a root `sleep`, nobody names it in
    // the pid file of its own directory, and root's `once` is told to TERM that pid.
    // A second pid file names nobody's own process: that one must still be signalled.
    let out = output_within(
        &mut env.script(
            r#"exec unshare --fork --pid --mount-proc sh -c '
                sleep 60 & victim=$!
                runuser -u nobody -- sh -c "echo $victim > app/victim.pid"
                runuser -u nobody -- sleep 60 &
                for i in $(seq 100); do
                    own=$(pgrep -u nobody -x sleep) && break
                    sleep 0.05
                done
                runuser -u nobody -- sh -c "echo $own > app/own.pid"
                "$BKD" once --region us-east-1 --file k --pid-file app/victim.pid --signal TERM
                echo "rc=$?"
                "$BKD" once --region us-east-1 --file k2 --pid-file app/own.pid --signal TERM
                echo "own-rc=$?"
                sleep 0.3
                kill -0 $victim 2>/dev/null && echo victim-alive || echo victim-dead
                kill -0 $own 2>/dev/null && echo own-alive || echo own-dead
                kill -KILL $victim $own 2>/dev/null
                true'"#,
        ),
        "once in a pid namespace",
    );
    let (stdout, log) = (util::stdout(&out), util::stderr(&out));
    assert!(stdout.contains("victim-alive"), "{stdout}\n{log}");
    assert!(stdout.contains("rc=1"), "{stdout}\n{log}");
    assert!(log.contains("another user"), "{log}");
    assert!(stdout.contains("own-rc=0"), "{stdout}\n{log}");
    assert!(stdout.contains("own-dead"), "{stdout}\n{log}");
}

// ---------------------------------------------------------------------------------
// Owners

#[test]
fn a_file_planted_in_a_sticky_directory_never_receives_the_key() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    let public = env.path().join("public");
    fs::create_dir(&public).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o1777)).unwrap();
    // nobody creates the target before the daemon's first write.
    as_nobody(&env, "umask 077; : > public/app.key");
    let out = output_within(&mut once(&env, &["--file", "public/app.key"]), "once");
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(73), "{log}");
    assert!(log.contains("public/app.key"), "{log}");
    assert!(log.contains("owned by uid"), "{log}");
    let meta = fs::metadata(public.join("app.key")).unwrap();
    assert_eq!(meta.len(), 0, "the planted file received the key");

    // A target nobody did not plant: written, and owned by the daemon's user.
    let out = output_within(&mut once(&env, &["--file", "public/new.key"]), "once");
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    assert_eq!(fs::metadata(public.join("new.key")).unwrap().uid(), 0);
}

#[test]
fn a_replaced_file_takes_the_configured_owner_or_the_daemons_never_the_old_one() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    let (uid, gid) = nobody();
    // A file nobody owns where nobody cannot write the directory (an earlier owner
    // setting, a restored backup): the daemon's write makes it root's again.
    fs::write(env.path().join("e"), "OTHER=1\n").unwrap();
    std::os::unix::fs::chown(env.path().join("e"), Some(uid), Some(gid)).unwrap();
    let out = output_within(&mut once(&env, &["--env-file", "e"]), "once");
    assert_eq!(out.status.code(), Some(0), "{}", util::stderr(&out));
    let meta = fs::metadata(env.path().join("e")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert!(
        fs::read_to_string(env.path().join("e"))
            .unwrap()
            .starts_with("OTHER=1\n")
    );
}

// ---------------------------------------------------------------------------------
// Paths

#[test]
fn a_directory_of_another_user_higher_up_cannot_redirect_the_write() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    // /…/user (nobody's) / keys (root's, 0755) / k.key: root checks only `keys`.
    let home = nobody_dir(&env, "user");
    fs::create_dir(home.join("keys")).unwrap();
    let victim = env.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("k.key"), "precious\n").unwrap();
    // nobody swaps `keys` for a symlink to a directory of root's choosing.
    as_nobody(&env, "mv user/keys user/old && ln -s ../victim user/keys");
    let out = output_within(&mut once(&env, &["--file", "user/keys/k.key"]), "once");
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(73), "{log}");
    assert_eq!(
        fs::read_to_string(victim.join("k.key")).unwrap(),
        "precious\n"
    );
    // The error names the component that made the path unsafe.
    assert!(log.contains("/user"), "{log}");
    assert!(log.contains("another user"), "{log}");

    // Even without a symlink, a directory another user controls is never followed.
    as_nobody(&env, "rm user/keys && mkdir user/keys2");
    let out = output_within(&mut once(&env, &["--file", "user/keys2/k.key"]), "once");
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(73), "{log}");
    assert!(log.contains("another user"), "{log}");
    assert!(!home.join("keys2/k.key").exists());
}

#[test]
fn a_config_in_a_directory_of_another_user_is_refused() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    nobody_dir(&env, "conf");
    let key = env.path().join("k.key");
    as_nobody(
        &env,
        &format!(
            "printf '[[key]]\\nname = \"x\"\\n[[key.sink]]\\ntype = \"file\"\\npath = \"{}\"\\n' > conf/c.toml",
            key.display()
        ),
    );
    let out = output_within(
        env.cmd().args(["check", "--config", "conf/c.toml"]),
        "check",
    );
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{log}");
    assert!(log.contains("another user"), "{log}");
}

// ---------------------------------------------------------------------------------
// Bounded reads

/// `$BKD ARGS` under an address-space cap.
fn capped(env: &TestEnv, args: &str) -> Command {
    env.script(&format!("ulimit -v {ULIMIT_V_KIB}; exec \"$BKD\" {args}"))
}

#[test]
fn a_huge_sparse_sink_file_is_refused_without_reading_it() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    let public = env.path().join("public");
    fs::create_dir(&public).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o755)).unwrap();
    let file = fs::File::create(public.join("k")).unwrap();
    file.set_len(64 << 30).unwrap();
    for flag in ["--file", "--env-file"] {
        let out = output_within(
            &mut capped(&env, &format!("once --region us-east-1 {flag} public/k")),
            "once",
        );
        let log = util::stderr(&out);
        assert_eq!(out.status.code(), Some(73), "{flag}: {log}");
        assert!(log.contains("larger than"), "{log}");
    }
    let out = output_within(
        &mut capped(&env, "inspect --file public/k"),
        "inspect --file",
    );
    assert_eq!(out.status.code(), Some(3), "{}", util::stderr(&out));
}

#[test]
fn devices_and_fifos_are_never_read_without_bound() {
    let env = match attack_env() {
        Ok(env) => env,
        Err(why) => return util::skip(why),
    };
    nix::unistd::mkfifo(
        &env.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for config in ["/dev/zero", "fifo"] {
        let out = output_within(
            &mut capped(&env, &format!("check --config {config}")),
            "check",
        );
        let log = util::stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{config}: {log}");
        assert!(log.contains("not a regular file"), "{log}");
    }
    // `status` reads sinks the same way: a FIFO in place of one is reported, not
    // waited on.
    let out = output_within(&mut capped(&env, "status --file fifo"), "status");
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
    for input in ["--file /dev/zero", "--file fifo", "- </dev/zero"] {
        let out = output_within(&mut capped(&env, &format!("inspect {input}")), "inspect");
        let log = util::stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{input}: {log}");
    }
}

// ---------------------------------------------------------------------------------
// One writer per target

#[test]
fn concurrent_once_runs_on_one_target_all_succeed() {
    let env = TestEnv::new();
    // Started together, each tries to replace the same two files: without the lock,
    // each deleted the others' temp files as leftovers (66 of 200 failed).
    const RUNS: usize = 100;
    let children: Vec<_> = (0..RUNS)
        .map(|_| {
            once(&env, &["--file", "k", "--env-file", "e"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failed = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            failed.push(util::stderr(&out));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {RUNS} failed; the first: {}",
        failed.len(),
        failed[0]
    );
    let leftovers: Vec<_> = fs::read_dir(env.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_second_daemon_on_a_target_fails_at_start_naming_the_first() {
    let env = TestEnv::new();
    let mut first = crate::daemon::Daemon::start_in_own_group(&env, {
        let mut cmd = env.cmd_with_example_creds();
        cmd.args(["run", "--region", "us-east-1", "--file", "k"]);
        cmd
    });
    crate::daemon::wait_until(Duration::from_secs(10), "the first key", || {
        env.path().join("k").exists()
    });
    let mut second = env.cmd_with_example_creds();
    second.args(["run", "--region", "us-east-1", "--file", "k"]);
    let out = output_within(&mut second, "a second daemon");
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(73), "{log}");
    assert!(
        log.contains("being written by another bedrock-keyd (pid "),
        "{log}"
    );
    let pid: u32 = log
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {log}"));
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "bedrock-keyd",
        "pid {pid} is not the first daemon"
    );

    // `once` waits a bounded time for the daemon, then says who holds the target.
    let out = output_in(
        &mut once(&env, &["--file", "k"]),
        "once beside run",
        Duration::from_secs(30),
    );
    let log = util::stderr(&out);
    assert_eq!(out.status.code(), Some(73), "{log}");
    assert!(log.contains(&format!("(pid {pid})")), "{log}");
    assert!(log.contains("still held after 10s"), "{log}");
    assert!(first.alive());
    assert_eq!(first.stop(), Some(0), "{}", first.log());
}

#[test]
fn a_reload_onto_a_target_another_daemon_holds_is_rejected() {
    let env = TestEnv::new();
    let (a, b) = (env.path().join("a.key"), env.path().join("b.key"));
    let config = env.path().join("config.toml");
    let write_config = |paths: &[&std::path::Path]| {
        let mut text = String::from("[defaults]\nregion = \"us-east-1\"\n");
        for (i, path) in paths.iter().enumerate() {
            text.push_str(&format!(
                "\n[[key]]\nname = \"k{i}\"\n[[key.sink]]\ntype = \"file\"\npath = \"{}\"\n",
                path.display()
            ));
        }
        fs::write(&config, text).unwrap();
    };
    write_config(&[&a]);
    let mut first = crate::daemon::Daemon::start_in_own_group(&env, {
        let mut cmd = env.cmd_with_example_creds();
        cmd.args(["run", "--config"]).arg(&config);
        cmd
    });
    // The second daemon writes b.key; it is stopped however the test ends.
    let second = env
        .cmd_with_example_creds()
        .args(["run", "--region", "us-east-1", "--file"])
        .arg(&b)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let _second = KillOnDrop(second);
    crate::daemon::wait_until(Duration::from_secs(10), "both keys", || {
        a.exists() && b.exists()
    });
    // A reload that adds b.key to the first daemon: rejected, the running config stays.
    write_config(&[&a, &b]);
    first.signal(nix::sys::signal::Signal::SIGHUP);
    first.poll(Duration::from_secs(10), "the rejected reload", |log| {
        log.contains("config reload rejected") && log.contains("being written by another")
    });
    assert!(first.alive());
    assert_eq!(first.stop(), Some(0), "{}", first.log());
}

/// A background process group, ended with the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}
