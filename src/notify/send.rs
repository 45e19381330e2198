//! Sending notifications: the part of [`crate::notify`] that touches the system.
//!
//! One [`NotifySpec`] becomes one *notification attempt* with one of three results,
//! which the status board counts (`notify_ok`, `notify_err`; `bedrock_keyd_notify_total`):
//! - **sent**: every signal went out, `systemctl` or the command exited 0;
//! - **error**: anything else, logged with its cause;
//! - **pending**: nobody to tell yet, counted neither way (logged at debug/info): a pid
//!   file that does not exist (the dependent has not started), or no process with the
//!   name. The next key is announced to it as usual.
//!
//! Rules that keep a bad pid file from hurting anyone:
//! - the pid file is re-read for every notification, at most [`PID_FILE_MAX_BYTES`],
//!   opened non-blocking after a safe walk of its path ([`crate::sink::path`],
//!   lenient policy), and must be a regular file (a FIFO would block the open, and
//!   with it the daemon);
//! - a pid file that another user controls (owns it, or a directory or symlink on
//!   its path) is trusted only for a process of that same user (systemd's
//!   `PIDFile=` rule): else anyone could aim our signal at root's processes;
//! - its content, trimmed of whitespace, must be decimal digits only, with a value
//!   of at least 2 and at most the system's `pid_max`: empty, garbage, `0` (our process
//!   group), `1` (init), `-1` (every process) and negative values (process groups)
//!   are errors, never a signal;
//! - a pid file that every user may write is refused (anyone could aim our signal);
//! - a pid that is our own is refused; a pid with no process (`ESRCH`) is an error
//!   (a stale pid file).
//!
//! Process names match exactly against `/proc/PID/comm` (the kernel's name, which
//! it truncates to 15 bytes, so a longer name can only match the next rule) or the
//! basename of `argv[0]` from `/proc/PID/cmdline`. Pid 1 and bedrock-keyd itself are
//! never signalled. This needs `/proc` (Linux); elsewhere it is an error.
//!
//! Commands run without a shell, stdin from `/dev/null`, stdout and stderr inherited
//! (journald captures them), in their own process group so a timeout kills helpers
//! they started too. Their environment is ours minus `AWS_BEARER_TOKEN_BEDROCK`, plus
//! `BEDROCK_KEYD_KEY_NAME`, `BEDROCK_KEYD_EXPIRES_AT` (RFC 3339) and
//! `BEDROCK_KEYD_REGION`; never the key.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal as nix_signal;
use nix::unistd::Pid;

use super::{NotifySpec, Signal, SystemdAction};
use crate::sink::path::{PathError, Policy};

/// A pid file holds a number and a newline; anything longer is not a pid file.
pub const PID_FILE_MAX_BYTES: u64 = 64;
/// systemd's own default start/stop timeout (`DefaultTimeoutStartSec=`): a restart
/// that takes longer has failed in systemd's eyes too.
pub const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(90);
/// Linux's largest possible pid (`PID_MAX_LIMIT` on 64-bit), used when
/// `/proc/sys/kernel/pid_max` cannot be read.
const PID_MAX_LIMIT: i64 = 4_194_304;
/// The variable that would hand a dependent the key; stripped from every command.
pub const BEARER_TOKEN_VARIABLE: &str = "AWS_BEARER_TOKEN_BEDROCK";

/// What a notification is about: the key's name and public facts, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub key_name: String,
    pub region: String,
    pub expires_at: SystemTime,
}

/// The result of one notification that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every dependent was told.
    Sent,
    /// Nobody to tell yet (why, for the log).
    Pending(String),
}

/// Why a notification failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot read the pid file {}: {source}", path.display())]
    PidFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pid file {} holds no usable pid: {reason}; nothing was signalled", path.display())]
    PidFileInvalid { path: PathBuf, reason: String },
    #[error("cannot send {signal} to pid {pid}: {reason}")]
    Kill {
        pid: i32,
        signal: Signal,
        reason: String,
    },
    #[error("cannot list processes to find {name:?}: {source}")]
    ProcessScan {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {}; it was killed", crate::duration::format(*timeout))]
    Timeout { program: String, timeout: Duration },
    #[error("{program} failed: {status}")]
    Failed { program: String, status: String },
}

/// Sends one notification. Never panics, never signals pid ≤ 1 or ourselves.
pub async fn send(spec: &NotifySpec, delivery: &Delivery) -> Result<Outcome, NotifyError> {
    match spec {
        NotifySpec::PidFile { path, signal } => pid_file(path, *signal),
        NotifySpec::Process { name, signal } => process(name, *signal),
        NotifySpec::SystemdUnit { unit, action } => systemd(unit, *action).await,
        NotifySpec::Command { argv, timeout } => command(argv, *timeout, delivery).await,
    }
}

