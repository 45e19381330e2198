//! Flags shared by the commands that mint (`mint`, `once`, `run`): where credentials
//! and the region come from. One `clap::Args` struct, flattened into each command, so
//! every command spells them the same way.

use std::time::Duration;

use clap::Args;

use crate::credentials::SourceSpec;
use crate::mint::Region;

#[derive(Debug, Clone, Default, Args)]
pub struct CredentialFlags {
    /// AWS region to scope the key to [default: AWS_REGION, AWS_DEFAULT_REGION, the
    /// profile's region, then EC2 instance metadata].
    #[arg(long, value_name = "REGION")]
    pub region: Option<Region>,

    /// Shared-config profile to take credentials from (static keys, SSO,
    /// credential_process, source_profile role chains). When given, it is the only
    /// source: environment credentials are ignored [default: the SDK's chain:
    /// environment, AWS_PROFILE or "default", web identity, container, IMDS].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// IAM role to assume (STS AssumeRole) with the credentials found; keys are then
    /// signed with the role session and last no longer than it.
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,

    /// External id required by the role's trust policy (with --role-arn).
    #[arg(long, value_name = "ID", requires = "role_arn")]
    pub external_id: Option<String>,

    /// STS session name, visible in CloudTrail (with --role-arn) [default: bedrock-keyd].
    #[arg(long, value_name = "NAME", requires = "role_arn", value_parser = session_name)]
    pub role_session_name: Option<String>,

    /// How long the role session lasts, 15m to 12h (with --role-arn). Keys cannot
    /// outlive it; beyond 1h the role's MaxSessionDuration must allow it [default: 1h,
    /// STS's default].
    #[arg(long, value_name = "DURATION", requires = "role_arn", value_parser = session_duration)]
    pub role_session_duration: Option<Duration>,
}

impl CredentialFlags {
    pub fn source_spec(&self) -> SourceSpec {
        SourceSpec {
            profile: self.profile.clone(),
            region: self.region.clone(),
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            role_session_name: self.role_session_name.clone(),
            role_session_duration: self.role_session_duration,
        }
    }
}

/// STS accepts 2 to 64 characters of `[A-Za-z0-9_+=,.@-]`; checking here turns a
/// late STS ValidationError into a usage error.
fn session_name(name: &str) -> Result<String, String> {
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err("2 to 64 characters of letters, digits and _+=,.@- expected".to_owned())
    }
}

fn session_duration(text: &str) -> Result<Duration, String> {
    crate::credentials::parse_role_session_duration(text)
}
