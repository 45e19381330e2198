//! The links of the credential chain and everything that knows the SDK's types: which
//! providers, in which order, with which bounds; the region lookup; profile checks; and
//! the mapping of the SDK's errors onto [`CredentialsError`].
//!
//! The order is `aws-config`'s default chain; each link is built here so that each can
//! be bounded and named on its own (see the parent module).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::imds;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::meta::region::ProvideRegion;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::provider_config::ProviderConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError as SdkCredentialsError;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::imds::imds_credentials;
use super::{
    CONTAINER_CONNECT_TIMEOUT, CONTAINER_READ_TIMEOUT, CONTAINER_TIMEOUT, CUSTOM_TIMEOUT,
    CredentialsError, IMDS_ATTEMPTS, IMDS_CONNECT_TIMEOUT, IMDS_READ_TIMEOUT, IMDS_TIMEOUT,
    LOCAL_TIMEOUT, PROFILE_TIMEOUT, STS_ATTEMPT_TIMEOUT, STS_CONNECT_TIMEOUT, SourceSpec,
    WEB_IDENTITY_TIMEOUT, sdk_error_text,
};
use crate::mint::Region;

/// Settings shared by every SDK provider in the chain: the region (for STS calls in
/// profile chains and web identity) and bounded STS timeouts.
pub(super) fn provider_config(region: Option<&Region>) -> ProviderConfig {
    ProviderConfig::without_region()
        .with_http_client(super::http::shared())
        .with_behavior_version(Some(BehaviorVersion::latest()))
        .with_timeout_config(sts_timeouts())
        .with_region(region.map(|r| aws_config::Region::new(r.as_str().to_owned())))
}

/// An IMDS client that gives up quickly where there is no IMDS.
pub(super) fn imds_client(provider_config: &ProviderConfig) -> imds::Client {
    imds::Client::builder()
        .configure(provider_config)
        .connect_timeout(IMDS_CONNECT_TIMEOUT)
        .read_timeout(IMDS_READ_TIMEOUT)
        .max_attempts(IMDS_ATTEMPTS)
        .build()
}

/// Per-call bounds for the SDK's own STS clients, inside the per-source bounds.
pub(super) fn sts_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(STS_CONNECT_TIMEOUT)
        .operation_attempt_timeout(STS_ATTEMPT_TIMEOUT)
        .build()
}

/// The region: `--region`, then `AWS_REGION` / `AWS_DEFAULT_REGION`, then the
/// profile's `region`, then instance metadata; each lookup bounded. The SDK settings
/// for the last two are built only when they are reached.
pub(super) async fn resolve_region(spec: &SourceSpec) -> Result<Region, CredentialsError> {
    if let Some(region) = &spec.region {
        return Ok(region.clone());
    }
    let region = match EnvironmentVariableRegionProvider::new().region().await {
        Some(r) => Some(r),
        None => {
            let provider_config = provider_config(None);
            match profile_region(spec, &provider_config).await? {
                Some(r) => Some(r),
                None => imds_region(&provider_config).await?,
            }
        }
    };
    match region {
        Some(r) => Ok(Region::new(r.as_ref())?),
        None => Err(no_region(spec)),
    }
}

fn no_region(spec: &SourceSpec) -> CredentialsError {
    CredentialsError::NoRegion {
        profile: spec.profile.clone(),
        from_config_file: spec.from_config_file,
    }
}

/// [`resolve_region`] without instance metadata, for `check`: the error the run would
/// meet, when it can be known from here (the profile and the region can come from
/// nowhere, and instance metadata is disabled). Reads the environment and the AWS
/// config files; sends nothing.
pub(super) async fn region_offline(spec: &SourceSpec) -> Result<(), CredentialsError> {
    if spec.region.is_some()
        || EnvironmentVariableRegionProvider::new()
            .region()
            .await
            .is_some()
    {
        return Ok(());
    }
    let provider_config = provider_config(None);
    if profile_region(spec, &provider_config).await?.is_some() || !imds_disabled() {
        return Ok(());
    }
    // The run checks the profile before the region: report what it would.
    check_profiles(spec).await?;
    Err(no_region(spec))
}