fn pid_file(path: &Path, signal: Signal) -> Result<Outcome, NotifyError> {
    let read_error = |source| NotifyError::PidFileRead {
        path: path.to_owned(),
        source,
    };
    let invalid = |reason: String| NotifyError::PidFileInvalid {
        path: path.to_owned(),
        reason,
    };
    let pending = || {
        Ok(Outcome::Pending(format!(
            "the pid file {} does not exist (yet)",
            path.display()
        )))
    };
    let found = match crate::sink::path::resolve(path, true, Policy::Lenient) {
        Ok(found) => found,
        Err(e) if e.is_not_found() => return pending(),
        Err(e @ PathError::Unsafe { .. }) => return Err(invalid(e.to_string())),
        Err(PathError::Io { source, .. }) => return Err(read_error(source)),
    };
    // Non-blocking: a FIFO would otherwise hold the open until someone writes to it.
    let file = match found
        .dir
        .open(&found.name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, None)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return pending(),
        Err(e) => return Err(read_error(e)),
    };
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(invalid(format!(
            "not a regular file (it is {})",
            crate::sink::path::describe_type(
                &nix::sys::stat::fstat(&file).map_err(|e| read_error(e.into()))?
            )
        )));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(invalid(
            "every user may write it, so anyone could choose whom bedrock-keyd signals".to_owned(),
        ));
    }
    // Who could have written this pid: a user other than root and us who owns the
    // file, or a directory or link on its path.
    let me = nix::unistd::geteuid().as_raw();
    let file_owner = (meta.uid() != 0 && meta.uid() != me).then_some(meta.uid());
    let controller = match (found.controller, file_owner) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!(
                "it is owned by uid {b} in a directory of uid {a}: two other users could have written it"
            )));
        }
        (a, b) => a.or(b),
    };
    let bytes = crate::sink::bounded::read_stream(&file, PID_FILE_MAX_BYTES)
        .map_err(|e| invalid(e.to_string()))?;
    let pid = parse_pid(&bytes, pid_max()).map_err(invalid)?;
    if pid == Pid::this().as_raw() {
        return Err(invalid(format!("{pid} is bedrock-keyd itself")));
    }
    if let Some(uid) = controller {
        check_process_owner(pid, uid).map_err(invalid)?;
    }
    kill(pid, signal)?;
    tracing::info!(pid, signal = %signal, pid_file = %path.display(), "dependent notified");
    Ok(Outcome::Sent)
}

/// systemd's `PIDFile=` rule: a pid file another user controls is trusted only for
/// that user's processes, or they could aim our signal at root's.
fn check_process_owner(pid: i32, controller: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata(format!("/proc/{pid}")) {
        Ok(proc) if proc.uid() == controller => Ok(()),
        Ok(proc) => Err(format!(
            "the pid file is controlled by uid {controller} (another user), but pid {pid} belongs to uid {}; a pid file is trusted only for its controller's processes",
            proc.uid()
        )),
        Err(e) => Err(format!(
            "the pid file is controlled by uid {controller} (another user), and the owner of pid {pid} cannot be checked: {e}"
        )),
    }
}

/// The pid in a pid file's content, or why there is none. Only `2..=pid_max`, written
/// as decimal digits with optional surrounding whitespace, is accepted.
pub fn parse_pid(bytes: &[u8], pid_max: i64) -> Result<i32, String> {
    if bytes.len() as u64 > PID_FILE_MAX_BYTES {
        return Err(format!("longer than {PID_FILE_MAX_BYTES} bytes"));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err("not text".to_owned());
    };
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".to_owned());
    }
    if let Some(rest) = text.strip_prefix('-')
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{text} is negative (a process group or every process)"
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a number"));
    }
    // Digits only, so the only parse failure left is overflow.
    let pid: i64 = text.parse().unwrap_or(i64::MAX);
    match pid {
        0 => Err("0 would signal bedrock-keyd's own process group".to_owned()),
        1 => Err("1 is init".to_owned()),
        p if p > pid_max || p > i64::from(i32::MAX) => {
            Err(format!("{text} is larger than any pid (pid_max {pid_max})"))
        }
        // In range of i32 by the arm above.
        p => i32::try_from(p).map_err(|_| format!("{text} is out of range")),
    }
}

/// The kernel's `pid_max`, or Linux's absolute limit when it cannot be read.
fn pid_max() -> i64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

