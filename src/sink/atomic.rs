//! The one routine that replaces a key file, used by the file and env-file sinks.
//!
//! A reader must only ever see the previous complete content or the new complete
//! content, and a crash at any instant must leave one of the two in place. So a write
//! never touches the target itself:
//!
//! 1. find the target safely ([`super::path`]): walked from `/` one directory at a
//!    time, none owned or writable by another user (sticky ones like `/tmp` aside),
//!    no symlink another user made; every later step works relative to the opened
//!    directory, so nothing on the way can be swapped. Refuse a symlink as the target
//!    (unless `follow_symlinks`), something that is not a regular file, a mode that
//!    lets other users at the key (unless `allow_world_readable`), and in a shared
//!    sticky directory a file another user owns (they may have planted it to receive
//!    the key: the kernel's `protected_regular` rule);
//! 2. read the current content ([`super::bounded`]: at most
//!    [`MAX_SINK_FILE_BYTES`], a FIFO or device refused); if it already is the new
//!    content with the configured mode and owner, write nothing
//!    ([`WriteOutcome::Unchanged`]);
//! 3. create a temp file in the target's directory with `O_CREAT|O_EXCL`, readable by
//!    its owner only; `fchown` it to the configured owner/group (none configured: it
//!    stays the daemon's own; an owner is never taken over from the file it
//!    replaces, which may be whoever created it first), `fchmod` it to the
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

use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, SFlag};
use zeroize::Zeroizing;

