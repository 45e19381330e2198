//! The one routine that replaces a key file, used by the file and env-file sinks.
//!
//! A reader must only ever see the previous complete content or the new complete
//! content, and a crash at any instant must leave one of the two in place. So a write
//! never touches the target itself:
//!
//! 1. refuse unsafe targets: a symlink (unless `follow_symlinks`), something that is not
//!    a regular file, a directory that other users may write without the sticky bit, a
//!    mode that lets other users at the key (unless `allow_world_readable`);
//! 2. read the current content; if it already is the new content with the configured
//!    mode and owner, write nothing ([`WriteOutcome::Unchanged`]);
//! 3. create a temp file in the target's directory with `O_CREAT|O_EXCL`, readable by
//!    its owner only; `fchown` it to the configured owner/group (running as root
//!    without one configured: the owner the file had), `fchmod` it to the
//!    configured mode (whatever the umask), and only then write the data: no other user
//!    can ever open a file that holds the key unless the configured mode lets them;
//! 4. `fsync` the temp file, `rename` it over the target, `fsync` the directory, so the
//!    new name survives a power cut.
//!
//! A target that is a single-file bind mount (Docker/Kubernetes `subPath`, `-v f:f`)
//! cannot be renamed over (`EBUSY`, or `EXDEV` across mounts). Then the content is
//! rewritten in place, with a warning that says why: readers may briefly see a
//! partial key there, which no other approach can avoid for such a target.
//!
//! Temp files are named `.<target name>.bedrock-keyd.<16 hex digits>.tmp`. A process
//! killed mid-write can leave one behind; [`AtomicFile`] deletes such leftovers for its
//! target on its first write, so "the next start" cleans up. Two writers configured for
//! the same target would delete each other's temp files: one target, one writer.
//!
//! Every error names the sink and the path, and carries the OS error; on error the
//! temp file is removed and the target is as it was.

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::Zeroizing;

use super::{FileAccess, SinkError, UserRef, WriteOutcome};

/// Marks a temp file as ours: `.<name>` + this + 16 hex digits + [`TEMP_SUFFIX`].
/// Distinctive enough that cleanup never deletes a file someone else made.
pub const TEMP_INFIX: &str = ".bedrock-keyd.";
/// Ends every temp file name.
pub const TEMP_SUFFIX: &str = ".tmp";
/// How much of the target's name goes into a temp name: NAME_MAX is 255 bytes and the
/// rest of the temp name takes 36, so longer names are cut here.
const MAX_NAME_IN_TEMP: usize = 200;
/// How many random temp names to try before giving up: a collision of 64-bit random
/// names means something else is creating files with our pattern.
const TEMP_NAME_ATTEMPTS: usize = 8;
/// Mode bits that make a key reachable by any user on the machine.
const OTHER_BITS: u32 = 0o007;

/// A key file and how it must be written. Cheap to build: no I/O until `write`.
#[derive(Debug)]
pub struct AtomicFile {
    /// For errors and logs: `file /run/x.key`.
    sink: String,
    path: PathBuf,
    access: FileAccess,
    /// Whether leftovers of an interrupted write were looked for already.
    cleaned: AtomicBool,
}

