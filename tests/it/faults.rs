//! Fault injection against the real `bedrock-keyd run` process (issue 8).
//!
//! Each test breaks one thing on purpose while the daemon is rotating a key, and
//! checks three things: no good key is lost (the sink is polled and always holds a
//! complete, valid key), the right error is reported (the daemon's log names the
//! cause), and the daemon recovers once the fault is removed (a key is delivered
//! again without a restart).
//!
//! Keys live 20 s and are refreshed after 3 s (`refresh_at = 0.15`), so the first
//! refresh fails within seconds while the last good key stays valid for the whole
//! test. Root-only faults (`chattr +i`; a tiny tmpfs or a read-only bind mount, both
//! inside the daemon's own `unshare -m` namespace, so nothing leaks) skip when not
//! root, and fail under `BEDROCK_KEYD_REQUIRE_ALL=1`. Clock jumps and SIGHUP storms are covered in `daemon_sim.rs` and
//! `daemon_run.rs`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bedrock_keyd::key::decode::decode;
use bedrock_keyd::key::format::extract_key;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::daemon::{self, ContainerCreds, Daemon, temp_files};
use crate::fake_http::{FakeServer, Reply, in_secs};
use crate::util::{self, TestEnv};

const ENDPOINT_KEY_ID: &str = "ASIAFAULTSEXAMPLE001";
/// From the container endpoint, whatever fault a test then sets on it.
const CREDS: ContainerCreds = ContainerCreds {
    token: "faults-pod-token",
    access_key_id: ENDPOINT_KEY_ID,
    secret: "faults-secret",
    session_token: "faults-session-token",
};
/// Where every config here signs, and so what every key read must say.
const REGION: &str = "eu-west-1";
const ROLE_KEY_ID: &str = "ASIAFAULTSROLE000001";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/faults";

// ---------------------------------------------------------------------------------
// Harness

/// One key `k` with a file sink `dir/k.key`; `extra` goes into the `[[key]]` table.
fn config_text(dir: &Path, lifetime: &str, refresh_at: f64, extra: &str) -> String {
    format!(
        "[defaults]\nregion = \"{REGION}\"\nlifetime = \"{lifetime}\"\nmin_remaining = \"2s\"\n\
         refresh_at = {refresh_at}\njitter = 0.0\n\n[[key]]\nname = \"k\"\n{extra}\
         [[key.sink]]\ntype = \"file\"\npath = \"{}/k.key\"\n",
        dir.display()
    )
}

/// A scratch environment with `keys/` (mode 0700) and a config for it.
struct Setup {
    env: TestEnv,
    dir: PathBuf,
    key: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(lifetime: &str, refresh_at: f64, extra: &str) -> Self {
        let env = TestEnv::new();
        let dir = env.path().join("keys");
        std::fs::create_dir(&dir).unwrap();
        let config = env.path().join("config.toml");
        std::fs::write(&config, config_text(&dir, lifetime, refresh_at, extra)).unwrap();
        Self {
            key: dir.join("k.key"),
            env,
            dir,
            config,
        }
    }

    /// `program args…` with `TestEnv::clean()`'s environment.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.env.clean(program)
    }

    /// `bedrock-keyd run --config …` taking credentials from `server`'s endpoint.
    fn run_with_endpoint(&self, server: &FakeServer) -> Command {
        CREDS.run(&self.env, server, &self.config)
    }

    /// `run` with the endpoint, in a private mount namespace, after `mount` (a shell
    /// command with the sink directory as `$0`) ran there. Mounts vanish with it.
    fn run_in_namespace(&self, server: &FakeServer, mount: &str) -> Command {
        let mut cmd = self.command("unshare");
        CREDS.endpoint_env(&self.env, &mut cmd, server);
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("{mount} && exec \"$@\""))
            .arg(&self.dir)
            .arg(util::bin())
            .args(["run", "--config"])
            .arg(&self.config);
        cmd
    }

    /// In a process group of its own: dropping it also ends what it started.
    fn start(&self, cmd: Command) -> Daemon {
        Daemon::start_in_own_group(&self.env, cmd)
    }
}

