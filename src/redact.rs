//! The one redaction step for text that came from outside and is about to be shown:
//! the stderr of a failing `credential_process` (inside the SDK's error), and any
//! value a config error echoes back (a key or secret pasted into the wrong field).
//!
//! [`redact`] replaces whatever is shaped like an AWS credential or a Bedrock key with
//! a label saying what was there, so the message stays useful ("login failed for
//! [redacted access key id]") without repeating the secret:
//!
//! - a Bedrock key: `bedrock-api-key-` and what follows, or its base64 payload alone
//!   (which always starts with the base64 of `bedrock.amazonaws.com/`);
//! - an access key id: `AKIA` or `ASIA` and 16 upper-case letters or digits (not a
//!   secret, AWS says, but half of a pair: [`redact`] replaces it in outside text;
//!   [`redact_secrets`] keeps it, for our own messages that name it on purpose,
//!   e.g. "returned credentials (access key ASIA…) that expired at …");
//! - a session token: a base64 run starting like STS tokens do (`IQoJ`, `AQoD`,
//!   `FwoG`, `FQoG`), or any base64 run of 100 characters or more;
//! - a secret access key: a base64 run of exactly 40 characters that mixes upper- and
//!   lower-case letters (a random secret does, with overwhelming probability). Not
//!   longer runs: role names in ARNs (`role/ServiceRoleFor…`) are base64-shaped too.
//!
//! A "base64 run" is a maximal run of `A–Z a–z 0–9 + /` plus trailing `=` padding, so
//! spaces and punctuation such as `. : - _ " '` end it. An absolute path (a run that
//! starts with `/` and has a `/` at least every 12 characters) is not a secret: config
//! errors name sink paths. Pure, no allocation when nothing matches, idempotent.

use std::borrow::Cow;

/// The start of every Bedrock key.
const KEY_PREFIX: &str = "bedrock-api-key-";
/// The base64 of `bedrock.amazonaws.com/`: how every key's payload begins.
const KEY_PAYLOAD_START: &str = "YmVkcm9jay5hbWF6b25hd3MuY29t";
/// How STS session tokens begin (base64 of their binary framing), old and new forms.
const SESSION_TOKEN_STARTS: [&str; 4] = ["IQoJ", "AQoD", "FwoG", "FQoG"];
/// Shorter than any session token, longer than any word these prefixes start.
const MIN_PREFIXED_TOKEN: usize = 20;
/// An AWS secret access key is 40 base64 characters.
const SECRET_LEN: usize = 40;
/// Session tokens are hundreds of characters; nothing shorter is called one.
const MIN_TOKEN: usize = 100;

/// `text` with every credential-shaped part replaced by a label (see the module doc):
/// for text from outside (a process's stderr, an SDK's message, a config value).
pub fn redact(text: &str) -> Cow<'_, str> {
    redact_with(text, true)
}

/// [`redact`], except that access key ids are kept: for our own messages, which name
/// the key id on purpose and may quote outside text already passed through [`redact`].
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    redact_with(text, false)
}

fn redact_with(text: &str, key_ids: bool) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // Bytes of `text` before `copied` are already in `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Bytes, not `str` slices: `i` may be inside a multi-byte character. Every
        // match starts and ends on an ASCII byte, so the slices below are safe.
        if bytes[i..].starts_with(KEY_PREFIX.as_bytes()) {
            let end = run_end(bytes, i + KEY_PREFIX.len());
            let o = out.get_or_insert_with(String::new);
            o.push_str(&text[copied..i]);
            o.push_str("[redacted Bedrock key]");
            copied = end;
            i = end;
            continue;
        }
        if !is_base64(bytes[i]) {
            i += 1;
            continue;
        }
        let end = run_end(bytes, i);
        if let Some(label) = classify(&text[i..end], key_ids) {
            let o = out.get_or_insert_with(String::new);
            o.push_str(&text[copied..i]);
            o.push_str(label);
            copied = end;
        }
        i = end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// What a base64 run is, if it is a credential.
fn classify(run: &str, key_ids: bool) -> Option<&'static str> {
    let body = run.trim_end_matches('=');
    let len = body.len();
    if body.starts_with(KEY_PAYLOAD_START) {
        return Some("[redacted Bedrock key]");
    }
    if key_ids
        && len == 20
        && (body.starts_with("AKIA") || body.starts_with("ASIA"))
        && body[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some("[redacted access key id]");
    }
    if len >= MIN_PREFIXED_TOKEN && SESSION_TOKEN_STARTS.iter().any(|p| body.starts_with(p)) {
        return Some("[redacted session token]");
    }
    if is_path(body) {
        return None;
    }
    if len >= MIN_TOKEN {
        return Some("[redacted session token]");
    }
    let mixed = body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase());
    (len == SECRET_LEN && mixed).then_some("[redacted secret]")
}

