//! `bedrock-keyd check`: validate the config and print the resolved plan.
//!
//! No side effects by design: the config is read and validated, nothing is created,
//! no credentials are looked up, no user or group is resolved, nothing is contacted.
//! Safe to run as `ExecStartPre=` or in CI against a config in a repository.
//!
//! One thing beyond the file is looked at, because it is certain from here: a key
//! whose region can come from nowhere (no `region`, none in the environment or the
//! AWS profile, instance metadata disabled by `AWS_EC2_METADATA_DISABLED=true`) fails
//! as the run would, with the run's message. Where instance metadata may answer,
//! `check` cannot know and passes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::CliError;
use crate::clock::duration;
use crate::config::proxy::{Listen, ProxySpec};
use crate::config::{self, Config, ConfigLocation, ConfigOrigin, KeyConfig};
use crate::dependents::{NotifySpec, SystemdAction};
use crate::schedule::JitterSample;
use crate::sink::{FileAccess, FileFormat, SinkSpec};

/// Validate the config file and print what the daemon would do, without doing it.
///
/// Prints, per key: where credentials come from, the region, the requested lifetime,
/// the refresh policy, the sinks and the notifications. Exits 0 when the config is
/// valid, 78 with the file, line, column and field of the first problem otherwise,
/// or when a key's region can come from nowhere (none set, no AWS_REGION or
/// AWS_DEFAULT_REGION, none in the AWS profile, and AWS_EC2_METADATA_DISABLED=true).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file [default: $BEDROCK_KEYD_CONFIG, then
    /// $XDG_CONFIG_HOME/bedrock-keyd/config.toml (~/.config/…), then
    /// /etc/bedrock-keyd/config.toml].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CheckArgs) -> Result<ExitCode, CliError> {
    let (location, config) = config::locate_and_load(args.config.as_deref())?;
    super::block_on(regions_offline(&config))??;
    let out = if args.json {
        format!("{:#}\n", plan_json(&location, &config))
    } else {
        plan_text(&location, &config)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Runtime(format!("cannot write to stdout: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// The first key whose region certainly cannot be found, with the run's error.
async fn regions_offline(config: &Config) -> Result<(), CliError> {
    for key in &config.keys {
        crate::credentials::check_region_offline(&key.source)
            .await
            .map_err(|error| CliError::KeyCredentials {
                key: key.name.to_string(),
                error,
            })?;
    }
    Ok(())
}

fn origin(o: ConfigOrigin) -> &'static str {
    match o {
        ConfigOrigin::Flag => "--config",
        ConfigOrigin::EnvVar => "$BEDROCK_KEYD_CONFIG",
        ConfigOrigin::User => "user config",
        ConfigOrigin::System => "system config",
    }
}

/// The human-readable plan.
pub fn plan_text(location: &ConfigLocation, config: &Config) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "config: {} ({})",
        location.path.display(),
        origin(location.origin)
    );
    let _ = writeln!(
        o,
        "log format: {}",
        config
            .log_format
            .map_or("text (default; --log-format overrides)".to_owned(), |f| f
                .to_string())
    );
    let _ = match config.listen {
        Some(addr) => writeln!(o, "listen: http://{addr} (/healthz /readyz /metrics)"),
        None => writeln!(o, "listen: none (no HTTP listener)"),
    };
    for key in &config.keys {
        let _ = writeln!(o);
        key_text(&mut o, key);
    }
    let sinks: usize = config.keys.iter().map(|k| k.sinks.len()).sum();
    let notifies: usize = config.keys.iter().map(|k| k.notify.len()).sum();
    let _ = writeln!(
        o,
        "\nconfig OK: {} key{}, {} sink{}, {} notification{}",
        config.keys.len(),
        plural(config.keys.len()),
        sinks,
        plural(sinks),
        notifies,
        plural(notifies)
    );
    o
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn key_text(o: &mut String, key: &KeyConfig) {
    let _ = writeln!(o, "key {:?}", key.name.as_str());
    let _ = writeln!(o, "  source:   {}", source_text(key));
    let _ = writeln!(
        o,
        "  region:   {}",
        key.source.region.as_ref().map_or(
            "from the environment or profile (AWS_REGION, AWS_DEFAULT_REGION, the profile's region)"
                .to_owned(),
            |r| r.to_string()
        )
    );
    let _ = writeln!(
        o,
        "  lifetime: {} requested (less if the signing credentials expire sooner)",
        key.lifetime
    );
    let (earliest, latest) = refresh_window(key);
    let _ = writeln!(o, "  refresh:  {}", key.policy);
    let _ = writeln!(
        o,
        "            for a full {} key: {} … {} after minting",
        key.lifetime,
        duration::format(earliest),
        duration::format(latest)
    );
    if key.sinks.is_empty() {
        let _ = writeln!(o, "  sinks:    none (served by its proxy only)");
    } else {
        let _ = writeln!(o, "  sinks:");
        for sink in &key.sinks {
            let _ = writeln!(o, "    - {}", sink_text(sink));
        }
    }
    if !key.proxies.is_empty() {
        let _ = writeln!(o, "  proxies (forward to Bedrock with the current key):");
        for p in &key.proxies {
            let _ = writeln!(o, "    - {}", proxy_text(p));
        }
    }
    if key.notify.is_empty() {
        let _ = writeln!(o, "  notify:   nothing");
    } else {
        let _ = writeln!(o, "  notify (after every sink holds the new key):");
        for n in &key.notify {
            let _ = writeln!(o, "    - {n}");
        }
    }
}

fn proxy_text(p: &ProxySpec) -> String {
    let scheme = if p.tls { "https" } else { "http" };
    let mut text = match &p.listen {
        Listen::Tcp(addr) => format!("{scheme}://{addr}"),
        Listen::Unix { path, mode } => {
            format!("{scheme} on unix socket {} (mode {mode})", path.display())
        }
    };
    let _ = write!(
        text,
        " -> {}, local token in {}",
        p.upstream.as_ref().map_or_else(
            || "https://bedrock-runtime.<the key's region>.amazonaws.com".to_owned(),
            ToString::to_string
        ),
        p.token_file.display()
    );
    if p.tls {
        let (cert, _) = crate::service::proxy::tls::cert_paths(&p.token_file);
        let _ = write!(text, ", certificate {}", cert.display());
    }
    if let Some(ca) = &p.ca_bundle {
        let _ = write!(text, ", upstream CA bundle {}", ca.display());
    }
    text
}

fn source_text(key: &KeyConfig) -> String {
    let s = &key.source;
    let mut text = match &s.profile {
        Some(p) => format!("profile {p:?}"),
        None => "the default credential chain (environment, AWS_PROFILE or the default profile, SSO, web identity, container endpoint, instance metadata)".to_owned(),
    };
    if let Some(arn) = &s.role_arn {
        let _ = write!(text, ", then assume role {arn}");
        let mut extras = Vec::new();
        if s.external_id.is_some() {
            extras.push("with an external id".to_owned());
        }
        if let Some(name) = &s.role_session_name {
            extras.push(format!("session name {name:?}"));
        }
        if !extras.is_empty() {
            let _ = write!(text, " ({})", extras.join(", "));
        }
    }
    text
}

fn refresh_window(key: &KeyConfig) -> (std::time::Duration, std::time::Duration) {
    let lifetime = key.lifetime.get();
    (
        key.policy.refresh_delay(lifetime, JitterSample::MIN),
        key.policy.refresh_delay(lifetime, JitterSample::MAX),
    )
}

fn access_text(a: &FileAccess) -> String {
    let mut parts = vec![format!("mode {}", a.mode)];
    if let Some(owner) = &a.owner {
        parts.push(format!("owner {owner}"));
    }
    if let Some(group) = &a.group {
        parts.push(format!("group {group}"));
    }
    if a.follow_symlinks {
        parts.push("follows symlinks".to_owned());
    }
    if a.allow_world_readable {
        parts.push("world-readable allowed".to_owned());
    }
    parts.join(", ")
}

fn sink_text(sink: &SinkSpec) -> String {
    match sink {
        SinkSpec::File(f) => format!(
            "file {} ({}, {})",
            f.path.display(),
            format_name(f.format),
            access_text(&f.access)
        ),
        SinkSpec::EnvFile(e) => format!(
            "env-file {} (variable {}, {})",
            e.path.display(),
            e.variable,
            access_text(&e.access)
        ),
        SinkSpec::Keyring(k) => format!("keyring service {:?}, account {:?}", k.service, k.account),
    }
}

fn format_name(f: FileFormat) -> &'static str {
    match f {
        FileFormat::Raw => "raw",
        FileFormat::Json => "json",
    }
}