/// `AWS_EC2_METADATA_DISABLED=true`, as the SDK reads it: no instance metadata at all.
fn imds_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The profile a source reads must exist: `--profile`/`profile =`, else a non-empty
/// `AWS_PROFILE` (other than "default", which the SDK falls back to anyway). A typo in
/// the variable is then reported as such, as for the flag, instead of as a missing
/// region or an SDK message about a "source profile".
pub(super) async fn check_profiles(spec: &SourceSpec) -> Result<(), CredentialsError> {
    if let Some(profile) = &spec.profile {
        return check_profile_exists(profile).await;
    }
    match std::env::var("AWS_PROFILE") {
        Ok(profile) if !profile.is_empty() && profile != "default" => {
            check_profile_exists(&profile).await
        }
        _ => Ok(()),
    }
}

/// The profile's `region`, bounded by [`LOCAL_TIMEOUT`].
async fn profile_region(
    spec: &SourceSpec,
    provider_config: &ProviderConfig,
) -> Result<Option<aws_config::Region>, CredentialsError> {
    let mut profile = ProfileFileRegionProvider::builder().configure(provider_config);
    if let Some(name) = &spec.profile {
        profile = profile.profile_name(name);
    }
    tokio::time::timeout(LOCAL_TIMEOUT, profile.build().region())
        .await
        .map_err(|_| CredentialsError::Timeout {
            origin: "region lookup in the AWS config file".to_owned(),
            after: LOCAL_TIMEOUT,
        })
}

/// The instance's region from EC2 instance metadata, bounded by [`IMDS_TIMEOUT`].
async fn imds_region(
    provider_config: &ProviderConfig,
) -> Result<Option<aws_config::Region>, CredentialsError> {
    let imds = ImdsRegionProvider::builder()
        .configure(provider_config)
        .imds_client(imds_client(provider_config))
        .build();
    tokio::time::timeout(IMDS_TIMEOUT, imds.region())
        .await
        .map_err(|_| CredentialsError::Timeout {
            origin: "region lookup in EC2 instance metadata (pass --region)".to_owned(),
            after: IMDS_TIMEOUT,
        })
}

/// The config and credentials file paths, as the SDK finds them, for error messages.
pub(super) fn profile_files_text() -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "~".to_owned());
    let config = std::env::var("AWS_CONFIG_FILE").unwrap_or_else(|_| format!("{home}/.aws/config"));
    let credentials = std::env::var("AWS_SHARED_CREDENTIALS_FILE")
        .unwrap_or_else(|_| format!("{home}/.aws/credentials"));
    format!("{config}, {credentials}")
}

/// An explicit profile must exist in the config or credentials file.
pub(super) async fn check_profile_exists(profile: &str) -> Result<(), CredentialsError> {
    let fs = aws_types::os_shim_internal::Fs::real();
    let env = aws_types::os_shim_internal::Env::real();
    let files = aws_runtime::env_config::file::EnvConfigFiles::default();
    let loaded = tokio::time::timeout(
        LOCAL_TIMEOUT,
        aws_config::profile::load(&fs, &env, &files, None),
    )
    .await
    .map_err(|_| CredentialsError::Timeout {
        origin: format!("reading {}", profile_files_text()),
        after: LOCAL_TIMEOUT,
    })?;
    match loaded {
        Ok(set) if set.get_profile(profile).is_some() => {
            if let Some(p) = set.get_profile(profile)
                && p.get("role_arn").is_some()
                && let Some(seconds) = p.get("duration_seconds")
            {
                tracing::warn!(
                    profile,
                    duration_seconds = seconds,
                    "the AWS SDK for Rust ignores duration_seconds in a profile: this role \
                     session lasts STS's default 1h (use --role-arn with \
                     --role-session-duration for longer sessions)"
                );
            }
            Ok(())
        }
        Ok(_) => Err(CredentialsError::ProfileNotFound {
            profile: profile.to_owned(),
            files: profile_files_text(),
        }),
        Err(err) => Err(CredentialsError::InvalidProfile {
            profile: profile.to_owned(),
            detail: sdk_error_text(&err),
        }),
    }
}

/// Why a source had nothing, without the SDK's generic "the credential provider was
/// not enabled" preamble.
pub(super) fn not_loaded_reason(err: &SdkCredentialsError) -> String {
    match std::error::Error::source(err) {
        Some(cause) => sdk_error_text(cause),
        None => "nothing configured".to_owned(),
    }
}