impl AtomicFile {
    pub fn new(sink: impl Into<String>, path: PathBuf, access: FileAccess) -> Self {
        Self {
            sink: sink.into(),
            path,
            access,
            cleaned: AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, action: impl Into<String>, source: io::Error) -> SinkError {
        SinkError::new(self.sink.clone(), action, source)
    }

    fn refuse(&self, why: String) -> SinkError {
        self.err(
            "refusing an unsafe target",
            io::Error::new(io::ErrorKind::InvalidInput, why),
        )
    }

    /// Replaces the file with `render(current content)`. `render` gets `None` when the
    /// file does not exist yet; its output is compared with the current content so an
    /// unchanged file is not touched.
    pub fn write_with(
        &self,
        render: impl FnOnce(Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, SinkError>,
    ) -> Result<WriteOutcome, SinkError> {
        let mode = self.access.mode.bits();
        if mode & OTHER_BITS != 0 && !self.access.allow_world_readable {
            return Err(self.refuse(format!(
                "mode {} lets every user on the machine at the key; use a mode such as 0600 or 0640, or allow it explicitly (--allow-world-readable, allow_world_readable = true)",
                self.access.mode
            )));
        }
        let target = self.resolve_target()?;
        let (dir, name) = split(&target)
            .ok_or_else(|| self.refuse(format!("{} does not name a file", target.display())))?;
        self.check_dir(&dir)?;
        if !self.cleaned.swap(true, Ordering::SeqCst) {
            clean_stale(&self.sink, &dir, &name);
        }
        let mut uid = self.resolve(self.access.owner.as_ref(), Kind::User)?;
        let mut gid = self.resolve(self.access.group.as_ref(), Kind::Group)?;

        let current = read_if_exists(&target)
            .map_err(|e| self.err(format!("reading {}", target.display()), e))?;
        // Root replacing a file it was not told who should own keeps the owner the
        // file has: an env-file of `app` must not become root's and unreadable to app.
        // (Only root may give a file away, so others get the usual new-file owner.)
        if let Some((_, meta)) = &current
            && nix::unistd::geteuid().is_root()
        {
            uid = uid.or(Some(meta.uid()));
            gid = gid.or(Some(meta.gid()));
        }
        let content = render(current.as_ref().map(|(bytes, _)| bytes.as_slice()))?;
        if let Some((bytes, meta)) = &current {
            let same_access = meta.mode() & 0o7777 == mode
                && uid.is_none_or(|u| meta.uid() == u)
                && gid.is_none_or(|g| meta.gid() == g);
            if same_access && bytes.as_slice() == content.as_slice() {
                return Ok(WriteOutcome::Unchanged);
            }
        }
        self.replace(&target, &dir, &name, &content, mode, uid, gid)?;
        Ok(WriteOutcome::Written)
    }

    /// The current content, or `None` when the file does not exist.
    pub fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, SinkError> {
        let mut options = OpenOptions::new();
        options.read(true);
        if !self.access.follow_symlinks {
            options.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
        }
        let mut file = match options.open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(format!("reading {}", self.path.display()), e)),
        };
        let mut out = Zeroizing::new(Vec::new());
        file.read_to_end(&mut out)
            .map_err(|e| self.err(format!("reading {}", self.path.display()), e))?;
        Ok(Some(out))
    }

