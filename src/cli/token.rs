//! `bedrock-keyd token`: print one key valid for at least `--min-valid`, for tools
//! that run a command to get their key. Glue only: which key, then
//! [`crate::daemon::token`] serves it, then the chosen format on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use zeroize::Zeroizing;

use super::flags::{KeyFlags, PolicyFlags};
use super::{CliError, block_on};
use crate::config::{ConfigError, KeyConfig};
use crate::daemon::StatusBoard;
use crate::daemon::token::{self, TokenError};
use crate::key::{ApiKey, KeyMeta};
use crate::notify::Dependents;
use crate::sink::{FileAccess, FileFormat, FileSpec, Sink, SinkSpec};

/// Print a key valid for at least --min-valid: from the sinks if one holds it, else minted.
///
/// For tools that run a command to get their key: the credential helpers of desktop AI
/// clients, apiKeyHelper-style settings, AWS_BEARER_TOKEN_BEDROCK=$(bedrock-keyd token).
///
/// The key's sinks (from the config, or --file/--env-file/--keyring) are read first: a
/// key valid long enough is printed with no credentials loaded and nothing written.
/// Otherwise a key is minted, written to every sink (dependents are notified, as by
/// `once`) and printed; callers started together wait for one mint instead of each
/// minting. With key flags that name no sink, or with no flags and no config file, the
/// key is kept in a per-user cache ($XDG_RUNTIME_DIR/bedrock-keyd, else
/// ~/.cache/bedrock-keyd: files 0600 in a 0700 directory), one file per profile, role,
/// region and lifetime.
///
/// Exit codes: 0 a key was printed, 1 a dependent could not be notified (the key is
/// printed), 2 usage, 69 credentials unavailable or expiring before --min-valid, 73 a
/// sink could not be written (or another caller's mint did not finish in time), 78 the
/// config is invalid.
///
/// Example: AWS_BEARER_TOKEN_BEDROCK=$(bedrock-keyd token --profile work --region us-east-1)
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    keys: KeyFlags,

    /// With a config of several keys: the one to print.
    #[arg(long = "key", value_name = "NAME")]
    key: Option<String>,

    /// The printed key stays valid at least this long (e.g. 5m, 1h); a held key with
    /// less left is replaced.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    min_valid: Duration,

    /// raw: the key and a newline; env: AWS_BEARER_TOKEN_BEDROCK=<key>; json:
    /// {"key","region","issued_at","expires_at"}; helper: {"token","expires_at",
    /// "headers"}, the shape desktop AI clients' credential helpers read.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    format: Format,

    #[command(flatten)]
    no_proxy: super::flags::NoProxyFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Raw,
    Env,
    Json,
    Helper,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: TokenArgs) -> Result<ExitCode, CliError> {
    args.no_proxy.refuse("token")?;
    let (key, cache) = which_key(&args)?;
    if args.min_valid > key.lifetime.get() {
        return Err(CliError::Usage(format!(
            "--min-valid {} is longer than the key's lifetime {}: no key could satisfy it",
            crate::duration::format(args.min_valid),
            key.lifetime
        )));
    }
    let sinks: Vec<Arc<dyn Sink>> = key
        .sinks
        .iter()
        .map(|spec| Arc::from(crate::sink::build(spec)))
        .collect();

    // A key found in a cache directory that others may write could be anyone's (a
    // key signed for another account would carry the caller's prompts there): check
    // the directory, or make it, before reading from it.
    if let Some(dir) = cache.as_deref().and_then(std::path::Path::parent) {
        token::ensure_private_dir(dir).map_err(from_token)?;
    }

    // The fast path: no lock, no runtime, no credentials.
    if let Some((held, meta)) =
        token::held(&sinks, &key, std::time::SystemTime::now(), args.min_valid)
    {
        return print(args.format, &held, &meta).map(|()| ExitCode::SUCCESS);
    }

    let cache_dir = || {
        let dir = cache
            .as_ref()
            .and_then(|file| file.parent().map(PathBuf::from))
            .or_else(|| token::cache_dir(|v| std::env::var_os(v)))
            .ok_or_else(|| TokenError::Cache {
                path: PathBuf::from("~/.cache/bedrock-keyd"),
                why: "neither XDG_RUNTIME_DIR, XDG_CACHE_HOME nor HOME is set".to_owned(),
            })?;
        token::ensure_private_dir(&dir)?;
        Ok(dir)
    };
    let targets = token::lock_targets(&key, cache_dir).map_err(from_token)?;
    let locks = token::lock(&targets).map_err(from_token)?;
    // Another caller may have minted while we waited for the lock.
    if let Some((held, meta)) =
        token::held(&sinks, &key, std::time::SystemTime::now(), args.min_valid)
    {
        return print(args.format, &held, &meta).map(|()| ExitCode::SUCCESS);
    }

    let status = Arc::new(StatusBoard::new());
    status.register(key.name.as_str(), key.policy);
    let dependents = Dependents::new(status);
    block_on(async {
        let minted = token::mint_for(&key, &sinks, args.min_valid)
            .await
            .map_err(from_token)?;
        // Every sink holds the key: the callers waiting for it may have it while the
        // dependents are told (a notify command may take seconds).
        drop(locks);
        // Printed before dependents are told: the caller is waiting for the key, and
        // a dependent that cannot be told does not make the key any less valid.
        print(args.format, &minted.key, &minted.meta)?;
        let tally = dependents.notify_now(&key, &minted).await;
        if tally.err > 0 {
            return Err(CliError::Runtime(format!(
                "the key was delivered, but {} of {} dependents could not be notified (see the log)",
                tally.err,
                key.notify.len()
            )));
        }
        Ok(ExitCode::SUCCESS)
    })?
}

