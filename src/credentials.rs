//! Where signing credentials and the region come from: all AWS SDK setup lives here.
//!
//! [`SdkSource`] walks the same sources, in the same order, as `aws-config`'s default
//! chain: environment variables, the shared config/credentials files (static keys, SSO,
//! `credential_process`, `source_profile` + `role_arn` chains), web identity (IRSA), the
//! ECS / EKS Pod Identity container endpoint, and EC2 instance metadata (IMDS). An
//! explicit `--profile` means that profile and nothing else, as with the AWS CLI. An
//! explicit `role_arn` is assumed (STS `AssumeRole`) on top of whatever the chain yields.
//!
//! The chain is assembled here rather than taken whole from `aws-config` because:
//! - every link gets its own time bound, so an error can say *which* source hung
//!   (a laptop or container without IMDS must not stall for long, and must be told why);
//! - "no credentials" lists every source tried and why it had nothing;
//! - IMDS is read directly: the SDK's IMDS provider practises "static stability", handing
//!   back expired credentials with an invented expiry 15 minutes out, which would make a
//!   key that claims to be valid but is not. Here an expired answer is an error.
//!
//! `SdkConfig::credentials_provider()` is the raw chain, not a cache: every call may hit
//! STS or IMDS. [`SdkSource`] therefore keeps the credentials it got and decides itself
//! when to fetch again ([`renewal`]): when they would cap a key well below the lifetime the
//! caller wants, or are (nearly) expired. Environment and static profile credentials have
//! no expiry (unless `AWS_CREDENTIAL_EXPIRATION` gives one); keys signed with them live
//! their full requested lifetime. [`CredentialSource::invalidate`] drops the held
//! credentials and rebuilds the chain, because the SDK parses the config files once per
//! chain.
//!
//! Layout: this file holds the user-facing types ([`SourceSpec`], [`CredentialsError`],
//! the [`CredentialSource`] seam), the renewal rule and [`SdkSource`]; `chain` builds
//! and classifies the links; `imds` reads instance metadata.
//!
//! Secrets: secret access keys and session tokens only ever live inside
//! [`Credentials`], whose `Debug` redacts them; nothing here formats them.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError as SdkCredentialsError;
use aws_types::SdkConfig;

mod chain;
mod http;
mod imds;

use chain::{
    Link, build_links, check_profiles, classify, classify_sts, explicit_profile_not_loaded,
    not_loaded_reason, resolve_region, sts_timeouts,
};

use crate::duration;
use crate::key::MAX_LIFETIME;
use crate::mint::{Region, RegionError};

/// Environment variables and config files: no network, but a hung NFS home directory
/// must still end in an error that names the files.
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A profile may run `credential_process` (a password manager may wait for the user to
/// unlock it), call SSO, or make one STS call per hop of a `source_profile` chain.
pub const PROFILE_TIMEOUT: Duration = Duration::from_secs(30);
/// Web identity is one STS call (plus the SDK's retries); STS answers in well under 1 s.
pub const WEB_IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);
/// The ECS agent / EKS Pod Identity agent runs on the same host and answers in
/// milliseconds; this leaves room for the SDK's connect + read timeouts and one retry.
pub const CONTAINER_TIMEOUT: Duration = Duration::from_secs(6);
/// The SDK's own connect timeout for the container endpoint (its default).
const CONTAINER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shorter than the SDK's 5 s: a local agent that has not answered in 3 s is stuck, and
/// the whole lookup must fit in [`CONTAINER_TIMEOUT`].
const CONTAINER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// IMDS is link-local: on EC2 it answers in milliseconds, elsewhere it never answers.
/// Two attempts of 1 s connect + 1 s read fit in this bound.
pub const IMDS_TIMEOUT: Duration = Duration::from_secs(5);
const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IMDS_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// One retry rides out a throttled IMDS; four (the SDK default) stall a laptop.
const IMDS_ATTEMPTS: u32 = 2;
/// A provider handed in by the embedding code: treated like one remote call.
pub const CUSTOM_TIMEOUT: Duration = Duration::from_secs(10);
/// One `AssumeRole` call with the SDK's retries.
pub const ASSUME_ROLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per STS call inside the SDK: an attempt that takes longer is retried, and two
/// attempts still fit in [`WEB_IDENTITY_TIMEOUT`] / [`ASSUME_ROLE_TIMEOUT`].
const STS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const STS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// Credentials with less than this left are fetched anew before signing: a key shorter
/// than this is hardly worth delivering, and the SDK's own caches refresh 5 min early.
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// A source that cannot do better (a role session capped at 1 h when 12 h are wanted)
/// is asked again at most this often, not on every retry of every key.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// The STS session name when none is configured: shows up in CloudTrail as the caller.
pub const DEFAULT_ROLE_SESSION_NAME: &str = "bedrock-keyd";