fn kill(pid: i32, signal: Signal) -> Result<(), NotifyError> {
    // The last line of defence: whatever a caller computed, never a group or init.
    if pid <= 1 {
        return Err(NotifyError::Kill {
            pid,
            signal,
            reason: "refusing to signal a process group, every process or init".to_owned(),
        });
    }
    nix_signal::kill(Pid::from_raw(pid), to_nix(signal)).map_err(|errno| NotifyError::Kill {
        pid,
        signal,
        reason: match errno {
            Errno::ESRCH => "no such process (a stale pid file?)".to_owned(),
            Errno::EPERM => "not permitted (another user's process?)".to_owned(),
            other => other.desc().to_owned(),
        },
    })
}

/// Our signal as nix's.
pub fn to_nix(signal: Signal) -> nix_signal::Signal {
    use nix_signal::Signal as N;
    match signal {
        Signal::Hup => N::SIGHUP,
        Signal::Int => N::SIGINT,
        Signal::Quit => N::SIGQUIT,
        Signal::Alrm => N::SIGALRM,
        Signal::Term => N::SIGTERM,
        Signal::Usr1 => N::SIGUSR1,
        Signal::Usr2 => N::SIGUSR2,
        Signal::Winch => N::SIGWINCH,
        Signal::Cont => N::SIGCONT,
    }
}

fn process(name: &str, signal: Signal) -> Result<Outcome, NotifyError> {
    let pids =
        find_processes(Path::new("/proc"), name).map_err(|source| NotifyError::ProcessScan {
            name: name.to_owned(),
            source,
        })?;
    if pids.is_empty() {
        return Ok(Outcome::Pending(format!("no process is named {name:?}")));
    }
    let mut first_error = None;
    for pid in pids {
        match kill(pid, signal) {
            Ok(()) => {
                tracing::info!(pid, signal = %signal, process = name, "dependent notified")
            }
            // It exited between the scan and the signal: nobody left to tell.
            Err(NotifyError::Kill { reason, .. }) if reason.starts_with("no such process") => {
                tracing::debug!(pid, process = name, "the process exited before the signal");
            }
            Err(e) => {
                tracing::warn!(error = %e, process = name, "a dependent was not signalled");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(Outcome::Sent),
        Some(e) => Err(e),
    }
}

/// Pids (never 1, never ours) of the processes named exactly `name` under `proc`.
pub fn find_processes(proc: &Path, name: &str) -> std::io::Result<Vec<i32>> {
    let me = Pid::this().as_raw();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 1 || pid == me {
            continue;
        }
        if process_named(&entry.path(), name) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// Whether the process in `dir` (`/proc/PID`) is named `name`: its `comm`, or the
/// basename of its `argv[0]`. Unreadable entries (it exited, another user's) do not match.
fn process_named(dir: &Path, name: &str) -> bool {
    if let Ok(comm) = std::fs::read(dir.join("comm"))
        && comm.strip_suffix(b"\n").unwrap_or(&comm) == name.as_bytes()
    {
        return true;
    }
    std::fs::read(dir.join("cmdline")).is_ok_and(|cmdline| {
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
        base == name.as_bytes()
    })
}

async fn systemd(unit: &str, action: SystemdAction) -> Result<Outcome, NotifyError> {
    let mut argv: Vec<String> = vec!["systemctl".to_owned()];
    if user_manager() {
        argv.push("--user".to_owned());
    }
    match action {
        SystemdAction::Reload => argv.push("reload".to_owned()),
        SystemdAction::Restart => argv.push("restart".to_owned()),
        SystemdAction::ReloadOrRestart => argv.push("reload-or-restart".to_owned()),
        SystemdAction::Signal(sig) => {
            argv.push("kill".to_owned());
            argv.push(format!("--signal={}", sig.name()));
        }
    }
    argv.push("--".to_owned());
    argv.push(unit.to_owned());
    let shown = argv.join(" ");
    let status = run(&argv, SYSTEMCTL_TIMEOUT, |_| {}).await?;
    tracing::info!(command = %shown, status = %status, "dependent notified");
    if status.success() {
        Ok(Outcome::Sent)
    } else {
        Err(NotifyError::Failed {
            program: shown,
            status: describe(status),
        })
    }
}

/// Which systemd manager to ask: the system manager as root; the user's manager when
/// running unprivileged in a user session (`XDG_RUNTIME_DIR` set, as in every systemd
/// user service and login session); otherwise the system manager again (a system
/// service under a dedicated user, allowed by a polkit rule).
fn user_manager() -> bool {
    !nix::unistd::geteuid().is_root() && std::env::var_os("XDG_RUNTIME_DIR").is_some()
}

async fn command(
    argv: &[String],
    timeout: Duration,
    delivery: &Delivery,
) -> Result<Outcome, NotifyError> {
    let shown = argv.join(" ");
    let status = run(argv, timeout, |cmd| {
        cmd.env("BEDROCK_KEYD_KEY_NAME", &delivery.key_name)
            .env(
                "BEDROCK_KEYD_EXPIRES_AT",
                crate::time::rfc3339(delivery.expires_at),
            )
            .env("BEDROCK_KEYD_REGION", &delivery.region);
    })
    .await?;
    tracing::info!(command = %shown, status = %describe(status), "notify command finished");
    if status.success() {
        Ok(Outcome::Sent)
    } else {
        Err(NotifyError::Failed {
            program: shown,
            status: describe(status),
        })
    }
}

/// Runs `argv` (no shell), stdin null, without `AWS_BEARER_TOKEN_BEDROCK`, in its own
/// process group; the whole group is killed when `timeout` passes.
async fn run(
    argv: &[String],
    timeout: Duration,
    setup: impl FnOnce(&mut tokio::process::Command),
) -> Result<std::process::ExitStatus, NotifyError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(argv.iter().skip(1))
        // Whatever our own environment holds, no dependent gets a key from us.
        .env_remove(BEARER_TOKEN_VARIABLE)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    setup(&mut cmd);
    let mut child = cmd.spawn().map_err(|source| NotifyError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|source| NotifyError::Spawn { program, source }),
        Err(_) => {
            // Its own group (process_group(0)): pgid = its pid, never ours or init.
            if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok())
                && pgid > 1
            {
                let _ = nix_signal::killpg(Pid::from_raw(pgid), nix_signal::Signal::SIGKILL);
            }
            let _ = child.kill().await;
            Err(NotifyError::Timeout { program, timeout })
        }
    }
}

