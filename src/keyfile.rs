//! The on-disk formats of a key, shared by `mint --format` and the file sinks.
//!
//! - raw: exactly the key, no trailing newline: readers that take a file verbatim
//!   (LiteLLM's `oidc/file/…`, credential helpers that `cat` it) would send a newline
//!   as part of the `Authorization` header, which is why Kubernetes service-account
//!   token files and Vault Agent's file sink carry none either. Files written by older
//!   versions end in one; every reader accepts both ([`parse_raw`]);
//! - json: `{"key","region","issued_at","expires_at"}`, timestamps RFC 3339 UTC.

use serde::Serialize;
use zeroize::Zeroizing;

use crate::key::{ApiKey, KeyMeta};

/// The raw format: the key, nothing else.
pub fn raw(key: &ApiKey) -> Zeroizing<String> {
    Zeroizing::new(key.expose().to_owned())
}

/// The key a raw file holds, in the current form (the key alone) or the one older
/// versions wrote (the key and a newline, or CRLF from an editor). `None` when
/// something else is in it.
pub fn parse_raw(bytes: &[u8]) -> Option<&str> {
    let bytes = bytes
        .strip_suffix(b"\n")
        .map_or(bytes, |b| b.strip_suffix(b"\r").unwrap_or(b));
    let text = std::str::from_utf8(bytes).ok()?;
    (text.starts_with(crate::key::KEY_PREFIX) && !text.contains(char::is_whitespace))
        .then_some(text)
}

/// The JSON format, without a trailing newline.
pub fn json(key: &ApiKey, meta: &KeyMeta) -> Zeroizing<String> {
    #[derive(Serialize)]
    struct Doc<'a> {
        key: &'a str,
        region: &'a str,
        issued_at: String,
        expires_at: String,
    }
    let doc = Doc {
        key: key.expose(),
        region: &meta.region,
        issued_at: crate::time::rfc3339(meta.issued_at),
        expires_at: crate::time::rfc3339(meta.expires_at),
    };
    // Serializing strings and a flat struct cannot fail.
    Zeroizing::new(serde_json::to_string(&doc).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_is_the_key_alone_and_both_forms_read_back() {
        let key = ApiKey::new("bedrock-api-key-YmVkcm9jaw==".to_owned());
        assert_eq!(raw(&key).as_str(), key.expose());
        for stored in ["", "\n", "\r\n"] {
            let bytes = format!("{}{stored}", key.expose());
            assert_eq!(
                parse_raw(bytes.as_bytes()),
                Some(key.expose()),
                "{stored:?}"
            );
        }
        for garbage in [
            "",
            "\n",
            "sk-abc",
            "bedrock-api-key-a\n\n",
            "bedrock-api-key-a b",
        ] {
            assert_eq!(parse_raw(garbage.as_bytes()), None, "{garbage:?}");
        }
    }
}
