//! EC2 instance metadata, read directly rather than through `aws-config`'s IMDS
//! provider: that provider practises "static stability", handing back expired
//! credentials with an invented expiry 15 minutes out, which would make a key that
//! claims to be valid but is not. Here an expired answer stays expired (and the caller
//! rejects it). The SDK's IMDS client still does IMDSv2 tokens, endpoint overrides and
//! retries.

use aws_config::imds;
use aws_config::imds::client::error::ImdsError;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError as SdkCredentialsError;

use super::error_chain;

/// The instance-profile credentials document.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsDocument {
    code: String,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

pub(super) async fn imds_credentials(
    client: &imds::Client,
) -> Result<Credentials, SdkCredentialsError> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(SdkCredentialsError::not_loaded(
            "disabled by AWS_EC2_METADATA_DISABLED=true",
        ));
    }
    const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
    let role = match client.get(ROLES).await {
        Ok(list) => list
            .as_ref()
            .lines()
            .next()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned(),
        Err(ImdsError::ErrorResponse(ctx)) if ctx.response().status().as_u16() == 404 => {
            return Err(SdkCredentialsError::not_loaded(
                "no IAM role is attached to this instance",
            ));
        }
        // No IMDS answering at all: not on EC2 (or blocked), so nothing to find here.
        // Or IMDS refusing tokens with 403: disabled on this instance.
        Err(err)
            if matches!(&err, ImdsError::FailedToLoadToken(ctx) if ctx.is_dispatch_failure())
                || error_chain(&err).contains("forbidden") =>
        {
            let reason = format!("unreachable: {}", error_chain(&err));
            return Err(SdkCredentialsError::not_loaded(reason));
        }
        Err(err) => return Err(SdkCredentialsError::provider_error(err)),
    };
    if role.is_empty() {
        return Err(SdkCredentialsError::not_loaded(
            "no IAM role is attached to this instance",
        ));
    }
    let body = client
        .get(format!("{ROLES}{role}"))
        .await
        .map_err(SdkCredentialsError::provider_error)?;
    let doc: ImdsDocument = serde_json::from_str(body.as_ref()).map_err(|e| {
        // serde_json's message names a position, never the document's content.
        SdkCredentialsError::provider_error(format!("unreadable credentials document: {e}"))
    })?;
    if doc.code != "Success" {
        return Err(SdkCredentialsError::provider_error(format!(
            "instance metadata answered {}: {}",
            doc.code,
            doc.message.unwrap_or_default()
        )));
    }
    let (Some(id), Some(secret), Some(token), Some(expiration)) = (
        doc.access_key_id,
        doc.secret_access_key,
        doc.token,
        doc.expiration,
    ) else {
        return Err(SdkCredentialsError::provider_error(
            "the credentials document lacks AccessKeyId, SecretAccessKey, Token or Expiration",
        ));
    };
    let expiry = crate::clock::time::parse_rfc3339(&expiration).ok_or_else(|| {
        SdkCredentialsError::provider_error(format!(
            "the credentials document has an unreadable Expiration {expiration:?}"
        ))
    })?;
    Ok(Credentials::new(
        id,
        secret,
        Some(token),
        Some(expiry),
        "IMDS",
    ))
}