    /// The path to replace: the configured one, or where its symlink points when
    /// following symlinks is allowed.
    fn resolve_target(&self) -> Result<PathBuf, SinkError> {
        let path = &self.path;
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path.clone()),
            Err(e) => return Err(self.err(format!("examining {}", path.display()), e)),
        };
        if meta.file_type().is_symlink() {
            let link = fs::read_link(path)
                .map_err(|e| self.err(format!("reading the symlink {}", path.display()), e))?;
            if !self.access.follow_symlinks {
                return Err(self.refuse(format!(
                    "{} is a symbolic link (to {}); refusing to write through it unless allowed (--follow-symlinks, follow_symlinks = true)",
                    path.display(),
                    link.display()
                )));
            }
            // A dangling link is fine: the write creates its target.
            let real = match fs::canonicalize(path) {
                Ok(real) => real,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match path.parent() {
                    Some(dir) => dir.join(&link),
                    None => link,
                },
                Err(e) => {
                    return Err(self.err(format!("resolving the symlink {}", path.display()), e));
                }
            };
            if let Ok(m) = fs::symlink_metadata(&real)
                && !m.file_type().is_file()
            {
                return Err(self.refuse(format!(
                    "{} (the symlink's target of {}) is not a regular file",
                    real.display(),
                    path.display()
                )));
            }
            return Ok(real);
        }
        if !meta.file_type().is_file() {
            return Err(self.refuse(format!("{} is not a regular file", path.display())));
        }
        Ok(path.clone())
    }

    /// Refuses a directory in which another user could swap the key file.
    fn check_dir(&self, dir: &Path) -> Result<(), SinkError> {
        let meta = fs::metadata(dir)
            .map_err(|e| self.err(format!("examining the directory {}", dir.display()), e))?;
        let bits = meta.permissions().mode();
        // Writable by others without the sticky bit: anyone may rename or delete our file.
        if bits & 0o002 != 0 && bits & 0o1000 == 0 {
            return Err(self.refuse(format!(
                "the directory {} (mode {:04o}) is writable by every user and has no sticky bit, so anyone could replace the key",
                dir.display(),
                bits & 0o7777
            )));
        }
        Ok(())
    }

    fn resolve(&self, user: Option<&UserRef>, kind: Kind) -> Result<Option<u32>, SinkError> {
        let Some(user) = user else { return Ok(None) };
        let name = match user {
            UserRef::Id(id) => return Ok(Some(*id)),
            UserRef::Name(name) => name,
        };
        let found = match kind {
            Kind::User => nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
            Kind::Group => nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
        };
        let what = match kind {
            Kind::User => "user",
            Kind::Group => "group",
        };
        match found {
            Ok(Some(id)) => Ok(Some(id)),
            Ok(None) => Err(self.err(
                format!("looking up the {what} {name:?}"),
                io::Error::new(io::ErrorKind::NotFound, format!("no such {what}")),
            )),
            Err(errno) => Err(self.err(
                format!("looking up the {what} {name:?}"),
                io::Error::from(errno),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn replace(
        &self,
        target: &Path,
        dir: &Path,
        name: &str,
        content: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), SinkError> {
        let (temp_path, mut file) = self.create_temp(dir, name)?;
        let temp = TempGuard(Some(temp_path.clone()));
        let at = |what: &str| format!("{what} the temp file {}", temp_path.display());
        set_access(&file, mode, uid, gid)
            .map_err(|e| self.err(at("setting owner and mode of"), e))?;
        file.write_all(content)
            .map_err(|e| self.err(at("writing"), e))?;
        file.sync_all().map_err(|e| self.err(at("syncing"), e))?;
        drop(file);

        match fs::rename(&temp_path, target) {
            Ok(()) => temp.keep(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ResourceBusy | io::ErrorKind::CrossesDevices
                ) =>
            {
                tracing::warn!(
                    sink = %self.sink,
                    path = %target.display(),
                    reason = %e,
                    "cannot rename over the target (a single-file bind mount?); rewriting it in place, so readers may briefly see a partial key"
                );
                drop(temp);
                self.rewrite_in_place(target, content, mode, uid, gid)?;
            }
            Err(e) => {
                return Err(self.err(
                    format!("renaming {} over {}", temp_path.display(), target.display()),
                    e,
                ));
            }
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err(format!("syncing the directory {}", dir.display()), e))
    }

    fn create_temp(&self, dir: &Path, name: &str) -> Result<(PathBuf, File), SinkError> {
        let prefix = temp_prefix(name);
        let mut last = None;
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let path = dir.join(format!("{prefix}{:016x}{TEMP_SUFFIX}", random_u64()));
            // Owner-only until set_access has applied the owner and the final mode; the
            // umask can only take bits away from this, never add any.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&path)
            {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(self.err(format!("creating a temp file in {}", dir.display()), e));
                }
            }
        }
        Err(self.err(
            format!("creating a temp file in {}", dir.display()),
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        ))
    }

    /// The fallback for targets that cannot be renamed over. Not atomic for readers.
    fn rewrite_in_place(
        &self,
        target: &Path,
        content: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), SinkError> {
        let at = format!("rewriting {} in place", target.display());
        let mut file = OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(target)
            .map_err(|e| self.err(at.clone(), e))?;
        set_access(&file, mode, uid, gid).map_err(|e| self.err(at.clone(), e))?;
        file.write_all(content)
            .and_then(|()| file.set_len(content.len() as u64))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.err(at, e))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
}

/// Owner first, then mode: `fchown` by root may clear mode bits, and the final mode
/// must be in place before any byte is written.
fn set_access(file: &File, mode: u32, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(file, uid, gid)?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
}

fn split(target: &Path) -> Option<(PathBuf, String)> {
    let name = target.file_name()?.to_str()?.to_owned();
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some((dir, name))
}

/// `.<name>.bedrock-keyd.`, with the name cut to fit NAME_MAX.
pub fn temp_prefix(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME_IN_TEMP);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}{TEMP_INFIX}", &name[..end])
}

/// Whether `file_name` is one of our temp files for the target `name`.
pub fn is_temp_for(file_name: &str, name: &str) -> bool {
    file_name
        .strip_prefix(&temp_prefix(name))
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Deletes temp files a killed writer left for this target. Failures only warn: a
/// leftover costs disk space, not correctness.
fn clean_stale(sink: &str, dir: &Path, name: &str) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(sink, dir = %dir.display(), error = %e, "cannot list the directory to clean up stale temp files");
            return;
        }
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if is_temp_for(file_name, name) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(sink, path = %path.display(), "removed a temp file left by an interrupted write")
                }
                Err(e) => {
                    tracing::warn!(sink, path = %path.display(), error = %e, "cannot remove a stale temp file")
                }
            }
        }
    }
}

