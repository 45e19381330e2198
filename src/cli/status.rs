//! `bedrock-keyd status`: a probe from the sinks themselves, offline.
//!
//! Reads every sink of the config (or the `--file`s), decodes each key and exits 0
//! only if every one holds a key valid long enough; otherwise exit 3 with one line per
//! failing sink. Made for Kubernetes exec probes and scripts in minimal images: no
//! shell, no network, no `HOME` needed, and silent on success unless `--verbose` or
//! `--json` asks.
//!
//! "Long enough" is `--min-valid` when given; otherwise, for a config, each key's own
//! policy judged exactly as `/readyz` judges it ([`crate::daemon::unready_reason`]:
//! valid and before its renewal deadline, which is `min_remaining` before expiry for
//! most keys), so the probe and the endpoint agree; for `--file`,
//! [`DEFAULT_FILE_MIN_VALID`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;
use zeroize::Zeroizing;

use super::CliError;
use crate::clock::time::rfc3339;
use crate::key::Fingerprint;
use crate::key::decode::{Invalidity, decode};
use crate::key::format::extract_key;
use crate::schedule::{RefreshPolicy, Validity};
use crate::sink::SinkSpec;

/// With `--file` there is no policy to ask: five minutes is the contract's default
/// `min_remaining`, so a plain `status --file` agrees with a default daemon.
pub const DEFAULT_FILE_MIN_VALID: Duration = crate::schedule::DEFAULT_MIN_REMAINING;
/// The sinks' own limit: a larger file is not one of ours and is not read.
const MAX_SINK_FILE_BYTES: u64 = crate::sink::atomic::MAX_SINK_FILE_BYTES;

/// Probe: exit 0 only if every sink holds a key valid long enough.
///
/// Reads each file and env-file sink of the config (keyring sinks through the OS
/// keyring), or each --file, and decodes the key offline. Without --min-valid, a
/// config key must meet its own refresh policy, exactly as /readyz judges it (valid
/// beyond min_remaining); a --file must stay valid for 5m. Exits 3 with one line per
/// failing sink (missing, unreadable, not a key, expired, signed in the future, too
/// little left).
///
/// Silent on success: suited to Kubernetes exec probes in an image without a shell.
///
/// Example: bedrock-keyd status --file /keys/bedrock.key --min-valid 5m
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The config whose sinks to check [default: $BEDROCK_KEYD_CONFIG,
    /// $XDG_CONFIG_HOME/bedrock-keyd/config.toml, /etc/bedrock-keyd/config.toml].
    #[arg(long, value_name = "PATH", conflicts_with = "files")]
    config: Option<PathBuf>,

    /// Check this key file instead of a config's sinks (raw, JSON or dotenv;
    /// repeatable).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,

    /// Each key must stay valid at least this long (e.g. 5m, 1h) [default: each key's
    /// min_remaining policy from the config; 5m with --file].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    min_valid: Option<Duration>,

    /// Print a JSON report on stdout (also on failure).
    #[arg(long)]
    json: bool,

    /// Also print a line per sink that passes ("ok: …") on stdout; failing sinks are
    /// reported once, on stderr, as without -v.
    #[arg(long, short = 'v')]
    verbose: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::clock::duration::parse(s).map_err(|e| e.to_string())
}

/// What to check and by which rule.
struct Target {
    key: Option<String>,
    what: Source,
    rule: Rule,
}

enum Source {
    /// A file in any format `extract_key` reads; `variable` for an env-file sink.
    File {
        path: PathBuf,
        variable: Option<String>,
    },
    Keyring(crate::sink::KeyringSpec),
}

#[derive(Clone, Copy)]
enum Rule {
    /// Valid for at least this long: `--min-valid`, or the default for `--file`
    /// (`given` false), which the message must not present as a flag the user gave.
    MinValid { min: Duration, given: bool },
    /// The key's own policy, as `/readyz`.
    Policy(RefreshPolicy),
}