/// The set-up most tests here share: the scratch environment of `Setup::new("20s",
/// 0.15, "")`, the container endpoint, a daemon rotating the key from it, and the
/// first key the daemon wrote.
struct Rotating {
    // Dropped in this order: the daemon before the endpoint and the directory it uses.
    daemon: Daemon,
    server: FakeServer,
    setup: Setup,
    k1: String,
}

impl Rotating {
    /// The daemon as `Setup::run_with_endpoint` starts it.
    fn start() -> Self {
        Self::start_with(Setup::run_with_endpoint)
    }

    /// The daemon as `run` builds it, given the set-up and the endpoint.
    fn start_with(run: impl FnOnce(&Setup, &FakeServer) -> Command) -> Self {
        let setup = Setup::new("20s", 0.15, "");
        let server = CREDS.endpoint();
        let mut daemon = setup.start(run(&setup, &server));
        let k1 = first_key(&mut daemon, &setup.key, ENDPOINT_KEY_ID);
        Self {
            daemon,
            server,
            setup,
            k1,
        }
    }

    /// `failure_keeping` the first key in the sink.
    fn failure(&mut self, needles: &[&str], limit: Duration) -> String {
        failure_keeping(
            &mut self.daemon,
            &self.setup.key,
            ENDPOINT_KEY_ID,
            &self.k1,
            needles,
            limit,
        )
    }

    /// `new_key`: a key other than the first one in the sink.
    fn recovers(&mut self, limit: Duration) -> String {
        new_key(
            &mut self.daemon,
            &self.setup.key,
            ENDPOINT_KEY_ID,
            &self.k1,
            limit,
        )
    }

    /// Stops the daemon and checks its logs for `SECRETS`.
    fn stop(self) {
        self.daemon.stop_cleanly(SECRETS);
    }
}

/// Everything the daemons here were given: none of it may reach a log.
const SECRETS: &[&str] = &[
    CREDS.secret,
    CREDS.session_token,
    CREDS.token,
    "faults-role-secret",
    "faults-role-session-token",
    util::EXAMPLE_SECRET_ACCESS_KEY,
];

/// `daemon::read_key` for this file's region.
fn read_key(path: &Path, key_id: &str) -> Option<String> {
    daemon::read_key(path, key_id, REGION)
}

/// Waits for the first key in `path`.
fn first_key(daemon: &mut Daemon, path: &Path, key_id: &str) -> String {
    let mut key = None;
    daemon.poll(Duration::from_secs(10), "the first key", |_| {
        key = read_key(path, key_id);
        key.is_some()
    });
    key.unwrap()
}

/// Waits, while `path` keeps holding exactly `held`, until the log has a failed
/// refresh whose line contains every one of `needles`; returns that line.
fn failure_keeping(
    daemon: &mut Daemon,
    path: &Path,
    key_id: &str,
    held: &str,
    needles: &[&str],
    limit: Duration,
) -> String {
    let mut found = String::new();
    daemon.poll(limit, &format!("a failure naming {needles:?}"), |log| {
        let now = read_key(path, key_id);
        assert_eq!(now.as_deref(), Some(held), "the last good key was lost");
        match log
            .lines()
            .find(|l| l.contains("failed") && needles.iter().all(|n| l.contains(n)))
        {
            Some(line) => {
                found = line.to_owned();
                true
            }
            None => false,
        }
    });
    found
}

/// Waits for a key other than `old` in `path` (any key there must be valid).
fn new_key(daemon: &mut Daemon, path: &Path, key_id: &str, old: &str, limit: Duration) -> String {
    let mut key = None;
    daemon.poll(limit, "a new key", |_| {
        key = read_key(path, key_id).filter(|k| k != old);
        key.is_some()
    });
    key.unwrap()
}

