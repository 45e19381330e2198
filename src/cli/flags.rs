//! Flags shared by the commands that mint (`mint`, `once`, `run`): where credentials
//! and the region come from. One `clap::Args` struct, flattened into each command, so
//! every command spells them the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::config::proxy::{Listen, ProxySpec, Upstream};
use crate::config::{Config, ConfigLocation, KeyConfig};
use crate::credentials::SourceSpec;
use crate::dependents::{DEFAULT_SIGNAL, NotifySpec, Signal};
use crate::key::KeyName;
use crate::key::{Lifetime, Region};
use crate::schedule::{DEFAULT_JITTER, DEFAULT_REFRESH_AT, RefreshPolicy, default_min_remaining};
use crate::sink::{
    DEFAULT_ENV_VARIABLE, DEFAULT_KEYRING_ACCOUNT, EnvFileSpec, FileAccess, FileFormat, FileMode,
    FileSpec, KeyringBackend, KeyringSpec, SinkSpec, UserRef,
};

#[derive(Debug, Clone, Default, Args)]
pub struct CredentialFlags {
    /// AWS region to scope the key to [default: AWS_REGION, AWS_DEFAULT_REGION, the
    /// profile's region, then EC2 instance metadata].
    #[arg(long, value_name = "REGION")]
    pub region: Option<Region>,

    /// Shared-config profile to take credentials from (static keys, SSO,
    /// credential_process, source_profile role chains). When given, it is the only
    /// source: environment credentials are ignored [default: the SDK's chain:
    /// environment, AWS_PROFILE or "default", web identity, container, IMDS].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// IAM role to assume (STS AssumeRole) with the credentials found; keys are then
    /// signed with the role session and last no longer than it.
    #[arg(long, value_name = "ARN", value_parser = role_arn)]
    pub role_arn: Option<String>,

    /// External id required by the role's trust policy (with --role-arn).
    #[arg(long, value_name = "ID", requires = "role_arn", value_parser = external_id)]
    pub external_id: Option<String>,

    /// STS session name, visible in CloudTrail (with --role-arn) [default: bedrock-keyd].
    #[arg(long, value_name = "NAME", requires = "role_arn", value_parser = session_name)]
    pub role_session_name: Option<String>,

    /// How long the role session lasts, 15m to 12h (with --role-arn). Keys cannot
    /// outlive it; beyond 1h the role's MaxSessionDuration must allow it [default: 1h,
    /// STS's default].
    #[arg(long, value_name = "DURATION", requires = "role_arn", value_parser = session_duration)]
    pub role_session_duration: Option<Duration>,
}

impl CredentialFlags {
    pub fn source_spec(&self) -> SourceSpec {
        SourceSpec {
            profile: self.profile.clone(),
            region: self.region.clone(),
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            role_session_name: self.role_session_name.clone(),
            from_config_file: false,
            role_session_duration: self.role_session_duration,
        }
    }
}

fn session_name(name: &str) -> Result<String, String> {
    crate::credentials::parse_role_session_name(name)
}

fn role_arn(arn: &str) -> Result<String, String> {
    crate::credentials::parse_role_arn(arn)
}

fn external_id(id: &str) -> Result<String, String> {
    crate::credentials::parse_external_id(id)
}

fn session_duration(text: &str) -> Result<Duration, String> {
    crate::credentials::parse_role_session_duration(text)
}

/// Sinks named on the command line (single-key mode of `once`, `run`, `exec`).
#[derive(Debug, Clone, Args)]
pub struct SinkFlags {
    /// Write the key to this file (repeatable). Relative paths are taken from the
    /// current directory.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,

    /// Format of every --file: raw (the key alone, no newline) or json
    /// ({"key","region","issued_at","expires_at"}).
    #[arg(long, value_name = "FORMAT", default_value = "raw", value_parser = parse_format)]
    file_format: FileFormat,

    /// Set the variable in this dotenv file (repeatable), keeping every other line.
    /// Usable by systemd EnvironmentFile=, docker --env-file and `set -a; . FILE`.
    #[arg(long = "env-file", value_name = "PATH")]
    env_files: Vec<PathBuf>,

    /// The variable every --env-file sets.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ENV_VARIABLE, value_parser = parse_variable)]
    env_variable: String,

    /// Store the key in the OS keyring as SERVICE, account ACCOUNT (repeatable;
    /// account default: "default").
    #[arg(long = "keyring", value_name = "SERVICE[:ACCOUNT]", value_parser = parse_keyring)]
    keyrings: Vec<(String, String)>,

    /// Which keyring every --keyring uses: default (Keychain on macOS, Secret Service
    /// elsewhere), secret-service, keyutils (the Linux kernel keyring) or keychain.
    #[arg(long, value_name = "BACKEND", default_value = "default")]
    keyring_backend: KeyringBackend,

