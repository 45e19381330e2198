//! `bedrock-keyd once`: mint one key, deliver it to every sink given, exit.
//!
//! The first way users (init containers, cron, CI) and the tests drive the sinks end
//! to end. Every sink is attempted even when an earlier one fails, so one broken
//! target does not keep the key from the others; any failure makes the command exit 73
//! after all were tried, with each failure named. (`--config` and `--if-valid-for`
//! come with the daemon.)

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use super::{CliError, CredentialFlags, block_on};
use crate::mint::{Lifetime, mint};
use crate::sink::{
    DEFAULT_ENV_VARIABLE, DEFAULT_KEYRING_ACCOUNT, EnvFileSpec, FileAccess, FileFormat, FileMode,
    FileSpec, KeyringBackend, KeyringSpec, SinkSpec, UserRef, WriteOutcome,
};

/// Mint one key, write it to every given sink, and exit.
///
/// Files are replaced atomically (temp file, fsync, rename), created with exactly
/// --mode whatever the umask, and left untouched when they already hold the key.
/// Every sink is attempted; if any cannot be written the command exits 73.
///
/// Example: bedrock-keyd once --region us-east-1 --file /run/app/bedrock.key
#[derive(Debug, Args)]
pub struct OnceArgs {
    #[command(flatten)]
    credentials: CredentialFlags,

    /// Requested lifetime, 1s to 12h (e.g. 90s, 30m, 12h). The key expires earlier if
    /// the signing credentials do.
    #[arg(long, value_name = "DURATION", default_value = "12h")]
    lifetime: Lifetime,

    /// Write the key to this file (repeatable). Relative paths are taken from the
    /// current directory.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,

    /// Format of every --file: raw (the key and a newline) or json
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
    #[arg(long, value_name = "USER")]
    owner: Option<UserRef>,

    /// Group of every file and env-file: a group name or id.
    #[arg(long, value_name = "GROUP")]
    group: Option<UserRef>,

    /// Write through a symlink at a target path instead of refusing it.
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

impl OnceArgs {
    /// The sinks these flags name, with paths made absolute.
    fn sink_specs(&self) -> Result<Vec<SinkSpec>, CliError> {
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

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path)
        .map_err(|e| CliError::Usage(format!("cannot make {} absolute: {e}", path.display())))
}

pub fn run(args: OnceArgs) -> Result<ExitCode, CliError> {
    // Usage errors first: nothing is minted for a command line that cannot work.
    let specs = args.sink_specs()?;
    let resolved = block_on(crate::credentials::resolve(&args.credentials.source_spec()))??;
    let minted = mint(
        &resolved.credentials,
        &resolved.region,
        args.lifetime,
        SystemTime::now(),
    )?;
    tracing::info!(
        region = %minted.meta.region,
        expires_at = %crate::time::rfc3339(minted.meta.expires_at),
        fingerprint = %minted.key.fingerprint(),
        "key minted"
    );
    if minted.meta.lifetime() < minted.requested_lifetime {
        tracing::warn!(
            requested = %crate::duration::format(minted.requested_lifetime),
            effective = %crate::duration::format(minted.meta.lifetime()),
            "the signing credentials expire first; the key lives only as long as they do"
        );
    }

    let mut failures = Vec::new();
    for spec in &specs {
        let sink = crate::sink::build(spec);
        match sink.write(&minted.key, &minted.meta) {
            Ok(WriteOutcome::Written) => {
                tracing::info!(sink = %sink.describe(), fingerprint = %minted.key.fingerprint(), "sink written")
            }
            Ok(WriteOutcome::Unchanged) => {
                tracing::info!(sink = %sink.describe(), fingerprint = %minted.key.fingerprint(), "sink unchanged: it already holds this key")
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Sinks(super::SinkFailures {
            failures,
            total: specs.len(),
        }))
    }
}
