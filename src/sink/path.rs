//! Safe resolution of the paths bedrock-keyd follows with privileges: sink files and
//! env-files, pid files, the config file.
//!
//! A root daemon that writes `/home/alice/keys/app.key` must not be steered by alice:
//! she can swap `keys` for a symlink, or for a directory of her own, between the
//! daemon's check and its write. So a path is never handed to the kernel whole. It is
//! walked from `/`, one component at a time, each directory opened with
//! `O_NOFOLLOW|O_DIRECTORY` relative to the one before and checked *on the open
//! descriptor* (no race between check and use), and every later step (open, create,
//! rename, unlink) happens relative to the final directory's descriptor. This is the
//! rule of systemd's `chase()` with `CHASE_SAFE` and of OpenSSH's `StrictModes`:
//!
//! - a directory must be owned by root or by the daemon's own user, and must not be
//!   writable by others, unless it has the sticky bit (`/tmp`: there, only the owner
//!   of an entry may replace it, and the entries we step into are checked in turn);
//!   a group-writable one is accepted only for root's group or the daemon's own;
//! - a symbolic link is followed only when root or the daemon's user owns it (its
//!   directory is trusted already, so nobody else could have put it there): system
//!   links such as `/var/run -> /run` or Kubernetes' ConfigMap `..data` links work,
//!   a link another user made never does;
//! - `..` goes to the directory actually walked, as the kernel does.
//!
//! The error names the component that broke a rule. Pid files use the *lenient*
//! policy ([`Policy::Lenient`]): a directory or link of one other user is accepted,
//! and that user is reported as the path's controller, so that the caller trusts the
//! pid only for that user's processes (systemd's `PIDFile=` rule).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// How many symbolic links one resolution may follow: the kernel's own limit
/// (`MAXSYMLINKS`), so a loop fails as `ELOOP` would.
const MAX_SYMLINKS: usize = 40;

/// How far another user's ownership is tolerated on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Only root and the daemon's user: sinks and the config.
    Strict,
    /// One other user may own directories and links on the way; they are reported
    /// as [`Resolved::controller`] (pid files).
    Lenient,
}

/// Why a path was not resolved.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} {reason}", component.display())]
    Unsafe { component: PathBuf, reason: String },
}

impl PathError {
    /// As an I/O error for callers that carry those: an unsafe path is
    /// `InvalidInput` (trying again will not help), an OS error keeps its kind.
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Io { source, .. } => source,
            unsafe_path @ Self::Unsafe { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, unsafe_path.to_string())
            }
        }
    }

    /// Whether the path (or a directory on it) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A directory opened by a safe walk: operations on names in it cannot be redirected.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
    stat: FileStat,
}

/// The last component of a path and the directory it lives in.
#[derive(Debug)]
pub struct Resolved {
    pub dir: SafeDir,
    /// The last component's name (never `.` or `..`).
    pub name: OsString,
    /// The path as walked (symlinks replaced by where they lead), for messages.
    pub path: PathBuf,
    /// [`Policy::Lenient`] only: the one other user who owns a directory or link on
    /// the way, if any.
    pub controller: Option<u32>,
}

impl SafeDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sticky and writable by others: anyone may create entries here (`/tmp`).
    pub fn is_shared_sticky(&self) -> bool {
        let mode = self.stat.st_mode;
        mode & 0o1000 != 0 && mode & 0o022 != 0
    }

    /// The group a new file here gets: the directory's own when it is set-group-id.
    pub fn new_file_gid(&self) -> u32 {
        if self.stat.st_mode & 0o2000 != 0 {
            self.stat.st_gid
        } else {
            nix::unistd::getegid().as_raw()
        }
    }

    /// Opens `name` in this directory, never following a symlink there. `create_mode`
    /// only matters with `O_CREAT` (`None`: owner read/write only).
    pub fn open(&self, name: &OsStr, flags: OFlag, create_mode: Option<Mode>) -> io::Result<File> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let mode = create_mode.unwrap_or(Mode::S_IRUSR | Mode::S_IWUSR);
        let fd = nix::fcntl::openat(self.fd(), name, flags, mode)?;
        Ok(File::from(fd))
    }

    /// `lstat` of `name` in this directory; `None` when it does not exist.
    pub fn stat_of(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(self.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        Ok(nix::fcntl::readlinkat(self.fd(), name)?)
    }

    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        Ok(nix::fcntl::renameat(self.fd(), from, self.fd(), to)?)
    }

    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::unlinkat(
            self.fd(),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?)
    }

    /// `fsync` of the directory itself, so a rename in it survives a power cut.
    pub fn sync(&self) -> io::Result<()> {
        let fd = nix::fcntl::openat(
            self.fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        File::from(fd).sync_all()
    }
}