/// What the user asked for; `None` fields fall back to the SDK's default chains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SourceSpec {
    /// Shared-config profile (`--profile`, `profile = …`). When set, that profile is
    /// the only source (environment credentials are not consulted), as with the AWS CLI.
    pub profile: Option<String>,
    /// Region override; otherwise env, then the profile's region, then IMDS.
    pub region: Option<Region>,
    /// A role assumed on top of whatever the source yields.
    pub role_arn: Option<String>,
    /// With `role_arn`: the external id the role's trust policy demands.
    pub external_id: Option<String>,
    /// With `role_arn`: the session name (default: [`DEFAULT_ROLE_SESSION_NAME`]).
    pub role_session_name: Option<String>,
    /// The key is described in a config file (not by flags): errors then advise the
    /// file's settings (`region = …`), not flags that a config file excludes.
    pub from_config_file: bool,
    /// With `role_arn`: how long the role session lasts, 15 min … 12 h (default: STS's
    /// 1 h). Keys signed with a role session cannot outlive it; longer sessions need the
    /// role's `MaxSessionDuration` raised, and role chaining caps them at 1 h.
    pub role_session_duration: Option<Duration>,
}

/// Why credentials or a region could not be had.
///
/// `origin` fields name the source, e.g. `container credentials endpoint
/// (http://169.254.170.23/v1/credentials)`. No variant ever carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no AWS region: {}, set AWS_REGION, or set `region` in the AWS profile{}",
        region_advice(*.from_config_file),
        profile_hint(.profile)
    )]
    NoRegion {
        profile: Option<String>,
        /// The key comes from a config file, where `--region` is refused.
        from_config_file: bool,
    },
    #[error("the region configured for the AWS SDK is invalid: {0}")]
    BadRegion(#[from] RegionError),
    #[error("no AWS credentials found (tried: {})", .tried.join("; "))]
    NotFound { tried: Vec<String> },
    #[error("AWS profile {profile:?} not found in {files}")]
    ProfileNotFound { profile: String, files: String },
    #[error("AWS profile {profile:?} cannot provide credentials: {detail}")]
    InvalidProfile { profile: String, detail: String },
    #[error("access denied assuming role {role}: {detail}")]
    AccessDenied { role: String, detail: String },
    #[error("credential endpoint unreachable or failing: {origin}: {detail}")]
    Endpoint { origin: String, detail: String },
    #[error("{origin} is misconfigured: {detail}")]
    Misconfigured { origin: String, detail: String },
    #[error(
        "{origin} returned credentials (access key {access_key_id}) that expired at {expired_at}"
    )]
    Expired {
        origin: String,
        access_key_id: String,
        expired_at: String,
    },
    #[error("loading AWS credentials from {origin} failed: {detail}")]
    Provider {
        origin: String,
        detail: String,
        retryable: bool,
    },
    #[error("loading AWS credentials timed out after {} in {origin}", duration::format(*.after))]
    Timeout { origin: String, after: Duration },
}

impl CredentialsError {
    /// Whether trying again later can help (the daemon backs off and retries these).
    /// Configuration mistakes and refusals (no such profile, access denied) cannot
    /// fix themselves; outages, timeouts and expired upstream credentials can.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NoRegion { .. }
            | Self::BadRegion(_)
            | Self::NotFound { .. }
            | Self::ProfileNotFound { .. }
            | Self::InvalidProfile { .. }
            | Self::AccessDenied { .. }
            | Self::Misconfigured { .. } => false,
            Self::Endpoint { .. } | Self::Expired { .. } | Self::Timeout { .. } => true,
            Self::Provider { retryable, .. } => *retryable,
        }
    }
}

fn region_advice(from_config_file: bool) -> &'static str {
    if from_config_file {
        "set `region = \"…\"` for the key (or in [defaults]) in the config file"
    } else {
        "pass --region"
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

/// One-shot convenience: resolves the region and fetches credentials once, wanting
/// them valid for the longest key lifetime.
pub async fn resolve(spec: &SourceSpec) -> Result<Resolved, CredentialsError> {
    let source = SdkSource::new(spec).await?;
    let credentials = source.credentials(MAX_LIFETIME).await?;
    Ok(Resolved {
        credentials,
        region: source.region().clone(),
    })
}

/// The Display of an error and its sources, joined with ": ", with secrets redacted
/// ([`crate::redact::redact_secrets`]): a source may carry outside text that holds
/// one. Access key ids stay: our own errors name them on purpose. For an SDK error
/// (which may quote a `credential_process`'s stderr) use [`sdk_error_text`].
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
    crate::redact::redact_secrets(&out).into_owned()
}

