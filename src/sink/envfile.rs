//! The env-file sink: one `NAME=key` line in a dotenv file, everything else untouched.
//!
//! The file must work for systemd `EnvironmentFile=`, `docker --env-file` and
//! `set -a; . file`. The three agree only on the plain form `NAME=value` with a value
//! free of quotes, spaces and shell metacharacters (Docker takes the value literally,
//! quotes included), so that is exactly what is written; a key is base64 and a prefix,
//! which needs no quoting.
//!
//! [`merge`] is pure and works on bytes: every line that does not assign the variable
//! is kept byte-for-byte (comments, `export` lines, quoted and multi-line values, CRLF
//! endings, invalid UTF-8, a last line without a newline). Each assignment of the
//! variable is rewritten in place, keeping its indentation, an `export ` prefix and its
//! line ending; with no assignment, one is appended. The file itself is written by
//! [`super::atomic`]. Where the assignments are comes from the one dotenv scanner in
//! [`crate::key::format`], which every reader of the file (this sink's `read`, `status`,
//! `inspect --file`) also uses.

use zeroize::Zeroizing;

use super::atomic::AtomicFile;
use super::{EnvFileSpec, Sink, SinkError, WriteOutcome};
use crate::key::format::{ParseError, dotenv_assignments};
use crate::key::{ApiKey, KeyMeta};

/// An env-file sink built from its spec.
#[derive(Debug)]
pub struct EnvFileSink {
    variable: String,
    file: AtomicFile,
}

impl EnvFileSink {
    pub fn new(spec: &EnvFileSpec) -> Self {
        let sink = format!("env-file {} ({})", spec.path.display(), spec.variable);
        Self {
            variable: spec.variable.clone(),
            file: AtomicFile::new(sink, spec.path.clone(), spec.access.clone()),
        }
    }
}

impl Sink for EnvFileSink {
    fn describe(&self) -> String {
        format!(
            "env-file {} ({})",
            self.file.path().display(),
            self.variable
        )
    }

    fn write(&self, key: &ApiKey, _meta: &KeyMeta) -> Result<WriteOutcome, SinkError> {
        if !is_safe_value(key.expose()) {
            return Err(SinkError::new(
                self.describe(),
                "rendering the env-file line",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "key {} has characters that would need quoting, which docker --env-file does not understand",
                        key.fingerprint()
                    ),
                ),
            ));
        }
        self.file.write_with(|current| {
            merge(current.unwrap_or_default(), &self.variable, key.expose()).map_err(|e| {
                SinkError::new(
                    self.describe(),
                    format!("parsing {}", self.file.path().display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })
        })
    }

    fn read(&self) -> Result<Option<ApiKey>, SinkError> {
        let Some(bytes) = self.file.read()? else {
            return Ok(None);
        };
        Ok(crate::key::format::value_of(&bytes, &self.variable).map(|v| ApiKey::new(v.to_owned())))
    }
}

/// Whether `value` can stand unquoted in all three consumers.
pub fn is_safe_value(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'.')
        })
}

/// `text` with every assignment of `variable` set to `value` (or one appended).
///
/// Pure and idempotent; `value` must satisfy [`is_safe_value`] for the result to mean
/// the same to every consumer. A file with a quote that is never closed is refused
/// rather than guessed at: editing it could corrupt the lines the user cares about.
pub fn merge(text: &[u8], variable: &str, value: &str) -> Result<Zeroizing<Vec<u8>>, ParseError> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        text.len() + variable.len() + value.len() + 2,
    ));
    let mut copied = 0;
    let mut found = false;
    for a in dotenv_assignments(text)? {
        if &text[a.name_start..a.name_end] != variable.as_bytes() {
            continue;
        }
        found = true;
        out.extend_from_slice(&text[copied..a.start]);
        // Keep indentation and `export `; normalise `NAME = v` to `NAME=v`.
        out.extend_from_slice(&text[a.start..a.name_start]);
        out.extend_from_slice(variable.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        copied = a.end;
    }
    out.extend_from_slice(&text[copied..]);
    if !found {
        let ending = line_ending(text);
        if ends_with_continuation(text) {
            // `A=x\` would swallow our line as its continuation; a blank line ends it.
            if !out.ends_with(b"\n") {
                out.extend_from_slice(ending);
            }
            out.extend_from_slice(ending);
        } else if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(ending);
        }
        out.extend_from_slice(variable.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(ending);
    }
    Ok(out)
}

