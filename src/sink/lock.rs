//! One writer per target: an advisory lock beside every file a sink writes.
//!
//! Two writers on one target never settle: each restores "its" key when the other
//! replaces it (the file flips for ever), and each deletes the other's temp files as
//! leftovers. So whoever writes a target first takes an exclusive `flock(2)` on a
//! sidecar file, `.<target name>.bedrock-keyd.lock`, in the target's directory: `run`
//! holds it for its lifetime, `once` and `token` around their check-and-write.
//!
//! - A sidecar rather than the target itself: the target is replaced by `rename`, so a
//!   lock on it would sit on an inode that is gone after the first write; and locking
//!   the directory would make two targets in one directory exclude each other.
//! - `flock` rather than POSIX record locks: it belongs to the open file description,
//!   so it is not dropped when some other descriptor of the same file is closed, and it
//!   conflicts between two descriptors of one process too (two keys of one config on
//!   one target are caught the same way as two daemons).
//! - The kernel drops the lock when the holder's descriptor closes, also on a crash or
//!   `kill -9`: there is never a stale lock to clean up. The file itself stays; it is
//!   empty but for a pid, harmless, and reused by the next writer.
//! - The holder writes its pid into the file, so whoever is refused can name it.
//! - The file is opened with `O_NOFOLLOW | O_NONBLOCK` and must be a regular file
//!   owned by us or root: in a shared (sticky) directory another user could otherwise
//!   plant a symlink, a FIFO that blocks the open, or a file whose lock they hold.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Ends the name of every lock file: `.<target name>` + this.
pub const LOCK_SUFFIX: &str = ".bedrock-keyd.lock";
/// How often a bounded wait tries again. A writer holds the lock for a write (a few
/// milliseconds) or a mint (tens of milliseconds with an STS call), so a short poll
/// hands over promptly without spinning.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A pid is at most 7 digits on Linux (`pid_max` ≤ 2^22); anything longer is not ours.
const MAX_PID_BYTES: u64 = 32;

/// Why a target's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another writer holds it (after waiting `waited`, when a wait was allowed).
    #[error("{} is being written by another bedrock-keyd ({}){}", .target.display(), holder(*.pid), waited_for(*.waited))]
    Held {
        target: PathBuf,
        pid: Option<u32>,
        waited: Option<Duration>,
    },
    /// The lock file exists but is not one we may trust.
    #[error("refusing the lock file {}: {why}", .path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

fn waited_for(waited: Option<Duration>) -> String {
    match waited {
        Some(w) => format!("; still held after {}", crate::duration::format(w)),
        None => String::new(),
    }
}

/// An exclusive lock on one target, held until dropped.
#[derive(Debug)]
pub struct TargetLock {
    // Never read: holding it is the point. Dropping it closes the descriptor, which
    // releases the lock.
    _file: Flock<File>,
    target: PathBuf,
}

impl TargetLock {
    /// The lock file of `target`: `.<name>.bedrock-keyd.lock` beside it. `None` when
    /// `target` has no file name (validated sink paths always have one).
    pub fn lock_path(target: &Path) -> Option<PathBuf> {
        let name = target.file_name()?;
        let mut lock_name = std::ffi::OsString::from(".");
        lock_name.push(name);
        lock_name.push(LOCK_SUFFIX);
        Some(target.with_file_name(lock_name))
    }

    /// Takes the lock now, or says who holds it.
    pub fn try_acquire(target: &Path) -> Result<Self, LockError> {
        let path = Self::lock_path(target).ok_or_else(|| LockError::Unsafe {
            path: target.to_owned(),
            why: "the target names no file".to_owned(),
        })?;
        let file = open_lock_file(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                // Best effort: the pid only makes a refusal clearer, the lock is held
                // either way.
                let _ = write_pid(&locked, &path);
                Ok(Self {
                    _file: locked,
                    target: target.to_owned(),
                })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => Err(LockError::Held {
                target: target.to_owned(),
                pid: read_pid(&mut file),
                waited: None,
            }),
            Err((_, errno)) => Err(LockError::Io {
                path,
                source: io::Error::from(errno),
            }),
        }
    }