/// The plan as JSON, for scripts.
pub fn plan_json(location: &ConfigLocation, config: &Config) -> Value {
    json!({
        "config": location.path.display().to_string(),
        "origin": origin(location.origin),
        "log_format": config.log_format.map(|f| f.to_string()),
        "listen": config.listen.map(|a| a.to_string()),
        "keys": config.keys.iter().map(key_json).collect::<Vec<_>>(),
    })
}

fn access_json(a: &FileAccess) -> Value {
    json!({
        "mode": a.mode.to_string(),
        "owner": a.owner.as_ref().map(ToString::to_string),
        "group": a.group.as_ref().map(ToString::to_string),
        "follow_symlinks": a.follow_symlinks,
        "allow_world_readable": a.allow_world_readable,
    })
}

fn key_json(key: &KeyConfig) -> Value {
    let s = &key.source;
    let (earliest, latest) = refresh_window(key);
    let sinks: Vec<Value> = key
        .sinks
        .iter()
        .map(|sink| match sink {
            SinkSpec::File(f) => {
                let mut v = access_json(&f.access);
                v["type"] = json!("file");
                v["path"] = json!(f.path.display().to_string());
                v["format"] = json!(format_name(f.format));
                v
            }
            SinkSpec::EnvFile(e) => {
                let mut v = access_json(&e.access);
                v["type"] = json!("env-file");
                v["path"] = json!(e.path.display().to_string());
                v["variable"] = json!(e.variable);
                v
            }
            SinkSpec::Keyring(k) => {
                json!({"type": "keyring", "service": k.service, "account": k.account})
            }
        })
        .collect();
    let notify: Vec<Value> = key
        .notify
        .iter()
        .map(|n| match n {
            NotifySpec::PidFile { path, signal } => {
                json!({"type": "pid_file", "path": path.display().to_string(), "signal": signal.to_string()})
            }
            NotifySpec::Process { name, signal } => {
                json!({"type": "process", "name": name, "signal": signal.to_string()})
            }
            NotifySpec::SystemdUnit { unit, action } => {
                let (action, signal) = match action {
                    SystemdAction::Signal(sig) => ("kill".to_owned(), Some(sig.to_string())),
                    other => (other.to_string(), None),
                };
                json!({"type": "systemd_unit", "unit": unit, "action": action, "signal": signal})
            }
            NotifySpec::Command { argv, timeout } => json!({
                "type": "command",
                "argv": argv,
                "timeout_seconds": timeout.as_secs_f64(),
            }),
        })
        .collect();
    json!({
        "name": key.name.as_str(),
        "source": {
            "profile": s.profile,
            "role_arn": s.role_arn,
            "external_id_set": s.external_id.is_some(),
            "role_session_name": s.role_session_name,
        },
        "region": s.region.as_ref().map(|r| r.as_str()),
        "lifetime_seconds": key.lifetime.get().as_secs(),
        "refresh": {
            "refresh_at": key.policy.refresh_at(),
            "jitter": key.policy.jitter(),
            "min_remaining_seconds": key.policy.min_remaining().as_secs_f64(),
            "full_lifetime_window_seconds": [earliest.as_secs_f64(), latest.as_secs_f64()],
        },
        "sinks": sinks,
        "notify": notify,
        "proxies": key.proxies.iter().map(|p| json!({
            "listen": p.listen.to_string(),
            "mode": match &p.listen { Listen::Unix { mode, .. } => Some(mode.to_string()), Listen::Tcp(_) => None },
            "upstream": p.upstream.as_ref().map(ToString::to_string),
            "token_file": p.token_file.display().to_string(),
            "tls": p.tls,
            "ca_bundle": p.ca_bundle.as_ref().map(|c| c.display().to_string()),
        })).collect::<Vec<_>>(),
    })
}