/// An exit status as people read it: "exit status 3", "killed by signal 9".
pub fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_without_a_usable_pid_are_refused() {
        for (content, why) in [
            ("", "empty"),
            ("  \n", "empty"),
            ("abc", "not a number"),
            ("12abc", "not a number"),
            ("+5", "not a number"),
            ("0", "process group"),
            ("1", "init"),
            ("1\n", "init"),
            ("-1", "negative"),
            ("-42", "negative"),
            ("4194305", "larger"),
            ("99999999999999999999999", "larger"),
            ("12 13", "not a number"),
        ] {
            let err = parse_pid(content.as_bytes(), PID_MAX_LIMIT).unwrap_err();
            assert!(err.contains(why), "{content:?}: {err}");
        }
        assert!(parse_pid(&[b'1'; 65], PID_MAX_LIMIT).is_err());
        assert!(parse_pid(b"\xff\xfe", PID_MAX_LIMIT).is_err());
        assert_eq!(parse_pid(b"4242\n", PID_MAX_LIMIT), Ok(4242));
        assert_eq!(parse_pid(b" 2 ", PID_MAX_LIMIT), Ok(2));
        assert!(parse_pid(b"40000", 32768).is_err());
    }

    #[test]
    fn kill_refuses_groups_and_init() {
        for pid in [-1, 0, 1] {
            assert!(kill(pid, Signal::Hup).is_err());
        }
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!("sleep 30 & echo $! > {}; wait", pid_file.display()),
        ];
        let delivery = Delivery {
            key_name: "k".to_owned(),
            region: "us-east-1".to_owned(),
            expires_at: SystemTime::now(),
        };
        let spec = NotifySpec::Command {
            argv,
            timeout: Duration::from_millis(500),
        };
        let started = std::time::Instant::now();
        let err = send(&spec, &delivery).await.unwrap_err();
        assert!(matches!(err, NotifyError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed with the group; reaped by init (or still a zombie for a moment).
        let mut gone = false;
        for _ in 0..50 {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            if state.map_or(true, |s| s.contains(") Z ")) {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "the command's child outlived the timeout");
    }

    #[test]
    fn process_scan_matches_comm_and_argv0_exactly() {
        let proc = tempfile::tempdir().unwrap();
        let add = |pid: &str, comm: &str, cmdline: &[u8]| {
            let dir = proc.path().join(pid);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        };
        add("1", "litellm", b"litellm\0");
        add("100", "litellm", b"/usr/bin/python3\0/usr/bin/litellm\0");
        add("101", "python3", b"/opt/litellm\0--port\0");
        add("102", "litellm-proxy", b"litellm-proxy\0");
        add("103", "a-very-long-pro", b"/bin/a-very-long-program-name\0");
        add("104", "bash", b"bash\0-c\0litellm\0");
        std::fs::create_dir(proc.path().join("self")).unwrap();
        assert_eq!(
            find_processes(proc.path(), "litellm").unwrap(),
            vec![100, 101]
        );
        assert_eq!(
            find_processes(proc.path(), "a-very-long-program-name").unwrap(),
            vec![103]
        );
        assert!(
            find_processes(proc.path(), "a-very-long-pro")
                .unwrap()
                .contains(&103),
            "comm is what the kernel calls it"
        );
    }
}