/// An absolute path rather than random base64: it starts with `/` and has a `/` at
/// least every 12 characters (random base64 has one every 64 on average).
fn is_path(run: &str) -> bool {
    let slashes = run.bytes().filter(|b| *b == b'/').count();
    run.starts_with('/') && slashes >= 3 && slashes * 12 >= run.len()
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// The end of the base64 run starting at `start`, trailing `=` included.
fn run_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < bytes.len() && is_base64(bytes[end]) {
        end += 1;
    }
    while end < bytes.len() && bytes[end] == b'=' {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexample";

    #[test]
    fn credentials_are_replaced_and_the_rest_is_kept() {
        let text = format!(
            "login failed for AKIAIOSFODNN7EXAMPLE: secret {SECRET} rejected; token {TOKEN}=="
        );
        assert_eq!(
            redact(&text),
            "login failed for [redacted access key id]: secret [redacted secret] rejected; \
             token [redacted session token]"
        );
        assert_eq!(
            redact("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"),
            "aws_secret_access_key=[redacted secret]\n"
        );
        assert_eq!(
            redact("key \"bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249&Version=1\""),
            "key \"[redacted Bedrock key]&Version=1\""
        );
        assert_eq!(
            redact("payload YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249"),
            "payload [redacted Bedrock key]"
        );
        assert_eq!(
            redact(&format!("ASIA1234567890ABCDEF {}", "a1B+".repeat(30))),
            "[redacted access key id] [redacted session token]"
        );
    }

    #[test]
    fn redact_secrets_keeps_key_ids() {
        assert_eq!(
            redact_secrets(&format!("access key AKIAIOSFODNN7EXAMPLE, secret {SECRET}")),
            "access key AKIAIOSFODNN7EXAMPLE, secret [redacted secret]"
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for text in [
            "",
            "region \"eu-west-1\" is not a region",
            "/var/lib/bedrock-keyd/keys/SomeService/Production/alpha.key: permission denied",
            "/home/alice/Projects/BedrockKeydIntegration/keys/Alpha/Beta/app",
            "arn:aws:iam::123456789012:role/ServiceRoleForBedrockKeydIntegrationTests",
            "an error occurred while loading credentials: external process exited with code 1",
            // All upper case: an identifier, not a secret.
            "AKIAIOSFODNN7EXAMPLEAKIAIOSFODNN7EXAMPLEX",
            "AKIA-but-not-a-key, AKIAshort, ASIA",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    fn base64_char() -> impl Strategy<Value = char> {
        prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                .chars()
                .collect::<Vec<_>>(),
        )
    }

    /// Random secrets as AWS hands them out: 40 base64 characters (the rare draw
    /// without both cases, or that looks like a path, is not one we promise to catch).
    fn secret() -> impl Strategy<Value = String> {
        prop::collection::vec(base64_char(), 40)
            .prop_map(|c| c.into_iter().collect::<String>())
            .prop_filter("mixed case, not a path", |s| {
                s.bytes().any(|b| b.is_ascii_uppercase())
                    && s.bytes().any(|b| b.is_ascii_lowercase())
                    && !is_path(s)
            })
    }

    fn token() -> impl Strategy<Value = String> {
        prop::collection::vec(base64_char(), 100..600)
            .prop_map(|c| c.into_iter().collect::<String>())
            .prop_filter("not a path", |s| !is_path(s))
    }

    fn key_id() -> impl Strategy<Value = String> {
        (prop::sample::select(vec!["AKIA", "ASIA"]), "[A-Z0-9]{16}")
            .prop_map(|(p, rest)| format!("{p}{rest}"))
    }

    /// Text before a secret: words, then punctuation that ends a base64 run.
    fn before() -> impl Strategy<Value = String> {
        "[a-z0-9 ]{0,12}[ :.\"'=-]"
    }

    /// Text after it: punctuation, then words.
    fn after() -> impl Strategy<Value = String> {
        "[ :.\"'-][a-z0-9 ]{0,12}"
    }

    proptest! {
        #[test]
        fn no_credential_survives(
            before in before(),
            after in after(),
            secret in prop_oneof![secret(), token(), key_id()],
            padding in "={0,2}",
        ) {
            let text = format!("{before}{secret}{padding}{after}");
            let out = redact(&text);
            prop_assert!(!out.contains(&secret), "{out}");
            prop_assert!(out.contains("[redacted "), "{out}");
            // The words around it stay.
            prop_assert!(out.starts_with(&before), "{out}");
            prop_assert!(out.ends_with(&after), "{out}");
        }

        #[test]
        fn bedrock_keys_never_survive(payload in prop::collection::vec(base64_char(), 0..300)) {
            let payload: String = payload.into_iter().collect();
            let text = format!("key: {KEY_PREFIX}{payload}");
            prop_assert_eq!(redact(&text), "key: [redacted Bedrock key]");
        }

        #[test]
        fn any_text_is_safe_and_idempotent(text in "(\\PC|[A-Za-z0-9+/=])*") {
            let once = redact(&text).into_owned();
            prop_assert_eq!(redact(&once), once.as_str());
        }

        #[test]
        fn idempotent(text in "[ -~]{0,300}") {
            let once = redact(&text).into_owned();
            prop_assert_eq!(redact(&once), once.as_str());
        }
    }
}