/// [`error_chain`] of an error from the SDK, whose text is outside text (the stderr of
/// a failing `credential_process`, a line of a profile file), fully redacted
/// ([`crate::redact::redact`]), access key ids included.
pub fn sdk_error_text(err: &(dyn std::error::Error + 'static)) -> String {
    crate::redact::redact(&error_chain(err)).into_owned()
}

/// The seam between the scheduler and AWS: something that yields signing credentials
/// for one region. The real one is [`SdkSource`]; tests use fakes with fake clocks.
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

    /// Forget any cached credentials, so the next call fetches anew (e.g. after
    /// `~/.aws/credentials` or the SSO cache changed on disk).
    fn invalidate(&self) {}
}

/// A shared source is a source: keys with the same [`SourceSpec`] share one, and so
/// share its cached credentials (one STS session for a thousand keys, not a thousand).
impl<S: CredentialSource> CredentialSource for std::sync::Arc<S> {
    fn region(&self) -> &Region {
        (**self).region()
    }

    fn credentials(
        &self,
        want_valid_for: Duration,
    ) -> impl std::future::Future<Output = Result<Credentials, CredentialsError>> + Send {
        (**self).credentials(want_valid_for)
    }

    fn invalidate(&self) {
        (**self).invalidate()
    }
}

// ---------------------------------------------------------------------------------
// The renewal decision: pure, so it is tested at its boundaries below.

/// What [`SdkSource`] knows about the credentials it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The credentials' own expiry; `None` for long-term keys.
    pub expiry: Option<SystemTime>,
    /// When they were fetched.
    pub fetched_at: SystemTime,
}

/// What to do before signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The held credentials are good for the key wanted.
    Keep,
    /// Fetch anew; if that fails, the held ones are still usable (just shorter).
    FetchOrKeep,
    /// Fetch anew; the held ones (if any) are not usable.
    Fetch,
}

/// Decides whether credentials `held` at `now` are good enough for a key that should
/// live `want_valid_for`:
/// - nothing held, or less than [`RENEW_BEFORE_EXPIRY`] left: [`Renewal::Fetch`];
/// - no expiry (long-term keys): [`Renewal::Keep`];
/// - less than half of `want_valid_for` (capped at 12 h) left, and the last fetch at
///   least [`MIN_REFETCH_INTERVAL`] ago: [`Renewal::FetchOrKeep`];
/// - otherwise [`Renewal::Keep`].
pub fn renewal(held: Option<Held>, now: SystemTime, want_valid_for: Duration) -> Renewal {
    let Some(held) = held else {
        return Renewal::Fetch;
    };
    let Some(expiry) = held.expiry else {
        return Renewal::Keep;
    };
    let left = expiry.duration_since(now).unwrap_or_default();
    if left < RENEW_BEFORE_EXPIRY {
        return Renewal::Fetch;
    }
    let want = want_valid_for.min(MAX_LIFETIME);
    // A clock that stepped back makes the fetch look recent: keep, do not hammer.
    let since_fetch = now.duration_since(held.fetched_at).unwrap_or_default();
    if left < want / 2 && since_fetch >= MIN_REFETCH_INTERVAL {
        Renewal::FetchOrKeep
    } else {
        Renewal::Keep
    }
}

// ---------------------------------------------------------------------------------
// The SDK-backed source.

/// Credentials from the AWS SDK's sources, cached and renewed on demand.
///
/// Built once per key (`SdkSource::new(&spec).await?`): it resolves the region, loads
/// the `SdkConfig` and builds the provider chain once, so the SDK's own caches (the
/// SSO token, the profile chain) survive between calls.
pub struct SdkSource {
    spec: SourceSpec,
    region: Region,
    /// Endpoint overrides (`AWS_ENDPOINT_URL_STS`), retry and timeout settings for the
    /// STS client that assumes `role_arn`, read on the first role assumption: keys
    /// without a role never need them, and reading them means the environment and the
    /// config files. Credentials are not loaded through it: the chain does that.
    sdk_config: tokio::sync::OnceCell<SdkConfig>,
    /// The chain, rebuilt by `invalidate()`: the SDK parses the config files once per
    /// chain, so edits to `~/.aws` are only seen by a new one.
    links: Mutex<Arc<Vec<Link>>>,
    held: Mutex<Option<Fetched>>,
    /// The wall clock (injected by tests): credential expiries are wall-clock times.
    clock: Clock,
    /// Serialises fetches: concurrent callers wait for one fetch instead of each
    /// calling STS.
    fetching: tokio::sync::Mutex<()>,
}