/// The 1,000-readers test loads both cores; the others must not time out beside it.
static LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------------
// 1. The credential endpoint fails in every way, then recovers.

#[test]
fn credential_endpoint_500_garbage_403_keep_the_key_then_recover() {
    let _load = beside_others();
    let mut r = Rotating::start();

    let limit = Duration::from_secs(10);
    r.server.set(|_| Reply::Status(500));
    let line = r.failure(
        &["container credentials endpoint", "StatusCode(500)"],
        limit,
    );
    assert!(line.contains("will retry"), "{line}");

    r.server.set(|_| Reply::Garbage);
    let line = r.failure(
        &["container credentials endpoint", "invalid JSON in response"],
        limit,
    );
    assert!(line.contains("will retry"), "{line}");

    r.server.set(|_| Reply::Status(403));
    let line = r.failure(
        &["container credentials endpoint", "StatusCode(403)"],
        limit,
    );
    // A refused token may be rotated by the kubelet: worth retrying.
    assert!(line.contains("will retry"), "{line}");

    r.server.set(|request| CREDS.reply(request));
    r.recovers(limit);
    r.stop();
}

#[test]
fn a_hanging_credential_endpoint_times_out_keeps_the_key_then_recovers() {
    let _load = beside_others();
    let mut r = Rotating::start();

    r.server.set(|_| Reply::Hang);
    let line = r.failure(
        &["container credentials endpoint", "timed out after 6s"],
        Duration::from_secs(14),
    );
    assert!(line.contains("will retry"), "{line}");

    r.server.set(|request| CREDS.reply(request));
    r.recovers(Duration::from_secs(8));
    r.stop();
}

// ---------------------------------------------------------------------------------
// 2. STS throttles AssumeRole, then answers.

const THROTTLING: &str = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
    <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
    <RequestId>x</RequestId></ErrorResponse>";

fn assume_role_response() -> String {
    crate::leaks::register_secret("faults-role-secret");
    crate::leaks::register_secret("faults-role-session-token");
    format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleResult>\
         <Credentials><AccessKeyId>{ROLE_KEY_ID}</AccessKeyId>\
         <SecretAccessKey>faults-role-secret</SecretAccessKey>\
         <SessionToken>faults-role-session-token</SessionToken>\
         <Expiration>{}</Expiration></Credentials>\
         <AssumedRoleUser><AssumedRoleId>AROAFAULTS:bedrock-keyd</AssumedRoleId>\
         <Arn>arn:aws:sts::123456789012:assumed-role/faults/bedrock-keyd</Arn></AssumedRoleUser>\
         </AssumeRoleResult>\
         <ResponseMetadata><RequestId>y</RequestId></ResponseMetadata>\
         </AssumeRoleResponse>",
        in_secs(120).1
    )
}

#[test]
fn sts_throttling_is_retryable_keeps_the_key_then_recovers() {
    let _load = beside_others();
    let throttle = Arc::new(AtomicBool::new(false));
    let throttled = Arc::new(AtomicUsize::new(0));
    let server = {
        let (throttle, throttled) = (throttle.clone(), throttled.clone());
        FakeServer::start(move |_| {
            if throttle.load(Ordering::SeqCst) {
                throttled.fetch_add(1, Ordering::SeqCst);
                Reply::Xml(400, THROTTLING.to_owned())
            } else {
                Reply::Xml(200, assume_role_response())
            }
        })
    };
    let setup = Setup::new("20s", 0.15, &format!("role_arn = \"{ROLE_ARN}\"\n"));
    let mut cmd = setup.env.cmd_with_example_creds();
    cmd.env("AWS_ENDPOINT_URL_STS", server.url(""))
        .args(["run", "--config"])
        .arg(&setup.config);
    let mut daemon = setup.start(cmd);
    let k1 = first_key(&mut daemon, &setup.key, ROLE_KEY_ID);

    throttle.store(true, Ordering::SeqCst);
    let line = failure_keeping(
        &mut daemon,
        &setup.key,
        ROLE_KEY_ID,
        &k1,
        &["Throttling", "Rate exceeded", ROLE_ARN],
        Duration::from_secs(15),
    );
    assert!(
        line.contains("will retry"),
        "not reported as retryable: {line}"
    );
    assert!(throttled.load(Ordering::SeqCst) >= 1);

    throttle.store(false, Ordering::SeqCst);
    new_key(
        &mut daemon,
        &setup.key,
        ROLE_KEY_ID,
        &k1,
        Duration::from_secs(10),
    );
    daemon.stop_cleanly(SECRETS);
}