/// Walks `path` (relative paths start at the working directory) to its last
/// component. A symlink as the last component is followed only with `follow_last`;
/// otherwise it is returned as it is, for the caller to refuse or use.
pub fn resolve(path: &Path, follow_last: bool, policy: Policy) -> Result<Resolved, PathError> {
    let io_err = |path: &Path, source: io::Error| PathError::Io {
        path: path.to_owned(),
        source,
    };
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| io_err(path, e))?
            .join(path)
    };
    let mut walk = Walk {
        stack: Vec::new(),
        controller: None,
        policy,
        me: nix::unistd::geteuid().as_raw(),
        my_group: nix::unistd::getegid().as_raw(),
    };
    walk.restart()?;
    let mut queue = components(&absolute);
    let mut links = 0;
    loop {
        let Some(name) = queue.pop_front() else {
            return Err(PathError::Unsafe {
                component: absolute,
                reason: "does not name a file".to_owned(),
            });
        };
        if name == ".." {
            if walk.stack.len() > 1 {
                walk.stack.pop();
            }
            continue;
        }
        let last = queue.is_empty();
        let parent = walk.top();
        let here = parent.path.join(&name);
        let stat = parent.stat_of(&name).map_err(|e| io_err(&here, e))?;
        let kind = stat.map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()));
        if kind == Some(SFlag::S_IFLNK) && (!last || follow_last) {
            let target = parent.read_link(&name).map_err(|e| io_err(&here, e))?;
            walk.check_owner(&here, stat.map_or(0, |st| st.st_uid), "symbolic link")?;
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(io_err(&absolute, io::Error::from(Errno::ELOOP)));
            }
            let target = Path::new(&target);
            if target.is_absolute() {
                walk.restart()?;
            }
            for component in components(target).into_iter().rev() {
                queue.push_front(component);
            }
            continue;
        }
        if last {
            let dir = walk.stack.pop().expect("the walk always holds /");
            return Ok(Resolved {
                path: here,
                name,
                dir,
                controller: walk.controller,
            });
        }
        match kind {
            None => return Err(io_err(&here, io::Error::from(Errno::ENOENT))),
            Some(SFlag::S_IFDIR) => {}
            Some(_) => return Err(io_err(&here, io::Error::from(Errno::ENOTDIR))),
        }
        let fd = nix::fcntl::openat(parent.fd(), name.as_os_str(), dir_flags(), Mode::empty())
            .map_err(|e| io_err(&here, e.into()))?;
        walk.enter(fd, here)?;
    }
}

/// How directories are opened on the walk: without following a symlink (one swapped
/// in after the `lstat` fails here), and on Linux as a bare reference (`O_PATH`),
/// which needs no read permission, only search.
fn dir_flags() -> OFlag {
    let base = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return base | OFlag::O_PATH;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return base | OFlag::O_RDONLY;
}

/// The names in `path`, `.` dropped, `..` kept (resolved against the walk).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

struct Walk {
    /// From `/` down to the current directory.
    stack: Vec<SafeDir>,
    controller: Option<u32>,
    policy: Policy,
    me: u32,
    my_group: u32,
}

impl Walk {
    fn top(&self) -> &SafeDir {
        self.stack.last().expect("the walk always holds /")
    }

