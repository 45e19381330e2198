//! `bedrock-keyd mint`: print one key to stdout.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, ValueEnum};

use super::{CliError, CredentialFlags, block_on};
use crate::mint::{Lifetime, mint};

/// Mint one key and print it to stdout.
///
/// Credentials and region come from the AWS SDK's default chains (environment,
/// ~/.aws files, SSO, credential_process, web identity, container endpoint, IMDS).
/// Signing is offline: no request is sent to Amazon Bedrock.
///
/// Example: eval "$(bedrock-keyd mint --format env | sed 's/^/export /')"
#[derive(Debug, Args)]
pub struct MintArgs {
    #[command(flatten)]
    credentials: CredentialFlags,

    /// Requested lifetime, 1s to 12h (e.g. 90s, 30m, 12h). The key expires earlier if
    /// the signing credentials do.
    #[arg(long, value_name = "DURATION", default_value = "12h")]
    lifetime: Lifetime,

    /// raw: the key and a newline; json: {"key","region","issued_at","expires_at"};
    /// env: AWS_BEARER_TOKEN_BEDROCK=<key>.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Raw,
    Json,
    Env,
}

pub fn run(args: MintArgs) -> Result<ExitCode, CliError> {
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
    let out = zeroize::Zeroizing::new(match args.format {
        Format::Raw => format!("{}\n", minted.key.expose()),
        Format::Env => format!("AWS_BEARER_TOKEN_BEDROCK={}\n", minted.key.expose()),
        Format::Json => format!(
            "{}\n",
            crate::keyfile::json(&minted.key, &minted.meta).as_str()
        ),
    });
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Runtime(format!("cannot write the key to stdout: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
