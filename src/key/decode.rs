//! Offline decoding of a key: what it is scoped to and how long it lives.
//!
//! A key carries everything needed to judge it: the region and access key id in the
//! credential scope, the signing instant in `X-Amz-Date` and its true lifetime in
//! `X-Amz-Expires` (bedrock-keyd signs with the *effective* lifetime). So `inspect`
//! and `status` work from the key alone, with no network and no credentials.
//!
//! The decoder is strict and precise, since its errors are what an operator sees when
//! a file holds the wrong thing. It never returns or prints the signature or the
//! session token: [`DecodedKey`] has no field for either.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::percent_decode_str;

use crate::key::mint::{ACTION, HOST, SERVICE};
use crate::key::{KEY_PREFIX, Lifetime};

/// What a key says about itself. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedKey {
    pub region: String,
    pub access_key_id: String,
    pub issued_at: SystemTime,
    /// `X-Amz-Expires`.
    pub lifetime: Duration,
    pub expires_at: SystemTime,
    pub has_session_token: bool,
}

impl DecodedKey {
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// How far ahead of `now` the key was signed, when that is more than
    /// [`crate::schedule::MAX_SIGNED_AHEAD`] (the key is then invalid).
    pub fn signed_in_future(&self, now: SystemTime) -> Option<Duration> {
        crate::schedule::Validity::new(self.issued_at, self.expires_at).signed_in_future(now)
    }

    /// Why the key cannot be used at `now` (signed in the future, or expired); `None`
    /// while it is valid. `inspect`, `status` and `once --if-valid-for` all judge with it.
    pub fn invalid_at(&self, now: SystemTime) -> Option<Invalidity> {
        if let Some(ahead) = self.signed_in_future(now) {
            return Some(Invalidity::SignedInFuture {
                issued_at: self.issued_at,
                ahead,
            });
        }
        self.is_expired(now).then(|| Invalidity::Expired {
            at: self.expires_at,
            ago: now.duration_since(self.expires_at).unwrap_or_default(),
        })
    }
}

/// Why a well-formed key is not valid now. Displayed after "the key" (`inspect`) or a
/// sink's name (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidity {
    /// Signed more than [`crate::schedule::MAX_SIGNED_AHEAD`] after this machine's clock.
    SignedInFuture {
        issued_at: SystemTime,
        ahead: Duration,
    },
    Expired {
        at: SystemTime,
        ago: Duration,
    },
}

impl std::fmt::Display for Invalidity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::clock::duration::format;
        use crate::clock::time::rfc3339;
        match self {
            Self::SignedInFuture { issued_at, ahead } => write!(
                f,
                "is signed in the future: issued at {}, {} ahead of this machine's clock \
                 (more than {} is not clock skew)",
                rfc3339(*issued_at),
                format(*ahead),
                format(crate::schedule::MAX_SIGNED_AHEAD)
            ),
            Self::Expired { at, ago } => {
                write!(f, "expired at {} ({} ago)", rfc3339(*at), format(*ago))
            }
        }
    }
}

/// Why a string is not a usable key. Messages never quote the input (it may be a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("no key: the input is empty")]
    Empty,
    #[error("not a Bedrock API key: it does not start with {KEY_PREFIX:?}")]
    WrongPrefix,
    #[error("not a Bedrock API key: the part after {KEY_PREFIX:?} is not valid base64 ({0})")]
    BadBase64(String),
    #[error("not a Bedrock API key: the decoded payload is not UTF-8 text")]
    NotText,
    #[error(
        "not a short-term Bedrock API key: the decoded payload is not a presigned {HOST}/?… URL"
    )]
    NotPresignedUrl,
    #[error("malformed presigned URL: query parameter {0:?} is not percent-encoded correctly")]
    BadEncoding(String),
    #[error("malformed presigned URL: query parameter {0:?} appears more than once")]
    Duplicate(String),
    #[error("malformed presigned URL: missing query parameter {0}")]
    Missing(&'static str),
    #[error("malformed presigned URL: {name} is {found:?}, expected {expected:?}")]
    Unexpected {
        name: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error(
        "malformed X-Amz-Credential: expected ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request"
    )]
    BadCredentialScope,
    #[error("the key is for service {0:?}, not {SERVICE:?}")]
    WrongService(String),
    #[error("malformed X-Amz-Date {0:?}: expected YYYYMMDDTHHMMSSZ")]
    BadDate(String),
    #[error("X-Amz-Date {date} does not match the credential scope date {scope}")]
    DateMismatch { date: String, scope: String },
    #[error("malformed X-Amz-Expires {0:?}: expected whole seconds from 1 to 43200")]
    BadExpires(String),
    #[error("malformed X-Amz-Signature: expected 64 lowercase hex digits")]
    BadSignature,
}

