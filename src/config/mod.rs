//! The config file: where it is looked for, how it is parsed, and what it may say.
//!
//! Raw → validated: [`raw::RawConfig`] mirrors the TOML (unknown fields rejected), and
//! `Config::try_from(raw)` checks every value and every combination, producing types
//! that cannot be wrong ([`KeyName`], [`Lifetime`], [`RefreshPolicy`], [`SinkSpec`],
//! [`NotifySpec`]). Every error names the file, line, column and field and says what is
//! allowed (see [`error`]). Validation has no side effects: nothing is created, no
//! user is resolved, nothing is contacted, so `bedrock-keyd check` and a SIGHUP
//! reload can run it freely.
//!
//! `[defaults]` supplies `profile`, `region`, `lifetime`, `refresh_at`, `jitter` and
//! `min_remaining` to every `[[key]]` that does not set them itself.

pub mod error;
pub mod proxy;
pub mod raw;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

pub use error::{ConfigError, Invalid, SpannedError};
use proxy::{Listen, ProxySpec, Upstream};
use raw::{RawConfig, RawDefaults, RawKey, RawNotify, RawProxy, RawSink};

use crate::credentials::SourceSpec;
use crate::dependents::{self, NotifySpec, Signal, SystemdAction};
use crate::key::{KeyName, Lifetime, Region};
use crate::schedule::{self, RefreshPolicy};
use crate::sink::{
    self, EnvFileSpec, FileAccess, FileFormat, FileMode, FileSpec, KeyringBackend, KeyringSpec,
    SinkSpec, UserRef,
};

/// Bedrock's maximum: when the credentials allow it, a key is minted as rarely as
/// possible.
pub const DEFAULT_LIFETIME: Lifetime = Lifetime::MAX;
/// See [`schedule::DEFAULT_REFRESH_AT`].
pub const DEFAULT_REFRESH_AT: f64 = schedule::DEFAULT_REFRESH_AT;
/// See [`schedule::DEFAULT_JITTER`].
pub const DEFAULT_JITTER: f64 = schedule::DEFAULT_JITTER;
/// See [`schedule::DEFAULT_MIN_REMAINING`]; shorter for a short lifetime
/// ([`schedule::default_min_remaining`]).
pub const DEFAULT_MIN_REMAINING: Duration = schedule::DEFAULT_MIN_REMAINING;
/// A key is a credential: owner read/write only unless the operator widens it.
pub const DEFAULT_MODE: FileMode = FileMode::DEFAULT;
/// The variable the AWS SDKs and Bedrock clients read.
pub const DEFAULT_ENV_VARIABLE: &str = sink::DEFAULT_ENV_VARIABLE;
/// One recognisable keyring service for every key this daemon manages; the account
/// is the key name, so keys do not collide.
pub const DEFAULT_KEYRING_SERVICE: &str = sink::DEFAULT_KEYRING_SERVICE;
/// Where the system-wide config lives (systemd units, packages).
pub const SYSTEM_CONFIG_PATH: &str = "/etc/bedrock-keyd/config.toml";
/// The environment variable that names the config file.
pub const CONFIG_ENV_VAR: &str = "BEDROCK_KEYD_CONFIG";
/// A config file is a few kilobytes; anything beyond a megabyte is a mistake (a key
/// file or a log passed as `--config`), refused before it is parsed.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Log output format on stderr (journald and container runtimes read stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "{other:?} is not a log format; use \"text\" or \"json\""
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// A validated config: everything the daemon needs, nothing left to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `None` when the file does not say (the command line or the default decides).
    pub log_format: Option<LogFormat>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; no listener when `None`.
    pub listen: Option<SocketAddr>,
    /// At least one; names are unique and no two sinks share a target.
    pub keys: Vec<KeyConfig>,
}

/// One key to keep fresh.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyConfig {
    pub name: KeyName,
    pub source: SourceSpec,
    /// Requested; the effective lifetime may be shorter (credentials' expiry).
    pub lifetime: Lifetime,
    pub policy: RefreshPolicy,
    /// At least one sink or proxy (`exec` runs keys with neither).
    pub sinks: Vec<SinkSpec>,
    pub notify: Vec<NotifySpec>,
    /// Local endpoints that forward to Bedrock with this key ([`crate::service::proxy`] serves them).
    pub proxies: Vec<ProxySpec>,
}

impl Config {
    /// A config of one key, for the config-free single-key mode (key flags).
    pub fn single(key: KeyConfig) -> Self {
        Self {
            log_format: None,
            listen: None,
            keys: vec![key],
        }
    }

    /// The key named `name`.
    pub fn key(&self, name: &str) -> Option<&KeyConfig> {
        self.keys.iter().find(|k| k.name.as_str() == name)
    }
}