/// An explicitly chosen profile that yields nothing is an error about that profile:
/// a `source_profile` naming a missing profile, or a profile with no credentials in it.
pub(super) fn explicit_profile_not_loaded(profile: &str, reason: String) -> CredentialsError {
    // The SDK says "profile `NAME` was not defined: …" for a missing source_profile.
    if let Some(missing) = reason
        .split_once("profile `")
        .and_then(|(_, rest)| rest.split_once("` was not defined"))
        .map(|(name, _)| name.to_owned())
    {
        if missing != profile {
            return CredentialsError::InvalidProfile {
                profile: profile.to_owned(),
                detail: format!(
                    "its source_profile {missing:?} is not found in {}",
                    profile_files_text()
                ),
            };
        }
        return CredentialsError::ProfileNotFound {
            profile: missing,
            files: profile_files_text(),
        };
    }
    CredentialsError::InvalidProfile {
        profile: profile.to_owned(),
        detail: reason,
    }
}

/// An SDK provider built on first use. The chain is walked in order and stops at the
/// first link that has credentials, often the first one (environment variables), so
/// the links after it are usually never asked. Building all of their SDK providers up
/// front (STS clients, an IMDS client, their runtime plugins) cost a `once` run more
/// CPU time and page faults than the signing itself (BENCHMARKS.md, "Side by side").
pub(super) struct Lazy<T>(LazyLock<T, Box<dyn FnOnce() -> T + Send>>);

impl<T> Lazy<T> {
    fn new(build: impl FnOnce() -> T + Send + 'static) -> Self {
        Self(LazyLock::new(Box::new(build)))
    }
}

impl<T> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One source in the chain, with its name and time bound. Built once per source,
/// a handful per key: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Link {
    Environment(EnvironmentVariableCredentialsProvider),
    Profile {
        name: String,
        explicit: bool,
        provider: Lazy<ProfileFileCredentialsProvider>,
    },
    WebIdentity(Lazy<WebIdentityTokenCredentialsProvider>),
    Container(Lazy<EcsCredentialsProvider>),
    Imds(Lazy<imds::Client>),
    /// A provider handed in by [`SdkSource::from_provider`].
    Custom(aws_credential_types::provider::SharedCredentialsProvider),
}

/// The chain for `spec` in `region`. Nothing is built for a link before it is asked;
/// the links that are share one [`ProviderConfig`], so the config files are parsed
/// once per chain.
pub(super) fn build_links(spec: &SourceSpec, region: &Region) -> Vec<Link> {
    let region = region.clone();
    let config = Arc::new(Lazy::new(move || provider_config(Some(&region))));
    let profile = |name: Option<&String>| {
        let config = config.clone();
        let chosen = name.cloned();
        Link::Profile {
            name: name
                .cloned()
                .or_else(|| std::env::var("AWS_PROFILE").ok())
                .unwrap_or_else(|| "default".to_owned()),
            explicit: name.is_some(),
            provider: Lazy::new(move || {
                let mut builder = ProfileFileCredentialsProvider::builder().configure(&config);
                if let Some(name) = chosen {
                    builder = builder.profile_name(name);
                }
                builder.build()
            }),
        }
    };
    if let Some(name) = &spec.profile {
        return vec![profile(Some(name))];
    }
    let profile = profile(None);
    let (web, ecs, imds) = (config.clone(), config.clone(), config);
    vec![
        Link::Environment(EnvironmentVariableCredentialsProvider::new()),
        profile,
        Link::WebIdentity(Lazy::new(move || {
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&web)
                .build()
        })),
        Link::Container(Lazy::new(move || {
            EcsCredentialsProvider::builder()
                .configure(&ecs)
                .connect_timeout(CONTAINER_CONNECT_TIMEOUT)
                .read_timeout(CONTAINER_READ_TIMEOUT)
                .build()
        })),
        Link::Imds(Lazy::new(move || imds_client(&imds))),
    ]
}

