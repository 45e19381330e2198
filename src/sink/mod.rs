//! Delivery: where a key is written (a file, an env-file, an OS keyring).
//!
//! This module holds the validated *specifications* of sinks, shared by the command
//! line (`once --file …`) and the config file, the [`Sink`] trait the daemon drives,
//! and [`build`], which turns a spec into its writer. The writers live in the
//! submodules: [`file`](mod@file) and [`envfile`] share the one atomic-replace routine in
//! [`atomic`]; [`keyring`] talks to the OS keyrings; [`lock`] keeps one writer per target.
//! Every path they follow is walked by [`path`], every file read through [`bounded`].

pub mod atomic;
pub mod bounded;
pub mod envfile;
pub mod file;
pub mod keyring;
pub mod lock;
pub mod path;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The variable an env-file sink manages unless told otherwise: the one the AWS SDKs
/// and Bedrock clients read.
pub const DEFAULT_ENV_VARIABLE: &str = "AWS_BEARER_TOKEN_BEDROCK";
/// Keyring service name unless configured.
pub const DEFAULT_KEYRING_SERVICE: &str = "bedrock-keyd";
/// Keyring account unless configured: the name of the default key.
pub const DEFAULT_KEYRING_ACCOUNT: &str = "default";

/// The writer for a validated sink spec. No I/O happens until the first write.
pub fn build(spec: &SinkSpec) -> Box<dyn Sink> {
    match spec {
        SinkSpec::File(s) => Box::new(file::FileSink::new(s)),
        SinkSpec::EnvFile(s) => Box::new(envfile::EnvFileSink::new(s)),
        SinkSpec::Keyring(s) => Box::new(keyring::KeyringSink::new(s)),
    }
}

/// One validated sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    File(FileSpec),
    EnvFile(EnvFileSpec),
    Keyring(KeyringSpec),
}

/// A key file: `raw` (the key alone, no newline) or `json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path of the target file.
    pub path: PathBuf,
    pub format: FileFormat,
    pub access: FileAccess,
}

/// A dotenv file in which one variable holds the key; other lines are preserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileSpec {
    /// Absolute path of the target file.
    pub path: PathBuf,
    /// Variable name: `[A-Za-z_][A-Za-z0-9_]*`.
    pub variable: String,
    pub access: FileAccess,
}

/// Ownership, permissions and safety switches shared by the file-backed sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAccess {
    pub mode: FileMode,
    pub owner: Option<UserRef>,
    pub group: Option<UserRef>,
    /// Write through a symlink at the target path (refused by default).
    pub follow_symlinks: bool,
    /// Accept a mode that lets "other" read the key (refused by default).
    pub allow_world_readable: bool,
}

impl Default for FileAccess {
    fn default() -> Self {
        Self {
            mode: FileMode::DEFAULT,
            owner: None,
            group: None,
            follow_symlinks: false,
            allow_world_readable: false,
        }
    }
}

/// An OS keyring entry (macOS Keychain, Linux Secret Service or kernel keyring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringSpec {
    pub service: String,
    pub account: String,
    /// Which keyring; [`KeyringBackend::Default`] picks the platform's usual one.
    pub backend: KeyringBackend,
}

impl KeyringSpec {
    /// An entry in the platform's default keyring.
    pub fn new(service: impl Into<String>, account: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            account: account.into(),
            backend: KeyringBackend::Default,
        }
    }
}

/// Which OS keyring a keyring sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyringBackend {
    /// macOS: the Keychain; other Unix: the Secret Service.
    #[default]
    Default,
    /// The freedesktop Secret Service over D-Bus (gnome-keyring, KWallet, KeePassXC).
    SecretService,
    /// The Linux kernel keyring (keyutils): headless hosts, containers, systemd
    /// `KeyringMode=`.
    Keyutils,
    /// The macOS login Keychain.
    Keychain,
}

impl KeyringBackend {
    /// `Default` replaced by what it means on this platform.
    pub fn resolve(self) -> Self {
        match self {
            Self::Default if cfg!(target_os = "macos") => Self::Keychain,
            Self::Default => Self::SecretService,
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::SecretService => "secret-service",
            Self::Keyutils => "keyutils",
            Self::Keychain => "keychain",
        }
    }
}