/// A wall clock.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Clone)]
struct Fetched {
    credentials: Credentials,
    fetched_at: SystemTime,
}

impl fmt::Debug for SdkSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkSource")
            .field("spec", &self.spec)
            .field("region", &self.region)
            .field(
                "links",
                &self.links().iter().map(Link::origin).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// For `check`: the error [`SdkSource::new`] would give for `spec` because no region
/// can be found, when that is certain without the network (no region set, in the
/// environment or in the profile, and instance metadata disabled). Reads the
/// environment and the AWS config files; sends nothing.
pub async fn check_region_offline(spec: &SourceSpec) -> Result<(), CredentialsError> {
    chain::region_offline(spec).await
}

impl SdkSource {
    /// Resolves the region and prepares the chain. Checks that the profile named by
    /// `--profile` or `AWS_PROFILE` exists (so a typo is reported as such, not as a
    /// missing region). Fetches no credentials yet.
    pub async fn new(spec: &SourceSpec) -> Result<Self, CredentialsError> {
        check_profiles(spec).await?;
        let region = resolve_region(spec).await?;
        let links = build_links(spec, &region);
        Ok(Self {
            spec: spec.clone(),
            region,
            sdk_config: tokio::sync::OnceCell::new(),
            links: Mutex::new(Arc::new(links)),
            held: Mutex::new(None),
            clock: Arc::new(SystemTime::now),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// A source over `provider` instead of the SDK chain, with the same caching and
    /// renewal; for embedding a custom provider and for tests. No role is assumed.
    pub fn from_provider(region: Region, provider: impl ProvideCredentials + 'static) -> Self {
        Self {
            spec: SourceSpec {
                region: Some(region.clone()),
                ..SourceSpec::default()
            },
            region,
            // No role is assumed, so the STS settings are never read.
            sdk_config: tokio::sync::OnceCell::new(),
            links: Mutex::new(Arc::new(vec![Link::Custom(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )])),
            held: Mutex::new(None),
            clock: Arc::new(SystemTime::now),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Replaces the wall clock (tests: a fake clock to step through expiries).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// What this source was asked for.
    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// A short description for logs: the sources tried and any role on top.
    pub fn describe(&self) -> String {
        let chain = match (&self.spec.profile, self.links().as_slice()) {
            (_, [Link::Custom(_)]) => "custom credentials provider".to_owned(),
            (Some(p), _) => format!("profile {p:?}"),
            (None, _) => "default chain".to_owned(),
        };
        match &self.spec.role_arn {
            Some(role) => format!("{chain} + role {role}"),
            None => chain,
        }
    }

    fn links(&self) -> Arc<Vec<Link>> {
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A fresh chain over the same spec and region: re-reads the config files, re-runs
    /// `credential_process`, forgets the SDK's in-memory state. Building does no I/O.
    fn rebuild_links(&self) {
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if matches!(links.as_slice(), [Link::Custom(_)]) {
            return;
        }
        *links = Arc::new(build_links(&self.spec, &self.region));
    }

    fn held(&self) -> Option<Fetched> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn hold(&self, fetched: Option<Fetched>) {
        *self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fetched;
    }

    async fn get(&self, want_valid_for: Duration) -> Result<Credentials, CredentialsError> {
        let _one_fetch_at_a_time = self.fetching.lock().await;
        let held = self.held();
        let now = self.now();
        let decision = renewal(
            held.as_ref().map(|h| Held {
                expiry: h.credentials.expiry(),
                fetched_at: h.fetched_at,
            }),
            now,
            want_valid_for,
        );
        match (decision, held) {
            (Renewal::Keep, Some(held)) => Ok(held.credentials),
            (decision, held) => match self.fetch().await {
                Ok(fresh) => {
                    self.hold(Some(Fetched {
                        credentials: fresh.clone(),
                        fetched_at: self.now(),
                    }));
                    Ok(fresh)
                }
                Err(err) => match (decision, held) {
                    (Renewal::FetchOrKeep, Some(held)) => {
                        tracing::warn!(
                            error = %error_chain(&err),
                            expires_at = %expiry_text(held.credentials.expiry()),
                            "could not renew AWS credentials; signing with the ones held"
                        );
                        // Do not ask again before MIN_REFETCH_INTERVAL.
                        self.hold(Some(Fetched {
                            fetched_at: self.now(),
                            ..held.clone()
                        }));
                        Ok(held.credentials)
                    }
                    _ => Err(err),
                },
            },
        }
    }

    /// Walks the chain, then assumes the role if one is configured.
    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let (base, origin) = self.fetch_base().await?;
        check_not_expired(&origin, &base, self.now())?;
        let credentials = match &self.spec.role_arn {
            None => base,
            Some(role_arn) => {
                tracing::debug!(%origin, access_key_id = %base.access_key_id(), role = %role_arn, "assuming role");
                let assumed = self.assume_role(role_arn, base).await?;
                let origin = format!("STS AssumeRole for {role_arn}");
                check_not_expired(&origin, &assumed, self.now())?;
                assumed
            }
        };
        tracing::info!(
            source = %self.describe(),
            access_key_id = %credentials.access_key_id(),
            credentials_expire_at = %expiry_text(credentials.expiry()),
            "AWS credentials loaded"
        );
        Ok(credentials)
    }

    async fn fetch_base(&self) -> Result<(Credentials, String), CredentialsError> {
        let mut tried = Vec::new();
        let links = self.links();
        for link in links.iter() {
            let origin = link.origin();
            let after = link.timeout();
            match tokio::time::timeout(after, link.fetch()).await {
                Err(_) => return Err(CredentialsError::Timeout { origin, after }),
                Ok(Ok(credentials)) => {
                    tracing::debug!(%origin, "credentials found");
                    return Ok((credentials, origin));
                }
                Ok(Err(err @ SdkCredentialsError::CredentialsNotLoaded(_))) => {
                    let reason = link.explain(not_loaded_reason(&err));
                    tracing::debug!(%origin, %reason, "no credentials here");
                    if let Link::Profile {
                        name,
                        explicit: true,
                        ..
                    } = link
                    {
                        return Err(explicit_profile_not_loaded(name, reason));
                    }
                    tried.push(format!("{origin}: {reason}"));
                }
                Ok(Err(err)) => return Err(classify(link, err)),
            }
        }
        Err(CredentialsError::NotFound { tried })
    }

    /// The STS settings (see the field), loaded once.
    async fn sdk_config(&self) -> Result<&SdkConfig, CredentialsError> {
        self.sdk_config
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http::shared())
                    .region(aws_config::Region::new(self.region.as_str().to_owned()))
                    .timeout_config(sts_timeouts())
                    .no_credentials();
                if let Some(profile) = &self.spec.profile {
                    loader = loader.profile_name(profile);
                }
                tokio::time::timeout(LOCAL_TIMEOUT, loader.load())
                    .await
                    .map_err(|_| CredentialsError::Timeout {
                        origin: "reading the AWS config files".to_owned(),
                        after: LOCAL_TIMEOUT,
                    })
            })
            .await
    }

    async fn assume_role(
        &self,
        role_arn: &str,
        base: Credentials,
    ) -> Result<Credentials, CredentialsError> {
        let mut builder = AssumeRoleProvider::builder(role_arn)
            .configure(self.sdk_config().await?)
            .session_name(
                self.spec
                    .role_session_name
                    .as_deref()
                    .unwrap_or(DEFAULT_ROLE_SESSION_NAME),
            );
        if let Some(external_id) = &self.spec.external_id {
            builder = builder.external_id(external_id);
        }
        if let Some(length) = self.spec.role_session_duration {
            builder = builder.session_length(length);
        }
        let origin = format!("STS AssumeRole for {role_arn}");
        let provider = builder.build_from_provider(base).await;
        match tokio::time::timeout(ASSUME_ROLE_TIMEOUT, provider.provide_credentials()).await {
            Err(_) => Err(CredentialsError::Timeout {
                origin,
                after: ASSUME_ROLE_TIMEOUT,
            }),
            Ok(Ok(credentials)) => Ok(credentials),
            Ok(Err(err)) => Err(
                classify_sts(&origin, Some(role_arn), &err).unwrap_or_else(|| match err {
                    SdkCredentialsError::ProviderTimedOut(_) => CredentialsError::Timeout {
                        origin,
                        after: ASSUME_ROLE_TIMEOUT,
                    },
                    SdkCredentialsError::InvalidConfiguration(_) => {
                        CredentialsError::Misconfigured {
                            detail: sdk_error_text(&err),
                            origin,
                        }
                    }
                    _ => CredentialsError::Endpoint {
                        detail: sdk_error_text(&err),
                        origin,
                    },
                }),
            ),
        }
    }
}

impl CredentialSource for SdkSource {
    fn region(&self) -> &Region {
        &self.region
    }

    fn credentials(
        &self,
        want_valid_for: Duration,
    ) -> impl std::future::Future<Output = Result<Credentials, CredentialsError>> + Send {
        self.get(want_valid_for)
    }

    fn invalidate(&self) {
        self.hold(None);
        self.rebuild_links();
    }
}

fn expiry_text(expiry: Option<SystemTime>) -> String {
    expiry.map_or_else(|| "never".to_owned(), crate::time::rfc3339)
}

/// Credentials with less than a second left would only make dead keys.
fn check_not_expired(
    origin: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<(), CredentialsError> {
    match credentials.expiry() {
        Some(expiry) if expiry < now + Duration::from_secs(1) => Err(CredentialsError::Expired {
            origin: origin.to_owned(),
            access_key_id: credentials.access_key_id().to_owned(),
            expired_at: crate::time::rfc3339(expiry),
        }),
        _ => Ok(()),
    }
}

/// STS's bounds for `DurationSeconds`: 15 minutes to 12 hours, whole seconds.
pub fn parse_role_session_duration(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(text).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(15 * 60) || d > Duration::from_secs(12 * 3600) {
        Err("a role session lasts 15m to 12h".to_owned())
    } else if d.subsec_nanos() != 0 {
        Err("a role session lasts a whole number of seconds".to_owned())
    } else {
        Ok(d)
    }
}

// Role parameters, checked before STS sees them (one set of rules for the command
// line and the config file).

/// `arn:PARTITION:iam::ACCOUNT:role/NAME`.
pub fn parse_role_arn(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not an IAM role ARN such as \"arn:aws:iam::123456789012:role/bedrock-invoke\""
        ))
    }
}

/// STS: 2–1224 characters of `[\w+=,.@:/-]`.
pub fn parse_external_id(s: &str) -> Result<String, String> {
    let ok = (2..=1224).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("is not a valid external id (2 to 1224 of letters, digits and _+=,.@:/-)".to_owned())
    }
}

