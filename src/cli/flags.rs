//! Flags shared by the commands that mint: where credentials and the region come from.

use clap::Args;

use crate::credentials::SourceSpec;
use crate::mint::Region;

#[derive(Debug, Clone, Args)]
pub struct CredentialFlags {
    /// AWS region to scope the key to [default: AWS_REGION, AWS_DEFAULT_REGION, then the
    /// profile's region].
    #[arg(long, value_name = "REGION")]
    pub region: Option<Region>,

    /// Shared-config profile to take credentials from (SSO, credential_process, role
    /// chains all work) [default: AWS_PROFILE, then "default"].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

impl CredentialFlags {
    pub fn source_spec(&self) -> SourceSpec {
        SourceSpec {
            profile: self.profile.clone(),
            region: self.region.clone(),
            ..SourceSpec::default()
        }
    }
}
