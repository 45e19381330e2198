//! Minting: AWS credentials + region + lifetime + an instant → a short-term key.
//!
//! The key is what the official generators produce: a SigV4 query presign (by the
//! `aws-sigv4` crate, never hand-rolled) of
//! `POST https://bedrock.amazonaws.com/?Action=CallWithBearerToken` for service
//! `bedrock`, with `https://` stripped, `&Version=1` appended, base64-encoded and
//! prefixed `bedrock-api-key-`. The output is byte-for-byte what the official Python
//! generator (`aws-bedrock-token-generator`, `_generate_token`) emits for the same
//! inputs, query-parameter order included; `tests/it/interop.rs` checks that.
//!
//! Minting is pure: no clock, no I/O. The caller passes the signing instant, which is
//! what makes the scheduler and the interop test deterministic.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::key::{ApiKey, KEY_PREFIX, KeyMeta, Lifetime, MintedKey, Region};

/// The host every short-term key is presigned for, whatever the region.
pub const HOST: &str = "bedrock.amazonaws.com";
/// The SigV4 service name in the credential scope.
pub const SERVICE: &str = "bedrock";
/// The action the presigned URL names.
pub const ACTION: &str = "CallWithBearerToken";
/// What is signed; `Action` is the only query parameter before the signing ones.
const PRESIGN_URL: &str = "https://bedrock.amazonaws.com/?Action=CallWithBearerToken";
/// Appended after signing; it is not part of the signature.
pub const VERSION_SUFFIX: &str = "&Version=1";

/// SigV4 query encoding: everything but the RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a key could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "the credentials for access key {access_key_id} expired at {expired_at} (less than 1s of validity left); fetch fresh credentials"
    )]
    CredentialsExpired {
        access_key_id: String,
        expired_at: String,
    },
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The lifetime a key signed at `issued_at` can really have: the requested one, cut
/// short by the credentials' expiry, in whole seconds.
///
/// Errors when the credentials have less than one second left at `now`: such a key
/// would be dead on arrival, and the caller should fetch fresh credentials instead.
pub fn effective_lifetime(
    requested: Lifetime,
    credentials_expiry: Option<SystemTime>,
    issued_at: SystemTime,
    now: SystemTime,
) -> Option<Duration> {
    let Some(expiry) = credentials_expiry else {
        return Some(requested.get());
    };
    let left_now = expiry.duration_since(now).unwrap_or_default();
    if left_now < Duration::from_secs(1) {
        return None;
    }
    // Whole seconds from the (truncated) signing instant, so that
    // issued_at + X-Amz-Expires never exceeds the credentials' expiry.
    let left = expiry
        .duration_since(issued_at)
        .unwrap_or_default()
        .as_secs();
    Some(Duration::from_secs(left.min(requested.get().as_secs())))
}

/// Mints a key signed at `now` (truncated to the second, as `X-Amz-Date` is).
pub fn mint(
    credentials: &Credentials,
    region: &Region,
    lifetime: Lifetime,
    now: SystemTime,
) -> Result<MintedKey, MintError> {
    let issued_at = truncate_to_second(now);
    let effective =
        effective_lifetime(lifetime, credentials.expiry(), issued_at, now).ok_or_else(|| {
            MintError::CredentialsExpired {
                access_key_id: credentials.access_key_id().to_owned(),
                expired_at: credentials
                    .expiry()
                    .map(crate::clock::time::rfc3339)
                    .unwrap_or_default(),
            }
        })?;
    let value = presign(credentials, region.as_str(), effective, issued_at)?;
    Ok(MintedKey {
        key: ApiKey::new(value),
        meta: KeyMeta {
            region: region.as_str().to_owned(),
            access_key_id: credentials.access_key_id().to_owned(),
            issued_at,
            expires_at: issued_at + effective,
            has_session_token: credentials.session_token().is_some(),
        },
        credentials_expiry: credentials.expiry(),
        requested_lifetime: lifetime.get(),
    })
}