    /// Permission bits of every file and env-file, octal.
    #[arg(long, value_name = "OCTAL", default_value = "0600")]
    mode: FileMode,

    /// Owner of every file and env-file: a user name or id (needs privileges).
    /// Without it a written file is the daemon's own, never the replaced file's owner.
    #[arg(long, value_name = "USER")]
    owner: Option<UserRef>,

    /// Group of every file and env-file: a group name or id.
    #[arg(long, value_name = "GROUP")]
    group: Option<UserRef>,

    /// Write through a symlink at a target path instead of refusing it (only one that
    /// root or the daemon's user owns: another user's symlink is always refused).
    #[arg(long)]
    follow_symlinks: bool,

    /// Accept a --mode that lets every user read the key.
    #[arg(long)]
    allow_world_readable: bool,
}

fn parse_format(s: &str) -> Result<FileFormat, String> {
    s.parse()
}

fn parse_variable(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a variable name: letters, digits and _, not starting with a digit"
        ))
    }
}

fn parse_keyring(s: &str) -> Result<(String, String), String> {
    let (service, account) = match s.split_once(':') {
        Some((service, account)) => (service, account),
        None => (s, DEFAULT_KEYRING_ACCOUNT),
    };
    if service.is_empty() || account.is_empty() {
        return Err(format!(
            "{s:?}: expected SERVICE or SERVICE:ACCOUNT, both non-empty"
        ));
    }
    Ok((service.to_owned(), account.to_owned()))
}

impl SinkFlags {
    /// Whether any sink is named (single-key mode).
    pub fn any(&self) -> bool {
        !(self.files.is_empty() && self.env_files.is_empty() && self.keyrings.is_empty())
    }

    /// The sinks these flags name, with paths made absolute.
    pub fn specs(&self) -> Result<Vec<SinkSpec>, CliError> {
        let access = FileAccess {
            mode: self.mode,
            owner: self.owner.clone(),
            group: self.group.clone(),
            follow_symlinks: self.follow_symlinks,
            allow_world_readable: self.allow_world_readable,
        };
        let mut specs = Vec::new();
        for path in &self.files {
            specs.push(SinkSpec::File(FileSpec {
                path: absolute(path)?,
                format: self.file_format,
                access: access.clone(),
            }));
        }
        for path in &self.env_files {
            specs.push(SinkSpec::EnvFile(EnvFileSpec {
                path: absolute(path)?,
                variable: self.env_variable.clone(),
                access: access.clone(),
            }));
        }
        for (service, account) in &self.keyrings {
            specs.push(SinkSpec::Keyring(KeyringSpec {
                backend: self.keyring_backend,
                ..KeyringSpec::new(service, account)
            }));
        }
        if specs.is_empty() {
            return Err(CliError::Usage(
                "no sink given: pass --file, --env-file or --keyring".to_owned(),
            ));
        }
        Ok(specs)
    }
}

/// `path` made absolute. A path ending in `/`, `/.` or `/..` names a directory, which
/// making it absolute would silently turn into a file path (`/run/keys/.` →
/// `/run/keys`): refused, as in the config file.
fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    let text = path.as_os_str().as_encoded_bytes();
    let names_directory = matches!(text, b"." | b"..")
        || [&b"/"[..], b"/.", b"/.."].iter().any(|t| text.ends_with(t));
    if names_directory {
        return Err(CliError::Usage(format!(
            "{} names a directory; give the path of a file",
            path.display()
        )));
    }
    std::path::absolute(path)
        .map_err(|e| CliError::Usage(format!("cannot make {} absolute: {e}", path.display())))
}

/// A local Bedrock proxy for the single key of `run` (the config file's `[[key.proxy]]`).
#[derive(Debug, Clone, Default, Args)]
pub struct ProxyFlags {
    /// Serve a local Bedrock proxy on this loopback address and port (127.0.0.1:8790,
    /// [::1]:8790) or unix socket (unix:/run/bedrock-keyd/bedrock.sock, mode 0600),
    /// repeatable. Clients send `Authorization: Bearer <local token>`; each request is
    /// forwarded to Bedrock with the current key. Names a delivery target, like --file:
    /// no config file is read.
    #[arg(long = "proxy", value_name = "ADDR", value_parser = parse_proxy_listen)]
    pub proxy: Vec<Listen>,

    /// Where the proxy forwards: an https origin (http for loopback only) [default:
    /// https://bedrock-runtime.<the key's region>.amazonaws.com].
    #[arg(long, value_name = "URL", requires = "proxy", value_parser = parse_upstream)]
    pub proxy_upstream: Option<Upstream>,

