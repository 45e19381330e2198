//! Running `bedrock-keyd` as a real background process, for the tests of `run` and
//! `exec`: the process itself (`Daemon`), a container-credentials endpoint for it
//! (`ContainerCreds`), "this file holds a good key" (`read_key`) and the waits. One
//! copy, so that a fix to any of them reaches every test that runs the daemon.
//!
//! Every daemon is started from a `TestEnv` command (`util::bin()` with the test's
//! log directory), so its stderr is scanned for secrets (`leaks.rs`), and the
//! endpoint's documents come from `fake_http::creds_json`, which registers their
//! secrets with that scan. Each test file hands out its own credentials, so a leaked
//! secret or a key signed with the wrong ones names the file it came from.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bedrock_keyd::key::decode::decode;
use bedrock_keyd::key::format::extract_key;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::fake_http::{FakeServer, Reply, Request, creds_json, in_secs};
use crate::util::{self, TestEnv};

/// How often the waits look again: well under the shortest deadline a test checks
/// (a deleted key file restored within a second), without keeping a core busy.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------
// The credential endpoint

/// What a test file's fake container-credentials endpoint (ECS, EKS Pod Identity)
/// hands out, and the authorization token it wants, which the daemon reads from a
/// file as the EKS agent provides it.
#[derive(Clone, Copy)]
pub struct ContainerCreds {
    pub token: &'static str,
    pub access_key_id: &'static str,
    pub secret: &'static str,
    pub session_token: &'static str,
}

impl ContainerCreds {
    /// The endpoint's answer: 2-minute credentials, less than the SDK's 5-minute
    /// renewal margin, so every mint asks the endpoint again (and meets whatever fault
    /// a test set); 403 to a request without the token.
    pub fn reply(self, request: &Request) -> Reply {
        if request.header("authorization") != Some(self.token) {
            return Reply::Status(403);
        }
        Reply::Json(creds_json(
            self.access_key_id,
            self.secret,
            self.session_token,
            &in_secs(120).1,
        ))
    }

    /// An endpoint that always gives `reply`.
    pub fn endpoint(self) -> FakeServer {
        FakeServer::start(move |request| self.reply(request))
    }

    /// Points `cmd` at `server`, with the token in the file `pod-token` of `env`.
    pub fn endpoint_env(self, env: &TestEnv, cmd: &mut Command, server: &FakeServer) {
        let token_file = env.path().join("pod-token");
        std::fs::write(&token_file, self.token).unwrap();
        cmd.env("AWS_CONTAINER_CREDENTIALS_FULL_URI", server.url("/creds"))
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file);
    }

    /// `bedrock-keyd run --config CONFIG` taking its credentials from `server`.
    pub fn run(self, env: &TestEnv, server: &FakeServer, config: &Path) -> Command {
        let mut cmd = env.cmd();
        self.endpoint_env(env, &mut cmd, server);
        cmd.args(["run", "--config"]).arg(config);
        cmd
    }

    /// The secrets no log may show.
    pub fn secrets(self) -> [&'static str; 3] {
        [self.secret, self.session_token, self.token]
    }
}

// ---------------------------------------------------------------------------------
// Key files

/// Reads a key file: `None` while it does not exist; panics unless it holds a
/// complete, well-formed key signed with `access_key_id` for `region` that has not
/// expired (what a reader may see at any moment).
pub fn read_key(path: &Path, access_key_id: &str, region: &str) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let key = extract_key(&text, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoded = decode(&key).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        decoded.expires_at > SystemTime::now(),
        "{} holds an expired key",
        path.display()
    );
    assert_eq!(decoded.access_key_id, access_key_id);
    assert_eq!(decoded.region, region);
    Some(key)
}

/// The temp files (`*.tmp`) in a sink directory: a finished write leaves none, and a
/// restart removes those of an interrupted one.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

// ---------------------------------------------------------------------------------
// Waiting

/// Polls `f` until it returns `Some` (returned), or `None` once `limit` has passed.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `ready` until it holds; panics naming `what` once `limit` has passed.
pub fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let done = wait_for(limit, || ready().then_some(()));
    assert!(done.is_some(), "timed out waiting for {what}");
}

// ---------------------------------------------------------------------------------
// The process

/// A `bedrock-keyd` running in the background with its stderr in `daemon.log` of the
/// test's directory; killed when dropped, so a failing test leaves none behind.
pub struct Daemon {
    pub child: Child,
    log: PathBuf,
    own_group: bool,
    /// The leak wrapper's "stderr fully copied" marker (`leaks.rs`).
    copied: PathBuf,
}

impl Daemon {
    /// Starts `cmd`, which must carry `env`'s environment (`TestEnv::cmd()`) so that
    /// its log is scanned for leaks. Nothing is read from or written to the terminal.
    pub fn start(env: &TestEnv, cmd: Command) -> Self {
        Self::spawn(env, cmd, false)
    }

    /// `start` as the leader of a new process group, which dropping it kills whole:
    /// that also ends what it started (strace's tracee, which survives strace
    /// otherwise), and a test can put a bystander into the daemon's group.
    pub fn start_in_own_group(env: &TestEnv, cmd: Command) -> Self {
        Self::spawn(env, cmd, true)
    }

    fn spawn(env: &TestEnv, mut cmd: Command, own_group: bool) -> Self {
        use std::os::unix::process::CommandExt as _;
        let log = env.path().join("daemon.log");
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let copied = env.logs().join(format!("{}.log.done", child.id()));
        Self {
            child,
            log,
            own_group,
            copied,
        }
    }

    /// After the exit: the wrapper copies stderr through `tee`, whose last lines may
    /// land a moment after the process is gone. Waits (bounded) until they are in.
    fn settle(&self) {
        wait_for(Duration::from_secs(3), || {
            self.copied.exists().then_some(())
        });
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Polls until `ready(log)`; panics with `what` and the log once `limit` has
    /// passed, or as soon as the daemon has exited.
    pub fn poll(&mut self, limit: Duration, what: &str, mut ready: impl FnMut(&str) -> bool) {
        let done = wait_for(limit, || {
            if ready(&self.log()) {
                return Some(());
            }
            assert!(self.alive(), "the daemon exited\n{}", self.log());
            None
        });
        assert!(
            done.is_some(),
            "timed out after {limit:?} waiting for {what}\n{}",
            self.log()
        );
    }

    /// Its exit status; panics with the log unless it exits within `limit`.
    pub fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        match wait_for(limit, || self.child.try_wait().unwrap()) {
            Some(status) => {
                self.settle();
                status
            }
            None => panic!("did not exit within {limit:?}\n{}", self.log()),
        }
    }

    /// SIGTERM, and the exit code once it has exited.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        let code = self.child.wait().unwrap().code();
        self.settle();
        code
    }

    /// `stop`, then checks that it exited 0 and that no key and none of `secrets`
    /// reached its log.
    pub fn stop_cleanly(mut self, secrets: &[&str]) {
        let code = self.stop();
        let log = self.log();
        assert_eq!(code, Some(0), "{log}");
        for secret in secrets {
            assert!(!log.contains(secret), "{secret} leaked into the log");
        }
        util::assert_no_key_in(&log);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.own_group {
            let _ = kill(Pid::from_raw(-self.pid().as_raw()), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
