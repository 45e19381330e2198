//! The on-disk formats of a key, shared by `mint --format` and the file sinks.
//!
//! - raw: exactly the key, no trailing newline: readers that take a file verbatim
//!   (LiteLLM's `oidc/file/…`, credential helpers that `cat` it) would send a newline
//!   as part of the `Authorization` header, which is why Kubernetes service-account
//!   token files and Vault Agent's file sink carry none either. Files written by older
//!   versions end in one; every reader accepts both ([`parse_raw`]);
//! - json: `{"key","region","issued_at","expires_at"}`, timestamps RFC 3339 UTC.
//!
//! Reading: [`parse_raw`] (is this raw file exactly our key?) and [`extract_key`]
//! (the key in a raw, JSON or dotenv file), which `inspect`, `status`, the file
//! sink and `token` (through the sinks) read with.

use serde::Serialize;
use zeroize::Zeroizing;

use super::decode::InspectError;
use crate::key::{ApiKey, KEY_PREFIX, KeyMeta};

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
        issued_at: crate::clock::time::rfc3339(meta.issued_at),
        expires_at: crate::clock::time::rfc3339(meta.expires_at),
    };
    // Serializing strings and a flat struct cannot fail.
    Zeroizing::new(serde_json::to_string(&doc).unwrap_or_default())
}

/// Pulls a key out of what a sink wrote: a raw key (`key\n`), the JSON sink format
/// (`{"key": …}`), or a dotenv file with a `NAME=key` line. `variable` picks the line
/// in a dotenv file; `None` takes the only line whose value looks like a key.
pub fn extract_key(text: &str, variable: Option<&str>) -> Result<String, InspectError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InspectError::Empty);
    }
    if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct JsonSink {
            key: String,
        }
        return serde_json::from_str::<JsonSink>(trimmed)
            .map(|j| j.key)
            .map_err(|_| InspectError::Unexpected {
                name: "JSON input",
                found: "a JSON document without a string \"key\" field".to_owned(),
                expected: "{\"key\": \"bedrock-api-key-…\", …}",
            });
    }
    if trimmed.starts_with(KEY_PREFIX) || !trimmed.contains('=') {
        return Ok(trimmed.to_owned());
    }
    // A dotenv file: NAME=value lines, comments, optional `export`, optional quotes.
    for line in trimmed.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        let wanted = match variable {
            Some(v) => name.trim() == v,
            None => value.starts_with(KEY_PREFIX),
        };
        if wanted {
            return Ok(value.to_owned());
        }
    }
    Err(InspectError::WrongPrefix)
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

    /// A real key, as the sinks hold it.
    fn sample(token: Option<&str>) -> String {
        use crate::key::{Lifetime, Region};
        use std::time::{Duration, UNIX_EPOCH};
        let creds = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            token.map(str::to_owned),
            None,
            "t",
        );
        crate::key::mint::mint(
            &creds,
            &Region::new("us-west-2").unwrap(),
            Lifetime::from_secs(900).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_795_680_000),
        )
        .unwrap()
        .key
        .expose()
        .to_owned()
    }

    #[test]
    fn extracts_from_sink_formats() {
        let key = sample(None);
        assert_eq!(extract_key(&format!("{key}\n"), None).unwrap(), key);
        assert_eq!(extract_key(&key, None).unwrap(), key);
        let json = format!(r#"{{"key":"{key}","region":"us-west-2"}}"#);
        assert_eq!(extract_key(&json, None).unwrap(), key);
        let env = format!("# c\nOTHER=1\nexport AWS_BEARER_TOKEN_BEDROCK=\"{key}\"\n");
        assert_eq!(extract_key(&env, None).unwrap(), key);
        assert_eq!(
            extract_key(&env, Some("AWS_BEARER_TOKEN_BEDROCK")).unwrap(),
            key
        );
    }
}
