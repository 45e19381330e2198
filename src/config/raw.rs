//! The config file exactly as written: a serde mirror of the TOML schema.
//!
//! Every table rejects unknown fields (a typo must not silently become a default).
//! Values that need checking beyond their TOML type are kept as strings or numbers
//! with their byte span ([`Spanned`]), so that validation in the parent module can
//! point at the exact line and column of a bad value. Nothing here has meaning yet:
//! `Config::try_from(RawConfig)` turns it into types that cannot be wrong.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub log_format: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub defaults: Option<RawDefaults>,
    #[serde(default, rename = "key")]
    pub keys: Vec<Spanned<RawKey>>,
}

/// `[defaults]`: inherited by every `[[key]]` that does not set the field itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub profile: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub lifetime: Option<Spanned<String>>,
    pub refresh_at: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
    pub min_remaining: Option<Spanned<String>>,
}

/// One `[[key]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: Option<Spanned<String>>,
    pub profile: Option<Spanned<String>>,
    pub role_arn: Option<Spanned<String>>,
    pub external_id: Option<Spanned<String>>,
    pub role_session_name: Option<Spanned<String>>,
    /// With role_arn: how long the assumed-role session lasts (15m … 12h).
    pub role_session_duration: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub lifetime: Option<Spanned<String>>,
    pub refresh_at: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
    pub min_remaining: Option<Spanned<String>>,
    #[serde(default, rename = "sink")]
    pub sinks: Vec<Spanned<RawSink>>,
    #[serde(default)]
    pub notify: Vec<Spanned<RawNotify>>,
    #[serde(default, rename = "proxy")]
    pub proxies: Vec<Spanned<RawProxy>>,
}

/// One `[[key.proxy]]`: a local endpoint forwarding to Bedrock with the current key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub listen: Option<Spanned<String>>,
    /// Unix sockets only.
    pub mode: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub tls: Option<Spanned<bool>>,
    pub ca_bundle: Option<Spanned<String>>,
}

/// One `[[key.sink]]`: the union of every sink type's fields; validation checks
/// which ones the `type` allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub follow_symlinks: Option<Spanned<bool>>,
    pub allow_world_readable: Option<Spanned<bool>>,
    pub variable: Option<Spanned<String>>,
    pub service: Option<Spanned<String>>,
    pub account: Option<Spanned<String>>,
    /// Keyring sinks: `default`, `secret-service`, `keyutils` or `keychain`.
    pub backend: Option<Spanned<String>>,
}

/// One `[[key.notify]]`: exactly one target (`pid_file`, `process`, `systemd_unit`,
/// `command`) and the options that target allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub pid_file: Option<Spanned<String>>,
    pub process: Option<Spanned<String>>,
    pub systemd_unit: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<String>>>,
    pub signal: Option<Spanned<String>>,
    pub action: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}