impl Link {
    pub(super) fn origin(&self) -> String {
        match self {
            Self::Environment(_) => "environment variables".to_owned(),
            Self::Profile { name, .. } => format!("profile {name:?}"),
            Self::WebIdentity(_) => match std::env::var("AWS_WEB_IDENTITY_TOKEN_FILE") {
                Ok(file) => format!("web identity token ({file})"),
                Err(_) => "web identity token".to_owned(),
            },
            Self::Container(_) => {
                let uri = std::env::var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                    .or_else(|_| {
                        std::env::var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                            .map(|rel| format!("http://169.254.170.2{rel}"))
                    })
                    .ok();
                match uri {
                    Some(uri) => format!("container credentials endpoint ({uri})"),
                    None => "container credentials endpoint".to_owned(),
                }
            }
            Self::Imds(_) => "EC2 instance metadata".to_owned(),
            Self::Custom(_) => "custom credentials provider".to_owned(),
        }
    }

    /// Rewords the SDK's terse "nothing here" reasons in terms of what to set.
    pub(super) fn explain(&self, reason: String) -> String {
        match (self, reason.as_str()) {
            (Self::Environment(_), "environment variable not set") => {
                "AWS_ACCESS_KEY_ID is not set".to_owned()
            }
            (Self::Profile { .. }, "nothing configured" | "No profiles were defined") => {
                format!("no credentials in {}", profile_files_text())
            }
            (Self::Container(_), "ECS provider not configured") => {
                "AWS_CONTAINER_CREDENTIALS_FULL_URI and _RELATIVE_URI are not set".to_owned()
            }
            _ => reason,
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        match self {
            Self::Environment(_) => LOCAL_TIMEOUT,
            Self::Profile { .. } => PROFILE_TIMEOUT,
            Self::WebIdentity(_) => WEB_IDENTITY_TIMEOUT,
            Self::Container(_) => CONTAINER_TIMEOUT,
            Self::Imds(_) => IMDS_TIMEOUT,
            Self::Custom(_) => CUSTOM_TIMEOUT,
        }
    }

    pub(super) async fn fetch(&self) -> Result<Credentials, SdkCredentialsError> {
        match self {
            Self::Environment(p) => p.provide_credentials().await.map(with_env_expiration),
            Self::Profile { provider, .. } => provider.provide_credentials().await,
            Self::WebIdentity(p) => p.provide_credentials().await,
            Self::Container(p) => p.provide_credentials().await,
            Self::Imds(client) => imds_credentials(client).await,
            Self::Custom(p) => p.provide_credentials().await,
        }
    }
}

/// The SDK for Rust ignores `AWS_CREDENTIAL_EXPIRATION`, which `aws configure
/// export-credentials`, aws-vault and others set beside temporary keys (botocore reads
/// it). Without it, a key signed with a 1-hour session would claim 12 hours.
fn with_env_expiration(credentials: Credentials) -> Credentials {
    let Ok(text) = std::env::var("AWS_CREDENTIAL_EXPIRATION") else {
        return credentials;
    };
    match crate::time::parse_rfc3339(text.trim()) {
        Some(expiry) => Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            credentials.session_token().map(str::to_owned),
            Some(expiry),
            "Environment",
        ),
        None => {
            tracing::warn!(
                value = %text,
                "AWS_CREDENTIAL_EXPIRATION is not an RFC 3339 timestamp; ignoring it"
            );
            credentials
        }
    }
}

/// Maps an SDK error from `link` onto our classification.
pub(super) fn classify(link: &Link, err: SdkCredentialsError) -> CredentialsError {
    let origin = link.origin();
    let role_hint = match link {
        Link::WebIdentity(_) => std::env::var("AWS_ROLE_ARN").ok(),
        _ => None,
    };
    if let Some(classified) = classify_sts(&origin, role_hint.as_deref(), &err) {
        return classified;
    }
    let detail = sdk_error_text(&err);
    match (&err, link) {
        (SdkCredentialsError::ProviderTimedOut(_), _) => CredentialsError::Timeout {
            origin,
            after: link.timeout(),
        },
        (SdkCredentialsError::InvalidConfiguration(_), Link::Profile { name, .. }) => {
            CredentialsError::InvalidProfile {
                profile: name.clone(),
                detail,
            }
        }
        (SdkCredentialsError::InvalidConfiguration(_), Link::Container(_)) => {
            CredentialsError::Misconfigured {
                origin,
                detail: format!("{detail}{}", token_file_hint()),
            }
        }
        (SdkCredentialsError::InvalidConfiguration(_), _) => {
            CredentialsError::Misconfigured { origin, detail }
        }
        (_, Link::Container(_) | Link::Imds(_)) => CredentialsError::Endpoint { origin, detail },
        _ => CredentialsError::Provider {
            origin,
            detail,
            retryable: true,
        },
    }
}