    /// The file holding the proxy's local token, created 0600 with 256 random bits if
    /// absent (required with --proxy).
    #[arg(long, value_name = "PATH", requires = "proxy")]
    pub proxy_token_file: Option<PathBuf>,

    /// Serve HTTPS with a self-signed certificate for 127.0.0.1, ::1 and localhost,
    /// written beside the token file as proxy.crt (the CA bundle to give clients, e.g.
    /// AWS_CA_BUNDLE; boto3 sends a bearer token over HTTPS only).
    #[arg(long, requires = "proxy")]
    pub proxy_tls: bool,
}

fn parse_proxy_listen(s: &str) -> Result<Listen, String> {
    Listen::parse(s, None)
}

fn parse_upstream(s: &str) -> Result<Upstream, String> {
    Upstream::parse(s)
}

impl ProxyFlags {
    /// The proxies these flags describe (none without --proxy).
    pub fn specs(&self) -> Result<Vec<ProxySpec>, CliError> {
        if self.proxy.is_empty() {
            return Ok(Vec::new());
        }
        let Some(token_file) = &self.proxy_token_file else {
            return Err(CliError::Usage(
                "--proxy needs --proxy-token-file PATH: the file holding the local token clients send (created with a random token if absent)".to_owned(),
            ));
        };
        let token_file = absolute(token_file)?;
        Ok(self
            .proxy
            .iter()
            .map(|listen| ProxySpec {
                listen: listen.clone(),
                upstream: self.proxy_upstream.clone(),
                token_file: token_file.clone(),
                tls: self.proxy_tls,
                ca_bundle: None,
            })
            .collect())
    }
}

/// Proxy flags where they cannot apply (`once`, `mint`): accepted by the parser only
/// to be refused with a reason, instead of clap's bare "unexpected argument".
#[derive(Debug, Clone, Default, Args)]
pub struct NoProxyFlags {
    #[arg(long = "proxy", hide = true, value_name = "ADDR")]
    proxy: Vec<String>,
    #[arg(long = "proxy-upstream", hide = true, value_name = "URL")]
    proxy_upstream: Option<String>,
    #[arg(long = "proxy-token-file", hide = true, value_name = "PATH")]
    proxy_token_file: Option<String>,
    #[arg(long = "proxy-tls", hide = true)]
    proxy_tls: bool,
}

impl NoProxyFlags {
    /// A usage error naming `command` when any proxy flag was given.
    pub fn refuse(&self, command: &str) -> Result<(), CliError> {
        if self.proxy.is_empty()
            && self.proxy_upstream.is_none()
            && self.proxy_token_file.is_none()
            && !self.proxy_tls
        {
            return Ok(());
        }
        Err(CliError::Usage(format!(
            "`{command}` cannot serve a proxy: it exits after minting, and a proxy lives only as long as the process; use `bedrock-keyd run --proxy ADDR --proxy-token-file PATH`"
        )))
    }
}

/// The refresh policy of the single-key mode (the config file's `refresh_at`,
/// `jitter`, `min_remaining`). Only the commands that refresh (`run`, `exec`) offer
/// these; `once` and `mint` mint one key and pass [`PolicyFlags::default`].
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyFlags {
    /// Re-mint when this fraction of the key's effective lifetime has passed [default: 0.5].
    #[arg(long, value_name = "FRACTION")]
    pub refresh_at: Option<f64>,

    /// ± this fraction of the refresh delay, so a fleet does not mint in lockstep
    /// [default: 0.1].
    #[arg(long, value_name = "FRACTION")]
    pub jitter: Option<f64>,

    /// Always re-mint at least this long before expiry; shorter than the lifetime
    /// [default: 5m, or a quarter of a lifetime under 20m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_remaining: Option<Duration>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::clock::duration::parse(s).map_err(|e| e.to_string())
}

/// Everything that describes one key without a config file, or names the config.
#[derive(Debug, Clone, Args)]
pub struct KeyFlags {
    /// The config file [default: $BEDROCK_KEYD_CONFIG, $XDG_CONFIG_HOME/bedrock-keyd/config.toml,
    /// /etc/bedrock-keyd/config.toml]. Not read when sink flags (--file, --env-file,
    /// --keyring) describe a single key instead.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub credentials: CredentialFlags,

    /// Requested key lifetime, 1s to 12h (e.g. 90s, 30m, 12h); the key expires earlier
    /// if the signing credentials do [default: 12h].
    #[arg(long, value_name = "DURATION")]
    pub lifetime: Option<Lifetime>,

    /// The key's name in logs, metrics and status [default: default].
    #[arg(long, value_name = "NAME")]
    pub name: Option<KeyName>,

    #[command(flatten)]
    pub sinks: SinkFlags,