/// The key to serve, and the cache file standing in for its sink when it has none.
fn which_key(args: &TokenArgs) -> Result<(KeyConfig, Option<PathBuf>), CliError> {
    let flags = &args.keys;
    // `token` keeps no schedule, so it has no refresh flags (--refresh-at, --jitter,
    // --min-remaining are unknown arguments, as for `once` and `mint`): the defaults
    // stand in, and the default min_remaining fits a short lifetime by itself.
    let no_policy = PolicyFlags::default();
    let key_flags = [
        flags.credentials.region.is_some(),
        flags.credentials.profile.is_some(),
        flags.credentials.role_arn.is_some(),
        flags.lifetime.is_some(),
        flags.name.is_some(),
        flags.pid_file.is_some(),
    ]
    .contains(&true);
    if (flags.sinks.any() || key_flags)
        && let Some(name) = &args.key
    {
        return Err(CliError::Usage(format!(
            "--key {name} picks a key of a config file; key flags describe a single key without one"
        )));
    }
    if flags.sinks.any() {
        let (_, mut config) = flags.resolve(&no_policy)?;
        return Ok((config.keys.remove(0), None));
    }
    if key_flags {
        if let Some(path) = &flags.config {
            return Err(CliError::Usage(format!(
                "--config {} and key flags (--region, --profile, --role-arn, --lifetime, …) exclude each other: with a config file, set them there",
                path.display()
            )));
        }
        return cached(flags);
    }
    match crate::config::locate_and_load(flags.config.as_deref()) {
        Ok((location, config)) => {
            pick(config.keys, args.key.as_deref(), &location.path).map(|k| (k, None))
        }
        // No config anywhere and none asked for: the SDK's default credentials, cached.
        Err(ConfigError::NotFound { .. }) if args.key.is_none() => cached(flags),
        Err(e) => Err(e.into()),
    }
}

/// The config's only key, or the one `--key` names.
fn pick(
    mut keys: Vec<KeyConfig>,
    name: Option<&str>,
    path: &std::path::Path,
) -> Result<KeyConfig, CliError> {
    let names = || {
        keys.iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => match keys.iter().position(|k| k.name.as_str() == name) {
            Some(i) => Ok(keys.swap_remove(i)),
            None => Err(CliError::Usage(format!(
                "{} has no key named {name:?}; its keys: {}",
                path.display(),
                names()
            ))),
        },
        None if keys.len() == 1 => Ok(keys.remove(0)),
        None => Err(CliError::Usage(format!(
            "{} has {} keys: pick one with --key NAME ({})",
            path.display(),
            keys.len(),
            names()
        ))),
    }
}

/// The key the flags describe, kept in the per-user cache.
fn cached(flags: &KeyFlags) -> Result<(KeyConfig, Option<PathBuf>), CliError> {
    // No refresh flags: the default policy, whose min_remaining fits any lifetime.
    let mut key = flags.single_key(&PolicyFlags::default(), false)?;
    let dir = token::cache_dir(|v| std::env::var_os(v)).ok_or_else(|| {
        CliError::Usage(
            "no place for the key cache: neither XDG_RUNTIME_DIR, XDG_CACHE_HOME nor HOME is set; name a sink (--file)".to_owned(),
        )
    })?;
    let identity = token::CacheIdentity::of(&key, |v| std::env::var_os(v));
    let path = dir.join(token::cache_file_name(&identity));
    key.sinks = vec![SinkSpec::File(FileSpec {
        path: path.clone(),
        format: FileFormat::Raw,
        access: FileAccess::default(),
    })];
    Ok((key, Some(path)))
}

/// Credential and mint errors become the same errors `once` reports (same exit codes).
fn from_token(err: TokenError) -> CliError {
    match err {
        TokenError::Credentials(e) => CliError::Credentials(e),
        TokenError::Mint(e) => CliError::Mint(e),
        TokenError::Sinks { failures, total } => {
            CliError::Sinks(super::SinkFailures { failures, total })
        }
        other => CliError::Token(other),
    }
}

/// Writes the key to stdout in `format`, with a final newline (command substitution
/// strips it).
fn print(format: Format, key: &ApiKey, meta: &KeyMeta) -> Result<(), CliError> {
    let out = Zeroizing::new(match format {
        Format::Raw => format!("{}\n", key.expose()),
        Format::Env => format!("AWS_BEARER_TOKEN_BEDROCK={}\n", key.expose()),
        Format::Json => format!("{}\n", crate::keyfile::json(key, meta).as_str()),
        Format::Helper => {
            #[derive(serde::Serialize)]
            struct Helper<'a> {
                token: &'a str,
                expires_at: String,
                headers: serde_json::Map<String, serde_json::Value>,
            }
            let doc = Helper {
                token: key.expose(),
                expires_at: crate::time::rfc3339(meta.expires_at),
                headers: serde_json::Map::new(),
            };
            // Serializing strings and an empty map cannot fail.
            format!("{}\n", serde_json::to_string(&doc).unwrap_or_default())
        }
    });
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Runtime(format!("cannot write the key to stdout: {e}")))
}