/// Logs a one-shot mint (`mint`, `once`): the milestone at info, with the
/// credentials' expiry and the key's, and a warning when the credentials cut the key
/// short, so nobody on a 1-hour role session believes they hold a 12-hour key.
pub fn log_minted(minted: &MintedKey) {
    let credentials_expire_at = minted
        .credentials_expiry
        .map_or_else(|| "never".to_owned(), crate::clock::time::rfc3339);
    tracing::info!(
        region = %minted.meta.region,
        access_key_id = %minted.meta.access_key_id,
        credentials_expire_at = %credentials_expire_at,
        expires_at = %crate::clock::time::rfc3339(minted.meta.expires_at),
        fingerprint = %minted.key.fingerprint(),
        "key minted"
    );
    if minted.meta.lifetime() < minted.requested_lifetime {
        tracing::warn!(
            requested = %crate::clock::duration::format(minted.requested_lifetime),
            effective = %crate::clock::duration::format(minted.meta.lifetime()),
            credentials_expire_at = %credentials_expire_at,
            "the signing credentials expire first; the key lives only as long as they do"
        );
    }
}

/// The SigV4 presign itself, with the query laid out as botocore lays it out:
/// `Action`, then the signing parameters in botocore's order, in which the session
/// token sits between `X-Amz-SignedHeaders` and `X-Amz-Signature` (aws-sigv4 puts it
/// last; the signature does not depend on the order, but the key's bytes do).
fn presign(
    credentials: &Credentials,
    region: &str,
    expires_in: Duration,
    issued_at: SystemTime,
) -> Result<String, MintError> {
    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires_in);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(issued_at)
        .settings(settings)
        .build()
        .map_err(|e| MintError::Signing(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        "POST",
        Cow::Borrowed(PRESIGN_URL),
        std::iter::once(("host", HOST)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| MintError::Signing(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| MintError::Signing(e.to_string()))?
        .into_parts();

    let signed = instructions.params();
    let mut presigned =
        String::with_capacity(1024 + 2 * credentials.session_token().map_or(0, str::len));
    presigned.push_str(HOST);
    presigned.push_str("/?Action=");
    presigned.push_str(ACTION);
    let token = signed
        .iter()
        .find(|(name, _)| *name == "X-Amz-Security-Token");
    for (name, value) in signed
        .iter()
        .filter(|(name, _)| *name != "X-Amz-Security-Token")
    {
        if let (true, Some((token_name, token_value))) = (*name == "X-Amz-Signature", token) {
            push_param(&mut presigned, token_name, token_value);
        }
        push_param(&mut presigned, name, value);
    }
    presigned.push_str(VERSION_SUFFIX);

    let mut key = String::with_capacity(KEY_PREFIX.len() + presigned.len().div_ceil(3) * 4);
    key.push_str(KEY_PREFIX);
    BASE64.encode_string(presigned.as_bytes(), &mut key);
    zeroize::Zeroize::zeroize(&mut presigned);
    Ok(key)
}

fn push_param(out: &mut String, name: &str, value: &str) {
    out.push('&');
    out.push_str(name);
    out.push('=');
    out.extend(utf8_percent_encode(value, QUERY_VALUE));
}

fn truncate_to_second(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        // Before 1970: nothing real signs then; keep it as is.
        Err(_) => t,
    }
}

/// A real key for unit tests elsewhere in `key/`: example credentials, us-west-2, 15
/// minutes, signed at a fixed instant (so tests that decode it know every field).
#[cfg(test)]
pub(crate) fn sample_key(session_token: Option<&str>) -> String {
    let creds = aws_credential_types::Credentials::new(
        "AKIDEXAMPLE",
        "secret",
        session_token.map(str::to_owned),
        None,
        "t",
    );
    mint(
        &creds,
        &super::Region::new("us-west-2").unwrap(),
        super::Lifetime::from_secs(900).unwrap(),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_680_000),
    )
    .unwrap()
    .key
    .expose()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::LifetimeError;

    fn creds(expiry: Option<SystemTime>, token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            expiry,
            "test",
        )
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Produced by aws-bedrock-token-generator 1.1.0 (botocore 1.44.8) with
    /// `botocore.auth.get_current_datetime` frozen at 2026-11-26T08:00:00Z;
    /// `tests/oracle/bedrock_token_oracle.py` regenerates it.
    const PYTHON_NO_TOKEN: &str = "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbiZYLUFtei1BbGdvcml0aG09QVdTNC1ITUFDLVNIQTI1NiZYLUFtei1DcmVkZW50aWFsPUFLSURFWEFNUExFJTJGMjAyNjExMjYlMkZ1cy13ZXN0LTIlMkZiZWRyb2NrJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNjExMjZUMDgwMDAwWiZYLUFtei1FeHBpcmVzPTM2MDAmWC1BbXotU2lnbmVkSGVhZGVycz1ob3N0JlgtQW16LVNpZ25hdHVyZT0yNDlmZDJhMmNhZTFkYTE4YWUyODdkZWUxMmVmOGJmNTg0NzU4ZDVlY2I1NjljMDQ0MGRjMmQyNGNhZmE5ODg3JlZlcnNpb249MQ==";
    const PYTHON_WITH_TOKEN: &str = "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbiZYLUFtei1BbGdvcml0aG09QVdTNC1ITUFDLVNIQTI1NiZYLUFtei1DcmVkZW50aWFsPUFLSURFWEFNUExFJTJGMjAyNjExMjYlMkZ1cy13ZXN0LTIlMkZiZWRyb2NrJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNjExMjZUMDgwMDAwWiZYLUFtei1FeHBpcmVzPTM2MDAmWC1BbXotU2lnbmVkSGVhZGVycz1ob3N0JlgtQW16LVNlY3VyaXR5LVRva2VuPUZRb0clMkJaWEl2JTJGWSUzRCUzRCZYLUFtei1TaWduYXR1cmU9YjA3MmExMGY0MTAzMTUyNjE3ZDNhNjJlMmMzMDQxYWM5ZTM5YzkxODU3OGZmMDYwM2MxOTk2NmFkNjZkZDhjMSZWZXJzaW9uPTE=";
    /// 2026-11-26T08:00:00Z
    const SIGNED_AT: u64 = 1_795_680_000;

    #[test]
    fn matches_the_official_generator_without_session_token() {
        let region = Region::new("us-west-2").unwrap();
        let minted = mint(
            &creds(None, None),
            &region,
            Lifetime::from_secs(3600).unwrap(),
            at(SIGNED_AT) + Duration::from_millis(999),
        )
        .unwrap();
        assert_eq!(minted.key.expose(), PYTHON_NO_TOKEN);
        assert_eq!(minted.meta.issued_at, at(SIGNED_AT));
        assert_eq!(minted.meta.expires_at, at(SIGNED_AT + 3600));
        assert!(!minted.meta.has_session_token);
    }

    #[test]
    fn matches_the_official_generator_with_session_token() {
        let region = Region::new("us-west-2").unwrap();
        let minted = mint(
            &creds(None, Some("FQoG+ZXIv/Y==")),
            &region,
            Lifetime::from_secs(3600).unwrap(),
            at(SIGNED_AT),
        )
        .unwrap();
        assert_eq!(minted.key.expose(), PYTHON_WITH_TOKEN);
        assert!(minted.meta.has_session_token);
    }

    #[test]
    fn credential_expiry_caps_the_key_and_its_signed_lifetime() {
        let region = Region::new("eu-central-1").unwrap();
        let expiry = at(SIGNED_AT + 1200) + Duration::from_millis(700);
        let minted = mint(
            &creds(Some(expiry), Some("tok")),
            &region,
            Lifetime::from_secs(43200).unwrap(),
            at(SIGNED_AT) + Duration::from_millis(300),
        )
        .unwrap();
        assert_eq!(minted.meta.expires_at, at(SIGNED_AT + 1200));
        assert!(minted.meta.expires_at <= expiry);
        assert_eq!(minted.meta.lifetime(), Duration::from_secs(1200));
        assert_eq!(minted.credentials_expiry, Some(expiry));
        let decoded = crate::key::decode::decode(minted.key.expose()).unwrap();
        assert_eq!(decoded.lifetime, Duration::from_secs(1200));
    }

    #[test]
    fn effective_lifetime_boundaries() {
        let requested = Lifetime::from_secs(3600).unwrap();
        let now = at(SIGNED_AT);
        // No expiry: the requested lifetime.
        assert_eq!(
            effective_lifetime(requested, None, now, now),
            Some(Duration::from_secs(3600))
        );
        // Expiry after the requested lifetime: still the requested lifetime.
        assert_eq!(
            effective_lifetime(requested, Some(at(SIGNED_AT + 7200)), now, now),
            Some(Duration::from_secs(3600))
        );
        // Exactly at the requested lifetime.
        assert_eq!(
            effective_lifetime(requested, Some(at(SIGNED_AT + 3600)), now, now),
            Some(Duration::from_secs(3600))
        );
        // Expiry before: capped.
        assert_eq!(
            effective_lifetime(requested, Some(at(SIGNED_AT + 900)), now, now),
            Some(Duration::from_secs(900))
        );
        // One second left: a one-second key.
        assert_eq!(
            effective_lifetime(requested, Some(at(SIGNED_AT + 1)), now, now),
            Some(Duration::from_secs(1))
        );
        // Under a second, exactly now, or past: no key.
        let almost = now + Duration::from_millis(999);
        assert_eq!(effective_lifetime(requested, Some(almost), now, now), None);
        assert_eq!(effective_lifetime(requested, Some(now), now, now), None);
        assert_eq!(
            effective_lifetime(requested, Some(at(SIGNED_AT - 60)), now, now),
            None
        );
    }

    #[test]
    fn expired_credentials_are_an_error_not_a_dead_key() {
        let region = Region::new("us-east-1").unwrap();
        let err = mint(
            &creds(Some(at(SIGNED_AT - 1)), None),
            &region,
            Lifetime::from_secs(60).unwrap(),
            at(SIGNED_AT),
        )
        .unwrap_err();
        assert!(matches!(err, MintError::CredentialsExpired { .. }));
        assert!(err.to_string().contains("AKIDEXAMPLE"), "{err}");
    }

    #[test]
    fn lifetime_bounds() {
        assert!(Lifetime::from_secs(0).is_err());
        assert!(Lifetime::from_secs(1).is_ok());
        assert!(Lifetime::from_secs(43200).is_ok());
        assert!(matches!(
            Lifetime::from_secs(43201),
            Err(LifetimeError::TooLong(_))
        ));
        assert!(matches!(
            "1500ms".parse::<Lifetime>(),
            Err(LifetimeError::Fractional(_))
        ));
        assert_eq!("30m".parse::<Lifetime>().unwrap().get().as_secs(), 1800);
        // The value as the user wrote it, not rounded to "12h" or "1s".
        assert_eq!(
            "43200001ms".parse::<Lifetime>().unwrap_err().to_string(),
            "lifetime 43200001ms is longer than the maximum of 12h that Amazon Bedrock accepts"
        );
        assert_eq!(
            " 1500ms".parse::<Lifetime>().unwrap_err().to_string(),
            "lifetime 1500ms is not a whole number of seconds"
        );
    }

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "ap-southeast-7",
            "us-gov-west-1",
        ] {
            assert!(Region::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "US-EAST-1", "us east 1", "-us", "us-", "us/east", "é"] {
            assert!(Region::new(bad).is_err(), "{bad:?}");
        }
    }
}