fn read_if_exists(target: &Path) -> io::Result<Option<(Zeroizing<Vec<u8>>, fs::Metadata)>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(target)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.read_to_end(&mut bytes)?;
    Ok(Some((bytes, meta)))
}

/// 64 random bits for temp names, from the standard library's per-process random
/// hasher keys: no extra dependency, and unpredictable enough to avoid collisions.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Removes the temp file unless the rename consumed it.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        let name = "default.key";
        let temp = format!("{}{:016x}{TEMP_SUFFIX}", temp_prefix(name), 0xabcdu64);
        assert!(is_temp_for(&temp, name));
        assert!(!is_temp_for(&temp, "other.key"));
        assert!(!is_temp_for(name, name));
        assert!(!is_temp_for(".default.key.bedrock-keyd.xyz.tmp", name));
        let long = "x".repeat(300);
        let temp = format!("{}{:016x}{TEMP_SUFFIX}", temp_prefix(&long), 1u64);
        assert!(temp.len() <= 255 && is_temp_for(&temp, &long));
    }

    fn file(dir: &Path, access: FileAccess) -> AtomicFile {
        AtomicFile::new("file test", dir.join("k"), access)
    }

    fn content(s: &str) -> impl FnOnce(Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, SinkError> {
        let s = s.as_bytes().to_vec();
        move |_| Ok(Zeroizing::new(s))
    }

    #[test]
    fn writes_then_reports_unchanged_then_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path(), FileAccess::default());
        assert_eq!(f.write_with(content("a\n")).unwrap(), WriteOutcome::Written);
        assert_eq!(
            f.write_with(content("a\n")).unwrap(),
            WriteOutcome::Unchanged
        );
        // A changed mode is repaired even when the content is the same.
        fs::set_permissions(dir.path().join("k"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(f.write_with(content("a\n")).unwrap(), WriteOutcome::Written);
        let meta = fs::metadata(dir.path().join("k")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(f.write_with(content("b\n")).unwrap(), WriteOutcome::Written);
        assert_eq!(f.read().unwrap().unwrap().as_slice(), b"b\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k")]);
    }

    #[test]
    fn refuses_unsafe_targets() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real"), "old").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("k")).unwrap();
        let err = file(dir.path(), FileAccess::default())
            .write_with(content("new"))
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!err.is_retryable());
        assert_eq!(fs::read_to_string(dir.path().join("real")).unwrap(), "old");

        let follow = FileAccess {
            follow_symlinks: true,
            ..FileAccess::default()
        };
        file(dir.path(), follow).write_with(content("new")).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("real")).unwrap(), "new");
        assert!(
            fs::symlink_metadata(dir.path().join("k"))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        let world = FileAccess {
            mode: "0644".parse().unwrap(),
            ..FileAccess::default()
        };
        let err = AtomicFile::new("file t", dir.path().join("w"), world)
            .write_with(content("x"))
            .unwrap_err();
        assert!(err.to_string().contains("0644"), "{err}");
        assert!(!dir.path().join("w").exists());

        let open = tempfile::tempdir().unwrap();
        fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = file(open.path(), FileAccess::default())
            .write_with(content("x"))
            .unwrap_err();
        assert!(err.to_string().contains("sticky"), "{err}");
        fs::set_permissions(open.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        file(open.path(), FileAccess::default())
            .write_with(content("x"))
            .unwrap();

        fs::create_dir(dir.path().join("d")).unwrap();
        let err = AtomicFile::new("file t", dir.path().join("d"), FileAccess::default())
            .write_with(content("x"))
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn first_write_removes_stale_temp_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir
            .path()
            .join(format!("{}{:016x}{TEMP_SUFFIX}", temp_prefix("k"), 7u64));
        let foreign = dir.path().join(".k.something.tmp");
        fs::write(&stale, "partial").unwrap();
        fs::write(&foreign, "not ours").unwrap();
        file(dir.path(), FileAccess::default())
            .write_with(content("x"))
            .unwrap();
        assert!(!stale.exists());
        assert!(foreign.exists());
    }
}