/// STS: 2–64 characters of `[\w+=,.@-]`.
pub fn parse_role_session_name(s: &str) -> Result<String, String> {
    let ok = (2..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a role session name (2 to 64 of letters, digits and _+=,.@-)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_795_680_000;
    const H12: Duration = Duration::from_secs(12 * 3600);

    fn held(expiry_in: Option<u64>, fetched_ago: u64) -> Option<Held> {
        Some(Held {
            expiry: expiry_in.map(|s| at(NOW + s)),
            fetched_at: at(NOW - fetched_ago),
        })
    }

    #[test]
    fn nothing_held_is_fetched() {
        assert_eq!(renewal(None, at(NOW), H12), Renewal::Fetch);
    }

    #[test]
    fn long_term_keys_are_kept_forever() {
        assert_eq!(renewal(held(None, 86_400), at(NOW), H12), Renewal::Keep);
    }

    #[test]
    fn expired_or_nearly_expired_must_be_fetched() {
        let margin = RENEW_BEFORE_EXPIRY.as_secs();
        // Past, exactly now, one second short of the margin: fetch, no fallback.
        let past = Some(Held {
            expiry: Some(at(NOW - 10)),
            fetched_at: at(NOW - 3600),
        });
        assert_eq!(renewal(past, at(NOW), H12), Renewal::Fetch);
        assert_eq!(renewal(held(Some(0), 3600), at(NOW), H12), Renewal::Fetch);
        assert_eq!(
            renewal(held(Some(margin - 1), 3600), at(NOW), H12),
            Renewal::Fetch
        );
        // Even when just fetched: a source that only has nearly-dead credentials is
        // asked again rather than used.
        assert_eq!(
            renewal(held(Some(margin - 1), 0), at(NOW), H12),
            Renewal::Fetch
        );
        // At the margin, with a short wanted lifetime: good enough.
        let ten_min = Duration::from_secs(600);
        assert_eq!(
            renewal(held(Some(margin), 3600), at(NOW), ten_min),
            Renewal::Keep
        );
    }

    #[test]
    fn credentials_that_cap_the_key_below_half_are_renewed() {
        let one_hour = Duration::from_secs(3600);
        // Exactly half left: keep. One second less: renew (with fallback).
        assert_eq!(
            renewal(held(Some(1800), 600), at(NOW), one_hour),
            Renewal::Keep
        );
        assert_eq!(
            renewal(held(Some(1799), 600), at(NOW), one_hour),
            Renewal::FetchOrKeep
        );
        // A 1 h role session when 12 h are wanted: renewed on every mint...
        assert_eq!(
            renewal(held(Some(3000), 600), at(NOW), H12),
            Renewal::FetchOrKeep
        );
        // ...but not more often than MIN_REFETCH_INTERVAL.
        let recent = MIN_REFETCH_INTERVAL.as_secs() - 1;
        assert_eq!(
            renewal(held(Some(3000), recent), at(NOW), H12),
            Renewal::Keep
        );
        assert_eq!(
            renewal(
                held(Some(3000), MIN_REFETCH_INTERVAL.as_secs()),
                at(NOW),
                H12
            ),
            Renewal::FetchOrKeep
        );
    }

    #[test]
    fn wanted_lifetime_is_capped_at_twelve_hours() {
        let day = Duration::from_secs(86_400);
        // 6 h left is half of 12 h: keep, even if a day was "wanted".
        assert_eq!(
            renewal(held(Some(6 * 3600), 600), at(NOW), day),
            Renewal::Keep
        );
    }

    #[test]
    fn a_clock_stepping_back_does_not_force_refetches() {
        let future_fetch = Some(Held {
            expiry: Some(at(NOW + 3000)),
            fetched_at: at(NOW + 600),
        });
        assert_eq!(renewal(future_fetch, at(NOW), H12), Renewal::Keep);
    }

    #[test]
    fn expired_credentials_are_rejected_not_signed_with() {
        let now = at(NOW);
        let creds = |expiry| Credentials::new("AKID", "secret", None, expiry, "test");
        assert!(check_not_expired("x", &creds(None), now).is_ok());
        assert!(check_not_expired("x", &creds(Some(at(NOW + 1))), now).is_ok());
        let err = check_not_expired("x", &creds(Some(now)), now).unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("AKID"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(check_not_expired("x", &creds(Some(at(NOW - 5))), now).is_err());
    }

    // -- SdkSource's cache over a fake provider and a fake clock --------------

    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out scripted answers and counts the calls.
    #[derive(Debug, Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<Credentials, String>>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn push_ok(&self, id: &str, expiry: Option<SystemTime>) {
            let c = Credentials::new(id, "secret", Some("token".to_owned()), expiry, "fake");
            self.answers.lock().unwrap().push_back(Ok(c));
        }
        fn push_err(&self) {
            self.answers
                .lock()
                .unwrap()
                .push_back(Err("endpoint down".to_owned()));
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    /// What the source holds; the test keeps the other `Arc`.
    #[derive(Debug)]
    struct Handle(Arc<Scripted>);

    impl ProvideCredentials for Handle {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self
                .0
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .expect("an unexpected fetch");
            aws_credential_types::provider::future::ProvideCredentials::ready(
                answer.map_err(SdkCredentialsError::provider_error),
            )
        }
    }

    struct Fixture {
        source: SdkSource,
        provider: Arc<Scripted>,
        now: Arc<Mutex<SystemTime>>,
    }

    impl Fixture {
        fn new() -> Self {
            let provider = Arc::new(Scripted::default());
            let now = Arc::new(Mutex::new(at(NOW)));
            let clock_now = now.clone();
            let source = SdkSource::from_provider(
                Region::new("us-east-1").unwrap(),
                Handle(provider.clone()),
            )
            .with_clock(Arc::new(move || *clock_now.lock().unwrap()));
            Self {
                source,
                provider,
                now,
            }
        }
        fn advance(&self, secs: u64) {
            *self.now.lock().unwrap() += Duration::from_secs(secs);
        }
        fn in_secs(&self, secs: u64) -> Option<SystemTime> {
            Some(*self.now.lock().unwrap() + Duration::from_secs(secs))
        }
        async fn id(&self, want: Duration) -> Result<String, CredentialsError> {
            self.source
                .credentials(want)
                .await
                .map(|c| c.access_key_id().to_owned())
        }
    }

    #[tokio::test]
    async fn long_term_credentials_are_fetched_once() {
        let f = Fixture::new();
        f.provider.push_ok("STATIC", None);
        for _ in 0..3 {
            assert_eq!(f.id(H12).await.unwrap(), "STATIC");
            f.advance(3600);
        }
        assert_eq!(f.provider.calls(), 1);
    }

    #[tokio::test]
    async fn short_credentials_are_renewed_but_not_on_every_call() {
        let f = Fixture::new();
        f.provider.push_ok("ONE-HOUR-A", f.in_secs(3600));
        assert_eq!(f.id(H12).await.unwrap(), "ONE-HOUR-A");
        // Straight away again (a retry, a second sink): the cache answers.
        f.advance(10);
        assert_eq!(f.id(H12).await.unwrap(), "ONE-HOUR-A");
        assert_eq!(f.provider.calls(), 1);
        // A minute later they would still cap a 12 h key below half: fetch anew.
        f.advance(MIN_REFETCH_INTERVAL.as_secs());
        f.provider.push_ok("ONE-HOUR-B", f.in_secs(3600));
        assert_eq!(f.id(H12).await.unwrap(), "ONE-HOUR-B");
        assert_eq!(f.provider.calls(), 2);
        // For a 1 h key, 55 min left is enough.
        f.advance(5 * 60);
        assert_eq!(f.id(Duration::from_secs(3600)).await.unwrap(), "ONE-HOUR-B");
        assert_eq!(f.provider.calls(), 2);
    }

    #[tokio::test]
    async fn a_failed_renewal_falls_back_to_usable_credentials() {
        let f = Fixture::new();
        f.provider.push_ok("HELD", f.in_secs(3600));
        f.id(H12).await.unwrap();
        f.advance(120);
        f.provider.push_err();
        assert_eq!(f.id(H12).await.unwrap(), "HELD");
        // ...and does not hammer the failing source.
        f.advance(10);
        assert_eq!(f.id(H12).await.unwrap(), "HELD");
        assert_eq!(f.provider.calls(), 2);
    }

    #[tokio::test]
    async fn nearly_expired_credentials_are_never_used_when_renewal_fails() {
        let f = Fixture::new();
        f.provider.push_ok("SHORT", f.in_secs(3600));
        f.id(H12).await.unwrap();
        f.advance(3600 - RENEW_BEFORE_EXPIRY.as_secs() + 1);
        f.provider.push_err();
        let err = f.id(H12).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.to_string().contains("custom credentials provider"),
            "{err}"
        );
        // Renewal works again: the fresh ones are used.
        f.provider.push_ok("FRESH", f.in_secs(3600));
        assert_eq!(f.id(H12).await.unwrap(), "FRESH");
    }

    #[tokio::test]
    async fn already_expired_credentials_from_a_source_are_an_error() {
        let f = Fixture::new();
        let past = Some(*f.now.lock().unwrap() - Duration::from_secs(30));
        f.provider.push_ok("STALE", past);
        let err = f.id(H12).await.unwrap_err();
        assert!(matches!(err, CredentialsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("STALE"), "{err}");
    }

    #[tokio::test]
    async fn invalidate_forces_a_fetch() {
        let f = Fixture::new();
        f.provider.push_ok("OLD", None);
        f.id(H12).await.unwrap();
        f.source.invalidate();
        f.provider.push_ok("NEW", None);
        assert_eq!(f.id(H12).await.unwrap(), "NEW");
        assert_eq!(f.provider.calls(), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let f = Fixture::new();
        f.provider.push_ok("SHARED", f.in_secs(3600));
        let (a, b) = tokio::join!(f.id(H12), f.id(H12));
        assert_eq!((a.unwrap(), b.unwrap()), ("SHARED".into(), "SHARED".into()));
        assert_eq!(f.provider.calls(), 1);
    }

    #[test]
    fn retryability_of_each_kind() {
        let s = String::new;
        let not = [
            CredentialsError::NoRegion {
                profile: None,
                from_config_file: false,
            },
            CredentialsError::NotFound { tried: vec![] },
            CredentialsError::ProfileNotFound {
                profile: s(),
                files: s(),
            },
            CredentialsError::InvalidProfile {
                profile: s(),
                detail: s(),
            },
            CredentialsError::AccessDenied {
                role: s(),
                detail: s(),
            },
            CredentialsError::Misconfigured {
                origin: s(),
                detail: s(),
            },
        ];
        for e in &not {
            assert!(!e.is_retryable(), "{e:?}");
        }
        let yes = [
            CredentialsError::Endpoint {
                origin: s(),
                detail: s(),
            },
            CredentialsError::Timeout {
                origin: s(),
                after: Duration::from_secs(1),
            },
            CredentialsError::Expired {
                origin: s(),
                access_key_id: s(),
                expired_at: s(),
            },
        ];
        for e in &yes {
            assert!(e.is_retryable(), "{e:?}");
        }
    }

    #[test]
    fn timeouts_name_the_source() {
        let e = CredentialsError::Timeout {
            origin: "container credentials endpoint (http://127.0.0.1:1/x)".to_owned(),
            after: CONTAINER_TIMEOUT,
        };
        assert_eq!(
            e.to_string(),
            "loading AWS credentials timed out after 6s in container credentials endpoint (http://127.0.0.1:1/x)"
        );
    }

    #[test]
    fn bounds_fit_inside_each_other() {
        // Two IMDS attempts fit in the IMDS bound; the container client's own
        // timeouts fit in the container bound; two STS attempts fit in the STS bounds.
        assert!(IMDS_CONNECT_TIMEOUT + IMDS_READ_TIMEOUT < IMDS_TIMEOUT);
        assert!(CONTAINER_CONNECT_TIMEOUT + CONTAINER_READ_TIMEOUT < CONTAINER_TIMEOUT);
        assert!(STS_ATTEMPT_TIMEOUT * 2 <= ASSUME_ROLE_TIMEOUT);
        assert!(STS_ATTEMPT_TIMEOUT * 2 <= WEB_IDENTITY_TIMEOUT);
    }
}