impl KeyConfig {
    /// Builds a key outside the config file (from the command line's key flags) with
    /// the checks the file gets: at least one sink, no two sinks with the same target
    /// ([`SinkTargets`]: the file's rule and wording, each sink named by its flag).
    /// Each part is already validated by its own type; an explicit `min_remaining`
    /// shorter than the lifetime is the caller's check (a defaulted one fits by
    /// construction, [`crate::schedule::default_min_remaining`]).
    pub fn new(
        name: KeyName,
        source: SourceSpec,
        lifetime: Lifetime,
        policy: RefreshPolicy,
        sinks: Vec<SinkSpec>,
        notify: Vec<NotifySpec>,
    ) -> Result<Self, String> {
        if sinks.is_empty() {
            return Err("no sink: give --file, --env-file or --keyring".to_owned());
        }
        let mut targets = SinkTargets::default();
        for sink in &sinks {
            let flag = match sink {
                SinkSpec::File(_) => "--file",
                SinkSpec::EnvFile(_) => "--env-file",
                SinkSpec::Keyring(_) => "--keyring",
            };
            targets
                .add(sink, flag.to_owned(), ())
                .map_err(|(why, ())| format!("{flag}: {why}"))?;
        }
        let key = Self::without_sinks(name, source, lifetime, policy, notify)?;
        Ok(Self { sinks, ..key })
    }
}

impl KeyConfig {
    /// A key without sinks, for `exec`: it lives only in the environment of the
    /// command `exec` runs.
    pub fn without_sinks(
        name: KeyName,
        source: SourceSpec,
        lifetime: Lifetime,
        policy: RefreshPolicy,
        notify: Vec<NotifySpec>,
    ) -> Result<Self, String> {
        Ok(Self {
            name,
            source,
            lifetime,
            policy,
            sinks: Vec::new(),
            notify,
            proxies: Vec::new(),
        })
    }
}

/// The rule between an explicit `min_remaining` and the lifetime, for the file and the
/// flags alike (the built-in default fits by construction,
/// [`schedule::default_min_remaining`]). The error is the rule's words; the caller puts
/// the field and value it came from in front.
pub fn check_min_remaining(min_remaining: Duration, lifetime: Lifetime) -> Result<(), String> {
    if min_remaining >= lifetime.get() {
        return Err(format!(
            "must be shorter than the lifetime {lifetime}: a key is re-minted at least min_remaining before it expires"
        ));
    }
    Ok(())
}

/// Two sinks writing one target would race and overwrite each other: the one rule,
/// for the file and the flags, with one wording. Each sink is added with the words
/// that say where it was given (`key "a": sink[0].path`, `--file`), which the message
/// names for both sinks, and a place the caller keeps for its own report (the file's
/// span; nothing for the flags).
#[derive(Debug)]
pub struct SinkTargets<P> {
    seen: HashMap<String, (String, P)>,
}

impl<P> Default for SinkTargets<P> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<P: Clone> SinkTargets<P> {
    /// `Err` when an earlier sink writes the same target: the rule's words (the
    /// caller puts `here` in front) and the earlier sink's place.
    pub fn add(&mut self, sink: &SinkSpec, here: String, place: P) -> Result<(), (String, P)> {
        let target = sink_target(sink);
        if let Some((first, first_place)) = self.seen.get(&target) {
            return Err((
                format!(
                    "{target} is already written by {first}; every sink must have its own target"
                ),
                first_place.clone(),
            ));
        }
        self.seen.insert(target, (here, place));
        Ok(())
    }
}

/// What a sink writes to, for duplicate detection: `file /run/x.key` (file and
/// env-file sinks share the namespace: both write the file) or `keyring service:account`.
pub fn sink_target(sink: &SinkSpec) -> String {
    match sink {
        SinkSpec::File(FileSpec { path, .. }) | SinkSpec::EnvFile(EnvFileSpec { path, .. }) => {
            format!("file {}", path.display())
        }
        SinkSpec::Keyring(k) => format!("keyring {}:{}", k.service, k.account),
    }
}

/// Where a config file was found, and why there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLocation {
    pub path: PathBuf,
    pub origin: ConfigOrigin,
}

/// Which rule of the lookup order chose the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// `--config PATH`.
    Flag,
    /// `$BEDROCK_KEYD_CONFIG`.
    EnvVar,
    /// `$XDG_CONFIG_HOME/bedrock-keyd/config.toml` or `~/.config/bedrock-keyd/config.toml`.
    User,
    /// `/etc/bedrock-keyd/config.toml`.
    System,
}