/// Whether the last line ends with an unescaped backslash, which continues it.
fn ends_with_continuation(text: &[u8]) -> bool {
    let mut end = text.len();
    if text.ends_with(b"\n") {
        end -= 1;
        if text[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    let backslashes = text[..end]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    backslashes % 2 == 1
}

/// `\r\n` for a file whose lines end so, else `\n`.
fn line_ending(text: &[u8]) -> &'static [u8] {
    match text.iter().position(|&b| b == b'\n') {
        Some(p) if p > 0 && text[p - 1] == b'\r' => b"\r\n",
        _ => b"\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::format::value_of;
    use proptest::prelude::*;

    const KEY: &str = "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249==";

    fn merged(text: &str) -> String {
        String::from_utf8(merge(text.as_bytes(), "TOKEN", KEY).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn creates_and_appends() {
        assert_eq!(merged(""), format!("TOKEN={KEY}\n"));
        assert_eq!(merged("A=1\n"), format!("A=1\nTOKEN={KEY}\n"));
        assert_eq!(merged("A=1"), format!("A=1\nTOKEN={KEY}\n"));
        assert_eq!(
            merged("A=1\r\nB=2\r\n"),
            format!("A=1\r\nB=2\r\nTOKEN={KEY}\r\n")
        );
        // A trailing line continuation must not swallow the new line.
        assert_eq!(merged("A=1\\"), format!("A=1\\\n\nTOKEN={KEY}\n"));
        assert_eq!(merged("A=1\\\n"), format!("A=1\\\n\nTOKEN={KEY}\n"));
        // Commented-out assignments and look-alike names are not ours.
        assert_eq!(
            merged("# TOKEN=old\nTOKEN_X=1\nXTOKEN=2\n"),
            format!("# TOKEN=old\nTOKEN_X=1\nXTOKEN=2\nTOKEN={KEY}\n")
        );
    }

    #[test]
    fn replaces_every_assignment_and_keeps_everything_else() {
        let before = "# header\n\n  export TOKEN='old value'\r\nA=\"multi\nTOKEN=inside a quoted value\"\nB=x # TOKEN=comment\nTOKEN = \"x\" # trailing\nC='it''s'\nTOKEN=last";
        let after = format!(
            "# header\n\n  export TOKEN={KEY}\r\nA=\"multi\nTOKEN=inside a quoted value\"\nB=x # TOKEN=comment\nTOKEN={KEY}\nC='it''s'\nTOKEN={KEY}"
        );
        assert_eq!(merged(before), after);
        assert_eq!(value_of(after.as_bytes(), "TOKEN"), Some(KEY));
        assert_eq!(
            value_of(after.as_bytes(), "A"),
            Some("multi\nTOKEN=inside a quoted value")
        );
        assert_eq!(merged(&after), after, "idempotent");
    }

    #[test]
    fn refuses_a_file_with_an_unclosed_quote() {
        assert_eq!(
            merge(b"# c\nA=1\nB=\"open\nTOKEN=x\n", "TOKEN", KEY),
            Err(ParseError { line: 3 })
        );
    }

    #[test]
    fn reads_values_back() {
        assert_eq!(value_of(b"export T=\"abc\"\n", "T"), Some("abc"));
        assert_eq!(value_of(b"T=1\nT=2\n", "T"), Some("2"));
        assert_eq!(value_of(b"# T=1\n", "T"), None);
    }

    #[test]
    fn safe_values() {
        assert!(is_safe_value(KEY));
        for bad in ["", "a b", "a\"b", "a$b", "a\nb", "a'b", "a#b"] {
            assert!(!is_safe_value(bad), "{bad:?}");
        }
    }

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Z_]{1,6}=[a-z0-9 '\"#\\\\]{0,8}",
            "export [A-Z_]{1,6}=[a-z0-9]{0,8}",
            "# [ -~]{0,12}",
            "TOKEN=[a-z0-9'\"]{0,8}",
            "[ -~]{0,12}",
            Just(String::new()),
        ]
    }

    fn file() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec((line(), prop::bool::ANY), 0..8),
            prop::bool::ANY,
        )
            .prop_map(|(lines, last_newline)| {
                let mut out = Vec::new();
                for (i, (l, crlf)) in lines.iter().enumerate() {
                    out.extend_from_slice(l.as_bytes());
                    if i + 1 < lines.len() || last_newline {
                        out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                    }
                }
                out
            })
    }

    proptest! {
        #[test]
        fn merge_sets_the_value_and_is_idempotent(text in file()) {
            let Ok(once) = merge(&text, "TOKEN", KEY) else { return Ok(()) };
            prop_assert_eq!(value_of(&once, "TOKEN"), Some(KEY));
            let twice = merge(&once, "TOKEN", KEY).unwrap();
            prop_assert_eq!(once.as_slice(), twice.as_slice());
            // A second key replaces the first in the same places.
            let other = merge(&once, "TOKEN", "other").unwrap();
            prop_assert_eq!(value_of(&other, "TOKEN"), Some("other"));
            let back = merge(&other, "TOKEN", KEY).unwrap();
            prop_assert_eq!(back.as_slice(), once.as_slice());
        }

        #[test]
        fn other_assignments_are_untouched(text in file()) {
            let Ok(after) = merge(&text, "TOKEN", KEY) else { return Ok(()) };
            let others = |t: &[u8]| dotenv_assignments(t)
                .unwrap()
                .into_iter()
                .filter(|a| &t[a.name_start..a.name_end] != b"TOKEN")
                .map(|a| t[a.start..a.end].to_vec())
                .collect::<Vec<_>>();
            let (before, after) = (others(&text), others(&after));
            prop_assert_eq!(before.len(), after.len());
            // Byte-for-byte; only a continuation at the very end of the file gains the
            // line ending that closes it.
            for (b, a) in before.iter().zip(&after) {
                prop_assert!(a.starts_with(b) && a.len() - b.len() <= 2, "{:?} -> {:?}", b, a);
            }
        }

        #[test]
        fn a_file_without_the_variable_is_a_prefix_of_the_result(text in file()) {
            let Ok(found) = dotenv_assignments(&text) else { return Ok(()) };
            prop_assume!(!found.iter().any(|a| &text[a.name_start..a.name_end] == b"TOKEN"));
            let after = merge(&text, "TOKEN", KEY).unwrap();
            prop_assert!(after.starts_with(&text));
        }
    }
}