    fn restart(&mut self) -> Result<(), PathError> {
        self.stack.clear();
        let root = Path::new("/");
        let fd = nix::fcntl::open(root, dir_flags(), Mode::empty()).map_err(|e| PathError::Io {
            path: root.to_owned(),
            source: e.into(),
        })?;
        self.enter(fd, root.to_owned())
    }

    fn enter(&mut self, fd: OwnedFd, path: PathBuf) -> Result<(), PathError> {
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| PathError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        self.check_dir(&path, &stat)?;
        self.stack.push(SafeDir { fd, path, stat });
        Ok(())
    }

    fn check_dir(&mut self, path: &Path, stat: &FileStat) -> Result<(), PathError> {
        self.check_owner(path, stat.st_uid, "directory")?;
        let mode = stat.st_mode & 0o7777;
        let sticky = mode & 0o1000 != 0;
        let unsafe_dir = |reason: String| PathError::Unsafe {
            component: path.to_owned(),
            reason,
        };
        if mode & 0o002 != 0 && !sticky {
            return Err(unsafe_dir(format!(
                "(mode {mode:04o}) is writable by every user and has no sticky bit, so anyone could replace what is in it"
            )));
        }
        if mode & 0o020 != 0 && !sticky && stat.st_gid != 0 && stat.st_gid != self.my_group {
            return Err(unsafe_dir(format!(
                "(mode {mode:04o}) is writable by the members of group {}, who could replace what is in it",
                stat.st_gid
            )));
        }
        Ok(())
    }

    fn check_owner(&mut self, path: &Path, uid: u32, what: &str) -> Result<(), PathError> {
        if uid == 0 || uid == self.me {
            return Ok(());
        }
        let refuse = |why: &str| PathError::Unsafe {
            component: path.to_owned(),
            reason: format!(
                "is a {what} owned by uid {uid} (another user), {why}; only root and the daemon's own user (uid {}) may own the way to a file bedrock-keyd follows",
                self.me
            ),
        };
        match (self.policy, self.controller) {
            (Policy::Strict, _) => Err(refuse("who could redirect bedrock-keyd there")),
            (Policy::Lenient, None) => {
                self.controller = Some(uid);
                Ok(())
            }
            (Policy::Lenient, Some(first)) if first == uid => Ok(()),
            (Policy::Lenient, Some(_)) => Err(refuse("after a directory of yet another user")),
        }
    }
}

/// The file type of an `lstat`/`fstat` result in words, for "is not a regular file".
pub fn describe_type(stat: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        _ => "of an unknown type",
    }
}

/// Whether a stat result is a regular file.
pub fn is_regular(stat: &FileStat) -> bool {
    stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

/// The name as UTF-8 for temp-file naming, or `None`.
pub fn name_str(name: &OsStr) -> Option<&str> {
    std::str::from_utf8(name.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_to_the_last_component_and_through_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let r = resolve(&dir.path().join("a/../a/./k"), false, Policy::Strict).unwrap();
        assert_eq!(r.name, OsString::from("k"));
        assert_eq!(r.path, dir.path().join("a/k"));
        assert_eq!(r.dir.path(), dir.path().join("a"));
        assert!(resolve(Path::new("/"), false, Policy::Strict).is_err());
        let err = resolve(&dir.path().join("no/k"), false, Policy::Strict).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn follows_own_links_and_refuses_writable_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let r = resolve(&dir.path().join("link/k"), false, Policy::Strict).unwrap();
        assert_eq!(r.path, dir.path().join("real/k"));
        std::os::unix::fs::symlink("k2", dir.path().join("real/k")).unwrap();
        let r = resolve(&dir.path().join("link/k"), true, Policy::Strict).unwrap();
        assert_eq!(r.name, OsString::from("k2"));
        let r = resolve(&dir.path().join("link/k"), false, Policy::Strict).unwrap();
        assert_eq!(r.name, OsString::from("k"));

        use std::os::unix::fs::PermissionsExt;
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = resolve(&open.join("k"), false, Policy::Strict).unwrap_err();
        assert!(err.to_string().contains("sticky"), "{err}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        resolve(&open.join("k"), false, Policy::Strict).unwrap();
    }
}