// ---------------------------------------------------------------------------------
// 3. The sink directory removed, made immutable, or full.

#[test]
fn a_removed_sink_directory_is_reported_and_written_again_once_recreated() {
    let _load = beside_others();
    let mut r = Rotating::start();

    std::fs::remove_dir_all(&r.setup.dir).unwrap();
    let mut line = String::new();
    r.daemon.poll(
        Duration::from_secs(10),
        "the refresh to fail on the missing directory",
        |log| match log.lines().find(|l| {
            l.contains("refresh failed")
                && l.contains(&*r.setup.dir.to_string_lossy())
                && l.contains("No such file or directory")
        }) {
            Some(l) => {
                line = l.to_owned();
                true
            }
            None => false,
        },
    );
    assert!(line.contains("will retry"), "{line}");

    std::fs::create_dir(&r.setup.dir).unwrap();
    r.recovers(Duration::from_secs(10));
    r.stop();
}

/// Clears the immutable flag again however the test ends.
struct Immutable<'a>(&'a Path);

impl Immutable<'_> {
    fn set(&self, on: bool) -> bool {
        Command::new("chattr")
            .arg(if on { "+i" } else { "-i" })
            .arg(self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

#[test]
fn an_immutable_sink_directory_keeps_the_key_then_recovers() {
    let _load = beside_others();
    if !is_root() {
        return util::skip("chattr +i needs root");
    }
    let mut r = Rotating::start();

    let dir = r.setup.dir.clone();
    let immutable = Immutable(&dir);
    if !immutable.set(true) {
        return util::skip("chattr +i is not supported on the temp dir's file system");
    }
    let line = r.failure(
        &["creating a temp file in", "Operation not permitted"],
        Duration::from_secs(10),
    );
    assert!(line.contains("will retry"), "{line}");
    assert!(immutable.set(false));
    r.recovers(Duration::from_secs(10));
    assert!(temp_files(&r.setup.dir).is_empty());
    // The directory outlives `immutable`, which clears the flag again however the test ends.
    r.daemon.stop_cleanly(SECRETS);
}

/// Runs `mount args…` in the daemon's mount namespace.
fn mount_in(daemon: &Daemon, args: &[&OsStr]) {
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(daemon.pid().to_string())
        .args(["-m", "mount"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
}

#[test]
fn a_read_only_sink_mount_keeps_the_key_then_recovers() {
    let _load = beside_others();
    if !is_root() {
        return util::skip("bind mounts need root");
    }
    // A bind mount of the sink directory onto itself, private to the daemon, that is
    // then remounted read-only (EROFS) and read-write again.
    let mut r = Rotating::start_with(|setup, server| {
        setup.run_in_namespace(server, "mount --bind \"$0\" \"$0\"")
    });
    let dir = r.setup.dir.clone();
    let dir = dir.as_os_str();
    mount_in(&r.daemon, &["-o".as_ref(), "remount,bind,ro".as_ref(), dir]);
    let line = r.failure(
        &["creating a temp file in", "Read-only file system"],
        Duration::from_secs(10),
    );
    assert!(line.contains("will retry"), "{line}");
    mount_in(&r.daemon, &["-o".as_ref(), "remount,bind,rw".as_ref(), dir]);
    r.recovers(Duration::from_secs(10));
    r.stop();
}

#[test]
fn a_full_sink_file_system_keeps_the_key_then_recovers() {
    let _load = beside_others();
    if !is_root() {
        return util::skip("mounting a tmpfs needs root");
    }
    let setup = Setup::new("20s", 0.15, "");
    let server = CREDS.endpoint();
    // The daemon runs in its own mount namespace with a 64 KiB tmpfs over the sink
    // directory; the mount vanishes with it. The test reaches that tmpfs through
    // /proc/PID/root, which resolves paths in the daemon's namespace.
    let mut daemon = setup.start(
        setup.run_in_namespace(&server, "mount -t tmpfs -o size=64k,mode=0700 tmpfs \"$0\""),
    );
    let inside = PathBuf::from(format!("/proc/{}/root", daemon.pid()))
        .join(setup.dir.strip_prefix("/").expect("an absolute temp dir"));
    let key = inside.join("k.key");
    let k1 = first_key(&mut daemon, &key, ENDPOINT_KEY_ID);
    assert!(
        !setup.key.exists(),
        "the tmpfs must only be visible inside the namespace"
    );

    // Fill every block of the tmpfs.
    let filler = inside.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    let full = loop {
        if let Err(e) = file.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(nix::libc::ENOSPC), "{full}");
    drop(file);

    let line = failure_keeping(
        &mut daemon,
        &key,
        ENDPOINT_KEY_ID,
        &k1,
        &["No space left on device"],
        Duration::from_secs(10),
    );
    assert!(line.contains("will retry"), "{line}");
    assert!(temp_files(&inside).is_empty(), "{:?}", temp_files(&inside));

    std::fs::remove_file(&filler).unwrap();
    new_key(
        &mut daemon,
        &key,
        ENDPOINT_KEY_ID,
        &k1,
        Duration::from_secs(10),
    );
    daemon.stop_cleanly(SECRETS);
}

// ---------------------------------------------------------------------------------
// 4. The key file replaced by a directory or a symlink.

#[test]
fn a_directory_in_place_of_the_key_file_is_refused_then_the_key_is_restored() {
    let _load = beside_others();
    let mut r = Rotating::start();

    // The daemon restores a deleted file within ~100 ms: retry until the directory won.
    let started = Instant::now();
    loop {
        let _ = std::fs::remove_file(&r.setup.key);
        if std::fs::create_dir(&r.setup.key).is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let mut line = String::new();
    r.daemon.poll(
        Duration::from_secs(10),
        "the refresh to refuse the directory",
        |log| {
            assert!(r.setup.key.is_dir());
            match log
                .lines()
                .find(|l| l.contains("refresh failed") && l.contains("is not a regular file"))
            {
                Some(l) => {
                    line = l.to_owned();
                    true
                }
                None => false,
            }
        },
    );
    assert!(line.contains(&*r.setup.key.to_string_lossy()), "{line}");

    std::fs::remove_dir(&r.setup.key).unwrap();
    let mut restored = None;
    r.daemon
        .poll(Duration::from_secs(3), "the key to be restored", |_| {
            restored = read_key(&r.setup.key, ENDPOINT_KEY_ID);
            restored.is_some()
        });
    assert_eq!(restored.as_deref(), Some(r.k1.as_str()));
    assert!(r.setup.key.is_file());
    r.stop();
}

#[test]
fn a_symlink_in_place_of_the_key_file_is_not_followed_then_the_key_is_restored() {
    let _load = beside_others();
    let mut r = Rotating::start();

    let elsewhere = r.setup.env.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let decoy = elsewhere.join("decoy");
    std::fs::write(&decoy, "decoy\n").unwrap();
    let link = r.setup.dir.join("link.new");
    std::os::unix::fs::symlink(&decoy, &link).unwrap();
    std::fs::rename(&link, &r.setup.key).unwrap();

    let mut line = String::new();
    r.daemon.poll(
        Duration::from_secs(10),
        "the refresh to refuse the symlink",
        |log| {
            assert!(r.setup.key.is_symlink());
            assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "decoy\n");
            match log
                .lines()
                .find(|l| l.contains("refresh failed") && l.contains("is a symbolic link"))
            {
                Some(l) => {
                    line = l.to_owned();
                    true
                }
                None => false,
            }
        },
    );
    assert!(line.contains(&*decoy.to_string_lossy()), "{line}");

    std::fs::remove_file(&r.setup.key).unwrap();
    let mut restored = None;
    r.daemon
        .poll(Duration::from_secs(3), "the key to be restored", |_| {
            restored = read_key(&r.setup.key, ENDPOINT_KEY_ID);
            restored.is_some()
        });
    assert_eq!(restored.as_deref(), Some(r.k1.as_str()));
    assert!(!r.setup.key.is_symlink());
    assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "decoy\n");
    r.stop();
}

// ---------------------------------------------------------------------------------
// 5. SIGKILL mid-refresh, then a restart.

/// A cheap pseudo-random number (no extra dependency): the clock's nanoseconds.
fn random_below(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos ^ (nanos >> 7)) % n
}

#[test]
fn sigkill_during_refreshes_never_leaves_a_partial_key_and_a_restart_cleans_up() {
    let _load = beside_others();
    let setup = Setup::new("1h", 0.5, "");
    let server = CREDS.endpoint();
    for round in 0..6 {
        let mut daemon = setup.start(setup.run_with_endpoint(&server));
        daemon.poll(Duration::from_secs(10), "the first mint", |log| {
            log.contains("key minted and delivered")
        });
        // The restart's first write removed what the previous kill left behind.
        assert!(
            temp_files(&setup.dir).is_empty(),
            "round {round}: {:?}",
            temp_files(&setup.dir)
        );
        // SIGHUP re-mints after a 200 ms debounce; kill somewhere around that write.
        daemon.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(150 + random_below(150)));
        daemon.signal(Signal::SIGKILL);
        let _ = daemon.child.wait();
        let key = read_key(&setup.key, ENDPOINT_KEY_ID)
            .unwrap_or_else(|| panic!("round {round}: no key\n{}", daemon.log()));
        assert!(!key.is_empty());
    }

    if Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        killed_by_strace_before_the_rename(&setup, &server);
    } else {
        util::skip("strace is not installed: the deterministic mid-write kill is not run");
    }
    // Plant a leftover as a killed writer leaves it too (partial content).
    std::fs::write(
        setup.dir.join(".k.key.bedrock-keyd.00000000deadbeef.tmp"),
        "bedrock-api-key-YmVk",
    )
    .unwrap();
    assert!(!temp_files(&setup.dir).is_empty());

    let mut daemon = setup.start(setup.run_with_endpoint(&server));
    daemon.poll(
        Duration::from_secs(10),
        "the first mint after the restart",
        |log| log.contains("key minted and delivered"),
    );
    read_key(&setup.key, ENDPOINT_KEY_ID).expect("a key after the restart");
    assert!(
        temp_files(&setup.dir).is_empty(),
        "{:?}\n{}",
        temp_files(&setup.dir),
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("removed a temp file left by an interrupted write")
    );
    daemon.stop_cleanly(SECRETS);
}