/// Decodes and validates a key. Surrounding whitespace is ignored.
pub fn decode(key: &str) -> Result<DecodedKey, InspectError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(InspectError::Empty);
    }
    let encoded = key
        .strip_prefix(KEY_PREFIX)
        .ok_or(InspectError::WrongPrefix)?;
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| InspectError::BadBase64(e.to_string()))?;
    let url = zeroize::Zeroizing::new(String::from_utf8(bytes).map_err(|_| InspectError::NotText)?);
    let query = url
        .strip_prefix(HOST)
        .and_then(|rest| rest.strip_prefix("/?"))
        .ok_or(InspectError::NotPresignedUrl)?;

    let mut fields = Fields::default();
    for pair in query.split('&') {
        let (name, raw) = pair.split_once('=').ok_or(InspectError::NotPresignedUrl)?;
        let slot = match name {
            "Action" => &mut fields.action,
            "X-Amz-Algorithm" => &mut fields.algorithm,
            "X-Amz-Credential" => &mut fields.credential,
            "X-Amz-Date" => &mut fields.date,
            "X-Amz-Expires" => &mut fields.expires,
            "X-Amz-SignedHeaders" => &mut fields.signed_headers,
            "X-Amz-Signature" => &mut fields.signature,
            "X-Amz-Security-Token" => &mut fields.security_token,
            "Version" => &mut fields.version,
            // Unknown parameters would change what was signed; be strict.
            _ => {
                return Err(InspectError::Unexpected {
                    name: "query parameter",
                    found: name.chars().take(40).collect(),
                    expected: "only SigV4 presign parameters, Action and Version",
                });
            }
        };
        if slot.is_some() {
            return Err(InspectError::Duplicate(name.to_owned()));
        }
        let value = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| InspectError::BadEncoding(name.to_owned()))?;
        *slot = Some(value.into_owned());
    }

    expect(&fields.action, "Action", ACTION)?;
    expect(&fields.algorithm, "X-Amz-Algorithm", "AWS4-HMAC-SHA256")?;
    expect(&fields.version, "Version", "1")?;
    let credential = fields
        .credential
        .as_deref()
        .ok_or(InspectError::Missing("X-Amz-Credential"))?;
    let date = fields
        .date
        .as_deref()
        .ok_or(InspectError::Missing("X-Amz-Date"))?;
    let expires = fields
        .expires
        .as_deref()
        .ok_or(InspectError::Missing("X-Amz-Expires"))?;
    let signed_headers = fields
        .signed_headers
        .as_deref()
        .ok_or(InspectError::Missing("X-Amz-SignedHeaders"))?;
    let signature = fields
        .signature
        .as_deref()
        .ok_or(InspectError::Missing("X-Amz-Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, terminator] = scope[..] else {
        return Err(InspectError::BadCredentialScope);
    };
    if access_key_id.is_empty() || region.is_empty() || terminator != "aws4_request" {
        return Err(InspectError::BadCredentialScope);
    }
    if service != SERVICE {
        return Err(InspectError::WrongService(service.to_owned()));
    }
    let issued_at = crate::clock::time::parse_amz_date(date)
        .ok_or_else(|| InspectError::BadDate(date.to_owned()))?;
    if !date.starts_with(scope_date) || scope_date.len() != 8 {
        return Err(InspectError::DateMismatch {
            date: date.to_owned(),
            scope: scope_date.to_owned(),
        });
    }
    let lifetime = expires
        .parse::<u64>()
        .ok()
        .filter(|secs| {
            (1..=Lifetime::MAX.get().as_secs()).contains(secs) && !expires.starts_with('+')
        })
        .map(Duration::from_secs)
        .ok_or_else(|| InspectError::BadExpires(expires.to_owned()))?;
    if signed_headers.is_empty() || !signed_headers.split(';').any(|h| h == "host") {
        return Err(InspectError::Unexpected {
            name: "X-Amz-SignedHeaders",
            found: signed_headers.to_owned(),
            expected: "host",
        });
    }
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(InspectError::BadSignature);
    }
    let has_session_token = match fields.security_token.as_deref() {
        Some("") => return Err(InspectError::Missing("X-Amz-Security-Token value")),
        Some(_) => true,
        None => false,
    };
    Ok(DecodedKey {
        region: region.to_owned(),
        access_key_id: access_key_id.to_owned(),
        issued_at,
        lifetime,
        expires_at: issued_at + lifetime,
        has_session_token,
    })
}