/// Finds the config file: `--config`, then `$BEDROCK_KEYD_CONFIG`, then
/// `$XDG_CONFIG_HOME/bedrock-keyd/config.toml` (`$HOME/.config/…` when unset), then
/// `/etc/bedrock-keyd/config.toml`.
///
/// An explicit path (flag or variable) is taken as given, even if missing, so that
/// reading it reports the real problem. The user and system files are taken only if
/// they exist. `env` reads a variable (pass `|v| std::env::var_os(v)`); `exists` tests a
/// path. Both are parameters so tests need not touch the process environment. Empty
/// variables count as unset, and a relative `XDG_CONFIG_HOME` is ignored, as the XDG
/// spec says.
pub fn locate(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    exists: impl Fn(&Path) -> bool,
) -> Result<ConfigLocation, ConfigError> {
    if let Some(path) = explicit {
        return Ok(ConfigLocation {
            path: path.to_owned(),
            origin: ConfigOrigin::Flag,
        });
    }
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = var(CONFIG_ENV_VAR) {
        return Ok(ConfigLocation {
            path,
            origin: ConfigOrigin::EnvVar,
        });
    }
    let config_home = var("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|home| home.join(".config")));
    let mut tried = Vec::new();
    for (path, origin) in [
        (
            config_home.map(|d| d.join("bedrock-keyd").join("config.toml")),
            ConfigOrigin::User,
        ),
        (
            Some(PathBuf::from(SYSTEM_CONFIG_PATH)),
            ConfigOrigin::System,
        ),
    ] {
        let Some(path) = path else { continue };
        if exists(&path) {
            return Ok(ConfigLocation { path, origin });
        }
        tried.push(path);
    }
    Err(ConfigError::NotFound { tried })
}

/// [`locate`] with the process environment and file system. A relative path (from
/// `--config` or `$BEDROCK_KEYD_CONFIG`) is made absolute against the current
/// directory here, once: reloads read the same file, and the file watch, which sees
/// absolute paths, recognises it.
pub fn locate_default(explicit: Option<&Path>) -> Result<ConfigLocation, ConfigError> {
    let mut location = locate(explicit, |v| std::env::var_os(v), Path::exists)?;
    // Fails only without a current directory; the relative path then still reads.
    if let Ok(path) = std::path::absolute(&location.path) {
        location.path = path;
    }
    Ok(location)
}

/// Finds the config ([`locate_default`]) and loads it: the start of `run`, `once` and
/// `check`. A SIGHUP reload should [`load`] the same `location.path` again rather than
/// look it up anew, so a reload never silently switches files.
pub fn locate_and_load(explicit: Option<&Path>) -> Result<(ConfigLocation, Config), ConfigError> {
    let location = locate_default(explicit)?;
    let config = load(&location.path)?;
    Ok((location, config))
}

/// Reads and validates the config at `path`. The path is walked safely
/// ([`crate::sink::path`]: no directory or link of another user on the way) and the
/// file read bounded ([`crate::sink::bounded`]): a FIFO or a device is refused, not
/// waited on or read forever.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let found = crate::sink::path::resolve(path, true, crate::sink::path::Policy::Strict)
        .map_err(|e| read_err(e.into_io()))?;
    let file = found
        .dir
        .open(
            &found.name,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
            None,
        )
        .map_err(read_err)?;
    let bytes = crate::sink::bounded::read_file(&file, MAX_CONFIG_BYTES).map_err(read_err)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })?;
    parse(text, path)
}

/// Validates config `text`; `path` is only used to name the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| error::from_toml(&e, path, text))?;
    Config::try_from(raw).map_err(|e| e.locate(path, text))
}

impl TryFrom<RawConfig> for Config {
    type Error = SpannedError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let log_format = raw
            .log_format
            .as_ref()
            .map(|v| parse_spanned(v, "log_format"))
            .transpose()?;
        let listen = raw.listen.as_ref().map(validate_listen).transpose()?;
        let defaults = Defaults::try_from(raw.defaults.unwrap_or_default())?;
        if raw.keys.is_empty() {
            return Err(SpannedError::new(
                0..0,
                "key",
                "no [[key]] is configured; add at least one [[key]] with a name and a [[key.sink]]",
            ));
        }
        let mut names: HashMap<KeyName, (usize, Range<usize>)> = HashMap::new();
        let mut targets = SinkTargets::default();
        let mut keys = Vec::with_capacity(raw.keys.len());
        for (index, key) in raw.keys.iter().enumerate() {
            let (config, name_span) = validate_key(index, key, &defaults)?;
            if let Some((first, first_span)) = names.get(&config.name) {
                return Err(SpannedError::new(
                    name_span,
                    format!("key {:?}", config.name.as_str()),
                    format!(
                        "name {:?} is already used by key[{first}]; key names must be unique",
                        config.name.as_str(),
                    ),
                )
                .with_related(first_span.clone()));
            }
            names.insert(config.name.clone(), (index, name_span));
            keys.push(config);
        }
        for (key, raw_key) in keys.iter().zip(raw.keys.iter()) {
            let label = format!("key {:?}", key.name.as_str());
            for (j, (spec, raw_sink)) in key
                .sinks
                .iter()
                .zip(raw_key.get_ref().sinks.iter())
                .enumerate()
            {
                let here = format!("{label}: sink[{j}]");
                let (span, here) = match &raw_sink.get_ref().path {
                    Some(path) => (path.span(), format!("{here}.path")),
                    None => (raw_sink.span(), here),
                };
                targets
                    .add(spec, here.clone(), span.clone())
                    .map_err(|(why, first_span)| {
                        SpannedError::new(span, here, why).with_related(first_span)
                    })?;
            }
        }
        // Two proxies cannot listen on one address; say so here rather than at bind.
        let mut listens: HashMap<String, (String, Range<usize>)> = HashMap::new();
        for (key, raw_key) in keys.iter().zip(raw.keys.iter()) {
            for (j, (spec, raw_proxy)) in key
                .proxies
                .iter()
                .zip(raw_key.get_ref().proxies.iter())
                .enumerate()
            {
                let here = format!("key {:?}: proxy[{j}].listen", key.name.as_str());
                let span = raw_proxy
                    .get_ref()
                    .listen
                    .as_ref()
                    .map_or_else(|| raw_proxy.span(), Spanned::span);
                let target = spec.listen.to_string();
                if let Some((first, first_span)) = listens.get(&target) {
                    return Err(SpannedError::new(
                        span,
                        here,
                        format!(
                            "{target} is already used by {first}; every proxy needs its own address"
                        ),
                    )
                    .with_related(first_span.clone()));
                }
                listens.insert(target, (here, span));
            }
        }
        Ok(Config {
            log_format,
            listen,
            keys,
        })
    }
}