/// A deterministic interruption: strace kills the daemon as it renames its second
/// write into place, so a complete temp file is left behind next to the old key.
fn killed_by_strace_before_the_rename(setup: &Setup, server: &FakeServer) {
    let mut cmd = setup.command("strace");
    CREDS.endpoint_env(&setup.env, &mut cmd, server);
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=rename,renameat,renameat2",
        "-e",
        "inject=rename,renameat,renameat2:signal=KILL:when=2",
    ])
    .arg(util::bin())
    .args(["run", "--config"])
    .arg(&setup.config);
    // No key file: the first mint writes (rename 1), the SIGHUP's write is rename 2.
    std::fs::remove_file(&setup.key).unwrap();
    let mut traced = setup.start(cmd);
    traced.poll(
        Duration::from_secs(10),
        "the first mint under strace",
        |log| log.contains("key minted and delivered"),
    );
    // The daemon is strace's child.
    let children = format!("/proc/{0}/task/{0}/children", traced.pid());
    let daemon_pid: i32 = std::fs::read_to_string(children)
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("strace's child, the daemon");
    let held = read_key(&setup.key, ENDPOINT_KEY_ID).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // the next key differs
    kill(Pid::from_raw(daemon_pid), Signal::SIGHUP).unwrap();
    let started = Instant::now();
    while traced.alive() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            traced.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        read_key(&setup.key, ENDPOINT_KEY_ID).unwrap(),
        held,
        "killed before the rename: the old key must be in place, complete"
    );
    assert_eq!(
        temp_files(&setup.dir).len(),
        1,
        "the interrupted write leaves its temp file\n{}",
        traced.log()
    );
    drop(traced);
}