/// The decoded URL holds the signature and maybe a session token: wiped on drop.
#[derive(Default, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct Fields {
    action: Option<String>,
    algorithm: Option<String>,
    credential: Option<String>,
    date: Option<String>,
    expires: Option<String>,
    signed_headers: Option<String>,
    signature: Option<String>,
    security_token: Option<String>,
    version: Option<String>,
}

fn expect(
    value: &Option<String>,
    name: &'static str,
    expected: &'static str,
) -> Result<(), InspectError> {
    match value.as_deref() {
        None => Err(InspectError::Missing(name)),
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(InspectError::Unexpected {
            name,
            found: found.chars().take(64).collect(),
            expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    use crate::key::mint::sample_key as sample;

    fn reencode(key: &str, edit: impl Fn(String) -> String) -> String {
        let url = String::from_utf8(
            BASE64
                .decode(key.strip_prefix(KEY_PREFIX).unwrap())
                .unwrap(),
        )
        .unwrap();
        format!("{KEY_PREFIX}{}", BASE64.encode(edit(url)))
    }

    #[test]
    fn decodes_a_minted_key() {
        let decoded = decode(&sample(Some("tok+/="))).unwrap();
        assert_eq!(decoded.region, "us-west-2");
        assert_eq!(decoded.access_key_id, "AKIDEXAMPLE");
        assert_eq!(decoded.lifetime, Duration::from_secs(900));
        assert_eq!(
            decoded.issued_at,
            UNIX_EPOCH + Duration::from_secs(1_795_680_000)
        );
        assert!(decoded.has_session_token);
        assert!(!decode(&sample(None)).unwrap().has_session_token);
    }

    #[test]
    fn precise_errors_for_garbage() {
        let key = sample(None);
        assert_eq!(decode("  \n"), Err(InspectError::Empty));
        assert_eq!(decode("sk-abc"), Err(InspectError::WrongPrefix));
        assert!(matches!(
            decode("bedrock-api-key-***"),
            Err(InspectError::BadBase64(_))
        ));
        assert_eq!(
            decode(&format!("{KEY_PREFIX}{}", BASE64.encode([0xff, 0xfe]))),
            Err(InspectError::NotText)
        );
        assert_eq!(
            decode(&format!(
                "{KEY_PREFIX}{}",
                BASE64.encode("example.com/?a=b")
            )),
            Err(InspectError::NotPresignedUrl)
        );
        let wrong_service = reencode(&key, |u| u.replace("%2Fbedrock%2F", "%2Fs3%2F"));
        assert_eq!(
            decode(&wrong_service),
            Err(InspectError::WrongService("s3".into()))
        );
        let no_expires = reencode(&key, |u| u.replace("&X-Amz-Expires=900", ""));
        assert_eq!(
            decode(&no_expires),
            Err(InspectError::Missing("X-Amz-Expires"))
        );
        let long = reencode(&key, |u| {
            u.replace("X-Amz-Expires=900", "X-Amz-Expires=43201")
        });
        assert!(matches!(decode(&long), Err(InspectError::BadExpires(_))));
        let dup = reencode(&key, |u| format!("{u}&Version=1"));
        assert!(matches!(decode(&dup), Err(InspectError::Duplicate(_))));
        let no_version = reencode(&key, |u| u.replace("&Version=1", ""));
        assert_eq!(decode(&no_version), Err(InspectError::Missing("Version")));
    }

    #[test]
    fn errors_never_quote_the_signature() {
        let key = sample(Some("SESSIONTOKEN"));
        let bad = reencode(&key, |u| {
            u.replace("Action=CallWithBearerToken", "Action=Other")
        });
        let msg = decode(&bad).unwrap_err().to_string();
        assert!(!msg.contains("SESSIONTOKEN"));
    }
}