    /// After each new key is in every sink, signal the process whose pid this file
    /// holds (re-read every time; a missing file means "not started yet", a file
    /// without a valid pid >1 is an error and signals nothing).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// The signal for --pid-file: HUP, INT, QUIT, ALRM, TERM, USR1, USR2, WINCH or
    /// CONT [default: HUP].
    #[arg(long, value_name = "SIG", requires = "pid_file")]
    pub signal: Option<Signal>,
}

impl KeyFlags {
    /// The config to run: one key from the flags (with the refresh `policy` flags of
    /// the commands that have them) when they name a sink, otherwise the config file
    /// (with its location, for reloads). Key flags next to a config file are refused
    /// rather than silently ignored.
    pub fn resolve(
        &self,
        policy: &PolicyFlags,
    ) -> Result<(Option<ConfigLocation>, Config), CliError> {
        self.resolve_with_proxies(policy, Vec::new())
    }

    /// [`KeyFlags::resolve`] for `run`, whose `--proxy` also names a delivery target.
    pub fn resolve_with_proxies(
        &self,
        policy: &PolicyFlags,
        proxies: Vec<ProxySpec>,
    ) -> Result<(Option<ConfigLocation>, Config), CliError> {
        if self.sinks.any() || !proxies.is_empty() {
            if let Some(path) = &self.config {
                return Err(CliError::Usage(format!(
                    "--config {} and delivery flags (--file, --env-file, --keyring, --proxy) exclude each other: the flags describe a single key without a config file; with a config file, add [[key.sink]] or [[key.proxy]] there",
                    path.display()
                )));
            }
            return self.single(policy, proxies).map(|c| (None, c));
        }
        let given: Vec<&str> = [
            ("--region", self.credentials.region.is_some()),
            ("--profile", self.credentials.profile.is_some()),
            ("--role-arn", self.credentials.role_arn.is_some()),
            ("--lifetime", self.lifetime.is_some()),
            ("--name", self.name.is_some()),
            ("--refresh-at", policy.refresh_at.is_some()),
            ("--jitter", policy.jitter.is_some()),
            ("--min-remaining", policy.min_remaining.is_some()),
            ("--pid-file", self.pid_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if !given.is_empty() {
            let (verb, them) = if given.len() == 1 {
                ("applies", "it")
            } else {
                ("apply", "them")
            };
            return Err(CliError::Usage(format!(
                "{} only {verb} to a single key given by --file, --env-file or --keyring; with a config file, set {them} there",
                given.join(", ")
            )));
        }
        let (location, config) = crate::config::locate_and_load(self.config.as_deref())?;
        Ok((Some(location), config))
    }

    fn single(&self, policy: &PolicyFlags, proxies: Vec<ProxySpec>) -> Result<Config, CliError> {
        // Sinks are optional when a proxy serves the key.
        let key = self.single_key(policy, proxies.is_empty())?;
        Ok(Config::single(KeyConfig { proxies, ..key }))
    }

    /// The one key the flags describe. Without `sinks_required` (exec), no sink flag
    /// means a key that lives only in memory.
    pub fn single_key(
        &self,
        policy: &PolicyFlags,
        sinks_required: bool,
    ) -> Result<KeyConfig, CliError> {
        let lifetime = self.lifetime.unwrap_or(Lifetime::MAX);
        // Only a min_remaining the user gave can be too long; the default fits.
        if let Some(min) = policy.min_remaining {
            crate::config::check_min_remaining(min, lifetime).map_err(|why| {
                CliError::Usage(format!(
                    "--min-remaining {} {why}",
                    crate::clock::duration::format(min)
                ))
            })?;
        }
        let policy = RefreshPolicy::new(
            policy.refresh_at.unwrap_or(DEFAULT_REFRESH_AT),
            policy.jitter.unwrap_or(DEFAULT_JITTER),
            policy
                .min_remaining
                .unwrap_or_else(|| default_min_remaining(lifetime.get())),
        )
        .map_err(|e| CliError::Usage(format!("refresh policy: {e}")))?;
        let name = match &self.name {
            Some(name) => name.clone(),
            None => KeyName::new("default").map_err(CliError::Usage)?,
        };
        let notify = match &self.pid_file {
            Some(path) => vec![NotifySpec::PidFile {
                path: absolute(path)?,
                signal: self.signal.unwrap_or(DEFAULT_SIGNAL),
            }],
            None => Vec::new(),
        };
        let source = self.credentials.source_spec();
        if !sinks_required && !self.sinks.any() {
            return KeyConfig::without_sinks(name, source, lifetime, policy, notify)
                .map_err(CliError::Usage);
        }
        KeyConfig::new(name, source, lifetime, policy, self.sinks.specs()?, notify)
            .map_err(CliError::Usage)
    }
}
