//! The on-disk formats of a key, shared by `mint --format` and the file sinks.
//!
//! - raw: the key and one newline, nothing else, so `$(cat file)` is the key;
//! - json: `{"key","region","issued_at","expires_at"}`, timestamps RFC 3339 UTC.

use serde::Serialize;
use zeroize::Zeroizing;

use crate::key::{ApiKey, KeyMeta};

/// The raw format: the key and a newline.
pub fn raw(key: &ApiKey) -> Zeroizing<String> {
    let mut out = String::with_capacity(key.expose().len() + 1);
    out.push_str(key.expose());
    out.push('\n');
    Zeroizing::new(out)
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