/// The validated `[defaults]`, each value with the span to blame.
struct Defaults {
    profile: Option<Spanned<String>>,
    region: Option<(Region, Range<usize>)>,
    lifetime: Option<(Lifetime, Range<usize>)>,
    refresh_at: Option<(f64, Range<usize>)>,
    jitter: Option<(f64, Range<usize>)>,
    min_remaining: Option<(Duration, Range<usize>)>,
}

impl TryFrom<RawDefaults> for Defaults {
    type Error = SpannedError;
    fn try_from(raw: RawDefaults) -> Result<Self, SpannedError> {
        let f = |name: &str| format!("defaults.{name}");
        if let Some(p) = &raw.profile {
            validate_profile(p, &f("profile"))?;
        }
        Ok(Self {
            region: raw
                .region
                .as_ref()
                .map(|v| {
                    spanned(v, &f("region"), |s| {
                        Region::new(s).map_err(|e| e.to_string())
                    })
                })
                .transpose()?,
            lifetime: raw
                .lifetime
                .as_ref()
                .map(|v| spanned(v, &f("lifetime"), parse_lifetime))
                .transpose()?,
            refresh_at: raw
                .refresh_at
                .as_ref()
                .map(|v| fraction(v, &f("refresh_at"), check_refresh_at))
                .transpose()?,
            jitter: raw
                .jitter
                .as_ref()
                .map(|v| fraction(v, &f("jitter"), check_jitter))
                .transpose()?,
            min_remaining: raw
                .min_remaining
                .as_ref()
                .map(|v| spanned(v, &f("min_remaining"), parse_min_remaining))
                .transpose()?,
            profile: raw.profile,
        })
    }
}

