//! Where signing credentials and the region come from: all AWS SDK setup lives here.
//!
//! Resolution follows `aws-config`'s default chains (environment, shared
//! config/credentials files, SSO, `credential_process`, web identity, container
//! endpoint, IMDS), narrowed by an explicit profile and region when given. Every
//! lookup is bounded in time so a laptop or container without IMDS does not stall.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError as SdkCredentialsError;

use crate::mint::{Region, RegionError};

/// How long one credential lookup may take before it is reported as timed out.
/// Long enough for an STS round trip on a slow link, short enough that `mint` on a
/// machine without IMDS answers promptly.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the user asked for; `None` fields fall back to the SDK's default chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSpec {
    /// Shared-config profile (`--profile`, `profile = …`).
    pub profile: Option<String>,
    /// Region override; otherwise env, then the profile's region.
    pub region: Option<Region>,
    /// A role assumed on top of whatever the source yields.
    pub role_arn: Option<String>,
    /// With `role_arn`: the external id the role's trust policy demands.
    pub external_id: Option<String>,
    /// With `role_arn`: the session name (default: `bedrock-keyd`).
    pub role_session_name: Option<String>,
}

/// Why credentials or a region could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no AWS region: pass --region, set AWS_REGION, or set `region` in the AWS profile{}",
        profile_hint(.profile)
    )]
    NoRegion { profile: Option<String> },
    #[error("the region configured for the AWS SDK is invalid: {0}")]
    BadRegion(#[from] RegionError),
    #[error(
        "no AWS credentials found (tried: environment variables, shared config and credentials files{}, web identity, container endpoint, instance metadata): {detail}",
        profile_hint(.profile)
    )]
    NotFound {
        profile: Option<String>,
        detail: String,
    },
    #[error("loading AWS credentials failed: {detail}")]
    Provider { detail: String, retryable: bool },
    #[error("loading AWS credentials timed out after {0:?}")]
    Timeout(Duration),
}

impl CredentialsError {
    /// Whether trying again later can help (the daemon backs off and retries these).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NoRegion { .. } | Self::BadRegion(_) | Self::NotFound { .. } => false,
            Self::Provider { retryable, .. } => *retryable,
            Self::Timeout(_) => true,
        }
    }
}

fn profile_hint(profile: &Option<String>) -> String {
    match profile {
        Some(p) => format!(" (profile {p:?})"),
        None => String::new(),
    }
}

/// Credentials and the region to sign for.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub credentials: Credentials,
    pub region: Region,
}

/// Resolves the region and fetches credentials once.
pub async fn resolve(spec: &SourceSpec) -> Result<Resolved, CredentialsError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &spec.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &spec.region {
        loader = loader.region(aws_config::Region::new(region.as_str().to_owned()));
    }
    let config = tokio::time::timeout(DEFAULT_LOOKUP_TIMEOUT, loader.load())
        .await
        .map_err(|_| CredentialsError::Timeout(DEFAULT_LOOKUP_TIMEOUT))?;
    let region = match config.region() {
        Some(r) => Region::new(r.as_ref())?,
        None => {
            return Err(CredentialsError::NoRegion {
                profile: spec.profile.clone(),
            });
        }
    };
    let provider = config
        .credentials_provider()
        .ok_or_else(|| CredentialsError::NotFound {
            profile: spec.profile.clone(),
            detail: "no credentials provider configured".to_owned(),
        })?;
    let credentials = tokio::time::timeout(DEFAULT_LOOKUP_TIMEOUT, provider.provide_credentials())
        .await
        .map_err(|_| CredentialsError::Timeout(DEFAULT_LOOKUP_TIMEOUT))?
        .map_err(|e| classify(e, spec))?;
    Ok(Resolved {
        credentials,
        region,
    })
}

fn classify(err: SdkCredentialsError, spec: &SourceSpec) -> CredentialsError {
    let detail = error_chain(&err);
    match err {
        SdkCredentialsError::CredentialsNotLoaded(_) => CredentialsError::NotFound {
            profile: spec.profile.clone(),
            detail,
        },
        SdkCredentialsError::ProviderTimedOut(_) | SdkCredentialsError::ProviderError(_) => {
            CredentialsError::Provider {
                detail,
                retryable: true,
            }
        }
        SdkCredentialsError::InvalidConfiguration(_) => CredentialsError::Provider {
            detail,
            retryable: false,
        },
        _ => CredentialsError::Provider {
            detail,
            retryable: true,
        },
    }
}

/// The Display of an error and its sources, joined with ": ".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The seam between the scheduler and AWS: something that yields signing credentials
/// for one region. The real one wraps the SDK chains; tests use fakes with fake clocks.
pub trait CredentialSource: Send + Sync + 'static {
    /// The region keys from this source are scoped to.
    fn region(&self) -> &Region;

    /// Credentials to sign with now. `want_valid_for` is the key lifetime the caller
    /// hopes for: a source whose cached credentials expire much sooner and that can
    /// renew them should fetch fresh ones first.
    fn credentials(
        &self,
        want_valid_for: Duration,
    ) -> impl std::future::Future<Output = Result<Credentials, CredentialsError>> + Send;
}