use super::bounded;
use super::path::{self, PathError, Policy, Resolved, SafeDir};
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
/// The most a key file or env-file may hold. A key is 1-2 KiB; an env-file holds a
/// few other variables besides. A megabyte is far beyond either, and keeps a file
/// that is not one (a sparse 64 GiB file, a log) from being read at all.
pub const MAX_SINK_FILE_BYTES: u64 = 1024 * 1024;

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
        let (dir, name) = (&target.dir, target.name.as_os_str());
        let name_str = path::name_str(name).ok_or_else(|| {
            self.refuse(format!(
                "{} is not a UTF-8 file name",
                target.path.display()
            ))
        })?;
        if !self.cleaned.swap(true, Ordering::SeqCst) {
            clean_stale(&self.sink, dir, name_str);
        }
        let uid = self.resolve(self.access.owner.as_ref(), Kind::User)?;
        let gid = self.resolve(self.access.group.as_ref(), Kind::Group)?;
        // The owner a written file ends up with: the configured one, or the daemon's
        // own (a new file's); never the one an existing file has, which may be
        // whoever created it first.
        let want_uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let want_gid = gid.unwrap_or_else(|| dir.new_file_gid());

        let current = self.read_current(&target, uid)?;
        let content = render(current.as_ref().map(|(bytes, _)| bytes.as_slice()))?;
        if let Some((bytes, stat)) = &current {
            let same_access =
                mode_bits(stat) == mode && stat.st_uid == want_uid && stat.st_gid == want_gid;
            if same_access && bytes.as_slice() == content.as_slice() {
                return Ok(WriteOutcome::Unchanged);
            }
        }
        self.replace(&target, name_str, &content, mode, uid, gid)?;
        Ok(WriteOutcome::Written)
    }

    /// The current content, or `None` when the file does not exist.
    pub fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, SinkError> {
        let target = self.resolve_target()?;
        let uid = self.resolve(self.access.owner.as_ref(), Kind::User)?;
        Ok(self.read_current(&target, uid)?.map(|(bytes, _)| bytes))
    }

    /// The target's content and status, read through the directory found by the safe
    /// walk, at most [`MAX_SINK_FILE_BYTES`]. Refuses what must not be replaced.
    fn read_current(
        &self,
        target: &Resolved,
        configured_uid: Option<u32>,
    ) -> Result<Option<Current>, SinkError> {
        let shown = target.path.display();
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        let file = match target.dir.open(&target.name, flags, None) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Swapped for a symlink since the walk looked.
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(self.refuse(format!("{shown} is a symbolic link")));
            }
            Err(e) => return Err(self.err(format!("reading {shown}"), e)),
        };
        let stat = nix::sys::stat::fstat(&file)
            .map_err(|e| self.err(format!("examining {shown}"), e.into()))?;
        if !path::is_regular(&stat) {
            return Err(self.refuse(format!(
                "{shown} is not a regular file (it is {})",
                path::describe_type(&stat)
            )));
        }
        // The kernel's protected_regular rule: in a directory where anyone may create
        // files, a file someone else created is theirs, not a place for our key.
        let me = nix::unistd::geteuid().as_raw();
        if target.dir.is_shared_sticky()
            && stat.st_uid != 0
            && stat.st_uid != me
            && Some(stat.st_uid) != configured_uid
        {
            return Err(self.refuse(format!(
                "{shown} is owned by uid {} (another user) in the shared directory {}; it may have been planted there to receive the key, so remove it or choose another path",
                stat.st_uid,
                target.dir.path().display()
            )));
        }
        let bytes = bounded::read_file(&file, MAX_SINK_FILE_BYTES)
            .map_err(|e| self.err(format!("reading {shown}"), e))?;
        Ok(Some((bytes, stat)))
    }

    /// The target found by the safe walk ([`super::path`]): its directory, opened,
    /// and its name there. A symlink as the target is followed only when allowed.
    fn resolve_target(&self) -> Result<Resolved, SinkError> {
        let path = &self.path;
        let target = path::resolve(path, self.access.follow_symlinks, Policy::Strict).map_err(
            |e| match e {
                e @ PathError::Unsafe { .. } => self.refuse(e.to_string()),
                PathError::Io { path, source } => {
                    self.err(format!("examining {}", path.display()), source)
                }
            },
        )?;
        let stat = target
            .dir
            .stat_of(&target.name)
            .map_err(|e| self.err(format!("examining {}", target.path.display()), e))?;
        if let Some(stat) = stat {
            if stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
                let link = target.dir.read_link(&target.name).unwrap_or_default();
                return Err(self.refuse(format!(
                    "{} is a symbolic link (to {}); refusing to write through it unless allowed (--follow-symlinks, follow_symlinks = true)",
                    path.display(),
                    Path::new(&link).display()
                )));
            }
            if !path::is_regular(&stat) {
                return Err(self.refuse(format!(
                    "{} is not a regular file (it is {})",
                    target.path.display(),
                    path::describe_type(&stat)
                )));
            }
        }
        Ok(target)
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

    fn replace(
        &self,
        target: &Resolved,
        name: &str,
        content: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), SinkError> {
        let dir = &target.dir;
        let (temp_name, mut file) = self.create_temp(dir, name)?;
        let temp = TempGuard(dir, Some(temp_name.clone()));
        let temp_path = dir.path().join(&temp_name);
        let at = |what: &str| format!("{what} the temp file {}", temp_path.display());
        set_access(&file, mode, uid, gid)
            .map_err(|e| self.err(at("setting owner and mode of"), e))?;
        file.write_all(content)
            .map_err(|e| self.err(at("writing"), e))?;
        file.sync_all().map_err(|e| self.err(at("syncing"), e))?;
        drop(file);

        match dir.rename(temp_name.as_ref(), &target.name) {
            Ok(()) => temp.keep(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ResourceBusy | io::ErrorKind::CrossesDevices
                ) =>
            {
                tracing::warn!(
                    sink = %self.sink,
                    path = %target.path.display(),
                    reason = %e,
                    "cannot rename over the target (a single-file bind mount?); rewriting it in place, so readers may briefly see a partial key"
                );
                drop(temp);
                self.rewrite_in_place(target, content, mode, uid, gid)?;
            }
            Err(e) => {
                return Err(self.err(
                    format!(
                        "renaming {} over {}",
                        temp_path.display(),
                        target.path.display()
                    ),
                    e,
                ));
            }
        }
        dir.sync()
            .map_err(|e| self.err(format!("syncing the directory {}", dir.path().display()), e))
    }

    fn create_temp(&self, dir: &SafeDir, name: &str) -> Result<(String, File), SinkError> {
        let prefix = temp_prefix(name);
        let mut last = None;
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let temp = format!("{prefix}{:016x}{TEMP_SUFFIX}", random_u64());
            // Owner-only until set_access has applied the owner and the final mode; the
            // umask can only take bits away from this, never add any.
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
            match dir.open(temp.as_ref(), flags, None) {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(self.err(
                        format!("creating a temp file in {}", dir.path().display()),
                        e,
                    ));
                }
            }
        }
        Err(self.err(
            format!("creating a temp file in {}", dir.path().display()),
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        ))
    }

    /// The fallback for targets that cannot be renamed over. Not atomic for readers.
    fn rewrite_in_place(
        &self,
        target: &Resolved,
        content: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), SinkError> {
        let at = format!("rewriting {} in place", target.path.display());
        let file = target
            .dir
            .open(&target.name, OFlag::O_WRONLY | OFlag::O_NONBLOCK, None)
            .map_err(|e| self.err(at.clone(), e))?;
        bounded::check_regular(&file).map_err(|e| self.err(at.clone(), e))?;
        let mut file = file;
        set_access(&file, mode, uid, gid).map_err(|e| self.err(at.clone(), e))?;
        file.write_all(content)
            .and_then(|()| file.set_len(content.len() as u64))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.err(at, e))
    }
}

/// The permission bits of a status (`st_mode` is 16 bits wide on macOS, 32 on Linux).
#[allow(clippy::useless_conversion)]
fn mode_bits(stat: &FileStat) -> u32 {
    u32::from(stat.st_mode) & 0o7777
}

/// A target's content and its status as found on the open descriptor.
type Current = (Zeroizing<Vec<u8>>, FileStat);

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
fn clean_stale(sink: &str, dir: &SafeDir, name: &str) {
    let entries = match fs::read_dir(dir.path()) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(sink, dir = %dir.path().display(), error = %e, "cannot list the directory to clean up stale temp files");
            return;
        }
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if is_temp_for(file_name, name) {
            // By name in the directory the walk opened: the listing is only a hint of
            // which names to remove there.
            let path = dir.path().join(file_name);
            match dir.unlink(file_name.as_ref()) {
                Ok(()) => {
                    tracing::info!(sink, path = %path.display(), "removed a temp file left by an interrupted write")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(sink, path = %path.display(), error = %e, "cannot remove a stale temp file")
                }
            }
        }
    }
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
struct TempGuard<'a>(&'a SafeDir, Option<String>);

impl TempGuard<'_> {
    fn keep(mut self) {
        self.1 = None;
    }
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.1.take() {
            let _ = self.0.unlink(name.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
