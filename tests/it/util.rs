//! Shared test harness: the binary, a clean environment, and skip-or-fail for
//! external components.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Example credentials from the AWS documentation: safe to print, useless to anyone.
pub const EXAMPLE_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const EXAMPLE_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// `bedrock-keyd` as the tests run it: the leak-capturing wrapper around the built
/// binary (`leaks.rs`). The process it starts must get `TestEnv::cmd()`'s environment,
/// or at least `TestEnv::log_env()`.
pub fn bin() -> PathBuf {
    crate::leaks::wrapper()
}

/// The built binary itself, for the few tests that cannot go through the wrapper
/// (each says why).
pub fn real_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bedrock-keyd"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when CI asks every component test to run (`BEDROCK_KEYD_REQUIRE_ALL=1`).
pub fn require_all() -> bool {
    std::env::var("BEDROCK_KEYD_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips the current test with a printed reason, or fails it when CI requires every
/// component. Use as `let Some(x) = thing() else { return skip("why") };`.
pub fn skip(reason: &str) {
    if require_all() {
        panic!("BEDROCK_KEYD_REQUIRE_ALL=1 but a component is missing: {reason}");
    }
    report_skip(reason);
}

/// Tells whoever runs `cargo test` that the current test did not really run, and why:
/// a `SKIPPED <test>: <reason>` line in the run's output, even though the test then
/// reports `ok`. Written to stderr directly rather than with `eprintln!`, which the
/// test harness captures and throws away for a passing test (that is how skips went
/// unseen). For a skip that is no missing component (the machine makes the test
/// meaningless), call this instead of [`skip`]: CI must not fail for it.
pub fn report_skip(reason: &str) {
    use std::io::Write as _;
    // The harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

/// A Python interpreter that can import `module`: `$BEDROCK_KEYD_PYTHON`, then the
/// repository's `.venv` (made by `.ci/run`), then `python3`.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("BEDROCK_KEYD_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(repo_root().join(".venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A private scratch environment: its own HOME (no ~/.aws of the developer leaks in),
/// no AWS variables from the caller, and IMDS disabled so nothing leaves 127.0.0.1.
/// When dropped at the end of a test, the stderr of every `bedrock-keyd` it started is
/// checked for secrets (`leaks.rs`).
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    /// Outside `dir`, so that tests listing their directory see only their own files.
    logs: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let logs = tempfile::Builder::new()
            .prefix("keyd-logs")
            .tempdir()
            .expect("temp dir");
        Self { dir, logs }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Where the wrapper copies the stderr of each `bedrock-keyd` this test starts.
    pub fn logs(&self) -> PathBuf {
        self.logs.path().to_owned()
    }

    /// The variable that sends a wrapped `bedrock-keyd`'s stderr to `logs()`, for
    /// commands built without `cmd()`.
    pub fn log_env(&self) -> (&'static str, PathBuf) {
        (crate::leaks::LOG_DIR_VAR, self.logs())
    }

    /// `program` with a clean environment (PATH kept), in the test's directory: the
    /// one builder of that environment, which every command of the tests starts from.
    pub fn clean(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(crate::leaks::LOG_DIR_VAR, self.logs())
            .current_dir(self.path());
        cmd
    }

    /// `bedrock-keyd` with a clean environment (PATH kept).
    pub fn cmd(&self) -> Command {
        self.clean(bin())
    }

    /// `program` (a shell, or a wrapper that runs one) with `clean()`'s environment,
    /// the example credentials and the binary as `$BKD`.
    pub fn scripting(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.clean(program);
        cmd.env("AWS_ACCESS_KEY_ID", EXAMPLE_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", EXAMPLE_SECRET_ACCESS_KEY)
            .env("BKD", bin());
        cmd
    }

    /// `sh -c SCRIPT` with `scripting()`'s environment.
    pub fn script(&self, script: &str) -> Command {
        let mut sh = self.scripting("sh");
        sh.args(["-c", script]);
        sh
    }

    /// `cmd()` with the example static credentials in the environment.
    pub fn cmd_with_example_creds(&self) -> Command {
        let mut cmd = self.cmd();
        cmd.env("AWS_ACCESS_KEY_ID", EXAMPLE_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", EXAMPLE_SECRET_ACCESS_KEY);
        cmd
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // A failing test already reports its own problem; the scan would only add noise.
        if !std::thread::panicking() {
            crate::leaks::assert_clean(self);
        }
    }
}

/// Runs a wrapped `bedrock-keyd` at the default log level instead of TRACE: for the
/// tests of what a user sees by default (e.g. an error is exactly one line).
pub fn at_default_log_level(cmd: &mut Command) -> &mut Command {
    cmd.env("RUST_LOG", crate::leaks::DEFAULT_LEVEL)
}

/// A proptest runner whose random choices all follow from `seed`, for the tests that
/// draw their inputs in one batch and print the seed to replay it.
pub fn seeded_runner(seed: u64) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Runs a command with the given stdin, returning its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Whether `program` is on the PATH (a test that needs it skips otherwise).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A port that was free a moment ago on 127.0.0.1 (configs refuse port 0, so the
/// daemon or a helper binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails if anything that looks like a key appears in `text`.
pub fn assert_no_key_in(text: &str) {
    assert!(
        !text.contains("bedrock-api-key-"),
        "a key appeared in the output"
    );
    // The base64 of "bedrock.amazonaws.com/?Action=" opens every key's payload.
    assert!(
        !text.contains("YmVkcm9jay5hbWF6b25hd3MuY29t"),
        "a key's payload appeared in the output"
    );
}