/// The verdict on one sink (the JSON shape of `--json`).
#[derive(Debug, Serialize)]
struct SinkReport {
    /// The key name (config mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// `file /path`, `env-file /path (VAR)`, `keyring service:account`.
    sink: String,
    ok: bool,
    /// `valid`, `missing`, `unreadable`, `invalid`, `expired`, `short`.
    state: &'static str,
    /// Why it failed, or a summary when it passed.
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    checked_at: String,
    sinks: &'a [SinkReport],
}

pub fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let targets = targets(&args)?;
    let now = SystemTime::now();
    let reports: Vec<SinkReport> = targets.iter().map(|t| check(t, now)).collect();
    let failed: Vec<&SinkReport> = reports.iter().filter(|r| !r.ok).collect();

    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let report = Report {
            ok: failed.is_empty(),
            checked_at: rfc3339(now),
            sinks: &reports,
        };
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else if args.verbose {
        // Failures are reported once, as the error on stderr (one line each).
        reports
            .iter()
            .filter(|r| r.ok)
            .try_for_each(|r| writeln!(out, "ok: {}", line(r)))
    } else {
        Ok(())
    };
    written.map_err(|e| CliError::Runtime(format!("cannot write to stdout: {e}")))?;

    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut message = if failed.len() == 1 {
        String::new()
    } else {
        format!(
            "{} of {} sinks fail the probe:",
            failed.len(),
            reports.len()
        )
    };
    for r in &failed {
        if !message.is_empty() {
            message.push_str("\n  ");
        }
        message.push_str(&line(r));
    }
    Err(CliError::Probe(message))
}

fn line(r: &SinkReport) -> String {
    match &r.key {
        Some(key) => format!("key {key}: {}: {}", r.sink, r.message),
        None => format!("{}: {}", r.sink, r.message),
    }
}

fn targets(args: &StatusArgs) -> Result<Vec<Target>, CliError> {
    if !args.files.is_empty() {
        let rule = Rule::MinValid {
            min: args.min_valid.unwrap_or(DEFAULT_FILE_MIN_VALID),
            given: args.min_valid.is_some(),
        };
        return Ok(args
            .files
            .iter()
            .map(|path| Target {
                key: None,
                what: Source::File {
                    path: path.clone(),
                    variable: None,
                },
                rule,
            })
            .collect());
    }
    let (_, config) = crate::config::locate_and_load(args.config.as_deref())?;
    // Keys served only by a proxy hold their key in the daemon's memory: nothing here
    // can read it. A probe that checked nothing must not pass.
    if config.keys.iter().all(|k| k.sinks.is_empty()) {
        return Err(CliError::Usage(
            "nothing to probe: no key has a sink (only [[key.proxy]]); probe the daemon's /readyz instead".to_owned(),
        ));
    }
    let mut targets = Vec::new();
    for key in &config.keys {
        let rule = match args.min_valid {
            Some(min) => Rule::MinValid { min, given: true },
            None => Rule::Policy(key.policy),
        };
        for sink in &key.sinks {
            let what = match sink {
                SinkSpec::File(f) => Source::File {
                    path: f.path.clone(),
                    variable: None,
                },
                SinkSpec::EnvFile(e) => Source::File {
                    path: e.path.clone(),
                    variable: Some(e.variable.clone()),
                },
                SinkSpec::Keyring(k) => Source::Keyring(k.clone()),
            };
            targets.push(Target {
                key: Some(key.name.to_string()),
                what,
                rule,
            });
        }
    }
    Ok(targets)
}