    /// Takes the lock, waiting up to `wait` for the holder to let go.
    pub fn acquire_within(target: &Path, wait: Duration) -> Result<Self, LockError> {
        let start = Instant::now();
        loop {
            match Self::try_acquire(target) {
                Err(LockError::Held { target, pid, .. }) => {
                    let waited = start.elapsed();
                    if waited >= wait {
                        return Err(LockError::Held {
                            target,
                            pid,
                            waited: Some(wait),
                        });
                    }
                    std::thread::sleep(POLL_INTERVAL.min(wait - waited));
                }
                other => return other,
            }
        }
    }

    /// The target this lock guards.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// Opens (creating 0600 if needed) a lock file we can trust: a regular file, owned
/// by us or root, reached without following a symlink and without blocking.
fn open_lock_file(path: &Path) -> Result<File, LockError> {
    let io_err = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    // Read-only: flock needs no write access, and a descriptor open for writing would
    // keep the file system from being remounted read-only under a running daemon.
    // (O_CREAT with O_RDONLY creates the file all the same.)
    let file = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CREAT | lock_flags(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map(File::from)
    .map_err(|errno| {
        if errno == Errno::ELOOP {
            LockError::Unsafe {
                path: path.to_owned(),
                why: "it is a symbolic link".to_owned(),
            }
        } else {
            io_err(io::Error::from(errno))
        }
    })?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.file_type().is_file() {
        return Err(LockError::Unsafe {
            path: path.to_owned(),
            why: "it is not a regular file".to_owned(),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(LockError::Unsafe {
            path: path.to_owned(),
            why: format!(
                "it is owned by uid {}, not by this user ({me}) or root",
                meta.uid()
            ),
        });
    }
    Ok(file)
}

fn lock_flags() -> nix::fcntl::OFlag {
    nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC
}

/// Writes our pid through a second, short-lived descriptor of the same file (the
/// locked one is read-only); the inode is compared, so a name swapped in between is
/// never written.
fn write_pid(locked: &File, path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(lock_flags().bits())
        .open(path)?;
    let (a, b) = (locked.metadata()?, file.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(io::Error::other("the lock file was replaced"));
    }
    file.set_len(0)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
}

/// The holder's pid as it wrote it, if it did (it may not have yet).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(MAX_PID_BYTES).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_beside_the_target_with_a_dot_name() {
        assert_eq!(
            TargetLock::lock_path(Path::new("/run/app/bedrock.key")).unwrap(),
            PathBuf::from("/run/app/.bedrock.key.bedrock-keyd.lock")
        );
        assert!(TargetLock::lock_path(Path::new("/")).is_none());
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("k.key");
        let first = TargetLock::try_acquire(&target).unwrap();
        assert_eq!(first.target(), target);
        // flock conflicts between two descriptors even within one process.
        match TargetLock::try_acquire(&target) {
            Err(LockError::Held { pid, waited, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(waited, None);
            }
            other => panic!("expected Held, got {other:?}"),
        }
        let err = TargetLock::acquire_within(&target, Duration::from_millis(60)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("k.key is being written by another bedrock-keyd (pid "));
        assert!(message.contains("still held after 60ms"), "{message}");
        drop(first);
        TargetLock::try_acquire(&target).unwrap();
    }

    #[test]
    fn a_bounded_wait_gets_the_lock_once_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("k.key");
        let first = TargetLock::try_acquire(&target).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
        });
        TargetLock::acquire_within(&target, Duration::from_secs(5)).unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn a_symlink_or_fifo_in_place_of_the_lock_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("k.key");
        let lock = TargetLock::lock_path(&target).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &lock).unwrap();
        let err = TargetLock::try_acquire(&target).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!dir.path().join("elsewhere").exists());

        std::fs::remove_file(&lock).unwrap();
        nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = TargetLock::try_acquire(&target).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
