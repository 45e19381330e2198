//! `bedrock-keyd mint`: print one key to stdout.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, ValueEnum};

use super::{CliError, CredentialFlags, block_on};
use crate::credentials::{CredentialSource, CredentialsError, SdkSource};
use crate::key::MintedKey;
use crate::mint::{Lifetime, mint};

/// Mint one key and print it to stdout.
///
/// Credentials and region come from the AWS SDK's default chains (environment,
/// ~/.aws files, SSO, credential_process, web identity, container endpoint, IMDS).
/// With --role-arn, that role is assumed on top. Signing is offline: no request is
/// sent to Amazon Bedrock (only to STS when a role is assumed).
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

    /// raw: the key and a newline; json: {"key","region","issued_at","expires_at",
    /// "credentials_expires_at"} (the last is null for long-term keys);
    /// env: AWS_BEARER_TOKEN_BEDROCK=<key>.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    format: Format,

    #[command(flatten)]
    no_proxy: super::flags::NoProxyFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Raw,
    Json,
    Env,
}

pub fn run(args: MintArgs) -> Result<ExitCode, CliError> {
    args.no_proxy.refuse("mint")?;
    let spec = args.credentials.source_spec();
    let lifetime = args.lifetime;
    let (credentials, region) = block_on(async {
        let source = SdkSource::new(&spec).await?;
        let credentials = source.credentials(lifetime.get()).await?;
        Ok::<_, CredentialsError>((credentials, source.region().clone()))
    })?
    .inspect_err(|err| {
        // The error itself is printed once by main; this records its class.
        tracing::debug!(retryable = err.is_retryable(), "credentials unavailable");
    })?;
    let minted = mint(&credentials, &region, lifetime, SystemTime::now())?;
    crate::mint::log_minted(&minted);
    let out = zeroize::Zeroizing::new(match args.format {
        Format::Raw => format!("{}\n", minted.key.expose()),
        Format::Env => format!("AWS_BEARER_TOKEN_BEDROCK={}\n", minted.key.expose()),
        Format::Json => format!("{}\n", json(&minted).as_str()),
    });
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Runtime(format!("cannot write the key to stdout: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// The sink's JSON format plus `credentials_expires_at`: when the key is capped by its
/// credentials, this says so without decoding the key.
fn json(minted: &MintedKey) -> zeroize::Zeroizing<String> {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        key: &'a str,
        region: &'a str,
        issued_at: String,
        expires_at: String,
        credentials_expires_at: Option<String>,
    }
    let doc = Doc {
        key: minted.key.expose(),
        region: &minted.meta.region,
        issued_at: crate::time::rfc3339(minted.meta.issued_at),
        expires_at: crate::time::rfc3339(minted.meta.expires_at),
        credentials_expires_at: minted.credentials_expiry.map(crate::time::rfc3339),
    };
    // Serializing strings and a flat struct cannot fail.
    zeroize::Zeroizing::new(serde_json::to_string(&doc).unwrap_or_default())
}
