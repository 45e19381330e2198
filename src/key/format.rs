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
//! sink and `token` (through the sinks) read with. Dotenv files have one scanner
//! here ([`value_of`], [`assigns`]; comments, `export`, quotes, CRLF, multi-line
//! values), which the env-file sink also edits with (`sink::envfile::merge`).

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
/// (`{"key": …}`), or a dotenv file with a `NAME=key` line. `variable` picks the
/// assignment in a dotenv file; `None` takes the last one whose value looks like a key.
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
    // A dotenv file, read by the one scanner the env-file sink edits with (comments,
    // `export`, quotes, CRLF, multi-line values): the last assignment, as every
    // consumer of the file takes it.
    let value = match variable {
        Some(v) => value_of(text.as_bytes(), v),
        None => last_key_value(text.as_bytes()),
    };
    if let Some(value) = value {
        return Ok(value.to_owned());
    }
    Err(InspectError::WrongPrefix)
}

// Dotenv files: the one scanner, which the env-file sink edits with and every
// reader of a dotenv file reads with.

/// One assignment found in a dotenv file: `span` covers it from the start of its
/// first line to the end of its value (line ending excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub(crate) start: usize,
    /// Where the name starts: after indentation and `export `.
    pub(crate) name_start: usize,
    pub(crate) name_end: usize,
    /// After the `=`.
    pub(crate) value_start: usize,
    pub(crate) end: usize,
}

/// Why a dotenv file cannot be edited safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "line {line}: a quoted value is never closed, so where the assignments are is ambiguous; fix the file by hand"
)]
pub struct ParseError {
    /// 1-based line of the assignment whose quote stays open.
    pub line: usize,
}

/// Every assignment in `text`, in order. Lines inside a multi-line quoted value are
/// part of that value, never assignments of their own.
pub(crate) fn dotenv_assignments(text: &[u8]) -> Result<Vec<Assignment>, ParseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let line_end = find_line_end(text, pos);
        let Some((name_start, name_end, value_start)) = parse_head(&text[pos..line_end]) else {
            pos = next_line(text, line_end);
            continue;
        };
        let end = value_end(text, pos + value_start).ok_or_else(|| ParseError {
            line: 1 + text[..pos].iter().filter(|&&b| b == b'\n').count(),
        })?;
        out.push(Assignment {
            start: pos,
            name_start: pos + name_start,
            name_end: pos + name_end,
            value_start: pos + value_start,
            end,
        });
        pos = next_line(text, end);
    }
    Ok(out)
}

/// `[ws][export ws]NAME[ws]=` at the start of a line: offsets of the name and of the
/// value.
fn parse_head(line: &[u8]) -> Option<(usize, usize, usize)> {
    let blank = |b: u8| b == b' ' || b == b'\t';
    let mut i = line.iter().position(|&b| !blank(b))?;
    if line[i..].starts_with(b"export") && line.get(i + 6).copied().is_some_and(blank) {
        i += 6;
        while line.get(i).copied().is_some_and(blank) {
            i += 1;
        }
    }
    let name_start = i;
    while line
        .get(i)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        i += 1;
    }
    if i == name_start || line[name_start].is_ascii_digit() {
        return None;
    }
    let name_end = i;
    while line.get(i).copied().is_some_and(blank) {
        i += 1;
    }
    (line.get(i) == Some(&b'=')).then_some((name_start, name_end, i + 1))
}

/// Where a value that starts at `start` ends: at the end of its line, unless a quote
/// or a trailing backslash carries it over to the next ones. `None` for a quote that
/// is never closed.
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut quote: Option<u8> = None;
    while i < text.len() {
        let b = text[i];
        match quote {
            None => match b {
                b'\n' => {
                    return Some(if i > start && text[i - 1] == b'\r' {
                        i - 1
                    } else {
                        i
                    });
                }
                b'\\' => i += 1,
                b'\'' | b'"' => quote = Some(b),
                // An unquoted `#` after blanks starts a comment: quotes in it mean nothing.
                b'#' if i > start && matches!(text[i - 1], b' ' | b'\t') => {
                    return Some(find_line_end(text, i));
                }
                _ => {}
            },
            Some(b'"') => match b {
                b'\\' => i += 1,
                b'"' => quote = None,
                _ => {}
            },
            Some(_) => {
                if b == b'\'' {
                    quote = None;
                }
            }
        }
        i += 1;
    }
    // The last line, or a continuation that runs into the end of the file.
    quote.is_none().then_some(text.len())
}

/// The end of the line that contains `pos`, before any `\r\n` or `\n`.
fn find_line_end(text: &[u8], pos: usize) -> usize {
    let nl = text[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |p| pos + p);
    if nl > pos && text[nl - 1] == b'\r' && nl < text.len() {
        nl - 1
    } else {
        nl
    }
}

/// The start of the line after the one that ends at `end`.
fn next_line(text: &[u8], end: usize) -> usize {
    match text[end..].iter().position(|&b| b == b'\n') {
        Some(p) => end + p + 1,
        None => text.len(),
    }
}

/// The value of the last assignment of `variable` (the one every consumer uses), with
/// one level of matching quotes removed.
pub fn value_of<'a>(text: &'a [u8], variable: &str) -> Option<&'a str> {
    let a = dotenv_assignments(text)
        .ok()?
        .into_iter()
        .rfind(|a| &text[a.name_start..a.name_end] == variable.as_bytes())?;
    unquoted_value(text, &a)
}

/// Whether `text` assigns `variable`. A file the scanner cannot split (a quote that
/// is never closed) counts as assigning it: what is wrong with it is for the reader
/// of the value to say.
pub fn assigns(text: &[u8], variable: &str) -> bool {
    dotenv_assignments(text).map_or(true, |all| {
        all.iter()
            .any(|a| &text[a.name_start..a.name_end] == variable.as_bytes())
    })
}

/// The value of the last assignment whose value looks like a key.
fn last_key_value(text: &[u8]) -> Option<&str> {
    dotenv_assignments(text)
        .ok()?
        .iter()
        .rev()
        .filter_map(|a| unquoted_value(text, a))
        .find(|v| v.starts_with(KEY_PREFIX))
}

/// An assignment's value, trimmed, with one level of matching quotes removed.
fn unquoted_value<'a>(text: &'a [u8], a: &Assignment) -> Option<&'a str> {
    let raw = std::str::from_utf8(&text[a.value_start..a.end])
        .ok()?
        .trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|&q| raw.strip_prefix(q).and_then(|r| r.strip_suffix(q)))
        .unwrap_or(raw);
    Some(unquoted)
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

    use crate::key::mint::sample_key as sample;

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