fn check(target: &Target, now: SystemTime) -> SinkReport {
    let (sink, read) = match &target.what {
        Source::File { path, variable } => {
            let sink = match variable {
                Some(v) => format!("env-file {} ({v})", path.display()),
                None => format!("file {}", path.display()),
            };
            (sink, read_file(path, variable.as_deref()))
        }
        Source::Keyring(spec) => {
            let built = crate::sink::build(&SinkSpec::Keyring(spec.clone()));
            let read = match built.read() {
                Ok(Some(key)) => Ok(Zeroizing::new(key.expose().to_owned())),
                Ok(None) => Err(("missing", "no key stored in the keyring".to_owned())),
                Err(e) => Err(("unreadable", crate::error::error_chain(&e).to_string())),
            };
            (built.describe(), read)
        }
    };
    let mut report = SinkReport {
        key: target.key.clone(),
        sink,
        ok: false,
        state: "invalid",
        message: String::new(),
        expires_at: None,
        remaining_seconds: None,
        region: None,
        fingerprint: None,
    };
    let key = match read {
        Ok(key) => key,
        Err((state, message)) => {
            report.state = state;
            report.message = message;
            return report;
        }
    };
    let decoded = match decode(&key) {
        Ok(d) => d,
        Err(e) => {
            report.message = format!("holds no valid key: {e}");
            return report;
        }
    };
    report.expires_at = Some(rfc3339(decoded.expires_at));
    report.remaining_seconds = Some(decoded.remaining(now).as_secs());
    report.region = Some(decoded.region.clone());
    report.fingerprint = Some(Fingerprint::of(key.trim()).to_string());
    let left = crate::clock::duration::format(decoded.remaining(now));
    let verdict = if let Some(why @ Invalidity::SignedInFuture { .. }) = decoded.invalid_at(now) {
        Err(("invalid", why.to_string()))
    } else if decoded.is_expired(now) {
        Err((
            "expired",
            format!(
                "expired at {} ({} ago)",
                rfc3339(decoded.expires_at),
                crate::clock::duration::format(
                    now.duration_since(decoded.expires_at).unwrap_or_default()
                )
            ),
        ))
    } else {
        match target.rule {
            Rule::MinValid { min, given } if decoded.remaining(now) < min => Err((
                "short",
                format!(
                    "only {left} left (expires at {}), less than {}",
                    rfc3339(decoded.expires_at),
                    if given {
                        format!("--min-valid {}", crate::clock::duration::format(min))
                    } else {
                        format!(
                            "{} (the default --min-valid)",
                            crate::clock::duration::format(min)
                        )
                    }
                ),
            )),
            Rule::MinValid { .. } => Ok(()),
            Rule::Policy(policy) => {
                let held = Validity::new(decoded.issued_at, decoded.expires_at);
                match crate::daemon::unready_reason(now, Some(held), &policy) {
                    Some(why) => Err(("short", why)),
                    None => Ok(()),
                }
            }
        }
    };
    match verdict {
        Ok(()) => {
            report.ok = true;
            report.state = "valid";
            report.message = format!(
                "valid for {left} more (expires at {})",
                rfc3339(decoded.expires_at)
            );
        }
        Err((state, message)) => {
            report.state = state;
            report.message = message;
        }
    }
    report
}

/// The key in a file, or the state and reason it cannot be had.
fn read_file(
    path: &Path,
    variable: Option<&str>,
) -> Result<Zeroizing<String>, (&'static str, String)> {
    let unreadable = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ("missing", "no such file".to_owned())
        } else {
            ("unreadable", format!("cannot read it: {e}"))
        }
    };
    let bytes =
        crate::sink::bounded::read_path(path, MAX_SINK_FILE_BYTES).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => ("unreadable", e.to_string()),
            std::io::ErrorKind::InvalidData => ("invalid", format!("holds no valid key: {e}")),
            _ => unreadable(e),
        })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ("invalid", "holds no valid key: not UTF-8 text".to_owned()))?;
    if let Some(var) = variable {
        // An env-file the daemon has not written yet: say which line is missing
        // rather than that some other line is not a key.
        if !crate::key::format::assigns(text.as_bytes(), var) {
            return Err(("missing", format!("no {var}= line in it")));
        }
    }
    extract_key(text, variable)
        .map(Zeroizing::new)
        .map_err(|e| ("invalid", format!("holds no valid key: {e}")))
}