impl FromStr for KeyringBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Self::Default),
            "secret-service" => Ok(Self::SecretService),
            "keyutils" => Ok(Self::Keyutils),
            "keychain" => Ok(Self::Keychain),
            other => Err(format!(
                "unknown keyring backend {other:?}; expected \"default\", \"secret-service\", \"keyutils\" or \"keychain\""
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileFormat {
    /// The key alone, no newline.
    #[default]
    Raw,
    /// `{"key","region","issued_at","expires_at"}`.
    Json,
}

impl FromStr for FileFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" => Ok(Self::Raw),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown format {other:?}; expected \"raw\" or \"json\""
            )),
        }
    }
}

/// Permission bits for a key file, from an octal string such as `"0640"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FileMode(u32);

impl FileMode {
    /// Owner read/write only: a key is a credential.
    pub const DEFAULT: FileMode = FileMode(0o600);

    pub fn new(bits: u32) -> Result<Self, String> {
        if bits > 0o777 {
            return Err(format!(
                "mode {bits:o} has bits beyond 0777 (setuid, setgid and sticky make no sense for a key file)"
            ));
        }
        if bits & 0o400 == 0 {
            return Err(format!(
                "mode {bits:04o} does not let the owner read the key"
            ));
        }
        Ok(Self(bits))
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether "other" (anyone on the machine) could read the key.
    pub fn world_readable(self) -> bool {
        self.0 & 0o004 != 0
    }
}

impl FromStr for FileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        if digits.is_empty()
            || digits.len() > 4
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return Err(format!(
                "mode {s:?} is not an octal permission string such as \"0600\" or \"0640\""
            ));
        }
        Self::new(u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?)
    }
}

impl fmt::Debug for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// A user or group given by name or numeric id; resolved when the sink is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Name(String),
    Id(u32),
}

impl FromStr for UserRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("empty user or group name".to_owned());
        }
        Ok(match s.parse::<u32>() {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Name(s.to_owned()),
        })
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Id(id) => write!(f, "{id}"),
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(s) => write!(f, "file {}", s.path.display()),
            Self::EnvFile(s) => write!(f, "env-file {} ({})", s.path.display(), s.variable),
            Self::Keyring(s) => {
                write!(f, "keyring {}:{}", s.service, s.account)?;
                match s.backend {
                    KeyringBackend::Default => Ok(()),
                    other => write!(f, " ({})", other.name()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!("0600".parse::<FileMode>().unwrap().bits(), 0o600);
        assert_eq!("640".parse::<FileMode>().unwrap().bits(), 0o640);
        assert!("0644".parse::<FileMode>().unwrap().world_readable());
        assert!(!"0640".parse::<FileMode>().unwrap().world_readable());
        for bad in ["", "rw-r-----", "0800", "12345", "4600", "0200"] {
            assert!(bad.parse::<FileMode>().is_err(), "{bad}");
        }
    }
}

/// A place a key is delivered to. Implementations are blocking (file and keyring
/// calls are short); the daemon runs them on a blocking thread.
///
/// Contract: `write` either leaves the new key fully in place or leaves the previous
/// key untouched; it never leaves a partial or empty key behind.
pub trait Sink: Send + Sync {
    /// What this sink is, for logs and errors: `file /run/bedrock-keyd/default.key`.
    fn describe(&self) -> String;

    /// Delivers `key`. Writes nothing (and says so) when the sink already holds it.
    fn write(
        &self,
        key: &crate::key::ApiKey,
        meta: &crate::key::KeyMeta,
    ) -> Result<WriteOutcome, SinkError>;

    /// The key the sink holds now, if any: used to restore a tampered sink, for
    /// `once --if-valid-for` and for `status`.
    fn read(&self) -> Result<Option<crate::key::ApiKey>, SinkError>;
}

/// What a successful [`Sink::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The sink already held this exact content; nothing was touched.
    Unchanged,
}

/// A sink failure: names the sink and the target, carries the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {action}: {source}")]
pub struct SinkError {
    /// `file /path`, `env-file /path`, `keyring service:account`.
    pub sink: String,
    /// What was being done: "creating a temp file in /run/x", "renaming …".
    pub action: String,
    #[source]
    pub source: std::io::Error,
}

impl SinkError {
    pub fn new(sink: impl Into<String>, action: impl Into<String>, source: std::io::Error) -> Self {
        Self {
            sink: sink.into(),
            action: action.into(),
            source,
        }
    }

    /// Whether trying again later can help (a full disk may clear; a refused unsafe
    /// target will not).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.source.kind(),
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
        )
    }
}