// ---------------------------------------------------------------------------------
// 6. 1,000 concurrent readers during rotation.

#[test]
fn a_thousand_concurrent_readers_only_ever_see_complete_keys() {
    let _alone = alone();
    let setup = Setup::new("1h", 0.5, "");
    let server = CREDS.endpoint();
    let mut daemon = setup.start(setup.run_with_endpoint(&server));
    first_key(&mut daemon, &setup.key, ENDPOINT_KEY_ID);

    let stop = AtomicBool::new(false);
    let start = std::sync::Barrier::new(1001);
    let reads = AtomicUsize::new(0);
    let bad = AtomicUsize::new(0);
    let first_bad = std::sync::Mutex::new(None::<String>);
    let seen = std::sync::Mutex::new(BTreeSet::new());
    std::thread::scope(|scope| {
        for _ in 0..1000 {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, || {
                    // A read equal to the last complete key is complete too: only
                    // a changed content is parsed (keeps 1,000 readers cheap).
                    let mut last = String::new();
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        // 1,000 busy readers would starve the daemon on 2 cores.
                        std::thread::sleep(Duration::from_millis(10));
                        reads.fetch_add(1, Ordering::Relaxed);
                        let text = match std::fs::read_to_string(&setup.key) {
                            Ok(text) if text == last => continue,
                            Ok(text) => text,
                            Err(e) => {
                                bad.fetch_add(1, Ordering::Relaxed);
                                first_bad.lock().unwrap().get_or_insert(e.to_string());
                                continue;
                            }
                        };
                        match extract_key(&text, None)
                            .map_err(|e| e.to_string())
                            .and_then(|k| decode(&k).map(|_| k).map_err(|e| e.to_string()))
                        {
                            Ok(key) => {
                                seen.lock().unwrap().insert(key);
                                last = text;
                            }
                            Err(e) => {
                                bad.fetch_add(1, Ordering::Relaxed);
                                first_bad.lock().unwrap().get_or_insert(e);
                            }
                        }
                    }
                })
                .unwrap();
        }
        start.wait();
        // Rotate: SIGHUP re-mints after a 200 ms debounce; keys differ per second.
        let started = Instant::now();
        let written = |d: &Daemon| d.log().matches("sink written").count();
        while started.elapsed() < Duration::from_secs(12) && written(&daemon) < 4 {
            daemon.signal(Signal::SIGHUP);
            std::thread::sleep(Duration::from_millis(400));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (reads, bad, seen) = (
        reads.into_inner(),
        bad.into_inner(),
        seen.into_inner().unwrap().len(),
    );
    assert_eq!(
        bad,
        0,
        "{bad} of {reads} reads failed, e.g. {:?}",
        first_bad.into_inner().unwrap()
    );
    eprintln!("{reads} reads by 1,000 readers, {seen} distinct keys, none partial");
    assert!(
        seen >= 3,
        "only {seen} distinct keys seen\n{}",
        daemon.log()
    );
    assert!(reads >= 10_000, "only {reads} reads");
    daemon.stop_cleanly(SECRETS);
}