/// Validates one `[[key]]`; returns it with the span of its name (for duplicates).
fn validate_key(
    index: usize,
    key: &Spanned<RawKey>,
    defaults: &Defaults,
) -> Result<(KeyConfig, Range<usize>), SpannedError> {
    let raw = key.get_ref();
    let Some(raw_name) = &raw.name else {
        return Err(SpannedError::new(
            key.span(),
            format!("key[{index}]"),
            "missing field `name`; every [[key]] needs a unique name such as \"default\"",
        ));
    };
    let name = spanned(raw_name, &format!("key[{index}].name"), KeyName::new)?.0;
    let label = format!("key {:?}", name.as_str());
    let field = |f: &str| format!("{label}: {f}");

    // Source: profile, role and region.
    if let Some(p) = &raw.profile {
        validate_profile(p, &field("profile"))?;
    }
    let profile = raw
        .profile
        .as_ref()
        .or(defaults.profile.as_ref())
        .map(|p| p.get_ref().clone());
    let region = match &raw.region {
        Some(v) => Some(
            spanned(v, &field("region"), |s| {
                Region::new(s).map_err(|e| e.to_string())
            })?
            .0,
        ),
        None => defaults.region.as_ref().map(|(r, _)| r.clone()),
    };
    let role_arn = optional(
        &raw.role_arn,
        &field("role_arn"),
        crate::credentials::parse_role_arn,
    )?;
    for (value, name) in [
        (&raw.external_id, "external_id"),
        (&raw.role_session_name, "role_session_name"),
        (&raw.role_session_duration, "role_session_duration"),
    ] {
        if let (Some(v), None) = (value, &role_arn) {
            return Err(SpannedError::new(
                v.span(),
                field(name),
                format!(
                    "{name} is only allowed together with role_arn (it configures the role to assume)"
                ),
            ));
        }
    }
    let external_id = optional(
        &raw.external_id,
        &field("external_id"),
        crate::credentials::parse_external_id,
    )?;
    let role_session_name = optional(
        &raw.role_session_name,
        &field("role_session_name"),
        crate::credentials::parse_role_session_name,
    )?;
    let role_session_duration = optional(
        &raw.role_session_duration,
        &field("role_session_duration"),
        crate::credentials::parse_role_session_duration,
    )?;
    let source = SourceSpec {
        profile,
        region,
        role_arn,
        external_id,
        role_session_name,
        from_config_file: true,
        role_session_duration,
    };

    // Lifetime and refresh policy.
    let lifetime = match &raw.lifetime {
        Some(v) => spanned(v, &field("lifetime"), parse_lifetime)?,
        None => defaults
            .lifetime
            .clone()
            .unwrap_or((DEFAULT_LIFETIME, key.span())),
    };
    let refresh_at = match &raw.refresh_at {
        Some(v) => fraction(v, &field("refresh_at"), check_refresh_at)?.0,
        None => defaults
            .refresh_at
            .as_ref()
            .map_or(DEFAULT_REFRESH_AT, |d| d.0),
    };
    let jitter = match &raw.jitter {
        Some(v) => fraction(v, &field("jitter"), check_jitter)?.0,
        None => defaults.jitter.as_ref().map_or(DEFAULT_JITTER, |d| d.0),
    };
    // An explicit min_remaining (here or in [defaults]) must fit the lifetime and is
    // blamed when it does not; the built-in default shrinks to fit a short lifetime.
    let explicit = match (&raw.min_remaining, &defaults.min_remaining) {
        (Some(v), _) => {
            let (d, span) = spanned(v, &field("min_remaining"), parse_min_remaining)?;
            Some((d, span, ""))
        }
        (None, Some((d, span))) => Some((*d, span.clone(), " (from [defaults])")),
        (None, None) => None,
    };
    let min_remaining = match explicit {
        Some((d, span, from)) => {
            check_min_remaining(d, lifetime.0).map_err(|why| {
                SpannedError::new(
                    span,
                    field("min_remaining"),
                    format!(
                        "min_remaining {}{from} {why}",
                        crate::clock::duration::format(d)
                    ),
                )
            })?;
            d
        }
        None => schedule::default_min_remaining(lifetime.0.get()),
    };
    let policy = RefreshPolicy::new(refresh_at, jitter, min_remaining)
        .map_err(|e| SpannedError::new(key.span(), field("policy"), e.to_string()))?;

    // Sinks, proxies and notifications.
    if raw.sinks.is_empty() && raw.proxies.is_empty() {
        return Err(SpannedError::new(
            key.span(),
            label.clone(),
            "has no [[key.sink]] and no [[key.proxy]]; add at least one (a sink of type = \"file\", \"env-file\" or \"keyring\", or a proxy)",
        ));
    }
    let sinks = raw
        .sinks
        .iter()
        .enumerate()
        .map(|(j, s)| validate_sink(s, &format!("{label}: sink[{j}]"), &name))
        .collect::<Result<Vec<_>, _>>()?;
    let notify = raw
        .notify
        .iter()
        .enumerate()
        .map(|(j, n)| validate_notify(n, &format!("{label}: notify[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let proxies = raw
        .proxies
        .iter()
        .enumerate()
        .map(|(j, p)| validate_proxy(p, &format!("{label}: proxy[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;

    Ok((
        KeyConfig {
            name,
            source,
            lifetime: lifetime.0,
            policy,
            sinks,
            notify,
            proxies,
        },
        raw_name.span(),
    ))
}

const FILE_FIELDS: &[&str] = &[
    "type",
    "path",
    "format",
    "mode",
    "owner",
    "group",
    "follow_symlinks",
    "allow_world_readable",
];
const ENV_FILE_FIELDS: &[&str] = &[
    "type",
    "path",
    "variable",
    "mode",
    "owner",
    "group",
    "follow_symlinks",
    "allow_world_readable",
];
const KEYRING_FIELDS: &[&str] = &["type", "service", "account", "backend"];

fn validate_sink(
    sink: &Spanned<RawSink>,
    here: &str,
    key: &KeyName,
) -> Result<SinkSpec, SpannedError> {
    let raw = sink.get_ref();
    let field = |f: &str| format!("{here}.{f}");
    let Some(kind) = &raw.kind else {
        return Err(SpannedError::new(
            sink.span(),
            here,
            "missing field `type`; use type = \"file\", \"env-file\" or \"keyring\"",
        ));
    };
    let allowed = match kind.get_ref().as_str() {
        "file" => FILE_FIELDS,
        "env-file" => ENV_FILE_FIELDS,
        "keyring" => KEYRING_FIELDS,
        other => {
            return Err(SpannedError::new(
                kind.span(),
                field("type"),
                format!("{other:?} is not a sink type; use \"file\", \"env-file\" or \"keyring\""),
            ));
        }
    };
    // Fields another sink type uses would be silently ignored: refuse them.
    let present = raw.present();
    for (name, span) in present {
        if let Some(span) = span
            && !allowed.contains(&name)
        {
            return Err(SpannedError::new(
                span,
                field(name),
                format!(
                    "not allowed for a sink of type {:?} (allowed: {})",
                    kind.get_ref(),
                    allowed.join(", ")
                ),
            ));
        }
    }
    if kind.get_ref() == "keyring" {
        let service = match &raw.service {
            Some(v) => spanned(v, &field("service"), |s| non_empty(s, "a keyring service"))?.0,
            None => DEFAULT_KEYRING_SERVICE.to_owned(),
        };
        let account = match &raw.account {
            Some(v) => spanned(v, &field("account"), |s| non_empty(s, "a keyring account"))?.0,
            None => key.as_str().to_owned(),
        };
        let backend = match &raw.backend {
            Some(v) => spanned(v, &field("backend"), |s| s.parse::<KeyringBackend>())?.0,
            None => KeyringBackend::Default,
        };
        return Ok(SinkSpec::Keyring(KeyringSpec {
            service,
            account,
            backend,
        }));
    }

    let Some(raw_path) = &raw.path else {
        return Err(SpannedError::new(
            sink.span(),
            here,
            format!(
                "missing field `path`; a {} sink needs an absolute path such as \"/run/bedrock-keyd/{key}.key\"",
                kind.get_ref()
            ),
        ));
    };
    let path = spanned(raw_path, &field("path"), validate_path)?.0;
    let mode = match &raw.mode {
        Some(v) => spanned(v, &field("mode"), |s| s.parse::<FileMode>())?,
        None => (DEFAULT_MODE, sink.span()),
    };
    let allow_world_readable = raw
        .allow_world_readable
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    if mode.0.world_readable() && !allow_world_readable {
        return Err(SpannedError::new(
            mode.1,
            field("mode"),
            format!(
                "mode {} lets every user on the machine read the key; use \"0600\" or \"0640\" with a group, or set allow_world_readable = true",
                mode.0
            ),
        ));
    }
    let user = |v: &Option<Spanned<String>>, name: &str| {
        optional(v, &field(name), |s| s.parse::<UserRef>())
    };
    let access = FileAccess {
        mode: mode.0,
        owner: user(&raw.owner, "owner")?,
        group: user(&raw.group, "group")?,
        follow_symlinks: raw.follow_symlinks.as_ref().is_some_and(|v| *v.get_ref()),
        allow_world_readable,
    };
    if kind.get_ref() == "file" {
        let format = match &raw.format {
            Some(v) => spanned(v, &field("format"), |s| s.parse::<FileFormat>())?.0,
            None => FileFormat::default(),
        };
        Ok(SinkSpec::File(FileSpec {
            path,
            format,
            access,
        }))
    } else {
        let variable = match &raw.variable {
            Some(v) => spanned(v, &field("variable"), validate_variable)?.0,
            None => DEFAULT_ENV_VARIABLE.to_owned(),
        };
        Ok(SinkSpec::EnvFile(EnvFileSpec {
            path,
            variable,
            access,
        }))
    }
}

fn validate_notify(notify: &Spanned<RawNotify>, here: &str) -> Result<NotifySpec, SpannedError> {
    let raw = notify.get_ref();
    let field = |f: &str| format!("{here}.{f}");
    let targets: Vec<(&str, Range<usize>)> = [
        ("pid_file", raw.pid_file.as_ref().map(Spanned::span)),
        ("process", raw.process.as_ref().map(Spanned::span)),
        ("systemd_unit", raw.systemd_unit.as_ref().map(Spanned::span)),
        ("command", raw.command.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.map(|s| (n, s)))
    .collect();
    let target = match targets.as_slice() {
        [one] => one.0,
        [] => {
            return Err(SpannedError::new(
                notify.span(),
                here,
                "names no one to notify: set exactly one of pid_file, process, systemd_unit or command",
            ));
        }
        [first, second, ..] => {
            return Err(SpannedError::new(
                second.1.clone(),
                field(second.0),
                format!(
                    "a [[key.notify]] has exactly one target, but both {} and {} are set; use two [[key.notify]] tables",
                    first.0, second.0
                ),
            ));
        }
    };
    // Options that the target would ignore are refused.
    let allowed: &[&str] = match target {
        "pid_file" | "process" => &["signal"],
        "systemd_unit" => &["action", "signal"],
        _ => &["timeout"],
    };
    for (name, span) in [
        ("signal", raw.signal.as_ref().map(Spanned::span)),
        ("action", raw.action.as_ref().map(Spanned::span)),
        ("timeout", raw.timeout.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = span
            && !allowed.contains(&name)
        {
            return Err(SpannedError::new(
                span,
                field(name),
                format!(
                    "not allowed with {target} (allowed with {target}: {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let signal = optional(&raw.signal, &field("signal"), |s| s.parse::<Signal>())?;

    // Exactly one target is set (checked above); take it.
    if let Some(v) = &raw.pid_file {
        return Ok(NotifySpec::PidFile {
            path: spanned(v, &field("pid_file"), validate_path)?.0,
            signal: signal.unwrap_or(dependents::DEFAULT_SIGNAL),
        });
    }
    if let Some(v) = &raw.process {
        let name = spanned(v, &field("process"), |s| {
            dependents::validate_process_name(s).map(|()| s.to_owned())
        })?;
        return Ok(NotifySpec::Process {
            name: name.0,
            signal: signal.unwrap_or(dependents::DEFAULT_SIGNAL),
        });
    }
    if let Some(v) = &raw.systemd_unit {
        let unit = spanned(v, &field("systemd_unit"), |s| {
            dependents::validate_unit_name(s).map(|()| s.to_owned())
        })?
        .0;
        let action = match (&raw.action, signal) {
            (Some(a), Some(_)) => {
                return Err(SpannedError::new(
                    a.span(),
                    field("action"),
                    "set either action or signal, not both (action = \"HUP\" also sends a signal)",
                ));
            }
            (Some(a), None) => spanned(a, &field("action"), |s| s.parse::<SystemdAction>())?.0,
            (None, Some(sig)) => SystemdAction::Signal(sig),
            (None, None) => dependents::DEFAULT_SYSTEMD_ACTION,
        };
        return Ok(NotifySpec::SystemdUnit { unit, action });
    }
    let Some(command) = &raw.command else {
        return Err(SpannedError::new(
            notify.span(),
            here,
            "no notification target",
        ));
    };
    let argv = command.get_ref();
    if argv.first().is_none_or(|program| program.trim().is_empty()) {
        return Err(SpannedError::new(
            command.span(),
            field("command"),
            "is empty; give the program and its arguments, e.g. [\"/usr/local/bin/app-reload\", \"--quiet\"] (no shell is involved)",
        ));
    }
    if let Some(bad) = argv.iter().find(|a| a.contains('\0')) {
        return Err(SpannedError::new(
            command.span(),
            field("command"),
            format!("argument {bad:?} contains a NUL byte"),
        ));
    }
    let timeout = match &raw.timeout {
        Some(v) => spanned(v, &field("timeout"), parse_command_timeout)?.0,
        None => dependents::DEFAULT_COMMAND_TIMEOUT,
    };
    Ok(NotifySpec::Command {
        argv: argv.clone(),
        timeout,
    })
}

fn validate_proxy(proxy: &Spanned<RawProxy>, here: &str) -> Result<ProxySpec, SpannedError> {
    let raw = proxy.get_ref();
    let field = |f: &str| format!("{here}.{f}");
    let Some(listen) = &raw.listen else {
        return Err(SpannedError::new(
            proxy.span(),
            here,
            "missing field `listen`; use a loopback address such as \"127.0.0.1:8790\" or \"unix:/run/bedrock-keyd/bedrock.sock\"",
        ));
    };
    let mode = optional(&raw.mode, &field("mode"), |s| s.parse::<FileMode>())?;
    if let (Some(m), false) = (&raw.mode, listen.get_ref().starts_with("unix:")) {
        return Err(SpannedError::new(
            m.span(),
            field("mode"),
            "applies to a unix socket (listen = \"unix:/path.sock\") only",
        ));
    }
    let listen = spanned(listen, &field("listen"), |s| Listen::parse(s, mode))?.0;
    let upstream = optional(&raw.upstream, &field("upstream"), Upstream::parse)?;
    let Some(token_file) = &raw.token_file else {
        return Err(SpannedError::new(
            proxy.span(),
            here,
            "missing field `token_file`; name the file holding the clients' local token, e.g. \"/run/bedrock-keyd/proxy.token\" (created with a random token if absent)",
        ));
    };
    let token_file = spanned(token_file, &field("token_file"), validate_path)?.0;
    let ca_bundle = optional(&raw.ca_bundle, &field("ca_bundle"), validate_path)?;
    Ok(ProxySpec {
        listen,
        upstream,
        token_file,
        tls: raw.tls.as_ref().is_some_and(|t| *t.get_ref()),
        ca_bundle,
    })
}

fn parse_command_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::clock::duration::parse(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > dependents::MAX_COMMAND_TIMEOUT {
        Err(format!(
            "{} is outside 1s … {}",
            crate::clock::duration::format(d),
            crate::clock::duration::format(dependents::MAX_COMMAND_TIMEOUT)
        ))
    } else {
        Ok(d)
    }
}

/// Parses a spanned string with `parse`, blaming its span on failure.
fn spanned<T, E: fmt::Display>(
    value: &Spanned<String>,
    field: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<(T, Range<usize>), SpannedError> {
    parse(value.get_ref())
        .map(|v| (v, value.span()))
        .map_err(|e| SpannedError::new(value.span(), field, e.to_string()))
}

/// `spanned` for an optional field: `None` when it is absent.
fn optional<T, E: fmt::Display>(
    value: &Option<Spanned<String>>,
    field: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, SpannedError> {
    value
        .as_ref()
        .map(|v| spanned(v, field, parse).map(|(v, _)| v))
        .transpose()
}

fn parse_spanned<T: FromStr<Err = String>>(
    value: &Spanned<String>,
    field: &str,
) -> Result<T, SpannedError> {
    spanned(value, field, |s| s.parse::<T>()).map(|(v, _)| v)
}

fn fraction(
    value: &Spanned<f64>,
    field: &str,
    check: fn(f64) -> Result<f64, String>,
) -> Result<(f64, Range<usize>), SpannedError> {
    check(*value.get_ref())
        .map(|v| (v, value.span()))
        .map_err(|e| SpannedError::new(value.span(), field, e))
}

fn check_refresh_at(v: f64) -> Result<f64, String> {
    RefreshPolicy::new(v, 0.0, Duration::from_secs(1))
        .map(|_| v)
        .map_err(|e| e.to_string())
}

fn check_jitter(v: f64) -> Result<f64, String> {
    RefreshPolicy::new(0.5, v, Duration::from_secs(1))
        .map(|_| v)
        .map_err(|e| e.to_string())
}

fn parse_lifetime(s: &str) -> Result<Lifetime, String> {
    s.parse::<Lifetime>()
        .map_err(|e| format!("{e} (allowed: 1s … 12h, e.g. \"12h\" or \"30m\")"))
}

fn parse_min_remaining(s: &str) -> Result<Duration, String> {
    let d = crate::clock::duration::parse(s).map_err(|e| e.to_string())?;
    RefreshPolicy::new(0.5, 0.0, d)
        .map(|_| d)
        .map_err(|e| e.to_string())
}

fn validate_listen(value: &Spanned<String>) -> Result<SocketAddr, SpannedError> {
    spanned(value, "listen", |s| {
        let addr: SocketAddr = s.parse().map_err(|_| {
            format!("{s:?} is not an IP address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\" (host names are not resolved)")
        })?;
        if addr.port() == 0 {
            return Err(format!("{s:?} has port 0; give the port Prometheus will scrape, e.g. 9464"));
        }
        Ok(addr)
    })
    .map(|(a, _)| a)
}

fn validate_profile(value: &Spanned<String>, field: &str) -> Result<(), SpannedError> {
    spanned(value, field, |s| {
        if s.trim().is_empty() || s.chars().any(|c| c.is_control() || c == '[' || c == ']') {
            Err(format!(
                "{s:?} is not a profile name (as in ~/.aws/config, e.g. \"prod\")"
            ))
        } else {
            Ok(())
        }
    })
    .map(|_| ())
}

/// An absolute path to a file: no `..`, no trailing `/`, `/.` or `/..`, no NUL.
fn validate_path(s: &str) -> Result<PathBuf, String> {
    let path = Path::new(s);
    if !path.is_absolute() {
        return Err(format!(
            "{s:?} is a relative path; use an absolute path such as \"/run/bedrock-keyd/default.key\" (the daemon's working directory is not something to rely on)"
        ));
    }
    if s.ends_with('/') {
        return Err(format!("{s:?} names a directory; give the path of a file"));
    }
    // Cleaning would turn `/run/keys/.` into `/run/keys`: a directory, written over
    // as if it were the file.
    if let Some(tail) = ["/.", "/.."].into_iter().find(|t| s.ends_with(t)) {
        return Err(format!(
            "{s:?} ends in {tail:?}, so it names a directory; give the path of a file"
        ));
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{s:?} contains \"..\"; write the path without it"));
    }
    // `/run//x/./k` and `/run/x/k` are the same file: compare and keep the clean form.
    Ok(path.components().collect())
}

/// `[A-Za-z_][A-Za-z0-9_]*`, what shells and dotenv parsers accept.
fn validate_variable(s: &str) -> Result<String, String> {
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a variable name (letters, digits and _, not starting with a digit, e.g. \"AWS_BEARER_TOKEN_BEDROCK\")"
        ))
    }
}

fn non_empty(s: &str, what: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err(format!("{what} must not be empty"))
    } else {
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests;