/// STS refusals, recognised by their error code wherever they sit in the chain.
pub(super) fn classify_sts(
    origin: &str,
    role: Option<&str>,
    err: &(dyn std::error::Error + 'static),
) -> Option<CredentialsError> {
    let code = sts_error_code(err)?;
    let detail = sdk_error_text(err);
    let role = role.map_or_else(|| format!("(via {origin})"), str::to_owned);
    Some(match code.as_str() {
        // The caller may not assume the role, or STS does not accept the base keys.
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException" => CredentialsError::AccessDenied { role, detail },
        "MalformedPolicyDocument" | "RegionDisabledException" | "ValidationError" => {
            CredentialsError::Misconfigured {
                origin: origin.to_owned(),
                detail,
            }
        }
        // Throttling, an expired web identity token (the kubelet rewrites it), an
        // IdP hiccup: later may work.
        _ => CredentialsError::Provider {
            origin: origin.to_owned(),
            detail,
            retryable: true,
        },
    })
}

fn sts_error_code(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(SdkError::ServiceError(ctx)) =
            e.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>()
        {
            return ctx.err().code().map(str::to_owned);
        }
        if let Some(SdkError::ServiceError(ctx)) =
            e.downcast_ref::<SdkError<AssumeRoleWithWebIdentityError, HttpResponse>>()
        {
            return ctx.err().code().map(str::to_owned);
        }
        next = e.source();
    }
    None
}

/// The container provider sends the token file verbatim as the `Authorization` header;
/// a trailing newline (as `echo` writes) makes it an invalid header value.
fn token_file_hint() -> String {
    let Ok(path) = std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") else {
        return String::new();
    };
    // Bounded like every read (a token is a few KiB): the variable may name anything.
    match crate::sink::bounded::read_path(std::path::Path::new(&path), 64 * 1024) {
        Ok(bytes) if bytes.last().is_some_and(u8::is_ascii_whitespace) => format!(
            " (the token file {path} ends with a newline or space; it is sent verbatim as the \
             Authorization header, so write it without one, e.g. printf '%s' \"$TOKEN\")"
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts_refusal(code: &str) -> SdkCredentialsError {
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let service = AssumeRoleError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("User: arn:aws:iam::123456789012:user/u is not authorized")
                .build(),
        );
        let response = HttpResponse::new(StatusCode::try_from(403).unwrap(), SdkBody::empty());
        SdkCredentialsError::provider_error(SdkError::service_error(service, response))
    }

    #[test]
    fn sts_refusals_are_recognised_by_their_code() {
        let role = "arn:aws:iam::123456789012:role/r";
        let denied = classify_sts("STS", Some(role), &sts_refusal("AccessDenied")).unwrap();
        assert!(
            matches!(&denied, CredentialsError::AccessDenied { role: r, .. } if r == role),
            "{denied:?}"
        );
        assert!(!denied.is_retryable());
        assert!(
            denied
                .to_string()
                .starts_with("access denied assuming role arn:aws:iam::123456789012:role/r: "),
            "{denied}"
        );
        let bad_keys = classify_sts("STS", None, &sts_refusal("InvalidClientTokenId")).unwrap();
        assert!(!bad_keys.is_retryable(), "{bad_keys}");
        let throttled = classify_sts("STS", Some(role), &sts_refusal("Throttling")).unwrap();
        assert!(throttled.is_retryable(), "{throttled}");
        let invalid = classify_sts("STS", Some(role), &sts_refusal("ValidationError")).unwrap();
        assert!(!invalid.is_retryable(), "{invalid}");
        // Not an STS error at all: left to the caller.
        let other = SdkCredentialsError::provider_error("connection refused");
        assert!(classify_sts("STS", Some(role), &other).is_none());
    }
}
